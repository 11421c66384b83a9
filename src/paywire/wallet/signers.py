"""Signers that are not a local key: any callable that signs a 32-byte digest (KMS, HSM, hardware wallet)."""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable

from paywire.evm.crypto import to_checksum

SignFn = Callable[[bytes], bytes] | Callable[[bytes], Awaitable[bytes]]


class CallableSigner:
    """An ``EvmSigner`` over ``sign(digest) -> 65-byte r‖s‖v`` (sync or async) for a known address."""

    def __init__(self, address: str, sign: SignFn) -> None:
        raw = address.removeprefix("0x")
        if len(raw) != 40:
            raise ValueError(f"not an EVM address: {address!r}")
        self._address = to_checksum(bytes.fromhex(raw))
        self._sign = sign

    @property
    def address(self) -> str:
        return self._address

    async def sign_digest(self, digest: bytes) -> bytes:
        result = self._sign(digest)
        if inspect.isawaitable(result):
            result = await result
        if not isinstance(result, bytes | bytearray) or len(result) < 65:
            raise ValueError("the signer callable must return the signature as bytes (65 bytes r||s||v for an EOA)")
        return bytes(result)

    def __repr__(self) -> str:
        return f"CallableSigner({self._address})"
