"""A FastMCP server whose tool ``sdk_weather`` is sold through the official x402 MCP wrapper
(``x402.mcp.server.create_payment_wrapper``) and the SDK's resource server asking our facilitator.

Imported by the tests (streamable HTTP), or run over stdio: ``python tests/mcp_sdk_server.py`` with
``PAYWIRE_DEVNET`` (a devnet state file) and ``PAYWIRE_FACILITATOR`` (the facilitator's URL) set.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from mcp.server.fastmcp import FastMCP

PRICE = 10_000  # $0.01 in the devnet token's units


def build(info: Any, facilitator: str, on_run: Callable[[], None] = lambda: None) -> FastMCP:
    """The server (blocking: the SDK asks the facilitator's ``/supported`` synchronously)."""
    from x402 import x402ResourceServer
    from x402.http import FacilitatorConfig, HTTPFacilitatorClient
    from x402.mcp.server import create_payment_wrapper
    from x402.mechanisms.evm.exact import ExactEvmServerScheme
    from x402.schemas import PaymentRequirements, ResourceInfo

    server = x402ResourceServer(HTTPFacilitatorClient(FacilitatorConfig(url=facilitator)))
    server.register(info.network, ExactEvmServerScheme())
    server.initialize()
    accepts = [PaymentRequirements(scheme="exact", network=info.network, asset=info.token, amount=str(PRICE),
                                   pay_to=info.addresses["payee"], max_timeout_seconds=60,
                                   extra={"name": info.token_name, "version": info.token_version})]
    paid = create_payment_wrapper(server, accepts=accepts, resource=ResourceInfo(
        url="mcp://tool/sdk_weather", description="Weather, sold by the x402 SDK", mime_type="application/json"))
    mcp = FastMCP("x402-sdk-tools")

    @mcp.tool(name="sdk_weather", description="Weather, sold by the x402 SDK")
    @paid
    async def sdk_weather(city: str) -> str:
        on_run()
        return json.dumps({"city": city, "sky": "clear"})

    return mcp


if __name__ == "__main__":
    from paywire.devnet import DevnetInfo

    devnet = DevnetInfo(**json.loads(Path(os.environ["PAYWIRE_DEVNET"]).read_text()))
    build(devnet, os.environ["PAYWIRE_FACILITATOR"]).run("stdio")
