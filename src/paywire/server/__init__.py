"""Sellers: charge for HTTP routes with x402 (ASGI and WSGI middleware, FastAPI helpers, paywall, ledger)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from paywire._lazy import lazy_exports

if TYPE_CHECKING:
    from paywire.server.core import PaidRoute, Reply, Seller
    from paywire.server.flow import PaymentFlow, PaymentInfo
    from paywire.server.pricing import Offer

__getattr__, __dir__ = lazy_exports(__name__, {
    "paywire.server.core": ("PaidRoute", "Reply", "Seller"),
    "paywire.server.flow": ("PaymentFlow", "PaymentInfo"),
    "paywire.server.pricing": ("Offer",),
})

__all__ = ["Offer", "PaidRoute", "PaymentFlow", "PaymentInfo", "Reply", "Seller"]
