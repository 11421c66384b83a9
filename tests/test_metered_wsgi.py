"""Streamed billing through the WSGI middleware: a real Flask app served by werkzeug on 127.0.0.1 (port 0), our
facilitator over HTTP, the embedded chain. An SSE view bills per unit (``bill_unit``); the stream passes through
as it is made (not buffered), stops cleanly at the authorized maximum, and exactly what was billed is settled
(``upto``: token balances) or committed to the channel (``batch-settlement``: the channel row, then claimed and
swept to the payee). The receipt is the stream's last ``event: payment-response``.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
import pytest_asyncio
from flask import Flask, Response, request, stream_with_context

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
from paywire.server.channel_claims import ClaimManager
from paywire.server.core import PaidRoute
from paywire.server.pricing import Offer
from paywire.server.wsgi import WsgiPaymentMiddleware
from paywire.serving import serve_asgi
from paywire.store.channels import ChannelStore
from paywire.store.db import open_database
from paywire.x402.codec import decode_payment_required, encode_payment_payload
from paywire.x402.models import PaymentPayload, PaymentRequirements
from tests.helpers import close_devnet, serve_wsgi
from tests.test_metered_seller import parse_sse

pytestmark = pytest.mark.asyncio(loop_scope="module")

MAXIMUM = 50_000
PRICE = 1_000


@dataclass
class Env:
    net: Devnet
    url: str
    facilitator: HttpFacilitatorClient
    http: httpx.AsyncClient
    served: dict[str, int]
    store_url: str
    gate: dict[str, threading.Event]
    closed: threading.Event

    async def offer(self, path: str) -> PaymentRequirements:
        r = await self.http.get(self.url + path)
        assert r.status_code == 402, r.text
        return decode_payment_required(r.headers["payment-required"]).accepts[0]

    def header(self, payload: dict[str, Any], req: PaymentRequirements) -> dict[str, str]:
        return {"PAYMENT-SIGNATURE": encode_payment_payload(PaymentPayload(accepted=req, payload=payload))}


def flask_app(served: dict[str, int], gate: dict[str, threading.Event]) -> Flask:
    app = Flask("metered")

    @app.get("/upto")
    @app.get("/channel")
    def tokens() -> Response:
        units, price = int(request.args["units"]), int(request.args["unit"])
        wait = gate.get(request.args.get("gate", ""))

        def events() -> Iterator[str]:
            for i in range(units):
                bill_unit(request, price)  # MaximumReached ends the stream here
                served[request.path] = served.get(request.path, 0) + 1
                yield f"data: token {i}\n\n"
                if wait is not None and i == 0:
                    wait.wait(60)  # the next unit is made only once the client has read this one

        return Response(stream_with_context(events()), mimetype="text/event-stream")

    return app


class Closed:
    """Test hook outside the middleware: sets ``event`` once the server has closed the body iterable of a
    request with ``watch`` in its query (the point where the middleware has settled what it was charged)."""

    def __init__(self, app: Any, event: threading.Event) -> None:
        self.app, self.event = app, event

    def __call__(self, environ: Any, start_response: Any) -> Any:
        inner = self.app(environ, start_response)
        if "watch" not in environ.get("QUERY_STRING", ""):
            return inner
        event = self.event

        class Body:
            def __iter__(self) -> Iterator[bytes]:
                return iter(inner)

            def close(self) -> None:
                try:
                    getattr(inner, "close", lambda: None)()
                finally:
                    event.set()

        return Body()


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def env(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Env]:
    net = await setup_devnet(RpcChain(EmbeddedChain(chain_id=31337, code=permit2_code())))
    await approve_permit2(net.chain, net.payer.private_key, net.info.token)
    rails = [EvmNetwork(net.info.network, net.chain, [TxSender(net.chain, net.facilitator.private_key)])]
    a = net.asset
    routes = [PaidRoute("GET /upto", offers=(Offer(price=MAXIMUM, asset=a, scheme="upto"),)),
              PaidRoute("GET /channel", offers=(Offer(price=PRICE, asset=a, scheme="batch-settlement"),))]
    served: dict[str, int] = {}
    gate: dict[str, threading.Event] = {}
    try:
        async with contextlib.AsyncExitStack() as stack:
            fac_url = await stack.enter_async_context(
                serve_asgi(create_app(Facilitator(default_registry.facilitators_for(rails)))))
            store = f"sqlite:///{tmp_path_factory.mktemp('wsgi') / 'seller.db'}"
            app = flask_app(served, gate)
            mw = WsgiPaymentMiddleware(app.wsgi_app, routes, HttpFacilitatorClient(fac_url),
                                       pay_to=net.payee.address, network=net.info.network, store=store,
                                       assets=AssetRegistry((*KNOWN_ASSETS, a)), channel_claims=False)
            closed = threading.Event()
            app.wsgi_app = Closed(mw, closed)  # type: ignore[method-assign]
            stack.callback(mw.close)
            url = stack.enter_context(serve_wsgi(app))
            http = await stack.enter_async_context(httpx.AsyncClient(timeout=60))
            yield Env(net, url, HttpFacilitatorClient(fac_url), http, served, store, gate, closed)
    finally:
        await close_devnet(net)


async def channel_charged(env: Env, cid: str) -> int:
    db = open_database(env.store_url)
    try:
        row = await ChannelStore(db).get(cid)
        assert row is not None, "the channel has no row"
        return row.charged
    finally:
        await db.aclose()


@pytest.mark.parametrize(("units", "billed"), [(3, 3), (80, 50)])
async def test_flask_upto_stream_settles_exactly_the_units_billed(env: Env, units: int, billed: int) -> None:
    """3 units of 1,000 settle 3,000; 80 units against a 50,000 maximum stop cleanly after 50 and settle 50,000."""
    net, unit = env.net, 1_000
    payer0, payee0 = await net.token_balance(net.payer.address), await net.token_balance(net.payee.address)
    req = await env.offer("/upto")
    payload = await UptoEvmClient(LocalSigner(net.payer.private_key)).create_payload(req)
    before = env.served.get("/upto", 0)
    r = await env.http.get(f"{env.url}/upto?units={units}&unit={unit}", headers=env.header(payload, req))
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("text/event-stream")
    assert "content-length" not in r.headers and "payment-response" not in r.headers, "the stream was buffered"
    data, receipt = parse_sse(r.text)
    assert data == [f"token {i}" for i in range(billed)], "the stream did not stop at the maximum"
    assert env.served["/upto"] - before == billed
    assert receipt is not None and receipt.success and receipt.transaction, "no receipt event after the stream"
    assert int(receipt.amount or 0) == billed * unit
    assert payer0 - await net.token_balance(net.payer.address) == billed * unit, "payer charged the wrong sum"
    assert await net.token_balance(net.payee.address) - payee0 == billed * unit, "payee paid the wrong sum"


async def test_flask_stream_is_not_buffered(env: Env) -> None:
    """The first unit reaches the client while the view still holds the second back: the stream passes through."""
    net = env.net
    req = await env.offer("/upto")
    payload = await UptoEvmClient(LocalSigner(net.payer.private_key)).create_payload(req)
    gate = env.gate["first"] = threading.Event()
    payer0 = await net.token_balance(net.payer.address)
    async with env.http.stream("GET", f"{env.url}/upto?units=2&unit=700&gate=first",
                               headers=env.header(payload, req)) as r:
        assert r.status_code == 200
        lines = r.aiter_lines()
        assert await anext(lines) == "data: token 0", "the first unit did not arrive before the view went on"
        gate.set()
        rest = [line async for line in lines]
    _, receipt = parse_sse("\n".join(["data: token 0", *rest]))
    assert receipt is not None and int(receipt.amount or 0) == 1_400
    assert payer0 - await net.token_balance(net.payer.address) == 1_400


async def test_a_client_gone_mid_stream_is_charged_the_units_billed(env: Env) -> None:
    """The client reads one unit and hangs up; the view goes on until the server's write fails. The payer is
    charged exactly the units the view billed (each billed before it was yielded), no more, and not nothing."""
    import asyncio

    net, unit = env.net, 100
    req = await env.offer("/upto")
    payload = await UptoEvmClient(LocalSigner(net.payer.private_key)).create_payload(req)
    gate = env.gate["gone"] = threading.Event()
    payer0, before = await net.token_balance(net.payer.address), env.served.get("/upto", 0)
    env.closed.clear()
    async with httpx.AsyncClient(timeout=60) as http, http.stream(
            "GET", f"{env.url}/upto?units=400&unit={unit}&gate=gone&watch=1", headers=env.header(payload, req)) as r:
        assert r.status_code == 200
        assert await anext(r.aiter_lines()) == "data: token 0"
    gate.set()  # the connection is closed: the view's next units go nowhere
    assert await asyncio.to_thread(env.closed.wait, 60), "the server never closed the response"
    billed = env.served["/upto"] - before
    assert 1 <= billed < 400, f"{billed} units billed: the stream did not stop when the client left"
    assert payer0 - await net.token_balance(net.payer.address) == billed * unit, "not charged the units billed"


async def test_flask_channel_stream_commits_exactly_the_units_billed(env: Env) -> None:
    """A deposit with a streamed first request (5 × 100), then a voucher whose stream hits the 1,000 maximum
    after 3 × 300: the channel row says 1,400, and the claim manager sweeps exactly that to the payee."""
    net = env.net
    client = BatchEvmClient(net.payer, salt=9_101)
    req = await env.offer("/channel")
    cid = client.channel_id(req)
    r = await env.http.get(env.url + "/channel?units=5&unit=100",
                           headers=env.header(await client.create_payload(req), req))
    assert r.status_code == 200, r.text
    data, receipt = parse_sse(r.text)
    assert len(data) == 5 and receipt is not None and receipt.extra
    assert receipt.extra["chargedAmount"] == "500"
    await client.settled(req, receipt)
    assert await channel_charged(env, cid) == 500

    r = await env.http.get(env.url + "/channel?units=10&unit=300",
                           headers=env.header(await client.create_payload(req), req))
    data, receipt = parse_sse(r.text)
    assert data == ["token 0", "token 1", "token 2"], "the stream did not stop at the voucher's maximum"
    assert receipt is not None and receipt.extra and receipt.extra["chargedAmount"] == "900"
    await client.settled(req, receipt)
    assert await channel_charged(env, cid) == 1_400, "the channel was not charged what was billed"

    db = open_database(env.store_url)
    try:
        payee0 = await net.token_balance(net.payee.address)
        manager = ClaimManager(ChannelStore(db), env.facilitator)
        assert await manager.claim() == 1
        await manager.settle()
        assert await net.token_balance(net.payee.address) - payee0 == 1_400, "the payee got other than billed"
    finally:
        await db.aclose()


async def test_our_sync_buyer_records_the_receipt_event_of_a_flask_stream(env: Env, tmp_path: Any) -> None:
    """The synchronous buyer (``x402_sync_client``) reads the closing ``payment-response`` event of a Flask
    stream and records its transaction and charged amount (4 × 1,000 of a 50,000 maximum) in its ledger."""
    import asyncio

    from paywire.client import Policy, receipt_of, x402_sync_client
    from paywire.wallet import Wallet
    from tests.test_metered_seller import buyer_rows

    net = env.net
    store = f"sqlite:///{tmp_path / 'sync-buyer.db'}"
    wallet = Wallet.from_key(net.info.payer_key, chains={net.info.network: net.chain})
    payer0 = await net.token_balance(net.payer.address)

    def buy() -> httpx.Response:
        with x402_sync_client(wallet, Policy(assets=[net.asset], max_per_payment="$0.10"), store=store) as client:
            return client.get(env.url + "/upto?units=4&unit=1000")

    r = await asyncio.to_thread(buy)
    assert r.status_code == 200, r.text
    _, event = parse_sse(r.text)
    assert event is not None and event.transaction
    receipt = receipt_of(r)
    assert receipt is not None and (receipt.charged, receipt.tx) == (4_000, event.transaction)
    [row] = await buyer_rows(store, net.payer.address)
    assert (row.charged, row.tx, row.budget) == (4_000, event.transaction, "committed"), row
    assert payer0 - await net.token_balance(net.payer.address) == 4_000


@pytest.mark.parametrize("stream", [False, True])
async def test_our_requests_buyer_records_the_receipt_event_of_a_flask_stream(env: Env, tmp_path: Any,
                                                                           stream: bool) -> None:
    """The ``requests`` adapter (``x402_requests``) reads the closing ``payment-response`` event of a Flask
    stream as the caller reads the body (``stream=True``: line by line) and records its transaction and
    charged amount (3 × 1,000 of a 50,000 maximum) in its ledger."""
    import asyncio

    from paywire.client import Policy, receipt_of, x402_requests
    from paywire.wallet import Wallet
    from tests.test_metered_seller import buyer_rows

    net = env.net
    store = f"sqlite:///{tmp_path / 'requests-buyer.db'}"
    wallet = Wallet.from_key(net.info.payer_key, chains={net.info.network: net.chain})
    payer0 = await net.token_balance(net.payer.address)

    def buy() -> tuple[int, str, Any]:
        with x402_requests(wallet, Policy(assets=[net.asset], max_per_payment="$0.10"), store=store) as s:
            r = s.get(env.url + "/upto?units=3&unit=1000", stream=stream, timeout=60)
            text = "\n".join(r.iter_lines(decode_unicode=True)) + "\n" if stream else r.text
            return r.status_code, text, receipt_of(r)

    status, text, receipt = await asyncio.to_thread(buy)
    assert status == 200, text
    _, event = parse_sse(text)
    assert event is not None and event.transaction, "no receipt event after the stream"
    assert receipt is not None and (receipt.charged, receipt.tx) == (3_000, event.transaction), receipt
    [row] = await buyer_rows(store, net.payer.address)
    assert (row.charged, row.tx, row.budget) == (3_000, event.transaction, "committed"), row
    assert payer0 - await net.token_balance(net.payer.address) == 3_000


@pytest.mark.parametrize("size", [1, 3, 7, 1000])
async def test_receipt_scanner_finds_the_closing_event_in_any_chunking(size: int) -> None:
    """The buyer's scanner finds the receipt event however the body is cut (CRLF lines too), and only that one."""
    from paywire.client.sse import ReceiptScanner

    body = (b"data: token 0\r\n\r\nevent: other\r\ndata: nope\r\n\r\ndata: token 1\n\n"
            b"event: payment-response\r\ndata: eyJzdWNjZXNzIjp0cnVlfQ==\r\n\r\n")
    scan = ReceiptScanner()
    for i in range(0, len(body), size):
        scan.feed(body[i:i + size])
    assert scan.end() == "eyJzdWNjZXNzIjp0cnVlfQ=="
    plain = ReceiptScanner()
    plain.feed(b"data: token 0\n\nevent: other\ndata: x\n\n")
    assert plain.end() is None
