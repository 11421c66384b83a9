"""The facilitator over HTTP (ASGI, digest §4): ``POST /verify``, ``POST /settle``, ``GET /supported``,
``GET /health``, ``GET /metrics`` (Prometheus text), ``GET /settlements/{id}``.

Payment failures are 200 with ``isValid``/``success`` false (checklist 39); malformed bodies are 400 with a
JSON error; an unexpected exception is a JSON 500 without a traceback. With ``bearer_token`` every route
except ``/health`` and ``/supported`` needs ``Authorization: Bearer <token>`` (the scheme in any case, RFC 7235).

Bodies are bounded (``MAX_BODY_BYTES``): auth is checked first, then ``Content-Length``; a larger body, announced
or chunked, is answered 413 after reading at most the limit (:mod:`paywire.bodylimit`).
"""

from __future__ import annotations

import contextlib
import hmac
import json
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from paywire.bodylimit import declared_length, read_asgi_body
from paywire.errors import WireError
from paywire.facilitator.core import Facilitator
from paywire.facilitator.core import requester as risk_requester
from paywire.facilitator.metrics import Metrics, facilitator_metrics
from paywire.settlement.engine import answer_within, settling_id
from paywire.x402.models import FacilitatorRequest

log = logging.getLogger(__name__)

MAX_BODY_BYTES = 64 * 1024
SETTLEMENT_ID_HEADER = "X-Paywire-Settlement-Id"


_encode = json.JSONEncoder(ensure_ascii=False, allow_nan=False, separators=(",", ":")).encode


class _Json(JSONResponse):
    """A ``JSONResponse`` (same bytes) whose encoder is built once, not per answer."""

    def render(self, content: Any) -> bytes:
        return _encode(content).encode("utf-8")


_JSON_TYPE = (b"content-type", b"application/json")
_ID_HEADER = SETTLEMENT_ID_HEADER.lower().encode("latin-1")


class _Answer(Response):
    """The 200 JSON answer of ``/verify`` and ``/settle``: the bytes and headers a ``JSONResponse`` sends (the
    settlement id first, then length and type), built without Starlette's per-response header assembly."""

    def __init__(self, content: Any, settlement_id: str | None = None) -> None:
        self.status_code = 200
        self.background = None
        self.body = body = _encode(content).encode("utf-8")
        length = (b"content-length", str(len(body)).encode("latin-1"))
        self.raw_headers = ([(_ID_HEADER, settlement_id.encode("latin-1")), length, _JSON_TYPE]
                            if settlement_id is not None else [length, _JSON_TYPE])

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": self.raw_headers})
        await send({"type": "http.response.body", "body": self.body})


def _error(status: int, message: str, reason: str | None = None,
           headers: dict[str, str] | None = None) -> JSONResponse:
    body: dict[str, Any] = {"error": message}
    if reason:
        body["reason"] = reason
    return _Json(body, status_code=status, headers=headers)


def bearer_matches(authorization: str, token: str) -> bool:
    """``Authorization: Bearer <token>``, the scheme compared case-insensitively (RFC 7235 §2.1), the token in
    constant time."""
    scheme, _, credentials = authorization.strip().partition(" ")
    if scheme.lower() != "bearer":
        return False
    return hmac.compare_digest(credentials.strip(" ").encode(), token.encode())


def _unauthorized() -> JSONResponse:
    return _error(401, "unauthorized", headers={"WWW-Authenticate": 'Bearer realm="paywire facilitator"'})


class _Call:
    """What the ``/verify`` and ``/settle`` handlers read of a request: its ASGI ``receive``, its headers (first
    value of each, lower-case names) and the client's host. Built straight from the ASGI scope for those two
    routes (no Starlette ``Request``, routing or middleware on the hot path)."""

    __slots__ = ("client_host", "headers", "receive")

    def __init__(self, scope: Scope, receive: Receive) -> None:
        headers: dict[str, str] = {}
        for name, value in scope["headers"]:
            key = name.decode("latin-1").lower()
            if key not in headers:
                headers[key] = value.decode("latin-1")
        self.headers = headers
        self.receive = receive
        client = scope.get("client")
        self.client_host: str | None = client[0] if client else None


async def _parse(request: _Call) -> FacilitatorRequest | JSONResponse:
    got = await read_asgi_body(request.receive, MAX_BODY_BYTES, declared_length(request.headers))
    if got.too_large:
        return _error(413, f"request body larger than {MAX_BODY_BYTES} bytes", "body_too_large")
    if got.body is None:
        return _error(400, "request body incomplete", "invalid_payload")
    raw = got.body
    try:
        obj = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        return _error(400, "body is not JSON", "invalid_json")
    if not isinstance(obj, dict) or "paymentPayload" not in obj or "paymentRequirements" not in obj:
        return _error(400, "Missing paymentPayload or paymentRequirements", "invalid_payload")
    try:
        return FacilitatorRequest.from_wire(obj)
    except WireError as exc:
        return _error(400, str(exc), exc.reason)


def _prefer_wait(request: _Call) -> float | None:
    """Seconds from ``Prefer: wait=N`` (RFC 7240 §4.3): how long the caller waits for ``/settle``."""
    header = request.headers.get("prefer")
    if not header:  # the common case: no preference, nothing to split
        return None
    for pref in header.split(","):
        name, _, value = pref.strip().partition("=")
        if name.strip().lower() == "wait" and value.strip().isdigit():
            return float(value.strip())
    return None


Handler = Callable[[_Call], Awaitable[Response]]

_INTERNAL_ERROR = b'{"error":"internal error"}'


class _CatchAll:
    """Outermost ASGI layer: an exception that escapes the app becomes a JSON 500 (no traceback leaks).

    ``routes`` (``POST`` only: ``/verify`` and ``/settle``) are answered here, straight from their handlers with
    no Starlette ``Request``, routing or middleware on the hot path; everything else (other routes and
    methods, the lifespan) goes to the Starlette ``app``."""

    def __init__(self, app: ASGIApp, metrics: Metrics | None = None, routes: dict[str, Handler] | None = None) -> None:
        self.app = app
        self.metrics = metrics
        self.routes = routes or {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        handler = self.routes.get(scope["path"]) if scope["method"] == "POST" else None
        if handler is not None:
            try:
                response = await handler(_Call(scope, receive))
            except Exception:
                log.exception("facilitator: unhandled error on %s", scope.get("path"))
                await _internal_error(send)
                return
            try:
                await response(scope, receive, send)
            except Exception:  # the client went away while we answered
                log.exception("facilitator: could not send the answer on %s", scope.get("path"))
            return
        started = False

        async def tracking_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, receive, tracking_send)
        except Exception:
            log.exception("facilitator: unhandled error on %s", scope.get("path"))
            if started:  # Starlette already answered with the JSON error handler
                return
            await _internal_error(send)


async def _internal_error(send: Send) -> None:
    await send({"type": "http.response.start", "status": 500,
                "headers": [(b"content-type", b"application/json"),
                            (b"content-length", str(len(_INTERNAL_ERROR)).encode())]})
    await send({"type": "http.response.body", "body": _INTERNAL_ERROR})


def create_app(
    facilitator: Facilitator,
    *,
    bearer_token: str | None = None,
    metrics: Metrics | None = None,
    on_startup: Callable[[], Awaitable[None]] | None = None,
    on_shutdown: Callable[[], Awaitable[None]] | None = None,
    discovery: Any = None,
) -> ASGIApp:
    """The facilitator as an ASGI app (see the module docs). ``on_startup``/``on_shutdown`` run in the ASGI
    lifespan (the ``paywire facilitator`` service starts its reconciler there)."""
    m = metrics or facilitator_metrics()
    m.set("up", 1)
    if discovery is None:  # the bazaar catalogue: next to the settlements, or in memory
        from paywire.facilitator.discovery import Discovery

        discovery = Discovery(facilitator.store.db if facilitator.store is not None else None)

    def authorized(request: Request | _Call) -> bool:
        if not bearer_token:
            return True
        return bearer_matches(request.headers.get("authorization", ""), bearer_token)

    def observed(route: str, handler: Callable[[Any], Awaitable[Response]]) -> Callable[[Any], Awaitable[Response]]:
        async def wrapped(request: Any) -> Response:
            t0 = time.perf_counter()
            status = 500
            try:
                response = await handler(request)
                status = response.status_code
                return response
            finally:
                m.inc("http_requests_total", route=route, status=str(status))
                m.observe("http_request_duration_seconds", time.perf_counter() - t0, route=route)
        return wrapped

    async def verify(request: _Call) -> Response:
        if not authorized(request):
            return _unauthorized()
        parsed = await _parse(request)
        if isinstance(parsed, JSONResponse):
            return parsed
        res = await facilitator.verify(parsed.payment_payload, parsed.payment_requirements)
        m.inc("verify_total", result="valid" if res.is_valid else "invalid", reason=res.invalid_reason or "")
        return _Answer(res.to_wire())

    async def settle(request: _Call) -> Response:
        if not authorized(request):
            return _unauthorized()
        parsed = await _parse(request)
        if isinstance(parsed, JSONResponse):
            return parsed
        risk_requester.set(request.client_host)  # who asks, for the risk checkpoint
        settling_id.set(None)  # the engine names the settlement it was given (no second parse of the payload)
        with answer_within(_prefer_wait(request)):  # answer (pending if need be) before the caller gives up
            res = await facilitator.settle(parsed.payment_payload, parsed.payment_requirements)
        m.inc("settle_total", result="success" if res.success else "failure", reason=res.error_reason or "")
        if res.success:
            try:
                await discovery.record(parsed.payment_payload, parsed.payment_requirements)
            except Exception:  # the catalogue never costs a settlement its answer
                log.exception("facilitator: could not catalogue a discovered resource")
        key = None
        if facilitator.store is not None:
            key = settling_id.get() or facilitator.settlement_key(parsed.payment_payload, parsed.payment_requirements)
        return _Answer(res.to_wire(), key)

    async def supported(request: Request) -> Response:
        return JSONResponse(facilitator.supported().to_wire())

    async def discovery_resources(request: Request) -> Response:
        status, body = await discovery.listing(request.query_params)
        return JSONResponse(body, status_code=status)

    async def health(request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    async def settlement(request: Request) -> Response:
        if not authorized(request):
            return _unauthorized()
        if facilitator.store is None:
            return _error(404, "this facilitator keeps no settlement records", "no_store")
        row = await facilitator.settlement(str(request.path_params["settlement_id"]))
        if row is None:
            return _error(404, "unknown settlement", "not_found")
        return JSONResponse(row.to_json())

    async def metrics_route(request: Request) -> Response:
        if not authorized(request):
            return _unauthorized()
        if facilitator.store is not None:
            with contextlib.suppress(Exception):
                for state, n in (await facilitator.store.counts()).items():
                    m.set("settlements", n, state=state)
        for plugin in facilitator.schemes:
            for net in getattr(plugin, "_nets", {}).values():
                for s in net.senders:
                    m.set("signer_in_flight", s.in_flight, network=net.network, address=s.address)
        text = m.render() + (facilitator.risk.metrics.render() if facilitator.risk is not None else "")
        return PlainTextResponse(text, media_type="text/plain; version=0.0.4")

    async def http_error(request: Request, exc: Exception) -> Response:
        status = exc.status_code if isinstance(exc, HTTPException) else 500
        detail = exc.detail if isinstance(exc, HTTPException) else "internal error"
        return JSONResponse({"error": detail}, status_code=status)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        if on_startup is not None:
            await on_startup()
        try:
            yield
        finally:
            if on_shutdown is not None:
                await on_shutdown()

    fast: dict[str, Handler] = {"/verify": observed("/verify", verify), "/settle": observed("/settle", settle)}
    app = Starlette(
        routes=[
            # _CatchAll answers these POSTs itself; Starlette only sees them when the app is mounted under a prefix
            Route("/verify", _via_request(fast["/verify"]), methods=["POST"]),
            Route("/settle", _via_request(fast["/settle"]), methods=["POST"]),
            Route("/supported", observed("/supported", supported), methods=["GET"]),
            Route("/health", health, methods=["GET"]),
            Route("/discovery/resources", observed("/discovery/resources", discovery_resources), methods=["GET"]),
            Route("/metrics", metrics_route, methods=["GET"]),
            Route("/settlements/{settlement_id}", observed("/settlements", settlement), methods=["GET"]),
        ],
        exception_handlers={HTTPException: http_error, Exception: http_error},
        lifespan=lifespan,
    )
    return _CatchAll(app, m, fast)


def _via_request(handler: Handler) -> Callable[[Request], Awaitable[Response]]:
    async def route(request: Request) -> Response:
        return await handler(_Call(request.scope, request.receive))
    return route
