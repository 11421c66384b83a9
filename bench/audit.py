"""Audit log numbers: sequencer integration rate, proof generation and whole-log verification.

    python bench/audit.py [--entries 1000000] [--rate-entries 100000] [--proofs 300] [--paid 400] [--url URL]

* ``sequencer``: entries/s the sequencer moves from the queue into the log (leaf hashes, tree nodes, log rows,
  queue deletes, a checkpoint per 10,000 entries), batches of 2,000, one process, SQLite file (WAL). The queue is
  filled beforehand with JSON events (the paid path's cost is its one INSERT, measured with the wiring; the
  seller's trigger-queued rows, whose JSON the sequencer writes, integrate more slowly: see docs/audit.md).
* ``proof``: one inclusion proof (entry row, O(log n) stored nodes, hashing) of a random entry in a log of
  ``--entries`` entries, median over ``--proofs``; also a consistency proof between two random sizes.
* ``verify``: `verify_store` over the whole log (recompute every leaf and the tree, check every checkpoint).
* ``overhead``: the seller round trip (402, sign, paid request, as ``bench/seller.py`` times it; the aim line)
  and the paid request alone (``PAYMENT-SIGNATURE`` → 200) through two sellers in this process, one with
  ``audit=`` (3 events per payment, each queued as the row's columns by a SQLite trigger inside its ledger
  change's own statement, the JSON written by its sequencer running in another process, as ``paywire audit
  serve`` runs it)
  and one without, on their own SQLite files, against the instant facilitator of ``bench/seller.py``; requests
  interleaved in random order, medians compared (``--paid 0`` skips it). Also the paid request's CPU time on the
  event-loop thread (client + seller + inline SQLite: less sensitive to a loaded machine than wall time).

Ends with ``aim NAME: VALUE (target …)`` lines.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import multiprocessing
import os
import platform
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

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


def _sequencer_process(url: str, halt: Any) -> None:
    """The audited seller's sequencer in its own process (as ``paywire audit serve`` runs it)."""

    async def main() -> None:
        store = await AuditStore.open(url)
        stop = asyncio.Event()
        task = asyncio.ensure_future(Sequencer(store, Signer.generate(ORIGIN)).run(stop))
        await asyncio.to_thread(halt.wait)
        stop.set()
        await task
        await store.aclose()

    asyncio.run(main())


async def overhead(n: int, warmup: int, tmp: str) -> dict[str, float]:
    """Median ms with auditing off and on (same run, interleaved): the paid request alone (``paid_off``,
    ``paid_on``) and the seller round trip as ``bench/seller.py`` times it, 402 + sign + paid (``rt_off``,
    ``rt_on``)."""
    import httpx
    from seller import NetInfo, fastapi_app, offer_of, serve_instant_facilitator

    from paywire.evm.signer import LocalSigner
    from paywire.schemes.evm_exact import ExactEvmClient
    from paywire.server.asgi import PaymentMiddleware
    from paywire.server.core import PaidRoute
    from paywire.serving import serve_asgi
    from paywire.x402.codec import decode_payment_required, encode_payment_payload
    from paywire.x402.models import PaymentPayload

    payer_key = "0x" + "22" * 32
    net = NetInfo("eip155:31337", "0x" + "aa" * 20, "USD Coin", "2", "0x" + "bb" * 20, payer_key, payer_key, "")
    signer = ExactEvmClient(LocalSigner(bytes.fromhex(payer_key[2:])))
    route = PaidRoute("GET /paid", offers=(offer_of(net),))
    async with serve_instant_facilitator(dataclasses.asdict(net)) as fac:
        off = PaymentMiddleware(fastapi_app(), [route], fac, store=f"sqlite:///{tmp}/off.db")
        on = PaymentMiddleware(fastapi_app(), [route], fac, store=f"sqlite:///{tmp}/on.db", audit="bench-seller-1")
        await off.startup()
        await on.startup()
        ctx = multiprocessing.get_context("spawn")
        halt = ctx.Event()
        runner = ctx.Process(target=_sequencer_process, args=(f"sqlite:///{tmp}/on.db", halt), daemon=True)
        runner.start()
        times: dict[str, list[float]] = {"off": [], "on": []}
        trips: dict[str, list[float]] = {"off": [], "on": []}
        cpu: dict[str, list[float]] = {"off": [], "on": []}  # this thread's CPU time: client, server and SQLite
        async with serve_asgi(off) as off_url, serve_asgi(on) as on_url, httpx.AsyncClient(timeout=60) as http:
            for i in range(warmup + n):
                pair = [("off", off_url), ("on", on_url)]
                random.shuffle(pair)
                for name, url in pair:
                    start = time.perf_counter()
                    r = await http.get(url + "/paid")
                    pr = decode_payment_required(r.headers["payment-required"])
                    inner = await signer.create_payload(pr.accepts[0])
                    header = encode_payment_payload(PaymentPayload(accepted=pr.accepts[0], payload=inner,
                                                                   resource=pr.resource))
                    t0, c0 = time.perf_counter(), time.thread_time()
                    r2 = await http.get(url + "/paid", headers={"PAYMENT-SIGNATURE": header})
                    dt, dc = time.perf_counter() - t0, time.thread_time() - c0
                    if r2.status_code != 200:
                        raise RuntimeError(f"{name}: paid request failed: {r2.status_code} {r2.text[:200]}")
                    if i >= warmup:
                        times[name].append(dt)
                        cpu[name].append(dc)
                        trips[name].append(time.perf_counter() - start)
        halt.set()
        await asyncio.to_thread(runner.join, 60)
        seq = Sequencer(AuditStore(on.flow.payments.db), Signer.generate(ORIGIN))
        await seq.drain()
        logged = (await seq.store.head()).size
        print(f"overhead: {n} paid requests each; audited seller logged {logged} events "
              f"({logged / (warmup + n):.1f} per payment)")
        await off.flow.aclose()
        await on.flow.aclose()
    return {f"{k}_{name}": statistics.median(v[name]) * 1000 for k, v in (("paid", times), ("rt", trips),
                                                                          ("cpu", cpu)) for name in ("off", "on")}


async def main(args: argparse.Namespace) -> None:
    tmp = tempfile.mkdtemp(prefix="paywire-audit-bench-")
    o: dict[str, float] = {}
    if args.paid:
        o = await overhead(args.paid, max(20, args.paid // 10), tmp)
        print(f"overhead: paid request median {o['paid_off']:.3f} ms without auditing, {o['paid_on']:.3f} ms with "
              f"(+{o['paid_on'] - o['paid_off']:.3f} ms, {(o['paid_on'] / o['paid_off'] - 1) * 100:.1f} %)")
        print(f"overhead: seller round trip (402 + sign + paid) median {o['rt_off']:.3f} ms without, "
              f"{o['rt_on']:.3f} ms with (+{o['rt_on'] - o['rt_off']:.3f} ms)")
        print(f"overhead: paid request CPU time (event-loop thread: client + seller + SQLite) median "
              f"{o['cpu_off']:.3f} ms without, {o['cpu_on']:.3f} ms with (+{o['cpu_on'] - o['cpu_off']:.3f} ms)")
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
    if args.paid:
        print(f"aim paid_request_overhead_pct: {(o['rt_on'] / o['rt_off'] - 1) * 100:.1f} (target <= 5)")
        print(f"aim paid_request_cpu_overhead_pct_of_round_trip: {(o['cpu_on'] - o['cpu_off']) / o['rt_off'] * 100:.1f}"
              " (target <= 5)")


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--entries", type=int, default=1_000_000)
    p.add_argument("--rate-entries", type=int, default=100_000)
    p.add_argument("--proofs", type=int, default=300)
    p.add_argument("--url", default="", help="store URL (default: a temporary SQLite file)")
    p.add_argument("--paid", type=int, default=400, help="paid requests per seller for the overhead (0: skip)")
    asyncio.run(main(p.parse_args()))
