"""C2SP signed notes (c2sp.org/signed-note) with Ed25519 keys, and timestamped Ed25519 cosignatures
(c2sp.org/tlog-cosignature, signature type 0x04). Sans-I/O: text in, text out.

Keys travel as text: a *vkey* ``name+hexid+base64(type ‖ public key)`` (the spec's verifier key) and, for
signing, ``PRIVATE+KEY+name+hexid+base64(type ‖ 32-byte seed)`` (the form Go's ``sumdb/note`` reads).
"""

from __future__ import annotations

import base64
import binascii
import inspect
import re
import struct
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from hashlib import sha256

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat, PublicFormat

ED25519 = 0x01
"""Signature type of plain Ed25519 note signatures (a log's checkpoint signature)."""
COSIGNATURE_V1 = 0x04
"""Signature type of timestamped Ed25519 checkpoint cosignatures (a witness)."""
DASH = "\u2014"
MAX_SIGNATURES = 64
_NAME_BAD = re.compile(r"[\s+]")
_CONTROL = re.compile(r"[\x00-\x09\x0b-\x1f]")

SignFn = Callable[[bytes], bytes] | Callable[[bytes], Awaitable[bytes]]


class NoteError(ValueError):
    """A malformed note or key, or a signature that does not verify."""


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _unb64(text: str, what: str) -> bytes:
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise NoteError(f"{what} is not base64") from None


def check_name(name: str) -> str:
    if not name or _NAME_BAD.search(name):
        raise NoteError(f"key name {name!r} must be non-empty, without spaces or '+'")
    return name


def key_id(name: str, sig_type: int, public: bytes) -> bytes:
    """``SHA-256(name ‖ 0x0A ‖ type ‖ public key)[:4]``."""
    return sha256(name.encode() + b"\n" + bytes([sig_type]) + public).digest()[:4]


def cosignature_message(body: str, timestamp: int) -> bytes:
    """What a v1 cosignature signs: ``cosignature/v1``, ``time T`` and the checkpoint body."""
    return f"cosignature/v1\ntime {timestamp}\n".encode() + body.encode()


# ------------------------------------------------------------------------------------------- keys


@dataclass(frozen=True, slots=True)
class Verifier:
    """A public key that checks note signatures: a log key (type 0x01) or a cosigner key (type 0x04)."""

    name: str
    sig_type: int
    public: bytes

    def __post_init__(self) -> None:
        check_name(self.name)
        if self.sig_type not in (ED25519, COSIGNATURE_V1):
            raise NoteError(f"signature type 0x{self.sig_type:02x} is not supported (Ed25519 0x01, cosignature 0x04)")
        if len(self.public) != 32:
            raise NoteError("an Ed25519 public key is 32 bytes")

    @property
    def key_id(self) -> bytes:
        return key_id(self.name, self.sig_type, self.public)

    @property
    def vkey(self) -> str:
        return f"{self.name}+{self.key_id.hex()}+{_b64(bytes([self.sig_type]) + self.public)}"

    def verify(self, text: str, signature: bytes) -> int | None:
        """Check ``signature`` (without the key id) over note ``text``; the cosignature's timestamp (or 0 for a
        plain signature). Raises :class:`NoteError` if it does not verify."""
        key = Ed25519PublicKey.from_public_bytes(self.public)
        if self.sig_type == COSIGNATURE_V1:
            if len(signature) != 72:
                raise NoteError(f"cosignature by {self.name} is not 8 + 64 bytes")
            timestamp = int.from_bytes(signature[:8], "big")
            if timestamp >= 2**63:
                raise NoteError(f"cosignature by {self.name} has a timestamp beyond 2^63-1")
            message, sig = cosignature_message(text, timestamp), signature[8:]
        else:
            if len(signature) != 64:
                raise NoteError(f"signature by {self.name} is not 64 bytes")
            timestamp, message, sig = 0, text.encode(), signature
        try:
            key.verify(sig, message)
        except InvalidSignature:
            raise NoteError(f"the signature by {self.name} does not verify") from None
        return timestamp


def parse_vkey(text: str) -> Verifier:
    """``name+hexid+base64(type ‖ key)`` → :class:`Verifier` (the id must match the key)."""
    parts = text.strip().split("+", 2)
    if len(parts) != 3:
        raise NoteError(f"a verifier key is name+id+key, got {text!r}")
    name, hexid, material = parts
    raw = _unb64(material, "the verifier key")
    if not raw:
        raise NoteError("the verifier key is empty")
    v = Verifier(name, raw[0], raw[1:])
    if hexid.lower() != v.key_id.hex() or len(hexid) != 8:
        raise NoteError(f"verifier key {name}: id {hexid} does not match the key (expected {v.key_id.hex()})")
    return v


class Signer:
    """Signs notes as ``name``: an Ed25519 key in this process, or a callable (KMS, HSM) with its public key."""

    def __init__(self, name: str, public: bytes, sign: SignFn, *, sig_type: int = ED25519) -> None:
        self.verifier = Verifier(check_name(name), sig_type, public)
        self._sign = sign

    @classmethod
    def generate(cls, name: str, *, sig_type: int = ED25519) -> Signer:
        return cls.from_seed(name, Ed25519PrivateKey.generate().private_bytes(
            Encoding.Raw, PrivateFormat.Raw, NoEncryption()), sig_type=sig_type)

    @classmethod
    def from_seed(cls, name: str, seed: bytes, *, sig_type: int = ED25519) -> Signer:
        if len(seed) != 32:
            raise NoteError("an Ed25519 private key is a 32-byte seed")
        key = Ed25519PrivateKey.from_private_bytes(seed)
        signer = cls(name, key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw), key.sign,
                     sig_type=sig_type)
        signer._seed = seed
        return signer

    _seed: bytes | None = None

    @property
    def name(self) -> str:
        return self.verifier.name

    @property
    def skey(self) -> str:
        """``PRIVATE+KEY+name+hexid+base64(type ‖ seed)``; only for keys held in this process."""
        if self._seed is None:
            raise NoteError(f"the key of {self.name} is held outside this process")
        v = self.verifier
        return f"PRIVATE+KEY+{v.name}+{v.key_id.hex()}+{_b64(bytes([v.sig_type]) + self._seed)}"

    async def sign_bytes(self, message: bytes) -> bytes:
        result = self._sign(message)
        if inspect.isawaitable(result):
            result = await result
        if not isinstance(result, bytes | bytearray) or len(result) != 64:
            raise NoteError("the signer callable must return a 64-byte Ed25519 signature")
        return bytes(result)

    def __repr__(self) -> str:
        return f"Signer({self.verifier.vkey})"


def parse_skey(text: str) -> Signer:
    """``PRIVATE+KEY+name+hexid+base64(type ‖ seed)`` → :class:`Signer`."""
    parts = text.strip().split("+", 4)
    if len(parts) != 5 or parts[:2] != ["PRIVATE", "KEY"]:
        raise NoteError("a signing key is PRIVATE+KEY+name+id+key")
    _, _, name, hexid, material = parts
    raw = _unb64(material, "the signing key")
    if len(raw) != 33:
        raise NoteError("the signing key is not a type byte and a 32-byte Ed25519 seed")
    signer = Signer.from_seed(name, raw[1:], sig_type=raw[0])
    if hexid.lower() != signer.verifier.key_id.hex():
        raise NoteError(f"signing key {name}: id {hexid} does not match the key")
    return signer


# ------------------------------------------------------------------------------------------- notes


@dataclass(frozen=True, slots=True)
class Signature:
    """One signature line: ``— name base64(key id ‖ signature)``."""

    name: str
    key_id: bytes
    signature: bytes

    @property
    def line(self) -> str:
        return f"{DASH} {self.name} {_b64(self.key_id + self.signature)}\n"


@dataclass(frozen=True, slots=True)
class Note:
    """A note's text (ending in a newline) and its signature lines."""

    text: str
    signatures: tuple[Signature, ...]

    def format(self) -> str:
        return self.text + "\n" + "".join(s.line for s in self.signatures)

    def with_signatures(self, extra: Iterable[Signature]) -> Note:
        """This note plus ``extra`` signatures (a duplicate name + id replaces nothing; it is skipped)."""
        have = {(s.name, s.key_id) for s in self.signatures}
        added = [s for s in extra if (s.name, s.key_id) not in have]
        return Note(self.text, self.signatures + tuple(added))


def _check_text(text: str) -> None:
    if _CONTROL.search(text):
        raise NoteError("a note must not contain control characters other than newline")


def parse_signature_line(line: str) -> Signature:
    if not line.startswith(DASH + " "):
        raise NoteError(f"a signature line starts with '{DASH} ': {line[:40]!r}")
    parts = line[2:].split(" ")
    if len(parts) != 2:
        raise NoteError(f"a signature line is '{DASH} name base64': {line[:60]!r}")
    name, b64 = parts
    check_name(name)
    raw = _unb64(b64, f"the signature of {name}")
    if len(raw) < 5:
        raise NoteError(f"the signature of {name} is too short")
    return Signature(name, raw[:4], raw[4:])


def parse_signature_lines(block: str) -> list[Signature]:
    """Signature lines, each ending in a newline (a witness's ``add-checkpoint`` answer)."""
    if not block.endswith("\n"):
        raise NoteError("signature lines must end with a newline")
    lines = block[:-1].split("\n")
    if len(lines) > MAX_SIGNATURES:
        raise NoteError(f"more than {MAX_SIGNATURES} signatures")
    return [parse_signature_line(line) for line in lines]


def parse_note(data: str | bytes) -> Note:
    """Split a signed note into text and signatures (nothing verified yet)."""
    if isinstance(data, bytes):
        try:
            data = data.decode("utf-8")
        except UnicodeDecodeError:
            raise NoteError("a note must be UTF-8") from None
    _check_text(data)
    cut = data.rfind("\n\n")
    if cut < 0:
        raise NoteError("a note has no blank line before its signatures")
    text, block = data[:cut + 1], data[cut + 2:]
    return Note(text, tuple(parse_signature_lines(block)))


async def sign_note(text: str, signers: Sequence[Signer]) -> Note:
    """Sign ``text`` (must end in a newline) with each plain-Ed25519 signer."""
    _check_text(text)
    if not text.endswith("\n"):
        raise NoteError("note text must end with a newline")
    sigs = []
    for s in signers:
        if s.verifier.sig_type != ED25519:
            raise NoteError(f"{s.name} is a cosigner key: use cosign")
        sigs.append(Signature(s.name, s.verifier.key_id, await s.sign_bytes(text.encode())))
    return Note(text, tuple(sigs))


async def cosign(text: str, signer: Signer, timestamp: int) -> Signature:
    """A timestamped v1 cosignature over checkpoint ``text`` (c2sp.org/tlog-cosignature)."""
    if signer.verifier.sig_type != COSIGNATURE_V1:
        raise NoteError(f"{signer.name} is not a cosigner key (type 0x04)")
    if not 0 < timestamp < 2**63:
        raise NoteError("a cosignature timestamp is a positive POSIX time")
    sig = await signer.sign_bytes(cosignature_message(text, timestamp))
    return Signature(signer.name, signer.verifier.key_id, struct.pack(">Q", timestamp) + sig)


@dataclass(frozen=True, slots=True)
class Verified:
    """A signature that verified, by which key, and its timestamp (cosignatures; 0 for plain signatures)."""

    verifier: Verifier
    timestamp: int


def verify_note(note: Note, verifiers: Iterable[Verifier]) -> list[Verified]:
    """The signatures of known keys, each verified. Unknown keys are ignored; a known key whose signature fails
    raises :class:`NoteError` (the whole note is rejected), and so does a note no known key signed."""
    known = {(v.name, v.key_id): v for v in verifiers}
    out = []
    for sig in note.signatures:
        v = known.get((sig.name, sig.key_id))
        if v is None:
            continue
        timestamp = v.verify(note.text, sig.signature)
        out.append(Verified(v, timestamp or 0))
    if not out:
        raise NoteError("no signature by a known key")
    return out
