"""Single-use MPP challenges and proofs in the store, on SQLite and PostgreSQL (checklist 110)."""

from __future__ import annotations

import asyncio

from paywire.store.mpp import MppStore


async def _store(url: str) -> MppStore:
    return await MppStore.open(url)


def _claim(store: MppStore, cid: str, key: str):
    return store.claim(challenge_id=cid, replay_key=key, realm="r", method="evm", intent="charge",
                       expires_at=2e9, payer="0xabc", amount="10", currency="0xt")


async def test_concurrent_presentations_claim_once(store_url):
    """20 concurrent presentations of one credential: exactly one claim wins."""
    store = await _store(store_url)
    try:
        wins = await asyncio.gather(*(_claim(store, "cid-1", "evm:1:t:a:n1") for _ in range(20)))
        assert wins.count(True) == 1
        # the same proof under another challenge id is also refused (replay_key is unique)
        assert not await _claim(store, "cid-2", "evm:1:t:a:n1")
        # and another proof cannot reuse a consumed challenge id
        assert not await _claim(store, "cid-1", "evm:1:t:a:n2")
        row = await store.get("cid-1")
        assert row is not None and row.state == "claimed" and row.payer == "0xabc"
    finally:
        await store.aclose()


async def test_complete_release_and_unknown(store_url):
    store = await _store(store_url)
    try:
        assert await _claim(store, "a", "k-a")
        assert await store.complete("a", "0xtx", {"status": "success", "reference": "0xtx"})
        assert not await store.complete("a", "0xother", {})  # compare-and-set: only once
        row = await store.get("a")
        assert row is not None and row.state == "settled" and row.receipt_json == {"status": "success",
                                                                                     "reference": "0xtx"}
        assert not await store.release("a")  # settled rows are never released
        assert [r.challenge_id for r in await store.settled()] == ["a"]

        assert await _claim(store, "b", "k-b")
        assert await store.release("b")  # refused before anything moved: the payer may retry
        assert await _claim(store, "b", "k-b")

        assert await _claim(store, "c", "k-c")
        assert await store.set_reference("c", "0xsent")
        await store.note_error("c", "no receipt yet")
        assert not await store.release("c")  # a sent transaction keeps its claim
        row = await store.get("c")
        assert row is not None and row.reference == "0xsent" and row.error == "no receipt yet"
        assert (await store.by_replay_key("k-c")) == row
        assert await store.prune(3e9) == 1  # settled + expired rows go
    finally:
        await store.aclose()
