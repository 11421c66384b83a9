"""Which EIP-3009 authorization a payment spends: its identity is (network, token, payer, nonce). Pure."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from paywire.errors import WireError
from paywire.schemes.evm_exact.payload import ExactEvmPayload


def authorization_key(network: str, asset: str, payload: Mapping[str, Any]) -> str | None:
    """``exact:<network>:<token>:<payer>:<nonce>`` (addresses lower-case), or None when ``payload`` is not an
    EIP-3009 ``{signature, authorization}`` object.

    The token contract enforces one use per (payer, nonce), so two payments with the same key can settle at
    most once between them: this is the key a seller claims before running a paid handler.
    """
    found = authorization_key_and_payer(network, asset, payload)
    return found[0] if found is not None else None


def authorization_key_and_payer(network: str, asset: str, payload: Mapping[str, Any]) -> tuple[str, str] | None:
    """(:func:`authorization_key`, ``authorization.from``) from one parse of the payload, or None."""
    try:
        a = ExactEvmPayload.from_wire(dict(payload)).authorization
    except WireError:
        return None
    return f"exact:{network}:{asset.lower()}:{a.from_.lower()}:0x{a.nonce.hex()}", a.from_


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
