"""WSGI payment middleware (Flask, Django, any WSGI app) over the same async flow as the ASGI one.

The flow runs on a private event loop in a background thread; the WSGI app itself runs in the server's
request thread as usual (thread-locals, DB connections and greenlets keep working).

    app.wsgi_app = WsgiPaymentMiddleware(app.wsgi_app, [PaidRoute("GET /weather", price="$0.01")],
                                         "http://127.0.0.1:4020", pay_to="0x…", network="eip155:84532")
"""

from __future__ import annotations

import dataclasses
import http
import io
import logging
import threading
from collections.abc import Awaitable, Callable, Iterable, Iterator
from typing import Any, TypeVar, Unpack

from paywire.bodylimit import declared_length, read_wsgi_body
from paywire.server.config import SellerConfig, SellerOptions
from paywire.server.core import EXPOSED_HEADERS, Reply, json_reply, merge_headers
from paywire.server.flow import Forward, PaymentFlow, Respond, ResponseTooLarge, RunBuffered, RunStreaming
from paywire.server.metering import SETTLEMENT_OVERRIDES, MaximumReached
from paywire.server.request import RequestInfo, build_url
from paywire.server.setup import FacilitatorArg, LazyFlow, RoutesArg, seller_config
from paywire.store.payments import StoredResponse
from paywire.transport.loop_thread import LoopThread

log = logging.getLogger("paywire.server")
T = TypeVar("T")
StartResponse = Callable[..., Any]
Environ = dict[str, Any]


def request_info(environ: Environ) -> RequestInfo:
    headers = {k[5:].replace("_", "-").lower(): str(v) for k, v in environ.items() if k.startswith("HTTP_")}
    if environ.get("CONTENT_TYPE"):
        headers["content-type"] = environ["CONTENT_TYPE"]
    if environ.get("CONTENT_LENGTH"):
        headers["content-length"] = environ["CONTENT_LENGTH"]
    path = environ.get("PATH_INFO", "") or "/"
    qs = environ.get("QUERY_STRING", "")
    server = (environ.get("SERVER_NAME", "localhost"), int(environ.get("SERVER_PORT", "80") or 80))
    url = build_url(environ.get("wsgi.url_scheme", "http"), headers.get("host"), server,
                    environ.get("SCRIPT_NAME", "") + path, qs)
    return RequestInfo(environ.get("REQUEST_METHOD", "GET").upper(), path, url, headers, qs,
                       client=environ.get("REMOTE_ADDR") or None)


def _read_body(req: RequestInfo, environ: Environ, limit: int) -> RequestInfo:
    """Read a ``Content-Length`` body of at most ``limit`` bytes (for the MPP digest) and put it back for the app;
    a larger one (or one without a length) is left unread and unbound."""
    body = read_wsgi_body(environ.get("wsgi.input"), limit, declared_length(req.headers))
    if body is None:
        return req
    environ["wsgi.input"] = io.BytesIO(body)
    return dataclasses.replace(req, body=body)


def _status_line(code: int) -> str:
    try:
        return f"{code} {http.HTTPStatus(code).phrase}"
    except ValueError:
        return f"{code} Unknown"


def _with_cors(headers: list[tuple[str, str]], origin: str | None) -> list[tuple[str, str]]:
    names = {k.lower() for k, _ in headers}
    if "access-control-expose-headers" not in names:
        headers.append(("Access-Control-Expose-Headers", EXPOSED_HEADERS))
    if origin and "access-control-allow-origin" not in names:
        headers.append(("Access-Control-Allow-Origin", origin))
    return headers


class WsgiPaymentMiddleware:
    """Same arguments and behaviour as :class:`paywire.server.asgi.PaymentMiddleware`, for WSGI apps."""

    def __init__(self, app: Callable[..., Iterable[bytes]], routes: RoutesArg = (),
                 facilitator: FacilitatorArg | None = None, *, config: SellerConfig | None = None,
                 flow: PaymentFlow | None = None, **options: Unpack[SellerOptions]) -> None:
        self.app = app
        self._lazy = LazyFlow(routes, seller_config(config, facilitator, options), flow)
        self._loop: LoopThread | None = None
        self._loop_lock = threading.Lock()

    @property
    def flow(self) -> PaymentFlow:
        return self._lazy.flow

    def _run(self, coro: Awaitable[T]) -> T:
        if self._loop is None:
            with self._loop_lock:
                if self._loop is None:
                    self._loop = LoopThread("paywire-wsgi-loop")
        return self._loop.run(coro)

    def startup(self) -> None:
        """Open the store and check the routes against the facilitator now (``ConfigError`` says what to fix)."""
        self._run(self.flow.startup())

    def close(self) -> None:
        if self._loop is not None:
            self._run(self.flow.aclose())
            self._loop.stop()
            self._loop = None

    def __call__(self, environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
        req = request_info(environ)
        flow = self.flow
        if flow.seller.binds_body(req):
            req = _read_body(req, environ, flow.seller.mpp_max_body)
        route = flow.seller.route_for_request(req)
        origin = flow.seller.allow_origin(req) if route else None
        if route is None:  # free request: no loop hop
            return self.app(environ, self._cors_start(start_response, None))
        try:
            plan = self._run(flow.begin(req))
        except Exception:
            log.exception("paywire: payment processing failed")
            return self._reply(start_response, json_reply(503, {"error": "payment_processing_unavailable",
                                                                "message": "try again with the same payment"}),
                               origin)
        if isinstance(plan, Forward):
            fwd = environ if plan.payment is None else {**environ, "paywire.payment": plan.payment}
            return self.app(fwd, self._cors_start(start_response, None))
        if isinstance(plan, Respond):
            return self._reply(start_response, plan.reply, origin)
        paid_environ = {**environ, "paywire.payment": plan.payment}
        if isinstance(plan, RunBuffered) and plan.payment.meter is not None:
            return self._call_metered(plan, paid_environ, start_response, origin)
        if isinstance(plan, RunBuffered):
            result = self._call_buffered(paid_environ)
            return self._reply(start_response, self._run(plan.finish(result)), origin)
        assert isinstance(plan, RunStreaming)
        return self._call_streaming(plan, paid_environ, start_response, origin)

    @staticmethod
    def _cors_start(start_response: StartResponse, origin: str | None) -> StartResponse:
        def wrapped(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
            return start_response(status, _with_cors(list(headers), origin), exc_info)

        return wrapped

    @staticmethod
    def _reply(start_response: StartResponse, reply: Reply, origin: str | None) -> list[bytes]:
        headers = [(k, v) for k, v in reply.headers if k.lower() != "content-length"]
        headers.append(("Content-Length", str(len(reply.body))))
        start_response(_status_line(reply.status), _with_cors(headers, origin))
        return [reply.body]

    def _call_buffered(self, environ: Environ) -> StoredResponse | BaseException:
        captured: dict[str, Any] = {}
        chunks: list[bytes] = []
        limit, size = self.flow.max_record_bytes, 0

        def keep(chunk: bytes) -> None:
            nonlocal size
            size += len(chunk)
            if size <= limit:
                chunks.append(bytes(chunk))
            elif chunks:
                chunks.clear()  # over the limit: keep counting, hold nothing

        def start(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Callable[[bytes], None]:
            captured["status"], captured["headers"] = status, list(headers)
            return keep

        try:
            iterable = self.app(environ, start)
            try:
                for chunk in iterable:
                    keep(chunk)
            finally:
                close = getattr(iterable, "close", None)
                if close is not None:
                    close()
        except Exception as exc:
            log.warning("paywire: paid handler raised %r; not charging", exc)
            return exc
        if "status" not in captured:
            return RuntimeError("the handler sent no response")
        if size > limit:
            return ResponseTooLarge(size, limit)
        return StoredResponse(int(str(captured["status"]).split()[0]), tuple(captured["headers"]), b"".join(chunks))

    def _call_metered(self, plan: RunBuffered, environ: Environ, start_response: StartResponse,
                      origin: str | None) -> Iterable[bytes]:
        """A variable-price payment (``upto``, ``batch-settlement``), as the ASGI middleware does it: buffered like
        any ``settle="after"`` route, unless the handler streams (``text/event-stream``, or a second body chunk).
        A stream passes through as it is made, billed per unit (``bill_unit``); see :class:`_MeteredStream`."""
        captured: dict[str, Any] = {}
        written: list[bytes] = []

        def start(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Callable[[bytes], None]:
            captured["status"], captured["headers"] = status, list(headers)
            return lambda chunk: written.append(bytes(chunk))

        try:
            iterable = self.app(environ, start)
        except Exception as exc:
            log.warning("paywire: paid handler raised %r; not charging", exc)
            return self._reply(start_response, self._run(plan.finish(exc)), origin)
        return _MeteredStream(self, plan, iterable, captured, written, start_response, origin)

    def _call_streaming(self, plan: RunStreaming, environ: Environ, start_response: StartResponse,
                        origin: str | None) -> Iterable[bytes]:
        state: dict[str, Any] = {"status": 0, "headers": ()}

        def start(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
            merged = merge_headers(list(headers), plan.headers)
            state["status"], state["headers"] = int(status.split()[0]), tuple(merged)
            return start_response(status, _with_cors(list(merged), origin), exc_info)

        try:
            iterable = self.app(environ, start)
        except Exception as exc:
            log.error("paywire: handler raised %r after settlement (settle='before')", exc)
            self._run(plan.finish(exc))
            return self._reply(start_response, self.flow.seller.handler_failed(), origin)
        return _Recorder(iterable, state, self.flow.max_record_bytes, lambda r: self._run(plan.finish(r)))


class _Recorder:
    """Streams the app's body through, keeping up to ``limit`` bytes; records the response when closed."""

    def __init__(self, inner: Iterable[bytes], state: dict[str, Any], limit: int,
                 done: Callable[[StoredResponse | BaseException], None]) -> None:
        self._inner, self._state, self._limit, self._done = inner, state, limit, done
        self._chunks: list[bytes] = []
        self._size, self._complete, self._error = 0, True, None
        self._finished = False

    def __iter__(self) -> Iterator[bytes]:
        try:
            for chunk in self._inner:
                chunk = bytes(chunk)
                if self._size + len(chunk) <= self._limit:
                    self._chunks.append(chunk)
                else:
                    self._complete = False
                self._size += len(chunk)
                yield chunk
        except Exception as exc:
            self._error = exc  # type: ignore[assignment]
            raise

    def close(self) -> None:
        try:
            close = getattr(self._inner, "close", None)
            if close is not None:
                close()
        finally:
            if not self._finished:
                self._finished = True
                result: StoredResponse | BaseException = self._error or StoredResponse(
                    self._state["status"], self._state["headers"], b"".join(self._chunks), self._complete)
                self._done(result)


def _ends_stream(exc: BaseException) -> bool:
    return isinstance(exc, MaximumReached)


class _MeteredStream:
    """The body of a variable-price WSGI response. Until it is known to stream, the app's chunks are held (a
    one-chunk body is an ordinary buffered response: charged first, then sent with ``PAYMENT-RESPONSE``). Once
    it streams, the status and headers go out without a receipt (the charge is not known yet) and each unit as
    it is made; when the app's iterable ends — or ``MaximumReached`` ends it — exactly what was billed is
    settled (upto) or committed (channel) and the receipt follows as a last ``event: payment-response`` of an
    SSE stream. A client gone mid-stream (the server closes us) is charged the units billed so far."""

    def __init__(self, mw: WsgiPaymentMiddleware, plan: RunBuffered, inner: Iterable[bytes],
                 captured: dict[str, Any], written: list[bytes], start_response: StartResponse,
                 origin: str | None) -> None:
        self._mw, self._plan, self._inner, self._captured = mw, plan, inner, captured
        self._written, self._start_response, self._origin = written, start_response, origin
        self._limit = mw.flow.max_record_bytes
        self._chunks: list[bytes] = []
        self._held: list[bytes] = []
        self._size, self._count = 0, 0
        self._streaming = self._finished = False

    def _sse(self) -> bool:
        return any(k.lower() == "content-type" and "text/event-stream" in v
                   for k, v in self._captured.get("headers", ()))

    def _keep(self, chunk: bytes) -> None:
        self._size += len(chunk)
        if self._size <= self._limit:
            self._chunks.append(chunk)
        elif self._chunks:
            self._chunks.clear()
        if chunk:
            self._count += 1
            self._held.append(chunk)

    def _result(self) -> StoredResponse:
        return StoredResponse(int(str(self._captured["status"]).split()[0]), tuple(self._captured["headers"]),
                              b"".join(self._chunks), self._size <= self._limit)

    def _finish(self, result: StoredResponse | BaseException) -> Reply:
        self._finished = True
        return self._mw._run(self._plan.finish(result))

    def _begin_stream(self) -> None:
        self._streaming = True
        drop = {"content-length", SETTLEMENT_OVERRIDES}
        headers = [(k, v) for k, v in self._captured["headers"] if k.lower() not in drop]
        headers.append(("Cache-Control", "private, no-store"))
        self._start_response(str(self._captured["status"]), _with_cors(headers, self._origin))

    def _close_inner(self) -> None:
        close = getattr(self._inner, "close", None)
        if close is not None:
            close()

    def __iter__(self) -> Iterator[bytes]:
        meter = self._plan.payment.meter
        assert meter is not None
        try:
            try:
                for chunk in self._inner:
                    for c in (*self._written, bytes(chunk)):
                        self._keep(c)
                    self._written.clear()
                    if not self._streaming and "status" in self._captured and (
                            self._count >= 2 or (self._count and self._sse())):
                        self._begin_stream()
                    if self._streaming:
                        held, self._held = self._held, []
                        yield from held
                for c in self._written:
                    self._keep(c)
            except Exception as exc:
                self._close_inner()
                if not self._streaming:
                    log.warning("paywire: paid handler raised %r; not charging", exc)
                    yield from self._reply(self._finish(exc))
                    return
                if not _ends_stream(exc):
                    log.error("paywire: streaming handler raised %r; charging the units billed before it", exc)
                if meter.charged is None:
                    meter.charge(0)
            else:
                self._close_inner()
            if not self._streaming:
                if "status" not in self._captured:
                    yield from self._reply(self._finish(RuntimeError("the handler sent no response")))
                    return
                done = self._result()
                yield from self._reply(self._finish(done if done.complete else
                                                    ResponseTooLarge(self._size, self._limit)))
                return
            yield from self._held
            reply = self._finish(self._result())
            receipt = dict((k.lower(), v) for k, v in reply.headers).get("payment-response")
            if receipt is None:
                log.error("paywire: a streamed response was not charged: %s", reply.body[:200])
            elif self._sse():
                yield f"event: payment-response\ndata: {receipt}\n\n".encode()
        except GeneratorExit:  # the client went away (the server closed us mid-stream)
            self._abandon(meter)
            raise

    def _abandon(self, meter: Any) -> None:
        if self._finished:
            return
        self._close_inner()
        if self._streaming:  # what was billed was delivered
            if meter.charged is None:
                meter.charge(0)
            self._finish(self._result())
        else:
            self._finish(RuntimeError("cancelled"))

    def _reply(self, reply: Reply) -> list[bytes]:
        return WsgiPaymentMiddleware._reply(self._start_response, reply, self._origin)

    def close(self) -> None:
        """Called by the server when the response is done or the client left."""
        meter = self._plan.payment.meter
        if not self._finished and meter is not None:
            self._abandon(meter)
