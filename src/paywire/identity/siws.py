"""Sign-In With Solana (SIWS) messages for the x402 ``sign-in-with-x`` extension (CAIP-122, ``solana:`` chains).

The text follows the x402 SDKs' SIWS form: the EIP-4361 layout with ``Solana account``, the base58 address, the
chain's genesis-hash reference as ``Chain ID``, and optional lines only when they have a value. The wallet signs
the UTF-8 text itself with Ed25519; the signature travels base58. :func:`parse_siws_message` reads a message
back strictly; :class:`SolanaKey` is a buyer's Ed25519 key (``cryptography``, the ``identity`` extra).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from paywire.identity.did import DidError, b58decode, b58encode
from paywire.identity.siwe import _DOMAIN, _NONCE, _RFC3339, _URI, MAX_MESSAGE, SiweError, parse_time

SIWS_SUFFIX = " wants you to sign in with your Solana account:"
_B58ISH = re.compile(r"[1-9A-HJ-NP-Za-km-z]{32,44}")  # a 32-byte key or genesis hash in base58


def solana_address(text: object) -> bytes | None:
    """The 32-byte public key of a canonical base58 Solana address, else None."""
    if not isinstance(text, str) or _B58ISH.fullmatch(text) is None:
        return None
    try:
        raw = b58decode(text)
    except DidError:
        return None
    return raw if len(raw) == 32 and b58encode(raw) == text else None


def solana_reference(network: object) -> str | None:
    """The genesis-hash reference of a CAIP-2 ``solana:<ref>`` network, else None."""
    ns, _, ref = str(network).partition(":")
    return ref if ns == "solana" and _B58ISH.fullmatch(ref) is not None else None


@dataclass(frozen=True, slots=True)
class SiwsMessage:
    """The fields of a SIWS message (``chain_ref``: the network's reference, as in the message)."""

    domain: str
    address: str
    uri: str
    version: str
    chain_ref: str
    nonce: str
    issued_at: str
    statement: str | None = None
    expiration_time: str | None = None
    not_before: str | None = None
    request_id: str | None = None
    resources: tuple[str, ...] | None = None

    def text(self) -> str:
        """The exact text the wallet signs."""
        lines = [f"{self.domain}{SIWS_SUFFIX}", self.address, ""]
        if self.statement:
            lines += [self.statement, ""]
        lines += [f"URI: {self.uri}", f"Version: {self.version}", f"Chain ID: {self.chain_ref}",
                  f"Nonce: {self.nonce}", f"Issued At: {self.issued_at}"]
        for label, value in (("Expiration Time", self.expiration_time), ("Not Before", self.not_before),
                             ("Request ID", self.request_id)):
            if value:
                lines.append(f"{label}: {value}")
        if self.resources:
            lines += ["Resources:", *(f"- {r}" for r in self.resources)]
        return "\n".join(lines)

    def check(self) -> SiwsMessage:
        """Raise ``SiweError`` unless every field has the grammar's shape; returns self."""
        if _DOMAIN.fullmatch(self.domain) is None:
            raise SiweError(f"bad domain {self.domain[:80]!r}")
        if solana_address(self.address) is None:
            raise SiweError("the address is not a base58 Ed25519 public key")
        for name, value in (("statement", self.statement), ("request id", self.request_id)):
            if value is not None and ("\n" in value or "\r" in value):
                raise SiweError(f"the {name} must be one line")
        if _URI.fullmatch(self.uri) is None:
            raise SiweError(f"bad URI {self.uri[:80]!r}")
        if self.version != "1":
            raise SiweError(f"version must be 1, not {self.version[:10]!r}")
        if _B58ISH.fullmatch(self.chain_ref) is None:
            raise SiweError("bad Solana chain reference")
        if _NONCE.fullmatch(self.nonce) is None:
            raise SiweError("the nonce must be 8+ letters and digits")
        for value in (self.issued_at, self.expiration_time, self.not_before):
            if value is not None and (not isinstance(value, str) or _RFC3339.fullmatch(value) is None):
                raise SiweError(f"not an RFC 3339 timestamp: {str(value)[:40]!r}")
        for r in self.resources or ():
            if _URI.fullmatch(r) is None:
                raise SiweError(f"bad resource URI {r[:80]!r}")
        return self


_FIELDS = (("URI", "uri"), ("Version", "version"), ("Chain ID", "chain_ref"), ("Nonce", "nonce"),
           ("Issued At", "issued_at"), ("Expiration Time", "expiration_time"), ("Not Before", "not_before"),
           ("Request ID", "request_id"))


def parse_siws_message(text: str) -> SiwsMessage:
    """Read a SIWS message strictly (fields in order, nothing extra, canonical form); ``SiweError``."""
    if not isinstance(text, str) or len(text) > MAX_MESSAGE or "\r" in text:
        raise SiweError("not a message of at most 8 KiB without CR")
    lines = text.split("\n")
    if len(lines) < 8 or not lines[0].endswith(SIWS_SUFFIX) or lines[2] != "":
        raise SiweError("missing the 'wants you to sign in with your Solana account:' header")
    statement: str | None = None
    i = 3
    if not lines[3].startswith("URI: "):
        statement, i = lines[3], 5
        if lines[4] != "":
            raise SiweError("the statement must be followed by an empty line")
    values: dict[str, str] = {}
    order, resources = 0, None
    while i < len(lines):
        if lines[i] == "Resources:":
            resources = tuple(x[2:] for x in lines[i + 1:])
            if not all(x.startswith("- ") for x in lines[i + 1:]):
                raise SiweError("every line after 'Resources:' must be '- <uri>'")
            break
        for j, (label, name) in enumerate(_FIELDS[order:], start=order):
            if lines[i].startswith(f"{label}: "):
                values[name], order = lines[i][len(label) + 2:], j + 1
                break
        else:
            raise SiweError(f"unexpected line {lines[i][:60]!r}")
        i += 1
    missing = [n for n in ("uri", "version", "chain_ref", "nonce", "issued_at") if n not in values]
    if missing:
        raise SiweError(f"missing {', '.join(missing)}")
    msg = SiwsMessage(lines[0][:-len(SIWS_SUFFIX)], lines[1], values["uri"], values["version"], values["chain_ref"],
                      values["nonce"], values["issued_at"], statement, values.get("expiration_time"),
                      values.get("not_before"), values.get("request_id"), resources).check()
    for value in (msg.issued_at, msg.expiration_time, msg.not_before):
        if value is not None:
            parse_time(value)
    if msg.text() != text:
        raise SiweError("the message is not in canonical form")
    return msg


def siws_of(payload: Any) -> SiwsMessage:
    """The SIWS message a ``solana:`` sign-in payload stands for (checked against the grammar); ``SiweError``,
    ``KeyError`` or ``TypeError`` when it is not one."""
    ref = solana_reference(payload["chainId"])
    if ref is None:
        raise TypeError("chainId must be solana:<genesis hash>")
    fields = {k: payload[k] for k in ("domain", "address", "uri", "version", "nonce", "issuedAt")}
    optional = {k: payload.get(k) for k in ("statement", "expirationTime", "notBefore", "requestId")}
    if not all(isinstance(v, str) for v in fields.values()) or not all(
            v is None or isinstance(v, str) for v in optional.values()):
        raise TypeError("the message fields must be strings")
    resources = payload.get("resources")
    if resources is not None and not (isinstance(resources, list) and all(isinstance(r, str) for r in resources)):
        raise TypeError("resources must be a list of strings")
    return SiwsMessage(fields["domain"], fields["address"], fields["uri"], fields["version"], ref, fields["nonce"],
                       fields["issuedAt"], optional["statement"], optional["expirationTime"], optional["notBefore"],
                       optional["requestId"], tuple(resources) if resources is not None else None).check()


def verify_ed25519(public_key: bytes, signature: bytes, text: str) -> bool:
    """Whether ``signature`` is ``public_key``'s Ed25519 signature of the UTF-8 ``text``."""
    from cryptography.exceptions import InvalidSignature

    from paywire.identity.agent import _ed25519

    try:
        _ed25519().Ed25519PublicKey.from_public_bytes(public_key).verify(signature, text.encode())
    except (InvalidSignature, ValueError):
        return False
    return True


class SolanaKey:
    """A buyer's Solana account: an Ed25519 key that signs sign-in messages (``Wallet(..., solana=...)``).

    From its 32-byte seed, or from what Solana users keep (``paywire.identity.solana_keys``): the 64-byte keypair,
    a ``solana-keygen`` JSON file, a wallet's base58 export. Nothing here prints or logs the secret."""

    def __init__(self, seed: bytes) -> None:
        from paywire.identity.agent import _ed25519

        if len(seed) != 32:
            raise ValueError(f"SolanaKey(seed) takes the 32-byte Ed25519 seed, got {len(seed)} bytes (a 64-byte "
                             "keypair: SolanaKey.from_keypair_bytes, from_keygen_file, from_base58)")
        self._key = _ed25519().Ed25519PrivateKey.from_private_bytes(seed)
        from cryptography.hazmat.primitives import serialization

        raw = self._key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        self.address = b58encode(raw)
        """The base58 public key (the Solana address)."""

    @classmethod
    def generate(cls) -> SolanaKey:
        import os

        return cls(os.urandom(32))

    @classmethod
    def from_keypair_bytes(cls, keypair: bytes) -> SolanaKey:
        """From the 64-byte keypair, seed then public key (``bytes(solders.keypair.Keypair)``); the public half
        must be the seed's (``SolanaKeyError``, a ``ValueError``, otherwise)."""
        from paywire.identity.solana_keys import seed_of_keypair

        return cls(seed_of_keypair(keypair))

    @classmethod
    def from_keygen_file(cls, path: str | Path) -> SolanaKey:
        """From a ``solana-keygen`` keypair file (a JSON array of the 64 keypair bytes, e.g. ``id.json``)."""
        from paywire.identity.solana_keys import read_keygen_file, seed_of_keypair

        return cls(seed_of_keypair(read_keygen_file(path), what=f"the keypair in {path}"))

    @classmethod
    def from_base58(cls, text: str) -> SolanaKey:
        """From base58 text of the 64 keypair bytes: the private key a wallet such as Phantom exports."""
        from paywire.identity.solana_keys import keypair_from_base58, seed_of_keypair

        return cls(seed_of_keypair(keypair_from_base58(text), what="the base58 Solana key"))

    def sign_message(self, message: bytes) -> bytes:
        """The 64-byte Ed25519 signature of ``message``."""
        sig: bytes = self._key.sign(message)
        return sig

    def __repr__(self) -> str:
        return f"SolanaKey({self.address})"


__all__ = ["SIWS_SUFFIX", "SiwsMessage", "SolanaKey", "parse_siws_message", "siws_of", "solana_address",
           "solana_reference", "verify_ed25519"]
