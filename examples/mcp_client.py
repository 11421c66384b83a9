"""An agent's side of paid MCP tools: a plain MCP client session that pays within a spend policy.

Start the example server's devnet and facilitator (see examples/mcp_server.py), then::

    PAYWIRE_FACILITATOR=http://127.0.0.1:4020 python examples/mcp_client.py            # spawns the server (stdio)
    python examples/mcp_client.py --url http://127.0.0.1:8000/mcp                       # or a running HTTP one

It pays for ``weather`` from the devnet's payer (at most $0.10 a call, $1 a day), prints the answer and the
receipt as one JSON line. ``agent_tool`` is the one function an agent framework needs: it turns a paid MCP tool
into a plain async callable returning text (register it the way the framework registers Python tools).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

from mcp import ClientSession, StdioServerParameters
from mcp.client.stdio import stdio_client
from mcp.client.streamable_http import streamable_http_client

from paywire.client import Policy
from paywire.devnet import DevnetInfo
from paywire.mcp import PayingSession
from paywire.wallet import Wallet

HERE = Path(__file__).resolve().parent


def agent_tool(paying: PayingSession, name: str) -> Callable[..., Awaitable[str]]:
    """Tool ``name`` as an async function of keyword arguments returning its text (paid when it asks)."""

    async def call(**arguments: Any) -> str:
        result = await paying.call_tool(name, arguments)
        text = "\n".join(getattr(block, "text", "") for block in result.content)
        return f"error: {text}" if result.isError else text

    call.__name__ = name
    return call


@contextlib.asynccontextmanager
async def connect(url: str | None) -> AsyncIterator[ClientSession]:
    """An initialized session: to ``url`` over streamable HTTP, else to examples/mcp_server.py over stdio."""
    async with contextlib.AsyncExitStack() as stack:
        if url:
            read, write, _ = await stack.enter_async_context(streamable_http_client(url))
        else:
            params = StdioServerParameters(command=sys.executable, args=[str(HERE / "mcp_server.py")],
                                           env=dict(os.environ))
            read, write = await stack.enter_async_context(stdio_client(params))
        session = await stack.enter_async_context(ClientSession(read, write))
        await session.initialize()
        yield session


async def main() -> None:
    info = DevnetInfo(**json.loads(Path(os.environ.get("PAYWIRE_DEVNET", "devnet.json")).read_text()))
    url = sys.argv[sys.argv.index("--url") + 1] if "--url" in sys.argv else None
    policy = Policy(max_per_payment="$0.10", daily="$1", assets=[info.asset])
    store = os.environ.get("PAYWIRE_BUYER_STORE", "sqlite:///buyer.db")
    async with connect(url) as session:
        paying = PayingSession(session, Wallet.from_key(info.payer_key), policy, server="weather-example",
                               store=store)
        try:
            weather = agent_tool(paying, "weather")
            answer = await weather(city="Lisbon")
            receipt = (await paying.buyer.history(limit=1))[0]
        finally:
            await paying.aclose()
    print(json.dumps({"answer": answer, "outcome": receipt.outcome, "amount": receipt.amount, "tx": receipt.tx,
                      "url": receipt.url}))


if __name__ == "__main__":
    asyncio.run(main())
