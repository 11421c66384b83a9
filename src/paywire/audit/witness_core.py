"""A witness's decision (sans-I/O): cosign a new checkpoint only if it extends the last one it cosigned.

The witness keeps, per log origin, the latest checkpoint it cosigned (size, root). A new checkpoint must carry a
valid signature by the log's key, be at least as large, and come with a consistency proof from the cosigned
size; an equal size must have the same root. Anything else is a fork or a rewrite and is refused.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass

from paywire.audit import merkle
from paywire.audit.checkpoint import Checkpoint, parse_signed_checkpoint
from paywire.audit.note import Note, NoteError, Signature, Signer, Verifier, cosign, verify_note


class WitnessRefusal(Exception):
    """The witness will not cosign: ``kind`` is ``unknown-log``, ``bad-signature``, ``shrunk``, ``fork`` or
    ``inconsistent`` (the last three mean the log rewrote history)."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(f"{kind}: {message}")
        self.kind = kind


@dataclass(frozen=True, slots=True)
class WitnessState:
    """The latest checkpoint cosigned for a log."""

    origin: str
    size: int
    root: bytes
    note: str  # the checkpoint as cosigned (log signature + this witness's cosignature)

    def to_json(self) -> str:
        return json.dumps({"origin": self.origin, "size": self.size, "root": self.root.hex(), "note": self.note})

    @classmethod
    def from_json(cls, text: str) -> WitnessState:
        d = json.loads(text)
        return cls(str(d["origin"]), int(d["size"]), bytes.fromhex(d["root"]), str(d["note"]))


@dataclass(frozen=True, slots=True)
class Cosigned:
    signature: Signature
    state: WitnessState
    checkpoint: Checkpoint


async def check_and_cosign(note_text: str, proof: Sequence[bytes], *, state: WitnessState | None,
                           log_keys: Sequence[Verifier], signer: Signer, origin: str, now: int) -> Cosigned:
    """Verify ``note_text`` against the log's keys and ``state`` (via ``proof``) and cosign it, or raise
    :class:`WitnessRefusal`."""
    try:
        cp, note = parse_signed_checkpoint(note_text)
    except ValueError as exc:
        raise WitnessRefusal("bad-signature", f"malformed checkpoint: {exc}") from None
    if cp.origin != origin:
        raise WitnessRefusal("unknown-log", f"checkpoint of {cp.origin!r}, this witness follows {origin!r}")
    try:
        verify_note(note, log_keys)
    except NoteError as exc:
        raise WitnessRefusal("bad-signature", f"checkpoint of size {cp.size}: {exc}") from None
    old_size, old_root = (state.size, state.root) if state is not None else (0, merkle.EMPTY_ROOT)
    if cp.size < old_size:
        raise WitnessRefusal("shrunk", f"the log shrank from {old_size} to {cp.size} entries")
    if cp.size == old_size and cp.root != old_root:
        raise WitnessRefusal("fork", f"two different roots for size {cp.size}")
    try:
        merkle.verify_consistency(old_size, cp.size, old_root, cp.root, proof)
    except merkle.ProofError as exc:
        raise WitnessRefusal("inconsistent", f"size {old_size} → {cp.size}: {exc}") from None
    sig = await cosign(note.text, signer, now)
    mine = Note(note.text, tuple(s for s in note.signatures if s.name != signer.name)).with_signatures([sig])
    return Cosigned(sig, WitnessState(origin, cp.size, cp.root, mine.format()), cp)
