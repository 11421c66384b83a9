"""The proxy as one ASGI app: ``/healthz``, ``/metrics``, size and route checks, then the payment middleware
(:class:`~paywire.server.asgi.PaymentMiddleware`, the same exactly-once flow as any paywire seller) around the
:class:`~paywire.proxy.forward.Forwarder`.

A configuration is a *generation*. :meth:`ProxyServer.reload` (SIGHUP) reads the file again, builds and starts a
new generation, then swaps it in: requests that already started finish on the old one, new requests go to the
new one, and the old one is closed when its last request ends (or after ``drain_timeout``). A file that does not
load or start leaves the running generation in place. The payment ledger is the same store across generations,
so a payment claimed before a reload replays after it.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import hmac
import ipaddress
import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from paywire.bodylimit import declared_length
from paywire.proxy.config import PRICE_HEADER, ProxySetup, load_proxy, parse_price
from paywire.proxy.forward import Forwarder, Message, Receive, Scope, Send, request_headers
from paywire.proxy.metrics import Metrics
from paywire.proxy.upstream import UpstreamError
from paywire.server.asgi import PaymentMiddleware, request_info
from paywire.transport.keepalive import HttpError, KeepAliveClient

__all__ = ["ProxyServer"]

log = logging.getLogger("paywire.proxy")
QUOTE_HEADER = b"paywire-quote"
"""Marks the proxy's ``HEAD`` price quote to the upstream (``price_header`` routes)."""


@dataclass(slots=True)
class Generation:
    """One loaded configuration and what it opened."""

    number: int
    setup: ProxySetup
    forwarder: Forwarder
    middleware: PaymentMiddleware
    inflight: int = 0
    idle: asyncio.Event = field(default_factory=asyncio.Event)
    openapi: bytes | None = None  # the MPP discovery document, when a route offers MPP
    pricers: dict[str, KeepAliveClient] = field(default_factory=dict)  # price_url → its client
    lightning: Any = None  # the [proxy.lightning] node's client, when configured

    def pricer(self, url: str) -> KeepAliveClient:
        client = self.pricers.get(url)
        if client is None:
            client = self.pricers[url] = KeepAliveClient(url, timeout=self.setup.proxy.connect_timeout)
        return client

    async def aclose(self) -> None:
        for client in self.pricers.values():
            with contextlib.suppress(Exception):
                await client.aclose()
        with contextlib.suppress(Exception):
            await self.middleware.flow.aclose()
        with contextlib.suppress(Exception):
            await self.forwarder.aclose()
        if self.lightning is not None:
            with contextlib.suppress(Exception):
                await self.lightning.aclose()


async def _json(send: Send, status: int, body: Mapping[str, Any]) -> None:
    data = json.dumps(body).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(data)).encode()),
                            (b"cache-control", b"no-store")]})
    await send({"type": "http.response.body", "body": data})


def _is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def metrics_refusal(scope: Scope, token: bytes | None) -> tuple[int, dict[str, str]] | None:
    """Why ``/metrics`` is refused to this request (status, JSON body), or None to serve it.

    With a token: ``Authorization: Bearer <token>`` (compared in constant time), from anywhere. Without one:
    loopback clients only (the connection's peer, or the client uvicorn takes from a loopback front proxy's
    ``X-Forwarded-For``)."""
    if token is not None:
        given = next((v for k, v in scope.get("headers", ()) if k.lower() == b"authorization"), b"")
        scheme, _, value = given.partition(b" ")
        if scheme.lower() == b"bearer" and hmac.compare_digest(value.strip(), token):
            return None
        return 401, {"error": "unauthorized", "message": "/metrics needs Authorization: Bearer <metrics_token>"}
    client = scope.get("client")
    if client and _is_loopback(str(client[0])):
        return None
    return 403, {"error": "forbidden", "message": "/metrics is served to loopback clients only; set "
                                                  "metrics_token to read it from elsewhere"}


class ProxyServer:
    """``paywire proxy``'s ASGI app. ``await start()`` before serving; ``await reload()`` on SIGHUP."""

    def __init__(self, config_path: str | Path, env: Mapping[str, str] | None = None) -> None:
        self.path, self.env = config_path, env
        self.metrics = Metrics()
        self._current: Generation | None = None
        self._closing: set[asyncio.Task[None]] = set()
        self._reload_lock = asyncio.Lock()
        self._reconciler: asyncio.Task[None] | None = None

    @property
    def current(self) -> Generation:
        if self._current is None:
            raise RuntimeError("ProxyServer.start() has not run")
        return self._current

    async def _build(self) -> Generation:
        setup = load_proxy(self.path, env=self.env)
        lightning = setup.lightning.connect() if setup.lightning is not None else None
        seller = dataclasses.replace(setup.seller, lightning=lightning) if lightning is not None else setup.seller
        forwarder = Forwarder(setup.proxy, setup.secret, self.metrics)
        middleware = PaymentMiddleware(forwarder, setup.routes, config=seller)
        gen = Generation(self.metrics.generation + 1, setup, forwarder, middleware, lightning=lightning)
        try:
            await middleware.startup()
            if setup.proxy.openapi_path and any(r.mpp for r in setup.routes):
                from paywire.server.openapi import openapi_document

                doc = openapi_document(middleware.flow.seller, title=setup.proxy.title)
                gen.openapi = json.dumps(doc).encode() if doc is not None else None
        except BaseException:
            await gen.aclose()
            raise
        return gen

    async def start(self) -> ProxySetup:
        """Load the file and start the first generation (``ConfigError`` says what to fix)."""
        gen = await self._build()
        self._current = gen
        self.metrics.generation = gen.number
        if self._reconciler is None:
            self._reconciler = asyncio.ensure_future(self._reconcile_forever())
        return gen.setup

    async def _reconcile_forever(self) -> None:
        """The ledger's self-repair (``reconcile_interval``, read from the running configuration each time): a
        payer who got the reply before a crash does not retry, so nothing else would finish that row."""
        while True:
            gen = self._current
            interval = gen.setup.proxy.reconcile_interval if gen is not None else 0.0
            await asyncio.sleep(interval if interval > 0 else 60.0)
            gen = self._current
            if interval <= 0 or gen is None:
                continue
            try:
                counts = await gen.middleware.flow.reconcile_pending()
            except Exception:
                log.exception("paywire proxy: reconciling open payments failed")
                continue
            if counts:
                log.info("paywire proxy: reconciled open payments: %s", counts)

    async def reload(self) -> bool:
        """Load the file again and swap the new generation in; False (old one kept, error logged) if it fails."""
        async with self._reload_lock:
            try:
                gen = await self._build()
            except Exception as exc:
                self.metrics.reloads["failed"] += 1
                log.error("paywire proxy: reload failed, keeping the running configuration: %s", exc)
                return False
            old, self._current = self._current, gen
            self.metrics.generation = gen.number
            self.metrics.reloads["ok"] += 1
            if old is not None:
                if old.setup.proxy.listen != gen.setup.proxy.listen:
                    log.warning("paywire proxy: listen changed to %s; restart to move the socket",
                                gen.setup.proxy.listen)
                task = asyncio.ensure_future(self._retire(old))
                self._closing.add(task)
                task.add_done_callback(self._closing.discard)
            log.info("paywire proxy: configuration %d loaded (%d routes)", gen.number, len(gen.setup.routes))
            return True

    async def _retire(self, gen: Generation) -> None:
        if gen.inflight:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(gen.idle.wait(), gen.setup.proxy.drain_timeout)
        await gen.aclose()

    async def aclose(self) -> None:
        if self._reconciler is not None:
            self._reconciler.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._reconciler
            self._reconciler = None
        for task in list(self._closing):
            with contextlib.suppress(Exception):
                await task
        if self._current is not None:
            await self._current.aclose()
            self._current = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            if scope["type"] == "lifespan":  # the CLI starts and stops us around the server
                while (await receive())["type"] != "lifespan.shutdown":
                    await send({"type": "lifespan.startup.complete"})
                await send({"type": "lifespan.shutdown.complete"})
            return
        gen = self.current
        gen.inflight += 1
        gen.idle.clear()
        self.metrics.inflight += 1
        try:
            await self._handle(gen, scope, receive, self._counting(send))
        finally:
            gen.inflight -= 1
            self.metrics.inflight -= 1
            if gen.inflight == 0:
                gen.idle.set()

    def _counting(self, send: Send) -> Send:
        async def wrapped(message: Message) -> None:
            if message["type"] == "http.response.start":
                self.metrics.responses[f"{int(message['status']) // 100}xx"] += 1
            await send(message)

        return wrapped

    async def _handle(self, gen: Generation, scope: Scope, receive: Receive, send: Send) -> None:
        cfg = gen.setup.proxy
        path = scope.get("path", "/")
        if path == cfg.health_path and scope.get("method") in ("GET", "HEAD"):
            await _json(send, 200, {"status": "ok", "generation": gen.number, "routes": len(gen.setup.routes)})
            return
        if path == cfg.metrics_path and cfg.metrics_path and scope.get("method") == "GET":
            refused = metrics_refusal(scope, gen.setup.metrics_token)
            if refused is not None:
                await _json(send, *refused)
                return
            data = self.metrics.render().encode()
            await send({"type": "http.response.start", "status": 200,
                        "headers": [(b"content-type", b"text/plain; version=0.0.4"),
                                    (b"content-length", str(len(data)).encode())]})
            await send({"type": "http.response.body", "body": data})
            return
        if path == cfg.openapi_path and gen.openapi is not None and scope.get("method") in ("GET", "HEAD"):
            await send({"type": "http.response.start", "status": 200,
                        "headers": [(b"content-type", b"application/json"), (b"cache-control", b"max-age=300"),  # the draft: 5 minutes
                                    (b"content-length", str(len(gen.openapi)).encode())]})
            await send({"type": "http.response.body", "body": gen.openapi})
            return
        req = request_info(scope)
        declared = declared_length(req.headers)
        if declared is not None and declared > cfg.max_body:  # before any payment: nothing is charged
            await _json(send, 413, {"error": "request_too_large",
                                    "message": f"the body exceeds {cfg.max_body} bytes"})
            return
        route = gen.middleware.flow.seller.route_for_request(req)
        if route is None:  # not for sale: no payment logic at all
            if cfg.unpriced == "deny":
                await _json(send, 404, {"error": "not_found", "message": "no priced route here"})
            else:
                await gen.forwarder(scope, receive, send)
            return
        if gen.setup.pricing or gen.setup.quoting:
            priced = await self._priced(gen, route, req, scope)
            if priced is None:
                await _json(send, 502, {"error": "pricing_unavailable",
                                        "message": "the price of this request could not be determined; try again"})
                return
            scope = priced
            req = request_info(scope)  # the price header changed
        await gen.middleware.handle(scope, receive, send, req)

    async def _priced(self, gen: Generation, route: Any, req: Any, scope: Scope) -> Scope | None:
        """The scope with this request's price from the route's pricing endpoint or upstream header (a client's
        own ``Paywire-Price`` is always dropped); None when no valid price came back."""
        headers = [(k, v) for k, v in scope.get("headers", ()) if k.lower() != PRICE_HEADER.encode()]
        if req.method == "OPTIONS":
            return {**scope, "headers": headers}
        index = next(i for i, r in enumerate(gen.setup.routes) if r is route)
        url, header = gen.setup.pricing.get(index), gen.setup.quoting.get(index)
        raw: str | None = None
        if url is not None:
            raw = await self._ask_endpoint(gen, url, req)
        elif header is not None:
            raw = await self._ask_upstream(gen, header, scope)
        else:
            return {**scope, "headers": headers}
        price = parse_price(raw) if raw is not None else None
        if price is None:
            return None
        headers.append((PRICE_HEADER.encode(), price.encode("ascii")))
        return {**scope, "headers": headers}

    async def _ask_endpoint(self, gen: Generation, url: str, req: Any) -> str | None:
        """``POST {method, path, query}`` to the pricing endpoint; its ``"price"``."""
        body = {"method": req.method, "path": req.path, "query": req.query_string}
        try:
            status, answer = await gen.pricer(url).request("POST", "", body)
        except HttpError as exc:
            log.warning("paywire proxy: pricing endpoint %s: %s", url, exc)
            return None
        price = answer.get("price") if status == 200 and isinstance(answer, dict) else None
        if isinstance(price, bool) or not isinstance(price, str | int):
            log.warning("paywire proxy: pricing endpoint %s answered %s %r", url, status, answer)
            return None
        return str(price)

    async def _ask_upstream(self, gen: Generation, header: str, scope: Scope) -> str | None:
        """``HEAD`` of the same target at the upstream (the client's headers minus credentials, plus
        ``Paywire-Quote: 1``); the value of its ``header`` when it answers 2xx."""
        fwd = gen.forwarder
        headers = [*request_headers(scope, fwd.host, fwd.config.preserve_host), (QUOTE_HEADER, b"1")]
        try:
            response = await fwd.upstream.open("HEAD", fwd.target(scope), headers, None)
        except UpstreamError as exc:
            log.warning("paywire proxy: price quote from the upstream failed: %s", exc)
            return None
        try:
            async for _ in response.chunks():  # a HEAD answer has no body; this finishes the exchange
                pass
        except UpstreamError:
            pass
        finally:
            await response.aclose()
        value = next((v for k, v in response.headers if k.lower() == header.encode()), None)
        if not 200 <= response.status < 300 or value is None:
            log.warning("paywire proxy: the upstream's quote answered %s without %s", response.status, header)
            return None
        return value.decode("latin-1")
