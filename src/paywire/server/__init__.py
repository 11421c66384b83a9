"""Sellers: charge for HTTP routes with x402 (ASGI and WSGI middleware, FastAPI helpers, paywall, ledger)."""

from paywire.server.core import PaidRoute, Reply, Seller
from paywire.server.flow import PaymentFlow, PaymentInfo
from paywire.server.pricing import Offer

__all__ = ["Offer", "PaidRoute", "PaymentFlow", "PaymentInfo", "Reply", "Seller"]
