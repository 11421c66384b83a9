"""The audit store and sequencer on SQLite and PostgreSQL: an event is logged exactly when its transaction
commits; concurrent writers and competing sequencers end with every event logged once, in one gapless order;
proofs served from stored nodes verify; checkpoints follow their schedule."""

from __future__ import annotations

import asyncio
import json

import pytest
from audit_support import ORIGIN, event

from paywire.audit import merkle
from paywire.audit.checkpoint import parse_signed_checkpoint
from paywire.audit.events import entry_event, entry_seq
from paywire.audit.note import Signer
from paywire.audit.ops import prove, verify_store
from paywire.audit.proofs import ProofRejected, verify_proof
from paywire.audit.sequencer import CheckpointPolicy, Sequencer
from paywire.audit.store import AuditStore

pytestmark = pytest.mark.postgres


async def test_an_event_is_logged_only_if_its_transaction_commits(store_url: str) -> None:
    store = await AuditStore.open(store_url)
    try:
        with pytest.raises(RuntimeError):
            async with store.db.transaction() as tx:
                await store.enqueue(event(1), tx)
                raise RuntimeError("the money change failed")
        async with store.db.transaction() as tx:
            await store.enqueue(event(2), tx)
        assert await store.queued() == 1, "only the committed transaction's event is queued"
        seq = Sequencer(store, Signer.generate(ORIGIN))
        assert await seq.drain() == 1, "one event integrated"
        row = await store.entry(0)
        assert row is not None and entry_event(row.entry)["subject"]["payment_id"] == "pay-2", "the committed one"
        assert await store.queued() == 0, "the queue is empty after sequencing"
    finally:
        await store.aclose()


async def test_concurrent_writers_and_two_sequencers_log_every_event_once_in_one_order(store_url: str) -> None:
    stores = [await AuditStore.open(store_url) for _ in range(3)]
    signer = Signer.generate(ORIGIN)
    sequencers = [Sequencer(s, signer, batch=7, policy=CheckpointPolicy(every_entries=10)) for s in stores[1:]]
    writers_done = asyncio.Event()

    async def writer(w: int) -> None:
        for i in range(30):
            async with stores[0].db.transaction() as tx:
                await stores[0].enqueue(event(w * 1000 + i), tx)

    async def sequence(seq: Sequencer) -> int:
        total = 0
        while True:
            done = writers_done.is_set()
            result = await seq.integrate()
            total += result.integrated
            if done and result.integrated == 0 and not result.skipped and await seq.store.queued() == 0:
                return total
            await asyncio.sleep(0)

    async def writers() -> None:
        await asyncio.gather(*(writer(w) for w in range(4)))
        writers_done.set()

    try:
        counts = await asyncio.gather(writers(), *(sequence(s) for s in sequencers))
        assert sum(c for c in counts[1:] if c) == 120, f"120 events integrated in all, got {counts[1:]}"
        rows = [r async for r in stores[0].entries()]
        assert [r.seq for r in rows] == list(range(120)), "sequence numbers 0..119 without gaps"
        ids = [entry_event(r.entry)["subject"]["payment_id"] for r in rows]
        assert len(set(ids)) == 120, "no event logged twice"
        assert all(entry_seq(r.entry) == r.seq for r in rows), "each entry carries its own sequence number"
        await sequencers[0].integrate(force_checkpoint=True)
        report = await verify_store(stores[0], [signer.verifier])
        assert report.ok, f"the log verifies: {report.findings}"
        assert report.verified_size == 120, "the last checkpoint covers every entry"
    finally:
        for s in stores:
            await s.aclose()


async def test_proofs_served_from_stored_nodes_verify(store_url: str) -> None:
    store = await AuditStore.open(store_url)
    signer = Signer.generate(ORIGIN)
    try:
        seq = Sequencer(store, signer, batch=9, policy=CheckpointPolicy(every_entries=9))
        for i in range(45):
            await store.enqueue(event(i))
        await seq.drain()
        notes = await store.checkpoints()
        sizes = [parse_signed_checkpoint(n)[0].size for n in notes]
        assert sizes == [9, 18, 27, 36, 45], f"a checkpoint per 9 entries, got {sizes}"
        for n_old in notes:
            for n_new in notes:
                old, new = parse_signed_checkpoint(n_old)[0], parse_signed_checkpoint(n_new)[0]
                if old.size <= new.size:
                    proof = await store.consistency_proof(old.size, new.size)
                    merkle.verify_consistency(old.size, new.size, old.root, new.root, proof)
        for s in (0, 1, 8, 9, 31, 44):
            p = await prove(store, s)
            proven = verify_proof(p.text(), p.entry, [signer.verifier])
            assert (proven.index, proven.checkpoint.size) == (s, 45), f"entry {s} proven in the latest checkpoint"
            with pytest.raises(ProofRejected):
                verify_proof(p.text(), p.entry.replace(b"pay-", b"PAY-"), [signer.verifier])
        with pytest.raises(ProofRejected, match="trusted log key"):
            verify_proof(p.text(), p.entry, [Signer.generate(ORIGIN).verifier])
    finally:
        await store.aclose()


async def test_checkpoints_follow_the_entry_and_time_schedule(store_url: str) -> None:
    store = await AuditStore.open(store_url)
    now = [1000.0]
    seq = Sequencer(store, Signer.generate(ORIGIN), batch=100,
                    policy=CheckpointPolicy(every_entries=5, every_seconds=60), clock=lambda: now[0])
    try:
        await store.enqueue(event(0))
        assert (await seq.integrate()).checkpoint is not None, "the first entry is checkpointed at once"
        for i in range(1, 4):
            await store.enqueue(event(i))
        assert (await seq.integrate()).checkpoint is None, "3 new entries, 0 s: not due"
        now[0] += 61
        assert (await seq.integrate()).checkpoint is not None, "61 s later the pending entries are checkpointed"
        now[0] += 61
        assert (await seq.integrate()).checkpoint is None, "nothing new: no checkpoint however long it has been"
        for i in range(4, 9):
            await store.enqueue(event(i))
        assert (await seq.integrate()).checkpoint is not None, "5 new entries: due"
        head = await store.head()
        assert (head.size, head.checkpoint_size) == (9, 9), "head and last checkpoint"
    finally:
        await store.aclose()


def test_entries_are_stored_as_the_canonical_bytes_that_were_hashed(sqlite_url: str) -> None:
    async def run() -> None:
        store = await AuditStore.open(sqlite_url)
        try:
            await store.enqueue(event(0, payer="0xé"))
            await Sequencer(store, Signer.generate(ORIGIN)).drain()
            row = await store.entry(0)
            assert row is not None
            assert merkle.leaf_hash(row.entry) == row.leaf_hash, "the stored entry hashes to its leaf hash"
            assert json.loads(row.entry)["event"]["subject"]["payer"] == "0xé", "non-ASCII text survives"
        finally:
            await store.aclose()
    asyncio.run(run())


async def test_finding_entries_by_id_matches_the_whole_id_literally(store_url: str) -> None:
    from paywire.audit.events import make_event

    store = await AuditStore.open(store_url)
    try:
        for pid in ("pay_1", "payX1", "pay%1", "pay_10"):
            await store.enqueue(make_event("seller", "payment.settled", instance="s", time=0,
                                           subject={"payment_id": pid}))
        await Sequencer(store, Signer.generate(ORIGIN)).drain()
        for pid in ("pay_1", "pay%1", "payX1"):
            found = [entry_event(r.entry)["subject"]["payment_id"] for r in await store.find(pid)]
            assert found == [pid], f"searching {pid!r} finds exactly that id, got {found}"
    finally:
        await store.aclose()


async def test_events_queued_before_the_row_columns_migration_are_still_logged(
        store_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """A database whose queue predates the seller's row columns (audit step 2) keeps its queued JSON events
    through the migration, and they are logged as they were queued."""
    from paywire.audit.queue import queued_events
    from paywire.store import migrations

    steps = migrations._REGISTRY["audit"]
    assert len(steps) == 3, "this test upgrades from step 2 to step 3"
    monkeypatch.setitem(migrations._REGISTRY, "audit", steps[:2])
    store = await AuditStore.open(store_url)
    try:
        await store.enqueue(event(0))
        monkeypatch.setitem(migrations._REGISTRY, "audit", steps)
        await store.migrate()
        assert await queued_events(store.db) == [event(0)], "the queued event survives the migration unchanged"
        seq = Sequencer(store, Signer.generate(ORIGIN))
        assert await seq.drain() == 1
        logged = await store.entry(0)
        assert logged is not None and entry_event(logged.entry) == json.loads(event(0)), "logged as queued"
    finally:
        await store.aclose()


async def test_a_sequencer_busy_in_another_schema_does_not_make_this_log_skip(pg_url: str) -> None:
    """PostgreSQL advisory locks are per database: the sequencer's lock is keyed by the schema, so a log in
    another schema of the same database (another deployment, a concurrent test run) integrates while this one's
    batch holds its lock, and a second sequencer of the same log still skips the round (one order per log)."""
    import uuid

    from conftest import _pg_admin

    other = "pw_" + uuid.uuid4().hex[:12]
    with _pg_admin() as conn:
        conn.execute(f'CREATE SCHEMA "{other}"')
    other_url = pg_url.split("?")[0] + f"?options=-csearch_path%3D{other}"
    mine, theirs, same = (await AuditStore.open(pg_url), await AuditStore.open(other_url),
                          await AuditStore.open(pg_url))
    signer = Signer.generate(ORIGIN)
    try:
        for store, i in ((mine, 1), (theirs, 2)):
            async with store.db.transaction() as tx:
                await store.enqueue(event(i), tx)
        holder = Sequencer(mine, signer)
        async with mine.db.transaction() as tx:
            assert await holder._lock(tx, wait=False), "the first sequencer takes its log's lock"
            result = await Sequencer(theirs, signer).integrate(force_checkpoint=True)
            assert not result.skipped and result.integrated == 1, "the other schema's log went on"
            blocked = await Sequencer(same, signer).integrate(force_checkpoint=True)
            assert blocked.skipped and blocked.integrated == 0, "a second sequencer of the same log skips"
        assert await theirs.checkpoint() is not None, "the other log signed its checkpoint"
    finally:
        for s in (mine, theirs, same):
            await s.aclose()
        with _pg_admin() as conn:
            conn.execute(f'DROP SCHEMA "{other}" CASCADE')
