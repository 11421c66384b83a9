"""x402 on the seller (:class:`X402`): the ``PAYMENT-SIGNATURE`` / ``X-PAYMENT`` header, its 402 and receipts.

The wire rules (header codecs, matching, the 402 with ``PAYMENT-REQUIRED`` and its v1 JSON body, the
``PAYMENT-RESPONSE`` receipt) are :class:`paywire.server.core.Seller`'s, sans-I/O; this adapter puts them behind
:class:`~paywire.server.protocols.base.SellerProtocol`. x402's challenge is the 402 reply itself, so it adds no
``WWW-Authenticate`` value; a copy of an x402 payment gets the recorded outcome replayed.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final

from paywire.server.core import Headers, PaidRoute, Priced
from paywire.server.protocols.base import Challenges, Parsed, ProtocolDefaults, SellerContext
from paywire.server.request import RequestInfo
from paywire.store.payments import PaymentRecord
from paywire.x402.models import SettleResponse

NAME: Final = "x402"


class X402(ProtocolDefaults):
    """x402 v2 and v1 payments (:class:`SellerProtocol`); every route takes its header."""

    name = NAME

    def __init__(self, ctx: SellerContext) -> None:
        self.seller = ctx.seller

    def takes(self, route: PaidRoute) -> bool:
        return True

    async def parse(self, route: PaidRoute, req: RequestInfo, priced: Priced) -> Parsed:
        if self.seller.x402_header(route, req) is None:
            return None
        return self.seller.decide(req, priced)

    async def challenges(self, route: PaidRoute, req: RequestInfo) -> Challenges:
        return Challenges()

    def receipt_headers(self, rec: PaymentRecord, res: SettleResponse,
                        app_headers: Sequence[tuple[str, str]]) -> Headers:
        """``PAYMENT-RESPONSE`` (v2) / ``X-PAYMENT-RESPONSE`` (v1) with ``private`` caching."""
        return self.seller.paid_headers(res, rec.x402_version == 1, app_headers)


__all__ = ["NAME", "X402"]
