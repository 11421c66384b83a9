"""The buyer's ledger on real SQLite files and PostgreSQL: atomic budget reservations (no overspend under
concurrency), persistence across restarts, compare-and-set transitions, and reconciliation."""

from __future__ import annotations

import asyncio
import time

from paywire.client.core import Candidate, Option
from paywire.client.policy import Policy, Quote
from paywire.store import open_database
from paywire.store.spend import BudgetRefused, Reservation, SpendLedger
from paywire.x402.models import PaymentRequirements

NET = "eip155:31337"
TOKEN = "0x" + "ab" * 20
PAYEE = "0x" + "cd" * 20
PAYEE2 = "0x" + "ce" * 20
ACCOUNT = "0x" + "11" * 20


def cand(amount: int = 10_000, payee: str = PAYEE, host: str = "api.example.com") -> Candidate:
    r = PaymentRequirements(scheme="exact", network=NET, amount=amount, asset=TOKEN, pay_to=payee,
                            max_timeout_seconds=60, extra={"name": "USD Coin", "version": "2"})
    return Candidate(Option(0, r), Quote(host, payee, NET, TOKEN, amount, amount))


async def reserve(ledger: SpendLedger, policy: Policy, *cands: Candidate) -> Reservation | BudgetRefused:
    return await ledger.reserve(policy, list(cands) or [cand()], url="https://api.example.com/x", method="GET",
                                version=2, challenge="{}")


async def test_concurrent_reservations_never_overspend(store_url: str) -> None:
    """Twenty concurrent $0.01 reservations against a $0.05 daily budget: exactly five succeed."""
    db = open_database(store_url)
    try:
        ledger = SpendLedger(db, ACCOUNT)
        await ledger.ensure_schema()
        results = await asyncio.gather(*(reserve(ledger, Policy(daily="$0.05")) for _ in range(20)))
        assert sum(isinstance(r, Reservation) for r in results) == 5
        refused = [r for r in results if isinstance(r, BudgetRefused)]
        assert len(refused) == 15 and all(r.refusals[0][1].rule == "daily" for r in refused)
        assert (await ledger.spent()).day == 50_000
    finally:
        await db.aclose()


async def test_budgets_survive_a_restart(store_url: str) -> None:
    db = open_database(store_url)
    ledger = SpendLedger(db, ACCOUNT)
    r = await reserve(ledger, Policy(total="$0.02"), cand(20_000))
    assert isinstance(r, Reservation)
    assert await ledger.finish(r.id, outcome="paid", budget="committed", tx="0xabc")
    await db.aclose()

    db2 = open_database(store_url)
    try:
        again = SpendLedger(db2, ACCOUNT)
        refused = await reserve(again, Policy(total="$0.02"), cand(1))
        assert isinstance(refused, BudgetRefused) and refused.refusals[0][1].rule == "total"
        other = SpendLedger(db2, "0x" + "22" * 20)  # budgets are per account
        assert isinstance(await reserve(other, Policy(total="$0.02"), cand(1)), Reservation)
    finally:
        await db2.aclose()


async def test_reservation_falls_back_to_an_option_within_budget(store_url: str) -> None:
    """per_payee: the first payee is exhausted, so the next candidate (another payee) is reserved."""
    db = open_database(store_url)
    try:
        ledger = SpendLedger(db, ACCOUNT)
        p = Policy(per_payee="$0.01")
        first = await reserve(ledger, p, cand())
        assert isinstance(first, Reservation)
        second = await reserve(ledger, p, cand(), cand(payee=PAYEE2))
        assert isinstance(second, Reservation) and second.candidate.quote.payee == PAYEE2
    finally:
        await db.aclose()


async def test_states_and_compare_and_set(store_url: str) -> None:
    """Released rows stop counting; held ones keep counting; a final row is never changed again."""
    db = open_database(store_url)
    try:
        ledger = SpendLedger(db, ACCOUNT)
        a, b, c = [await reserve(ledger, Policy()) for _ in range(3)]
        assert await ledger.finish(a.id, outcome="failed", budget="released")
        assert await ledger.finish(b.id, outcome="rejected", budget="held")
        assert await ledger.finish(c.id, outcome="paid", budget="committed", tx="0x1")
        assert not await ledger.finish(a.id, outcome="paid", budget="committed")
        assert not await ledger.finish(c.id, outcome="failed", budget="released")
        assert (await ledger.spent()).total == 20_000
        rows = await ledger.history()
        assert [r.outcome for r in rows] == ["paid", "rejected", "failed"] and rows[0].tx == "0x1"
        assert rows[0].to_dict()["amount"] == "10000"
        await ledger.record(url="u", method="GET", host="h", outcome="refused", candidate=cand(), rule="daily")
        assert (await ledger.spent()).total == 20_000 and (await ledger.history(limit=1))[0].rule == "daily"
    finally:
        await db.aclose()


async def test_reconcile_releases_expired_unused_and_commits_used(store_url: str) -> None:
    db = open_database(store_url)
    try:
        ledger = SpendLedger(db, ACCOUNT)
        ids = []
        for nonce in ("0x01", "0x02", "0x03"):
            r = await reserve(ledger, Policy())
            await ledger.mark_signed(r.id, payload_hash="h", payment_id=None, nonce=nonce,
                                     valid_before=int(time.time()) - 60)
            await ledger.finish(r.id, outcome="unknown", budget="held")
            ids.append(r.id)
        verdicts = {"0x01": False, "0x02": True, "0x03": None}

        async def used(receipt):
            return verdicts[receipt.nonce]

        assert await ledger.reconcile(used) == 2
        by_id = {r.id: r for r in await ledger.history()}
        assert by_id[ids[0]].budget == "released"
        assert by_id[ids[1]].budget == "committed" and by_id[ids[1]].outcome == "paid"
        assert by_id[ids[2]].budget == "held"
        assert (await ledger.spent()).total == 20_000
    finally:
        await db.aclose()


async def test_sqlite_file_is_shared_between_ledgers(tmp_path) -> None:
    """Two ledgers (two "processes") on one SQLite file see each other's reservations."""
    url = f"sqlite:///{tmp_path / 'shared.db'}"
    db1, db2 = open_database(url), open_database(url)
    try:
        l1, l2 = SpendLedger(db1, ACCOUNT), SpendLedger(db2, ACCOUNT)
        results = await asyncio.gather(*(reserve(ledger, Policy(daily="$0.03")) for ledger in [l1, l2] * 4))
        assert sum(isinstance(r, Reservation) for r in results) == 3
    finally:
        await db1.aclose()
        await db2.aclose()
