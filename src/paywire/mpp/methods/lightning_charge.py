"""``lightning/charge``: a fresh BOLT11 invoice per challenge, the preimage as credential (checklist 113).

The invoice sits in ``request.methodDetails.invoice`` (authoritative) with ``paymentHash`` and ``network``
as conveniences; the HMAC-bound request is what ties the payment hash to the challenge id, so verification
needs no lookup. The receipt ``reference`` is the payment hash, never the preimage. The preimage is read in
either hex case, as L402 reads it (the spec asks clients for lowercase); the single-use key is the payment hash,
so a second presentation in the other case is still the same payment.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Mapping
from typing import Any, Final

from paywire.errors import WireError
from paywire.lightning.base import Invoice, LightningBackend, LightningError
from paywire.lightning.bolt11 import decode_bolt11
from paywire.mpp import problems as P
from paywire.mpp.challenge import Challenge
from paywire.mpp.credential import ChallengeEcho, Credential
from paywire.mpp.methods.base import Refused, Settled, Unknown, Verified
from paywire.mpp.problems import Problem
from paywire.mpp.server import Accepted, Offer

METHOD: Final = "lightning"
INTENT: Final = "charge"
DYNAMIC: Final = frozenset({"invoice", "paymentHash", "network"})
_PREIMAGE_RE: Final = re.compile(r"[0-9a-fA-F]{64}")


def lightning_charge_request(invoice: Invoice, *, description: str | None = None,
                             network: str | None = None) -> dict[str, Any]:
    """``{amount, currency: "sat", description?, methodDetails: {invoice, paymentHash, network}}``."""
    decoded = decode_bolt11(invoice.bolt11)
    details: dict[str, Any] = {"invoice": invoice.bolt11, "paymentHash": invoice.payment_hash,
                               "network": network or decoded.network}
    req: dict[str, Any] = {"amount": str(invoice.amount_sat), "currency": "sat", "methodDetails": details}
    if description is not None:
        req["description"] = description
    return req


def lightning_offer_template(amount_sat: int, *, description: str | None = None) -> Offer:
    """What a route accepts (the per-challenge invoice and hash are filled in by :func:`lightning_offer`)."""
    req: dict[str, Any] = {"amount": str(amount_sat), "currency": "sat", "methodDetails": {}}
    if description is not None:
        req["description"] = description
    return Offer(METHOD, INTENT, req, dynamic=DYNAMIC)


async def lightning_offer(backend: LightningBackend, amount_sat: int, *, description: str | None = None,
                          memo: str = "", expiry: int = 600, network: str | None = None) -> Offer:
    """A concrete offer with a fresh invoice; the challenge never outlives the invoice."""
    inv = await backend.create_invoice(amount_sat, memo or description or "", expiry)
    net = network or decode_bolt11(inv.bolt11).network
    return Offer(METHOD, INTENT, lightning_charge_request(inv, description=description, network=net),
                 not_after=inv.expires_at, dynamic=DYNAMIC)


def lightning_credential(challenge: Challenge, preimage: str, *, source: str | None = None) -> Credential:
    """Buyer side: the credential for a paid challenge."""
    return Credential(ChallengeEcho.of(challenge), {"preimage": preimage.lower()}, source)


class LightningChargeMethod:
    """Seller side; with ``confirm_with_node`` the invoice must also show as paid at our node."""

    method = METHOD
    intent = INTENT

    def __init__(self, backend: LightningBackend | None = None, *, confirm_with_node: bool = False) -> None:
        if confirm_with_node and backend is None:
            raise ValueError("confirm_with_node needs a backend")
        self.backend = backend
        self.confirm_with_node = confirm_with_node

    def verify(self, accepted: Accepted, now: float) -> Verified | Problem:
        req = accepted.challenge.request
        details = req.get("methodDetails")
        if not isinstance(details, Mapping) or not isinstance(details.get("invoice"), str):
            return Problem(P.VERIFICATION_FAILED, "request has no invoice")
        try:
            inv = decode_bolt11(details["invoice"])
        except WireError as exc:
            return Problem(P.VERIFICATION_FAILED, f"invoice: {exc.detail}")
        claimed = details.get("paymentHash")
        if claimed is not None and claimed != inv.payment_hash:
            return Problem(P.VERIFICATION_FAILED, "paymentHash does not match the invoice")
        network = details.get("network")
        if network is not None and network != inv.network:
            return Problem(P.VERIFICATION_FAILED, "network does not match the invoice")
        if req.get("currency") != "sat" or str(req.get("amount")) != str(inv.amount_sat):
            return Problem(P.VERIFICATION_FAILED, "amount/currency do not match the invoice")
        preimage = accepted.credential.payload.get("preimage")
        if not isinstance(preimage, str) or _PREIMAGE_RE.fullmatch(preimage) is None:
            return Problem(P.LN_MALFORMED_CREDENTIAL, "payload.preimage must be 64 hex characters")
        if inv.expires_at <= now:
            return Problem(P.LN_EXPIRED_INVOICE, "the invoice has expired")
        if not hmac.compare_digest(hashlib.sha256(bytes.fromhex(preimage)).hexdigest(), inv.payment_hash):
            return Problem(P.LN_INVALID_PREIMAGE, "SHA-256 of the preimage does not match the payment hash")
        return Verified(accepted, f"ln:{inv.payment_hash}", amount=str(inv.amount_sat), currency="sat",
                        data=inv.payment_hash)

    async def settle(self, verified: Verified) -> Settled | Refused | Unknown:
        payment_hash = str(verified.data)
        if self.confirm_with_node and self.backend is not None:
            try:
                status = await self.backend.lookup_invoice(payment_hash)
            except LightningError as exc:
                return Refused(Problem(P.VERIFICATION_FAILED, f"could not confirm the invoice: {exc}"))
            if not status.paid:
                return Refused(Problem(P.VERIFICATION_FAILED, "the invoice is not settled at the node"))
        return Settled(payment_hash)
