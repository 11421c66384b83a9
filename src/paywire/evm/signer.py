"""Who signs for an EVM wallet: a local key, or anything (KMS, hardware) that signs a digest."""

from __future__ import annotations

import os
from typing import Protocol, runtime_checkable

from paywire.evm.crypto import address_of_key, sign_digest, signing_key, to_checksum


@runtime_checkable
class EvmSigner(Protocol):
    """Signs 32-byte EIP-712 digests for one address."""

    @property
    def address(self) -> str: ...

    async def sign_digest(self, digest: bytes) -> bytes:
        """Return a 65-byte r‖s‖v signature, or an EIP-1271 signature for contract wallets."""
        ...


class LocalSigner:
    """An in-memory secp256k1 key."""

    __slots__ = ("_address", "_key", "_signing")

    def __init__(self, private_key: bytes | str) -> None:
        key = bytes.fromhex(private_key.removeprefix("0x")) if isinstance(private_key, str) else private_key
        if len(key) != 32:
            raise ValueError("a private key is 32 bytes")
        self._key = key
        self._signing = signing_key(key)  # derived once: every signature reuses it
        self._address = to_checksum(address_of_key(key))

    @classmethod
    def generate(cls) -> LocalSigner:
        """A fresh random key."""
        return cls(os.urandom(32))

    @property
    def address(self) -> str:
        return self._address

    @property
    def private_key(self) -> bytes:
        return self._key

    def sign_digest_sync(self, digest: bytes) -> bytes:
        return sign_digest(self._signing, digest)

    async def sign_digest(self, digest: bytes) -> bytes:
        return sign_digest(self._signing, digest)

    def __repr__(self) -> str:
        return f"LocalSigner({self._address})"
