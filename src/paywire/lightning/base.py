"""One interface over Lightning nodes and wallets: create invoices, look up settlement, pay invoices."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from paywire.errors import PaywireError


class LightningError(PaywireError):
    """The node refused or could not be reached; ``retryable`` when the outcome may still change."""

    def __init__(self, message: str, *, retryable: bool = False) -> None:
        super().__init__(message)
        self.retryable = retryable


@dataclass(frozen=True, slots=True)
class Invoice:
    """A BOLT11 invoice we issued: its string, payment hash (lowercase hex) and amount."""

    bolt11: str
    payment_hash: str
    amount_sat: int
    expires_at: float


@dataclass(frozen=True, slots=True)
class InvoiceStatus:
    """Settlement state of an incoming invoice; ``preimage`` only once paid."""

    payment_hash: str
    paid: bool
    preimage: str | None = None
    failed: bool = False


@dataclass(frozen=True, slots=True)
class PaymentResult:
    """An outgoing payment that succeeded: the preimage proves it."""

    payment_hash: str
    preimage: str
    fee_msat: int = 0


@runtime_checkable
class LightningBackend(Protocol):
    """What the seller (create, lookup) and buyer (pay) sides need from a node."""

    async def create_invoice(self, amount_sat: int, memo: str = "", expiry: int = 600) -> Invoice: ...

    async def lookup_invoice(self, payment_hash: str) -> InvoiceStatus: ...

    async def pay_invoice(self, bolt11: str, *, max_fee_sat: int = 10) -> PaymentResult: ...
