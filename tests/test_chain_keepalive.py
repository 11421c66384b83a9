"""The facilitator's lean JSON-RPC transport (``KeepAliveTransport``): same answers and the same error model
as ``HttpTransport`` — reverts, node errors, timeouts, garbage — plus connection reuse and recovery."""

from __future__ import annotations

import asyncio

import pytest
import pytest_asyncio
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from paywire.chain import EmbeddedChain, RpcChain, RpcError
from paywire.chain.keepalive import KeepAliveTransport
from paywire.chain.tx import TxSender
from paywire.errors import ChainError, ChainRevert
from paywire.serving import serve_asgi
from tests.test_facilitator_helpers import RpcProxy

pytestmark = pytest.mark.asyncio(loop_scope="module")


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def node():
    n = EmbeddedChain()
    yield n
    await n.aclose()


@pytest_asyncio.fixture(loop_scope="module")
async def proxied(node):
    proxy = RpcProxy(node, hang=4.0)
    async with serve_asgi(proxy.app()) as url:
        transport = KeepAliveTransport(url, timeout=30.0, max_connections=4)  # only hang modes may time out
        yield proxy, transport, url
        await transport.aclose()


async def test_calls_transactions_and_connection_reuse(node, proxied):
    _, transport, _ = proxied
    chain = RpcChain(transport)
    assert await chain.chain_id() == 31337
    sender = TxSender(chain, node.private_keys[3])
    hashes = await asyncio.gather(*(sender.send(node.accounts[1], value=1) for _ in range(12)))
    receipts = await asyncio.gather(*(chain.wait_for_receipt(h) for h in hashes))
    assert all(r.status == 1 for r in receipts)
    pool = next(iter(transport.http._pools.values()))
    assert len(pool.idle) <= 4  # at most max_connections were ever opened, and they are kept


async def test_error_model_matches_http_transport(node, proxied):
    proxy, transport, url = proxied
    chain = RpcChain(transport)
    with pytest.raises(RpcError) as info:
        await chain.request("eth_noSuchMethod", [])
    assert info.value.code == -32601
    with pytest.raises(ChainRevert):  # initcode PUSH1 0 PUSH1 0 REVERT
        await chain.estimate_gas({"from": node.accounts[0], "data": bytes.fromhex("60006000fd")})
    proxy.modes["eth_blockNumber"] = "garbage"
    with pytest.raises(ChainError, match="non-JSON"):
        await chain.block_number()
    proxy.modes["eth_blockNumber"] = "forward_garbage"
    with pytest.raises(ChainError, match="does not match request id"):
        await chain.block_number()
    proxy.modes.clear()
    short = RpcChain(KeepAliveTransport(url, timeout=2.0))  # under the proxy's 4 s hang; normal calls get 30 s
    try:
        assert await short.block_number() >= 0
        proxy.modes["eth_blockNumber"] = "timeout"
        with pytest.raises(ChainError, match="no answer"):
            await short.block_number()
        proxy.modes.clear()
        assert await short.block_number() >= 0  # the connection that timed out was dropped, not reused
    finally:
        await short.aclose()


async def test_chunked_answers_and_servers_that_close_connections():
    """Chunked bodies are read; a server that closes every connection after answering is handled."""
    count = {"n": 0}

    async def rpc(request: Request) -> Response:
        body = await request.json()
        count["n"] += 1
        payload = f'{{"jsonrpc":"2.0","id":{body["id"]},"result":"{hex(count["n"])}"}}'.encode()
        if count["n"] % 2:
            async def chunks():
                yield payload[:7]
                yield payload[7:]
            return StreamingResponse(chunks(), media_type="application/json")
        return Response(payload, media_type="application/json", headers={"connection": "close"})

    async with serve_asgi(Starlette(routes=[Route("/", rpc, methods=["POST"])])) as url:
        t = KeepAliveTransport(url + "/", timeout=30)
        try:
            assert [await t.request("x", []) for _ in range(4)] == ["0x1", "0x2", "0x3", "0x4"]
        finally:
            await t.aclose()
    with pytest.raises(ChainError, match="unreachable"):
        await KeepAliveTransport(url, timeout=1).request("x", [])  # server gone
    with pytest.raises(ValueError):
        KeepAliveTransport("https://example.com")


async def test_a_broadcast_does_not_queue_behind_slow_reads():
    """Every pooled connection is busy with a read the node has not answered yet: a key's broadcast
    (``eth_sendRawTransaction``, which holds up that key's next transaction) still gets through at once."""
    release = asyncio.Event()
    reads_waiting = {"n": 0}
    all_waiting = asyncio.Event()

    async def rpc(request: Request) -> Response:
        body = await request.json()
        if body["method"] == "eth_call":
            reads_waiting["n"] += 1
            if reads_waiting["n"] == 2:
                all_waiting.set()
            await release.wait()
        return Response(f'{{"jsonrpc":"2.0","id":{body["id"]},"result":"0x01"}}'.encode(),
                        media_type="application/json")

    async with serve_asgi(Starlette(routes=[Route("/", rpc, methods=["POST"])])) as url:
        t = KeepAliveTransport(url, timeout=5, max_connections=2)
        try:
            reads = [asyncio.ensure_future(t.request("eth_call", [])) for _ in range(3)]
            await all_waiting.wait()  # both connections hold an unanswered read; the third read is queued
            sent = await t.request("eth_sendRawTransaction", ["0x02"])
            assert sent == "0x01", "the broadcast got no answer while reads held every connection"
            assert not any(r.done() for r in reads), "the reads were answered before they were released"
            release.set()
            assert await asyncio.gather(*reads) == ["0x01"] * 3, "the reads did not finish after release"
        finally:
            release.set()
            await t.aclose()


async def test_request_bodies_are_what_json_dumps_writes() -> None:
    """The JSON-RPC body built without the encoder (plain-string parameters) is byte for byte ``json.dumps``
    with compact separators, and anything else still goes through the encoder."""
    import json

    from paywire.chain.keepalive import request_body

    cases: list[list[object]] = [
        [], ["0x" + "ab" * 500], ["0xAbC", "latest"], ["latest", False], [{"a": 1}], ["é"], ['a"b'], [""],
        [{"from": "0xaa", "to": "0xbb", "data": "0x" + "00" * 300, "value": "0x0"}, "latest"], [{"": "x"}],
        [{"a_b": "c_d"}], ["_"], [None], [[1, 2]], ["0x1\n"], [{"k": "v\u2028"}], [{"k": "v"}, {"x": "y\\"}],
    ]
    for params in cases:
        for method in ("eth_call", 'we"ird', "e_x"):
            want = json.dumps({"jsonrpc": "2.0", "id": 7, "method": method, "params": params}, separators=(",", ":"))
            assert request_body(7, method, params) == want.encode()
