"""The buyer's budget reservation as SQLite runs it in the usual case — one ``INSERT … SELECT … WHERE`` that
checks every budget and reserves in the same statement — against the rules of ``check_budget``: spend up to
each cap is reserved, a micro-dollar more is refused, refunds give budget back, and processes sharing one
file never overspend together."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

from paywire.client.core import Candidate, Option
from paywire.client.policy import Policy, Quote
from paywire.store import open_database
from paywire.store.spend import BudgetRefused, Reservation, SpendLedger
from paywire.x402.models import PaymentRequirements

NET = "eip155:31337"
TOKEN = "0x" + "ab" * 20
PAYEE = "0x" + "cd" * 20
ACCOUNT = "0x" + "11" * 20


def cand(amount: int, payee: str = PAYEE, host: str = "api.example.com") -> Candidate:
    r = PaymentRequirements(scheme="exact", network=NET, amount=amount, asset=TOKEN, pay_to=payee,
                            max_timeout_seconds=60, extra={"name": "USD Coin", "version": "2"})
    return Candidate(Option(0, r), Quote(host, payee, NET, TOKEN, amount, amount))


async def reserve(ledger: SpendLedger, policy: Policy, c: Candidate) -> Reservation[Any] | BudgetRefused[Any]:
    return await ledger.reserve(policy, [c], url=f"https://{c.quote.host}/x", method="GET", version=2,
                                challenge="{}")


@pytest.mark.parametrize(("budget", "other"), [
    ("per_host", {"payee": "0x" + "ef" * 20}),  # another payee on the same host still counts for the host
    ("per_payee", {"host": "other.example", "payee": PAYEE.upper().replace("0X", "0x")}),  # payee case-blind
    ("daily", {"host": "other.example", "payee": "0x" + "ef" * 20}),
    ("total", {"host": "other.example", "payee": "0x" + "ef" * 20}),
])
async def test_each_budget_admits_spend_up_to_its_cap_and_refuses_a_micro_dollar_more(
        sqlite_url: str, budget: str, other: dict[str, str]) -> None:
    db = open_database(sqlite_url)
    try:
        ledger = SpendLedger(db, ACCOUNT)
        policy = Policy(**{budget: "$0.05"})
        first = await reserve(ledger, policy, cand(30_000))
        assert isinstance(first, Reservation), f"$0.03 did not fit an empty {budget} budget of $0.05"
        over = await reserve(ledger, policy, cand(20_001, **other))
        assert isinstance(over, BudgetRefused), f"$0.020001 more was reserved over the {budget} budget of $0.05"
        assert over.refusals[0][1].rule == budget, f"refused by {over.refusals[0][1].rule}, not {budget}"
        exact = await reserve(ledger, policy, cand(20_000, **other))
        assert isinstance(exact, Reservation), f"spend exactly at the {budget} cap of $0.05 was refused"
        assert isinstance(await reserve(ledger, policy, cand(1)), BudgetRefused), \
            f"a micro-dollar beyond the full {budget} budget was reserved"
        rows = await db.fetchall("SELECT usd_micros FROM buyer_payments WHERE account = ? ORDER BY id",
                                 (ACCOUNT,))
        assert [r["usd_micros"] for r in rows] == [30_000, 20_000], "a refused reservation left a row behind"
    finally:
        await db.aclose()


async def test_a_refund_gives_its_budget_back(sqlite_url: str) -> None:
    """A committed row of negative weight (a channel refund) makes room under the cap again, exactly."""
    db = open_database(sqlite_url)
    try:
        ledger = SpendLedger(db, ACCOUNT)
        policy = Policy(total="$0.02")
        paid = await reserve(ledger, policy, cand(20_000))
        assert isinstance(paid, Reservation)
        assert await ledger.finish(paid.id, outcome="paid", budget="committed")
        assert isinstance(await reserve(ledger, policy, cand(1)), BudgetRefused)
        await ledger.release(url="https://api.example.com/x", method="GET", host="api.example.com", network=NET,
                             asset=TOKEN, pay_to=PAYEE, amount=15_000, usd_micros=15_000, reason="refund")
        assert isinstance(await reserve(ledger, policy, cand(15_000)), Reservation), \
            "the refunded $0.015 could not be spent again"
        assert isinstance(await reserve(ledger, policy, cand(1)), BudgetRefused), \
            "more than the refund was made available"
        assert (await ledger.spent()).total == 20_000
    finally:
        await db.aclose()


_WORKER = textwrap.dedent("""
    import asyncio, sys
    from paywire.client.core import Candidate, Option
    from paywire.client.policy import Policy, Quote
    from paywire.store import open_database
    from paywire.store.spend import Reservation, SpendLedger
    from paywire.x402.models import PaymentRequirements

    async def main(url, n):
        db = open_database(url)
        ledger = SpendLedger(db, "0x" + "11" * 20)
        await ledger.ensure_schema()
        r = PaymentRequirements(scheme="exact", network="eip155:31337", amount=10_000, asset="0x" + "ab" * 20,
                                pay_to="0x" + "cd" * 20, max_timeout_seconds=60, extra={})
        c = Candidate(Option(0, r), Quote("api.example.com", r.pay_to, r.network, r.asset, 10_000, 10_000))
        print("ready", flush=True)
        sys.stdin.readline()
        won = 0
        for _ in range(n):
            res = await ledger.reserve(Policy(daily="$2.00"), [c], url="https://api.example.com/x", method="GET",
                                       version=2, challenge="{}")
            won += isinstance(res, Reservation)
        await db.aclose()
        print(won, flush=True)

    asyncio.run(main(sys.argv[1], int(sys.argv[2])))
""")


def test_processes_sharing_one_file_never_overspend_together(tmp_path: Path) -> None:
    """Four processes, a hundred $0.01 reservations each, against one $2 daily budget: exactly 200 are made."""
    url = f"sqlite:///{tmp_path / 'shared.db'}"
    asyncio.run(_migrate(url))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path(__file__).parents[1] / "src"),
                                                         os.environ.get("PYTHONPATH", "")])}
    procs = [subprocess.Popen([sys.executable, "-c", _WORKER, url, "100"], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True, env=env) for _ in range(4)]
    try:
        for p in procs:
            assert p.stdout is not None and p.stdout.readline().strip() == "ready"
        for p in procs:  # all at once
            assert p.stdin is not None
            p.stdin.write("go\n")
            p.stdin.flush()
        won = [int(p.communicate(timeout=120)[0].strip()) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    assert all(p.returncode == 0 for p in procs), "a reserving process failed"
    assert sum(won) == 200, f"processes reserved {sum(won)} × $0.01 against a $2 budget ({won})"
    rows = asyncio.run(_counting(url))
    assert rows == 200, f"{rows} reserved rows in the shared ledger, not 200"


async def _migrate(url: str) -> None:
    db = open_database(url)
    try:
        await SpendLedger(db, ACCOUNT).ensure_schema()
    finally:
        await db.aclose()


async def _counting(url: str) -> int:
    db = open_database(url)
    try:
        row = await db.fetchone("SELECT COUNT(*) AS n FROM buyer_payments WHERE budget = 'reserved'")
        assert row is not None
        return int(row["n"])
    finally:
        await db.aclose()


async def test_a_budget_beyond_sqlite_integers_still_reserves_and_counts(sqlite_url: str) -> None:
    """A cap of ten trillion dollars (10**19 micro-dollars, more than SQLite's 64-bit integers hold) is checked in
    Python: the payment is reserved and counted."""
    db = open_database(sqlite_url)
    try:
        ledger = SpendLedger(db, ACCOUNT)
        res = await reserve(ledger, Policy(total="$10000000000000"), cand(10_000))
        assert isinstance(res, Reservation), f"a $0.01 payment under a $10T total budget was not reserved: {res}"
        assert (await ledger.spent()).total == 10_000
    finally:
        await db.aclose()
