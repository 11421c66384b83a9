"""The decision log and the rule tester, run as a user would (``paywire risk …`` subprocesses) on a real
SQLite store; the log is bounded (sampled allows, retention, a row cap)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from paywire.risk.engine import RiskEngine
from paywire.risk.lists import RiskLists
from paywire.risk.model import Event
from paywire.store.risk import RiskRecords

PAYWIRE = [sys.executable, "-m", "paywire.cli.main"]


def run(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "COLUMNS": "200"}
    return subprocess.run([*PAYWIRE, "risk", *args], capture_output=True, text=True, timeout=120, env=env)


def pay(payer: str, amount: int = 10_000) -> Event:
    return Event("payment", ip="198.51.100.1", route="GET /x", payer=payer, payee="0xbb", amount=amount)


async def record_traffic(url: str) -> None:
    records = await RiskRecords.open(url)
    engine = RiskEngine(lists=RiskLists(deny=["0xbad"]), recorder=records, sample_allows=1.0)
    for i in range(4):
        await engine.check(pay(f"0x{i:040x}", amount=(i + 1) * 10_000))
    await engine.check(pay("0xbad"))
    await records.aclose()


async def test_decisions_lists_the_log_and_exports_json_lines(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'p.db'}"
    await record_traffic(url)
    table = run("decisions", "--store", url)
    denied = run("decisions", "--store", url, "--action", "deny", "--json")
    assert table.returncode == 0, table.stderr
    assert "denylisted_payer" in table.stdout, table.stdout
    rows = [json.loads(line) for line in denied.stdout.splitlines()]
    assert len(rows) == 1, rows
    assert (rows[0]["rule"], rows[0]["event"]["payer"]) == ("denylisted_payer", "0xbad"), rows[0]


async def test_rule_file_tested_on_recorded_traffic(tmp_path: Path) -> None:
    """A rule file replayed over the export: two allows become denials (amount cap) and the deny-listed payer
    would be allowed (the file has no deny-list rule): three decisions would change."""
    url = f"sqlite:///{tmp_path / 'p.db'}"
    await record_traffic(url)
    traffic = tmp_path / "traffic.jsonl"
    traffic.write_text(run("decisions", "--store", url, "--json").stdout)
    rules = tmp_path / "strict.toml"
    rules.write_text('[[rule]]\nid = "cap"\ncheckpoint = "payment"\nwhen = "amount > 0.025"\naction = "deny"\n')
    r = run("test", str(rules), "--replay", str(traffic))
    assert r.returncode == 0, r.stderr
    assert "3 of 5 decisions would change" in r.stdout, r.stdout


async def test_a_bad_rule_file_fails_with_its_line(tmp_path: Path) -> None:
    rules = tmp_path / "bad.toml"
    rules.write_text('[[rule]]\nid = "oops"\ncheckpoint = "payment"\n\nwhen = "payer_count_1m >"\naction = "deny"\n')
    r = run("test", str(rules))
    assert r.returncode == 1, r.stdout
    assert f"{rules}:5 rule 'oops'" in " ".join(r.stderr.split()), r.stderr


async def test_the_log_samples_allows_and_stays_bounded(tmp_path: Path) -> None:
    now = [1_800_000_000.0]
    records = await RiskRecords.open(f"sqlite:///{tmp_path / 'p.db'}")
    records.clock, records.retention, records.max_rows, records.prune_every = (lambda: now[0]), 3600, 10, 5
    engine = RiskEngine(lists=RiskLists(deny=["0xbad"]), recorder=records, sample_allows=0.0)
    for _ in range(20):
        await engine.check(pay("0x600d"))
    assert await records.count() == 0, "allows were recorded with sample_allows=0"
    for _ in range(25):
        await engine.check(pay("0xbad"))
    assert await records.count() <= 10, "the log grew past max_rows"
    now[0] += 7200
    await records.prune()
    assert await records.count() == 0, "rows past retention were kept"
    await records.aclose()


async def test_a_flood_of_denials_is_not_a_flood_of_writes(tmp_path: Path) -> None:
    records = await RiskRecords.open(f"sqlite:///{tmp_path / 'p.db'}")
    now = [1_800_000_000.0]
    engine = RiskEngine(lists=RiskLists(deny=["0xbad"]), recorder=records, max_records_per_second=5,
                        clock=lambda: now[0])
    for _ in range(40):  # all within one second of the engine's clock
        await engine.check(pay("0xbad"))
    now[0] += 1.0
    await engine.check(pay("0xbad"))  # a second later the budget is back
    written = await records.count()
    await records.aclose()
    assert written == 6, f"{written} records for 41 denials at 5 per second (5 burst + 1 a second later)"
    assert engine.metrics.records_dropped == 35, engine.metrics.render()


async def test_lists_in_the_store_are_managed_from_the_command_line(tmp_path: Path) -> None:
    """``paywire risk lists add/show/remove`` on a SQLite store; an engine reading that store denies the entry."""
    from paywire.store.risk import RiskListStore

    url = f"sqlite:///{tmp_path / 'p.db'}"
    added = run("lists", "add", "deny", "0xBAD", "--note", "chargebacks", "--store", url)
    again = run("lists", "add", "deny", "0xbad", "--store", url)
    wrong = run("lists", "add", "maybe", "0xbad", "--store", url)
    shown = run("lists", "show", "--store", url)
    assert added.returncode == 0 and "added to deny" in added.stdout, added.stderr
    assert "already on deny" in again.stdout, again.stdout
    assert wrong.returncode == 1 and "expected one of allow, deny" in wrong.stderr, wrong.stderr
    assert shown.stdout.splitlines() == ["deny\t0xbad\tchargebacks"], shown.stdout
    store = await RiskListStore.open(url)
    try:
        d = await RiskEngine(lists=RiskLists(store=store), sample_allows=0).check(pay("0xBad"))
    finally:
        await store.aclose()
    assert (d.action, d.rule) == ("deny", "denylisted_payer"), d
    removed = run("lists", "remove", "deny", "0xbad", "--store", url)
    assert removed.returncode == 0 and run("lists", "show", "--store", url).stdout == ""
