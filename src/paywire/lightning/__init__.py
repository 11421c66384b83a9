"""Lightning backends behind one interface (LNbits REST, LND REST) plus a minimal BOLT11 decoder."""

from __future__ import annotations

from typing import TYPE_CHECKING

from paywire._lazy import lazy_exports

if TYPE_CHECKING:
    from paywire.lightning.base import Invoice, InvoiceStatus, LightningBackend, LightningError, PaymentResult
    from paywire.lightning.bolt11 import DecodedInvoice, decode_bolt11
    from paywire.lightning.lnbits import LnbitsBackend
    from paywire.lightning.lnd import LndRestBackend

__getattr__, __dir__ = lazy_exports(__name__, {
    "paywire.lightning.base": (
        "Invoice", "InvoiceStatus", "LightningBackend", "LightningError", "PaymentResult",
    ),
    "paywire.lightning.bolt11": ("DecodedInvoice", "decode_bolt11"),
    "paywire.lightning.lnbits": ("LnbitsBackend",),
    "paywire.lightning.lnd": ("LndRestBackend",),
})

__all__ = [
    "DecodedInvoice",
    "Invoice",
    "InvoiceStatus",
    "LightningBackend",
    "LightningError",
    "LnbitsBackend",
    "LndRestBackend",
    "PaymentResult",
    "decode_bolt11",
]
