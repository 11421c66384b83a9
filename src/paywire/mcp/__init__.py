"""Paid MCP tools: sellers price FastMCP tools (:class:`PaidTools`), buyers pay them from an MCP
``ClientSession`` (:class:`PayingSession`), over the x402 MCP transport, through the same seller flow and buyer
engine as HTTP. Needs ``pip install paywire[mcp]`` (the official ``mcp`` SDK); ``paywire.mcp.wire`` does not.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from paywire._lazy import lazy_exports

if TYPE_CHECKING:
    from paywire.mcp.buyer import PayingSession, ToolCall
    from paywire.mcp.seller import PaidTools, current_payment

__getattr__, __dir__ = lazy_exports(__name__, {
    "paywire.mcp.buyer": ("PayingSession", "ToolCall"),
    "paywire.mcp.seller": ("PaidTools", "current_payment"),
})

__all__ = ["PaidTools", "PayingSession", "ToolCall", "current_payment"]
