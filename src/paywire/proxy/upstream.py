"""A streaming HTTP/1.1 client for the proxy's upstream, on asyncio streams, with pooled keep-alive connections
(:class:`paywire.transport.keepalive.Connection`). Request heads are written directly (the values were already
checked by the server that received them, and are checked again here for CR/LF/NUL); answers are parsed by
``httptools`` (llhttp, the C parser uvicorn uses), which costs a tenth of a pure-Python parser per exchange.

``await client.open(method, target, headers, body)`` writes the request head, then the body as the iterator yields
it (each write waits for the socket: backpressure), and returns an :class:`UpstreamResponse` once the answer's head
has arrived; ``response.chunks()`` yields its body as it arrives. A connection goes back to the pool only when its
exchange finished cleanly and the upstream allows keep-alive. A pooled connection the upstream closed while idle is
dropped before use; a write that fails on a reused connection before any body byte was taken from the iterator is
retried on a new connection (the upstream cannot have seen a complete request).

Timeouts: ``connect``, ``write`` (each socket write), ``read`` (each wait for the next bytes, so a long SSE stream
may run for hours as long as it never idles longer than ``read``).
"""

from __future__ import annotations

import asyncio
import collections
import re
import ssl
from collections.abc import AsyncIterator
from urllib.parse import urlsplit

import httptools

from paywire.transport.keepalive import MAX_HEAD, Connection

__all__ = ["StreamingUpstream", "UpstreamError", "UpstreamResponse", "UpstreamTimeout"]

READ = 256 * 1024
_BAD = re.compile(rb"[\r\n\x00]")
_NAMES = re.compile(rb"[!#$%&'*+.^_`|~0-9A-Za-z-]{1,256}(?:\n[!#$%&'*+.^_`|~0-9A-Za-z-]{1,256})*")
_METHOD = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]{1,32}")
_TARGET = re.compile(r"[\x21-\x7e]{1,65536}")
_NO_BODY_STATUS = frozenset({204, 304})


class UpstreamError(Exception):
    """The upstream could not be reached, or broke the exchange."""


class UpstreamTimeout(UpstreamError):
    """The upstream did not connect, accept or answer in time."""


class _Answer:
    """httptools callbacks for one answer: its head, then body parts queued until :meth:`take`."""

    __slots__ = ("body", "complete", "extra", "framed", "head_done", "headers", "interim", "keep_alive", "no_body",
                 "parser")

    def __init__(self, no_body: bool) -> None:
        self.headers: list[tuple[bytes, bytes]] = []
        self.body: list[bytes] = []
        self.head_done = self.complete = self.extra = self.keep_alive = self.framed = self.interim = False
        self.no_body = no_body  # a HEAD answer: complete at the end of its head
        self.parser: httptools.HttpResponseParser | None = None

    def on_message_begin(self) -> None:
        if self.complete:  # bytes after the answer: never reuse this connection
            self.extra = True
            raise UpstreamError("the upstream sent more than one answer")

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name.lower(), value))

    def on_headers_complete(self) -> None:
        status = self.parser.get_status_code() if self.parser is not None else 200
        if 100 <= status < 200 and status != 101:  # an interim answer (103 Early Hints …): skipped, not relayed
            self.headers, self.interim = [], True
            return
        self.head_done = True
        self.keep_alive = self.parser is not None and self.parser.should_keep_alive()  # only valid here
        self.framed = any(k in (b"content-length", b"transfer-encoding") for k, _ in self.headers)

    def on_body(self, data: bytes) -> None:
        if data:
            self.body.append(data)

    def on_message_complete(self) -> None:
        if self.interim:  # the final answer follows
            self.interim = False
            return
        self.complete = True


class UpstreamResponse:
    """The upstream's answer: ``status``, ``headers`` (raw pairs), and :meth:`chunks` to stream the body."""

    def __init__(self, client: StreamingUpstream, conn: Connection, parser: httptools.HttpResponseParser,
                 answer: _Answer, status: int) -> None:
        self.status, self.headers = status, answer.headers
        self._client, self._conn, self._parser, self._answer = client, conn, parser, answer
        self._released = False

    @property
    def _done(self) -> bool:
        return self._answer.complete

    async def chunks(self) -> AsyncIterator[bytes]:
        """The body as it arrives (``UpstreamError`` / ``UpstreamTimeout`` if the upstream breaks off)."""
        answer = self._answer
        while True:
            if answer.body:
                parts, answer.body = answer.body, []
                for part in parts:
                    yield part
            if answer.complete:
                return
            try:
                async with asyncio.timeout(self._client.read_timeout):
                    data = await self._conn.reader.read(READ)
            except TimeoutError:
                raise UpstreamTimeout("the upstream stopped sending") from None
            except OSError as exc:
                raise UpstreamError(f"connection failed: {exc}") from exc
            if not data:
                if not answer.framed:  # an answer delimited by the connection's end: it is complete
                    answer.complete, answer.keep_alive = True, False
                    continue
                raise UpstreamError("the upstream closed the connection mid-answer")
            _feed(self._parser, answer, data)

    async def aclose(self) -> None:
        """Give the connection back to the pool (a finished exchange) or close it."""
        if self._released:
            return
        self._released = True
        a = self._answer
        self._client._release(self._conn, a.complete and a.keep_alive and not a.extra)


def _feed(parser: httptools.HttpResponseParser, answer: _Answer, data: bytes) -> None:
    try:
        parser.feed_data(data)
    except httptools.HttpParserError as exc:
        if answer.extra:
            return
        cause = exc.__context__ if isinstance(exc.__context__, UpstreamError) else None
        raise cause or UpstreamError(f"malformed answer: {exc}") from exc


def _head_bytes(method: str, target: str, headers: list[tuple[bytes, bytes]]) -> bytes:
    """The request head; refuses a malformed method, target or header name, and values with CR, LF or NUL (they
    would split the head)."""
    if not _METHOD.fullmatch(method) or not _TARGET.fullmatch(target):
        raise UpstreamError(f"cannot send this request: bad method or target {method!r} {target[:80]!r}")
    # one pass over all names (a name holding LF would add a line: the count check) and one over all values
    names = b"\n".join([name for name, _ in headers])
    bad_names = bool(headers) and (names.count(b"\n") != len(headers) - 1 or not _NAMES.fullmatch(names))
    if bad_names or _BAD.search(b"".join([value for _, value in headers])):
        raise UpstreamError("cannot send this request: a malformed header (name, or CR/LF/NUL in a value)")
    lines = [f"{method} {target} HTTP/1.1".encode("latin-1")]
    lines += [name + b": " + value for name, value in headers]
    lines.append(b"\r\n")
    return b"\r\n".join(lines)


class StreamingUpstream:
    """Streaming HTTP/1.1 to one origin (``base_url``: ``http(s)://host:port``)."""

    def __init__(self, base_url: str, *, connect_timeout: float = 10.0, read_timeout: float = 300.0,
                 write_timeout: float = 300.0, max_connections: int = 256, max_idle: int = 64) -> None:
        u = urlsplit(base_url)
        if u.scheme not in ("http", "https") or not u.hostname:
            raise ValueError(f"not an http(s) URL: {base_url!r}")
        self._host, self._tls = u.hostname, u.scheme == "https"
        self._port = u.port or (443 if self._tls else 80)
        self._ssl = ssl.create_default_context() if self._tls else None
        self.connect_timeout, self.read_timeout, self.write_timeout = connect_timeout, read_timeout, write_timeout
        self.max_idle = max_idle
        self._idle: collections.deque[Connection] = collections.deque()
        self._slots = asyncio.Semaphore(max_connections)
        self._closed = False

    async def _connect(self) -> Connection:
        try:
            async with asyncio.timeout(self.connect_timeout):
                reader, writer = await asyncio.open_connection(self._host, self._port, ssl=self._ssl, limit=MAX_HEAD)
        except TimeoutError:
            raise UpstreamTimeout(f"no connection to {self._host}:{self._port} in time") from None
        except OSError as exc:
            raise UpstreamError(f"cannot connect to {self._host}:{self._port}: {exc}") from exc
        return Connection(reader, writer)

    def _take_idle(self) -> Connection | None:
        while self._idle:
            conn = self._idle.pop()
            if conn.usable():
                return conn
            conn.close()
        return None

    async def _write(self, conn: Connection, data: bytes) -> None:
        writer = conn.writer
        writer.write(data)
        if not writer.transport.get_write_buffer_size() and not writer.is_closing():
            return  # all taken by the socket: nothing to wait for (the common case for a request head)
        try:
            async with asyncio.timeout(self.write_timeout):
                await conn.writer.drain()
        except TimeoutError:
            raise UpstreamTimeout("the upstream stopped reading the request") from None

    async def open(self, method: str, target: str, headers: list[tuple[bytes, bytes]],
                   body: AsyncIterator[bytes] | None = None) -> UpstreamResponse:
        """Send the request (streaming ``body``) and wait for the answer's head."""
        length: int | None = None
        if body is not None:
            declared = [v for k, v in headers if k.lower() == b"content-length"]
            if declared:
                try:
                    length = int(declared[0])
                except ValueError:
                    raise UpstreamError("cannot send this request: bad Content-Length") from None
            else:
                headers = [*headers, (b"transfer-encoding", b"chunked")]
        head = _head_bytes(method, target, headers)
        await self._slots.acquire()
        conn: Connection | None = None
        try:
            while True:  # a bodiless request is one write
                conn = self._take_idle() or await self._connect()
                try:
                    await self._write(conn, head)
                    break
                except OSError as exc:
                    conn.close()
                    if not conn.reused:
                        raise UpstreamError(f"connection failed: {exc}") from exc
            if body is not None:
                await self._send_body(conn, body, length)
            return await self._head(conn, method == "HEAD")
        except OSError as exc:
            if conn is not None:
                conn.close()
            self._slots.release()
            raise UpstreamError(f"connection failed: {exc}") from exc
        except BaseException:
            if conn is not None:
                conn.close()
            self._slots.release()
            raise

    async def _send_body(self, conn: Connection, body: AsyncIterator[bytes], length: int | None) -> None:
        """The body as it comes: raw up to its ``Content-Length`` (exactly), else chunked."""
        sent = 0
        async for part in body:
            if not part:
                continue
            sent += len(part)
            if length is None:
                await self._write(conn, b"%x\r\n%b\r\n" % (len(part), part))
            elif sent > length:
                raise UpstreamError("cannot send this request: more body than its Content-Length")
            else:
                await self._write(conn, part)
        if length is None:
            await self._write(conn, b"0\r\n\r\n")
        elif sent != length:
            raise UpstreamError("cannot send this request: less body than its Content-Length")

    async def _head(self, conn: Connection, no_body: bool) -> UpstreamResponse:
        answer = _Answer(no_body)
        parser = answer.parser = httptools.HttpResponseParser(answer)
        size = 0
        while not answer.head_done:
            try:
                async with asyncio.timeout(self.read_timeout):
                    data = await conn.reader.read(READ)
            except TimeoutError:
                raise UpstreamTimeout("the upstream did not answer in time") from None
            if not data:
                raise UpstreamError("the upstream closed the connection without answering")
            size += len(data)
            _feed(parser, answer, data)
            if not answer.head_done and size > MAX_HEAD:
                raise UpstreamError("the upstream's answer head is too large")
        status = parser.get_status_code()
        if status == 101:  # the proxy forwards no Upgrade: a switch of protocols is not something it can relay
            raise UpstreamError("the upstream switched protocols")
        if no_body or status in _NO_BODY_STATUS:
            answer.complete, answer.body = True, []
        return UpstreamResponse(self, conn, parser, answer, status)

    def _release(self, conn: Connection, reusable: bool) -> None:
        self._slots.release()
        if reusable and not self._closed and len(self._idle) < self.max_idle:
            conn.reused = True
            self._idle.append(conn)
        else:
            conn.close()

    async def aclose(self) -> None:
        self._closed = True
        while self._idle:
            self._idle.popleft().close()
