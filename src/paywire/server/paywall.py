"""The browser paywall: our own self-contained page (no CDN, no build step) that pays with an EIP-1193 wallet.

The server injects ``<script>window.x402 = {...}</script>`` right before ``</head>`` (digest §3.4) with the
challenge; the JSON is escaped so that no value can close the script element (checklist 20).
"""

from __future__ import annotations

import functools
import json
from importlib import resources
from typing import Any

from paywire.x402.models import PaymentRequired
from paywire.x402.networks import evm_chain_id

MAINNET_CHAIN_IDS = frozenset({1, 10, 137, 8453, 42161, 43114, 143, 988, 4326, 1329, 2741})


@functools.cache
def default_template() -> str:
    return resources.files("paywire.server").joinpath("paywall.html").read_text("utf-8")


def script_json(obj: Any) -> str:
    """JSON safe inside ``<script>``: ``<`` ``>`` ``&`` and U+2028/2029 become ``\\uXXXX`` escapes."""
    text = json.dumps(obj, separators=(",", ":"), ensure_ascii=False)
    for ch, esc in (("<", "\\u003C"), (">", "\\u003E"), ("&", "\\u0026"), ("\u2028", "\\u2028"),
                    ("\u2029", "\\u2029")):
        text = text.replace(ch, esc)
    return text


def _testnet(network: str) -> bool:
    try:
        return evm_chain_id(network) not in MAINNET_CHAIN_IDS
    except Exception:
        return "devnet" in network or "testnet" in network


def render_paywall(pr: PaymentRequired, *, app_name: str = "", decimals: int = 6,
                   template: str | None = None) -> str:
    """The paywall page for a challenge; ``template`` (any HTML with a ``</head>``) replaces ours."""
    first = pr.accepts[0]
    display = format(first.amount / 10 ** decimals, f".{min(decimals, 6)}f").rstrip("0").rstrip(".") or "0"
    config = {
        "paymentRequired": pr.to_wire(),
        "appName": app_name,
        "amount": float(first.amount) / 10 ** decimals,
        "displayAmount": display,
        "testnet": _testnet(first.network),
        "currentUrl": pr.resource.url if pr.resource else "",
    }
    inject = f"<script>window.x402 = {script_json(config)};</script>\n"
    html = template if template is not None else default_template()
    at = html.lower().find("</head>")
    return html[:at] + inject + html[at:] if at >= 0 else inject + html
