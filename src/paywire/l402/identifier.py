"""The L402 macaroon identifier: ``uint16 version=0 ‖ payment_hash[32] ‖ token_id[32]`` (66 bytes, BE)."""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from typing import Final

from paywire.errors import WireError

VERSION: Final = 0
LENGTH: Final = 66


@dataclass(frozen=True, slots=True)
class Identifier:
    payment_hash: bytes
    token_id: bytes
    version: int = VERSION

    @classmethod
    def new(cls, payment_hash: bytes) -> Identifier:
        return cls(payment_hash, os.urandom(32))

    def encode(self) -> bytes:
        if len(self.payment_hash) != 32 or len(self.token_id) != 32:
            raise ValueError("payment hash and token id are 32 bytes each")
        return self.version.to_bytes(2, "big") + self.payment_hash + self.token_id

    @classmethod
    def decode(cls, raw: bytes) -> Identifier:
        """Checklist 96; an unknown version is refused (as aperture does)."""
        if len(raw) < 2:
            raise WireError("invalid_identifier", "identifier too short")
        version = int.from_bytes(raw[:2], "big")
        if version != VERSION:
            raise WireError("invalid_identifier", f"unknown identifier version {version}")
        if len(raw) != LENGTH:
            raise WireError("invalid_identifier", f"identifier must be {LENGTH} bytes")
        return cls(raw[2:34], raw[34:66], version)

    @property
    def key_id(self) -> str:
        """Where the root key is stored: ``sha256(identifier)`` hex (digest §10.2)."""
        return hashlib.sha256(self.encode()).hexdigest()
