"""A facilitator that keeps no record of its settlements, and a seller that reads the chain (``chains``).

Such a facilitator (the official SDK's, or ours without a settlement store) answers a second ``/settle`` of a
payment it settled with "nonce already used". A seller that lost the first answer (here: a front that forwards
``/settle`` and never answers) cannot tell from that whether it was paid. With ``chains`` it looks for the
authorization's use on chain: a transfer to its ``pay_to`` means paid (served, one handler run, one transfer);
an authorization spent by a transaction that paid someone else means not paid (nothing served). Without
``chains`` the row stays ``unresolved``, as before. Real chain (embedded py-evm), real facilitator, real
servers on 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os

import httpx
import pytest
import pytest_asyncio
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from paywire.chain import EmbeddedChain, RpcChain
from paywire.chain.permit2 import approve_permit2, permit2_code
from paywire.chain.server import make_app
from paywire.devnet import setup_devnet
from paywire.errors import ConfigError
from paywire.evm.crypto import address_bytes
from paywire.evm.eip712 import domain_separator, transfer_authorization_digest
from paywire.evm.signer import LocalSigner
from paywire.facilitator.app import create_app
from paywire.schemes.evm_exact.payload import Eip3009Authorization, ExactEvmPayload
from paywire.server.chains import ChainReaders, chains_problem
from paywire.server.config import SellerConfig
from paywire.server.core import PaidRoute
from paywire.server.pricing import Offer
from paywire.serving import serve_asgi
from paywire.x402.codec import decode_payment_response, encode_payment_payload
from paywire.x402.models import PaymentPayload, PaymentRequirements
from paywire.x402.networks import evm_chain_id
from tests.helpers import close_devnet, full_facilitator
from tests.test_seller_common import CHEAP, Shop, open_shop
from tests.test_seller_faults import Flaky, record, wait_for_balance

pytestmark = pytest.mark.asyncio(loop_scope="module")


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def env(tmp_path_factory):
    """(devnet, the flaky front's URL and control, the chain's JSON-RPC URL, a temp dir)."""
    # Permit2 and its x402 proxies deployed, the payer's token approved to Permit2 (for the Permit2 case)
    net = await setup_devnet(RpcChain(EmbeddedChain(chain_id=31337, code=permit2_code())))
    await approve_permit2(net.chain, net.payer.private_key, net.info.token)
    tmp = tmp_path_factory.mktemp("chain-lookup")
    async with contextlib.AsyncExitStack() as stack:
        # no settlement store: a second /settle of a settled payment answers "nonce already used"
        real = await stack.enter_async_context(serve_asgi(create_app(full_facilitator(net))))
        flaky = Flaky(real)
        flaky_url = await stack.enter_async_context(serve_asgi(flaky.app()))
        rpc = await stack.enter_async_context(serve_asgi(make_app(net.chain.transport)))
        try:
            yield net, flaky, flaky_url, rpc, tmp
        finally:
            flaky.release.set()
            await asyncio.gather(*flaky.forwarded, return_exceptions=True)
            await flaky.http.aclose()
    await close_devnet(net)


@contextlib.asynccontextmanager
async def shop_of(env, name: str, **options):
    net, _, flaky_url, _, tmp = env
    async with open_shop(net, f"sqlite:///{tmp / (name + '.db')}", facilitator_url=flaky_url,
                         facilitator_timeout=8.0, **options) as shop:
        yield shop


async def lost_settlement(shop: Shop, flaky: Flaky, path: str) -> tuple[str, str]:
    """Pay ``path`` while the front forwards /settle and never answers: (payment header, the real tx hash)."""
    payee0 = await shop.net.token_balance(shop.net.payee.address)
    header = await shop.payment(path)
    flaky.mode = "forward_then_hang"
    try:
        r = await shop.http.get(shop.url + path, headers={"PAYMENT-SIGNATURE": header})
    finally:
        flaky.mode = "pass"
    assert r.status_code == 503 and "payment-response" not in r.headers, r.text
    assert await wait_for_balance(shop, shop.net.payee.address, payee0 + CHEAP) == payee0 + CHEAP
    settled = await flaky.forwarded[-1]
    return header, json.loads(settled.body)["transaction"]


async def test_without_chains_the_forgotten_payment_stays_unresolved(env) -> None:
    """The baseline: the facilitator calls the payment spent, the seller cannot tell, nothing is served."""
    _, flaky, *_ = env
    async with shop_of(env, "blind") as shop:
        header, _ = await lost_settlement(shop, flaky, "/cheap")
        again = await shop.http.get(shop.url + "/cheap", headers={"PAYMENT-SIGNATURE": header})
        assert again.status_code == 503 and b"cheap" not in again.content, again.text
        row = await record(shop, "/cheap")
        assert row.state == "unresolved" and row.error == "invalid_exact_evm_nonce_already_used", row


async def test_the_chain_shows_the_forgotten_payment_paid_and_the_retry_is_served(env) -> None:
    """``chains`` given as a Chain object: the retry's re-settle says "already used", the chain shows the
    transfer to ``pay_to``, the recorded response is served with that transaction; one run, one transfer."""
    net, flaky, *_ = env
    async with shop_of(env, "reader", chains={net.info.network: net.chain}) as shop:
        payer0, payee0 = await shop.balances()
        header, tx = await lost_settlement(shop, flaky, "/cheap")
        ok = await shop.http.get(shop.url + "/cheap", headers={"PAYMENT-SIGNATURE": header})
        assert ok.status_code == 200, ok.text
        assert ok.json()["item"] == "cheap" and ok.json()["run"] == 1
        s = decode_payment_response(ok.headers["payment-response"])
        assert s.success and s.transaction == tx
        assert await shop.balances() == (payer0 - CHEAP, payee0 + CHEAP), "paid once"
        row = await record(shop, "/cheap")
        assert row.state == "served" and row.tx == tx, row
        assert shop.counter["cheap"] == 1


async def test_reconcile_pending_reads_the_chain_through_a_json_rpc_url(env) -> None:
    """``chains`` in its text form (``PAYWIRE_SELLER_CHAINS``), a JSON-RPC URL: the background pass resolves
    the row without a retry, and the payer's retry is answered from the record (no third /settle)."""
    net, flaky, _, rpc, _ = env
    async with shop_of(env, "url", chains=f"{net.info.network}={rpc}") as shop:
        payer0, payee0 = await shop.balances()
        header, tx = await lost_settlement(shop, flaky, "/cheap2")
        counts = await shop.middleware.flow.reconcile_pending()
        assert counts.get("served") == 1, counts
        settles = len(flaky.settles)
        ok = await shop.http.get(shop.url + "/cheap2", headers={"PAYMENT-SIGNATURE": header})
        assert ok.status_code == 200 and len(flaky.settles) == settles, ok.text
        assert decode_payment_response(ok.headers["payment-response"]).transaction == tx
        assert await shop.balances() == (payer0 - CHEAP, payee0 + CHEAP)


async def test_settle_before_mode_runs_the_handler_once_the_chain_shows_payment(env) -> None:
    """settle='before': nothing runs while the outcome is unknown; the chain shows it paid, the handler runs."""
    net, flaky, *_ = env
    async with shop_of(env, "before", chains={net.info.network: net.chain}) as shop:
        header, _ = await lost_settlement(shop, flaky, "/stream")
        assert shop.counter["stream"] == 0
        ok = await shop.http.get(shop.url + "/stream", headers={"PAYMENT-SIGNATURE": header})
        assert ok.status_code == 200 and ok.text.startswith("chunk 0"), ok.text
        assert shop.counter["stream"] == 1


@pytest.mark.parametrize("reads_chain", [True, False], ids=["with-chains", "without-chains"])
async def test_a_forgotten_permit2_payment(env, reads_chain) -> None:
    """``exact`` over Permit2: the chain shows the proxy call that paid ``pay_to`` (served once); without
    ``chains``, the facilitator's refusal of the resend ("nonce used") leaves the row unresolved, not failed."""
    net = env[0]
    routes = [PaidRoute("GET /cheap", offers=(Offer(price=CHEAP, asset=net.asset,
                                                    extra={"assetTransferMethod": "permit2"}),))]
    options = {"chains": {net.info.network: net.chain}} if reads_chain else {}
    async with shop_of(env, f"permit2-{reads_chain}", routes=routes, **options) as shop:
        offer = await shop.challenge("/cheap")
        assert offer.extra.get("assetTransferMethod") == "permit2"
        payer0, payee0 = await shop.balances()
        header, tx = await lost_settlement(shop, env[1], "/cheap")
        again = await shop.http.get(shop.url + "/cheap", headers={"PAYMENT-SIGNATURE": header})
        assert await shop.balances() == (payer0 - CHEAP, payee0 + CHEAP), "paid once"
        row = await record(shop, "/cheap")
        if not reads_chain:
            assert again.status_code == 503 and b"cheap" not in again.content, again.text
            assert row.state == "unresolved", row
            return
        assert again.status_code == 200, again.text
        assert again.json()["run"] == 1 and row.state == "served" and row.tx == tx, row


async def signed_with_nonce(offer: PaymentRequirements, signer: LocalSigner, nonce: bytes,
                            to: str) -> PaymentPayload:
    """An ``exact`` payload for ``offer`` with a chosen nonce and payee (what a cheating payer can sign)."""
    import time

    now = int(time.time())
    auth = Eip3009Authorization(from_=signer.address, to=to, value=offer.amount, valid_after=now - 60,
                                valid_before=now + 600, nonce=nonce)
    digest = transfer_authorization_digest(
        domain_separator(str(offer.extra["name"]), str(offer.extra["version"]), evm_chain_id(offer.network),
                         offer.asset),
        address_bytes(auth.from_), address_bytes(auth.to), auth.value, auth.valid_after, auth.valid_before,
        auth.nonce)
    inner = ExactEvmPayload(signature=await signer.sign_digest(digest), authorization=auth).to_wire()
    return PaymentPayload(x402_version=2, accepted=offer, payload=inner)


async def test_an_authorization_spent_on_someone_else_is_not_served(env) -> None:
    """The payer signs the seller's authorization and a second one with the same nonce to another address,
    and settles the second first. The seller's settle is lost; on the retry the chain shows the nonce spent
    by a transfer that did not pay ``pay_to``: 402, nothing served, the row ``failed``."""
    net, flaky, flaky_url, *_ = env
    async with shop_of(env, "cheated", chains={net.info.network: net.chain}) as shop:
        payer = LocalSigner(net.payer.private_key)
        offer = await shop.challenge("/dear")
        nonce = os.urandom(32)
        mine = await signed_with_nonce(offer, payer, nonce, offer.pay_to)
        other = "0x" + "77" * 20
        theirs = await signed_with_nonce(PaymentRequirements.from_wire({**offer.to_wire(), "payTo": other}), payer,
                                         nonce, other)
        flaky.mode = "hang"  # the seller's /settle never reaches the facilitator
        try:
            r = await shop.http.get(shop.url + "/dear", headers={"PAYMENT-SIGNATURE": encode_payment_payload(mine)})
        finally:
            flaky.mode = "pass"
        assert r.status_code == 503, r.text
        payee0 = await net.token_balance(net.payee.address)
        async with httpx.AsyncClient(timeout=60) as http:  # the payer settles the other authorization first
            body = {"x402Version": 2, "paymentPayload": theirs.to_wire(),
                    "paymentRequirements": theirs.accepted.to_wire()}
            spent = (await http.post(flaky_url + "/settle", json=body)).json()
        assert spent["success"], spent
        assert await net.token_balance(other) == offer.amount
        runs = shop.counter["dear"]
        again = await shop.http.get(shop.url + "/dear", headers={"PAYMENT-SIGNATURE": encode_payment_payload(mine)})
        assert again.status_code == 402 and b'"item"' not in again.content, again.text
        assert shop.counter["dear"] == runs and await net.token_balance(net.payee.address) == payee0
        row = await record(shop, "/dear")
        assert row.state == "failed" and row.tx == spent["transaction"], row


async def test_chains_option_forms(tmp_path) -> None:
    """Accepted: a mapping, ``network=URL`` items or text; refused with the reason: anything else."""
    assert chains_problem({"eip155:8453": "https://rpc.example"}) is None
    assert chains_problem("eip155:8453=https://a.example, eip155:84532=http://127.0.0.1:8545") is None
    assert chains_problem(["eip155:1=https://a.example"]) is None
    assert "CAIP-2" in (chains_problem({"base": "https://a.example"}) or "")
    assert "http(s)" in (chains_problem("eip155:1=ftp://a.example") or "")
    assert "network=URL" in (chains_problem("https://a.example") or "")
    assert "a URL or a Chain" in (chains_problem({"eip155:1": 42}) or "")
    readers = ChainReaders("eip155:1=https://a.example")
    assert readers and readers.get("eip155:2") is None
    with pytest.raises(ConfigError, match="chains"):
        SellerConfig(chains="eip155:1=ftp://a.example")
    env_config = SellerConfig.load(None, env={"PAYWIRE_SELLER_CHAINS": "eip155:1=https://a.example"})
    assert env_config.chains == "eip155:1=https://a.example"
    toml = tmp_path / "paywire.toml"
    toml.write_text('[seller]\npay_to = "0x1"\n\n[seller.chains]\n"eip155:8453" = "https://mainnet.base.org"\n')
    assert SellerConfig.load(toml).chains == {"eip155:8453": "https://mainnet.base.org"}
    toml.write_text('[seller.chains]\n"eip155:8453" = "mainnet.base.org"\n')
    with pytest.raises(ConfigError, match="http"):
        SellerConfig.load(toml)


def official_facilitator_app(net, rpc_url: str) -> Starlette:
    """The official x402 SDK's facilitator (``x402FacilitatorSync``, stock config, settling through web3.py on
    the chain's JSON-RPC URL) behind a minimal HTTP front: POST /verify and /settle, as a facilitator serves."""
    from x402 import PaymentPayload as SdkPayload
    from x402 import PaymentRequirements as SdkRequirements
    from x402 import SettleError, VerifyError, x402FacilitatorSync
    from x402.mechanisms.evm.exact import ExactEvmFacilitatorScheme, ExactEvmSchemeConfig
    from x402.mechanisms.evm.signers import FacilitatorWeb3Signer

    from paywire.chain.devkeys import dev_keys

    signer = FacilitatorWeb3Signer(private_key="0x" + dev_keys(6)[5].hex(), rpc_url=rpc_url,
                                   confirmation_timeout_seconds=30)
    fac = x402FacilitatorSync()
    fac.register([net.info.network], ExactEvmFacilitatorScheme(signer, ExactEvmSchemeConfig()))

    async def call(request: Request) -> Response:
        body = await request.json()
        payload = SdkPayload.model_validate(body["paymentPayload"])
        requirements = SdkRequirements.model_validate(body["paymentRequirements"])
        verb = request.url.path.strip("/")
        try:
            result = await asyncio.to_thread(getattr(fac, verb), payload, requirements)
        except (SettleError, VerifyError) as exc:  # the SDK raises what a facilitator answers as a failure
            key = "errorReason" if verb == "settle" else "invalidReason"
            answer = {"success": False, key: exc.error_reason, "transaction": getattr(exc, "transaction", "") or "",
                      "network": net.info.network} if verb == "settle" else {"isValid": False, key: exc.error_reason}
            return JSONResponse(answer)
        return JSONResponse(result.model_dump(by_alias=True, exclude_none=True))

    return Starlette(routes=[Route("/verify", call, methods=["POST"]), Route("/settle", call, methods=["POST"])])


@pytest.mark.parametrize("reads_chain", [True, False], ids=["with-chains", "without-chains"])
async def test_the_official_facilitator_s_failed_resend_is_never_taken_for_not_paid(env, reads_chain) -> None:
    """Interop: the official SDK's facilitator settles, its answer is lost; it answers the retry's /settle with
    ``transaction_failed`` (it sends the spent authorization again, which reverts). With ``chains`` the seller
    finds the transfer and serves once; without, it records ``unresolved`` and serves nothing — never
    ``failed`` (a 402 to a payer whose money moved)."""
    net, _, _, rpc, tmp = env
    async with contextlib.AsyncExitStack() as stack:
        official = await stack.enter_async_context(serve_asgi(official_facilitator_app(net, rpc)))
        flaky = Flaky(official)
        stack.push_async_callback(flaky.http.aclose)
        front = await stack.enter_async_context(serve_asgi(flaky.app()))
        shop = await stack.enter_async_context(open_shop(
            net, f"sqlite:///{tmp / f'official-{reads_chain}.db'}", facilitator_url=front, facilitator_timeout=30.0,
            check_supported=False, **({"chains": {net.info.network: rpc}} if reads_chain else {})))
        payer0, payee0 = await shop.balances()
        header, tx = await lost_settlement(shop, flaky, "/cheap")
        again = await shop.http.get(shop.url + "/cheap", headers={"PAYMENT-SIGNATURE": header})
        assert flaky.settles[-1] == "pass", "the retry asked the official facilitator again"
        assert await shop.balances() == (payer0 - CHEAP, payee0 + CHEAP), "paid once"
        row = await record(shop, "/cheap")
        if not reads_chain:
            assert again.status_code == 503 and b"cheap" not in again.content, again.text
            assert row.state == "unresolved" and row.error == "transaction_failed", row
            return
        assert again.status_code == 200, again.text
        assert again.json()["item"] == "cheap" and again.json()["run"] == 1
        assert decode_payment_response(again.headers["payment-response"]).transaction.lower() == tx.lower()
        assert row.state == "served", row


async def test_a_bad_chains_value_given_to_the_flow_stops_it_at_startup(env) -> None:
    """A PaymentFlow built by hand (no SellerConfig check) refuses a bad ``chains`` at startup, not on the first
    reconciliation."""
    import dataclasses

    async with shop_of(env, "checked") as shop:
        bad = dataclasses.replace(shop.middleware.flow, chains={"base": "https://rpc.example"},
                                  store="sqlite:///:memory:")
        with pytest.raises(ConfigError, match="CAIP-2"):
            await bad.startup()
