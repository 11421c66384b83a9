"""A paid MCP server: FastMCP tools priced in x402, settled through a facilitator, exactly once per payment.

Against a local devnet (``paywire devnet`` writes ``devnet.json``), settling in-process::

    paywire devnet &
    python examples/mcp_server.py              # stdio (an MCP client starts it: see examples/mcp_client.py)
    python examples/mcp_server.py --http       # streamable HTTP on http://127.0.0.1:8000/mcp

With a separate facilitator service instead (``paywire facilitator --rpc … --key …``), set
``PAYWIRE_FACILITATOR=http://127.0.0.1:4020``.

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
from paywire.facilitator.client import FacilitatorClient
from paywire.mcp import PaidTools, current_payment
from paywire.server import self_facilitator


def create_server(info: DevnetInfo, facilitator: FacilitatorClient | str, *, store: str | None = None,
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
    url = os.environ.get("PAYWIRE_FACILITATOR")
    if url is None and info.rpc_url is None:
        raise SystemExit("devnet.json has no rpc_url: run `paywire devnet` (it serves JSON-RPC) first")
    facilitator = url or self_facilitator(str(info.rpc_url), info.facilitator_key)  # one line: in-process
    secret = os.environ.get("PAYWIRE_MPP_SECRET")
    mcp, _ = create_server(info, facilitator, mpp_secret=bytes.fromhex(secret) if secret else None)
    mcp.run("streamable-http" if "--http" in sys.argv[1:] else "stdio")


if __name__ == "__main__":
    main()
