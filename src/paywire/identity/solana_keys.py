"""The forms a Solana secret key is kept in, read into its 64-byte keypair (seed || public key).

* the keypair bytes themselves (``bytes(solders.keypair.Keypair)``);
* a ``solana-keygen`` file: a JSON array of those 64 numbers;
* base58 text of those 64 bytes (what Phantom and other wallets export as the "private key").

Every reader checks the public half belongs to the seed, so a corrupted or spliced key is refused instead of
signing as an account nobody expects. Errors (:class:`SolanaKeyError`) never quote secret material: they name
lengths, positions, the file and public keys only.
"""

from __future__ import annotations

import hmac
import json
from pathlib import Path

from paywire.errors import ConfigError
from paywire.identity.did import _B58_INDEX, b58decode, b58encode

__all__ = ["KEYPAIR_LENGTH", "SolanaKeyError", "keypair_from_base58", "public_key_of", "read_keygen_file",
           "seed_of_keypair"]

KEYPAIR_LENGTH = 64


class SolanaKeyError(ConfigError, ValueError):
    """A Solana secret key that cannot be read or does not hold together; the message says what to fix."""


def public_key_of(seed: bytes) -> bytes:
    """The 32-byte Ed25519 public key of a 32-byte seed."""
    from cryptography.hazmat.primitives import serialization

    from paywire.identity.agent import _ed25519

    key = _ed25519().Ed25519PrivateKey.from_private_bytes(seed)
    raw: bytes = key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return raw


def seed_of_keypair(keypair: bytes | bytearray | memoryview, *, what: str = "a Solana keypair") -> bytes:
    """The seed of a 64-byte keypair whose last 32 bytes are that seed's public key, else ``SolanaKeyError``."""
    data = bytes(keypair)
    if len(data) != KEYPAIR_LENGTH:
        raise SolanaKeyError(f"{what} is 64 bytes (seed then public key), got {len(data)} bytes")
    seed, public = data[:32], data[32:]
    derived = public_key_of(seed)
    if not hmac.compare_digest(derived, public):
        raise SolanaKeyError(f"{what}: its public half ({b58encode(public)}) is not the public key of its secret "
                             f"half ({b58encode(derived)}); the key is corrupted or spliced from two keys")
    return seed


def read_keygen_file(path: str | Path) -> bytes:
    """The 64 keypair bytes of a ``solana-keygen`` JSON file (an array of 64 integers 0..255; ``~`` expands)."""
    where = f"solana-keygen file {path}"
    try:
        text = Path(path).expanduser().read_text(encoding="utf-8")
    except OSError as exc:
        raise SolanaKeyError(f"cannot read {where}: {exc.strerror or type(exc).__name__}") from None
    except UnicodeDecodeError:
        raise SolanaKeyError(f"{where} is not UTF-8 text; expected a JSON array of 64 numbers") from None
    try:
        numbers = json.loads(text)
    except json.JSONDecodeError as exc:  # say where, not what (the content is the secret)
        raise SolanaKeyError(f"{where} is not JSON ({exc.msg} at line {exc.lineno} column {exc.colno}); "
                             "expected an array of 64 numbers") from None
    except ValueError:  # e.g. an integer too long to convert
        raise SolanaKeyError(f"{where} is not an array of 64 numbers") from None
    if not isinstance(numbers, list):
        raise SolanaKeyError(f"{where} holds a JSON {type(numbers).__name__}, expected an array of 64 numbers")
    if len(numbers) != KEYPAIR_LENGTH:
        raise SolanaKeyError(f"{where} holds {len(numbers)} numbers, expected 64 (seed then public key)")
    for i, n in enumerate(numbers):
        if type(n) is not int or not 0 <= n <= 255:
            raise SolanaKeyError(f"{where}: entry {i} is not a byte (an integer 0..255)")
    return bytes(numbers)


def keypair_from_base58(text: str) -> bytes:
    """The 64 keypair bytes of base58 text (a wallet's exported private key; surrounding blanks are ignored)."""
    if not isinstance(text, str):
        raise SolanaKeyError(f"a base58 Solana key is text, got {type(text).__name__}")
    body = text.strip()
    if not body:
        raise SolanaKeyError("the base58 Solana key is empty")
    bad = next((i for i, c in enumerate(body) if c not in _B58_INDEX), None)
    if bad is not None:  # say where, never which character (it is part of the secret)
        raise SolanaKeyError(f"the Solana key is not base58: character {bad + 1} of {len(body)} is outside the "
                             "base58 alphabet")
    data = b58decode(body)
    if len(data) == 32:
        raise SolanaKeyError("the base58 text decodes to 32 bytes: that is a Solana address (a public key) or a "
                             "bare seed, not an exported secret key; give the 64-byte secret key (e.g. Phantom's "
                             "export) or use SolanaKey(seed) for a seed")
    if len(data) != KEYPAIR_LENGTH:
        raise SolanaKeyError(f"the base58 Solana key decodes to {len(data)} bytes, expected 64 (seed then public "
                             "key)")
    return data
