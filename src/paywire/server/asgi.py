"""ASGI payment middleware: the thin I/O shell around ``Seller`` (works for FastAPI, Starlette, any ASGI app)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from paywire.facilitator.client import FacilitatorClient, FacilitatorUnavailable
from paywire.server.core import PaidRoute, Proceed, Reply, Seller

Scope = dict[str, Any]
Message = dict[str, Any]


async def _send_reply(send: Any, reply: Reply) -> None:
    headers = [(k.lower().encode(), v.encode()) for k, v in reply.headers]
    headers.append((b"content-length", str(len(reply.body)).encode()))
    await send({"type": "http.response.start", "status": reply.status, "headers": headers})
    await send({"type": "http.response.body", "body": reply.body})


class PaymentMiddleware:
    """Charges for the routes given; verify → run handler (buffered) → settle → release (checklist 16-19)."""

    def __init__(self, app: Any, routes: Sequence[PaidRoute], facilitator: FacilitatorClient) -> None:
        self.app = app
        self.seller = Seller(tuple(routes))
        self.facilitator = facilitator

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        route = self.seller.route_for(scope["method"], scope["path"])
        if route is None:
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        url = _url(scope, headers)
        decision = self.seller.inspect(route, url, headers)
        if isinstance(decision, Reply):
            await _send_reply(send, decision)
            return
        await self._paid(scope, receive, send, route, url, decision)

    async def _paid(self, scope: Scope, receive: Any, send: Any, route: PaidRoute, url: str, d: Proceed) -> None:
        try:
            verdict = await self.facilitator.verify(d.payload, d.requirements)
        except FacilitatorUnavailable as exc:
            await _send_reply(send, self.seller.payment_required(route, url, f"facilitator unavailable: {exc}"))
            return
        if not verdict.is_valid:
            await _send_reply(send, self.seller.payment_required(route, url, verdict.invalid_reason))
            return
        start: Message | None = None
        chunks: list[bytes] = []

        async def buffer(message: Message) -> None:
            nonlocal start
            if message["type"] == "http.response.start":
                start = message
            elif message["type"] == "http.response.body":
                chunks.append(message.get("body", b""))

        try:
            await self.app(scope, receive, buffer)
        except Exception:
            await _send_reply(send, Reply(500, (("content-type", "application/json"),),
                                          b'{"error":"handler failed; you were not charged"}'))
            return
        if start is None:
            await _send_reply(send, Reply(500, (), b'{"error":"handler sent no response"}'))
            return
        if start["status"] >= 400:  # no settlement for failed handlers (checklist 19)
            await send(start)
            await send({"type": "http.response.body", "body": b"".join(chunks)})
            return
        try:
            result = await self.facilitator.settle(d.payload, d.requirements)
        except FacilitatorUnavailable as exc:
            await _send_reply(send, self.seller.payment_required(route, url, f"settlement outcome unknown: {exc}"))
            return
        if not result.success:
            reply = self.seller.payment_required(route, url, result.error_reason)
            await _send_reply(send, Reply(402, reply.headers + self.seller.settlement_headers(result, d.v1)[:1],
                                          reply.body))
            return
        extra = [(k.lower().encode(), v.encode()) for k, v in self.seller.settlement_headers(result, d.v1)]
        extra.append((b"cache-control", b"private"))
        kept = [(k, v) for k, v in start.get("headers", []) if k.lower() not in (b"cache-control",)]
        await send({**start, "headers": kept + extra})
        await send({"type": "http.response.body", "body": b"".join(chunks)})


def _url(scope: Scope, headers: dict[str, str]) -> str:
    host = headers.get("host") or "{}:{}".format(*(scope.get("server") or ("localhost", 80)))
    qs = scope.get("query_string", b"").decode("latin-1")
    return f"{scope.get('scheme', 'http')}://{host}{scope['path']}" + (f"?{qs}" if qs else "")


def json_body(obj: Any) -> bytes:
    return json.dumps(obj, separators=(",", ":")).encode()
