"""On SQLite the seller ledger's events are written by TEMP triggers inside the change's own statement (issue 12:
the paid path's cheap way). They must say exactly what the Python writer says (canonical RFC 8785 bytes, same
subject, kind, previous state, secrets digested), on every connection the store may use: inline, the worker
thread, the transaction thread and a fresh transaction connection."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

from paywire.audit.ledger import SELLER
from paywire.audit.queue import queued_events
from paywire.audit.wiring import AuditTrail, enable_audit
from paywire.mpp.jcs import canonicalize
from paywire.store.db import Executor, SqliteDatabase
from paywire.store.payments import NewPayment, PaymentStore

pytestmark = pytest.mark.asyncio


def _payment(n: int) -> NewPayment:
    return NewPayment(auth_key=f"eip155:8453:0xtoken:0xpayer:0x{n:064x}", payment_id=f"pay-{n}", payload_hash="h",
                      route="GET /paid", method="GET", path="/paid", settle_mode="after", x402_version=2,
                      scheme="exact", network="eip155:8453", asset="0x" + "aa" * 20, pay_to="0x" + "bb" * 20,
                      amount=10_000, decimals=6, payer="0x" + "cc" * 20, payload="{}", requirements="{}")


@pytest_asyncio.fixture
async def store(tmp_path: Path) -> AsyncIterator[PaymentStore]:
    s = PaymentStore(SqliteDatabase(tmp_path / "seller.db"))
    await s.migrate()
    yield s
    await s.db.aclose()


async def _queued(s: PaymentStore) -> list[bytes]:
    return await queued_events(s.db)


async def test_trigger_events_are_the_python_events(store: PaymentStore) -> None:
    trail = await enable_audit(store, "seller", "seller-eu1-7")
    assert trail.in_db, "on SQLite the seller's events are written by the database"
    rec = await store.claim(_payment(1), "me", 30)
    assert rec is not None
    assert await store.update(rec.id, "me", ["verifying"], state="claimed")
    assert await store.update(rec.id, "me", ["claimed"], owner="me", lease_until=1.0), "a lease change"
    assert await store.update(rec.id, "me", ["claimed"], state="settling")
    assert await store.update(rec.id, "me", ["settling"], state="failed", owner=None, error="Bearer abc.def")
    entries = await _queued(store)
    assert len(entries) == 4, f"one event per money change, none for the lease: {len(entries)}"
    python = AuditTrail(SELLER, "seller-eu1-7")
    row = await store.db.fetchone("SELECT * FROM seller_payments WHERE id = ?", (rec.id,))
    assert row is not None
    states = [(None, "verifying", {}), ("verifying", "claimed", {}), ("claimed", "settling", {}),
              ("settling", "failed", {"error": "Bearer abc.def"})]
    for entry, (previous, state, data) in zip(entries, states, strict=True):
        event = json.loads(entry)
        assert canonicalize(event) == entry, f"the trigger's event is canonical JSON (RFC 8785): {entry!r}"
        want = json.loads(python.event(state, SELLER.subject({**row, "tx": row["tx"]}), previous, data))
        for e in (event, want):
            e.pop("time")
        assert event == want, f"the trigger's event is the Python writer's:\n{event}\n{want}"
    assert "Bearer" not in entries[-1].decode(), "a secret-looking error is recorded as its digest"
    assert json.loads(entries[0])["time"].endswith("Z"), "time is RFC 3339 UTC"


async def test_every_connection_of_the_store_logs_its_changes(store: PaymentStore) -> None:
    await enable_audit(store, "seller", "seller-1")
    db = store.db
    assert isinstance(db, SqliteDatabase)
    rec = await store.claim(_payment(2), "me", 30)  # inline
    assert rec is not None
    sql = "UPDATE seller_payments SET state = ?, updated_at = 1 WHERE id = ?"
    await db.execute(sql, ("claimed", rec.id))  # the worker thread's connection

    async def body(tx: Executor) -> Any:
        return await tx.execute(sql, ("settling", rec.id))

    await db.run_transaction(body)  # the transaction thread's connection
    async with db.transaction() as tx:  # a new connection
        await tx.execute(sql, ("served", rec.id))
    kinds = [json.loads(e)["kind"] for e in await _queued(store)]
    assert kinds == ["payment.claimed", "payment.verified", "payment.settling", "payment.served"], \
        f"each connection wrote its change's event: {kinds}"


async def test_audit_off_installs_no_triggers(store: PaymentStore) -> None:
    rec = await store.claim(_payment(3), "me", 30)
    assert rec is not None and store.audit is None
    rows = await store.db.fetchall("SELECT name FROM sqlite_temp_master WHERE type = 'trigger'")
    assert rows == [], f"no triggers without auditing: {rows}"


async def test_a_queued_event_says_what_its_change_left_not_the_rows_later_state(store: PaymentStore) -> None:
    """The trigger queues the row's columns, and the sequencer writes the JSON later: what it writes must be fixed
    when the change committed, whatever happened to the ledger row in between."""
    await enable_audit(store, "seller", "seller-1")
    rec = await store.claim(_payment(4), "me", 30)
    assert rec is not None
    assert await store.update(rec.id, "me", ["verifying"], state="claimed", error="abandoned: owner lease ran out")
    assert isinstance(store.db, SqliteDatabase)
    raw = sqlite3.connect(store.db.path)  # a tool's connection: no triggers, no events
    try:
        raw.execute("UPDATE seller_payments SET state = 'served', tx = '0xlater', payer = '0xother' WHERE id = ?",
                    (rec.id,))
        raw.commit()
        raw.execute("DELETE FROM seller_payments WHERE id = ?", (rec.id,))
        raw.commit()
    finally:
        raw.close()
    events = [json.loads(e) for e in await _queued(store)]
    assert [(e["kind"], e["previous"], e["data"]) for e in events] == [
        ("payment.claimed", None, {"state": "verifying"}),
        ("payment.abandoned", "verifying", {"error": "abandoned: owner lease ran out", "state": "claimed"}),
    ], f"each event is its own change's: {events}"
    assert {e["subject"]["payer"] for e in events} == {"0x" + "cc" * 20}, "the payer as the changes left it"
    assert {e["subject"]["tx_hash"] for e in events} == {None}, "not the tx written after the events were queued"


async def test_an_error_with_quotes_controls_and_non_ascii_is_canonical_and_the_python_event(
        store: PaymentStore) -> None:
    await enable_audit(store, "seller", "seller-ü-1")
    rec = await store.claim(_payment(5), "me", 30)
    assert rec is not None
    error = 'handler said "no"\n\ttabbed \x01 naïve ☃ \U0001f600'
    assert await store.update(rec.id, "me", ["verifying"], state="failed", error=error)
    entries = await _queued(store)
    row = await store.db.fetchone("SELECT * FROM seller_payments WHERE id = ?", (rec.id,))
    assert row is not None
    event = json.loads(entries[-1])
    assert canonicalize(event) == entries[-1], f"canonical JSON (RFC 8785): {entries[-1]!r}"
    want = json.loads(AuditTrail(SELLER, "seller-ü-1").event("failed", SELLER.subject(row), "verifying",
                                                                {"error": error}))
    for e in (event, want):
        e.pop("time")
    assert event == want, f"the queued row's event is the Python writer's:\n{event}\n{want}"
    assert event["data"]["error"] == error, "the error as the change set it"
