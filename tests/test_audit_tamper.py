"""Tampering with the audit log, on SQLite and PostgreSQL: each change is caught by `paywire audit verify`,
which exits 1 and names the first sequence number it can no longer vouch for.

The log: 40 events, a checkpoint every 8 (sizes 8, 16, 24, 32, 40), each cosigned by a witness. Edits that leave
a trace in the entry itself (its hash, its embedded sequence number, a gap) are named exactly; a rewrite that
recomputes hashes is caught by the checkpoints and named as the first entry after the last checkpoint that still
verifies (the range is in the message)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from audit_support import ORIGIN, Log, event, leaf, new_log, truncate, verify_cli

from paywire.audit.events import log_entry
from paywire.audit.note import Signer
from paywire.audit.sequencer import CheckpointPolicy, Sequencer
from paywire.audit.store import LOG, NODES

pytestmark = pytest.mark.postgres


async def _log(url: str) -> Log:
    log = await new_log(url)
    await log.add(40)
    return log


def _verify(log: Log, *extra: str) -> tuple[int, str]:
    return verify_cli("--store", log.url, "--key", log.signer.verifier.vkey, *extra)


async def _truncate(log: Log, size: int) -> None:
    await truncate(log.store, size)


async def _regrow(log: Log, signer: Signer, start: int, stop: int) -> None:
    """Append forged events ``start..stop-1`` through the real sequencer, signing checkpoints with ``signer``."""
    for i in range(start, stop):
        await log.store.enqueue(event(i, amount="1"))
    seq = Sequencer(log.store, signer, origin=ORIGIN, batch=8, policy=CheckpointPolicy(every_entries=8))
    while (await seq.integrate(force_checkpoint=True)).integrated:
        pass


def _run(coro: object) -> None:
    asyncio.run(coro)  # type: ignore[arg-type]


@pytest.fixture
def log(store_url: str) -> Log:
    return asyncio.run(_log(store_url))


def test_an_untouched_log_verifies(log: Log, tmp_path: Path) -> None:
    code, out = _verify(log, "--witness", log.witness.verifier.vkey, "--cosignatures", "1",
                        "--checkpoint", str(log.write_state(tmp_path / "witness.json")))
    assert code == 0, f"an untouched log must verify:\n{out}"
    assert "OK: 40 entries" in out, out


def test_editing_one_events_amount_is_named_exactly(log: Log) -> None:
    _run(log.store.db.execute(f"UPDATE {LOG} SET entry = REPLACE(entry, '\"amount\":\"1000\"', "
                              "'\"amount\":\"9000\"') WHERE seq = 13"))
    code, out = _verify(log)
    assert code == 1, f"verify must fail on an edited event:\n{out}"
    assert "first bad seq 13" in out, out
    assert "does not hash to its stored leaf hash" in out, out


def test_editing_an_event_and_its_leaf_hash_is_caught_by_the_next_checkpoint(log: Log) -> None:
    forged = log_entry(13, event(13, amount="9000"))

    async def tamper() -> None:
        await log.store.db.execute(f"UPDATE {LOG} SET entry = ?, leaf_hash = ? WHERE seq = 13",
                                   (forged.decode(), leaf(forged)))
    _run(tamper())
    code, out = _verify(log)
    assert code == 1, f"verify must fail when an event and its hash were rewritten:\n{out}"
    assert "first bad seq 8" in out, f"the entries after the last good checkpoint (8) are named:\n{out}"
    assert "[8, 16)" in out, out


def test_deleting_an_event_in_the_middle_is_named_exactly(log: Log) -> None:
    _run(log.store.db.execute(f"DELETE FROM {LOG} WHERE seq = 20"))
    code, out = _verify(log)
    assert code == 1, out
    assert "first bad seq 20" in out, out
    assert "missing" in out, out


def test_deleting_an_event_and_renumbering_the_rest_is_named_exactly(log: Log) -> None:
    async def tamper() -> None:
        await log.store.db.execute(f"DELETE FROM {LOG} WHERE seq = 20")
        for s in range(21, 40):
            await log.store.db.execute(f"UPDATE {LOG} SET seq = ? WHERE seq = ?", (s - 1, s))
    _run(tamper())
    code, out = _verify(log)
    assert code == 1, out
    assert "first bad seq 20" in out, out
    assert "carries sequence number 21" in out, out


def test_deleting_the_tail_is_named_at_the_first_missing_seq(log: Log) -> None:
    _run(log.store.db.execute(f"DELETE FROM {LOG} WHERE seq >= 35"))
    code, out = _verify(log)
    assert code == 1, out
    assert "first bad seq 35" in out, out
    assert "entries from 35 were deleted" in out, out


def test_deleting_the_tail_and_its_checkpoints_is_caught_by_the_witness(log: Log, tmp_path: Path) -> None:
    state = log.write_state(tmp_path / "witness.json")
    _run(_truncate(log, 35))
    code, out = _verify(log)
    assert code == 0, f"without an outside checkpoint a cleanly cut tail cannot be seen:\n{out}"
    code, out = _verify(log, "--checkpoint", str(state), "--witness", log.witness.verifier.vkey)
    assert code == 1, f"the witness's checkpoint of size 40 must expose the cut:\n{out}"
    assert "first bad seq 35" in out, out


def test_swapping_two_events_is_named_exactly(log: Log) -> None:
    async def tamper() -> None:
        db = log.store.db
        a = await db.fetchone(f"SELECT entry, leaf_hash FROM {LOG} WHERE seq = 5")
        b = await db.fetchone(f"SELECT entry, leaf_hash FROM {LOG} WHERE seq = 9")
        assert a and b
        await db.execute(f"UPDATE {LOG} SET entry = ?, leaf_hash = ? WHERE seq = 5", (b["entry"], b["leaf_hash"]))
        await db.execute(f"UPDATE {LOG} SET entry = ?, leaf_hash = ? WHERE seq = 9", (a["entry"], a["leaf_hash"]))
    _run(tamper())
    code, out = _verify(log)
    assert code == 1, out
    assert "first bad seq 5" in out, out
    assert "carries sequence number 9" in out, out


def test_a_whole_log_recomputed_and_signed_with_another_key_is_refused_from_seq_0(log: Log) -> None:
    async def tamper() -> None:
        await _truncate(log, 0)
        await _regrow(log, Signer.generate(ORIGIN), 0, 40)
    _run(tamper())
    code, out = _verify(log)
    assert code == 1, out
    assert "first bad seq 0" in out, out
    assert "not signed by a trusted log key" in out, out


def test_a_rewrite_signed_with_the_stolen_log_key_is_caught_by_the_witness(log: Log, tmp_path: Path) -> None:
    state = log.write_state(tmp_path / "witness.json")

    async def tamper() -> None:
        await _truncate(log, 16)
        await _regrow(log, log.signer, 16, 40)
    _run(tamper())
    code, out = _verify(log)
    assert code == 0, f"with the log's own key the rewrite is self-consistent:\n{out}"
    code, out = _verify(log, "--witness", log.witness.verifier.vkey, "--cosignatures", "1",
                        "--checkpoint", str(state))
    assert code == 1, f"checkpoints the witness never cosigned must fail:\n{out}"
    assert "first bad seq 16" in out, f"the entries after the last cosigned checkpoint (16) are named:\n{out}"
    assert "witness.json checkpoint of size 40" in out, out


def test_truncating_and_regrowing_without_the_key_is_caught_by_the_old_checkpoints(log: Log) -> None:
    async def tamper() -> None:
        db = log.store.db
        await db.execute(f"DELETE FROM {LOG} WHERE seq >= 20")
        for i in range(20, 40):
            forged = log_entry(i, event(i, amount="1"))
            await db.execute(f"INSERT INTO {LOG} (seq, leaf_hash, entry, created_at) VALUES (?, ?, ?, 0)",
                             (i, leaf(forged), forged.decode()))
    _run(tamper())
    code, out = _verify(log)
    assert code == 1, out
    assert "first bad seq 16" in out, f"the first entry after the last checkpoint that still holds:\n{out}"
    assert "[16, 24)" in out, out


def test_a_corrupted_stored_tree_node_is_reported(log: Log) -> None:
    """Proofs are served from stored nodes: a node on a checkpoint's right edge that no longer matches the
    entries is reported (here the node over [0, 16), checked at the checkpoint of size 16)."""
    _run(log.store.db.execute(f"UPDATE {NODES} SET hash = ? WHERE node = ?", (bytes(32), 0 << 6 | 4)))
    code, out = _verify(log)
    assert code == 1, f"verify must fail on a corrupted tree node:\n{out}"
    assert "stored tree node (level 4, index 0) over [0, 16)" in out, out


def test_a_corrupted_interior_tree_node_is_reported(log: Log) -> None:
    """The node over [8, 16) is on no checkpoint's right edge; proofs of entries 0..7 use it."""
    _run(log.store.db.execute(f"UPDATE {NODES} SET hash = ? WHERE node = ?", (bytes(32), 1 << 6 | 3)))
    code, out = _verify(log)
    assert code == 1, f"verify must fail on a corrupted interior node:\n{out}"
    assert "first bad seq 8" in out, out
    assert "stored tree node (level 3, index 1) over [8, 16)" in out, out


def test_a_tampered_export_fails_the_same_way(log: Log, tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from paywire.cli.main import app

    path = tmp_path / "log.jsonl"
    r = CliRunner().invoke(app, ["audit", "export", "--store", log.url, "--out", str(path)])
    assert r.exit_code == 0, r.output
    code, out = verify_cli("--export", str(path), "--key", log.signer.verifier.vkey)
    assert code == 0, f"a fresh export verifies:\n{out}"
    path.write_text(path.read_text().replace('\\"pay-7\\"', '\\"pay-x\\"'))
    code, out = verify_cli("--export", str(path), "--key", log.signer.verifier.vkey)
    assert code == 1, out
    assert "first bad seq 0" in out, f"an export has no stored leaf hashes: the checkpoint range is named:\n{out}"
    assert "[0, 8)" in out, out
