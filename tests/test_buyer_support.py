"""Shared pieces for the buyer tests (no tests here): paid servers, misbehaving servers, a dropping proxy,
and on-chain counting. Everything is real: our seller middleware, our facilitator, the embedded chain."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import socket
import tempfile
import threading
from collections.abc import AsyncIterator
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from paywire.devnet import Devnet
from paywire.errors import WireError
from paywire.evm import token
from paywire.facilitator.client import LocalFacilitatorClient
from paywire.facilitator.core import Facilitator
from paywire.schemes.evm_exact import exact_evm_offer
from paywire.server.asgi import PaymentMiddleware
from paywire.server.core import PaidRoute
from paywire.x402.codec import decode_payment_signature, encode_header
from paywire.x402.matching import find_matching_requirements
from paywire.x402.models import (
    PaymentPayloadV1,
    PaymentRequired,
    PaymentRequirements,
    PaymentRequirementsV1,
    ResourceInfo,
    requirements_v2_to_v1,
)

USDC = 1_000_000
CENT = USDC // 100


def offer(net: Devnet, amount: int, pay_to: str | None = None, **changes: Any) -> PaymentRequirements:
    req = exact_evm_offer(net.asset, pay_to or net.payee.address, amount=amount)
    return dataclasses.replace(req, **changes) if changes else req


def content_app(counter: dict[str, int] | None = None) -> Starlette:
    """The protected resource: echoes its path and counts how often each handler ran."""
    hits = counter if counter is not None else {}

    async def handler(request: Request) -> JSONResponse:
        hits[request.url.path] = hits.get(request.url.path, 0) + 1
        body = (await request.body()).decode(errors="replace")
        return JSONResponse({"path": request.url.path, "content": "paid content", "method": request.method,
                             "body": body, "x_test": request.headers.get("x-test", "")})

    return Starlette(routes=[Route("/{path:path}", handler, methods=["GET", "POST"])])


def paid_app(routes: list[PaidRoute], facilitator: Facilitator, counter: dict[str, int] | None = None) -> Any:
    store = f"sqlite:///{tempfile.mkdtemp(prefix='paywire-seller-')}/seller.db"
    return PaymentMiddleware(content_app(counter), routes, LocalFacilitatorClient(facilitator), store=store)


async def transfers_to(net: Devnet, address: str, asset: str | None = None) -> int:
    """How many ERC-20 Transfer events credited ``address`` (counts settlements)."""
    logs = await net.chain.get_logs(address=asset or net.info.token,
                                    topics=[token.TRANSFER_TOPIC, None, bytes.fromhex(address[2:])])
    return len(logs)


async def balance(net: Devnet, address: str, asset: str | None = None) -> int:
    return token.decode_uint(await net.chain.call(asset or net.info.token, token.balance_of(address)))


# ------------------------------------------------------------------------------------------------ lying servers


class ScriptedSeller:
    """A seller that really verifies and settles, but answers the paid request as ``behaviour`` says:

    * ``"honest"`` — settle, serve;
    * ``"402_after_settle"`` — settle, then answer 402 anyway (keeps the money);
    * ``"new_payee"`` — settle, then answer 402 asking ``alt_offer`` (another payee);
    * ``"inflate"`` — settle, then answer 402 asking ``alt_offer`` (a higher price);
    * ``"503_once"`` — settle, answer 503 the first time; a resend with the same payment-identifier gets
      the cached response (idempotency, digest §9.2);
    * ``"no_settle_402"`` — refuse after verify without settling.

    ``advertise_id`` adds the ``payment-identifier`` extension to the 402. ``seen`` collects every payment
    header received.
    """

    def __init__(self, facilitator: Facilitator, first_offer: PaymentRequirements, behaviour: str = "honest", *,
                 alt_offer: PaymentRequirements | None = None, advertise_id: bool = False,
                 v1_only: bool = False) -> None:
        self.fac = LocalFacilitatorClient(facilitator)
        self.offer = first_offer
        self.alt = alt_offer
        self.behaviour = behaviour
        self.advertise_id = advertise_id
        self.v1_only = v1_only
        self.seen: list[str] = []
        self.served = 0
        self.cache: dict[str, tuple[int, bytes, list[tuple[str, str]]]] = {}
        self._failed_once = False

    def _challenge(self, url: str, offer: PaymentRequirements, error: str | None = None) -> Reply:
        resource = ResourceInfo(url=url, description="scripted", mime_type="application/json")
        extensions = ({"payment-identifier": {"info": {"required": False}, "schema": {"type": "object"}}}
                      if self.advertise_id else None)
        pr = PaymentRequired(accepts=(offer,), resource=resource, error=error or "Payment required",
                             extensions=extensions)
        v1 = {"x402Version": 1, "error": error or "X-PAYMENT header is required",
              "accepts": [requirements_v2_to_v1(offer, resource).to_wire()]}
        headers: tuple[tuple[str, str], ...] = () if self.v1_only else (("PAYMENT-REQUIRED", encode_header(pr.to_wire())),)
        return Reply(402, headers, json.dumps(v1).encode())

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        headers = {k.decode().lower(): v.decode() for k, v in scope["headers"]}
        url = f"http://{headers.get('host', 'localhost')}{scope['path']}"
        raw = headers.get("payment-signature") or headers.get("x-payment")
        if raw is None:
            return await _reply(send, self._challenge(url, self.offer))
        self.seen.append(raw)
        try:
            payload = decode_payment_signature(raw)
        except WireError as exc:
            return await _reply(send, self._challenge(url, self.offer, f"invalid payment: {exc.reason}"))
        requirements: PaymentRequirements | PaymentRequirementsV1
        if isinstance(payload, PaymentPayloadV1):
            v1 = True
            requirements = requirements_v2_to_v1(self.offer, ResourceInfo(url=url))
        else:
            v1 = False
            if find_matching_requirements((self.offer,), payload.accepted) is None:
                return await _reply(send, self._challenge(url, self.offer, "No matching payment requirements"))
            requirements = self.offer
        pid = _payment_id(payload)
        if pid is not None and pid in self.cache:
            status, body, extra = self.cache[pid]
            return await _send(send, status, body, extra)
        verdict = await self.fac.verify(payload, requirements)
        if not verdict.is_valid:
            return await _reply(send, self._challenge(url, self.offer, verdict.invalid_reason))
        if self.behaviour == "no_settle_402":
            return await _reply(send, self._challenge(url, self.offer, "handler declined"))
        result = await self.fac.settle(payload, requirements)
        if not result.success:
            return await _reply(send, self._challenge(url, self.offer, result.error_reason))
        settle_headers = [("X-PAYMENT-RESPONSE" if v1 else "PAYMENT-RESPONSE", encode_header(result.to_wire()))]
        body = json.dumps({"content": "paid content"}).encode()
        if pid is not None:
            self.cache[pid] = (200, body, settle_headers)
        if self.behaviour == "402_after_settle":
            return await _reply(send, self._challenge(url, self.offer, "payment required"))
        if self.behaviour in ("new_payee", "inflate"):
            assert self.alt is not None
            return await _reply(send, self._challenge(url, self.alt, "price changed"))
        if self.behaviour == "503_once" and not self._failed_once:
            self._failed_once = True
            return await _send(send, 503, b'{"error":"try again"}', [])
        self.served += 1
        await _send(send, 200, body, settle_headers)


def _payment_id(payload: Any) -> str | None:
    ext = getattr(payload, "extensions", None) or {}
    info = (ext.get("payment-identifier") or {}).get("info") or {}
    pid = info.get("id")
    return pid if isinstance(pid, str) else None


async def _send(send: Any, status: int, body: bytes, headers: list[tuple[str, str]]) -> None:
    raw = [(k.lower().encode(), v.encode()) for k, v in headers]
    raw += [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": raw})
    await send({"type": "http.response.body", "body": body})


@dataclasses.dataclass(frozen=True)
class Reply:
    status: int
    headers: tuple[tuple[str, str], ...]
    body: bytes


async def _reply(send: Any, reply: Reply) -> None:
    await _send(send, reply.status, reply.body, list(reply.headers))


# ------------------------------------------------------------------------------------------------ dropping proxy


class DropProxy:
    """A TCP proxy in front of a real server that, the first ``drops`` times it sees a request carrying a
    payment, forwards it, waits for the server's full answer (so the payment settled) and then cuts the
    client's connection without a byte of it. Everything else passes through."""

    def __init__(self, upstream_port: int, drops: int = 1) -> None:
        self.upstream_port = upstream_port
        self.drops = drops
        self.payments_forwarded = 0
        self.payment_values: list[str] = []
        self.dropped = 0
        self._server: asyncio.Server | None = None

    async def start(self) -> str:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        port = self._server.sockets[0].getsockname()[1]
        return f"http://127.0.0.1:{port}"

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 2)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = 0
                for line in head.split(b"\r\n"):
                    if line.lower().startswith(b"content-length:"):
                        length = int(line.split(b":", 1)[1])
                body = await reader.readexactly(length) if length else b""
                paying = b"payment-signature:" in head.lower() or b"x-payment:" in head.lower()
                answer = await self._forward(head + body)
                if paying:
                    self.payments_forwarded += 1
                    for line in head.split(b"\r\n"):
                        name, _, value = line.partition(b":")
                        if name.strip().lower() in (b"payment-signature", b"x-payment"):
                            self.payment_values.append(value.strip().decode())
                    if self.dropped < self.drops:
                        self.dropped += 1
                        writer.transport.abort()
                        return
                writer.write(answer)
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            with contextlib.suppress(Exception):
                writer.close()

    async def _forward(self, request: bytes) -> bytes:
        r, w = await asyncio.open_connection("127.0.0.1", self.upstream_port)
        try:
            w.write(request)
            await w.drain()
            head = await r.readuntil(b"\r\n\r\n")
            length = 0
            for line in head.split(b"\r\n"):
                if line.lower().startswith(b"content-length:"):
                    length = int(line.split(b":", 1)[1])
            body = await r.readexactly(length) if length else b""
            return head + body
        finally:
            w.close()


# ------------------------------------------------------------------------------------------------ threads


@contextlib.contextmanager
def serve_in_thread(app: Any) -> Any:
    """Serve an ASGI app with uvicorn on its own thread and loop (for peers that block the caller's loop)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="off", access_log=False))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        while not server.started:
            if not thread.is_alive():
                raise RuntimeError("server thread died during startup")
            threading.Event().wait(0.01)
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=5)
        sock.close()


@contextlib.asynccontextmanager
async def serving(app: Any) -> AsyncIterator[str]:
    from paywire.serving import serve_asgi

    async with serve_asgi(app) as url:
        yield url


def port_of(url: str) -> int:
    return int(url.rsplit(":", 1)[1].split("/")[0])

