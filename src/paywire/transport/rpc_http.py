"""A lean keep-alive HTTP/1.1 client for JSON-RPC: ``POST`` a small body, get the status and the whole answer.

The facilitator makes about three node calls per settlement. Through ``h11`` and asyncio streams each call
cost ~0.15 ms of CPU in framing and stream bookkeeping, more than the rest of the settlement's Python steps.
This client speaks just what JSON-RPC over HTTP needs, on an ``asyncio.Protocol`` per connection (no stream
objects, no poll syscall per call): one prebuilt request head, and a response parser for ``Content-Length``,
chunked and close-delimited bodies, ``1xx`` interim answers, ``Connection: close`` and HTTP/1.0 peers. Heads
are bounded (``MAX_HEAD``) and so are bodies (``max_body``).

Retry rule: a request is re-sent on another connection only when it cannot have reached the server (an idle
connection that the server closed, or that has unexpected bytes waiting, is dropped before anything is written;
a write that fails at once on a reused connection delivered nothing), or when the caller says it is
``idempotent`` (a JSON-RPC read) and a reused connection closed before any byte of its answer: the server
closing an idle keep-alive connection races with our next request, and a read can safely be asked again. A
request that is not idempotent (``eth_sendRawTransaction``) is never re-sent once written: before it goes on a
reused connection, the socket is polled for an EOF the event loop has not handled yet (the race's usual
shape), and a connection lost after the write is an error (``HttpError``).
"""

from __future__ import annotations

import asyncio
import collections
import select
import string
import weakref
from typing import cast
from urllib.parse import urlsplit

from paywire.transport.keepalive import MAX_HEAD, HttpError, HttpTimeout

__all__ = ["RpcHttpClient"]

_HEX = frozenset(string.hexdigits.encode())


class _Unanswered(HttpError):
    """The connection closed before any byte of the answer arrived (the server may not have seen the request)."""


def _readable(transport: asyncio.Transport) -> bool:
    """True when an idle connection's socket has bytes or EOF waiting that the event loop has not handled yet."""
    sock = transport.get_extra_info("socket")
    if sock is None:
        return False
    try:
        if hasattr(select, "poll"):
            poller = select.poll()
            poller.register(sock.fileno(), select.POLLIN)
            return bool(poller.poll(0))
        return bool(select.select([sock.fileno()], [], [], 0)[0])
    except (OSError, ValueError):
        return True


class _Conn(asyncio.Protocol):
    """One connection: writes a request, parses one response into ``waiter``'s result ``(status, body)``."""

    __slots__ = ("answered", "body_at", "broken", "buf", "chunk_at", "chunked", "chunks", "closed", "keep", "length",
                 "max_body", "reused", "status", "transport", "waiter")

    def __init__(self, max_body: int) -> None:
        self.max_body = max_body
        self.transport: asyncio.Transport | None = None
        self.buf = bytearray()
        self.waiter: asyncio.Future[tuple[int, bytes]] | None = None
        self.closed = False  # the connection is gone (or going)
        self.broken = False  # bytes or EOF arrived while no request was waiting: never reuse
        self.reused = False
        self.answered = False  # a byte of the current request's answer has arrived
        self._reset()

    def _reset(self) -> None:
        self.status = 0  # 0: the head is not parsed yet
        self.body_at = 0
        self.length: int | None = None  # Content-Length; None: chunked or read until close
        self.chunked = False
        self.keep = True
        self.chunk_at = 0  # chunked: where the next chunk-size line starts
        self.chunks = bytearray()

    # -- asyncio.Protocol -------------------------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's transports are not asyncio.Transport subclasses

    def data_received(self, data: bytes) -> None:
        if self.waiter is None or self.waiter.done():
            self.broken = True  # an idle connection got bytes: the server misbehaves or says goodbye
            return
        self.answered = True
        self.buf += data
        try:
            self._parse(eof=False)
        except HttpError as exc:
            self._fail(exc)

    def eof_received(self) -> bool:
        self.broken = True
        if self.waiter is not None and not self.waiter.done():
            try:
                self._parse(eof=True)
            except HttpError as exc:
                self._fail(exc)
            else:
                if not self.waiter.done():
                    self._fail(_Unanswered("connection closed before a response") if not self.answered
                               else HttpError("connection closed in the middle of a response"))
        return False  # close the transport

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self.waiter is not None and not self.waiter.done():
            what = f"{type(exc).__name__}: {exc}" if exc is not None else "closed by the server"
            error = _Unanswered if not self.answered else HttpError
            self.waiter.set_exception(error(f"connection failed: {what}"))

    # -- the response -------------------------------------------------------------------------------------------
    def _fail(self, exc: HttpError) -> None:
        self.broken = True
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_exception(exc)
        if self.transport is not None:
            self.transport.close()

    def _head(self) -> bool:
        """Parse the status line and headers once they are all here; False: wait for more."""
        while True:
            end = self.buf.find(b"\r\n\r\n")
            if end < 0:
                if len(self.buf) > MAX_HEAD:
                    raise HttpError("response head too large")
                return False
            if end > MAX_HEAD:
                raise HttpError("response head too large")
            lines = bytes(self.buf[:end]).split(b"\r\n")
            parts = lines[0].split(b" ", 2)
            if len(parts) < 2 or not parts[0].startswith(b"HTTP/1.") or len(parts[1]) != 3 or not parts[1].isdigit():
                raise HttpError(f"not an HTTP/1.x response: {bytes(lines[0][:60])!r}")
            status = int(parts[1])
            if 100 <= status < 200:  # interim answer (100 Continue, 103 Early Hints): the real one follows
                del self.buf[:end + 4]
                continue
            keep = parts[0] == b"HTTP/1.1"
            length: int | None = None
            chunked = False
            has_length = False
            for line in lines[1:]:
                name, sep, value = line.partition(b":")
                if not sep:
                    raise HttpError("malformed response header")
                name = name.strip().lower()
                if name == b"content-length":
                    v = value.strip()
                    if not v.isdigit() or (length is not None and int(v) != length):
                        raise HttpError("malformed Content-Length")
                    length = int(v)
                    has_length = True
                elif name == b"transfer-encoding":
                    codings = [c.strip() for c in value.lower().split(b",")]
                    if codings[-1] != b"chunked":
                        raise HttpError("unsupported Transfer-Encoding")
                    chunked = True
                elif name == b"connection":
                    tokens = {t.strip() for t in value.lower().split(b",")}
                    if b"close" in tokens:
                        keep = False
                    elif b"keep-alive" in tokens:
                        keep = True
            if chunked:
                length = None
                if has_length or parts[0] != b"HTTP/1.1":
                    keep = False  # both framings, or chunked from HTTP/1.0: read it, then never trust the connection
            elif status in (204, 304):
                length = 0
            if length is not None and length > self.max_body:
                raise HttpError("response body too large")
            if length is None and not chunked:
                keep = False  # the body ends when the connection does
            self.status, self.length, self.chunked, self.keep = status, length, chunked, keep
            self.body_at = self.chunk_at = end + 4
            return True

    def _parse(self, *, eof: bool) -> None:
        if not self.status and not self._head():
            return
        assert self.waiter is not None
        if self.length is not None:
            end = self.body_at + self.length
            if len(self.buf) < end:
                return
            body = bytes(self.buf[self.body_at:end])
            extra = len(self.buf) > end
        elif self.chunked:
            done = self._chunks()
            if done is None:
                return
            body, extra = bytes(self.chunks), len(self.buf) > done
        else:  # close-delimited
            if len(self.buf) - self.body_at > self.max_body:
                raise HttpError("response body too large")
            if not eof:
                return
            body, extra = bytes(self.buf[self.body_at:]), False
        if extra:  # bytes after the answer to a request we did not pipeline: do not trust this connection
            self.keep = False
        status = self.status
        self.buf.clear()
        if self.keep:
            self._reset()
        else:
            self.broken = True
        self.waiter.set_result((status, body))

    def _chunks(self) -> int | None:
        """Decode the chunks that are complete; the end offset of the message once the last one is in."""
        buf = self.buf
        while True:
            eol = buf.find(b"\r\n", self.chunk_at)
            if eol < 0:
                if len(buf) - self.chunk_at > 1024:
                    raise HttpError("malformed chunk size")
                return None
            size_text = bytes(buf[self.chunk_at:eol]).split(b";", 1)[0].rstrip(b" \t")
            if not size_text or len(size_text) > 16 or not _HEX.issuperset(size_text):
                raise HttpError("malformed chunk size")  # hex digits only: no "0x", sign, "_" or spaces
            size = int(size_text, 16)
            if size == 0:  # last chunk, then trailers up to an empty line
                end = buf.find(b"\r\n\r\n", eol)
                if end < 0:
                    if len(buf) - eol > MAX_HEAD:
                        raise HttpError("response trailers too large")
                    return None
                return end + 4
            start = eol + 2
            if len(buf) < start + size + 2:
                if len(self.chunks) + len(buf) - start > self.max_body:
                    raise HttpError("response body too large")
                return None
            if buf[start + size:start + size + 2] != b"\r\n":
                raise HttpError("malformed chunk")
            self.chunks += buf[start:start + size]
            if len(self.chunks) > self.max_body:
                raise HttpError("response body too large")
            self.chunk_at = start + size + 2

    # -- one exchange ---------------------------------------------------------------------------------------------
    def usable(self) -> bool:
        return not (self.closed or self.broken or self.transport is None or self.transport.is_closing())

    def close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.close()


class _Pool:
    __slots__ = ("closed", "idle", "slots")

    def __init__(self, max_connections: int | None) -> None:
        self.idle: collections.deque[_Conn] = collections.deque()
        self.slots = asyncio.Semaphore(max_connections) if max_connections else None
        self.closed = False

    def close(self) -> None:
        self.closed = True
        while self.idle:
            self.idle.popleft().close()


class RpcHttpClient:
    """``POST`` JSON bodies to one plain-``http://`` URL over pooled keep-alive connections (per event loop).

    ``post(body)`` → ``(status, body bytes)``. ``timeout`` bounds each call (waiting for a slot, connect, send,
    the whole answer); a call that times out or fails closes its connection. ``max_connections`` caps the
    connections in use at once per event loop (None: no cap); up to ``max_idle`` idle ones are kept.
    """

    def __init__(self, url: str, *, timeout: float = 30.0, max_connections: int | None = None,
                 max_idle: int = 16, max_body: int = 4 * 1024 * 1024, headers: dict[str, str] | None = None) -> None:
        u = urlsplit(url)
        if u.scheme != "http" or not u.hostname:
            raise ValueError(f"RpcHttpClient needs an http:// URL, got {url!r}")
        self.url, self.timeout = url, timeout
        self.max_idle, self.max_body, self._max = max_idle, max_body, max_connections
        self._host, self._port = u.hostname, u.port or 80
        self._path, self._prefix = u.path or "/", u.path.rstrip("/")
        self._query = "?" + u.query if u.query else ""
        extra = ""
        for name, value in (headers or {}).items():
            if not name or any(c in name + value for c in "\r\n\0") or ":" in name:
                raise ValueError(f"bad header {name!r}")
            extra += f"{name}: {value}\r\n"
        host = u.netloc.rsplit("@", 1)[-1]
        self._rest = (f" HTTP/1.1\r\nHost: {host}\r\nAccept: application/json\r\n{extra}"
                      "Content-Type: application/json\r\nContent-Length: ").encode()
        self._heads: dict[str, bytes] = {}
        self._head = self._head_for("")
        self._pools: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _Pool] = weakref.WeakKeyDictionary()

    def _head_for(self, path: str) -> bytes:
        """The request head up to the ``Content-Length`` value for ``POST`` to ``path`` (below the URL's path)."""
        head = self._heads.get(path)
        if head is None:
            if any(c in path for c in " \r\n\0"):
                raise ValueError(f"bad request path {path!r}")
            target = (self._prefix + path if path else self._path) + self._query
            head = b"POST " + target.encode() + self._rest
            if len(self._heads) < 64:
                self._heads[path] = head
        return head

    def __repr__(self) -> str:
        return f"RpcHttpClient({self.url!r})"

    def _pool(self, loop: asyncio.AbstractEventLoop | None = None) -> _Pool:
        if loop is None:
            loop = asyncio.get_running_loop()  # connections belong to the loop that opened them
        pool = self._pools.get(loop)
        if pool is None:
            pool = self._pools[loop] = _Pool(self._max)
        return pool

    async def post(self, body: bytes, *, idempotent: bool = False, path: str = "") -> tuple[int, bytes]:
        """``idempotent``: the request may be sent again when a reused connection closes before its answer.
        ``path`` is appended to the URL's path (``""``: the URL itself)."""
        head = self._head if not path else self._head_for(path)
        # asked once per call: on Python 3.11 every get_running_loop() is a getpid() system call
        loop = asyncio.get_running_loop()
        pool = self._pool(loop)
        try:
            # no extra task per call, unlike wait_for; timeout_at: asyncio.timeout() would ask for the loop again
            async with asyncio.timeout_at(loop.time() + self.timeout):
                if pool.slots is None:
                    return await self._exchange(pool, head, body, idempotent, loop)
                async with pool.slots:
                    return await self._exchange(pool, head, body, idempotent, loop)
        except TimeoutError:
            raise HttpTimeout(f"POST {self.url}{path}: no answer within {self.timeout} s") from None

    async def _connect(self) -> _Conn:
        loop = asyncio.get_running_loop()
        try:
            _, conn = await loop.create_connection(lambda: _Conn(self.max_body), self._host, self._port)
        except OSError as exc:
            raise HttpError(f"cannot connect to {self._host}:{self._port}: {exc}") from exc
        return conn

    async def _exchange(self, pool: _Pool, head: bytes, body: bytes, idempotent: bool,
                        loop: asyncio.AbstractEventLoop) -> tuple[int, bytes]:
        message = head + str(len(body)).encode() + b"\r\n\r\n" + body
        while True:
            conn = None
            while pool.idle:
                idle = pool.idle.pop()
                if idle.usable() and (idempotent or idle.transport is None or not _readable(idle.transport)):
                    conn = idle
                    break
                idle.close()  # closed by the server while idle: nothing was sent on it
            if conn is None:
                conn = await self._connect()
            assert conn.transport is not None
            waiter: asyncio.Future[tuple[int, bytes]] = loop.create_future()
            conn.waiter = waiter
            conn.answered = False
            conn.transport.write(message)
            if conn.transport.is_closing() and conn.reused and not conn.buf:
                conn.waiter = None  # the write failed at once on a reused connection: nothing was delivered
                conn.close()
                continue
            try:
                result = await waiter
            except _Unanswered:
                conn.close()
                if idempotent and conn.reused:
                    continue  # the server closed a kept-alive connection as we reused it: ask a read again
                raise
            except BaseException:
                conn.close()
                raise
            finally:
                conn.waiter = None
            break
        if conn.usable() and not pool.closed and len(pool.idle) < self.max_idle:
            conn.reused = True
            pool.idle.append(conn)
        else:
            conn.close()
        return result

    async def aclose(self) -> None:
        """Close the pooled connections (a later call opens new ones)."""
        for pool in list(self._pools.values()):
            pool.close()
        self._pools.clear()
