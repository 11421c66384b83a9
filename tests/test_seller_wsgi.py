"""WSGI (Flask) middleware over the same flow, the FastAPI helpers, startup validation and the
self-facilitating mode — real HTTP servers on 127.0.0.1, settlement on the embedded chain."""

from __future__ import annotations

import asyncio
import contextlib
import threading
from typing import Annotated, Any

import httpx
import pytest
import pytest_asyncio
from fastapi import Depends
from flask import Flask, Response, jsonify, request

from paywire.chain import JsonRpcServer
from paywire.errors import ConfigError
from paywire.evm.assets import AssetRegistry
from paywire.facilitator.app import create_app
from paywire.facilitator.client import HttpFacilitatorClient
from paywire.server.asgi import PaymentMiddleware
from paywire.server.core import PaidRoute
from paywire.server.fastapi import PaymentInfo, charge, install, paid, routes_of
from paywire.server.local import self_facilitator
from paywire.server.pricing import Offer
from paywire.server.wsgi import WsgiPaymentMiddleware
from paywire.serving import serve_asgi
from paywire.x402.codec import decode_payment_required, decode_payment_response, encode_payment_payload
from tests.helpers import close_devnet, full_facilitator, new_devnet, payer_of, serve_wsgi, sign

pytestmark = pytest.mark.asyncio(loop_scope="module")
PRICE = 10_000
CHARGE = charge(PRICE, settle="before")  # module level: FastAPI resolves string annotations from here


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def net():
    n = await new_devnet("embedded")
    yield n
    await close_devnet(n)


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def facilitator_url(net):
    async with serve_asgi(create_app(full_facilitator(net))) as url:
        yield url


def flask_shop(runs: dict[str, int]) -> Flask:
    app = Flask("shop")

    def hit(name: str) -> int:
        runs[name] = runs.get(name, 0) + 1
        return runs[name]

    @app.get("/data")
    def data() -> Response:
        n = hit("data")
        threading.Event().wait(0.2)  # slow enough for the copies to pile up behind the claim
        return jsonify(run=n, payer=request.environ["paywire.payment"].payer)

    @app.get("/boom")
    def boom() -> Response:
        hit("boom")
        raise RuntimeError("view exploded")

    @app.get("/stream")
    def stream() -> Response:
        hit("stream")
        tx = request.environ["paywire.payment"].transaction
        return Response((f"line {i}\n" for i in range(3)), mimetype="text/plain", headers={"X-Tx": tx})

    @app.get("/big")
    def big() -> Response:
        hit("big")
        return Response((b"x" * 16_384 for _ in range(8)), mimetype="application/octet-stream")

    @app.get("/free")
    def free() -> Response:
        return jsonify(free=True)

    return app


def routes(net) -> list[PaidRoute]:
    o = (Offer(price=PRICE, asset=net.asset),)
    return [PaidRoute("GET /data", offers=o), PaidRoute("GET /boom", offers=o),
            PaidRoute("GET /stream", offers=o, settle="before"), PaidRoute("GET /big", offers=o)]


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def flask_url(net, facilitator_url, tmp_path_factory):
    runs: dict[str, int] = {}
    app = flask_shop(runs)
    app.wsgi_app = WsgiPaymentMiddleware(app.wsgi_app, routes(net), facilitator_url, pay_to=net.payee.address,
                                         store=f"sqlite:///{tmp_path_factory.mktemp('wsgi') / 's.db'}",
                                         max_record_bytes=64 * 1024)
    with serve_wsgi(app) as url:
        yield url, runs
    app.wsgi_app.close()


async def header_for(http: httpx.AsyncClient, net, url: str) -> str:
    r = await http.get(url)
    assert r.status_code == 402
    req = decode_payment_required(r.headers["payment-required"]).accepts[0]
    return encode_payment_payload(await sign(req, payer_of(net)))


async def balances(net) -> tuple[int, int]:
    return await net.token_balance(net.payer.address), await net.token_balance(net.payee.address)


async def test_flask_eight_concurrent_copies_run_the_view_once(net, flask_url) -> None:
    """The WSGI adapter shares the flow: one claim, one view run, one settlement for eight copies."""
    url, runs = flask_url
    async with httpx.AsyncClient(timeout=60) as http:
        header = await header_for(http, net, url + "/data")
        before = await balances(net)
        rs = await asyncio.gather(*[http.get(url + "/data", headers={"PAYMENT-SIGNATURE": header})
                                    for _ in range(8)])
        free = await http.get(url + "/free")
    assert [r.status_code for r in rs] == [200] * 8, [r.text for r in rs]
    assert runs["data"] == 1 and len({r.content for r in rs}) == 1
    assert rs[0].json()["payer"] == net.payer.address
    assert rs[0].headers["cache-control"] == "private"
    assert decode_payment_response(rs[0].headers["payment-response"]).success
    after = await balances(net)
    assert (before[0] - after[0], after[1] - before[1]) == (PRICE, PRICE)
    assert free.json() == {"free": True} and "PAYMENT-RESPONSE" in free.headers["access-control-expose-headers"]


@pytest.mark.parametrize("path", ["/boom", "/big"])
async def test_flask_failures_are_not_charged(net, flask_url, path: str) -> None:
    """A view that raises (Flask's own 500 page: status >= 400) and one whose answer outgrows what
    settle="after" holds until payment settles (max_record_bytes) both end unpaid, the view run once."""
    url, runs = flask_url
    async with httpx.AsyncClient(timeout=60) as http:
        header = await header_for(http, net, url + path)
        before = await balances(net)
        r = await http.get(url + path, headers={"PAYMENT-SIGNATURE": header})
    assert r.status_code == 500 and "payment-response" not in r.headers
    if path == "/big":
        assert r.json()["error"] == "response_too_large" and "not charged" in r.json()["message"], r.text
    assert await balances(net) == before and runs[path[1:]] == 1


async def test_flask_settle_before_streams(net, flask_url) -> None:
    url, runs = flask_url
    async with httpx.AsyncClient(timeout=60) as http:
        header = await header_for(http, net, url + "/stream")
        before = await balances(net)
        r = await http.get(url + "/stream", headers={"PAYMENT-SIGNATURE": header})
        again = await http.get(url + "/stream", headers={"PAYMENT-SIGNATURE": header})
    assert r.status_code == 200 and r.text == "line 0\nline 1\nline 2\n"
    s = decode_payment_response(r.headers["payment-response"])
    assert s.success and r.headers["x-tx"] == s.transaction
    assert again.status_code == 200 and again.text == r.text and runs["stream"] == 1
    after = await balances(net)
    assert (before[0] - after[0], after[1] - before[1]) == (PRICE, PRICE)


async def test_unsupported_network_fails_at_startup(net, facilitator_url, tmp_path) -> None:
    """Checklist 8: the facilitator does not settle on the route's network → ConfigError at startup, for
    the WSGI adapter, the ASGI adapter and an ASGI app's lifespan."""
    elsewhere = [PaidRoute("GET /x", offers=(Offer(price="$0.01", network="eip155:8453"),))]
    wsgi = WsgiPaymentMiddleware(Flask("x").wsgi_app, elsewhere, facilitator_url, pay_to=net.payee.address,
                                 store=f"sqlite:///{tmp_path / 'a.db'}")
    with pytest.raises(ConfigError, match="supports only: exact on eip155:31337"):
        await asyncio.to_thread(wsgi.startup)
    wsgi.close()
    from starlette.applications import Starlette

    asgi = PaymentMiddleware(Starlette(), elsewhere, HttpFacilitatorClient(facilitator_url),
                             pay_to=net.payee.address, store=f"sqlite:///{tmp_path / 'b.db'}")
    with pytest.raises(ConfigError, match="eip155:8453"):
        await asgi.startup()
    sent: list[dict[str, Any]] = []
    events = iter([{"type": "lifespan.startup"}])

    async def receive() -> dict[str, Any]:
        return next(events)

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    with contextlib.suppress(Exception):
        await asgi({"type": "lifespan", "asgi": {"version": "3.0"}}, receive, send)
    assert sent and sent[0]["type"] == "lifespan.startup.failed" and "eip155:8453" in sent[0]["message"]


async def test_fastapi_decorator_and_dependency(net, facilitator_url, tmp_path) -> None:
    """@paid and charge() price endpoints; the dependency fails closed when the middleware is missing."""
    from fastapi import FastAPI

    def build() -> FastAPI:
        app = FastAPI()

        @app.get("/deco/{name}")
        @paid(PRICE, description="decorated")
        async def deco(name: str) -> dict[str, str]:
            return {"name": name}

        @app.post("/dep")
        async def dep(payment: Annotated[PaymentInfo, Depends(CHARGE)]) -> dict[str, Any]:
            return {"payer": payment.payer, "tx": payment.transaction}

        return app

    bare = build()
    assert sorted(r.key for r in routes_of(bare)) == ["GET /deco/{name}", "POST /dep"]
    async with serve_asgi(bare) as url, httpx.AsyncClient(timeout=60) as http:
        unprotected = await http.post(url + "/dep")
    assert unprotected.status_code == 500  # never served for free

    app = build()
    install(app, facilitator_url, pay_to=net.payee.address, network=net.info.network,
            assets=AssetRegistry((net.asset,)), store=f"sqlite:///{tmp_path / 'f.db'}")
    async with serve_asgi(app) as url, httpx.AsyncClient(timeout=60) as http:
        before = await balances(net)
        h1 = await header_for(http, net, url + "/deco/ada")
        r1 = await http.get(url + "/deco/ada", headers={"PAYMENT-SIGNATURE": h1})
        challenge = await http.post(url + "/dep")
        req = decode_payment_required(challenge.headers["payment-required"]).accepts[0]
        h2 = encode_payment_payload(await sign(req, payer_of(net)))
        r2 = await http.post(url + "/dep", headers={"PAYMENT-SIGNATURE": h2})
    assert r1.status_code == 200 and r1.json() == {"name": "ada"}
    assert r2.status_code == 200 and r2.json()["payer"] == net.payer.address and r2.json()["tx"].startswith("0x")
    after = await balances(net)
    assert (before[0] - after[0], after[1] - before[1]) == (2 * PRICE, 2 * PRICE)


async def test_self_facilitating_in_one_line(net, tmp_path) -> None:
    """No facilitator service: ``self_facilitator(rpc_url, gas_key)`` verifies and settles in-process."""
    server = JsonRpcServer(net.chain.transport)  # type: ignore[attr-defined]
    rpc_url = await asyncio.to_thread(server.start)
    try:
        runs: dict[str, int] = {}
        app = flask_shop(runs)
        app.wsgi_app = WsgiPaymentMiddleware(app.wsgi_app, routes(net),
                                             self_facilitator(rpc_url, net.info.facilitator_key),
                                             pay_to=net.payee.address, store=f"sqlite:///{tmp_path / 's.db'}")
        with serve_wsgi(app) as url:
            async with httpx.AsyncClient(timeout=60) as http:
                header = await header_for(http, net, url + "/data")
                before = await balances(net)
                r = await http.get(url + "/data", headers={"PAYMENT-SIGNATURE": header})
        app.wsgi_app.close()
    finally:
        await asyncio.to_thread(server.stop)
    assert r.status_code == 200 and runs["data"] == 1
    after = await balances(net)
    assert (before[0] - after[0], after[1] - before[1]) == (PRICE, PRICE)


async def test_wsgi_reads_the_body_for_the_mpp_digest_and_hands_it_back() -> None:
    """MPP routes bind the body (checklist 112): the WSGI adapter reads a Content-Length body up to the limit
    and the app still reads all of it; past the limit it is left unread and unbound."""
    import io

    from paywire.server.wsgi import _read_body, request_info

    body = b'{"sku": "W-1"}'
    environ = {"REQUEST_METHOD": "POST", "PATH_INFO": "/order", "CONTENT_LENGTH": str(len(body)),
               "wsgi.input": io.BytesIO(body + b"trailing bytes a server would not send")}
    req = _read_body(request_info(environ), environ, 1024)
    assert req.body == body and environ["wsgi.input"].read() == body
    big = {"REQUEST_METHOD": "POST", "PATH_INFO": "/order", "CONTENT_LENGTH": "2048",
           "wsgi.input": io.BytesIO(b"x" * 2048)}
    untouched = _read_body(request_info(big), big, 1024)
    assert untouched.body is None and len(big["wsgi.input"].read()) == 2048
