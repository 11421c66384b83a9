"""The buyer's Lightning wallet as a payment scheme: pays the BOLT11 invoice of an MPP ``lightning/charge`` or L402
challenge through a :class:`~paywire.lightning.base.LightningBackend` (LNbits, LND) and returns the preimage."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from typing import Any, Final

from paywire.errors import WireError
from paywire.lightning.base import LightningBackend, LightningError
from paywire.lightning.bolt11 import decode_bolt11
from paywire.lightning.networks import LIGHTNING_SCHEME
from paywire.x402.models import PaymentRequirements

SCHEME: Final = LIGHTNING_SCHEME


class LightningPayer:
    """``lightning`` × ``bip122:*``: checks the invoice against the quoted amount, pays it, checks the preimage."""

    scheme = SCHEME
    network_pattern = "bip122:*"

    def __init__(self, backend: LightningBackend, *, max_fee_sat: int = 10) -> None:
        self.backend = backend
        self.max_fee_sat = max_fee_sat

    def can_pay(self, requirements: PaymentRequirements) -> bool:
        invoice = requirements.extra.get("invoice")
        if requirements.scheme != SCHEME or not isinstance(invoice, str):
            return False
        try:
            inv = decode_bolt11(invoice)
        except WireError:
            return False
        return inv.amount_sat is not None and inv.amount_sat == requirements.amount

    def ledger_fields(self, payload: Mapping[str, Any]) -> tuple[str | None, int | None]:
        """A paid invoice has no nonce or expiry for the ledger to keep."""
        return None, None

    async def create_payload(self, requirements: PaymentRequirements) -> Mapping[str, Any]:
        """Pay the invoice (the amount was checked against the quote first); ``{"preimage": <hex>}``."""
        invoice = str(requirements.extra["invoice"])
        inv = decode_bolt11(invoice)
        if inv.amount_sat != requirements.amount:
            raise LightningError(f"invoice asks {inv.amount_sat} sat, the challenge said {requirements.amount}")
        res = await self.backend.pay_invoice(invoice, max_fee_sat=self.max_fee_sat)
        preimage = res.preimage.lower()
        if hashlib.sha256(bytes.fromhex(preimage)).hexdigest() != inv.payment_hash:
            raise LightningError("the node returned a preimage that does not match the invoice")
        return {"preimage": preimage, "paymentHash": inv.payment_hash}
