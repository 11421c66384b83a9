"""DIDs and the :class:`Identity` value object (sans-I/O): ``did:pkh`` (CAIP-10 ``eip155`` accounts) and
``did:key`` (Ed25519, secp256k1).

An :class:`Identity` says *who* made a request and *how that was proven*: its DID, the methods that proved it
(``siwx``, ``agent-sig``, ``payment``) and the wallet addresses linked to it. It is what the seller flow hands
to handlers (``PaymentInfo.identity``) and writes to the ledger (``seller_payments.identity``: the DID).

An identity with no proofs is a *claim* (:meth:`Identity.claim`: an MPP ``lightning/charge`` credential's
``source``, which the payment does not prove): it is recorded as ``claimed:<did>`` (:attr:`Identity.recorded`),
handed to handlers as ``PaymentInfo.claimed_identity``, and never counts as proof (allowlists, per-identity
prices, free quotas and ``identity="required"`` read proven identities only).

Only parsing and formatting live here; proofs are checked by :mod:`paywire.identity.siwx` and friends.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Final

from paywire.errors import WireError
from paywire.evm.crypto import keccak256, to_checksum

ED25519_PUB: Final = 0xED
SECP256K1_PUB: Final = 0xE7
_B58 = "123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz"
_B58_INDEX = {c: i for i, c in enumerate(_B58)}
_PKH_RE = re.compile(r"did:pkh:eip155:([1-9][0-9]{0,77}):(0x[0-9a-fA-F]{40})")
_ADDRESS_RE = re.compile(r"0x[0-9a-fA-F]{40}")
_MAX_DID = 512
CLAIMED_PREFIX: Final = "claimed:"
"""How the ledger labels a DID the payer named but did not prove (``claimed:did:key:…``)."""


class DidError(WireError):
    """A DID that is malformed, of an unsupported method, or whose key does not decode."""

    def __init__(self, detail: str) -> None:
        super().__init__("invalid_did", detail)


def b58encode(data: bytes) -> str:
    """Base58 (Bitcoin alphabet)."""
    n = int.from_bytes(data, "big")
    out = []
    while n:
        n, r = divmod(n, 58)
        out.append(_B58[r])
    zeros = len(data) - len(data.lstrip(b"\0"))
    return "1" * zeros + "".join(reversed(out))


def b58decode(text: str) -> bytes:
    """Inverse of :func:`b58encode`; ``DidError`` on a character outside the alphabet."""
    n = 0
    for c in text:
        i = _B58_INDEX.get(c)
        if i is None:
            raise DidError(f"not base58: {c!r}")
        n = n * 58 + i
    zeros = len(text) - len(text.lstrip("1"))
    body = n.to_bytes((n.bit_length() + 7) // 8, "big") if n else b""
    return b"\0" * zeros + body


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        out.append(b | (0x80 if n else 0))
        if not n:
            return bytes(out)


@dataclass(frozen=True, slots=True)
class DidKey:
    """A decoded ``did:key``: its key type (``"Ed25519"`` | ``"secp256k1"``) and raw public key (Ed25519: 32
    bytes; secp256k1: 33 bytes, compressed)."""

    did: str
    key_type: str
    public_key: bytes

    @property
    def address(self) -> str | None:
        """The Ethereum address of a secp256k1 key (None for Ed25519)."""
        if self.key_type != "secp256k1":
            return None
        import coincurve

        full = coincurve.PublicKey(self.public_key).format(compressed=False)[1:]
        return to_checksum(keccak256(full)[12:])


def did_key(key_type: str, public_key: bytes) -> str:
    """``did:key:z…`` of an Ed25519 (32-byte) or compressed secp256k1 (33-byte) public key."""
    if key_type == "Ed25519" and len(public_key) == 32:
        code = ED25519_PUB
    elif key_type == "secp256k1" and len(public_key) == 33 and public_key[0] in (2, 3):
        code = SECP256K1_PUB
    else:
        raise DidError(f"did:key takes a 32-byte Ed25519 or 33-byte compressed secp256k1 key, not {key_type} "
                       f"of {len(public_key)} bytes")
    return "did:key:z" + b58encode(_varint(code) + public_key)


def parse_did_key(did: str) -> DidKey:
    """Decode a ``did:key`` (multibase base58btc, multicodec ``ed25519-pub`` / ``secp256k1-pub``)."""
    if len(did) > _MAX_DID or not did.startswith("did:key:z"):
        raise DidError(f"not a base58btc did:key: {did[:80]!r}")
    raw = b58decode(did[len("did:key:z"):])
    if raw[:2] == _varint(ED25519_PUB) and len(raw) == 34:
        return DidKey(did, "Ed25519", raw[2:])
    if raw[:2] == _varint(SECP256K1_PUB) and len(raw) == 35 and raw[2] in (2, 3):
        import coincurve

        try:
            coincurve.PublicKey(raw[2:])
        except ValueError:
            raise DidError("did:key: the secp256k1 key is not a point on the curve") from None
        return DidKey(did, "secp256k1", raw[2:])
    raise DidError("did:key: only Ed25519 (0xed) and secp256k1 (0xe7) keys of the right length are supported")


def did_pkh(network: str, address: str) -> str:
    """``did:pkh:eip155:<chain id>:<checksummed address>`` of an EVM account on a CAIP-2 ``eip155`` network."""
    ns, _, ref = network.partition(":")
    if ns != "eip155" or not ref.isdigit():
        raise DidError(f"did:pkh: only eip155 accounts are supported, not {network!r}")
    if not isinstance(address, str) or _ADDRESS_RE.fullmatch(address) is None:
        raise DidError(f"did:pkh: not an EVM address: {address!r}")
    return f"did:pkh:eip155:{int(ref)}:{to_checksum(address)}"


def parse_did_pkh(did: str) -> tuple[str, str]:
    """(CAIP-2 network, checksummed address) of an ``eip155`` ``did:pkh``. A mixed-case address must carry a
    valid EIP-55 checksum."""
    m = _PKH_RE.fullmatch(did) if len(did) <= _MAX_DID else None
    if m is None:
        raise DidError(f"not an eip155 did:pkh: {did[:80]!r}")
    address = m.group(2)
    checksummed = to_checksum(address)
    hexpart = address[2:]
    if hexpart != hexpart.lower() and hexpart != hexpart.upper() and address != checksummed:
        raise DidError("did:pkh: the address has a wrong EIP-55 checksum")
    return f"eip155:{m.group(1)}", checksummed


@dataclass(frozen=True, slots=True)
class Identity:
    """Who made a request: a DID, the methods that proved it, the wallet addresses linked to it."""

    did: str
    proofs: tuple[str, ...] = ()
    addresses: tuple[str, ...] = ()

    @classmethod
    def from_account(cls, network: str, address: str, proof: str) -> Identity:
        """An EVM account proven by ``proof`` (``"siwx"``, ``"payment"`` …): its ``did:pkh``."""
        did = did_pkh(network, address)
        return cls(did, (proof,), (did.rsplit(":", 1)[1],))

    @classmethod
    def from_did(cls, did: str, proof: str) -> Identity:
        """A ``did:pkh`` or ``did:key`` proven by ``proof``; linked addresses are those the DID names."""
        if did.startswith("did:pkh:"):
            return cls(did, (proof,), (parse_did_pkh(did)[1],))
        if did.startswith("did:key:"):
            address = parse_did_key(did).address
            return cls(did, (proof,), (address,) if address else ())
        if did.startswith("did:web:"):
            from paywire.identity.didweb import document_url

            document_url(did)  # the shape is checked here; its keys are DidWebResolver's
            return cls(did, (proof,), ())
        raise DidError(f"unsupported DID method: {did[:80]!r} (did:pkh, did:key and did:web are)")

    @classmethod
    def claim(cls, did: str) -> Identity:
        """A DID the payer named without proving it (no proofs, no linked addresses): a well-formed
        ``did:pkh`` / ``did:key`` / ``did:web``, else :class:`DidError`."""
        if len(did) > _MAX_DID:
            raise DidError("DID too long")
        return cls(cls.from_did(did, "").did)

    @property
    def proven(self) -> bool:
        """Whether some method proved this identity (a :meth:`claim` is not proven)."""
        return bool(self.proofs)

    @property
    def recorded(self) -> str:
        """The ledger's value: the DID, or ``claimed:<did>`` for an unproven claim."""
        return self.did if self.proofs else CLAIMED_PREFIX + self.did

    def also(self, proof: str) -> Identity:
        """The same identity, also proven by ``proof``."""
        return self if proof in self.proofs else Identity(self.did, (*self.proofs, proof), self.addresses)

    @staticmethod
    def split_recorded(value: str | None) -> tuple[str | None, str | None]:
        """A ledger value as (proven DID, claimed DID): at most one of them is set."""
        if value is not None and value.startswith(CLAIMED_PREFIX):
            return None, value[len(CLAIMED_PREFIX):]
        return value, None

    def controls(self, address: str) -> bool:
        """Whether ``address`` is one of the linked wallet addresses (case-insensitive)."""
        low = address.lower()
        return any(a.lower() == low for a in self.addresses)


__all__ = ["CLAIMED_PREFIX", "DidError", "DidKey", "Identity", "b58decode", "b58encode", "did_key", "did_pkh", "parse_did_key",
           "parse_did_pkh"]
