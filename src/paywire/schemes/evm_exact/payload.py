"""The ``exact`` EVM payload (digest §5.1; checklist 31): an EIP-3009 ``TransferWithAuthorization`` and its
signature, as ``PaymentPayload.payload`` carries them. Parsing is strict, like every x402 wire model."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Final, Self

from paywire.errors import WireError
from paywire.x402 import reasons
from paywire.x402.models import _get, _p, _req_address, _req_amount, _root, _type_error, _Wire

_NONCE_RE: Final = re.compile(r"0x[0-9a-fA-F]{64}")
_SIGNATURE_RE: Final = re.compile(r"0x(?:[0-9a-fA-F]{2}){2,}")


def _req_hex(d: dict[str, Any], key: str, path: str, pattern: re.Pattern[str], expected: str) -> bytes:
    value = _get(d, key, path)
    if not isinstance(value, str):
        raise _type_error(_p(path, key), expected, value)
    if pattern.fullmatch(value) is None:
        raise WireError(reasons.INVALID_PAYLOAD, f"{_p(path, key)} must be {expected}")
    return bytes.fromhex(value[2:])


@dataclass(frozen=True, slots=True)
class Eip3009Authorization(_Wire):
    """``TransferWithAuthorization`` fields: ``from``/``to`` EVM addresses, ``value``/``validAfter``/
    ``validBefore`` canonical decimal strings < 2**256, ``nonce`` ``0x`` + 64 hex (32 bytes)."""

    from_: str
    to: str
    value: int
    valid_after: int
    valid_before: int
    nonce: bytes

    @classmethod
    def _parse(cls, obj: object, path: str, trusted: bool) -> Self:
        d = _root(obj, path)
        return cls(
            from_=_req_address(d, "from", path, True),
            to=_req_address(d, "to", path, True),
            value=_req_amount(d, "value", path),
            valid_after=_req_amount(d, "validAfter", path),
            valid_before=_req_amount(d, "validBefore", path),
            nonce=_req_hex(d, "nonce", path, _NONCE_RE, "0x + 64 hex digits"),
        )

    def to_wire(self) -> dict[str, Any]:
        """Wire form; nonce as lowercase ``0x`` hex."""
        return {
            "from": self.from_,
            "to": self.to,
            "value": str(self.value),
            "validAfter": str(self.valid_after),
            "validBefore": str(self.valid_before),
            "nonce": "0x" + self.nonce.hex(),
        }


@dataclass(frozen=True, slots=True)
class ExactEvmPayload(_Wire):
    """``PaymentPayload.payload`` for exact/EVM via EIP-3009: ``{signature, authorization}``.

    ``signature`` is ``0x`` + whole bytes of hex, at least 2 bytes (65-byte EOA, EIP-1271 or
    ERC-6492-wrapped); it is kept as bytes and re-emitted as lowercase hex.
    """

    signature: bytes
    authorization: Eip3009Authorization

    @classmethod
    def _parse(cls, obj: object, path: str, trusted: bool) -> Self:
        d = _root(obj, path)
        signature = _req_hex(d, "signature", path, _SIGNATURE_RE, "0x + an even number (>= 4) of hex digits")
        authorization = Eip3009Authorization._parse(
            _get(d, "authorization", path), _p(path, "authorization"), trusted
        )
        return cls(signature, authorization)

    def to_wire(self) -> dict[str, Any]:
        """Wire form; signature as lowercase ``0x`` hex."""
        return {"signature": "0x" + self.signature.hex(), "authorization": self.authorization.to_wire()}

__all__ = ["Eip3009Authorization", "ExactEvmPayload"]
