"""A low-level MCP server whose tool ``forecast`` is gated by pympp's ``verify_or_challenge`` (``evm/charge``,
settled through our facilitator): the MPP MCP transport as pympp 0.16.0 serves it.

Imported by the tests (streamable HTTP), or run over stdio: ``python tests/mcp_pympp_server.py`` with
``PAYWIRE_DEVNET`` (a devnet state file) and ``PAYWIRE_FACILITATOR`` (the facilitator's URL) set.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from mcp import types
from mcp.server.lowlevel import Server


def build(info: Any, facilitator: str, on_run: Callable[[], None] = lambda: None) -> Server[Any, Any]:
    from mpp.extensions.mcp import PaymentRequiredError, verify_or_challenge
    from mpp.methods.evm import server as evm_server
    from mpp.server import Mpp

    method = evm_server.charge(currency=info.token, recipient=info.addresses["payee"], chain_id=info.chain_id,
                               decimals=info.decimals, authorization={"name": info.token_name,
                                                                      "version": info.token_version},
                               facilitator=facilitator)
    mpp = Mpp(methods=[method], realm="pympp.test", secret_key=os.urandom(32).hex())
    server: Server[Any, Any] = Server("pympp-tools")

    @server.list_tools()
    async def list_tools() -> list[types.Tool]:
        return [types.Tool(name="forecast", inputSchema={"type": "object", "properties": {"city": {"type": "string"}}})]

    async def call(req: types.CallToolRequest) -> types.ServerResult:
        meta = req.params.meta.model_dump(by_alias=True) if req.params.meta else None
        result = await verify_or_challenge(mpp.charge(amount="0.01"), tool="forecast", meta=meta)
        if isinstance(result, list):
            raise PaymentRequiredError(challenges=result)  # a JSON-RPC error: -32042
        _, receipt = result
        on_run()
        city = (req.params.arguments or {}).get("city")
        return types.ServerResult(types.CallToolResult(
            content=[types.TextContent(type="text", text=f"rain in {city}")], _meta=receipt.to_meta()))

    server.request_handlers[types.CallToolRequest] = call
    return server


async def _main() -> None:
    from mcp.server.stdio import stdio_server

    from paywire.devnet import DevnetInfo

    devnet = DevnetInfo(**json.loads(Path(os.environ["PAYWIRE_DEVNET"]).read_text()))
    server = build(devnet, os.environ["PAYWIRE_FACILITATOR"])
    async with stdio_server() as (read, write):
        await server.run(read, write, server.create_initialization_options())


if __name__ == "__main__":
    import asyncio

    asyncio.run(_main())
