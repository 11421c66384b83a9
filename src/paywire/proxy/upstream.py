"""A streaming HTTP/1.1 client for the proxy's upstream, on ``h11`` and asyncio streams, with pooled keep-alive
connections (the same design as :mod:`paywire.transport.keepalive`, which holds whole bodies; this one streams).

``await client.open(method, target, headers, body)`` writes the request head, then the body as the iterator yields
it (each write waits for the socket: backpressure), and returns an :class:`UpstreamResponse` once the answer's head
has arrived; ``response.chunks()`` yields its body as it arrives. A connection goes back to the pool only when its
exchange finished cleanly. A pooled connection the upstream closed while idle is dropped before use; a write that
fails on a reused connection before any body byte was taken from the iterator is retried on a new connection
(the upstream cannot have seen a complete request).

Timeouts: ``connect``, ``write`` (each socket write), ``read`` (each wait for the next bytes, so a long SSE stream
may run for hours as long as it never idles longer than ``read``).
"""

from __future__ import annotations

import asyncio
import collections
import ssl
from collections.abc import AsyncIterator
from urllib.parse import urlsplit

import h11

from paywire.transport.keepalive import MAX_HEAD, Connection

__all__ = ["StreamingUpstream", "UpstreamError", "UpstreamResponse", "UpstreamTimeout"]

READ = 256 * 1024


class UpstreamError(Exception):
    """The upstream could not be reached, or broke the exchange."""


class UpstreamTimeout(UpstreamError):
    """The upstream did not connect, accept or answer in time."""


class UpstreamResponse:
    """The upstream's answer: ``status``, ``headers`` (raw pairs), and :meth:`chunks` to stream the body."""

    def __init__(self, client: StreamingUpstream, conn: Connection, status: int,
                 headers: list[tuple[bytes, bytes]], pending: list[bytes], done: bool) -> None:
        self.status, self.headers = status, headers
        self._client, self._conn, self._pending, self._done = client, conn, pending, done
        self._released = False

    async def chunks(self) -> AsyncIterator[bytes]:
        """The body as it arrives (``UpstreamError`` / ``UpstreamTimeout`` if the upstream breaks off)."""
        for part in self._pending:
            yield part
        self._pending = []
        h, reader = self._conn.h11, self._conn.reader
        while not self._done:
            try:
                async with asyncio.timeout(self._client.read_timeout):
                    data = await reader.read(READ)
            except TimeoutError:
                raise UpstreamTimeout("the upstream stopped sending") from None
            except OSError as exc:
                raise UpstreamError(f"connection failed: {exc}") from exc
            try:
                h.receive_data(data)
                while (event := h.next_event()) is not h11.NEED_DATA:
                    if isinstance(event, h11.Data):
                        yield bytes(event.data)
                    elif isinstance(event, h11.EndOfMessage):
                        self._done = True
                        break
                    elif isinstance(event, h11.ConnectionClosed):
                        raise UpstreamError("the upstream closed the connection mid-answer")
            except h11.RemoteProtocolError as exc:
                raise UpstreamError(f"malformed answer: {exc}") from exc

    async def aclose(self) -> None:
        """Give the connection back to the pool (a finished exchange) or close it."""
        if self._released:
            return
        self._released = True
        self._client._release(self._conn, self._done)


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
        conn.writer.write(data)
        try:
            async with asyncio.timeout(self.write_timeout):
                await conn.writer.drain()
        except TimeoutError:
            raise UpstreamTimeout("the upstream stopped reading the request") from None

    async def open(self, method: str, target: str, headers: list[tuple[bytes, bytes]],
                   body: AsyncIterator[bytes] | None = None) -> UpstreamResponse:
        """Send the request (streaming ``body``) and wait for the answer's head."""
        if body is not None and not any(k == b"content-length" for k, _ in headers):
            headers = [*headers, (b"transfer-encoding", b"chunked")]
        event = h11.Request(method=method, target=target, headers=headers)
        await self._slots.acquire()
        conn: Connection | None = None
        try:
            while True:
                conn = self._take_idle() or await self._connect()
                head = conn.h11.send(event) or b""
                try:
                    await self._write(conn, head)
                    break
                except OSError as exc:
                    conn.close()
                    if not conn.reused:
                        raise UpstreamError(f"connection failed: {exc}") from exc
            if body is not None:
                async for part in body:
                    if part:
                        await self._write(conn, conn.h11.send(h11.Data(data=part)) or b"")
            await self._write(conn, conn.h11.send(h11.EndOfMessage()) or b"")
            return await self._head(conn)
        except OSError as exc:
            if conn is not None:
                conn.close()
            self._slots.release()
            raise UpstreamError(f"connection failed: {exc}") from exc
        except h11.LocalProtocolError as exc:
            if conn is not None:
                conn.close()
            self._slots.release()
            raise UpstreamError(f"cannot send this request: {exc}") from exc
        except BaseException:
            if conn is not None:
                conn.close()
            self._slots.release()
            raise

    async def _head(self, conn: Connection) -> UpstreamResponse:
        h, pending = conn.h11, []
        while True:
            try:
                async with asyncio.timeout(self.read_timeout):
                    data = await conn.reader.read(READ)
            except TimeoutError:
                raise UpstreamTimeout("the upstream did not answer in time") from None
            if not data and h.their_state is h11.SEND_RESPONSE:
                raise UpstreamError("the upstream closed the connection without answering")
            try:
                h.receive_data(data)
                response: h11.Response | None = None
                done = False
                while (ev := h.next_event()) is not h11.NEED_DATA:
                    if isinstance(ev, h11.Response):
                        response = ev
                    elif isinstance(ev, h11.Data):
                        pending.append(bytes(ev.data))
                    elif isinstance(ev, h11.EndOfMessage):
                        done = True
                        break
                    elif isinstance(ev, h11.ConnectionClosed):
                        raise UpstreamError("the upstream closed the connection without answering")
            except h11.RemoteProtocolError as exc:
                raise UpstreamError(f"malformed answer: {exc}") from exc
            if response is not None:
                return UpstreamResponse(self, conn, response.status_code, list(response.headers.raw_items()),
                                        pending, done)

    def _release(self, conn: Connection, done: bool) -> None:
        self._slots.release()
        h = conn.h11
        if done and h.our_state is h11.DONE and h.their_state is h11.DONE and not self._closed \
                and len(self._idle) < self.max_idle:
            h.start_next_cycle()
            conn.reused = True
            self._idle.append(conn)
        else:
            conn.close()

    async def aclose(self) -> None:
        self._closed = True
        while self._idle:
            self._idle.popleft().close()
