"""C2SP tlog-checkpoint note bodies and tlog-proof files (sans-I/O)."""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Sequence
from dataclasses import dataclass

from paywire.audit.merkle import HASH_SIZE
from paywire.audit.note import Note, NoteError, parse_note

PROOF_HEADER = "c2sp.org/tlog-proof@v1"
_DECIMAL = re.compile(r"0|[1-9][0-9]*")


class FormatError(ValueError):
    """Text that is not a well-formed checkpoint or tlog-proof."""


def _int(text: str, what: str) -> int:
    if not _DECIMAL.fullmatch(text):
        raise FormatError(f"{what} {text!r} is not a decimal without leading zeroes")
    return int(text)


def _hash(text: str, what: str) -> bytes:
    try:
        raw = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise FormatError(f"{what} is not base64") from None
    if len(raw) != HASH_SIZE:
        raise FormatError(f"{what} is not a 32-byte hash")
    return raw


@dataclass(frozen=True, slots=True)
class Checkpoint:
    """A tree head: origin (the log's name), size and root hash, plus optional extension lines."""

    origin: str
    size: int
    root: bytes
    extensions: tuple[str, ...] = ()

    def body(self) -> str:
        """The note text: ``origin``, ``size``, ``base64(root)`` and any extension lines, each ending in ``\\n``."""
        lines = [self.origin, str(self.size), base64.b64encode(self.root).decode(), *self.extensions]
        return "".join(line + "\n" for line in lines)


def parse_checkpoint_body(text: str) -> Checkpoint:
    if not text.endswith("\n"):
        raise FormatError("a checkpoint ends with a newline")
    lines = text[:-1].split("\n")
    if len(lines) < 3 or any(not line for line in lines):
        raise FormatError("a checkpoint is at least three non-empty lines: origin, size, root hash")
    return Checkpoint(lines[0], _int(lines[1], "tree size"), _hash(lines[2], "the root hash"), tuple(lines[3:]))


def parse_signed_checkpoint(data: str | bytes) -> tuple[Checkpoint, Note]:
    """A signed checkpoint note → its parsed body and the note (signatures not verified here)."""
    try:
        note = parse_note(data)
    except NoteError as exc:
        raise FormatError(str(exc)) from None
    return parse_checkpoint_body(note.text), note


@dataclass(frozen=True, slots=True)
class TlogProof:
    """c2sp.org/tlog-proof: an entry's index, its inclusion proof and the signed checkpoint it leads to."""

    index: int
    proof: tuple[bytes, ...]
    checkpoint: str  # the signed checkpoint note, verbatim
    extra: bytes | None = None

    def format(self) -> str:
        lines = [PROOF_HEADER]
        if self.extra is not None:
            lines.append("extra " + base64.b64encode(self.extra).decode())
        lines.append(f"index {self.index}")
        lines.extend(base64.b64encode(h).decode() for h in self.proof)
        return "".join(line + "\n" for line in lines) + "\n" + self.checkpoint


def parse_tlog_proof(text: str) -> TlogProof:
    cut = text.find("\n\n")
    if cut < 0:
        raise FormatError("a tlog-proof has an empty line before its checkpoint")
    head, checkpoint = text[:cut].split("\n"), text[cut + 2:]
    if not head or head[0] != PROOF_HEADER:
        raise FormatError(f"a tlog-proof starts with {PROOF_HEADER!r}")
    i, extra = 1, None
    if i < len(head) and head[i].startswith("extra "):
        try:
            extra = base64.b64decode(head[i][6:], validate=True)
        except (binascii.Error, ValueError):
            raise FormatError("the extra line is not base64") from None
        i += 1
    if i >= len(head) or not head[i].startswith("index "):
        raise FormatError("a tlog-proof names the entry's index")
    index = _int(head[i][6:], "index")
    proof = tuple(_hash(line, f"proof hash {n}") for n, line in enumerate(head[i + 1:]))
    if len(proof) > 63:
        raise FormatError("an inclusion proof has at most 63 hashes")
    parse_signed_checkpoint(checkpoint)
    return TlogProof(index, proof, checkpoint, extra)


def format_add_checkpoint(old_size: int, proof: Sequence[bytes], checkpoint: str) -> str:
    """A c2sp.org/tlog-witness ``add-checkpoint`` request body."""
    lines = [f"old {old_size}", *(base64.b64encode(h).decode() for h in proof)]
    return "".join(line + "\n" for line in lines) + "\n" + checkpoint


def parse_add_checkpoint(text: str) -> tuple[int, list[bytes], str]:
    cut = text.find("\n\n")
    if cut < 0:
        raise FormatError("an add-checkpoint body has an empty line before the checkpoint")
    head = text[:cut].split("\n")
    if not head[0].startswith("old "):
        raise FormatError("an add-checkpoint body starts with 'old N'")
    old = _int(head[0][4:], "old size")
    proof = [_hash(line, "consistency proof hash") for line in head[1:]]
    if len(proof) > 63:
        raise FormatError("more than 63 consistency proof lines")
    return old, proof, text[cut + 2:]
