"""Lightning backends behind one interface (LNbits REST, LND REST) plus a minimal BOLT11 decoder."""

from paywire.lightning.base import Invoice, InvoiceStatus, LightningBackend, LightningError, PaymentResult
from paywire.lightning.bolt11 import DecodedInvoice, decode_bolt11
from paywire.lightning.lnbits import LnbitsBackend
from paywire.lightning.lnd import LndRestBackend

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
