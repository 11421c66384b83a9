"""The buyer ledger's running budget totals (``buyer_spend``, kept by triggers) against the rows they summarize,
on real SQLite and PostgreSQL; and the reservation transaction that runs on the event loop's thread when the
SQLite write lock is free, and waits on a worker thread when it is not."""

from __future__ import annotations

import asyncio
import sqlite3
from typing import Any

import pytest

from paywire.client.core import Candidate, Option
from paywire.client.policy import Policy, Quote
from paywire.store import open_database
from paywire.store.db import INLINE_MISS, Database, SqliteDatabase
from paywire.store.migrations import _REGISTRY, migrate
from paywire.store.spend import COUNTING, Reservation, SpendLedger, utc_day
from paywire.x402.models import PaymentRequirements

NET = "eip155:31337"
TOKEN = "0x" + "ab" * 20
ACCOUNT = "0x" + "11" * 20


def cand(amount: int, payee: str, host: str) -> Candidate:
    r = PaymentRequirements(scheme="exact", network=NET, amount=amount, asset=TOKEN, pay_to=payee,
                            max_timeout_seconds=60, extra={"name": "USD Coin", "version": "2"})
    return Candidate(Option(0, r), Quote(host, payee, NET, TOKEN, amount, amount))


async def reserve(ledger: SpendLedger, c: Candidate, policy: Policy | None = None) -> Any:
    return await ledger.reserve(policy or Policy(), [c], url=f"https://{c.quote.host}/x", method="GET", version=2,
                                challenge="{}")


async def sums_from_rows(db: Database, host: str, payee: str, day: str) -> dict[str, int]:
    """What the budgets must see, summed straight from the payment rows."""
    row = await db.fetchone(
        "SELECT COALESCE(SUM(CASE WHEN host = ? THEN usd_micros ELSE 0 END), 0) AS host, "
        "COALESCE(SUM(CASE WHEN LOWER(pay_to) = LOWER(?) THEN usd_micros ELSE 0 END), 0) AS payee, "
        "COALESCE(SUM(CASE WHEN day = ? THEN usd_micros ELSE 0 END), 0) AS day, "
        "COALESCE(SUM(usd_micros), 0) AS total FROM buyer_payments WHERE account = ? AND budget IN (?, ?, ?)",
        (host, payee, day, ACCOUNT, *COUNTING))
    assert row is not None
    return {k: int(row[k]) for k in ("host", "payee", "day", "total")}


async def assert_totals_match_rows(ledger: SpendLedger, db: Database, day: str) -> None:
    for host in ("a.example", "b.example"):
        for payee in ("0x" + "cd" * 20, "0x" + "CD" * 20, "0x" + "ef" * 20):
            spent = await ledger.spent(host, payee)
            want = await sums_from_rows(db, host, payee, day)
            got = {"host": spent.host, "payee": spent.payee, "day": spent.day, "total": spent.total}
            assert got == want, f"running totals for {host}/{payee} differ from the rows: {got} != {want}"


async def test_running_totals_follow_every_transition(store_url: str) -> None:
    """Reserve, release, hold, commit, reconcile-style updates, a non-counting record and a deleted row: the
    totals the budgets read always equal the sums over the rows."""
    db = open_database(store_url)
    try:
        ledger = SpendLedger(db, ACCOUNT)
        day = utc_day(ledger._clock())
        ids = []
        for i in range(12):
            payee = ("0x" + "cd" * 20, "0x" + "CD" * 20, "0x" + "ef" * 20)[i % 3]
            r = await reserve(ledger, cand(1000 * (i + 1), payee, ("a.example", "b.example")[i % 2]))
            assert isinstance(r, Reservation), f"reservation {i} refused without budgets"
            ids.append(r.id)
        await assert_totals_match_rows(ledger, db, day)
        await ledger.finish(ids[0], outcome="failed", budget="released")
        await ledger.finish(ids[1], outcome="unknown", budget="held")
        await ledger.finish(ids[2], outcome="paid", budget="committed")
        await ledger.finish(ids[1], outcome="failed", budget="released")  # held → released (reconciled)
        await ledger.finish(ids[3], outcome="unknown", budget="held")
        await ledger.finish(ids[3], outcome="paid", budget="committed")  # held → committed
        await ledger.mark_signed(ids[4], payload_hash="h", payment_id=None, nonce="0x01", valid_before=1)
        await ledger.record(url="u", method="GET", host="a.example", outcome="refused",
                            candidate=cand(5000, "0x" + "cd" * 20, "a.example"), rule="daily")
        await assert_totals_match_rows(ledger, db, day)
        await db.execute("DELETE FROM buyer_payments WHERE id = ?", (ids[5],))
        await db.execute("UPDATE buyer_payments SET usd_micros = usd_micros + 7 WHERE id = ?", (ids[6],))
        await db.execute("UPDATE buyer_payments SET host = 'b.example' WHERE id = ?", (ids[8],))
        await assert_totals_match_rows(ledger, db, day)
    finally:
        await db.aclose()


async def test_migration_fills_the_totals_from_existing_rows(store_url: str) -> None:
    """A ledger written before the totals existed keeps its budgets after the upgrade."""
    db = open_database(store_url)
    steps = _REGISTRY["buyer"]
    try:
        _REGISTRY["buyer"] = steps[:2]
        await migrate(db, ["buyer"])
        day = utc_day(1.0e9)
        for budget, micros in (("committed", 30_000), ("held", 20_000), ("released", 50_000), ("reserved", 1)):
            await db.execute(
                "INSERT INTO buyer_payments (account, created_at, updated_at, day, method, url, host, pay_to, "
                "usd_micros, outcome, budget) VALUES (?, 1, 1, ?, 'GET', 'u', 'a.example', ?, ?, 'x', ?)",
                (ACCOUNT, day, "0x" + "CD" * 20, micros, budget))
        _REGISTRY["buyer"] = steps
        ledger = SpendLedger(db, ACCOUNT, clock=lambda: 1.0e9)
        spent = await ledger.spent("a.example", "0x" + "cd" * 20)
        assert spent.total == 50_001, f"total after the upgrade: {spent.total}"
        assert spent.day == 50_001, f"today's spend after the upgrade: {spent.day}"
        assert spent.host == 50_001, f"the host's spend after the upgrade: {spent.host}"
        assert spent.payee == 50_001, f"the payee's spend after the upgrade: {spent.payee}"
    finally:
        _REGISTRY["buyer"] = steps
        await db.aclose()


async def test_reservation_waits_for_another_writer_and_then_holds_the_budget(tmp_path: Any) -> None:
    """Another connection (as another process would) holds SQLite's write lock: the reservation does not run
    inline, waits for the lock off the event loop, and the budget still allows exactly what it should."""
    path = tmp_path / "shared.db"
    db = open_database(f"sqlite:///{path}")
    try:
        ledger = SpendLedger(db, ACCOUNT)
        await ledger.ensure_schema()
        other = sqlite3.connect(path, isolation_level=None)
        other.execute("BEGIN IMMEDIATE")
        pending = asyncio.ensure_future(reserve(ledger, cand(30_000, "0x" + "cd" * 20, "a.example"),
                                                Policy(daily="$0.05")))
        await asyncio.sleep(0)  # let it start: it must not finish while the lock is held
        while not pending.done() and db._tx_pool is None:  # type: ignore[attr-defined]
            await asyncio.sleep(0)
        assert not pending.done(), "the reservation finished while another connection held the write lock"
        other.execute("COMMIT")
        other.close()
        first = await pending
        assert isinstance(first, Reservation), "the reservation was not made after the lock was released"
        second = await reserve(ledger, cand(30_000, "0x" + "cd" * 20, "a.example"), Policy(daily="$0.05"))
        assert not isinstance(second, Reservation), "a second $0.03 fit into a $0.05 daily budget"
    finally:
        await ledger.aclose()
        await db.aclose()


def test_inline_transaction_rolls_back_on_error_and_misses_when_busy(tmp_path: Any) -> None:
    db = SqliteDatabase(tmp_path / "t.db")
    try:
        assert db.try_inline("CREATE TABLE t (x INTEGER)") is not INLINE_MISS

        def boom(conn: sqlite3.Connection) -> None:
            conn.execute("INSERT INTO t VALUES (1)")
            raise ValueError("step failed")

        with pytest.raises(ValueError):
            db.try_inline_tx(boom)
        rows = db.try_inline("SELECT COUNT(*) AS n FROM t", fetch=True, write=False)
        assert rows[0]["n"] == 0, "a failed inline transaction left its insert behind"
        other = sqlite3.connect(tmp_path / "t.db", isolation_level=None)
        other.execute("BEGIN IMMEDIATE")
        try:
            result = db.try_inline_tx(lambda conn: conn.execute("INSERT INTO t VALUES (2)").rowcount)
            assert result is INLINE_MISS, "an inline transaction waited for (or ignored) another writer's lock"
        finally:
            other.execute("ROLLBACK")
            other.close()
        assert db.try_inline_tx(lambda conn: conn.execute("INSERT INTO t VALUES (3)").rowcount) == 1
        rows = db.try_inline("SELECT x FROM t", fetch=True, write=False)
        assert [r["x"] for r in rows] == [3], "the inline transactions did not leave exactly the committed row"
    finally:
        asyncio.run(db.aclose())
