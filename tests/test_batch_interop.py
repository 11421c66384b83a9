"""``batch-settlement`` against the official x402 Python SDK (``x402==2.25.0``, unmodified) on the embedded chain,
with our escrow, collectors and Multicall3 at the canonical addresses it hard-codes:

* the SDK's client pays OUR seller: one deposit, many vouchers (the handler charging less than the maximum on
  some), our claim manager claims every channel in one transaction and sweeps it to the payee, then the SDK
  client's cooperative refund returns the rest; token balances and the escrow's channel state are asserted;
* our facilitator's ``/supported`` names the receiver authorizer the SDK server needs.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
import pytest_asyncio
from eth_account import Account
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from paywire.chain import EmbeddedChain, RpcChain
from paywire.chain.permit2 import permit2_code
from paywire.chain.rail import EvmNetwork
from paywire.chain.tx import TxSender
from paywire.devnet import Devnet, setup_devnet
from paywire.evm import batch as b
from paywire.evm.assets import KNOWN_ASSETS, AssetRegistry
from paywire.facilitator.app import create_app
from paywire.facilitator.client import HttpFacilitatorClient
from paywire.facilitator.core import Facilitator
from paywire.schemes.registry import default_registry
from paywire.server import bill
from paywire.server.asgi import PaymentMiddleware
from paywire.server.channel_claims import ClaimManager
from paywire.server.core import PaidRoute
from paywire.server.pricing import Offer
from paywire.serving import serve_asgi
from paywire.store.channels import ChannelStore
from tests.helpers import close_devnet

pytestmark = [pytest.mark.interop, pytest.mark.asyncio(loop_scope="module")]

PRICE = 1_000  # at most 0.001 USDC per request


@dataclass
class Env:
    net: Devnet
    url: str
    facilitator_url: str
    hits: dict[str, int]
    middleware: PaymentMiddleware
    facilitator: HttpFacilitatorClient

    async def balance(self, who: str) -> int:
        return await self.net.token_balance(who)

    async def onchain(self, cid: bytes) -> b.OnchainChannel:
        raw = await self.net.chain.call(b.MULTICALL3_ADDRESS, b.try_aggregate(b.channel_state_calls(cid)))
        return b.decode_channel_state(b.decode_try_aggregate(raw))

    def channels(self) -> ChannelStore:
        return ChannelStore(self.middleware.flow.payments.db)


def metered_app(hits: dict[str, int]) -> Starlette:
    async def metered(request: Request) -> Response:
        hits["metered"] = hits.get("metered", 0) + 1
        cost = request.query_params.get("cost")
        if cost is not None:
            bill(request, int(cost))
        return JSONResponse({"tokens": 42})

    async def broken(request: Request) -> Response:
        hits["broken"] = hits.get("broken", 0) + 1
        return JSONResponse({"error": "upstream down"}, status_code=502)

    return Starlette(routes=[Route("/metered", metered), Route("/broken", broken)])


@contextlib.asynccontextmanager
async def open_env(net: Devnet, store: str) -> AsyncIterator[Env]:
    rails = [EvmNetwork(net.info.network, net.chain, [TxSender(net.chain, net.facilitator.private_key)])]
    facilitator = Facilitator(default_registry.facilitators_for(rails))
    a = net.asset
    offer = Offer(price=PRICE, asset=a, scheme="batch-settlement")
    routes = [PaidRoute("GET /metered", offers=(offer,)), PaidRoute("GET /broken", offers=(offer,))]
    hits: dict[str, int] = {}
    async with contextlib.AsyncExitStack() as stack:
        fac_url = await stack.enter_async_context(serve_asgi(create_app(facilitator)))
        client = HttpFacilitatorClient(fac_url)
        mw = PaymentMiddleware(metered_app(hits), routes, client, pay_to=net.payee.address,
                               network=net.info.network, store=store, assets=AssetRegistry((*KNOWN_ASSETS, a)),
                               channel_claims=False)  # the tests drive ClaimManager themselves
        url = await stack.enter_async_context(serve_asgi(mw))
        yield Env(net, url, fac_url, hits, mw, client)
        await mw.flow.aclose()


async def batch_devnet(kind: str) -> Devnet:
    """Our escrow, collectors, Permit2 and Multicall3 at the canonical addresses: in the embedded chain's genesis,
    or placed on a fresh anvil with ``anvil_setCode``."""
    if kind == "anvil":
        from paywire.chain.permit2 import install_permit2
        from tests.helpers import new_devnet

        net = await new_devnet("anvil")
        await install_permit2(net.chain)
        return net
    return await setup_devnet(RpcChain(EmbeddedChain(chain_id=31337, code=permit2_code())))


@pytest_asyncio.fixture(loop_scope="module", scope="module", params=[
    "embedded", pytest.param("anvil", marks=[pytest.mark.anvil, pytest.mark.skipif(
        shutil.which("npm") is None, reason="npm is not on PATH, so anvil cannot be installed")])])
async def env(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Env]:
    net = await batch_devnet(request.param)
    try:
        async with open_env(net, f"sqlite:///{tmp_path_factory.mktemp('batch') / 'seller.db'}") as e:
            yield e
    finally:
        await close_devnet(net)


def sdk_scheme(net: Devnet, salt: int = 0) -> Any:
    from x402.mechanisms.evm.batch_settlement.client import BatchSettlementEvmScheme
    from x402.mechanisms.evm.batch_settlement.client.config import BatchSettlementEvmSchemeOptions

    account = Account.from_key(net.info.payer_key)
    return BatchSettlementEvmScheme(account, BatchSettlementEvmSchemeOptions(salt="0x" + salt.to_bytes(32, "big").hex()))


def sdk_http(net: Devnet, scheme: Any) -> Any:
    from x402 import x402Client
    from x402.http.clients.httpx import x402HttpxClient

    client = x402Client()
    client.register(net.info.network, scheme)
    client.set_spend_controls({"allowed_assets": [{"network": net.info.network, "asset": net.info.token}]})
    return x402HttpxClient(client, timeout=90)


async def test_sdk_client_pays_our_seller_deposit_vouchers_claim_settle_refund(env: Env) -> None:
    net = env.net
    scheme = sdk_scheme(net, salt=1)
    payer0, payee0 = await env.balance(net.payer.address), await env.balance(net.payee.address)
    escrow0 = await env.balance(b.BATCH_SETTLEMENT_ADDRESS)
    costs = [None, 250, None, 0, 999, None, 1, None]  # None: the maximum (PRICE)
    async with sdk_http(net, scheme) as http:
        for cost in costs:
            r = await http.get(env.url + "/metered" + ("" if cost is None else f"?cost={cost}"))
            assert r.status_code == 200, r.text
        failed = await http.get(env.url + "/broken")
    charged = sum(PRICE if c is None else c for c in costs)
    assert env.hits["metered"] == len(costs), "a handler ran more or less than once per request"
    assert failed.status_code == 502 and env.hits["broken"] == 1, "a failing handler was not passed through"

    rows = await env.channels().all()
    assert len(rows) == 1, rows
    row = rows[0]
    assert row.charged == charged, f"the seller charged {row.charged}, the handlers {charged}"
    deposited = await env.balance(b.BATCH_SETTLEMENT_ADDRESS) - escrow0
    assert deposited > 0 and payer0 - await env.balance(net.payer.address) == deposited, "one deposit, nothing else"
    cid = b.bytes32(row.channel_id)
    state = await env.onchain(cid)
    assert (state.balance, state.total_claimed) == (deposited, 0), "vouchers must not touch the chain"

    manager = ClaimManager(env.channels(), env.facilitator)
    assert await manager.claim() == 1
    assert (await env.onchain(cid)).total_claimed == charged, "the claim did not record the charges"
    await manager.settle()
    assert await env.balance(net.payee.address) - payee0 == charged, "settle did not pay the payee the charges"

    # the SDK client's cooperative refund: the rest of the deposit comes back, the channel keeps the claims
    p1 = await env.balance(net.payer.address)
    res = await asyncio.to_thread(scheme.refund, env.url + "/metered")
    assert res.success, res
    assert await env.balance(net.payer.address) - p1 == deposited - charged, "the refund returned the wrong sum"
    after = await env.onchain(cid)
    assert (after.balance, after.total_claimed, after.refund_nonce) == (charged, charged, 1)
    assert await env.balance(b.BATCH_SETTLEMENT_ADDRESS) - escrow0 == 0, "the escrow kept money it owes nobody"


async def test_our_facilitator_supports_batch_settlement_with_a_receiver_authorizer(env: Env) -> None:
    supported = await env.facilitator.supported()
    kinds = [k for k in supported.kinds if k.scheme == "batch-settlement"]
    assert kinds and kinds[0].extra == {"receiverAuthorizer": env.net.facilitator.address}, kinds
    assert all(k.x402_version == 2 for k in kinds), "x402 v1 has no batch-settlement"


async def test_unpaid_and_malformed_requests_leave_no_channel_rows(env: Env) -> None:
    before = len(await env.channels().all())
    async with httpx.AsyncClient(timeout=60) as http:
        r = await http.get(env.url + "/metered")
        assert r.status_code == 402
        bad = await http.get(env.url + "/metered", headers={"PAYMENT-SIGNATURE": "bm90IGpzb24="})
        assert bad.status_code in (400, 402)
    assert len(await env.channels().all()) == before


# ------------------------------------------------------------------------------------------------ our buyer


def our_client(net: Devnet, tmp: Any, salt: int) -> Any:
    from paywire.client import Policy, x402_client
    from paywire.schemes.evm_batch.client import BatchEvmClient

    scheme = BatchEvmClient(net.payer, salt=salt)
    policy = Policy(assets=[net.asset], max_per_payment="$0.10")
    return scheme, x402_client([scheme], policy, store=f"sqlite:///{tmp / f'buyer{salt}.db'}")


async def test_our_buyer_pays_our_seller_and_refunds(env: Env, tmp_path: Any) -> None:
    from paywire.schemes.evm_batch.refund import refund_channel

    net = env.net
    scheme, client = our_client(net, tmp_path, salt=2)
    payer0 = await env.balance(net.payer.address)
    async with client:  # the channel state lives in the client's store: read it while it is open
        for cost in (None, 10, None):
            r = await client.get(env.url + "/metered" + ("" if cost is None else f"?cost={cost}"))
            assert r.status_code == 200, r.text
        ch = await scheme.channel(await env_offer(env))
        assert (ch.charged, ch.balance) == (2 * PRICE + 10, 10 * PRICE), ch
        row = await env.channels().get(ch.channel_id)
        assert row is not None and row.charged == ch.charged, "buyer and seller disagree on the charge"
        res = await refund_channel(scheme, env.url + "/metered")
    assert res.success and res.amount == 10 * PRICE - ch.charged
    assert payer0 - await env.balance(net.payer.address) == ch.charged, "the payer paid more than charged"
    state = await env.onchain(b.bytes32(ch.channel_id))
    assert (state.balance, state.total_claimed) == (ch.charged, ch.charged), "the refund did not claim the charges"
    payee0 = await env.balance(net.payee.address)
    await ClaimManager(env.channels(), env.facilitator).settle()  # the drained channel's claims still get swept
    claimed, settled = b.decode_pair(await net.chain.call(b.BATCH_SETTLEMENT_ADDRESS,
                                                          b.receivers_call(net.payee.address, net.info.token)))
    assert claimed == settled and await env.balance(net.payee.address) - payee0 >= ch.charged


async def env_offer(env: Env) -> Any:
    from paywire.x402.codec import decode_payment_required

    async with httpx.AsyncClient(timeout=60) as http:
        r = await http.get(env.url + "/metered")
    return decode_payment_required(r.headers["payment-required"]).accepts[0]


def sdk_server(net: Devnet, facilitator_url: str, calls: list[str]) -> Any:
    """The SDK's FastAPI resource server with batch-settlement (GET /metered), settling through our facilitator."""
    from fastapi import FastAPI
    from x402 import x402ResourceServer
    from x402.http import FacilitatorConfig, HTTPFacilitatorClient, PaymentOption
    from x402.http.middleware.fastapi import PaymentMiddlewareASGI
    from x402.http.types import RouteConfig
    from x402.mechanisms.evm.batch_settlement.server import BatchSettlementEvmScheme

    i = net.info
    server = x402ResourceServer(HTTPFacilitatorClient(FacilitatorConfig(url=facilitator_url)))
    server.register(i.network, BatchSettlementEvmScheme(net.payee.address))
    routes = {"GET /metered": RouteConfig(accepts=PaymentOption(
        scheme="batch-settlement", network=i.network, pay_to=net.payee.address, max_timeout_seconds=300,
        price={"amount": str(PRICE), "asset": i.token, "extra": {"name": i.token_name, "version": i.token_version}}),
        description="metered", mime_type="application/json")}
    app = FastAPI()

    @app.get("/metered")
    async def metered() -> dict[str, int]:
        calls.append("metered")
        return {"tokens": 3}

    app.add_middleware(PaymentMiddlewareASGI, routes=routes, server=server)
    app.middleware_stack = app.build_middleware_stack()
    return app


async def test_our_buyer_pays_the_official_server_through_our_facilitator(env: Env, tmp_path: Any) -> None:
    from paywire.schemes.evm_batch.refund import refund_channel

    net = env.net
    calls: list[str] = []
    scheme, client = our_client(net, tmp_path, salt=3)
    payer0 = await env.balance(net.payer.address)
    app = await asyncio.to_thread(sdk_server, net, env.facilitator_url, calls)
    async with serve_asgi(app) as url, client:
        for _ in range(5):
            r = await client.get(url + "/metered")
            assert r.status_code == 200, r.text
        assert calls == ["metered"] * 5, calls
        async with httpx.AsyncClient(timeout=60) as http:
            offer = (await http.get(url + "/metered")).headers["payment-required"]
        from paywire.x402.codec import decode_payment_required

        ch = await scheme.channel(decode_payment_required(offer).accepts[0])
        assert ch.charged == 5 * PRICE, ch
        deposited = ch.balance
        assert payer0 - await env.balance(net.payer.address) == deposited, "only the deposit left the wallet"
        res = await refund_channel(scheme, url + "/metered")
    assert res.success, res
    assert payer0 - await env.balance(net.payer.address) == 5 * PRICE, "the refund did not return the rest"
    state = await env.onchain(b.bytes32(ch.channel_id))
    assert (state.balance, state.total_claimed) == (5 * PRICE, 5 * PRICE), "the official server's claim is off"


async def test_buyer_channel_state_survives_a_restart_and_is_listed(env: Env, tmp_path: Any) -> None:
    """The channel state lives in the buyer's store: a new client (a restarted buyer) on the same store pays the
    next voucher without a corrective 402; ``paywire wallet channels`` lists it."""
    import json

    from typer.testing import CliRunner

    from paywire.cli.main import app

    net = env.net
    for round_ in range(2):
        scheme, client = our_client(net, tmp_path, salt=21)
        async with client:
            r = await client.get(env.url + "/metered")
            assert r.status_code == 200, r.text
            ch = await scheme.channel(await env_offer(env))
            assert ch.charged == (round_ + 1) * PRICE, ch
    assert env.hits["metered"] >= 2
    store = f"sqlite:///{tmp_path / 'buyer21.db'}"
    out = await asyncio.to_thread(CliRunner().invoke, app, ["wallet", "channels", "--store", store, "--all",
                                                            "--format", "json"], catch_exceptions=False)
    assert out.exit_code == 0, out.output
    listed = json.loads(out.stdout[out.stdout.index("["):])
    assert [(c["channel_id"], c["charged"], c["balance"]) for c in listed] == [
        (ch.channel_id, str(2 * PRICE), str(ch.balance))], listed


@pytest.mark.node
async def test_typescript_client_pays_our_seller_and_refunds(env: Env) -> None:
    """@x402/fetch with @x402/evm's batch-settlement client (2.27.0): one deposit, vouchers, a refund of the rest."""
    import json

    from tests.node_peers import NODE_DIR, ensure_node_peers

    node = ensure_node_peers()
    net = env.net
    payer0 = await env.balance(net.payer.address)
    escrow0 = await env.balance(b.BATCH_SETTLEMENT_ADDRESS)
    proc = await asyncio.create_subprocess_exec(
        node, "batch_fetch_client.mjs", net.info.payer_key, net.info.network, net.info.token, "4",
        env.url + "/metered", cwd=NODE_DIR, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(proc.communicate(), timeout=180)
    lines = out.decode().strip().splitlines()
    assert lines, f"the TS client printed nothing: {err.decode()[-3000:]}"
    result = json.loads(lines[-1])
    assert "error" not in result, result
    assert [r["status"] for r in result["results"]] == [200] * 4, result
    assert [r["paymentResponse"]["extra"]["chargedAmount"] for r in result["results"]] == [str(PRICE)] * 4
    assert result["refund"]["success"], result["refund"]
    assert payer0 - await env.balance(net.payer.address) == 4 * PRICE, "the TS payer paid more than charged"
    assert await env.balance(b.BATCH_SETTLEMENT_ADDRESS) - escrow0 == 4 * PRICE, "the escrow holds the wrong sum"


@pytest.mark.node
async def test_our_buyer_pays_express_through_our_facilitator_and_refunds(env: Env, tmp_path: Any) -> None:
    """@x402/express with @x402/evm's batch-settlement server (2.27.0), settling through our facilitator: our
    buyer deposits, pays vouchers, then gets the rest back."""
    import os

    from paywire.schemes.evm_batch.refund import refund_channel
    from paywire.x402.codec import decode_payment_required
    from tests.node_peers import NODE_DIR, ensure_node_peers
    from tests.test_buyer_interop import node_server

    node = ensure_node_peers()
    net, i = env.net, env.net.info
    server_env = {**os.environ, "FACILITATOR_URL": env.facilitator_url, "NETWORK": i.network, "ASSET": i.token,
                  "PAY_TO": net.payee.address, "PRICE": str(PRICE), "TOKEN_NAME": i.token_name,
                  "TOKEN_VERSION": i.token_version}
    scheme, client = our_client(net, tmp_path, salt=31)
    payer0 = await env.balance(net.payer.address)
    async with node_server(node, NODE_DIR / "batch_express_server.mjs", server_env) as url, client:
        for _ in range(4):
            r = await client.get(url + "/metered")
            assert r.status_code == 200, r.text
        async with httpx.AsyncClient(timeout=60) as http:
            calls = (await http.get(url + "/calls")).json()
            offer = decode_payment_required((await http.get(url + "/metered")).headers["payment-required"])
        ch = await scheme.channel(offer.accepts[0])
        assert ch.charged == 4 * PRICE and calls == {"metered": 4}, (ch, calls)
        res = await refund_channel(scheme, url + "/metered")
    assert res.success, res
    assert payer0 - await env.balance(net.payer.address) == 4 * PRICE, "the refund did not return the rest"
    state = await env.onchain(b.bytes32(ch.channel_id))
    assert (state.balance, state.total_claimed) == (4 * PRICE, 4 * PRICE)


async def test_a_withdrawal_racing_claims_on_anvil(env: Env, tmp_path: Any, request: pytest.FixtureRequest) -> None:
    """anvil only (it moves time, so it runs last): channel A's payer withdraws everything before the seller claims, so A's claim
    reverts — the batch with B splits and B still lands; channel C's claim lands first, so C's withdrawal is
    capped to what was not claimed."""
    if request.node.callspec.params.get("env") != "anvil":
        pytest.skip("needs evm_increaseTime (anvil)")
    net = env.net
    channels: dict[str, Any] = {}
    for name, salt in (("a", 11), ("b", 12), ("c", 13)):
        scheme, client = our_client(net, tmp_path, salt=salt)
        async with client:
            for _ in range(3):
                assert (await client.get(env.url + "/metered")).status_code == 200
            channels[name] = await scheme.channel(await env_offer(env))
    from typer.testing import CliRunner

    from paywire.cli.main import app
    from paywire.errors import ChainError
    from paywire.schemes.evm_batch.withdraw import finish_withdrawal, start_withdrawal

    # the payer's own exit, everything unclaimed (nothing is claimed yet): A through the API, C the command line
    started = await start_withdrawal(net.chain, net.payer.private_key, b.ChannelConfig.from_wire(channels["a"].config))
    assert started.amount == channels["a"].balance and started.ready_at > 0
    cli = await asyncio.to_thread(
        CliRunner().invoke, app, ["wallet", "withdraw", channels["c"].channel_id, "--rpc", str(net.info.rpc_url),
                                  "--store", f"sqlite:///{tmp_path / 'buyer13.db'}"],
        env={"PAYWIRE_WALLET_KEY": net.info.payer_key, "HOME": str(tmp_path)}, catch_exceptions=False)
    assert cli.exit_code == 0 and f"withdrawal of {channels['c'].balance} started" in cli.output, cli.output
    a_cfg = b.ChannelConfig.from_wire(channels["a"].config)
    with pytest.raises(ChainError, match="WithdrawDelayNotElapsed"):
        await finish_withdrawal(net.chain, net.payer.private_key, a_cfg)
    await net.chain.request("evm_increaseTime", [b.MIN_WITHDRAW_DELAY + 1])
    await net.chain.request("evm_mine", [])
    p0 = await env.balance(net.payer.address)
    done = await finish_withdrawal(net.chain, net.payer.private_key, a_cfg)
    assert done.amount == channels["a"].balance
    assert await env.balance(net.payer.address) - p0 == channels["a"].balance, "A's withdrawal did not pay out"

    manager = ClaimManager(env.channels(), env.facilitator)
    due = len(await env.channels().claim_due())
    assert await manager.claim() == due - 1, manager.failed  # all but A land; A's claim reverts (escrow drained)
    assert list(manager.failed) == [channels["a"].channel_id]
    for name in ("b", "c"):
        state = await env.onchain(b.bytes32(channels[name].channel_id))
        assert state.total_claimed == channels[name].charged, f"{name}'s claim did not land"
    # C is collected with `paywire wallet withdraw --finish`: the buyer store's balance and budget follow
    import json

    from paywire.store import open_database
    from paywire.store.channels import BuyerChannelStore
    from paywire.store.spend import SpendLedger

    store = f"sqlite:///{tmp_path / 'buyer13.db'}"
    policy = tmp_path / "policy.json"
    policy.write_text(json.dumps({"assets": [{"network": net.info.network, "address": net.info.token,
                                              "decimals": 6}]}))

    async def book_and_spent() -> tuple[Any, int]:
        db = open_database(store)
        try:
            return (await BuyerChannelStore(db, net.payer.address).get(channels["c"].channel_id),
                    (await SpendLedger(db, net.payer.address).spent()).total)
        finally:
            await db.aclose()

    _, spent0 = await book_and_spent()
    p1 = await env.balance(net.payer.address)
    cli = await asyncio.to_thread(
        CliRunner().invoke, app, ["wallet", "withdraw", channels["c"].channel_id, "--finish", "--rpc",
                                  str(net.info.rpc_url), "--store", store],
        env={"PAYWIRE_WALLET_KEY": net.info.payer_key, "HOME": str(tmp_path), "PAYWIRE_POLICY": str(policy)},
        catch_exceptions=False)
    assert cli.exit_code == 0, cli.output
    returned = channels["c"].balance - channels["c"].charged
    assert await env.balance(net.payer.address) - p1 == returned, "C's withdrawal took claimed funds"
    assert f"withdrew {returned}" in cli.output, cli.output
    book, spent1 = await book_and_spent()
    assert book is not None and book.balance == channels["c"].charged, "the buyer store kept the withdrawn balance"
    assert spent0 - spent1 == returned, "the withdrawn deposit did not come back to the budget"
