"""The proxy's streaming upstream client (:mod:`paywire.proxy.upstream`) against a raw TCP server on port 0 that
answers scripted bytes: framing (content-length, chunked, until close, HEAD, 204), keep-alive reuse only after a
clean exchange, and requests it must refuse to write (header injection, body longer or shorter than declared)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable

import pytest
import pytest_asyncio

from paywire.proxy.upstream import StreamingUpstream, UpstreamError

pytestmark = pytest.mark.asyncio(loop_scope="module")

Script = Callable[[bytes], bytes]


class Server:
    """Reads one request head (and its declared body) per answer; answers ``script(request)``; closes the
    connection after answers whose script says so (``close`` set)."""

    def __init__(self) -> None:
        self.connections = 0
        self.requests: list[bytes] = []
        self.script: Script = lambda req: b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok"
        self.close_after = False

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                body = b""
                for line in head.split(b"\r\n"):
                    if line.lower().startswith(b"content-length:"):
                        body = await reader.readexactly(int(line.split(b":")[1]))
                    if line.lower() == b"transfer-encoding: chunked":
                        body = await reader.readuntil(b"0\r\n\r\n")
                self.requests.append(head + body)
                writer.write(self.script(head + body))
                await writer.drain()
                if self.close_after:
                    break
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()


@pytest_asyncio.fixture(loop_scope="module")
async def server() -> AsyncIterator[tuple[Server, StreamingUpstream]]:
    srv = Server()
    tcp = await asyncio.start_server(srv.handle, "127.0.0.1", 0)
    port = tcp.sockets[0].getsockname()[1]
    client = StreamingUpstream(f"http://127.0.0.1:{port}", read_timeout=30)
    try:
        yield srv, client
    finally:
        await client.aclose()
        tcp.close()
        await tcp.wait_closed()


async def exchange(client: StreamingUpstream, method: str = "GET", headers: list[tuple[bytes, bytes]] | None = None,
                   body: list[bytes] | None = None) -> tuple[int, dict[bytes, bytes], bytes]:
    async def parts() -> AsyncIterator[bytes]:
        for part in body or []:
            yield part

    response = await client.open(method, "/x?y=1", headers or [(b"host", b"up")],
                                 parts() if body is not None else None)
    try:
        data = b"".join([c async for c in response.chunks()])
    finally:
        await response.aclose()
    return response.status, dict(response.headers), data


async def test_keep_alive_reuses_one_connection(server: tuple[Server, StreamingUpstream]) -> None:
    srv, client = server
    answers = [await exchange(client) for _ in range(3)]
    assert answers == [(200, {b"content-length": b"2"}, b"ok")] * 3, answers
    assert srv.connections == 1, f"{srv.connections} connections for three clean keep-alive exchanges"
    assert srv.requests[0].startswith(b"GET /x?y=1 HTTP/1.1\r\nhost: up\r\n\r\n"), srv.requests[0]


async def test_chunked_until_close_head_and_204(server: tuple[Server, StreamingUpstream]) -> None:
    srv, client = server
    srv.script = lambda req: b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n"
    assert await exchange(client) == (200, {b"transfer-encoding": b"chunked"}, b"abcde")
    srv.script = lambda req: b"HTTP/1.1 200 OK\r\ncontent-length: 40\r\nx-price: 30000\r\n\r\n"
    status, headers, body = await exchange(client, "HEAD")
    assert (status, headers[b"x-price"], body) == (200, b"30000", b""), "a HEAD answer has no body"
    srv.script = lambda req: b"HTTP/1.1 204 No Content\r\n\r\n"
    assert await exchange(client) == (204, {}, b"")
    srv.script = lambda req: (b"HTTP/1.1 103 Early Hints\r\nlink: </a.css>\r\n\r\n"
                              b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nfinal")
    assert await exchange(client) == (200, {b"content-length": b"5"}, b"final"), "an interim answer was not skipped"
    before = srv.connections
    srv.script = lambda req: b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok"
    assert (await exchange(client))[2] == b"ok"
    assert srv.connections == before, "the connection was not reused after HEAD/204/chunked answers"
    srv.script, srv.close_after = (lambda req: b"HTTP/1.1 200 OK\r\nconnection: close\r\n\r\nuntil the end"), True
    try:
        assert await exchange(client) == (200, {b"connection": b"close"}, b"until the end")
    finally:
        srv.close_after = False
    srv.script = lambda req: b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok"
    await exchange(client)
    assert srv.connections == before + 1, "a connection the answer closed must not be reused"


async def test_bodies_stream_chunked_or_exactly_as_declared(server: tuple[Server, StreamingUpstream]) -> None:
    srv, client = server
    srv.script = lambda req: b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok"
    await exchange(client, "POST", [(b"host", b"up")], [b"abc", b"", b"def"])
    assert srv.requests[-1].endswith(b"transfer-encoding: chunked\r\n\r\n3\r\nabc\r\n3\r\ndef\r\n0\r\n\r\n"), \
        srv.requests[-1]
    await exchange(client, "POST", [(b"host", b"up"), (b"content-length", b"6")], [b"abc", b"def"])
    assert srv.requests[-1].endswith(b"content-length: 6\r\n\r\nabcdef"), srv.requests[-1]
    for parts in ([b"abc", b"defg"], [b"abc"]):  # more, or less, than declared
        with pytest.raises(UpstreamError, match="Content-Length"):
            await exchange(client, "POST", [(b"host", b"up"), (b"content-length", b"6")], parts)


async def test_refuses_to_write_a_split_head(server: tuple[Server, StreamingUpstream]) -> None:
    srv, client = server
    count = len(srv.requests)
    for headers in ([(b"x-a", b"1\r\nx-injected: yes")], [(b"x a", b"1")], [(b"x-a", b"1\x00")]):
        with pytest.raises(UpstreamError, match="malformed header"):
            await exchange(client, headers=headers)
    with pytest.raises(UpstreamError, match="target"):
        await client.open("GET", "/x HTTP/1.1\r\nx: y", [])
    assert len(srv.requests) == count, "a refused request reached the upstream"


async def test_malformed_or_doubled_answers(server: tuple[Server, StreamingUpstream]) -> None:
    srv, client = server
    srv.script = lambda req: b"NOT HTTP\r\n\r\n"
    with pytest.raises(UpstreamError, match="malformed"):
        await exchange(client)
    before = srv.connections
    srv.script = lambda req: (b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok"
                              b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nextra")
    assert (await exchange(client))[2] == b"ok"
    srv.script = lambda req: b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok"
    assert (await exchange(client))[2] == b"ok", "the second answer leaked into the next exchange"
    assert srv.connections == before + 2, "a connection that sent two answers was reused"
