"""Audit log numbers: sequencer integration rate, proof generation and whole-log verification.

    python bench/audit.py [--entries 1000000] [--rate-entries 100000] [--proofs 300] [--store sqlite|postgres]

* ``sequencer``: entries/s the sequencer moves from the queue into the log (leaf hashes, tree nodes, log rows,
  queue deletes, a checkpoint per 10,000 entries), batches of 2,000, one process, SQLite file (WAL). The queue is
  filled beforehand (the paid path's cost is its one INSERT, measured with the wiring).
* ``proof``: one inclusion proof (entry row, O(log n) stored nodes, hashing) of a random entry in a log of
  ``--entries`` entries, median over ``--proofs``; also a consistency proof between two random sizes.
* ``verify``: `verify_store` over the whole log (recompute every leaf and the tree, check every checkpoint).
* paid-request overhead (auditing on vs off): not measured yet — events are not wired into the seller's
  transactions.

Ends with ``aim NAME: VALUE (target …)`` lines.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "src"))

from paywire.audit.events import make_event
from paywire.audit.note import Signer
from paywire.audit.ops import prove, verify_store
from paywire.audit.sequencer import CheckpointPolicy, Sequencer
from paywire.audit.store import QUEUE, AuditStore, insert_rows

ORIGIN = "bench.paywire.example/audit"


def _event(i: int) -> str:
    return make_event("seller", "payment.settled", instance="bench-1", time=1_764_756_000 + i / 1000,
                      subject={"payment_id": f"pay-{i:09d}", "amount": "10000", "network": "eip155:8453",
                               "payer": "0x70997970C51812dc3A010C7d01b50e0d17dc79C8", "route": "GET /weather"},
                      previous="verified").decode()


async def _fill(store: AuditStore, start: int, count: int) -> None:
    """Queue ``count`` events in transactions of 5,000 (setup, not timed)."""
    for lo in range(start, start + count, 5000):
        rows = [(_event(i), 0.0) for i in range(lo, min(lo + 5000, start + count))]
        async with store.db.transaction() as tx:
            await insert_rows(tx, QUEUE, ("entry", "created_at"), rows)


async def _sequence(seq: Sequencer) -> tuple[int, float]:
    t0 = time.perf_counter()
    n = await seq.drain()
    return n, time.perf_counter() - t0


async def main(args: argparse.Namespace) -> None:
    tmp = tempfile.mkdtemp(prefix="paywire-audit-bench-")
    url = args.url or f"sqlite:///{os.path.join(tmp, 'audit.db')}"
    store = await AuditStore.open(url)
    signer = Signer.generate(ORIGIN)
    seq = Sequencer(store, signer, batch=2000, policy=CheckpointPolicy(every_entries=10_000, every_seconds=1e9))
    print(f"# python {platform.python_version()}, {platform.machine()}, store {url.split(':')[0]}")

    rate_n = min(args.rate_entries, args.entries)
    await _fill(store, 0, rate_n)
    n, dt = await _sequence(seq)
    rate = n / dt
    print(f"sequencer: {n} entries in {dt:.2f} s = {rate:,.0f} entries/s")

    rest = args.entries - rate_n
    if rest > 0:
        t0 = time.perf_counter()
        for lo in range(rate_n, args.entries, 100_000):
            await _fill(store, lo, min(100_000, args.entries - lo))
            await seq.drain()
        print(f"grew the log to {args.entries} entries in {time.perf_counter() - t0:.1f} s (fill + sequence)")
    await seq.integrate(force_checkpoint=True)
    size = (await store.head()).size

    rng = random.Random(7)
    times = []
    for _ in range(args.proofs):
        s = rng.randrange(size)
        t0 = time.perf_counter()
        await prove(store, s)
        times.append(time.perf_counter() - t0)
    proof_ms = statistics.median(times) * 1000
    print(f"proof: inclusion proof + entry at size {size}: median {proof_ms:.3f} ms, "
          f"p90 {statistics.quantiles(times, n=10)[-1] * 1000:.3f} ms")
    ctimes = []
    for _ in range(args.proofs):
        old = rng.randrange(1, size)
        t0 = time.perf_counter()
        await store.consistency_proof(old, size)
        ctimes.append(time.perf_counter() - t0)
    print(f"proof: consistency proof to size {size}: median {statistics.median(ctimes) * 1000:.3f} ms")

    t0 = time.perf_counter()
    report = await verify_store(store, [signer.verifier])
    verify_s = time.perf_counter() - t0
    assert report.ok, report.findings[:3]
    print(f"verify: {report.size} entries, {report.checkpoints} checkpoints in {verify_s:.1f} s "
          f"({report.size / verify_s:,.0f} entries/s)")
    await store.aclose()

    print(f"aim sequencer_entries_per_s: {rate:,.0f} (target >= 20,000)")
    print(f"aim proof_ms_at_{size}: {proof_ms:.3f} (target <= 1)")
    print(f"aim verify_s_at_{size}: {verify_s:.1f} (no target; printed)")
    print("aim paid_request_overhead_pct: not measured yet (target <= 5): needs events wired into the seller")


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--entries", type=int, default=1_000_000)
    p.add_argument("--rate-entries", type=int, default=100_000)
    p.add_argument("--proofs", type=int, default=300)
    p.add_argument("--url", default="", help="store URL (default: a temporary SQLite file)")
    asyncio.run(main(p.parse_args()))
