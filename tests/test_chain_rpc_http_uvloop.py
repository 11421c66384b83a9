"""The facilitator's JSON-RPC client on uvloop (``paywire facilitator`` and uvicorn use it when installed)."""

from __future__ import annotations

import asyncio

import pytest

from paywire.transport.rpc_http import RpcHttpClient
from tests.test_chain_rpc_http import raw_server, with_length


def test_the_client_runs_on_uvloop() -> None:
    """uvicorn runs apps on uvloop when it is installed, and ``paywire facilitator`` does too: its transports are
    not ``asyncio.Transport`` subclasses, and the client must work (and reuse its connection) on them."""
    uvloop = pytest.importorskip("uvloop")

    async def main() -> tuple[list[tuple[int, bytes]], dict[str, int]]:
        async def reply(n: int, body: bytes) -> bytes:
            return with_length(body)

        async with raw_server(reply) as (url, stats):
            client = RpcHttpClient(url, timeout=5)
            got = [await client.post(b'{"n":%d}' % i, idempotent=i % 2 == 0) for i in range(3)]
            return got, stats

    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        got, stats = runner.run(main())
    assert got == [(200, b'{"n":%d}' % i) for i in range(3)]
    assert stats == {"connections": 1, "requests": 3}
