"""The seller's payment protocols, peers behind one interface (:mod:`paywire.server.protocols.base`).

Each protocol is one module here; :func:`seller_protocols` lists them, one line each. Their challenges go out in
a route's ``challenge_order`` (x402's ``PAYMENT-REQUIRED``, then ``L402`` and MPP ``Payment`` by default).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from paywire.server.protocols.base import SellerContext, SellerProtocol


def seller_protocols(ctx: SellerContext) -> list[SellerProtocol]:
    """One instance of every protocol the seller speaks."""
    from paywire.server.protocols import l402, mpp, x402

    return [
        x402.X402(ctx),
        mpp.Mpp(ctx),
        l402.L402(ctx),
    ]


__all__ = ["seller_protocols"]
