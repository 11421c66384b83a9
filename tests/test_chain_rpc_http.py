"""The facilitator's lean JSON-RPC HTTP client (``paywire.transport.rpc_http``) against raw sockets: every framing a
node or a proxy in front of it may answer with, keep-alive reuse, dropped connections, and bounds.

Raw asyncio servers on 127.0.0.1 write the bytes, so each case is exactly the wire a real server sends.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest

from paywire.transport.keepalive import HttpError, HttpTimeout
from paywire.transport.rpc_http import RpcHttpClient

pytestmark = pytest.mark.asyncio(loop_scope="module")

Reply = Callable[[int, bytes], Awaitable[bytes | None]]


@contextlib.asynccontextmanager
async def raw_server(reply: Reply) -> AsyncIterator[tuple[str, dict[str, int]]]:
    """A server that answers each request with ``await reply(n, body)`` bytes (None: close without answer);
    ``stats`` counts connections and requests."""
    stats = {"connections": 0, "requests": 0}

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        stats["connections"] += 1
        try:
            while True:
                try:
                    head = await reader.readuntil(b"\r\n\r\n")
                except (asyncio.IncompleteReadError, ConnectionError):
                    return
                length = next(int(line.split(b":")[1]) for line in head.split(b"\r\n")
                              if line.lower().startswith(b"content-length"))
                body = await reader.readexactly(length)
                stats["requests"] += 1
                out = await reply(stats["requests"], body)
                if out is None:
                    return
                writer.write(out)
                await writer.drain()
                framed = b"content-length" in out.lower() or b"chunked" in out.lower() or b" 204 " in out[:16]
                if b"connection: close" in out.lower() or not framed:
                    return
        finally:
            writer.close()

    server = await asyncio.start_server(handler, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}/rpc", stats
    finally:
        server.close()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(server.wait_closed(), 2)


def with_length(body: bytes, extra: bytes = b"") -> bytes:
    return b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n" + extra \
        + b"Content-Length: %d\r\n\r\n" % len(body) + body


async def test_framings_all_give_the_same_body() -> None:
    """Content-Length, chunked (with extensions and trailers), a 100 Continue first, close-delimited, HTTP/1.0,
    a 204: each answer is read whole, and a keep-alive connection is reused while closing ones are not."""
    answers = [
        with_length(b'{"a":1}'),
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3;ext=1\r\n{\"a\r\n4\r\n\":1}\r\n0\r\nX-T: 1\r\n\r\n",
        b"HTTP/1.1 100 Continue\r\n\r\n" + with_length(b'{"a":1}'),
        b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n\r\n" + b'{"a":1}',  # ends when the server closes
        b"HTTP/1.0 200 OK\r\nContent-Length: 7\r\n\r\n" + b'{"a":1}',  # HTTP/1.0: not kept alive
        with_length(b'{"a":1}', b"Connection: close\r\n"),
        b"HTTP/1.1 204 No Content\r\n\r\n",
        with_length(b'{"a":1}'),
    ]

    async def reply(n: int, body: bytes) -> bytes:
        assert body == b'{"q":%d}' % n
        return answers[n - 1]

    async with raw_server(reply) as (url, stats):
        client = RpcHttpClient(url, timeout=5, max_connections=1)
        try:
            got = [await client.post(b'{"q":%d}' % n) for n in range(1, len(answers) + 1)]
        finally:
            await client.aclose()
    assert got[:6] == [(200, b'{"a":1}')] * 6
    assert got[6] == (204, b"")
    assert got[7] == (200, b'{"a":1}')
    # requests 1-3 share a connection; 4, 5 and 6 each close theirs; 7 and 8 share the last one
    assert stats == {"connections": 4, "requests": 8}


async def test_a_connection_the_server_dropped_while_idle_is_not_used() -> None:
    """The server closes a kept-alive connection after answering: the next request goes on a new connection
    and is sent exactly once."""
    async def reply(n: int, body: bytes) -> bytes | None:
        return with_length(b'{"n":%d}' % n)

    async with raw_server(reply) as (url, stats):
        client = RpcHttpClient(url, timeout=5)
        try:
            assert await client.post(b"{}") == (200, b'{"n":1}')
            pool = next(iter(client._pools.values()))
            conn = pool.idle[0]
            assert conn.transport is not None
            conn.transport.abort()  # as if the server had closed it; the pool has not noticed yet
            await asyncio.sleep(0)
            assert await client.post(b"{}") == (200, b'{"n":2}')
        finally:
            await client.aclose()
    assert stats["requests"] == 2


async def test_a_lost_answer_is_an_error_never_a_second_send() -> None:
    """The server reads the request and closes without answering: ``HttpError``, and the request was sent once."""
    async def reply(n: int, body: bytes) -> bytes | None:
        return None

    async with raw_server(reply) as (url, stats):
        client = RpcHttpClient(url, timeout=5)
        try:
            with pytest.raises(HttpError, match=r"closed|failed"):
                await client.post(b"{}")
        finally:
            await client.aclose()
    assert stats["requests"] == 1


async def test_a_read_is_asked_again_when_a_reused_connection_closes_unanswered() -> None:
    """The server closes a kept-alive connection just as the next request arrives (no byte of an answer): an
    idempotent read is sent again on a new connection; anything else is an error, sent exactly once."""
    async def reply(n: int, body: bytes) -> bytes | None:
        return None if body == b"drop" else with_length(b'{"n":%d}' % n)

    for idempotent, expected in ((True, (200, b'{"n":3}')), (False, None)):
        async with raw_server(reply) as (url, stats):
            client = RpcHttpClient(url, timeout=5, max_connections=1)
            try:
                assert await client.post(b"{}") == (200, b'{"n":1}')
                pool = next(iter(client._pools.values()))
                pool.idle[0].transport.write = _rewriting(pool.idle[0].transport.write)  # type: ignore[union-attr]
                if idempotent:
                    assert await client.post(b"{}", idempotent=True) == expected
                else:
                    with pytest.raises(HttpError, match=r"closed|failed"):
                        await client.post(b"{}")
            finally:
                await client.aclose()
        assert stats["requests"] == (3 if idempotent else 2)


def _rewriting(write: Callable[[bytes], None]) -> Callable[[bytes], None]:
    """The next request on this connection is seen by the server as one it drops without answering."""
    def rewrite(data: bytes) -> None:
        write(data.replace(b"Content-Length: 2\r\n\r\n{}", b"Content-Length: 4\r\n\r\ndrop"))
    return rewrite


async def test_a_send_never_goes_on_a_connection_the_server_just_half_closed() -> None:
    """The server answers and shuts its side at once; the EOF is in the socket but the event loop has not seen
    it when the next (non-idempotent) request is sent: it goes on a new connection and is answered."""
    requests = 0

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal requests
        try:
            await reader.readuntil(b"\r\n\r\n")
            await reader.readexactly(2)
            requests += 1
            writer.write(with_length(b'{"n":%d}' % requests))
            await writer.drain()
            writer.get_extra_info("socket").shutdown(socket.SHUT_WR)
            await reader.read()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(handler, "127.0.0.1", 0)
    client = RpcHttpClient(f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}/", timeout=5)
    try:
        assert await client.post(b"{}") == (200, b'{"n":1}')
        assert await client.post(b"{}") == (200, b'{"n":2}')
    finally:
        await client.aclose()
        server.close()
    assert requests == 2


async def test_a_late_answer_is_never_read_as_the_next_requests_answer() -> None:
    """Request 1 times out; the server answers it afterwards. Request 2 (same pool, one connection allowed) gets
    its own answer, never request 1's — and so does a request whose task was cancelled while waiting."""
    late = asyncio.Event()
    got = asyncio.Event()

    async def reply(n: int, body: bytes) -> bytes:
        if body == b'"slow"':
            got.set()
            await late.wait()
        return with_length(b'{"answer_to":%s}' % body)

    async with raw_server(reply) as (url, stats):
        client = RpcHttpClient(url, timeout=0.3, max_connections=1)
        try:
            with pytest.raises(HttpTimeout):
                await client.post(b'"slow"')
            client.timeout = 30  # only the slow request was meant to time out
            late.set()  # the server now writes the answer to the timed-out request
            assert await client.post(b'"next"') == (200, b'{"answer_to":"next"}')
            late.clear()
            got.clear()
            task = asyncio.ensure_future(client.post(b'"slow"'))
            await got.wait()
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            late.set()
            assert await client.post(b'"after"') == (200, b'{"answer_to":"after"}')
        finally:
            late.set()
            await client.aclose()
    assert stats["connections"] == 3  # each abandoned connection was closed, none reused


@pytest.mark.parametrize("answer, match", [
    (b"SMTP ready\r\n\r\n", "not an HTTP"),
    (b"HTTP/1.1 200 OK\r\nX-Big: " + b"a" * (70 * 1024) + b"\r\n\r\n", "head too large"),
    (with_length(b"x" * 2048), "body too large"),
    (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n" + b"401\r\n" + b"x" * 1025 + b"\r\n0\r\n\r\n",
     "body too large"),
    (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", "malformed chunk"),
    (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0x2\r\n{}\r\n0\r\n\r\n", "malformed chunk"),
    (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n+2\r\n{}\r\n0\r\n\r\n", "malformed chunk"),
    (b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello", "Content-Length"),
    (b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 10\r\n\r\nshort", "middle of a response"),
])
async def test_malformed_or_oversized_answers_are_errors(answer: bytes, match: str) -> None:
    async def reply(n: int, body: bytes) -> bytes:
        return answer

    async with raw_server(reply) as (url, _):
        client = RpcHttpClient(url, timeout=5, max_body=1024)
        try:
            with pytest.raises(HttpError, match=match):
                await client.post(b"{}")
        finally:
            await client.aclose()


@pytest.mark.parametrize("answer", [
    b"HTTP/1.1 200 OK\r\nContent-Length: 99\r\nTransfer-Encoding: chunked\r\n\r\n2\r\n{}\r\n0\r\n\r\n",
    b"HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nTransfer-Encoding: chunked\r\n\r\n2\r\n{}\r\n0\r\n\r\n",
])
async def test_ambiguous_framing_is_read_once_and_the_connection_not_reused(answer: bytes) -> None:
    """Both Content-Length and chunked, or chunked from an HTTP/1.0 peer (RFC 9112 6.1/6.3: faulty framing): the
    chunked body is the answer, and the connection is closed after it rather than trusted for the next call."""
    async def reply(n: int, body: bytes) -> bytes:
        return answer

    async with raw_server(reply) as (url, stats):
        client = RpcHttpClient(url, timeout=5, max_connections=1)
        try:
            assert [await client.post(b"{}") for _ in range(2)] == [(200, b"{}")] * 2
        finally:
            await client.aclose()
    assert stats == {"connections": 2, "requests": 2}


async def test_silence_times_out_and_the_connection_is_dropped() -> None:
    hang = asyncio.Event()

    async def reply(n: int, body: bytes) -> bytes | None:
        if n == 1:
            await hang.wait()
            return None
        return with_length(b"{}")

    async with raw_server(reply) as (url, stats):
        client = RpcHttpClient(url, timeout=0.3)
        try:
            with pytest.raises(HttpTimeout):
                await client.post(b"{}")
            client.timeout = 30  # only the silent request was meant to time out
            assert await client.post(b"{}") == (200, b"{}")
        finally:
            hang.set()
            await client.aclose()
    assert stats["connections"] == 2


async def test_only_plain_http_urls() -> None:
    with pytest.raises(ValueError):
        RpcHttpClient("https://node.example")
    with pytest.raises(HttpError, match="cannot connect"):
        server = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        server.close()
        await server.wait_closed()
        await RpcHttpClient(f"http://127.0.0.1:{port}", timeout=2).post(b"{}")


async def test_an_answer_with_another_requests_id_is_never_taken_as_this_calls_error() -> None:
    """A JSON-RPC error that names another request's id (a desynchronised connection or a broken proxy) is a
    ``ChainError`` about the mismatch, not this call's revert or rejection."""
    from paywire.chain.keepalive import KeepAliveTransport
    from paywire.errors import ChainError, ChainRevert

    async def reply(n: int, body: bytes) -> bytes:
        return with_length(b'{"jsonrpc":"2.0","id":999,"error":{"code":3,"message":"execution reverted","data":"0x"}}')

    async with raw_server(reply) as (url, _):
        transport = KeepAliveTransport(url, timeout=5)
        try:
            with pytest.raises(ChainError, match="does not match") as caught:
                await transport.request("eth_estimateGas", [{}])
            assert not isinstance(caught.value, ChainRevert)
        finally:
            await transport.aclose()



async def test_paths_and_fixed_headers_on_the_wire() -> None:
    """``post(path=...)`` targets a path below the URL's (the facilitator's ``/verify``, ``/settle``) on the same
    pooled connection; the fixed headers (bearer token, ``Prefer``) go with every request; a header or path that
    could split the request is refused before anything is sent."""
    heads: list[bytes] = []

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(asyncio.IncompleteReadError, ConnectionError):
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                heads.append(head)
                length = next(int(x.split(b":")[1]) for x in head.split(b"\r\n") if x.lower().startswith(b"content-length"))
                await reader.readexactly(length)
                writer.write(with_length(b'{"ok":true}'))
                await writer.drain()
        writer.close()

    server = await asyncio.start_server(handler, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    client = RpcHttpClient(f"http://127.0.0.1:{port}/fac/", headers={"Authorization": "Bearer t0k", "Prefer": "wait=5"})
    try:
        assert await client.post(b"{}", path="/verify") == (200, b'{"ok":true}')
        assert await client.post(b"{}", path="/settle") == (200, b'{"ok":true}')
        assert await client.post(b"{}") == (200, b'{"ok":true}')
        with pytest.raises(ValueError):
            await client.post(b"{}", path="/x HTTP/1.1\r\nX-Evil: 1")
        with pytest.raises(ValueError):
            RpcHttpClient("http://127.0.0.1:1/", headers={"X": "a\r\nX-Evil: 1"})
    finally:
        await client.aclose()
        server.close()
    assert [h.split(b"\r\n")[0] for h in heads] == [b"POST /fac/verify HTTP/1.1", b"POST /fac/settle HTTP/1.1",
                                                    b"POST /fac/ HTTP/1.1"]
    assert all(b"\r\nAuthorization: Bearer t0k\r\n" in h and b"\r\nPrefer: wait=5\r\n" in h for h in heads)
    assert len(heads) == 3
