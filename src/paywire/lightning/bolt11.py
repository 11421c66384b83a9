"""Minimal BOLT11 decoding: network, amount, timestamp, expiry, payment hash, description.

Enough for a buyer to sanity-check an invoice before paying and for a seller to cross-check what its node
issued. The node signature is *not* verified (the payment hash is what binds the proof).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from decimal import Decimal
from typing import Final

from paywire.errors import WireError

_CHARSET: Final = "qpzry9x8gf2tvdw0s3jn54khce6mua7l"
_MULT: Final = {"m": Decimal("0.001"), "u": Decimal("0.000001"), "n": Decimal("0.000000001"),
                "p": Decimal("0.000000000001")}
_NETWORKS: Final = {"bc": "mainnet", "tb": "testnet", "tbs": "signet", "bcrt": "regtest", "sb": "simnet"}
_HRP_RE: Final = re.compile(r"ln(bcrt|tbs|bc|tb|sb)(\d+[munp]?)?")
DEFAULT_EXPIRY: Final = 3600


@dataclass(frozen=True, slots=True)
class DecodedInvoice:
    network: str
    amount_msat: int | None
    timestamp: int
    expiry: int
    payment_hash: str
    description: str | None

    @property
    def expires_at(self) -> int:
        return self.timestamp + self.expiry

    @property
    def amount_sat(self) -> int | None:
        return None if self.amount_msat is None else self.amount_msat // 1000


def _polymod(values: list[int]) -> int:
    gen = (0x3B6A57B2, 0x26508E6D, 0x1EA119FA, 0x3D4233DD, 0x2A1462B3)
    chk = 1
    for v in values:
        b = chk >> 25
        chk = (chk & 0x1FFFFFF) << 5 ^ v
        for i in range(5):
            chk ^= gen[i] if (b >> i) & 1 else 0
    return chk


def _hrp_expand(hrp: str) -> list[int]:
    return [ord(x) >> 5 for x in hrp] + [0] + [ord(x) & 31 for x in hrp]


def _to_int(words: list[int]) -> int:
    n = 0
    for w in words:
        n = n << 5 | w
    return n


def _to_bytes(words: list[int]) -> bytes:
    acc = bits = 0
    out = bytearray()
    for w in words:
        acc = acc << 5 | w
        bits += 5
        while bits >= 8:
            bits -= 8
            out.append((acc >> bits) & 0xFF)
    return bytes(out)


def decode_bolt11(invoice: str) -> DecodedInvoice:
    """Decode ``invoice`` (case-insensitive, optional ``lightning:`` prefix); ``WireError`` if malformed."""
    s = invoice.strip()
    if s.lower().startswith("lightning:"):
        s = s[10:]
    if s != s.lower() and s != s.upper():
        raise WireError("invalid_invoice", "mixed-case bech32")
    s = s.lower()
    pos = s.rfind("1")
    if pos < 4 or len(s) - pos < 7 + 104:
        raise WireError("invalid_invoice", "not a BOLT11 invoice")
    hrp, data = s[:pos], s[pos + 1:]
    try:
        words = [_CHARSET.index(c) for c in data]
    except ValueError:
        raise WireError("invalid_invoice", "bad bech32 character") from None
    if _polymod(_hrp_expand(hrp) + words) != 1:
        raise WireError("invalid_invoice", "bad bech32 checksum")
    m = _HRP_RE.fullmatch(hrp)
    if m is None:
        raise WireError("invalid_invoice", f"unknown invoice prefix {hrp!r}")
    network = _NETWORKS[m.group(1)]
    amount_msat: int | None = None
    if m.group(2):
        amt = m.group(2)
        value = Decimal(amt[:-1]) * _MULT[amt[-1]] if amt[-1] in _MULT else Decimal(amt)
        msat = value * 100_000_000_000
        if msat != msat.to_integral_value() or msat <= 0:
            raise WireError("invalid_invoice", "amount is not a whole number of millisatoshis")
        amount_msat = int(msat)
    body = words[:-6 - 104]  # strip checksum and the 65-byte signature
    if len(body) < 7:
        raise WireError("invalid_invoice", "missing timestamp")
    timestamp = _to_int(body[:7])
    i = 7
    payment_hash: str | None = None
    description: str | None = None
    expiry = DEFAULT_EXPIRY
    while i + 3 <= len(body):
        tag, length = _CHARSET[body[i]], body[i + 1] << 5 | body[i + 2]
        field = body[i + 3:i + 3 + length]
        if len(field) != length:
            raise WireError("invalid_invoice", "truncated tagged field")
        i += 3 + length
        if tag == "p" and length == 52 and payment_hash is None:
            payment_hash = _to_bytes(field)[:32].hex()
        elif tag == "d" and description is None:
            description = _to_bytes(field).decode("utf-8", "replace")
        elif tag == "x":
            expiry = _to_int(field)
    if payment_hash is None:
        raise WireError("invalid_invoice", "no payment hash")
    return DecodedInvoice(network, amount_msat, timestamp, expiry, payment_hash, description)
