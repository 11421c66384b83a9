"""One keep-alive HTTP/1.1 client on ``h11``: the seller's calls to its facilitator and the facilitator's
JSON-RPC calls to chain nodes.

Both sit on hot paths (two facilitator round trips per paid request; a handful of RPC calls per settlement),
where a general-purpose client's bookkeeping costs more than the peer's answer. This one keeps a pool of open
connections per event loop and lets ``h11`` do the HTTP/1.1 framing (``Content-Length``, chunked and
close-delimited bodies, ``Connection: close``, HTTP/1.0 peers).

A request is retried on another connection only when it cannot have reached the server: an idle connection
the server has closed (or that has unexpected bytes waiting) is discarded before anything is written, and a
write that fails on a reused connection delivered no complete request. Once a request is written, a lost
connection is an error (``HttpError``): a ``POST /settle`` is never sent twice.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import json
import select
import ssl
import weakref
from typing import Any
from urllib.parse import urlsplit

import h11

__all__ = ["HttpError", "HttpTimeout", "KeepAliveClient"]

MAX_HEAD = 64 * 1024
_READ = 64 * 1024
_END = h11.EndOfMessage()


class HttpError(Exception):
    """The request did not produce a usable response (connection, malformed HTTP, too large)."""


class HttpTimeout(HttpError):
    """No complete answer within the client's timeout."""


def _readable(writer: asyncio.StreamWriter) -> bool:
    """True when an idle connection's socket has bytes or EOF waiting: the server closed it (or misbehaves)."""
    sock = writer.get_extra_info("socket")
    if sock is None:
        return False
    try:
        fd = sock.fileno()
        if hasattr(select, "poll"):
            poller = select.poll()
            poller.register(fd, select.POLLIN)
            return bool(poller.poll(0))
        return bool(select.select([fd], [], [], 0)[0])
    except (OSError, ValueError):
        return True


class Connection:
    """One pooled HTTP/1.1 connection: its h11 state and streams (shared by the keep-alive and streaming clients)."""

    __slots__ = ("h11", "reader", "reused", "writer")

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer
        self.h11 = h11.Connection(h11.CLIENT, max_incomplete_event_size=MAX_HEAD)
        self.reused = False

    def usable(self) -> bool:
        return not (self.writer.is_closing() or self.reader.at_eof() or _readable(self.writer))

    def close(self) -> None:
        with contextlib.suppress(Exception):  # already broken
            self.writer.close()


class _Pool:
    __slots__ = ("closed", "idle", "slots")

    def __init__(self, max_connections: int | None) -> None:
        self.idle: collections.deque[Connection] = collections.deque()
        self.slots = asyncio.Semaphore(max_connections) if max_connections else None
        self.closed = False

    def close(self) -> None:
        self.closed = True
        while self.idle:
            self.idle.popleft().close()


class KeepAliveClient:
    """HTTP/1.1 to one origin (``base_url``, http or https) over pooled keep-alive connections.

    ``send(method, path, body)`` → ``(status, body bytes)``; ``request`` does the same with JSON in and out.
    ``timeout`` bounds each call (waiting for a slot, connect, send, the whole answer); a call that times out
    or fails closes its connection. ``max_connections`` caps concurrent connections per event loop (None: no
    cap); up to ``max_idle`` idle ones are kept.
    """

    def __init__(self, base_url: str, *, timeout: float = 30.0, headers: dict[str, str] | None = None,
                 max_connections: int | None = None, max_idle: int = 16, max_body: int = 4 * 1024 * 1024) -> None:
        u = urlsplit(base_url)
        if u.scheme not in ("http", "https") or not u.hostname:
            raise ValueError(f"not an http(s) URL: {base_url!r}")
        self.base_url, self.timeout = base_url, timeout
        self.max_idle, self.max_body, self._max = max_idle, max_body, max_connections
        self._host, self._tls = u.hostname, u.scheme == "https"
        self._port = u.port or (443 if self._tls else 80)
        self._path, self._prefix = u.path or "/", u.path.rstrip("/")
        self._query = "?" + u.query if u.query else ""
        self.headers = dict(headers or {})  # sent with every request (e.g. Authorization); fixed here
        self._headers = [("Host", u.netloc.rsplit("@", 1)[-1]), ("Accept", "application/json"),
                         *self.headers.items()]
        self._ssl = ssl.create_default_context() if self._tls else None
        self._pools: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _Pool] = weakref.WeakKeyDictionary()
        self._requests: dict[tuple[str, str, int | None, str], h11.Request] = {}

    def __repr__(self) -> str:
        return f"KeepAliveClient({self.base_url!r})"

    def _pool(self) -> _Pool:
        loop = asyncio.get_running_loop()  # connections belong to the loop that opened them
        pool = self._pools.get(loop)
        if pool is None:
            pool = self._pools[loop] = _Pool(self._max)
        return pool

    async def request(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        """``body``: a JSON value, or ``bytes`` that already are the JSON text → ``(status, JSON or None)``."""
        data = None if body is None else body if isinstance(body, bytes) else json.dumps(
            body, separators=(",", ":")).encode()
        status, payload = await self.send(method, path, data)
        try:
            return status, json.loads(payload) if payload else None
        except ValueError:
            return status, None

    async def send(self, method: str, path: str = "", body: bytes | None = None, *,
                   content_type: str = "application/json") -> tuple[int, bytes]:
        """``path`` is appended to the base URL's path (``""``: the base URL itself)."""
        key = (method, path, None if body is None else len(body), content_type)
        event = self._requests.get(key)
        if event is None:  # h11 validates every header of a new event: reuse events (they are immutable)
            headers = self._headers
            if body is not None:
                headers = [*headers, ("Content-Type", content_type), ("Content-Length", str(len(body)))]
            target = (self._prefix + path if path else self._path) + self._query
            event = h11.Request(method=method, target=target, headers=headers)
            if len(self._requests) >= 256:
                self._requests.clear()
            self._requests[key] = event
        pool = self._pool()
        try:
            async with asyncio.timeout(self.timeout):  # no extra task per call, unlike wait_for
                if pool.slots is None:
                    return await self._exchange(pool, event, body)
                async with pool.slots:
                    return await self._exchange(pool, event, body)
        except TimeoutError:
            raise HttpTimeout(f"{method} {path or '/'}: no answer within {self.timeout} s") from None

    async def _connect(self) -> Connection:
        try:
            reader, writer = await asyncio.open_connection(self._host, self._port, ssl=self._ssl, limit=MAX_HEAD)
        except OSError as exc:
            raise HttpError(f"cannot connect to {self._host}:{self._port}: {exc}") from exc
        return Connection(reader, writer)

    async def _exchange(self, pool: _Pool, event: h11.Request, body: bytes | None) -> tuple[int, bytes]:
        while True:
            conn = None
            while pool.idle:
                idle = pool.idle.pop()
                if idle.usable():
                    conn = idle
                    break
                idle.close()  # closed by the server while idle: nothing was sent on it
            if conn is None:
                conn = await self._connect()
            try:
                if await self._write(conn, event, body):
                    result = await self._read(conn)
                    break
            except BaseException:
                conn.close()
                raise
            conn.close()  # a reused connection that broke while we wrote: no request reached the server
        h = conn.h11
        if h.our_state is h11.DONE and h.their_state is h11.DONE and not h.trailing_data[0] \
                and not pool.closed and len(pool.idle) < self.max_idle:
            h.start_next_cycle()
            conn.reused = True
            pool.idle.append(conn)
        else:
            conn.close()
        return result

    @staticmethod
    async def _write(conn: Connection, event: h11.Request, body: bytes | None) -> bool:
        """Send the request; False when a reused connection broke before it was delivered (retry elsewhere)."""
        h = conn.h11
        out = h.send(event) or b""
        if body:
            out += h.send(h11.Data(data=body)) or b""
        out += h.send(_END) or b""
        try:
            conn.writer.write(out)
            await conn.writer.drain()
        except OSError as exc:
            if conn.reused:
                return False
            raise HttpError(f"connection failed: {type(exc).__name__}: {exc}") from exc
        return True

    async def _read(self, conn: Connection) -> tuple[int, bytes]:
        h, reader = conn.h11, conn.reader
        status, received = 0, False
        body = bytearray()
        try:
            while True:
                data = await reader.read(_READ)  # a pooled connection has nothing buffered: read first
                if not data and not received:
                    raise HttpError("connection closed before a response")
                received = True
                h.receive_data(data)
                while (event := h.next_event()) is not h11.NEED_DATA:
                    if isinstance(event, h11.Data):
                        body += event.data
                        if len(body) > self.max_body:
                            raise HttpError("response body too large")
                    elif isinstance(event, h11.Response):
                        status = event.status_code
                    elif isinstance(event, h11.EndOfMessage):
                        return status, bytes(body)
                    elif not isinstance(event, h11.InformationalResponse):
                        raise HttpError(f"unexpected {type(event).__name__} in a response")
        except h11.RemoteProtocolError as exc:
            what = "malformed response" if status else "not an HTTP/1.x response"
            raise HttpError(f"{what}: {exc}") from exc
        except OSError as exc:
            raise HttpError(f"connection failed: {type(exc).__name__}: {exc}") from exc

    async def aclose(self) -> None:
        """Close the pooled connections (a later call opens new ones)."""
        for pool in list(self._pools.values()):
            pool.close()
        self._pools.clear()
