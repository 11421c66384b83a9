"""Helpers for the audit tests: a real log (SQLite or PostgreSQL) with signed checkpoints, cosigned by a real
witness core, and ``paywire audit verify`` run as a user runs it."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from typer.testing import CliRunner

from paywire.audit import merkle
from paywire.audit.events import make_event
from paywire.audit.note import COSIGNATURE_V1, Signer, parse_note
from paywire.audit.sequencer import CheckpointPolicy, Sequencer
from paywire.audit.store import AuditStore
from paywire.audit.witness_core import WitnessState, check_and_cosign

ORIGIN = "paywire.example/test-log"


def event(i: int, *, amount: str = "1000", payer: str = "0xpayer") -> bytes:
    return make_event("seller", "payment.settled", instance="seller-1", time=1_764_756_000 + i,
                      subject={"payment_id": f"pay-{i}", "amount": amount, "payer": payer}, previous="verified")


@dataclass
class Log:
    url: str
    store: AuditStore
    signer: Signer
    witness: Signer
    state: WitnessState | None = None
    n: int = 0

    async def add(self, count: int, *, every: int = 8) -> None:
        """Queue ``count`` events (one transaction each), sequence them in batches of ``every`` (a checkpoint per
        batch), and let the witness cosign each checkpoint."""
        seq = Sequencer(self.store, self.signer, origin=ORIGIN, batch=every,
                        policy=CheckpointPolicy(every_entries=every, every_seconds=1e9))
        for start in range(0, count, every):
            for i in range(self.n, self.n + min(every, count - start)):
                async with self.store.db.transaction() as tx:
                    await self.store.enqueue(event(i), tx)
            self.n += min(every, count - start)
            await seq.integrate(force_checkpoint=True)
            await self.cosign()

    async def cosign(self) -> None:
        note = await self.store.checkpoint()
        assert note is not None, "the sequencer signed a checkpoint"
        size = int(parse_note(note).text.split("\n")[1])
        old = self.state.size if self.state else 0
        proof = await self.store.consistency_proof(old, size) if 0 < old < size else []
        done = await check_and_cosign(note, proof, state=self.state, log_keys=[self.signer.verifier],
                                      signer=self.witness, origin=ORIGIN, now=int(time.time()))
        self.state = done.state
        await self.store.add_cosignatures(size, [done.signature])

    def write_state(self, path: Path) -> Path:
        assert self.state is not None
        path.write_text(self.state.to_json())
        return path


async def new_log(url: str) -> Log:
    store = await AuditStore.open(url)
    return Log(url, store, Signer.generate(ORIGIN), Signer.generate("witness.example/w1", sig_type=COSIGNATURE_V1))


def verify_cli(*args: str) -> tuple[int, str]:
    from paywire.cli.main import app

    r = CliRunner().invoke(app, ["audit", "verify", *args], catch_exceptions=False)
    return r.exit_code, r.output


async def truncate(store: AuditStore, size: int) -> None:
    """Cut the log back to ``size`` entries the way an operator with database access would: rows, tree nodes,
    later checkpoints and cosignatures, and the head (whose checkpoint schedule restarts)."""
    from paywire.audit.store import CHECKPOINTS, COSIGNATURES, HEAD, LOG, NODES

    db = store.db
    await db.execute(f"DELETE FROM {LOG} WHERE seq >= ?", (size,))
    for r in await db.fetchall(f"SELECT node FROM {NODES}"):
        k = int(r["node"])
        if ((k >> 6) + 1) << (k & 63) > size:
            await db.execute(f"DELETE FROM {NODES} WHERE node = ?", (k,))
    await db.execute(f"DELETE FROM {CHECKPOINTS} WHERE size > ?", (size,))
    await db.execute(f"DELETE FROM {COSIGNATURES} WHERE size > ?", (size,))
    await db.execute(f"UPDATE {HEAD} SET size = ?, root = ?, checkpoint_size = ? WHERE id = 1",
                     (size, await store.root_at(size), size))


def leaf(entry: bytes) -> bytes:
    return merkle.leaf_hash(entry)
