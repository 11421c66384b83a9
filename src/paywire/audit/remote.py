"""Asking a log for the proofs of one's own payment (the payer's side of a receipt's audit reference)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from paywire.audit.checkpoint import parse_tlog_proof
from paywire.audit.events import entry_event
from paywire.audit.note import Verifier
from paywire.audit.proofs import ProofRejected, ProvenEntry, verify_proof

MAX_BODY = 1 << 20


class ProofUnavailable(LookupError):
    """The log has no checkpointed entry naming the subject (yet), or could not be asked."""


@dataclass(frozen=True, slots=True)
class ProvenEvent:
    """One entry naming the subject, proven: its sequence number, the checkpoint including it, the event."""

    proven: ProvenEntry
    event: dict[str, Any]
    proof: str  # the c2sp.org/tlog-proof text, to keep with the receipt

    @property
    def seq(self) -> int:
        return self.proven.index


async def fetch_proofs(log_url: str, subject: str, log_keys: Sequence[Verifier], *,
                       witness_keys: Sequence[Verifier] = (), cosignatures_required: int = 0,
                       http: Any = None) -> list[ProvenEvent]:
    """``GET {log_url}/audit/proofs?subject=…`` and check every proof offline against ``log_keys`` (and the
    witnesses): the events naming ``subject`` with their sequence numbers and checkpoints. A proof that does not
    verify raises :class:`ProofRejected`; nothing to prove yet raises :class:`ProofUnavailable`."""
    import httpx

    own = http is None
    client = httpx.AsyncClient(timeout=30) if own else http
    try:
        r = await client.get(log_url.rstrip("/") + "/audit/proofs", params={"subject": subject})
    except httpx.HTTPError as exc:
        raise ProofUnavailable(f"{log_url}: {exc}") from None
    finally:
        if own:
            await client.aclose()
    if r.status_code in (404, 409):
        raise ProofUnavailable(f"{log_url}: {r.text.strip()}")
    if r.status_code != 200 or len(r.content) > MAX_BODY:
        raise ProofUnavailable(f"{log_url}: HTTP {r.status_code}")
    body = r.json()
    texts = body.get("proofs") if isinstance(body, dict) else None
    if not isinstance(texts, list) or not all(isinstance(t, str) for t in texts):
        raise ProofRejected(f"{log_url}: not a list of proofs")
    out = []
    for text in texts:
        try:
            entry = parse_tlog_proof(text).extra
        except ValueError as exc:
            raise ProofRejected(f"malformed proof: {exc}") from None
        if entry is None:
            raise ProofRejected("a proof without its entry")
        proven = verify_proof(text, entry, log_keys, witness_keys=witness_keys,
                              cosignatures_required=cosignatures_required)
        event = entry_event(entry)
        if subject in _values(event.get("subject")):  # named elsewhere in an event (data): not about it
            out.append(ProvenEvent(proven, event, text))
    if not out:
        raise ProofUnavailable(f"{log_url}: no proven entry names {subject!r} as its subject")
    return out


def _values(subject: object) -> set[str]:
    return {v for v in subject.values() if isinstance(v, str)} if isinstance(subject, dict) else set()
