"""L402 (and LSAT) on the buyer, free of I/O: ``WWW-Authenticate: L402 macaroon=…, invoice=…`` becomes a
``lightning`` option on ``bip122:*`` priced in sats; once the invoice is paid the credential is
``L402 <macaroon>:<preimage>``, a token the engine may send again on later requests to the same host."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final

from paywire.client.core import Challenge, Option, PaymentAttempt
from paywire.client.protocols.base import (
    L402,
    AssetLookup,
    NoResign,
    PaidReceipt,
    WalletAbilities,
    www_authenticate,
)
from paywire.errors import WireError
from paywire.lightning.bolt11 import decode_bolt11
from paywire.lightning.networks import lightning_network_id
from paywire.mpp.receipt import HEADER as RECEIPT_HEADER
from paywire.x402.models import PaymentRequirements

if TYPE_CHECKING:
    from paywire.schemes.registry import ClientScheme


@dataclass(frozen=True, slots=True)
class L402Offer:
    macaroon: str
    invoice: str
    payment_hash: str
    scheme: str = "L402"  # "LSAT" when the server offered this token only under LSAT: the credential echoes it


def l402_offers(headers: Mapping[str, str]) -> list[tuple[PaymentRequirements, L402Offer]]:
    """L402/LSAT challenges with an amount-carrying invoice (one per distinct invoice: forms repeat it)."""
    from paywire.l402.header import parse_challenges_l402

    raw = www_authenticate(headers)
    if "l402" not in raw.lower() and "lsat" not in raw.lower():
        return []
    challenges = parse_challenges_l402(raw)
    l402_invoices = {c.invoice for c in challenges if c.scheme == "L402"}
    out, seen = [], set()
    for c in challenges:
        if c.invoice in seen:
            continue
        seen.add(c.invoice)
        try:
            inv = decode_bolt11(c.invoice)
        except WireError:
            continue
        if inv.amount_sat is None:
            continue
        r = PaymentRequirements(scheme="lightning", network=lightning_network_id(inv.network),
                                amount=inv.amount_sat, asset="sat", pay_to="lightning",
                                max_timeout_seconds=max(inv.expiry, 1),
                                extra={"invoice": c.invoice, "paymentHash": inv.payment_hash})
        scheme = "L402" if c.invoice in l402_invoices else "LSAT"  # an LSAT-only server may refuse "L402"
        out.append((r, L402Offer(c.macaroon, c.invoice, inv.payment_hash, scheme)))
    return out


def l402_authorization(offer: L402Offer, preimage: str) -> str:
    """``L402 <macaroon>:<preimage>`` (``LSAT …`` for an LSAT-only offer) after checking the preimage pays this
    token's invoice."""
    if hashlib.sha256(bytes.fromhex(preimage)).hexdigest() != offer.payment_hash:
        raise ValueError("preimage does not match the L402 invoice")
    return f"{offer.scheme} {offer.macaroon}:{preimage.lower()}"


class L402Protocol(NoResign):
    name = L402
    reuses_credential = True

    def request_headers(self, wallet: WalletAbilities) -> Mapping[str, str]:
        return {}

    def read(self, headers: Mapping[str, str], body: bytes, assets: AssetLookup) -> Challenge | None:
        options = tuple(Option(i, r, None, L402, o) for i, (r, o) in enumerate(l402_offers(headers)))
        return Challenge(0, options, None, www_authenticate=www_authenticate(headers)) if options else None

    async def credential(self, challenge: Challenge, option: Option, scheme: ClientScheme, *,
                         variant: str) -> PaymentAttempt:
        """Pay the invoice, then ``Authorization: L402 <macaroon>:<preimage>``."""
        inner = await scheme.create_payload(option.requirements)
        value = l402_authorization(option.offer, str(inner["preimage"]))
        return PaymentAttempt("Authorization", value, option.requirements, 0, None,
                              str(inner.get("paymentHash") or "") or None)

    def receipt(self, headers: Mapping[str, str], option: Option) -> PaidReceipt:
        """An MPP-style ``Payment-Receipt`` when the server sends one, else the invoice's payment hash."""
        if headers.get(RECEIPT_HEADER.lower()) or headers.get(RECEIPT_HEADER):
            from paywire.client.protocols.mpp import receipt_reference

            return PaidReceipt(None, receipt_reference(headers))
        return PaidReceipt(None, str(option.requirements.extra.get("paymentHash") or "") or None)


PROTOCOL: Final = L402Protocol()

__all__ = ["PROTOCOL", "L402Offer", "L402Protocol", "l402_authorization", "l402_offers"]
