"""MPP on the buyer (``WWW-Authenticate: Payment``), free of I/O: read the challenges off a 402 as
:class:`~paywire.client.core.Option` entries next to x402's, so one policy and one ranking cover every protocol;
build the credential once signed or paid; read ``Payment-Receipt`` back.

* ``evm/charge`` becomes an ``exact`` EIP-3009 option (the token's EIP-712 domain comes from the known
  assets, since the challenge does not carry it); the credential is signed with the challenge-hash nonce. On
  "challenge hash mismatch" the fresh challenge is signed once more with the other nonce derivation.
* ``lightning/charge`` becomes a ``lightning`` option on ``bip122:*`` priced in sats (valued in dollars through
  ``Policy(btc_usd=…)``).
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

from paywire.client.core import Challenge, Option, PaymentAttempt
from paywire.client.protocols.base import (
    MPP,
    AssetLookup,
    PaidReceipt,
    Resign,
    WalletAbilities,
    www_authenticate,
)
from paywire.errors import WireError
from paywire.evm.assets import Asset
from paywire.lightning.bolt11 import decode_bolt11
from paywire.lightning.networks import lightning_network_id
from paywire.mpp.challenge import Challenge as MppChallenge
from paywire.mpp.challenge import parse_www_authenticate
from paywire.mpp.methods.evm_charge import CONCAT, JSON_ARRAY
from paywire.mpp.receipt import HEADER as RECEIPT_HEADER
from paywire.mpp.timefmt import parse_rfc3339
from paywire.x402.models import PaymentRequirements

if TYPE_CHECKING:
    from paywire.schemes.registry import ClientScheme

HASH_MISMATCH: Final = "challenge hash mismatch"
"""What both SDKs say when the EIP-3009 nonce was derived the other way (retry once with the other one)."""


@dataclass(frozen=True, slots=True)
class MppOffer:
    """An MPP challenge the wallet may answer; ``asset`` is set for ``evm/charge``."""

    challenge: MppChallenge
    asset: Asset | None = None


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




def receipt_reference(headers: Mapping[str, str]) -> str | None:
    """The ``Payment-Receipt``'s reference (tx hash, payment hash); None when absent or unreadable."""
    raw = headers.get(RECEIPT_HEADER.lower()) or headers.get(RECEIPT_HEADER)
    if not raw:
        return None
    from paywire.mpp.receipt import Receipt as MppReceipt

    try:
        return MppReceipt.from_header(raw).reference
    except WireError:
        return None


class MppProtocol:
    name = MPP
    reuses_credential = False

    def request_headers(self, wallet: WalletAbilities) -> Mapping[str, str]:
        value = accept_payment_value(any(getattr(s, "signer", None) is not None for s in wallet.schemes),
                                     wallet.lightning)
        return {"Accept-Payment": value} if value else {}

    def read(self, headers: Mapping[str, str], body: bytes, assets: AssetLookup) -> Challenge | None:
        options = tuple(Option(i, r, None, MPP, o) for i, (r, o) in enumerate(mpp_offers(headers, assets)))
        return Challenge(0, options, None, www_authenticate=www_authenticate(headers)) if options else None

    async def credential(self, challenge: Challenge, option: Option, scheme: ClientScheme, *,
                         variant: str) -> PaymentAttempt:
        """``evm/charge``: sign the challenge with ``variant``'s nonce; ``lightning/charge``: pay the invoice."""
        req, offer = option.requirements, option.offer
        if not isinstance(offer, MppOffer):
            raise TypeError(f"option {option.index} is not an MPP challenge")
        field = credential_field(offer.challenge)
        if offer.challenge.method == "evm":
            from paywire.mpp.methods.evm_charge import EvmAuthorization, sign_evm_charge

            if offer.asset is None:
                raise ValueError(f"the EIP-712 domain of token {req.asset} on {req.network} is unknown")
            signer: Any = getattr(scheme, "signer", None)  # ExactEvmClient.signer
            cred = await sign_evm_charge(offer.challenge, signer, offer.asset, variant=variant)
            auth = EvmAuthorization.from_payload(cred.payload)
            return PaymentAttempt(field, cred.to_authorization(), req, 0, None, "0x" + auth.nonce.hex(),
                                  auth.valid_before)
        from paywire.mpp.methods.lightning_charge import lightning_credential

        inner = await scheme.create_payload(req)
        value = lightning_credential(offer.challenge, str(inner["preimage"])).to_authorization()
        return PaymentAttempt(field, value, req, 0, None, str(inner.get("paymentHash") or "") or None)

    def receipt(self, headers: Mapping[str, str], option: Option) -> PaidReceipt:
        return PaidReceipt(None, receipt_reference(headers))

    def resign(self, reason: str, headers: Mapping[str, str], option: Option, variant: str,
               assets: AssetLookup) -> Resign | None:
        """"challenge hash mismatch" to an ``evm/charge`` credential: the peer derives the EIP-3009 nonce the
        other way; pay this 402's fresh challenge (same amount, token and payee) with the other derivation."""
        req, offer = option.requirements, option.offer
        if not isinstance(offer, MppOffer) or offer.challenge.method != "evm" or HASH_MISMATCH not in reason.lower():
            return None
        fresh = [(r, o) for r, o in mpp_offers(headers, assets)
                 if o.challenge.method == "evm" and r.amount == req.amount
                 and r.asset.lower() == req.asset.lower() and r.pay_to.lower() == req.pay_to.lower()]
        if not fresh:
            return None
        return Resign(dataclasses.replace(option, requirements=fresh[0][0], offer=fresh[0][1]),
                      other_variant(variant))


PROTOCOL: Final = MppProtocol()

__all__ = [
    "HASH_MISMATCH",
    "PROTOCOL",
    "MppOffer",
    "MppProtocol",
    "accept_payment_value",
    "credential_field",
    "mpp_offers",
    "other_variant",
    "receipt_reference",
]
