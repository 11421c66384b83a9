"""What the CLI and the Python API do with a store: verify it, prove an entry, export it."""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TextIO

from paywire.audit import merkle
from paywire.audit.checkpoint import TlogProof
from paywire.audit.events import entry_event
from paywire.audit.export import checkpoint_line, entry_line, header_line
from paywire.audit.ledger import LEDGERS, LedgerCheck
from paywire.audit.note import Verifier
from paywire.audit.queue import queued_events
from paywire.audit.store import AuditStore, node_key, signed_checkpoint_size
from paywire.audit.verifier import Finding, LogVerifier, Report


async def verify_store(store: AuditStore, log_keys: Sequence[Verifier], *, witness_keys: Sequence[Verifier] = (),
                       cosignatures_required: int = 0, origin: str | None = None,
                       extra_checkpoints: Iterable[tuple[str, str]] = (), check_nodes: bool = True,
                       check_ledgers: bool = True) -> Report:
    """Recompute the whole tree from the stored entries and check every checkpoint (stored and ``extra``:
    ``(note, where it came from)``, e.g. a witness's latest cosigned checkpoint or one a payer kept), with
    ``check_nodes`` every stored tree node (proofs are served from them), and with ``check_ledgers`` every row
    of each ledger whose component has events in the log against its latest event (:mod:`paywire.audit.ledger`)."""
    v = LogVerifier(log_keys, witness_keys=witness_keys, cosignatures_required=cosignatures_required, origin=origin,
                    collect_nodes=check_nodes)
    head = await store.head()
    for note in await store.checkpoints():
        v.add_checkpoint(note, source="stored")
        size = signed_checkpoint_size(note)
        if 0 < size <= head.size:
            v.expect_stored_nodes(size, await store.stored_nodes(merkle.frontier_ids(size)))
    for note, source in extra_checkpoints:
        v.add_checkpoint(note, source=source)
    ledger = LedgerCheck() if check_ledgers else None
    async for row in store.entries():
        v.add_entry(row.seq, row.entry, row.leaf_hash)
        if ledger is not None:
            _add_event(ledger, row.seq, row.entry)
        if check_nodes and row.seq % 4096 == 4095:
            await _check_nodes(store, v)
    if check_nodes:
        await _check_nodes(store, v)
    report = v.finish()
    if ledger is not None:
        await _check_ledgers(store, ledger, report)
    return report


def _add_event(ledger: LedgerCheck, seq: int | None, entry: bytes) -> None:
    try:
        event = entry_event(entry) if seq is not None else json.loads(entry)
    except ValueError:
        return  # the tree check names a malformed entry
    if isinstance(event, dict):
        ledger.add(seq, event)


async def _check_ledgers(store: AuditStore, ledger: LedgerCheck, report: Report) -> None:
    """Queued events count as the latest (the sequencer has not reached them); then every ledger row."""
    for event in await queued_events(store.db):
        _add_event(ledger, None, event)
    present = {str(r["component"]) for r in await store.db.fetchall("SELECT component FROM paywire_schema")}
    seen = ledger.components()
    for spec in LEDGERS:
        if spec.component not in present or spec.component not in seen:
            continue
        cols = ", ".join(spec.columns)
        after: object = None
        while True:
            rows = await store.db.fetchall(
                f"SELECT {cols} FROM {spec.table}" + (" WHERE id > ?" if after is not None else "")
                + " ORDER BY id LIMIT 2000", () if after is None else (after,))
            for row in rows:
                ledger.row(spec.component, row)
            if len(rows) < 2000:
                break
            after = rows[-1]["id"]
    for m in ledger.finish():
        report.findings.append(Finding(report.size if m.seq is None else m.seq,
                                       f"{m.component} ledger" + ("" if m.seq is not None else " (no event)"),
                                       m.why))
    report.findings.sort(key=lambda f: f.seq)


async def _check_nodes(store: AuditStore, v: LogVerifier) -> None:
    made = v.take_nodes()
    stored = await store.node_hashes([node_key(level, index) for level, index, _ in made])
    for level, index, h in made:
        v.check_node(level, index, h, stored.get(node_key(level, index)))


@dataclass(frozen=True, slots=True)
class Proof:
    seq: int
    entry: bytes
    proof: TlogProof

    def text(self) -> str:
        return self.proof.format()

    def text_with_entry(self) -> str:
        """The tlog-proof with the entry itself in its ``extra`` line: all a verifier needs."""
        return TlogProof(self.seq, self.proof.proof, self.proof.checkpoint, self.entry).format()


class NotYetCheckpointed(LookupError):
    """The entry is logged but no checkpoint covers it yet."""


async def prove(store: AuditStore, seq: int, *, size: int | None = None) -> Proof:
    """An inclusion proof of entry ``seq`` in the latest checkpoint (or the one of ``size``)."""
    note = await store.checkpoint(size)
    if note is None:
        if await store.entry(seq) is None:
            raise LookupError(f"no audit entry {seq}")
        raise NotYetCheckpointed(f"no checkpoint{'' if size is None else f' of size {size}'} in the store yet")
    cp_size = signed_checkpoint_size(note)
    if cp_size <= seq:
        if await store.entry(seq) is None:
            raise LookupError(f"no audit entry {seq}")
        raise NotYetCheckpointed(f"entry {seq} is logged but the latest checkpoint covers only {cp_size} entries")
    entry, hashes = await store.entry_and_proof(seq, cp_size)
    return Proof(seq, entry, TlogProof(seq, tuple(hashes), note))


async def prove_subject(store: AuditStore, subject: str) -> list[Proof]:
    """Proofs of every entry naming ``subject`` (a payment, settlement, challenge or transaction id)."""
    return [await prove(store, row.seq) for row in await store.find(subject)]


async def export(store: AuditStore, out: TextIO, *, start: int = 0) -> int:
    """Write the log as JSON Lines (see :mod:`paywire.audit.export`); the number of entries written."""
    notes = await store.checkpoints()
    head = await store.head()
    origin = notes[-1].split("\n", 1)[0] if notes else None
    out.write(header_line(origin, head.size, start))
    for note in notes:
        out.write(checkpoint_line(note))
    n = 0
    async for row in store.entries(start):
        out.write(entry_line(row.seq, row.entry))
        n += 1
    return n
