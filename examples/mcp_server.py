"""A paid MCP server: FastMCP tools priced in x402, settled through a facilitator, exactly once per payment.

Against a local devnet (``paywire devnet`` writes ``devnet.json``) and a facilitator service::

    paywire devnet &
    paywire facilitator --devnet &                      # http://127.0.0.1:4020
    PAYWIRE_FACILITATOR=http://127.0.0.1:4020 python examples/mcp_server.py          # stdio
    PAYWIRE_FACILITATOR=http://127.0.0.1:4020 python examples/mcp_server.py --http   # streamable HTTP :8000/mcp

``weather`` costs $0.01 (settled after the tool succeeds), ``report`` $0.05 (settled before it runs), ``ping``
is free. With ``PAYWIRE_MPP_SECRET`` (32+ random bytes, hex) set, ``quote`` ($0.01) takes MPP ``evm/charge``
credentials too and asks unpaid callers with MPP's ``-32042``. Any x402 MCP client pays it (the official ``x402.mcp`` client, or ``paywire.mcp.PayingSession`` —
see examples/mcp_client.py). Sales land in ``$PAYWIRE_STORE`` (default ``./paywire.db``).
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

from mcp.server.fastmcp import FastMCP

from paywire.devnet import DevnetInfo
from paywire.evm.assets import KNOWN_ASSETS, AssetRegistry
from paywire.mcp import PaidTools, current_payment


def create_server(info: DevnetInfo, facilitator: str, *, store: str | None = None,
                  mpp_secret: bytes | None = None) -> tuple[FastMCP, PaidTools]:
    """The server, priced in the devnet's token and paid to its payee (MPP too with an ``mpp_secret``)."""
    mcp = FastMCP("paywire MCP example", host="127.0.0.1")
    mpp: dict[str, Any] = {"mpp_realm": "paywire-mcp-example", "mpp_secret": mpp_secret} if mpp_secret else {}
    tools = PaidTools(mcp, facilitator, pay_to=info.addresses["payee"], network=info.network,
                      assets=AssetRegistry((*KNOWN_ASSETS, info.asset)), store=store, **mpp)

    @tools.paid_tool(price="$0.01")
    async def weather(city: str) -> dict[str, Any]:
        """Current weather for a city."""
        return {"city": city, "temperature_c": 21, "sky": "clear"}

    @tools.paid_tool(price="$0.05", settle="before")
    async def report(topic: str) -> str:
        """A market report (settled before it runs)."""
        payment = current_payment()
        return f"{topic}: markets are up (paid by {payment.payer if payment else 'nobody'})"

    if mpp_secret:
        @tools.paid_tool(price="$0.01", mpp=True)
        async def quote(symbol: str) -> str:
            """A stock quote, paid with MPP or x402."""
            return f"{symbol}: 42.00"

    @mcp.tool()
    async def ping() -> str:
        """Free."""
        return "pong"

    return mcp, tools


def main() -> None:
    info = DevnetInfo(**json.loads(Path(os.environ.get("PAYWIRE_DEVNET", "devnet.json")).read_text()))
    secret = os.environ.get("PAYWIRE_MPP_SECRET")
    mcp, _ = create_server(info, os.environ.get("PAYWIRE_FACILITATOR", "http://127.0.0.1:4020"),
                           mpp_secret=bytes.fromhex(secret) if secret else None)
    mcp.run("streamable-http" if "--http" in sys.argv[1:] else "stdio")


if __name__ == "__main__":
    main()
