"""The facilitator's settlement records (``paywire.store.settlements``) on SQLite and PostgreSQL: one claim
per authorization enforced by the database (also across processes), compare-and-set transitions, leases."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time

import pytest

from paywire.store.settlements import SettlementStore, settlement_id

NET, ASSET, PAYER = "eip155:31337", "0x5FbDB2315678afecb367f032d93F642f64180aa3", "0x3C44CdDdB6a900fa2b585dd299e03d12FA4293BC"


def nonce(i: int) -> str:
    return "0x" + i.to_bytes(32, "big").hex()


async def claim(store: SettlementStore, n: str, *, lease: float = 30.0, payer: str = PAYER):
    return await store.claim(network=NET, asset=ASSET, payer=payer, nonce=n, requirements_digest="d" * 64,
                             request={"k": "v"}, amount=100, pay_to="0x90F79bf6EB2c4f870365E785982E1f101E93b906",
                             lease_seconds=lease)


async def test_one_claim_per_authorization_under_concurrency(store_url):
    """40 concurrent claims of one authorization from two store connections: exactly one wins; address
    case does not create a second identity."""
    a = await SettlementStore.open(store_url, instance_id="a")
    b = await SettlementStore.open(store_url, instance_id="b")
    try:
        n = nonce(1)
        results = await asyncio.gather(*(claim(a if i % 2 else b, n, payer=PAYER if i % 3 else PAYER.lower())
                                         for i in range(40)))
        assert sum(won for won, _ in results) == 1
        ids = {row.id for _, row in results}
        assert ids == {settlement_id(NET, ASSET, PAYER, n)}
        row = await a.get(ids.pop())
        assert row is not None and row.state == "verified" and row.payer == PAYER.lower() and row.request == {"k": "v"}
    finally:
        await a.aclose()
        await b.aclose()


async def test_unique_constraint_holds_without_the_id(store_url):
    """The UNIQUE (network, asset, payer, nonce) constraint rejects a second row even under another id."""
    s = await SettlementStore.open(store_url)
    try:
        await claim(s, nonce(2))
        with pytest.raises(Exception, match=r"(?i)unique|duplicate"):
            await s.db.execute(
                "INSERT INTO paywire_settlements (id, network, asset, payer, nonce, requirements_digest, request, "
                "amount, pay_to, state, owner, lease_until, created_at, updated_at) "
                "VALUES ('other', ?, ?, ?, ?, 'x', '{}', '1', 'x', 'verified', 'z', 0, 0, 0)",
                (NET, ASSET.lower(), PAYER.lower(), nonce(2)))
    finally:
        await s.aclose()


async def test_transitions_are_compare_and_set(store_url):
    a = await SettlementStore.open(store_url, instance_id="a")
    b = SettlementStore(a.db, instance_id="b")
    try:
        won, row = await claim(a, nonce(3))
        assert won
        common = {"raw_tx": b"\x02raw", "signer": "0xS", "tx_nonce": 4, "lease_seconds": 30}
        assert not await b.record_tx(row.id, tx_hash="0xAA", previous_hash=None, **common)  # not the owner
        assert await a.record_tx(row.id, tx_hash="0xAA", previous_hash=None, **common)
        assert not await a.record_tx(row.id, tx_hash="0xBB", previous_hash=None, **common)  # already submitted
        assert not await a.record_tx(row.id, tx_hash="0xBB", previous_hash="0xCC", **common)  # wrong previous
        assert await a.record_tx(row.id, tx_hash="0xBB", previous_hash="0xAA", **common)  # replacement
        got = await a.get(row.id)
        assert got is not None and got.state == "submitted" and got.tx_hash == "0xbb"
        assert got.tx_hashes == ("0xaa", "0xbb") and got.raw_tx == b"\x02raw" and got.tx_nonce == 4
        assert not await a.release(row.id)  # something may be on chain: a plain release is refused
        assert await b.mark_unresolved(row.id, "rpc timed out")
        assert (await a.get(row.id)).state == "unresolved"  # type: ignore[union-attr]
        assert await b.finish(row.id, "settled", tx_hash="0xAA", block_number=7)  # any instance may finish
        assert not await a.finish(row.id, "failed", tx_hash="0xBB", error_reason="x")  # first writer wins
        assert not await a.mark_unresolved(row.id, "late")
        final = await a.get(row.id)
        assert final is not None and final.state == "settled" and final.tx_hash == "0xaa" and final.block_number == 7
        assert final.finished_at is not None and final.final
        with pytest.raises(ValueError):
            await a.finish(row.id, "submitted", tx_hash=None)
    finally:
        await a.aclose()


async def test_finish_takes_every_open_state_and_no_final_one(store_url):
    """``finish`` with its default ``from_states`` (written without an IN list) moves a verified, a submitted and
    an unresolved row to final, and never a settled or failed one."""
    a = await SettlementStore.open(store_url, instance_id="a")
    try:
        common = {"raw_tx": b"\x02raw", "signer": "0xS", "tx_nonce": 4, "lease_seconds": 30}
        _, verified = await claim(a, nonce(40))
        _, submitted = await claim(a, nonce(41))
        assert await a.record_tx(submitted.id, tx_hash="0x41", previous_hash=None, **common)
        _, unresolved = await claim(a, nonce(42))
        assert await a.record_tx(unresolved.id, tx_hash="0x42", previous_hash=None, **common)
        assert await a.mark_unresolved(unresolved.id, "rpc timed out")
        for row, state in ((verified, "failed"), (submitted, "settled"), (unresolved, "settled")):
            assert await a.finish(row.id, state, tx_hash="0xF" + row.id[:4], block_number=3)
            assert (await a.get(row.id)).state == state  # type: ignore[union-attr]
        for row in (verified, submitted, unresolved):  # final now: neither final state is left again
            assert not await a.finish(row.id, "settled", tx_hash=None)
            assert not await a.finish(row.id, "failed", tx_hash=None, error_reason="x")
        assert [(await a.get(r.id)).state for r in (verified, submitted, unresolved)] == \
            ["failed", "settled", "settled"]  # type: ignore[union-attr]
    finally:
        await a.aclose()


async def test_finish_leaves_the_row_the_full_statement_leaves(store_url):
    """``finish`` of the row's current transaction skips rewriting ``tx_hash``/``tx_hashes`` (fifth pass of
    issue 11, item 17); every row it leaves is the one the single full statement of before leaves: the current
    transaction, a replacement's first one, one never recorded, a row whose list is empty (an old row), a final
    row, and a narrowed ``from_states``."""
    a = await SettlementStore.open(store_url, instance_id="a")
    full = (
        "UPDATE paywire_settlements SET state = ?, tx_hash = ?, tx_hashes = CASE WHEN tx_hashes LIKE ? THEN "
        "tx_hashes WHEN tx_hashes = '' THEN ? ELSE tx_hashes || ? END, block_number = ?, error_reason = ?, "
        "error_message = ?, updated_at = ?, finished_at = ? WHERE id = ? AND state IN (?, ?, ?)")
    common = {"raw_tx": b"\x02raw", "signer": "0xS", "tx_nonce": 4, "lease_seconds": 30}
    skip = ("updatedAt", "finishedAt", "createdAt", "submittedAt")

    async def shaped(i: int, shape: str) -> str:
        _, row = await claim(a, nonce(i))
        if shape != "verified":
            assert await a.record_tx(row.id, tx_hash="0xAA", previous_hash=None, **common)
        if shape == "replaced":
            assert await a.record_tx(row.id, tx_hash="0xBB", previous_hash="0xAA", **common)
        if shape == "empty_list":
            await a.db.execute("UPDATE paywire_settlements SET tx_hashes = '' WHERE id = ?", (row.id,))
        if shape == "final":
            assert await a.finish(row.id, "failed", tx_hash=None, error_reason="x")
        return row.id

    def view(row):
        return {k: v for k, v in row.to_json().items() if k not in skip} if row is not None else None

    try:
        i = 60
        for shape in ("submitted", "replaced", "empty_list", "final", "verified"):
            for tx in ("0xAA", "0xbb", "0xCC"):
                for states in (("verified", "submitted", "unresolved"), ("submitted",)):
                    ours, theirs = await shaped(i, shape), await shaped(i + 1, shape)
                    i += 2
                    got = await a.finish(ours, "settled", tx_hash=tx, block_number=9, from_states=states)
                    h = tx.lower()
                    n = await a.db.execute(full, ("settled", h, f"%{h}%", h, "," + h, 9, None, None, 1.0, 1.0,
                                                  theirs, *(states + states[-1:] * (3 - len(states)))))
                    assert got == (n == 1), (shape, tx, states)
                    mine, other = view(await a.get(ours)), view(await a.get(theirs))
                    for d in (mine, other):
                        d.pop("id"), d.pop("nonce")
                    assert mine == other, (shape, tx, states)
    finally:
        await a.aclose()


async def test_leases_release_and_open_rows(store_url):
    a = await SettlementStore.open(store_url, instance_id="a")
    b = SettlementStore(a.db, instance_id="b")
    try:
        _, fresh = await claim(a, nonce(10))
        won, _ = await claim(b, nonce(10))
        assert not won  # a live claim is not taken over
        _, stale = await claim(a, nonce(11), lease=0.01)
        _, sub = await claim(a, nonce(12))
        await a.record_tx(sub.id, tx_hash="0x01", raw_tx=b"r", signer="s", tx_nonce=1, previous_hash=None,
                          lease_seconds=30)
        _, done = await claim(a, nonce(13))
        await a.finish(done.id, "failed", tx_hash=None, error_reason="x", from_states=("verified",))
        await asyncio.sleep(0.05)
        assert {r.id for r in await b.open_rows()} == {stale.id, sub.id}
        assert not await b.take_lease(sub.id, 30, ("submitted",))  # a's lease still runs
        assert await a.take_lease(sub.id, 30, ("submitted",))  # the owner may renew
        won, row = await claim(b, nonce(11))
        assert won and row.owner == "b" and row.attempts == 2  # the stale claim was taken over
        assert not await a.release(row.id)  # no longer a's
        assert await b.release(row.id)
        assert await b.get(row.id) is None
        counts = await a.counts()
        assert counts == {"verified": 1, "submitted": 1, "settled": 0, "failed": 1, "unresolved": 0}
        assert (await a.get(fresh.id)).to_json()["state"] == "verified"  # type: ignore[union-attr]
    finally:
        await a.aclose()


_CLAIMER = """
import asyncio, json, sys
from paywire.store.settlements import SettlementStore
async def main(url, me):
    s = await SettlementStore.open(url, instance_id=me)
    won = []
    for i in range(15):
        n = "0x" + (1000 + i).to_bytes(32, "big").hex()
        ok, _ = await s.claim(network="eip155:1", asset="0xA", payer="0xB", nonce=n, requirements_digest="d",
                              request={}, amount=1, pay_to="0xC", lease_seconds=60)
        if ok:
            won.append(i)
    await s.aclose()
    print(json.dumps(won))
asyncio.run(main(sys.argv[1], sys.argv[2]))
"""


async def test_claims_are_exclusive_across_processes(store_url):
    """Four OS processes claim the same 15 authorizations at once: each is claimed exactly once."""
    await (await SettlementStore.open(store_url)).aclose()  # migrate first, like a deployment would
    procs = [subprocess.Popen([sys.executable, "-c", _CLAIMER, store_url, f"p{i}"], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for i in range(4)]
    deadline = time.monotonic() + 120
    won: list[int] = []
    for p in procs:
        out, err = await asyncio.to_thread(p.communicate, timeout=max(1.0, deadline - time.monotonic()))
        assert p.returncode == 0, err
        won += json.loads(out)
    assert sorted(won) == list(range(15))


async def test_a_store_from_before_the_state_check_rebuild_keeps_its_rows_and_refuses_unknown_states(
        store_url, monkeypatch):
    """A database migrated by the first two facilitator steps (the state CHECK as an ``IN`` list) is brought up to
    date with its rows intact and usable; afterwards, as on a fresh one, a row with a state outside the five is
    refused by the database itself, on INSERT and on UPDATE."""
    from paywire.store import migrations
    from paywire.store.db import open_database

    steps = migrations._REGISTRY["facilitator"]
    monkeypatch.setitem(migrations._REGISTRY, "facilitator", steps[:2])
    old = await SettlementStore.open(store_url, instance_id="old")
    try:
        _, kept = await claim(old, nonce(7))
        _, sent = await claim(old, nonce(8))
        assert await old.record_tx(sent.id, tx_hash="0x" + "ab" * 32, raw_tx=b"\x02raw", signer="0xS", tx_nonce=3,
                                   previous_hash=None, lease_seconds=30)
    finally:
        await old.aclose()
    monkeypatch.setitem(migrations._REGISTRY, "facilitator", steps)
    store = await SettlementStore.open(store_url, instance_id="old")
    try:
        row = await store.get(sent.id)
        assert row is not None and row.state == "submitted" and row.raw_tx == b"\x02raw" and row.tx_nonce == 3
        assert row.tx_hash == "0x" + "ab" * 32 and row.request == {"k": "v"} and row.amount == 100
        assert await store.finish(sent.id, "settled", tx_hash="0x" + "ab" * 32, block_number=9)
        assert (await store.get(kept.id)).state == "verified"
        again, _ = await claim(store, nonce(7))
        assert not again, "a claim survived the rebuild but a second claim of it won"
        assert await store.counts() == {"verified": 1, "submitted": 0, "settled": 1, "failed": 0, "unresolved": 0}
        assert [r.id for r in await store.open_rows()] == [kept.id]
        assert (await store.by_tx_hash("0x" + "AB" * 32)).id == sent.id

        db = open_database(store_url)
        try:
            with pytest.raises(Exception, match=r"(?i)check"):
                await db.execute("UPDATE paywire_settlements SET state = 'paid' WHERE id = ?", (kept.id,))
            with pytest.raises(Exception, match=r"(?i)check"):
                await db.execute(
                    "INSERT INTO paywire_settlements (id, network, asset, payer, nonce, requirements_digest, request, "
                    "amount, pay_to, state, owner, lease_until, created_at, updated_at) "
                    "VALUES ('x', 'n', 'a', 'p', '0x1', 'd', '{}', '1', 't', 'Settled', 'o', 0, 0, 0)")
        finally:
            await db.aclose()
        assert (await store.get(kept.id)).state == "verified"
        assert await store.get("x") is None
    finally:
        await store.aclose()
