"""The sequencer: moves queued events into the log in batches and signs checkpoints.

One batch is one transaction: read up to ``batch`` queued rows (a seller row queued as columns becomes its
event's canonical JSON here, :mod:`paywire.audit.queue`), give them the next sequence numbers, write the
log rows, the new tree nodes and the new head, delete exactly those queue rows, and sign a checkpoint when one
is due. A crash anywhere before the commit loses nothing (the rows are still queued) and a crash after it
doubles nothing (they are gone from the queue). On PostgreSQL each batch first takes a transaction-scoped
advisory lock (keyed by the schema, so logs in other schemas of the database go on), so any number of sequencers in a fleet integrate one at a time, in one order; a sequencer that
does not get the lock skips the round. SQLite's ``BEGIN IMMEDIATE`` serializes them the same way.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from paywire.audit import merkle
from paywire.audit.checkpoint import Checkpoint
from paywire.audit.events import log_entry
from paywire.audit.note import Signer, sign_note
from paywire.audit.queue import SELECT, entry_of
from paywire.audit.store import (
    CHECKPOINTS,
    HEAD,
    LOG,
    NODES,
    QUEUE,
    AuditStore,
    fetch_nodes,
    insert_rows,
    node_key,
)
from paywire.store.db import Executor

if TYPE_CHECKING:
    from paywire.audit.anchor import Anchorer

log = logging.getLogger("paywire.audit")

PG_LOCK_KEY = 0x70776175  # "pwau": the sequencer's advisory lock, one per schema (advisory locks are per database;
# a log in another schema of the same database, another deployment or test, must not make this one skip rounds)
_PG_LOCK_ARGS = "?::int4, hashtext(current_schema())"


@dataclass(frozen=True, slots=True)
class CheckpointPolicy:
    """Sign a checkpoint once ``every_entries`` new entries are in, or ``every_seconds`` after the last one if
    anything new came in (and right away for the first entry)."""

    every_entries: int = 1000
    every_seconds: float = 10.0


@dataclass(frozen=True, slots=True)
class BatchResult:
    integrated: int
    size: int
    checkpoint: str | None  # the checkpoint note signed in this batch, if any
    skipped: bool = False  # another sequencer holds the lock
    due_at: float | None = None  # when a checkpoint of the entries not yet in one falls due (None: all are)


class Sequencer:
    """Integrates ``store``'s queue into its log, signing checkpoints as ``origin`` with ``signer``."""

    def __init__(self, store: AuditStore, signer: Signer, *, origin: str | None = None, batch: int = 2000,
                 policy: CheckpointPolicy | None = None, clock: Callable[[], float] | None = None,
                 anchorer: Anchorer | None = None) -> None:
        self.store = store
        self.signer = signer
        self.origin = origin or signer.name
        self.batch = batch
        self.policy = policy or CheckpointPolicy()
        self.clock = clock or store.clock
        self._frontier: merkle.Frontier | None = None
        self._root: bytes | None = None
        self.anchorer = anchorer
        """Optional on-chain anchoring: :meth:`run` asks it after each checkpoint it signs (it anchors every K)."""
        self._anchoring: asyncio.Future[None] | None = None
        self._anchor_asked = False

    async def _lock(self, tx: Executor, wait: bool) -> bool:
        if tx.dialect != "postgres":
            return True
        if wait:
            await tx.execute(f"SELECT pg_advisory_xact_lock({_PG_LOCK_ARGS})", (PG_LOCK_KEY,))
            return True
        row = await tx.fetchone(f"SELECT pg_try_advisory_xact_lock({_PG_LOCK_ARGS}) AS got", (PG_LOCK_KEY,))
        return bool(row and row["got"])

    async def _frontier_for(self, tx: Executor, size: int, root: bytes) -> merkle.Frontier:
        f = self._frontier
        if f is not None and f.size == size and self._root == root:
            return f.copy()
        ids = merkle.frontier_ids(size)
        nodes = await fetch_nodes(tx, ids)
        f = merkle.Frontier(size, [nodes[i] for i in ids])
        if f.root() != root:
            raise RuntimeError(f"the audit store's head (size {size}) does not match its stored tree nodes")
        return f

    async def integrate(self, *, force_checkpoint: bool = False, wait: bool = False) -> BatchResult:
        """One batch (see the module docstring). ``wait``: on PostgreSQL wait for another sequencer's batch to
        end instead of skipping the round."""
        async with self.store.db.transaction() as tx:
            if not await self._lock(tx, wait):
                return BatchResult(0, -1, None, skipped=True)
            head = await self.store.head(tx)
            rows = await tx.fetchall(SELECT + " ORDER BY id LIMIT ?", (self.batch,))
            now = self.clock()
            frontier = await self._frontier_for(tx, head.size, head.root)
            size = head.size
            if rows:
                entries = [log_entry(size + i, entry_of(r)) for i, r in enumerate(rows)]
                leaves = [merkle.leaf_hash(e) for e in entries]
                nodes = frontier.append(leaves)
                await insert_rows(tx, LOG, ("seq", "leaf_hash", "entry", "created_at"),
                                  [(size + i, leaves[i], entries[i].decode(), now) for i in range(len(rows))])
                if nodes:
                    await insert_rows(tx, NODES, ("node", "hash"), [(node_key(lv, ix), h) for lv, ix, h in nodes])
                ids = [int(r["id"]) for r in rows]
                for i in range(0, len(ids), 900):
                    part = ids[i:i + 900]
                    await tx.execute(f"DELETE FROM {QUEUE} WHERE id IN ({', '.join('?' * len(part))})", part)
            root = frontier.root()
            new_size = frontier.size
            cp_size, cp_at, note_text = head.checkpoint_size, head.checkpoint_at, None
            due = new_size > cp_size and (
                force_checkpoint or cp_size == 0 or new_size - cp_size >= self.policy.every_entries
                or now - cp_at >= self.policy.every_seconds)
            if due:
                note = await sign_note(Checkpoint(self.origin, new_size, root).body(), [self.signer])
                note_text = note.format()
                await tx.execute(f"INSERT INTO {CHECKPOINTS} (size, root, note, created_at) VALUES (?, ?, ?, ?)",
                                 (new_size, root, note_text, now))
                cp_size, cp_at = new_size, now
            if rows or due:
                changed = await tx.execute(
                    f"UPDATE {HEAD} SET size = ?, root = ?, checkpoint_size = ?, checkpoint_at = ? WHERE id = 1",
                    (new_size, root, cp_size, cp_at))
                if changed == 0:
                    await tx.execute(f"INSERT INTO {HEAD} (id, size, root, checkpoint_size, checkpoint_at) "
                                     "VALUES (1, ?, ?, ?, ?)", (new_size, root, cp_size, cp_at))
        # committed: remember the tree for the next batch
        self._frontier, self._root = frontier, root
        if rows:
            log.debug("audit: integrated %d entries, size %d", len(rows), new_size)
        due_at = cp_at + self.policy.every_seconds if new_size > cp_size else None
        return BatchResult(len(rows), new_size, note_text, due_at=due_at)

    async def drain(self, *, wait: bool = True) -> int:
        """Integrate until the queue is empty; the number of entries integrated."""
        total = 0
        while True:
            result = await self.integrate(wait=wait)
            total += result.integrated
            if result.skipped or result.integrated < self.batch:
                return total

    async def _idle(self, due_at: float | None) -> bool:
        """Nothing to do: the queue is empty (one cheap read, no write transaction) and no checkpoint is due."""
        if due_at is not None and self.clock() >= due_at:
            return False
        return await self.store.db.fetchone(f"SELECT id FROM {QUEUE} LIMIT 1") is None

    async def _anchor(self) -> None:
        assert self.anchorer is not None
        while self._anchor_asked:  # a checkpoint signed while the last anchor was mining asks once more
            self._anchor_asked = False
            try:
                anchor = await self.anchorer.anchor_if_due()
            except Exception:  # the chain is down or the key has no gas: the next checkpoint tries again
                log.exception("audit: anchoring the latest checkpoint failed")
                return
            if anchor is not None:
                log.info("audit: anchored checkpoint %d in %s on %s", anchor.size, anchor.tx_hash, anchor.network)

    def _anchor_soon(self) -> None:
        """Anchor in the background (a transaction waits for its block; sequencing goes on), one at a time."""
        if self.anchorer is None:
            return
        self._anchor_asked = True
        if self._anchoring is None or self._anchoring.done():
            self._anchoring = asyncio.ensure_future(self._anchor())

    async def run(self, stop: asyncio.Event, *, idle: float = 0.2) -> None:
        """Integrate until ``stop`` is set, waiting ``idle`` seconds (or for ``stop``) when the queue is empty;
        with an ``anchorer``, each signed checkpoint asks it to anchor (it sends one every K checkpoints)."""
        due_at: float | None = None
        first = True
        try:
            while not stop.is_set():
                try:
                    if not first and await self._idle(due_at):
                        with contextlib.suppress(TimeoutError):
                            await asyncio.wait_for(stop.wait(), idle)
                        continue
                    first = False
                    result = await self.integrate()
                    if not result.skipped:
                        due_at = result.due_at
                    if result.checkpoint is not None:
                        self._anchor_soon()
                except Exception:  # keep sequencing through a transient database error
                    log.exception("audit sequencer batch failed")
                    result = BatchResult(0, -1, None, skipped=True)
                if result.integrated < self.batch:
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(stop.wait(), idle)
        finally:
            if self._anchoring is not None:  # let a sent anchor be recorded
                await asyncio.shield(self._anchoring)
