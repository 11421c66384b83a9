"""Sellers: charge for HTTP routes with x402, MPP and L402 (ASGI and WSGI middleware, FastAPI helpers, paywall,
ledger). The names a seller needs import from here::

    from paywire.server import AssetRegistry, Offer, PaidRoute, PaymentMiddleware, self_facilitator

Each name loads its module on first use (``import paywire.server`` loads no web framework, store or chain).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from paywire._lazy import lazy_exports

if TYPE_CHECKING:
    from paywire.chain.token_domain import chain_assets
    from paywire.evm.assets import KNOWN_ASSETS, Asset, AssetRegistry
    from paywire.server.asgi import PaymentMiddleware
    from paywire.server.config import SellerConfig, SellerOptions
    from paywire.server.core import PaidRoute, Reply, Seller
    from paywire.server.flow import PaymentFlow, PaymentInfo
    from paywire.server.local import SelfFacilitator, self_facilitator
    from paywire.server.metering import MaximumReached, bill, bill_unit
    from paywire.server.pricing import Offer
    from paywire.server.wsgi import WsgiPaymentMiddleware

__getattr__, __dir__ = lazy_exports(__name__, {
    "paywire.chain.token_domain": ("chain_assets",),
    "paywire.evm.assets": ("KNOWN_ASSETS", "Asset", "AssetRegistry"),
    "paywire.server.asgi": ("PaymentMiddleware",),
    "paywire.server.config": ("SellerConfig", "SellerOptions"),
    "paywire.server.core": ("PaidRoute", "Reply", "Seller"),
    "paywire.server.flow": ("PaymentFlow", "PaymentInfo"),
    "paywire.server.local": ("SelfFacilitator", "self_facilitator"),
    "paywire.server.metering": ("MaximumReached", "bill", "bill_unit"),
    "paywire.server.pricing": ("Offer",),
    "paywire.server.wsgi": ("WsgiPaymentMiddleware",),
})

__all__ = ["KNOWN_ASSETS", "Asset", "AssetRegistry", "MaximumReached", "Offer", "PaidRoute", "PaymentFlow", "PaymentInfo",
           "PaymentMiddleware", "Reply", "SelfFacilitator", "Seller", "SellerConfig", "SellerOptions",
           "WsgiPaymentMiddleware", "bill", "bill_unit", "chain_assets", "self_facilitator"]
