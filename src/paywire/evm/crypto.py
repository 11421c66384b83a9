"""secp256k1 and keccak primitives on libsecp256k1 (via coincurve) with no per-call allocation overhead."""

from __future__ import annotations

import functools
import threading
from typing import Any

import coincurve
from coincurve._libsecp256k1 import ffi, lib
from coincurve.context import GLOBAL_CONTEXT

try:  # safe-pysha3 is ~4x faster than pycryptodome for short inputs
    import sha3 as _sha3

    def keccak256(data: bytes) -> bytes:
        """Keccak-256 (Ethereum's hash)."""
        return _sha3.keccak_256(data).digest()  # type: ignore[no-any-return]

except ImportError:  # pragma: no cover - depends on the platform's wheels
    from Crypto.Hash import keccak as _keccak

    def keccak256(data: bytes) -> bytes:
        """Keccak-256 (Ethereum's hash)."""
        return _keccak.new(digest_bits=256, data=data).digest()


SECP256K1_N = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141
_HALF_N = SECP256K1_N // 2
_CTX: Any = GLOBAL_CONTEXT.ctx
_local = threading.local()


def _buffers() -> tuple[Any, Any, Any, Any]:
    bufs = getattr(_local, "bufs", None)
    if bufs is None:
        bufs = (
            ffi.new("secp256k1_ecdsa_recoverable_signature *"),
            ffi.new("secp256k1_pubkey *"),
            ffi.new("unsigned char[65]"),
            ffi.new("size_t *"),
        )
        _local.bufs = bufs
    return bufs  # type: ignore[no-any-return,unused-ignore]


def recover_pubkey(digest: bytes, signature: bytes) -> bytes | None:
    """Uncompressed public key (64 bytes, no prefix) that signed ``digest``, or None.

    ``signature`` is 65 bytes r‖s‖v with v in {0, 1, 27, 28}; high-s signatures are rejected (EIP-2).
    """
    if len(signature) != 65 or len(digest) != 32:
        return None
    v = signature[64]
    if v >= 27:
        v -= 27
    if v not in (0, 1):
        return None
    if int.from_bytes(signature[32:64], "big") > _HALF_N:
        return None
    rsig, pub, out, outlen = _buffers()
    if not lib.secp256k1_ecdsa_recoverable_signature_parse_compact(_CTX, rsig, signature[:64], v):
        return None
    if not lib.secp256k1_ecdsa_recover(_CTX, pub, rsig, digest):
        return None
    outlen[0] = 65
    lib.secp256k1_ec_pubkey_serialize(_CTX, out, outlen, pub, lib.SECP256K1_EC_UNCOMPRESSED)
    return bytes(ffi.buffer(out, 65))[1:]


def recover_address(digest: bytes, signature: bytes) -> bytes | None:
    """20-byte address that signed ``digest``, or None when the signature is malformed."""
    pub = recover_pubkey(digest, signature)
    return None if pub is None else keccak256(pub)[12:]


def address_of_key(private_key: bytes) -> bytes:
    """20-byte address of a 32-byte private key."""
    return keccak256(coincurve.PrivateKey(private_key).public_key.format(False)[1:])[12:]


def sign_digest(private_key: bytes | coincurve.PrivateKey, digest: bytes) -> bytes:
    """65-byte r‖s‖v signature (v = 27/28, low-s) of a 32-byte digest. Pass a :func:`signing_key` to sign
    repeatedly with one key: building it derives the public key, about two thirds of a signature's cost."""
    key = private_key if isinstance(private_key, coincurve.PrivateKey) else coincurve.PrivateKey(private_key)
    sig = key.sign_recoverable(digest, hasher=None)
    return sig[:64] + bytes([sig[64] + 27])


def signing_key(private_key: bytes) -> coincurve.PrivateKey:
    """A 32-byte private key ready for :func:`sign_digest` (its public key derived once)."""
    return coincurve.PrivateKey(private_key)


def to_checksum(address: bytes | str) -> str:
    """EIP-55 checksummed 0x address (the few addresses a service sees over and over come from a bounded cache)."""
    if isinstance(address, str):
        return _checksum_of_text(address)
    return _checksum_of_hex(address.hex())


@functools.lru_cache(maxsize=4096)
def _checksum_of_text(address: str) -> str:
    return _checksum_of_hex(address.lower().removeprefix("0x"))


def _checksum_of_hex(raw: str) -> str:
    h = keccak256(raw.encode()).hex()
    return "0x" + "".join(c.upper() if d in "89abcdef" else c for c, d in zip(raw, h[:40], strict=True))


def address_bytes(address: str) -> bytes:
    """20 raw bytes of a 0x-hex address (any case); raises ValueError when malformed."""
    raw = bytes.fromhex(address.removeprefix("0x").removeprefix("0X"))
    if len(raw) != 20:
        raise ValueError(f"not a 20-byte address: {address!r}")
    return raw
