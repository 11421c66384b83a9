"""``exact`` via Permit2 and ``upto`` on the embedded chain: our Permit2 and proxy contracts at the canonical
addresses, our facilitator over HTTP, our seller middleware with a variable price, our buyer.

Digest §5.2 (Permit2 transfers), §7.1 (upto); checklist 15 (412 when the Permit2 approval is missing).
Everything real: signatures, contracts executing on py-evm, HTTP on 127.0.0.1, balances read from the token.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass

import httpx
import pytest
import pytest_asyncio
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from paywire.chain import EmbeddedChain, RpcChain
from paywire.chain.permit2 import permit2_code
from paywire.chain.rail import EvmNetwork
from paywire.chain.tx import TxSender
from paywire.client import x402_client
from paywire.devnet import Devnet, setup_devnet
from paywire.errors import ChainRevert
from paywire.evm import permit2 as p2
from paywire.evm.assets import KNOWN_ASSETS, AssetRegistry
from paywire.evm.signer import LocalSigner
from paywire.facilitator.app import create_app
from paywire.facilitator.client import HttpFacilitatorClient
from paywire.facilitator.core import Facilitator
from paywire.schemes.evm_exact.client import ExactEvmClient
from paywire.schemes.evm_upto.client import UptoEvmClient
from paywire.schemes.registry import default_registry
from paywire.server import bill
from paywire.server.asgi import PaymentMiddleware
from paywire.server.core import PaidRoute
from paywire.server.pricing import Offer
from paywire.serving import serve_asgi
from paywire.wallet import Wallet
from paywire.x402.codec import decode_payment_required, decode_payment_response, encode_payment_payload
from paywire.x402.models import PaymentPayload, PaymentRequirements

pytestmark = pytest.mark.asyncio(loop_scope="module")

PRICE = 10_000  # exact/Permit2: 0.01 USDC
MAXIMUM = 50_000  # upto: at most 0.05 USDC per request


async def permit2_devnet(kind: str = "embedded") -> Devnet:
    """A devnet with Permit2 and both proxies at their canonical addresses: in the embedded chain's genesis, or
    placed on a fresh anvil with ``anvil_setCode``. ``tests.helpers.close_devnet`` stops it."""
    if kind == "anvil":
        from paywire.chain.permit2 import install_permit2
        from tests.helpers import new_devnet

        net = await new_devnet("anvil")
        await install_permit2(net.chain)
        return net
    return await setup_devnet(RpcChain(EmbeddedChain(chain_id=31337, code=permit2_code())))


async def approve_permit2(net: Devnet, key: bytes) -> None:
    from paywire.chain.permit2 import approve_permit2 as approve

    await approve(net.chain, key, net.info.token)


@dataclass
class Env:
    net: Devnet
    url: str
    facilitator_url: str
    hits: dict[str, int]
    http: httpx.AsyncClient
    middleware: PaymentMiddleware

    async def balance(self, who: str) -> int:
        return await self.net.token_balance(who)

    async def offer(self, path: str) -> PaymentRequirements:
        r = await self.http.get(self.url + path)
        assert r.status_code == 402, r.text
        return decode_payment_required(r.headers["payment-required"]).accepts[0]

    async def header(self, path: str, signer: LocalSigner | None = None) -> dict[str, str]:
        req = await self.offer(path)
        s = signer or LocalSigner(self.net.payer.private_key)
        client = UptoEvmClient(s) if req.scheme == "upto" else ExactEvmClient(s)
        payload = PaymentPayload(accepted=req, payload=await client.create_payload(req))
        return {"PAYMENT-SIGNATURE": encode_payment_payload(payload)}

    async def pay(self, path: str, signer: LocalSigner | None = None) -> httpx.Response:
        return await self.http.get(self.url + path, headers=await self.header(path, signer))


def metered_app(hits: dict[str, int]) -> Starlette:
    async def article(request: Request) -> Response:
        hits["article"] = hits.get("article", 0) + 1
        return JSONResponse({"article": "paid"})

    async def llm(request: Request) -> Response:
        hits["llm"] = hits.get("llm", 0) + 1
        cost = request.query_params.get("cost")
        if cost is not None:
            bill(request, int(cost) if cost.isdigit() else cost)
        return JSONResponse({"tokens": 42})

    async def sdk_style(request: Request) -> Response:  # the official SDKs' way to say the actual amount
        hits["sdk"] = hits.get("sdk", 0) + 1
        return JSONResponse({"tokens": 7}, headers={"Settlement-Overrides": '{"amount": "40%"}'})

    return Starlette(routes=[Route("/article", article), Route("/llm", llm), Route("/sdk", sdk_style),
                             Route("/llm-before", llm)])


@contextlib.asynccontextmanager
async def open_env(net: Devnet, store: str) -> AsyncIterator[Env]:
    rails = [EvmNetwork(net.info.network, net.chain, [TxSender(net.chain, net.facilitator.private_key)])]
    facilitator = Facilitator(default_registry.facilitators_for(rails))
    a = net.asset
    routes = [
        PaidRoute("GET /article", offers=(Offer(price=PRICE, asset=a, extra={"assetTransferMethod": "permit2"}),)),
        PaidRoute("GET /llm", offers=(Offer(price=MAXIMUM, asset=a, scheme="upto"),)),
        PaidRoute("GET /sdk", offers=(Offer(price=MAXIMUM, asset=a, scheme="upto"),)),
        PaidRoute("GET /llm-before", offers=(Offer(price=MAXIMUM, asset=a, scheme="upto"),), settle="before"),
    ]
    hits: dict[str, int] = {}
    async with contextlib.AsyncExitStack() as stack:
        fac_url = await stack.enter_async_context(serve_asgi(create_app(facilitator)))
        mw = PaymentMiddleware(metered_app(hits), routes, HttpFacilitatorClient(fac_url), pay_to=net.payee.address,
                               network=net.info.network, store=store, assets=AssetRegistry((*KNOWN_ASSETS, a)))
        url = await stack.enter_async_context(serve_asgi(mw))
        http = await stack.enter_async_context(httpx.AsyncClient(timeout=60))
        yield Env(net, url, fac_url, hits, http, mw)
        await mw.flow.aclose()


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def env(tmp_path_factory):
    net = await permit2_devnet()
    await approve_permit2(net, net.payer.private_key)
    store = f"sqlite:///{tmp_path_factory.mktemp('metered') / 'seller.db'}"
    async with open_env(net, store) as e:
        yield e
    await net.chain.aclose()


# ------------------------------------------------------------------------------------------------ contracts


async def test_contracts_sit_at_the_canonical_addresses(env: Env) -> None:
    for address, name in (("0x000000000022D473030F116dDEE9F6B43aC78BA3", "Permit2"),
                          ("0x402085c248EeA27D92E8b30b2C58ed07f9E20001", "exact proxy"),
                          ("0x4020A4f3b7b90ccA423B9fabCc0CE57C6C240002", "upto proxy")):
        assert await env.net.chain.get_code(address), f"no {name} code at {address}"


async def test_upto_proxy_enforces_maximum_and_facilitator(env: Env) -> None:
    """The upto proxy refuses more than the signed maximum and any caller but the witness's facilitator;
    a settled nonce cannot be used again (Permit2's bitmap)."""
    net, chain = env.net, env.net.chain
    now = int(time.time())
    a = p2.Permit2Authorization(net.payer.address, net.info.token, 1_000, p2.UPTO_PROXY_ADDRESS,
                                int.from_bytes(os.urandom(32), "big"), now + 600, net.payee.address, 0,
                                net.facilitator.address)
    sig = await net.payer.sign_digest(a.digest(net.info.chain_id))
    with pytest.raises(ChainRevert) as over:
        await chain.call(p2.UPTO_PROXY_ADDRESS, p2.upto_settle(a, 1_001, sig), sender=net.facilitator.address)
    assert p2.error_name(over.value.data) == "AmountExceedsPermitted", "more than the maximum was not refused"
    with pytest.raises(ChainRevert) as stranger:
        await chain.call(p2.UPTO_PROXY_ADDRESS, p2.upto_settle(a, 10, sig), sender=net.payee.address)
    assert p2.error_name(stranger.value.data) == "UnauthorizedFacilitator", "another caller could settle"
    sender = TxSender(chain, net.facilitator.private_key)
    before = await env.balance(net.payee.address)
    receipt = await chain.wait_for_receipt(await sender.send(p2.UPTO_PROXY_ADDRESS, p2.upto_settle(a, 600, sig)))
    assert receipt.status == 1, "a settlement within the maximum reverted"
    assert await env.balance(net.payee.address) - before == 600, "the payee did not get the settled amount"
    with pytest.raises(ChainRevert) as again:
        await chain.call(p2.UPTO_PROXY_ADDRESS, p2.upto_settle(a, 100, sig), sender=net.facilitator.address)
    assert p2.error_name(again.value.data) == "InvalidNonce", "a used authorization settled again"


async def test_exact_proxy_refuses_a_changed_recipient(env: Env) -> None:
    """The witness binds the recipient: settling to anyone else fails the signature check in Permit2."""
    net = env.net
    now = int(time.time())
    a = p2.Permit2Authorization(net.payer.address, net.info.token, 1_000, p2.EXACT_PROXY_ADDRESS, 12345,
                                now + 600, net.payee.address, 0)
    sig = await net.payer.sign_digest(a.digest(net.info.chain_id))
    moved = dataclasses.replace(a, to=net.deployer.address)
    with pytest.raises(ChainRevert) as exc:
        await net.chain.call(p2.EXACT_PROXY_ADDRESS, p2.exact_settle(moved, sig), sender=net.facilitator.address)
    assert p2.error_name(exc.value.data) == "InvalidSigner", "a redirected payment was not refused"


# ------------------------------------------------------------------------------------------------ exact/Permit2


async def test_exact_permit2_pays_through_the_seller(env: Env) -> None:
    """An offer with assetTransferMethod permit2 is paid with a Permit2 witness transfer: 200, the signed
    amount moved once, PAYMENT-RESPONSE names the transaction."""
    req = await env.offer("/article")
    assert req.extra.get("assetTransferMethod") == "permit2", "the offer does not say permit2"
    payer0, payee0 = await env.balance(env.net.payer.address), await env.balance(env.net.payee.address)
    r = await env.pay("/article")
    assert r.status_code == 200, r.text
    settled = decode_payment_response(r.headers["payment-response"])
    assert settled.success and settled.transaction.startswith("0x"), "no settlement transaction"
    assert await env.balance(env.net.payee.address) - payee0 == PRICE, "the payee did not get the price"
    assert payer0 - await env.balance(env.net.payer.address) == PRICE, "the payer did not pay the price"


async def test_missing_permit2_approval_is_412_naming_the_approval(env: Env) -> None:
    """Checklist 15: a payer who never approved Permit2 gets 412 with permit2_allowance_required, and the
    facilitator's message names Permit2 and the token; nothing ran, nothing moved."""
    stranger = LocalSigner.generate()
    await env.net.mint(stranger.address, 1_000_000)
    hits = env.hits.get("article", 0)
    r = await env.pay("/article", stranger)
    assert r.status_code == 412, f"expected 412, got {r.status_code}: {r.text}"
    assert decode_payment_required(r.headers["payment-required"]).error == "permit2_allowance_required"
    assert env.hits.get("article", 0) == hits, "the handler ran without a payment"
    assert await env.balance(stranger.address) == 1_000_000, "money moved without an approval"
    req = await env.offer("/article")
    payload = PaymentPayload(accepted=req, payload=await ExactEvmClient(stranger).create_payload(req))
    fac = HttpFacilitatorClient(env.facilitator_url)
    try:
        verdict = await fac.verify(payload, req)
    finally:
        await fac.aclose()
    assert verdict.invalid_reason == "permit2_allowance_required"
    assert verdict.invalid_message and p2.PERMIT2_ADDRESS in verdict.invalid_message, verdict.invalid_message


async def test_replayed_permit2_payment_runs_once_and_settles_once(env: Env) -> None:
    req = await env.offer("/article")
    payload = PaymentPayload(accepted=req, payload=await ExactEvmClient(
        LocalSigner(env.net.payer.private_key)).create_payload(req))
    header = {"PAYMENT-SIGNATURE": encode_payment_payload(payload)}
    payee0, hits0 = await env.balance(env.net.payee.address), env.hits.get("article", 0)
    first = await env.http.get(env.url + "/article", headers=header)
    second = await env.http.get(env.url + "/article", headers=header)
    assert first.status_code == second.status_code == 200, (first.text, second.text)
    assert env.hits.get("article", 0) - hits0 == 1, "the handler ran twice for one payment"
    assert await env.balance(env.net.payee.address) - payee0 == PRICE, "one payment settled twice"


# ------------------------------------------------------------------------------------------------ upto


async def test_upto_offer_names_the_facilitator(env: Env) -> None:
    req = await env.offer("/llm")
    assert (req.scheme, req.amount) == ("upto", MAXIMUM)
    assert req.extra.get("facilitatorAddress") == env.net.facilitator.address, "no facilitatorAddress in the offer"
    assert req.extra.get("assetTransferMethod") == "permit2"


async def test_upto_charges_what_the_handler_reports(env: Env) -> None:
    payer0, payee0 = await env.balance(env.net.payer.address), await env.balance(env.net.payee.address)
    r = await env.pay("/llm?cost=1234")
    assert r.status_code == 200, r.text
    settled = decode_payment_response(r.headers["payment-response"])
    assert settled.amount == 1234, f"PAYMENT-RESPONSE amount is {settled.amount}"
    assert await env.balance(env.net.payee.address) - payee0 == 1234, "the payee did not get the actual charge"
    assert payer0 - await env.balance(env.net.payer.address) == 1234, "the payer paid more than the charge"


async def test_upto_charge_in_dollars_and_percent(env: Env) -> None:
    payee0 = await env.balance(env.net.payee.address)
    assert (await env.pay("/llm?cost=$0.002")).status_code == 200
    assert await env.balance(env.net.payee.address) - payee0 == 2_000, "'$0.002' was not 2000 units"
    payee1 = await env.balance(env.net.payee.address)
    assert (await env.pay("/llm?cost=10%25")).status_code == 200
    assert await env.balance(env.net.payee.address) - payee1 == MAXIMUM // 10, "'10%' was not a tenth of the max"


async def test_upto_zero_charge_settles_nothing(env: Env) -> None:
    payer0 = await env.balance(env.net.payer.address)
    r = await env.pay("/llm?cost=0")
    assert r.status_code == 200, r.text
    settled = decode_payment_response(r.headers["payment-response"])
    assert settled.success and settled.transaction == "" and settled.amount == 0, settled
    assert await env.balance(env.net.payer.address) == payer0, "a zero charge moved money"


async def test_upto_charge_above_the_maximum_is_refused_and_not_charged(env: Env) -> None:
    payer0, hits0 = await env.balance(env.net.payer.address), env.hits.get("llm", 0)
    r = await env.pay(f"/llm?cost={MAXIMUM + 1}")
    assert r.status_code == 500, f"expected the handler failure reply, got {r.status_code}"
    assert "payment-response" not in r.headers, "a refused charge answered as paid"
    assert env.hits.get("llm", 0) - hits0 == 1
    assert await env.balance(env.net.payer.address) == payer0, "a charge above the maximum moved money"


async def test_upto_settlement_overrides_header_is_read_and_removed(env: Env) -> None:
    """Handlers written for the official SDKs set ``Settlement-Overrides``; it is honoured and not sent on."""
    payee0 = await env.balance(env.net.payee.address)
    r = await env.pay("/sdk")
    assert r.status_code == 200, r.text
    assert "settlement-overrides" not in r.headers, "the internal header leaked to the client"
    assert await env.balance(env.net.payee.address) - payee0 == MAXIMUM * 40 // 100, "40% was not charged"


async def test_upto_without_a_charge_takes_the_maximum(env: Env) -> None:
    payee0 = await env.balance(env.net.payee.address)
    assert (await env.pay("/llm")).status_code == 200
    assert await env.balance(env.net.payee.address) - payee0 == MAXIMUM


async def test_upto_charge_survives_an_unknown_settle_outcome(env: Env, monkeypatch) -> None:
    """The facilitator does not answer /settle once (outcome unknown → 503): the charged amount is in the
    ledger row, so both the payer's retry and the seller's reconciler settle that amount, once."""
    from paywire.facilitator.client import FacilitatorUnavailable

    flow = env.middleware.flow
    real = flow.facilitator.settle
    failures = [1]

    async def flaky(payload, requirements):  # type: ignore[no-untyped-def]
        if failures:
            failures.pop()
            raise FacilitatorUnavailable("connection reset (injected)")
        return await real(payload, requirements)

    monkeypatch.setattr(flow.facilitator, "settle", flaky)
    header = await env.header("/llm?cost=3210")
    payee0, hits0 = await env.balance(env.net.payee.address), env.hits.get("llm", 0)
    first = await env.http.get(env.url + "/llm?cost=3210", headers=header)
    assert first.status_code == 503, f"an unknown outcome answered {first.status_code}"
    assert await env.balance(env.net.payee.address) == payee0, "money moved although /settle failed"
    retry = await env.http.get(env.url + "/llm?cost=3210", headers=header)
    assert retry.status_code == 200, retry.text
    assert decode_payment_response(retry.headers["payment-response"]).amount == 3210
    assert env.hits.get("llm", 0) - hits0 == 1, "the retry ran the handler again"
    assert await env.balance(env.net.payee.address) - payee0 == 3210, "the recorded charge was not settled once"


async def test_our_buyer_pays_upto_and_permit2(env: Env, tmp_path) -> None:
    """The buyer (Wallet + x402_client) picks the upto and Permit2 clients from the registry and pays both."""
    wallet = Wallet.from_key(env.net.info.payer_key, chains={env.net.info.network: env.net.chain})
    from paywire.client import Policy

    payee0 = await env.balance(env.net.payee.address)
    async with x402_client(wallet, Policy(assets=[env.net.asset], max_per_payment="$0.10"),
                           store=f"sqlite:///{tmp_path / 'buyer.db'}") as client:
        r1 = await client.get(env.url + "/llm?cost=777")
        r2 = await client.get(env.url + "/article")
    assert (r1.status_code, r2.status_code) == (200, 200), (r1.text, r2.text)
    assert await env.balance(env.net.payee.address) - payee0 == 777 + PRICE


# ------------------------------------------------------------------------------------------------ facilitator


async def test_concurrent_settles_of_one_permit2_payment_move_money_once(env: Env, tmp_path) -> None:
    """Eight concurrent /settle calls for one Permit2 authorization, with a settlement store: one transaction,
    the price moved once; the EVM rail then sees the nonce used in Permit2's bitmap and finds that transaction
    by its calldata (what the reconciler relies on after a crash)."""
    import asyncio

    from paywire.chain.rail import EvmRail
    from paywire.schemes.evm_exact.facilitator import ExactEvmFacilitator
    from paywire.schemes.evm_permit2 import EXACT, intent_of
    from paywire.store.settlements import SettlementStore

    net = env.net
    store = await SettlementStore.open(f"sqlite:///{tmp_path / 'fac.db'}")
    network = EvmNetwork(net.info.network, net.chain, [TxSender(net.chain, net.facilitator.private_key)])
    fac = ExactEvmFacilitator([network], store=store)
    try:
        req = await env.offer("/article")
        inner = await ExactEvmClient(LocalSigner(net.payer.private_key)).create_payload(req)
        payload = PaymentPayload(accepted=req, payload=inner)
        payee0 = await env.balance(net.payee.address)
        results = await asyncio.gather(*(fac.settle(payload, req) for _ in range(8)))
        assert all(r.success for r in results), [r.error_reason for r in results]
        assert len({r.transaction for r in results}) == 1, "one authorization was sent in several transactions"
        assert await env.balance(net.payee.address) - payee0 == PRICE, "the price moved more than once"
        again = await fac.settle(payload, req)
        assert again.success and again.transaction == results[0].transaction, "a later settle was not idempotent"
        intent = intent_of(EXACT, p2.Permit2Payload.from_wire(inner), req, PRICE)
        rail = EvmRail(network)
        assert await rail.is_used(intent), "the rail does not see the Permit2 nonce as used"
        found = await rail.find_use(intent)
        assert found is not None and found.hash == results[0].transaction and found.paid, found
    finally:
        await store.aclose()


async def test_upto_settle_above_the_signed_maximum_is_refused_by_the_facilitator(env: Env) -> None:
    """A seller asking our facilitator to settle more than the payer signed gets the spec's reason; no money
    moves (checked before anything is sent)."""
    import dataclasses as dc

    from paywire.schemes.evm_upto.facilitator import UptoEvmFacilitator

    net = env.net
    fac = UptoEvmFacilitator([EvmNetwork(net.info.network, net.chain,
                                         [TxSender(net.chain, net.facilitator.private_key)])])
    req = await env.offer("/llm")
    payload = PaymentPayload(accepted=req, payload=await UptoEvmClient(
        LocalSigner(net.payer.private_key)).create_payload(req))
    assert (await fac.verify(payload, req)).is_valid, "a fresh upto payment did not verify"
    payer0 = await env.balance(net.payer.address)
    res = await fac.settle(payload, dc.replace(req, amount=MAXIMUM + 1))
    assert not res.success and res.error_reason == "invalid_upto_evm_payload_settlement_exceeds_amount", res
    assert await env.balance(net.payer.address) == payer0, "money moved for an over-maximum settle"


# ------------------------------------------------------------------------------------------------ anvil


@pytest.mark.anvil
async def test_on_anvil_the_contracts_install_by_set_code_and_settle() -> None:
    """On anvil ``install_permit2`` places the contracts with ``anvil_setCode``; exact/Permit2 and upto
    payments then verify and settle through our facilitators, with the balances to match."""
    from paywire.chain.permit2 import install_permit2
    from paywire.schemes.evm_exact.facilitator import ExactEvmFacilitator
    from paywire.schemes.evm_upto.facilitator import UptoEvmFacilitator
    from tests.helpers import close_devnet, new_devnet

    net = await new_devnet("anvil")
    try:
        await install_permit2(net.chain)
        assert await net.chain.get_code(p2.UPTO_PROXY_ADDRESS), "anvil_setCode did not place the upto proxy"
        await approve_permit2(net, net.payer.private_key)
        rails = [EvmNetwork(net.info.network, net.chain, [TxSender(net.chain, net.facilitator.private_key)])]
        exact, upto = ExactEvmFacilitator(rails), UptoEvmFacilitator(rails)
        payer = LocalSigner(net.payer.private_key)
        base = PaymentRequirements(scheme="exact", network=net.info.network, amount=PRICE, asset=net.info.token,
                                   pay_to=net.payee.address, max_timeout_seconds=120,
                                   extra={"assetTransferMethod": "permit2"})
        maxed = dataclasses.replace(base, scheme="upto", amount=MAXIMUM,
                                    extra={"assetTransferMethod": "permit2",
                                           "facilitatorAddress": net.facilitator.address})
        payee0 = await net.token_balance(net.payee.address)
        p1 = PaymentPayload(accepted=base, payload=await ExactEvmClient(payer).create_payload(base))
        r1 = await exact.settle(p1, base)
        assert r1.success, r1
        p2_ = PaymentPayload(accepted=maxed, payload=await UptoEvmClient(payer).create_payload(maxed))
        assert (await upto.verify(p2_, maxed)).is_valid
        r2 = await upto.settle(p2_, dataclasses.replace(maxed, amount=4321))
        assert r2.success and r2.amount == 4321, r2
        assert await net.token_balance(net.payee.address) - payee0 == PRICE + 4321, "anvil balances are off"
    finally:
        await close_devnet(net)


async def test_unusable_eip2612_permit_is_named_when_no_approval_exists(env: Env) -> None:
    """A payer without a Permit2 allowance whose eip2612GasSponsoring permit names another spender gets
    that reason (not a generic one); nothing is sent."""
    from paywire.schemes.evm_upto.facilitator import UptoEvmFacilitator

    net = env.net
    stranger = LocalSigner.generate()
    await net.mint(stranger.address, 1_000_000)
    fac = UptoEvmFacilitator([EvmNetwork(net.info.network, net.chain,
                                         [TxSender(net.chain, net.facilitator.private_key)])])
    req = await env.offer("/llm")
    info = {"from": stranger.address, "asset": net.info.token, "spender": net.payee.address, "amount": str(MAXIMUM),
            "nonce": "0", "deadline": str(int(time.time()) + 600), "signature": "0x" + "11" * 65, "version": "1"}
    payload = PaymentPayload(accepted=req, payload=await UptoEvmClient(stranger).create_payload(req),
                             extensions={p2.EIP2612_GAS_SPONSORING: {"info": info}})
    verdict = await fac.verify(payload, req)
    assert verdict.invalid_reason == "eip2612_spender_not_permit2", verdict
    res = await fac.settle(payload, dataclasses.replace(req, amount=100))
    assert not res.success and res.error_reason == "eip2612_spender_not_permit2", res
    assert await env.balance(stranger.address) == 1_000_000, "money moved on an unusable permit"


async def test_our_buyer_without_a_permit2_approval_is_told_which_approval_to_make(env: Env, tmp_path) -> None:
    """The 412 of a missing Permit2 allowance reaches our buyer (one that cannot read the chain, so cannot sign an
    EIP-2612 permit instead) as a refusal that names the approval to make (Permit2's address and the token), not
    as a plain response; the handler never runs."""
    from paywire.client import Policy
    from paywire.client.core import PaymentRejected

    stranger = LocalSigner.generate()
    await env.net.mint(stranger.address, 1_000_000)
    wallet = Wallet.from_key("0x" + stranger.private_key.hex())  # no chain access: it cannot sign a permit
    hits0 = env.hits.get("article", 0)
    async with x402_client(wallet, Policy(assets=[env.net.asset], max_per_payment="$0.10"),
                           store=f"sqlite:///{tmp_path / 'buyer.db'}") as client:
        with pytest.raises(PaymentRejected) as refused:
            await client.get(env.url + "/article")
    message = str(refused.value)
    assert p2.PERMIT2_ADDRESS in message, f"the refusal does not name Permit2: {message}"
    assert env.net.info.token.lower() in message.lower(), f"the refusal does not name the token: {message}"
    assert env.hits.get("article", 0) == hits0, "the handler ran without a payment"


async def test_an_echoed_eip2612_declaration_is_not_taken_for_a_permit(env: Env) -> None:
    """Clients echo the 402's extensions; the seller's eip2612GasSponsoring declaration (its info is a
    description, not a permit) must not turn a missing approval into invalid_eip2612_extension_format: the
    payer is told permit2_allowance_required."""
    from paywire.server.core import EIP2612_DECLARATION

    stranger = LocalSigner.generate()
    await env.net.mint(stranger.address, 1_000_000)
    req = await env.offer("/article")
    payload = PaymentPayload(accepted=req, payload=await ExactEvmClient(stranger).create_payload(req),
                             extensions={p2.EIP2612_GAS_SPONSORING: EIP2612_DECLARATION})
    fac = HttpFacilitatorClient(env.facilitator_url)
    try:
        verdict = await fac.verify(payload, req)
    finally:
        await fac.aclose()
    assert verdict.invalid_reason == "permit2_allowance_required", verdict


async def test_the_metered_example_bills_per_word(env: Env, tmp_path) -> None:
    """examples/metered_app.py (FastAPI, ``@paid(offers=(Offer("$0.05", scheme="upto"),))`` + ``bill``): our
    buyer pays for 25 words, 25 × 200 units move, not the $0.05 maximum."""
    import importlib.util
    import sys
    from pathlib import Path

    from paywire.client import Policy

    path = Path(__file__).resolve().parent.parent / "examples" / "metered_app.py"
    spec = importlib.util.spec_from_file_location("paywire_example_metered", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    app = module.create_app(env.net.info, env.facilitator_url, store=f"sqlite:///{tmp_path / 'example.db'}")
    wallet = Wallet.from_key(env.net.info.payer_key, chains={env.net.info.network: env.net.chain})
    payee0 = await env.balance(env.net.payee.address)
    async with serve_asgi(app) as url, x402_client(wallet, Policy(assets=[env.net.asset], max_per_payment="$0.10"),
                                                   store=f"sqlite:///{tmp_path / 'buyer.db'}") as client:
        r = await client.get(url + "/complete?words=25")
    assert r.status_code == 200, r.text
    assert r.json()["billed"] == 25 * 200
    assert await env.balance(env.net.payee.address) - payee0 == 25 * 200, "the example did not bill per word"


async def test_our_buyer_without_approval_or_gas_pays_with_an_eip2612_permit(env: Env, tmp_path) -> None:
    """eip2612GasSponsoring from our buyer: a payer holding tokens but no ETH and no Permit2 approval pays an
    exact/Permit2 and an upto request; the wallet signs the token's permit (reading allowance and nonce from the
    chain) and the facilitator submits it with each payment."""
    from paywire.client import Policy

    net = env.net
    fresh = LocalSigner.generate()
    await net.mint(fresh.address, 1_000_000)
    wallet = Wallet.from_key("0x" + fresh.private_key.hex(), chains={net.info.network: net.chain})
    payee0 = await env.balance(net.payee.address)
    async with x402_client(wallet, Policy(assets=[net.asset], max_per_payment="$0.10"),
                           store=f"sqlite:///{tmp_path / 'buyer.db'}") as client:
        r1 = await client.get(env.url + "/article")
        r2 = await client.get(env.url + "/llm?cost=1357")
    assert (r1.status_code, r2.status_code) == (200, 200), (r1.text, r2.text)
    assert await env.balance(net.payee.address) - payee0 == PRICE + 1357, "the payee's balance is off"
    assert await env.balance(fresh.address) == 1_000_000 - PRICE - 1357, "the payer's balance is off"
    assert await net.chain.get_balance(fresh.address) == 0, "the payer spent gas"


async def test_upto_is_not_offered_to_x402_v1(env: Env) -> None:
    """v1 has no upto: on a network with a v1 name (base-sepolia) /supported lists upto for v2 only, while exact
    keeps its v1 kind."""
    net = env.net
    rails = [EvmNetwork("eip155:84532", net.chain, [TxSender(net.chain, net.facilitator.private_key)])]
    kinds = Facilitator(default_registry.facilitators_for(rails)).supported().kinds
    assert {(k.scheme, k.x402_version) for k in kinds} == {("exact", 2), ("exact", 1), ("upto", 2),
                                                          ("batch-settlement", 2)}, kinds


async def test_upto_on_a_settle_before_route_charges_what_the_handler_billed(env: Env) -> None:
    """settle="before" cannot know the actual cost: an upto payment there settles after its handler (the billed
    1500, not the 50000 maximum)."""
    net = env.net
    payer0, payee0 = await env.balance(net.payer.address), await env.balance(net.payee.address)
    r = await env.pay("/llm-before?cost=1500")
    assert r.status_code == 200, r.text
    assert await env.balance(net.payee.address) - payee0 == 1500, "the maximum was charged, not the bill"
    assert payer0 - await env.balance(net.payer.address) == 1500
