"""ASGI payment middleware (FastAPI, Starlette, any ASGI app): a thin shell that carries out a flow's plans.

    app = PaymentMiddleware(app, [PaidRoute("GET /weather", price="$0.01")], "http://127.0.0.1:4020",
                            pay_to="0x…", network="eip155:84532")
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any, Unpack

from paywire.bodylimit import declared_length, read_asgi_body
from paywire.server.config import SellerConfig, SellerOptions
from paywire.server.core import EXPOSED_HEADERS, Reply, json_reply, merge_headers
from paywire.server.flow import (
    Forward,
    PaymentFlow,
    Plan,
    Respond,
    ResponseTooLarge,
    RunBuffered,
    RunStreaming,
)
from paywire.server.metering import SETTLEMENT_OVERRIDES, MaximumReached
from paywire.server.request import RequestInfo, build_url
from paywire.server.setup import FacilitatorArg, LazyFlow, RoutesArg, seller_config
from paywire.store.payments import StoredResponse

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

log = logging.getLogger("paywire.server")


def request_info(scope: Scope) -> RequestInfo:
    headers: dict[str, str] = {}
    for k, v in scope.get("headers", ()):
        name = k.decode("latin-1").lower()
        value = v.decode("latin-1")
        headers[name] = f"{headers[name]}, {value}" if name in headers else value
    qs = scope.get("query_string", b"").decode("latin-1")
    path = scope.get("path", "/")
    url = build_url(scope.get("scheme", "http"), headers.get("host"), scope.get("server"),
                    scope.get("root_path", "") + path, qs)
    peer = scope.get("client")
    return RequestInfo(scope.get("method", "GET").upper(), path, url, headers, qs,
                       client=str(peer[0]) if peer else None)


def _encode(headers: Any) -> list[tuple[bytes, bytes]]:
    return [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in headers]


def _decode(headers: Any) -> list[tuple[str, str]]:
    return [(bytes(k).decode("latin-1"), bytes(v).decode("latin-1")) for k, v in headers or ()]


def _with_cors(headers: list[tuple[bytes, bytes]], origin: str | None) -> list[tuple[bytes, bytes]]:
    names = {k.lower() for k, _ in headers}
    if b"access-control-expose-headers" not in names:
        headers.append((b"access-control-expose-headers", EXPOSED_HEADERS.encode()))
    if origin and b"access-control-allow-origin" not in names:
        headers.append((b"access-control-allow-origin", origin.encode("latin-1")))
    return headers


async def _read_body(req: RequestInfo, receive: Receive, limit: int) -> tuple[RequestInfo, Receive]:
    """Read the request body (for the MPP digest) and a ``receive`` that hands it to the app again. A body over
    ``limit`` (announced, or found while reading) is not bound: at most ``limit`` bytes are held and the app
    still gets all of it."""
    got = await read_asgi_body(receive, limit, declared_length(req.headers))
    return dataclasses.replace(req, body=got.body), got.replay(receive)


def _ends_stream(exc: BaseException) -> bool:
    """``MaximumReached`` (also inside an exception group): the clean end of a billed stream."""
    if isinstance(exc, BaseExceptionGroup):
        return all(_ends_stream(e) for e in exc.exceptions)
    return isinstance(exc, MaximumReached)


class PaymentMiddleware:
    """Charges for the given routes; everything else passes through untouched (plus CORS ``Expose-Headers``).

    ``routes``: :class:`~paywire.server.core.PaidRoute` list (or a callable returning it, listed at first use).
    ``facilitator``: a ``FacilitatorClient`` (``LocalFacilitatorClient`` = self-facilitating) or a URL.
    Options: a :class:`~paywire.server.config.SellerConfig` as ``config=``, and/or its fields as keywords
    (``pay_to``, ``network``, ``store``, timeouts …; keywords win; each is checked and a wrong name or value
    raises ``ConfigError`` naming it). A ready ``flow=`` replaces all of them.
    """

    def __init__(self, app: Any, routes: RoutesArg = (), facilitator: FacilitatorArg | None = None, *,
                 config: SellerConfig | None = None, flow: PaymentFlow | None = None,
                 **options: Unpack[SellerOptions]) -> None:
        self.app = app
        self._lazy = LazyFlow(routes, seller_config(config, facilitator, options), flow)

    @property
    def flow(self) -> PaymentFlow:
        return self._lazy.flow

    async def startup(self) -> None:
        """Open the store and check the routes against the facilitator (``ConfigError`` says what to fix)."""
        await self.flow.startup()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self.app(scope, receive, self._lifespan_send(send))
            return
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        await self.handle(scope, receive, send, request_info(scope))

    async def handle(self, scope: Scope, receive: Receive, send: Send, req: RequestInfo) -> None:
        """One HTTP request whose :func:`request_info` the caller already built from this ``scope`` (a front
        that routed on it, like ``paywire proxy``, saves reading the headers twice)."""
        flow = self.flow
        if flow.seller.binds_body(req):
            req, receive = await _read_body(req, receive, flow.seller.mpp_max_body)
        origin = flow.seller.allow_origin(req) if flow.seller.route_for_request(req) else None
        try:
            plan = await flow.begin(req)
        except Exception:
            log.exception("paywire: payment processing failed")
            await self._reply(send, json_reply(503, {"error": "payment_processing_unavailable",
                                                     "message": "try again with the same payment"}), origin)
            return
        await self._carry_out(plan, scope, receive, send, origin)

    def _lifespan_send(self, send: Send) -> Send:
        """Run our startup when the app reports its own (a ``ConfigError`` fails the server's startup); stop the
        claim manager when it reports its shutdown."""

        async def wrapped(message: Message) -> None:
            if message.get("type") == "lifespan.shutdown.complete":
                await self.flow.stop_claims()
            if message.get("type") == "lifespan.startup.complete":
                try:
                    await self.startup()
                except Exception as exc:
                    log.error("paywire: %s", exc)
                    await send({"type": "lifespan.startup.failed", "message": f"paywire: {exc}"})
                    return
            await send(message)

        return wrapped

    async def _carry_out(self, plan: Plan, scope: Scope, receive: Receive, send: Send, origin: str | None) -> None:
        if isinstance(plan, Forward):
            fwd_scope = scope if plan.payment is None else self._paid_scope(scope, plan.payment)
            await self.app(fwd_scope, receive, self._cors_send(send, None))
        elif isinstance(plan, Respond):
            await self._reply(send, plan.reply, origin)
        elif isinstance(plan, RunBuffered) and plan.payment.meter is not None:
            await self._run_metered(plan, self._paid_scope(scope, plan.payment), receive, send, origin)
        elif isinstance(plan, RunBuffered):
            paid_scope = self._paid_scope(scope, plan.payment)
            try:
                result: StoredResponse | BaseException = await self._run_buffered(paid_scope, receive)
            except BaseException as exc:  # cancelled (client gone): record "not charged", then stop
                await asyncio.shield(plan.finish(exc))
                raise
            if plan.finish_then is None:
                await self._reply(send, await plan.finish(result), origin)
                return
            reply, commit = await plan.finish_then(result)
            try:
                await self._reply(send, reply, origin)  # the payer has the answer before the last ledger write
            finally:
                if commit is not None:
                    task = asyncio.current_task()
                    if task is not None and task.cancelling():  # the client went away: write it anyway
                        await asyncio.shield(commit())
                    else:
                        await commit()
        elif isinstance(plan, RunStreaming):
            await self._run_streaming(plan, self._paid_scope(scope, plan.payment), receive, send, origin)

    @staticmethod
    def _paid_scope(scope: Scope, payment: Any) -> Scope:
        state = dict(scope.get("state") or {})
        state["payment"] = payment
        return {**scope, "state": state, "paywire.payment": payment}

    @staticmethod
    def _cors_send(send: Send, origin: str | None) -> Send:
        async def wrapped(message: Message) -> None:
            if message["type"] == "http.response.start":
                message = {**message, "headers": _with_cors(list(message.get("headers", [])), origin)}
            await send(message)

        return wrapped

    @staticmethod
    async def _reply(send: Send, reply: Reply, origin: str | None) -> None:
        headers = _with_cors(_encode(reply.headers), origin)
        headers = [(k, v) for k, v in headers if k != b"content-length"]
        headers.append((b"content-length", str(len(reply.body)).encode()))
        await send({"type": "http.response.start", "status": reply.status, "headers": headers})
        await send({"type": "http.response.body", "body": reply.body})

    async def _run_buffered(self, scope: Scope, receive: Receive) -> StoredResponse | BaseException:
        start: Message | None = None
        chunks: list[bytes] = []
        size, limit = 0, self.flow.max_record_bytes

        async def capture(message: Message) -> None:
            nonlocal start, size
            if message["type"] == "http.response.start":
                start = message
            elif message["type"] == "http.response.body":
                body = message.get("body", b"")
                size += len(body)
                if size <= limit:
                    chunks.append(bytes(body))
                elif chunks:
                    chunks.clear()  # over the limit: keep counting, hold nothing

        try:
            await self.app(scope, receive, capture)
        except Exception as exc:
            log.warning("paywire: paid handler raised %r; not charging", exc)
            return exc
        if start is None:
            return RuntimeError("the handler sent no response")
        if size > limit:
            return ResponseTooLarge(size, limit)
        return StoredResponse(int(start["status"]), tuple(_decode(start.get("headers"))), b"".join(chunks))

    async def _run_metered(self, plan: RunBuffered, scope: Scope, receive: Receive, send: Send,
                           origin: str | None) -> None:
        """A variable-price payment (``upto``, ``batch-settlement``): buffered like any ``settle="after"`` route,
        unless the handler streams (a body message with ``more_body``). A stream passes through as it is made,
        billed per unit (``bill_unit``); when it ends — or the next unit would pass the maximum
        (``MaximumReached``) — what was billed is settled (upto) or committed (channel), the receipt goes out as a
        last ``event: payment-response`` of an SSE stream (the headers left before the charge was known), and the
        body closes cleanly."""
        meter = plan.payment.meter
        assert meter is not None
        limit = self.flow.max_record_bytes
        start: Message | None = None
        chunks: list[bytes] = []
        size = 0
        streaming = False

        async def tee(message: Message) -> None:
            nonlocal start, size, streaming
            if message["type"] == "http.response.start":
                start = message
                return
            if message["type"] != "http.response.body" or start is None:
                return
            body = bytes(message.get("body", b""))
            more = bool(message.get("more_body", False))
            size += len(body)
            if size <= limit:
                chunks.append(body)
            elif chunks:
                chunks.clear()
            if not streaming and more:
                streaming = True
                drop = {b"content-length", SETTLEMENT_OVERRIDES.encode()}
                headers = [(k, v) for k, v in _encode(_decode(start.get("headers"))) if k not in drop]
                headers.append((b"cache-control", b"private, no-store"))
                await send({"type": "http.response.start", "status": start["status"],
                            "headers": _with_cors(headers, origin)})
            if streaming and body:
                await send({"type": "http.response.body", "body": body, "more_body": True})

        def result() -> StoredResponse:
            assert start is not None
            return StoredResponse(int(start["status"]), tuple(_decode(start.get("headers"))), b"".join(chunks),
                                  size <= limit)

        try:
            await self.app(scope, receive, tee)
        except Exception as exc:
            if not streaming:
                log.warning("paywire: paid handler raised %r; not charging", exc)
                await self._reply(send, await plan.finish(exc), origin)
                return
            if not _ends_stream(exc):
                log.error("paywire: streaming handler raised %r; charging the units billed before it", exc)
            if meter.charged is None:
                meter.charge(0)
        except BaseException:  # cancelled (client gone)
            if streaming:  # what was billed was delivered
                if meter.charged is None:
                    meter.charge(0)
                await asyncio.shield(plan.finish(result()))
            else:
                await asyncio.shield(plan.finish(RuntimeError("cancelled")))
            raise
        if start is None:
            await self._reply(send, await plan.finish(RuntimeError("the handler sent no response")), origin)
            return
        if not streaming:
            done: StoredResponse | BaseException = result() if size <= limit else ResponseTooLarge(size, limit)
            await self._reply(send, await plan.finish(done), origin)
            return
        reply = await plan.finish(result())
        receipt = dict((k.lower(), v) for k, v in reply.headers).get("payment-response")
        if receipt is None:
            log.error("paywire: a streamed response was not charged: %s", reply.body[:200])
        elif any(k.lower() == "content-type" and "text/event-stream" in v for k, v in _decode(start.get("headers"))):
            await send({"type": "http.response.body", "more_body": True,
                        "body": f"event: payment-response\ndata: {receipt}\n\n".encode()})
        await send({"type": "http.response.body", "body": b"", "more_body": False})

    async def _run_streaming(self, plan: RunStreaming, scope: Scope, receive: Receive, send: Send,
                             origin: str | None) -> None:
        limit = self.flow.max_record_bytes
        status, size, complete = 0, 0, True
        headers: tuple[tuple[str, str], ...] = ()
        recorded: list[bytes] = []
        started = False

        async def tee(message: Message) -> None:
            nonlocal status, headers, size, complete, started
            if message["type"] == "http.response.start":
                status = int(message["status"])
                merged = merge_headers(_decode(message.get("headers")), plan.headers)
                headers = tuple(merged)
                message = {**message, "headers": _with_cors(_encode(merged), origin)}
                started = True
            elif message["type"] == "http.response.body":
                body = bytes(message.get("body", b""))
                if size + len(body) <= limit:
                    recorded.append(body)
                else:
                    complete = False
                size += len(body)
            await send(message)

        try:
            await self.app(scope, receive, tee)
        except Exception as exc:
            log.error("paywire: handler raised %r after settlement (settle='before')", exc)
            if not started:
                await self._reply(send, self.flow.seller.handler_failed(), origin)
            await plan.finish(exc)
            return
        except BaseException as exc:
            await asyncio.shield(plan.finish(exc))
            raise
        await plan.finish(StoredResponse(status, headers, b"".join(recorded), complete))
