"""The metered seller on the embedded chain (our contracts, our facilitator over HTTP, real HTTP on 127.0.0.1):

* streamed billing (issue 15, item 4): an SSE handler bills per unit (``bill_unit``), paid with ``upto`` and with
  ``batch-settlement``. The stream stops cleanly at the authorized maximum (the client reads a complete response,
  no 5xx, no hang), and what is settled (upto) or committed then claimed (channel) is exactly what was billed:
  token balances and the channel row asserted;
* the claim manager runs with ``PaymentMiddleware``: claims land and are swept with no ``ClaimManager`` call.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import subprocess
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
import pytest_asyncio
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from paywire.chain import EmbeddedChain, RpcChain
from paywire.chain.permit2 import approve_permit2, permit2_code
from paywire.chain.rail import EvmNetwork
from paywire.chain.tx import TxSender
from paywire.devnet import Devnet, setup_devnet
from paywire.evm.assets import KNOWN_ASSETS, AssetRegistry
from paywire.evm.signer import LocalSigner
from paywire.facilitator.app import create_app
from paywire.facilitator.client import HttpFacilitatorClient
from paywire.facilitator.core import Facilitator
from paywire.schemes.evm_batch.client import BatchEvmClient
from paywire.schemes.evm_upto.client import UptoEvmClient
from paywire.schemes.registry import default_registry
from paywire.server import bill_unit
from paywire.server.asgi import PaymentMiddleware
from paywire.server.channel_claims import ClaimManager
from paywire.server.core import PaidRoute
from paywire.server.pricing import Offer
from paywire.serving import serve_asgi
from paywire.store.channels import ChannelStore
from paywire.x402.codec import decode_payment_required, decode_payment_response, encode_payment_payload
from paywire.x402.models import PaymentPayload, PaymentRequirements, SettleResponse
from tests.helpers import close_devnet

pytestmark = pytest.mark.asyncio(loop_scope="module")

MAXIMUM = 50_000  # upto: at most 0.05 USDC per request
PRICE = 1_000  # batch-settlement: at most 0.001 USDC per request


@dataclass
class Env:
    net: Devnet
    url: str
    facilitator: HttpFacilitatorClient
    middleware: PaymentMiddleware
    http: httpx.AsyncClient
    served: dict[str, int]
    store_url: str = ""

    async def offer(self, path: str) -> PaymentRequirements:
        r = await self.http.get(self.url + path)
        assert r.status_code == 402, r.text
        return decode_payment_required(r.headers["payment-required"]).accepts[0]

    def channels(self) -> ChannelStore:
        return ChannelStore(self.middleware.flow.payments.db)


def sse_app(served: dict[str, int]) -> Starlette:
    async def tokens(request: Request) -> Response:
        units, price = int(request.query_params["units"]), int(request.query_params["unit"])

        async def events() -> AsyncIterator[str]:
            for i in range(units):
                bill_unit(request, price)  # before the unit leaves: MaximumReached ends the stream here
                served[request.url.path] = served.get(request.url.path, 0) + 1
                yield f"data: token {i}\n\n"

        return StreamingResponse(events(), media_type="text/event-stream")

    return Starlette(routes=[Route("/upto", tokens), Route("/channel", tokens)])


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def env(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Env]:
    net = await setup_devnet(RpcChain(EmbeddedChain(chain_id=31337, code=permit2_code())))
    await approve_permit2(net.chain, net.payer.private_key, net.info.token)
    rails = [EvmNetwork(net.info.network, net.chain, [TxSender(net.chain, net.facilitator.private_key)])]
    a = net.asset
    routes = [PaidRoute("GET /upto", offers=(Offer(price=MAXIMUM, asset=a, scheme="upto"),)),
              PaidRoute("GET /channel", offers=(Offer(price=PRICE, asset=a, scheme="batch-settlement"),))]
    served: dict[str, int] = {}
    try:
        async with contextlib.AsyncExitStack() as stack:
            fac_url = await stack.enter_async_context(
                serve_asgi(create_app(Facilitator(default_registry.facilitators_for(rails)))))
            store = f"sqlite:///{tmp_path_factory.mktemp('stream') / 'seller.db'}"
            mw = PaymentMiddleware(sse_app(served), routes, HttpFacilitatorClient(fac_url), pay_to=net.payee.address,
                                   network=net.info.network, store=store,
                                   assets=AssetRegistry((*KNOWN_ASSETS, a)), channel_claims=False)
            stack.push_async_callback(mw.flow.aclose)
            url = await stack.enter_async_context(serve_asgi(mw))
            http = await stack.enter_async_context(httpx.AsyncClient(timeout=60))
            yield Env(net, url, HttpFacilitatorClient(fac_url), mw, http, served, store)
    finally:
        await close_devnet(net)


def parse_sse(text: str) -> tuple[list[str], SettleResponse | None]:
    """The data lines of the handler's events and the decoded ``payment-response`` event."""
    data, receipt = [], None
    for block in text.split("\n\n"):
        lines = dict(line.split(": ", 1) for line in block.splitlines() if ": " in line)
        if lines.get("event") == "payment-response":
            receipt = decode_payment_response(lines["data"])
        elif "data" in lines:
            data.append(lines["data"])
    return data, receipt


async def paid_stream(env: Env, path: str, payload: dict[str, Any], req: PaymentRequirements) -> httpx.Response:
    header = {"PAYMENT-SIGNATURE": encode_payment_payload(PaymentPayload(accepted=req, payload=payload))}
    r = await env.http.get(env.url + path, headers=header)  # reads the whole body: a cut stream raises here
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("text/event-stream")
    return r


@pytest.mark.parametrize(("units", "billed"), [(3, 3), (80, 50)])
async def test_upto_stream_settles_exactly_the_units_billed(env: Env, units: int, billed: int) -> None:
    """3 units of 1,000 settle 3,000; 80 units against a 50,000 maximum stop cleanly after 50 and settle 50,000."""
    net, unit = env.net, 1_000
    payer0, payee0 = await net.token_balance(net.payer.address), await net.token_balance(net.payee.address)
    req = await env.offer("/upto")
    payload = await UptoEvmClient(LocalSigner(net.payer.private_key)).create_payload(req)
    before = env.served.get("/upto", 0)
    r = await paid_stream(env, f"/upto?units={units}&unit={unit}", payload, req)
    data, receipt = parse_sse(r.text)
    assert data == [f"token {i}" for i in range(billed)], "the stream did not stop at the maximum"
    assert env.served["/upto"] - before == billed
    assert receipt is not None and receipt.success and receipt.transaction, "no receipt event after the stream"
    assert int(receipt.amount or 0) == billed * unit
    assert payer0 - await net.token_balance(net.payer.address) == billed * unit, "payer charged the wrong sum"
    assert await net.token_balance(net.payee.address) - payee0 == billed * unit, "payee paid the wrong sum"


async def test_channel_stream_commits_exactly_the_units_billed(env: Env) -> None:
    """A deposit with a streamed first request (5 × 100), then a voucher whose stream hits the 1,000 maximum after
    3 × 300: the channel is charged 1,400, the claim manager claims and sweeps exactly that to the payee."""
    net = env.net
    client = BatchEvmClient(net.payer, salt=7_001)
    req = await env.offer("/channel")
    cid = client.channel_id(req)
    r = await paid_stream(env, "/channel?units=5&unit=100", await client.create_payload(req), req)
    data, receipt = parse_sse(r.text)
    assert len(data) == 5 and receipt is not None and receipt.extra
    assert receipt.extra["chargedAmount"] == "500"
    await client.settled(req, receipt)
    assert (await env.channels().get(cid)).charged == 500  # type: ignore[union-attr]

    r = await paid_stream(env, "/channel?units=10&unit=300", await client.create_payload(req), req)
    data, receipt = parse_sse(r.text)
    assert data == ["token 0", "token 1", "token 2"], "the stream did not stop at the voucher's maximum"
    assert receipt is not None and receipt.extra and receipt.extra["chargedAmount"] == "900"
    await client.settled(req, receipt)
    assert (await env.channels().get(cid)).charged == 1_400, "the channel was not charged what was billed"  # type: ignore[union-attr]

    # the sales ledger: one served row per charge, the deposit's transaction on the first; a replayed voucher
    # (corrective 402) adds nothing
    replay = {"PAYMENT-SIGNATURE": r.request.headers["payment-signature"]}
    assert (await env.http.get(env.url + "/channel?units=1&unit=1", headers=replay)).status_code == 402
    sales = [x for x in await env.middleware.flow.payments.sales() if x.auth_key.startswith(f"channel:{cid}:")]
    assert [(x.amount, x.state, x.scheme, x.route) for x in sales] == [
        (900, "served", "batch-settlement", "GET /channel"), (500, "served", "batch-settlement", "GET /channel")]
    assert sales[1].tx and not sales[0].tx and str(sales[0].payer).lower() == net.payer.address.lower()
    out = await asyncio.to_thread(subprocess.run, [sys.executable, "-m", "paywire.cli.main", "sales", "--json",
                                                   "--store", env.store_url], capture_output=True, text=True,
                                  timeout=120, stdin=subprocess.DEVNULL, env={**os.environ, "PYTHONPATH": os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "src")})
    assert out.returncode == 0, out.stderr
    shown = json.loads(out.stdout)
    assert {"900", "500"} <= {x["amount"] for x in shown["sales"] if x["state"] == "served"}

    payee0 = await net.token_balance(net.payee.address)
    manager = ClaimManager(env.channels(), env.facilitator)
    assert await manager.claim() == 1
    await manager.settle()
    assert await net.token_balance(net.payee.address) - payee0 == 1_400, "the payee got other than the billed sum"


async def test_claim_manager_runs_with_the_middleware(env: Env, tmp_path) -> None:
    """A seller offering batch-settlement with ``claim_threshold``: once a charge waits unclaimed, the manager the
    middleware started claims it on chain and sweeps it to the payee; closing the seller stops it."""
    net = env.net
    routes = [PaidRoute("GET /channel", offers=(Offer(price=PRICE, asset=net.asset, scheme="batch-settlement"),))]
    mw = PaymentMiddleware(sse_app({}), routes, env.facilitator, pay_to=net.payee.address, network=net.info.network,
                           store=f"sqlite:///{tmp_path / 'auto.db'}", assets=AssetRegistry((*KNOWN_ASSETS, net.asset)),
                           claim_threshold=1_000, claim_interval=3_600)
    payee0 = await net.token_balance(net.payee.address)
    try:
        async with serve_asgi(mw) as url:
            seller = Env(net, url, env.facilitator, mw, env.http, {})
            client = BatchEvmClient(net.payer, salt=7_002)
            req = await seller.offer("/channel")
            manager = mw.flow.claims
            assert manager is not None, "the claim manager did not start with the seller"
            for units in (4, 6):  # 400, then 600: the threshold of 1,000 is reached only by both
                r = await paid_stream(seller, f"/channel?units={units}&unit=100", await client.create_payload(req), req)
                receipt = parse_sse(r.text)[1]
                assert receipt is not None
                await client.settled(req, receipt)
            await asyncio.wait_for(manager.landed.wait(), 120)
            row = await seller.channels().get(client.channel_id(req))
            assert row is not None and (row.charged, row.claimed) == (1_000, 1_000)
            assert await net.token_balance(net.payee.address) - payee0 == 1_000, "the charges were not swept"
    finally:
        await mw.flow.aclose()
    assert mw.flow._claims_task is None and manager.landed.is_set()


async def test_a_renewed_channel_lease_keeps_other_replicas_out(tmp_path) -> None:
    """A handler that outlives its lease (a long stream) renews it: another replica cannot take the channel, and
    the commit still lands; a lease nobody renews lapses (the store's clock is ours, nothing sleeps)."""
    from paywire.store.channels import Onchain

    now = [1_000.0]
    store = await ChannelStore.open(f"sqlite:///{tmp_path / 'lease.db'}")
    store.clock = lambda: now[0]
    try:
        cid = "0x" + "ab" * 32
        assert await store.create_locked(cid, "eip155:31337", {}, {}, 0, Onchain(10_000, 0, 0, 0), "a", 30)
        now[0] += 20
        assert await store.renew(cid, "a", 30)  # until 1,050
        now[0] += 20  # 1,040: past the first lease, inside the renewed one
        assert await store.take(cid, "b", 30) is None, "another replica took a renewed lease"
        assert await store.commit(cid, "a", 0, 700, 1_000, "0x01"), "the renewing owner could not commit"
        assert (await store.get(cid)).charged == 700  # type: ignore[union-attr]
        assert await store.take(cid, "a", 30) is not None
        now[0] += 31  # "a" stopped renewing: its lease lapses and another replica may go on
        assert not await store.renew(cid, "b", 30)
        assert await store.take(cid, "b", 30) is not None
        assert not await store.renew(cid, "a", 30), "a lapsed owner renewed a lease it lost"
    finally:
        await store.aclose()


# ------------------------------------------------------------------------------------------------ our buyer


async def buyer_rows(store: str, payer: str) -> list[Any]:
    from paywire.store.db import open_database
    from paywire.store.spend import SpendLedger

    db = open_database(store)
    try:
        return [r for r in await SpendLedger(db, payer).history() if r.outcome == "paid"]
    finally:
        await db.aclose()


async def test_our_buyer_records_the_receipt_event_of_a_stream(env: Env, tmp_path: Any) -> None:
    """Our buyer reads the ``payment-response`` event that closes a streamed upto response and records it in its
    ledger like a header: the transaction and the charged amount (50 units of 1,000 of a 50,000 maximum)."""
    from paywire.client import Policy, receipt_of, settlement_of, x402_client
    from paywire.wallet import Wallet

    net = env.net
    store = f"sqlite:///{tmp_path / 'buyer.db'}"
    wallet = Wallet.from_key(net.info.payer_key, chains={net.info.network: net.chain})
    payer0 = await net.token_balance(net.payer.address)
    async with x402_client(wallet, Policy(assets=[net.asset], max_per_payment="$0.10"), store=store) as client:
        r = await client.get(env.url + "/upto?units=80&unit=1000")
    assert r.status_code == 200, r.text
    assert len(parse_sse(r.text)[0]) == 50
    settled = settlement_of(r)
    assert settled is not None and settled.transaction, "the receipt event was not exposed on the response"
    got = receipt_of(r)
    assert got is not None and got.charged == 50_000, "the response's receipt does not say what was charged"
    [row] = await buyer_rows(store, net.payer.address)
    assert (row.charged, row.tx, row.budget) == (50_000, settled.transaction, "committed"), row
    assert row.amount == MAXIMUM
    assert payer0 - await net.token_balance(net.payer.address) == 50_000


async def test_our_buyer_follows_a_streamed_channel_from_its_receipt_events(env: Env, tmp_path: Any) -> None:
    """On a channel, the closing receipt event tells our buyer what each stream charged: the ledger holds 500
    and 900, and the next voucher is signed on the right cumulative amount (no corrective 402 needed: the
    seller's channel row and the buyer's agree after each request)."""
    from paywire.client import Policy, x402_client

    net = env.net
    store = f"sqlite:///{tmp_path / 'channel-buyer.db'}"
    scheme = BatchEvmClient(net.payer, salt=7_003)
    req = await env.offer("/channel")
    async with x402_client([scheme], Policy(assets=[net.asset], max_per_payment="$0.10"), store=store) as client:
        for units, unit, total in ((5, 100, 500), (10, 300, 1_400)):
            r = await client.get(env.url + f"/channel?units={units}&unit={unit}")
            assert r.status_code == 200, r.text
            ch = await scheme.channel(req)
            assert ch.charged == total, "the buyer did not learn the charge from the receipt event"
            assert (await env.channels().get(ch.channel_id)).charged == total  # type: ignore[union-attr]
    rows = await buyer_rows(store, net.payer.address)
    assert sorted(r.charged for r in rows) == [500, 900], rows
