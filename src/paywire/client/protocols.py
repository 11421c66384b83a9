"""The buyer's view of MPP and L402 challenges, free of I/O: read them off a 402 as :class:`Option` entries next to
x402's, so one policy and one ranking cover every protocol; build the ``Authorization`` value once paid.

* MPP ``evm/charge`` becomes an ``exact`` EIP-3009 option (the token's EIP-712 domain comes from the known
  assets, since the challenge does not carry it); the credential is signed with the challenge-hash nonce.
* MPP ``lightning/charge`` and L402 become ``lightning`` options on ``bip122:*`` priced in sats (valued in
  dollars through ``Policy(btc_usd=…)``).
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

from paywire.errors import WireError
from paywire.evm.assets import Asset
from paywire.lightning.bolt11 import decode_bolt11
from paywire.lightning.networks import lightning_network_id
from paywire.mpp.challenge import Challenge as MppChallenge
from paywire.mpp.challenge import parse_www_authenticate
from paywire.mpp.methods.evm_charge import CONCAT, JSON_ARRAY
from paywire.mpp.timefmt import parse_rfc3339
from paywire.x402.models import PaymentRequirements

X402: Final = "x402"
MPP: Final = "mpp"
L402: Final = "l402"
PROTOCOLS: Final = (X402, MPP, L402)
HASH_MISMATCH: Final = "challenge hash mismatch"
"""What both SDKs say when the EIP-3009 nonce was derived the other way (retry once with the other one)."""


@dataclass(frozen=True, slots=True)
class MppOffer:
    """An MPP challenge the wallet may answer; ``asset`` is set for ``evm/charge``."""

    challenge: MppChallenge
    asset: Asset | None = None


@dataclass(frozen=True, slots=True)
class L402Offer:
    macaroon: str
    invoice: str
    payment_hash: str
    scheme: str = "L402"  # "LSAT" when the server offered this token only under LSAT: the credential echoes it


AssetLookup = Callable[[str, str], Asset | None]
"""(network, token address) → the token's EIP-712 domain, or None when unknown."""


def www_authenticate(headers: Mapping[str, str]) -> str:
    return headers.get("www-authenticate") or headers.get("WWW-Authenticate") or ""


def mpp_offers(headers: Mapping[str, str], assets: AssetLookup, now: float | None = None
               ) -> list[tuple[PaymentRequirements, MppOffer]]:
    """Payable MPP challenges (``evm/charge`` with ``authorization``, ``lightning/charge``), unexpired."""
    raw = www_authenticate(headers)
    if "payment" not in raw.lower():
        return []
    t = time.time() if now is None else now
    out = []
    for ch in parse_www_authenticate(raw):
        try:
            if ch.expires and parse_rfc3339(ch.expires) <= t:
                continue  # clients MUST NOT pay expired challenges
            pair = _mpp_requirements(ch, assets)
        except (WireError, ValueError, KeyError, TypeError):
            continue
        if pair is not None:
            out.append(pair)
    return out


def _mpp_requirements(ch: MppChallenge, assets: AssetLookup) -> tuple[PaymentRequirements, MppOffer] | None:
    req = ch.request
    details = req.get("methodDetails") or {}
    if ch.intent != "charge" or not isinstance(details, Mapping):
        return None
    amount = int(str(req["amount"]))
    if ch.method == "evm":
        types = details.get("credentialTypes")
        if isinstance(types, list) and "authorization" not in types:
            return None
        if details.get("splits"):  # one EIP-3009 authorization cannot pay splits (both SDKs refuse them)
            return None
        network = f"eip155:{int(details['chainId'])}"
        token = str(req["currency"])
        asset = assets(network, token)
        extra: dict[str, Any] = {}
        if asset is not None:
            extra = {"name": asset.name, "version": asset.version, "assetTransferMethod": "eip3009"}
        r = PaymentRequirements(scheme="exact", network=network, amount=amount, asset=token,
                                pay_to=str(req["recipient"]), max_timeout_seconds=300, extra=extra)
        return r, MppOffer(ch, asset)
    if ch.method == "lightning":
        invoice = str(details["invoice"])
        inv = decode_bolt11(invoice)
        if str(req.get("currency", "sat")).lower() not in ("sat", "sats") or inv.amount_sat != amount:
            return None
        r = PaymentRequirements(scheme="lightning", network=lightning_network_id(inv.network), amount=amount,
                                asset="sat", pay_to="lightning", max_timeout_seconds=max(inv.expiry, 1),
                                extra={"invoice": invoice, "paymentHash": inv.payment_hash})
        return r, MppOffer(ch)
    return None


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


def credential_field(challenge: MppChallenge) -> str:
    """Where the credential for ``challenge`` goes: the field its ``header`` parameter names (pympp's and mppx's
    ``requires_auth``: ``Payment-Authorization``, so ``Authorization`` stays the application's), else
    ``Authorization``."""
    return challenge.header or "Authorization"


def other_variant(variant: str) -> str:
    return JSON_ARRAY if variant == CONCAT else CONCAT


def accept_payment_value(evm: bool, lightning: bool) -> str | None:
    """What the wallet can answer, for the ``Accept-Payment`` request header."""
    parts = (["evm/charge"] if evm else []) + (["lightning/charge"] if lightning else [])
    return ", ".join(parts) or None


def protocol_rank(preferences: Sequence[str]) -> Callable[[str], int]:
    order = {p: i for i, p in enumerate(preferences)}
    return lambda proto: order.get(proto, len(order))


__all__ = [
    "HASH_MISMATCH",
    "L402",
    "MPP",
    "PROTOCOLS",
    "X402",
    "L402Offer",
    "MppOffer",
    "accept_payment_value",
    "credential_field",
    "l402_authorization",
    "l402_offers",
    "mpp_offers",
    "other_variant",
    "protocol_rank",
]
