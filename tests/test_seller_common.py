"""Shared pieces for the seller tests (no tests here): a devnet with a real HTTP facilitator, a small paid API,
and payment-header builders. Everything is real: signatures, HTTP on 127.0.0.1, settlement on the chain."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import httpx
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from paywire.devnet import Devnet
from paywire.evm.assets import KNOWN_ASSETS, AssetRegistry
from paywire.facilitator.app import create_app
from paywire.facilitator.client import HttpFacilitatorClient
from paywire.server.asgi import PaymentMiddleware
from paywire.server.core import PaidRoute
from paywire.server.pricing import Offer
from paywire.serving import serve_asgi
from paywire.x402.codec import decode_payment_required, encode_payment_payload
from paywire.x402.models import PaymentPayload, PaymentRequirements
from tests.helpers import full_facilitator, payer_of, sign

CHEAP, DEAR = 10_000, 50_000


@dataclass
class Counter:
    """How many times each paid handler really ran."""

    calls: dict[str, int] = field(default_factory=dict)

    def hit(self, name: str) -> int:
        self.calls[name] = self.calls.get(name, 0) + 1
        return self.calls[name]

    def __getitem__(self, name: str) -> int:
        return self.calls.get(name, 0)


def shop_app(counter: Counter) -> Starlette:
    """Handlers for every behaviour under test; each counts its runs."""

    async def cheap(request: Request) -> Response:
        n = counter.hit("cheap")
        pay = request.state.payment
        return JSONResponse({"item": "cheap", "run": n, "payer": pay.payer}, headers={"cache-control": "public"})

    async def dear(request: Request) -> Response:
        return JSONResponse({"item": "dear", "run": counter.hit("dear")})

    async def boom(request: Request) -> Response:
        counter.hit("boom")
        raise RuntimeError("handler exploded")

    async def fail(request: Request) -> Response:
        counter.hit("fail")
        return JSONResponse({"error": "upstream broke"}, status_code=500)

    async def stream(request: Request) -> Response:
        counter.hit("stream")
        tx = request.state.payment.transaction

        async def chunks() -> AsyncIterator[bytes]:
            for i in range(5):
                yield f"chunk {i}\n".encode()
                await asyncio.sleep(0)
            yield f"paid by tx {tx}\n".encode()

        return StreamingResponse(chunks(), media_type="text/plain")

    async def idem(request: Request) -> Response:
        return JSONResponse({"item": "idem", "run": counter.hit("idem"), "nonce": uuid.uuid4().hex})

    async def free(request: Request) -> Response:
        return JSONResponse({"free": True})

    async def slow(request: Request) -> Response:
        n = counter.hit("slow")
        await asyncio.sleep(4.5)  # longer than the 1.5 s lease of the test using it, with room for a busy machine
        return JSONResponse({"item": "slow", "run": n})

    async def big(request: Request) -> Response:
        counter.hit("big")

        async def chunks() -> AsyncIterator[bytes]:
            for _ in range(8):
                yield b"x" * 16_384

        return StreamingResponse(chunks(), media_type="application/octet-stream")

    async def item(request: Request) -> Response:
        return JSONResponse({"item": request.path_params["item_id"], "run": counter.hit("item")})

    return Starlette(routes=[
        Route("/cheap", cheap), Route("/dear", dear), Route("/boom", boom), Route("/fail", fail),
        Route("/stream", stream), Route("/idem", idem, methods=["GET", "POST"]), Route("/free", free),
        Route("/items/{item_id}", item), Route("/cheap2", cheap), Route("/big", big),
        Route("/slow", slow),
    ])


def shop_routes(net: Devnet) -> list[PaidRoute]:
    a = net.asset
    return [
        PaidRoute("GET /cheap", offers=(Offer(price=CHEAP, asset=a),), description="cheap thing"),
        PaidRoute("GET /cheap2", offers=(Offer(price=CHEAP, asset=a),), description="same price, other route"),
        PaidRoute("GET /dear", offers=(Offer(price="$0.05", asset=a),), description="dear thing"),
        PaidRoute("GET /boom", price=CHEAP, description="raises"),
        PaidRoute("GET /fail", price=CHEAP, description="returns 500"),
        PaidRoute("GET /stream", price=CHEAP, settle="before", mime_type="text/plain"),
        PaidRoute("GET /big", price=CHEAP, description="more than the shop holds until settlement"),
        PaidRoute("GET /slow", price=CHEAP, description="takes longer than a short lease"),
        PaidRoute("GET,POST /idem", price=CHEAP, payment_identifier="required"),
        PaidRoute("/items/{item_id}", method="GET", price=lambda req: CHEAP * len(req.path.rsplit("/", 1)[1])),
    ]


@dataclass
class Shop:
    net: Devnet
    url: str
    facilitator_url: str
    counter: Counter
    middleware: PaymentMiddleware
    http: httpx.AsyncClient

    async def balances(self) -> tuple[int, int]:
        return (await self.net.token_balance(self.net.payer.address),
                await self.net.token_balance(self.net.payee.address))

    async def challenge(self, path: str) -> PaymentRequirements:
        r = await self.http.get(self.url + path)
        assert r.status_code == 402, r.text
        return decode_payment_required(r.headers["payment-required"]).accepts[0]

    async def payment(self, path: str, *, pid: str | None = None,
                      change: Callable[[PaymentPayload], PaymentPayload] | None = None) -> str:
        """A fresh ``PAYMENT-SIGNATURE`` value for the first offer of ``path``."""
        return encode_payment_payload(await self.payload(path, pid=pid, change=change))

    async def payload(self, path: str, *, pid: str | None = None,
                      change: Callable[[PaymentPayload], PaymentPayload] | None = None) -> PaymentPayload:
        req = await self.challenge(path)
        p = await sign(req, payer_of(self.net))
        if pid is not None:
            p = PaymentPayload(accepted=p.accepted, payload=p.payload, resource=p.resource,
                               extensions={"payment-identifier": {"info": {"required": True, "id": pid}}})
        return change(p) if change else p


@contextlib.asynccontextmanager
async def open_shop(net: Devnet, store_url: str, *, facilitator_url: str | None = None,
                    facilitator_timeout: float = 30.0, routes: list[PaidRoute] | None = None,
                    **options: Any) -> AsyncIterator[Shop]:
    """The shop app behind our ASGI middleware, served on 127.0.0.1, settling through an HTTP facilitator."""
    counter = Counter()
    async with contextlib.AsyncExitStack() as stack:
        if facilitator_url is None:
            facilitator_url = await stack.enter_async_context(serve_asgi(create_app(full_facilitator(net))))
        mw = PaymentMiddleware(shop_app(counter), routes if routes is not None else shop_routes(net),
                               HttpFacilitatorClient(facilitator_url, timeout=facilitator_timeout),
                               pay_to=net.payee.address, network=net.info.network, store=store_url,
                               assets=AssetRegistry((*KNOWN_ASSETS, net.asset)), **options)
        url = await stack.enter_async_context(serve_asgi(mw))
        http = await stack.enter_async_context(httpx.AsyncClient(timeout=60))
        yield Shop(net, url, facilitator_url, counter, mw, http)
        await mw.flow.aclose()
