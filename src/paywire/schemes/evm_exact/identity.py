"""Which EIP-3009 authorization a payment spends: its identity is (network, token, payer, nonce). Pure."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from paywire.errors import WireError
from paywire.schemes.evm_exact.payload import _NONCE_RE, _SIGNATURE_RE, ExactEvmPayload
from paywire.x402.models import _EVM_ADDRESS_RE, _req_amount

_AMOUNTS = ("value", "validAfter", "validBefore")


def authorization_key(network: str, asset: str, payload: Mapping[str, Any]) -> str | None:
    """``exact:<network>:<token>:<payer>:<nonce>`` (addresses lower-case), or None when ``payload`` is not an
    EIP-3009 ``{signature, authorization}`` object.

    The token contract enforces one use per (payer, nonce), so two payments with the same key can settle at
    most once between them: this is the key a seller claims before running a paid handler.
    """
    found = authorization_key_and_payer(network, asset, payload)
    return found[0] if found is not None else None


def authorization_key_and_payer(network: str, asset: str, payload: Mapping[str, Any]) -> tuple[str, str] | None:
    """(:func:`authorization_key`, ``authorization.from``), or None when :class:`ExactEvmPayload` would refuse
    the payload.

    The claim key of every paid request: the payload is checked by the same rules as
    ``ExactEvmPayload.from_wire`` (the same regular expressions and amount rule, so it accepts exactly what the
    model accepts) without building the two models and the signature's bytes; the nonce's lowercase hex is what
    ``bytes.fromhex(...).hex()`` gives. ``test_claim_key_agrees_with_the_model`` pins the equivalence."""
    d = payload if type(payload) is dict else dict(payload)
    sig, a = d.get("signature"), d.get("authorization")
    if not isinstance(sig, str) or _SIGNATURE_RE.fullmatch(sig) is None or not isinstance(a, dict):
        return None
    frm, to, nonce = a.get("from"), a.get("to"), a.get("nonce")
    if (not isinstance(frm, str) or _EVM_ADDRESS_RE.fullmatch(frm) is None
            or not isinstance(to, str) or _EVM_ADDRESS_RE.fullmatch(to) is None
            or not isinstance(nonce, str) or _NONCE_RE.fullmatch(nonce) is None):
        return None
    try:
        for key in _AMOUNTS:
            _req_amount(a, key, "")
    except WireError:
        return None
    return f"exact:{network}:{asset.lower()}:{frm.lower()}:0x{nonce[2:].lower()}", frm


def payer_of(payload: Mapping[str, Any]) -> str | None:
    """``authorization.from`` of an EIP-3009 payload, or None."""
    try:
        return ExactEvmPayload.from_wire(dict(payload)).authorization.from_
    except WireError:
        return None


def ledger_fields(payload: Mapping[str, Any]) -> tuple[str | None, int | None]:
    """(``authorization.nonce``, ``authorization.validBefore``) as the buyer's ledger keeps them, each None
    when missing or malformed."""
    auth = payload.get("authorization")
    if not isinstance(auth, Mapping):
        return None, None
    nonce, vb = auth.get("nonce"), auth.get("validBefore")
    return (nonce if isinstance(nonce, str) else None,
            int(vb) if isinstance(vb, str) and vb.isdigit() else None)
