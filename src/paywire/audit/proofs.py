"""Offline proof checking (sans-I/O): a c2sp.org/tlog-proof plus the entry it proves, against trusted keys."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from paywire.audit import merkle
from paywire.audit.checkpoint import Checkpoint, parse_signed_checkpoint, parse_tlog_proof
from paywire.audit.events import entry_seq
from paywire.audit.note import COSIGNATURE_V1, NoteError, Verifier, verify_note


class ProofRejected(ValueError):
    """The proof does not show the entry in a checkpoint signed by the trusted keys."""


@dataclass(frozen=True, slots=True)
class ProvenEntry:
    index: int
    checkpoint: Checkpoint
    witnesses: tuple[str, ...]  # names of the witnesses whose cosignatures verified


def verify_proof(proof_text: str, entry: bytes, log_keys: Sequence[Verifier], *,
                 witness_keys: Sequence[Verifier] = (), cosignatures_required: int = 0,
                 origin: str | None = None) -> ProvenEntry:
    """Check a tlog-proof for ``entry``: the checkpoint's log signature, the witnesses' cosignatures (at least
    ``cosignatures_required``), the entry's own sequence number, and the inclusion proof up to the root."""
    try:
        proof = parse_tlog_proof(proof_text)
        cp, note = parse_signed_checkpoint(proof.checkpoint)
    except ValueError as exc:
        raise ProofRejected(f"malformed proof: {exc}") from None
    if origin is not None and cp.origin != origin:
        raise ProofRejected(f"the checkpoint is from log {cp.origin!r}, not {origin!r}")
    try:
        verify_note(note, log_keys)
    except NoteError as exc:
        raise ProofRejected(f"the checkpoint is not signed by a trusted log key: {exc}") from None
    witnesses: tuple[str, ...] = ()
    cosigners = [w for w in witness_keys if w.sig_type == COSIGNATURE_V1]
    if cosigners:
        try:
            witnesses = tuple(sorted({v.verifier.name for v in verify_note(note, cosigners)}))
        except NoteError as exc:
            if "no signature by a known key" not in str(exc):
                raise ProofRejected(f"a witness cosignature does not verify: {exc}") from None
    if len(witnesses) < cosignatures_required:
        raise ProofRejected(f"cosigned by {len(witnesses)} of the {cosignatures_required} required witnesses")
    carried = entry_seq(entry)
    if carried is not None and carried != proof.index:
        raise ProofRejected(f"the entry carries sequence number {carried}, the proof is for {proof.index}")
    try:
        merkle.verify_inclusion(proof.index, cp.size, merkle.leaf_hash(entry), proof.proof, cp.root)
    except merkle.ProofError as exc:
        raise ProofRejected(str(exc)) from None
    return ProvenEntry(proof.index, cp, witnesses)
