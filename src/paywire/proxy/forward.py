"""Forward one ASGI request to the upstream and stream its answer back (one pooled client per configuration:
:class:`~paywire.proxy.upstream.StreamingUpstream` on h11 by default, httpx with ``upstream_client = "httpx"``).

Nothing is buffered here: the request body goes to the upstream as the client sends it (``receive`` → httpx
request stream), the answer comes back chunk by chunk (``chunks()`` → ``send``; each ``send`` waits for the
server's write buffer, so a slow client slows the upstream read: backpressure). Payment credentials, hop-by-hop
headers and any incoming ``Paywire-*`` header are removed; a paid request gets signed ``Paywire-*`` identity
headers (:mod:`paywire.proxy.identity`).

Errors the client sees: 502 (upstream unreachable or broke off before answering), 504 (no answer in time),
413 (body over ``max_body``). For ``settle="after"`` routes a 5xx means the payment is not charged.
"""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, MutableMapping
from typing import Any
from urllib.parse import urlsplit

from paywire.proxy.config import ProxyConfig
from paywire.proxy.identity import PREFIX, identity_headers
from paywire.proxy.metrics import Metrics
from paywire.proxy.upstream import StreamingUpstream, UpstreamError, UpstreamTimeout

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

log = logging.getLogger("paywire.proxy")

HOP_BY_HOP = frozenset({"connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te", "trailer",
                        "trailers", "transfer-encoding", "upgrade"})
PAYMENT_HEADERS = frozenset({"payment-signature", "x-payment", "sign-in-with-x"})
OURS = frozenset({"x-forwarded-proto", "x-forwarded-host", "expect"})
"""Set by the proxy (or handled by it: the body is streamed anyway), never taken from the client."""
PAYMENT_AUTH_SCHEMES = ("payment", "l402", "lsat")
PAYMENT_RESPONSE_HEADERS = frozenset({"payment-response", "x-payment-response", "payment-receipt",
                                      "payment-required"})


class BodyTooLarge(Exception):
    """The client sent more than ``max_body`` bytes."""


def _is_payment_auth(value: bytes) -> bool:
    scheme = value.split(b" ", 1)[0].decode("latin-1").strip().lower()
    return scheme in PAYMENT_AUTH_SCHEMES


_DROPPED = frozenset(n.encode("latin-1") for n in HOP_BY_HOP | PAYMENT_HEADERS | OURS)
_PREFIX = PREFIX.encode("latin-1")


def request_headers(scope: Scope, upstream_host: str, preserve_host: bool) -> list[tuple[bytes, bytes]]:
    """The client's headers as the upstream should see them: no hop-by-hop, payment or ``Paywire-*`` headers
    (whatever their case), ``Host`` the upstream's (or the client's), ``X-Forwarded-*`` added."""
    raw: list[tuple[bytes, bytes]] = list(scope.get("headers", ()))
    listed = {t.strip().lower().encode() for k, v in raw if k.lower() == b"connection"
              for t in v.decode("latin-1").split(",")}
    out: list[tuple[bytes, bytes]] = []
    host = b""
    forwarded_for = b""
    for k, v in raw:
        name = k.lower()
        if name in _DROPPED or name in listed or name.startswith(_PREFIX):
            continue
        if name == b"authorization" and _is_payment_auth(v):
            continue
        if name == b"host":
            host = v
            continue
        if name == b"x-forwarded-for":
            forwarded_for = v
            continue
        out.append((name, v))
    out.append((b"host", host if preserve_host and host else upstream_host.encode("latin-1")))
    client = scope.get("client")
    if client:
        ip = str(client[0]).encode()
        out.append((b"x-forwarded-for", forwarded_for + b", " + ip if forwarded_for else ip))
    out.append((b"x-forwarded-proto", str(scope.get("scheme", "http")).encode()))
    if host:
        out.append((b"x-forwarded-host", host))
    return out


_NOT_RELAYED = frozenset(n.encode("latin-1") for n in HOP_BY_HOP | PAYMENT_RESPONSE_HEADERS)


def response_headers(headers: list[tuple[bytes, bytes]], upstream: str = "") -> list[tuple[bytes, bytes]]:
    """The upstream's headers minus hop-by-hop ones and payment headers it has no business sending; a
    ``Location`` on the upstream's own origin (``upstream``: ``http://host:port``) becomes a path, so a redirected
    client comes back through the proxy instead of going around it."""
    listed = {t.strip().lower().encode() for k, v in headers if k.lower() == b"connection"
              for t in v.decode("latin-1").split(",")}
    origin = upstream.encode("latin-1").lower()
    out = []
    for k, v in headers:
        name = k.lower()
        if name in _NOT_RELAYED or name in listed:
            continue
        if name == b"location" and origin and v.lower().startswith(origin):
            rest = v[len(origin):]
            if not rest or rest[:1] in (b"/", b"?", b"#"):
                v = rest if rest[:1] == b"/" else b"/" + rest
        out.append((name, v))
    return out


def _error(status: int, error: str, message: str) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
    body = json.dumps({"error": error, "message": message}).encode()
    return status, [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())], body


class _HttpxUpstream:
    """The same interface as :class:`StreamingUpstream`, on httpx (``upstream_client = "httpx"``)."""

    def __init__(self, base: str, config: ProxyConfig) -> None:
        import httpx

        self._httpx = httpx
        limits = httpx.Limits(max_connections=config.max_connections, max_keepalive_connections=64,
                              keepalive_expiry=30.0)
        timeout = httpx.Timeout(connect=config.connect_timeout, read=config.read_timeout,
                                write=config.write_timeout, pool=config.connect_timeout)
        self.base = base
        self.client = httpx.AsyncClient(limits=limits, timeout=timeout, follow_redirects=False, trust_env=False)

    async def open(self, method: str, target: str, headers: list[tuple[bytes, bytes]],
                   body: AsyncIterator[bytes] | None) -> Any:
        httpx = self._httpx
        request = self.client.build_request(method, self.base + target, headers=headers, content=body)
        try:
            response = await self.client.send(request, stream=True)
        except httpx.TimeoutException as exc:
            raise UpstreamTimeout(str(exc) or type(exc).__name__) from exc
        except httpx.HTTPError as exc:
            raise UpstreamError(str(exc) or type(exc).__name__) from exc
        return _HttpxResponse(response, httpx)

    async def aclose(self) -> None:
        await self.client.aclose()


class _HttpxResponse:
    def __init__(self, response: Any, httpx: Any) -> None:
        self._response, self._httpx = response, httpx
        self.status: int = response.status_code
        self.headers: list[tuple[bytes, bytes]] = list(response.headers.raw)

    async def chunks(self) -> AsyncIterator[bytes]:
        try:
            async for part in self._response.aiter_raw():
                yield part
        except self._httpx.TimeoutException as exc:
            raise UpstreamTimeout(str(exc)) from exc
        except self._httpx.HTTPError as exc:
            raise UpstreamError(str(exc)) from exc

    async def aclose(self) -> None:
        await self._response.aclose()


class Forwarder:
    """The ASGI app behind the payment middleware: forwards to ``config.upstream``."""

    def __init__(self, config: ProxyConfig, secret: bytes | None, metrics: Metrics) -> None:
        self.config, self.secret, self.metrics = config, secret, metrics
        parts = urlsplit(config.upstream)
        self.prefix = parts.path.rstrip("/")
        self.host = parts.netloc
        base = self.origin = f"{parts.scheme}://{parts.netloc}"
        self.upstream: StreamingUpstream | _HttpxUpstream
        if config.upstream_client == "httpx":
            self.upstream = _HttpxUpstream(base, config)
        else:
            self.upstream = StreamingUpstream(base, connect_timeout=config.connect_timeout,
                                              read_timeout=config.read_timeout, write_timeout=config.write_timeout,
                                              max_connections=config.max_connections)

    async def aclose(self) -> None:
        await self.upstream.aclose()

    def target(self, scope: Scope) -> str:
        raw = scope.get("raw_path") or str(scope.get("path", "/")).encode()
        path = raw.decode("latin-1") if isinstance(raw, bytes) else str(raw)
        qs = bytes(scope.get("query_string", b"")).decode("latin-1")
        return f"{self.prefix}{path}" + (f"?{qs}" if qs else "")

    async def _body(self, receive: Receive) -> AsyncIterator[bytes]:
        size, limit = 0, self.config.max_body
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                raise ConnectionAbortedError("the client went away while sending the body")
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                raise BodyTooLarge(size)
            if chunk:
                self.metrics.bytes_up += len(chunk)
                yield bytes(chunk)
            if not message.get("more_body", False):
                return

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        target = self.target(scope)
        method = scope.get("method", "GET")
        headers = request_headers(scope, self.host, self.config.preserve_host)
        payment = scope.get("paywire.payment")
        if payment is not None:
            self.metrics.paid += 1
        if payment is not None and self.secret is not None:
            headers += [(k.encode(), v.encode("latin-1", "replace"))
                        for k, v in identity_headers(payment, self.secret, method, target)]
        has_body = any(k in (b"content-length", b"transfer-encoding") for k, _ in scope.get("headers", ()))
        content = self._body(receive) if has_body else None
        self.metrics.upstream_requests += 1
        try:
            response = await self.upstream.open(method, target, headers, content)
        except BodyTooLarge:
            await self._reply(send, *_error(413, "request_too_large",
                                            f"the body exceeds {self.config.max_body} bytes"))
            return
        except UpstreamTimeout as exc:
            self.metrics.upstream_errors += 1
            log.warning("paywire proxy: upstream timed out: %s", exc)
            await self._reply(send, *_error(504, "upstream_timeout", "the upstream did not answer in time"))
            return
        except (UpstreamError, ConnectionAbortedError, OSError) as exc:
            self.metrics.upstream_errors += 1
            log.warning("paywire proxy: upstream unreachable: %s", exc)
            await self._reply(send, *_error(502, "upstream_unavailable", "the upstream could not be reached"))
            return
        try:
            await send({"type": "http.response.start", "status": response.status,
                        "headers": response_headers(response.headers, self.origin)})
            async for chunk in response.chunks():
                if chunk:
                    self.metrics.bytes_down += len(chunk)
                    await send({"type": "http.response.body", "body": chunk, "more_body": True})
            await send({"type": "http.response.body", "body": b"", "more_body": False})
        except UpstreamError as exc:
            self.metrics.upstream_errors += 1
            log.warning("paywire proxy: upstream broke off its answer: %s", exc)
            raise  # the client sees a cut connection, never a truncated answer dressed as complete
        finally:
            await response.aclose()

    @staticmethod
    async def _reply(send: Send, status: int, headers: list[tuple[bytes, bytes]], body: bytes) -> None:
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})
