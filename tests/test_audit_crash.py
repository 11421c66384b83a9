"""A sequencer killed with SIGKILL in the middle of a batch loses nothing and doubles nothing: after a restart
the log holds every queued event exactly once, gapless, and the tree continues the checkpoints signed before
the crash (SQLite and PostgreSQL, a real subprocess)."""

from __future__ import annotations

import asyncio
import os
import select
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from audit_support import ORIGIN, event

from paywire.audit import merkle
from paywire.audit.checkpoint import parse_signed_checkpoint
from paywire.audit.events import entry_event
from paywire.audit.note import Signer
from paywire.audit.ops import verify_store
from paywire.audit.sequencer import CheckpointPolicy, Sequencer
from paywire.audit.store import AuditStore

pytestmark = pytest.mark.postgres

# Runs the real sequencer; a test hook stalls the third batch right after its log rows are written (inside the
# open transaction) and says so on stdout, so the test can SIGKILL it there.
CHILD = r"""
import asyncio, sys
from paywire.audit import sequencer as sq
from paywire.audit.note import parse_skey
from paywire.audit.store import LOG, AuditStore

real = sq.insert_rows
seen = {"log": 0}

async def insert_then_stall(tx, table, columns, rows):
    await real(tx, table, columns, rows)
    if table == LOG:
        seen["log"] += 1
        if seen["log"] == 3:
            print("MID-BATCH", flush=True)
            await asyncio.Event().wait()

sq.insert_rows = insert_then_stall

async def main():
    store = await AuditStore.open(sys.argv[1])
    seq = sq.Sequencer(store, parse_skey(sys.argv[2]), origin=sys.argv[3], batch=10,
                       policy=sq.CheckpointPolicy(every_entries=10))
    await seq.drain()

asyncio.run(main())
"""


def _read_line(proc: subprocess.Popen[str], timeout: float) -> str:
    assert proc.stdout is not None
    ready, _, _ = select.select([proc.stdout], [], [], timeout)
    if not ready:
        raise AssertionError("the sequencer never reached the middle of its third batch")
    return proc.stdout.readline().strip()


def test_sigkill_mid_batch_loses_and_doubles_nothing(store_url: str, tmp_path: Path) -> None:
    signer = Signer.generate(ORIGIN)

    async def fill() -> None:
        store = await AuditStore.open(store_url)
        for i in range(50):
            await store.enqueue(event(i))
        await store.aclose()
    asyncio.run(fill())

    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path(__file__).parent.parent / "src"),
                                                        os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.Popen([sys.executable, "-c", CHILD, store_url, signer.skey, ORIGIN], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env)
    try:
        line = _read_line(proc, 60)
        assert line == "MID-BATCH", f"child said {line!r}: {proc.stderr.read() if proc.stderr else ''}"
        os.kill(proc.pid, signal.SIGKILL)
        assert proc.wait(30) == -signal.SIGKILL, "the sequencer was killed"
    finally:
        if proc.poll() is None:
            proc.kill()

    async def restart() -> None:
        store = await AuditStore.open(store_url)
        try:
            before = await store.checkpoints()
            assert [parse_signed_checkpoint(n)[0].size for n in before] == [10, 20], (
                "two batches were committed (and checkpointed) before the kill, the third was not")
            assert await store.queued() == 30, "the killed batch's events are still queued"
            seq = Sequencer(store, signer, batch=10, policy=CheckpointPolicy(every_entries=10))
            assert await seq.drain() == 30, "the restarted sequencer integrates the other 30"
            rows = [r async for r in store.entries()]
            assert [r.seq for r in rows] == list(range(50)), "50 entries, sequence numbers without gaps"
            ids = sorted(int(entry_event(r.entry)["subject"]["payment_id"][4:]) for r in rows)
            assert ids == list(range(50)), "each queued event exactly once"
            old, new = parse_signed_checkpoint(before[-1])[0], parse_signed_checkpoint(
                (await store.checkpoints())[-1])[0]
            merkle.verify_consistency(old.size, new.size, old.root, new.root,
                                      await store.consistency_proof(old.size, new.size))
            report = await verify_store(store, [signer.verifier])
            assert report.ok and report.verified_size == 50, f"the log verifies: {report.findings}"
        finally:
            await store.aclose()
    asyncio.run(restart())
