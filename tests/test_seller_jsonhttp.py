"""The keep-alive HTTP/1.1 client (the seller's facilitator calls) against real sockets: framing, keep-alive, failures.

Raw asyncio servers on 127.0.0.1 answer the way real HTTP servers do (Content-Length, chunked, close-delimited,
a keep-alive connection the server dropped, silence); ``HttpFacilitatorClient`` also talks to our real facilitator.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest

from paywire.facilitator.app import create_app
from paywire.facilitator.client import FacilitatorUnavailable, HttpFacilitatorClient
from paywire.serving import serve_asgi
from paywire.transport.keepalive import HttpError, KeepAliveClient
from tests.helpers import close_devnet, full_facilitator, new_devnet, offer, payer_of, sign

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


@contextlib.asynccontextmanager
async def raw_server(handler: Handler) -> AsyncIterator[str]:
    server = await asyncio.start_server(handler, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.close()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(server.wait_closed(), 2)


async def read_request(reader: asyncio.StreamReader) -> tuple[str, bytes]:
    head = (await reader.readuntil(b"\r\n\r\n")).decode()
    length = next((int(line.split(":")[1]) for line in head.split("\r\n") if line.lower().startswith("content-length")),
                  0)
    return head, await reader.readexactly(length)


async def test_content_length_chunked_and_close_delimited_bodies() -> None:
    seen: list[str] = []

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            try:
                head, body = await read_request(reader)
            except asyncio.IncompleteReadError:
                break
            seen.append(head.split("\r\n")[0])
            path = head.split(" ")[1]
            if path == "/len":
                data = json.dumps({"echo": json.loads(body)}).encode()
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(data) + data)
            elif path == "/chunked":
                writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
                             b"5\r\n{\"a\":\r\n2\r\n1}\r\n0\r\n\r\n")
            else:
                writer.write(b"HTTP/1.1 404 Not Found\r\nConnection: close\r\n\r\n{\"error\":\"nope\"}")
                await writer.drain()
                writer.close()
                return
            await writer.drain()

    async with raw_server(handler) as url:
        c = KeepAliveClient(url)
        assert await c.request("POST", "/len", {"x": 1}) == (200, {"echo": {"x": 1}})
        assert await c.request("GET", "/chunked") == (200, {"a": 1})
        assert await c.request("GET", "/missing") == (404, {"error": "nope"})
        assert await c.request("POST", "/len", [1, 2]) == (200, {"echo": [1, 2]})
        await c.aclose()
    assert seen[:2] == ["POST /len HTTP/1.1", "GET /chunked HTTP/1.1"]


async def test_stale_keep_alive_connection_is_replaced() -> None:
    """The server closes an idle connection after one answer: the next request reconnects once."""
    connections = 0

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal connections
        connections += 1
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}")  # says keep-alive, then hangs up
        await writer.drain()
        writer.close()

    async with raw_server(handler) as url:
        c = KeepAliveClient(url)
        for _ in range(3):
            assert await c.request("POST", "/x", {}) == (200, {})
        await c.aclose()
    assert connections == 3


async def test_request_the_server_received_is_not_sent_again() -> None:
    """The server reads a request on a reused connection and hangs up without answering: that is an error,
    not a silent second POST on a new connection (a /settle must never be sent twice)."""
    received: list[str] = []

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head, _ = await read_request(reader)
        received.append(head.split("\r\n")[0])
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}")
        await writer.drain()
        head, _ = await read_request(reader)  # the second request, on the kept-alive connection
        received.append(head.split("\r\n")[0])
        writer.close()

    async with raw_server(handler) as url:
        c = KeepAliveClient(url)
        assert await c.request("POST", "/verify", {}) == (200, {})
        with pytest.raises(HttpError, match="closed before a response"):
            await c.request("POST", "/settle", {})
        await c.aclose()
    assert received == ["POST /verify HTTP/1.1", "POST /settle HTTP/1.1"]


async def test_silence_refusal_and_garbage_are_errors_not_hangs() -> None:
    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await asyncio.sleep(30)

    async def garbage(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"SMTP ready\r\n\r\n")
        await writer.drain()
        writer.close()

    async with raw_server(silent) as url:
        with pytest.raises(HttpError, match="no answer"):
            await KeepAliveClient(url, timeout=0.5).request("GET", "/")
        with pytest.raises(FacilitatorUnavailable):
            await HttpFacilitatorClient(url, timeout=0.5).supported()
    async with raw_server(garbage) as url:
        with pytest.raises(HttpError, match="not an HTTP"):
            await KeepAliveClient(url).request("GET", "/")
    async with raw_server(garbage) as url:
        pass  # closed: nothing listens on this port any more
    with pytest.raises(HttpError, match="cannot connect"):
        await KeepAliveClient(url).request("GET", "/")


async def test_remote_facilitator_against_ours() -> None:
    """Same answers as the in-process facilitator: /supported, /verify (valid and invalid), bearer auth."""
    net = await new_devnet("embedded")
    try:
        fac = full_facilitator(net)
        async with serve_asgi(create_app(fac, bearer_token="s3cret")) as url:
            remote = HttpFacilitatorClient(url, bearer_token="s3cret")
            kinds = (await remote.supported()).kinds
            assert any(k.network == net.info.network and k.x402_version == 2 for k in kinds)
            req = offer(net)
            p = await sign(req, payer_of(net))
            assert (await remote.verify(p, req)).is_valid
            bad = await remote.verify(p, offer(net, amount=req.amount + 1))
            assert not bad.is_valid and bad.invalid_reason
            with pytest.raises(FacilitatorUnavailable, match="401"):
                await HttpFacilitatorClient(url).verify(p, req)
            await remote.aclose()
    finally:
        await close_devnet(net)
