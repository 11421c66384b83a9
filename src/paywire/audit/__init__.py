"""A tamper-evident log of money events: RFC 9162 Merkle tree, C2SP signed checkpoints, witness cosignatures,
inclusion and consistency proofs (see docs/audit.md).

Sans-I/O cores: ``merkle``, ``note``, ``checkpoint``, ``events``, ``verifier``, ``proofs``, ``export``. I/O:
``store`` (tables, :func:`enqueue`), ``sequencer``, ``ops`` (verify a store, prove, export), ``witness``,
``http`` (the ``/audit/*`` routes).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from paywire._lazy import lazy_exports

if TYPE_CHECKING:
    from paywire.audit.checkpoint import Checkpoint, TlogProof, parse_signed_checkpoint, parse_tlog_proof
    from paywire.audit.events import SecretFieldError, digest, make_event
    from paywire.audit.keys import from_callable, from_env, generate, load_key, load_verifier
    from paywire.audit.merkle import ProofError, verify_consistency, verify_inclusion
    from paywire.audit.note import Signer, Verifier, parse_vkey
    from paywire.audit.ops import export, prove, prove_subject, verify_store
    from paywire.audit.proofs import ProofRejected, verify_proof
    from paywire.audit.sequencer import CheckpointPolicy, Sequencer
    from paywire.audit.store import AuditStore, enqueue
    from paywire.audit.verifier import Finding, LogVerifier, Report

__getattr__, __dir__ = lazy_exports(__name__, {
    "paywire.audit.checkpoint": ("Checkpoint", "TlogProof", "parse_signed_checkpoint", "parse_tlog_proof"),
    "paywire.audit.events": ("SecretFieldError", "digest", "make_event"),
    "paywire.audit.keys": ("from_callable", "from_env", "generate", "load_key", "load_verifier"),
    "paywire.audit.merkle": ("ProofError", "verify_consistency", "verify_inclusion"),
    "paywire.audit.note": ("Signer", "Verifier", "parse_vkey"),
    "paywire.audit.ops": ("export", "prove", "prove_subject", "verify_store"),
    "paywire.audit.proofs": ("ProofRejected", "verify_proof"),
    "paywire.audit.sequencer": ("CheckpointPolicy", "Sequencer"),
    "paywire.audit.store": ("AuditStore", "enqueue"),
    "paywire.audit.verifier": ("Finding", "LogVerifier", "Report"),
})

__all__ = ["AuditStore", "Checkpoint", "CheckpointPolicy", "Finding", "LogVerifier", "ProofError", "ProofRejected",
           "Report", "SecretFieldError", "Sequencer", "Signer", "TlogProof", "Verifier", "digest", "enqueue",
           "export", "from_callable", "from_env", "generate", "load_key", "load_verifier", "make_event",
           "parse_signed_checkpoint", "parse_tlog_proof", "parse_vkey", "prove", "prove_subject", "verify_consistency",
           "verify_inclusion", "verify_proof", "verify_store"]
