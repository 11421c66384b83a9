"""Lightning for tests: a real LNbits (FakeWallet funding source) started per test module, or a skip; and a
local invoice-signing node (real signed regtest BOLT11s, preimages kept by the node) for tests that need many
invoices fast and no network."""

from __future__ import annotations

import contextlib
import hashlib
import os
import time
from collections.abc import AsyncIterator
from pathlib import Path

import coincurve
import pytest

from paywire.lightning.base import Invoice, InvoiceStatus, LightningError, PaymentResult
from paywire.lightning.lnbits_dev import LnbitsDev, LnbitsUnavailable

VENV = Path(__file__).resolve().parents[1] / ".paywire" / "lnbits-venv"
_CHARSET = "qpzry9x8gf2tvdw0s3jn54khce6mua7l"


@contextlib.asynccontextmanager
async def lnbits_node(payer_sats: int = 100_000) -> AsyncIterator[LnbitsDev]:
    """LNbits on a free port with a funded payer wallet and an empty payee wallet; skips if it cannot run."""
    ln = LnbitsDev(venv=VENV, payer_sats=payer_sats, startup_timeout=300)  # a busy machine: run, do not skip
    try:
        await ln.start()
    except LnbitsUnavailable as exc:
        await ln.stop()
        pytest.skip(f"LNbits cannot run here: {exc}")
    try:
        yield ln
    finally:
        await ln.stop()


# ------------------------------------------------------------------------------ a local invoice-signing node


_GEN = (0x3B6A57B2, 0x26508E6D, 0x1EA119FA, 0x3D4233DD, 0x2A1462B3)


def _gen_xor(top: int) -> int:
    out = 0
    for i, g in enumerate(_GEN):
        if (top >> i) & 1:
            out ^= g
    return out


_GEN_XOR = [_gen_xor(top) for top in range(32)]


def _polymod(values: list[int]) -> int:
    """The bech32 checksum polynomial (BIP-173), one table lookup per 5-bit word."""
    chk = 1
    for v in values:
        chk = (chk & 0x1FFFFFF) << 5 ^ v ^ _GEN_XOR[chk >> 25]
    return chk


def _words(data: bytes) -> list[int]:
    """8-bit bytes as 5-bit words (zero-padded at the end)."""
    n, bits = int.from_bytes(data, "big"), len(data) * 8
    pad = -bits % 5
    n <<= pad
    return [(n >> s) & 31 for s in range(bits + pad - 5, -1, -5)]


def _int_words(n: int, count: int | None = None) -> list[int]:
    out = []
    while n or not out:
        out.append(n & 31)
        n >>= 5
    out.reverse()
    return [0] * ((count or len(out)) - len(out)) + out


def _tag(code: str, words: list[int]) -> list[int]:
    return [_CHARSET.index(code), *_int_words(len(words), 2), *words]


def encode_invoice(key: coincurve.PrivateKey, payment_hash: bytes, amount_msat: int, *, timestamp: int,
                   expiry: int, memo: str) -> str:
    """A signed regtest BOLT11 (tags p, s, d, x), amount in pico-BTC units (exact for any msat)."""
    hrp = f"lnbcrt{amount_msat * 10}p"
    data = [*_int_words(timestamp, 7), *_tag("p", _words(payment_hash)), *_tag("s", _words(os.urandom(32))),
            *_tag("d", _words(memo.encode())), *_tag("x", _int_words(expiry))]
    n, bits = 0, 0
    for w in data:
        n, bits = n << 5 | w, bits + 5
    pad = -bits % 8
    signed = hrp.encode() + (n << pad).to_bytes((bits + pad) // 8, "big")
    sig = key.sign_recoverable(hashlib.sha256(signed).digest(), hasher=None)  # r ‖ s ‖ recovery id
    data += _words(sig)
    hrp_x = [ord(x) >> 5 for x in hrp] + [0] + [ord(x) & 31 for x in hrp]
    check = _polymod(hrp_x + data + [0] * 6) ^ 1
    data += [(check >> 5 * (5 - i)) & 31 for i in range(6)]
    return hrp + "1" + "".join(_CHARSET[w] for w in data)


class SigningNode:
    """A payee node without a network: issues real signed regtest invoices, keeps their preimages, and marks
    one paid when :meth:`pay` hands its preimage to the payer (what a channel would do)."""

    def __init__(self) -> None:
        self.key = coincurve.PrivateKey(os.urandom(32))
        self.preimages: dict[str, str] = {}
        self.paid: set[str] = set()

    async def create_invoice(self, amount_sat: int, memo: str = "", expiry: int = 600) -> Invoice:
        pre = os.urandom(32)
        h = hashlib.sha256(pre).digest()
        now = int(time.time())
        bolt11 = encode_invoice(self.key, h, amount_sat * 1000, timestamp=now, expiry=expiry, memo=memo)
        self.preimages[h.hex()] = pre.hex()
        return Invoice(bolt11, h.hex(), amount_sat, float(now + expiry))

    def pay(self, payment_hash: str) -> str:
        """Settle the invoice; returns its preimage (the payer's proof)."""
        if payment_hash not in self.preimages:
            raise LightningError(f"no invoice {payment_hash[:12]}…")
        self.paid.add(payment_hash)
        return self.preimages[payment_hash]

    async def lookup_invoice(self, payment_hash: str) -> InvoiceStatus:
        paid = payment_hash in self.paid
        return InvoiceStatus(payment_hash, paid, self.preimages.get(payment_hash) if paid else None)

    async def pay_invoice(self, bolt11_str: str, *, max_fee_sat: int = 10) -> PaymentResult:
        raise LightningError("this node only receives")

    async def aclose(self) -> None:
        return None
