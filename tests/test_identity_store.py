"""The seller's sign-in nonce table on real SQLite and PostgreSQL: single use under concurrency, bounded rows."""

from __future__ import annotations

import asyncio

from paywire.store import open_database
from paywire.store.identity import IdentityStore


async def test_eight_concurrent_uses_of_one_nonce_win_once(store_url: str) -> None:
    store = IdentityStore(open_database(store_url))
    try:
        await store.migrate()
        wins = await asyncio.gather(*(store.use_nonce("n-concurrent", 2e9) for _ in range(8)))
        assert sum(wins) == 1, f"{sum(wins)} of 8 concurrent uses of one nonce succeeded"
    finally:
        await store.aclose()


async def test_a_resent_payment_may_reuse_its_own_nonce_but_no_other(store_url: str) -> None:
    store = IdentityStore(open_database(store_url))
    try:
        await store.migrate()
        assert await store.use_nonce("n-paid", 2e9, "payment-a"), "the first use failed"
        assert await store.use_nonce("n-paid", 2e9, "payment-a"), "the same payment's resend was refused"
        assert not await store.use_nonce("n-paid", 2e9, "payment-b"), "another payment reused the nonce"
        assert not await store.use_nonce("n-paid", 2e9), "a sign-in alone reused the nonce"
    finally:
        await store.aclose()


async def test_expired_rows_are_purged(store_url: str) -> None:
    now = [1000.0]
    store = IdentityStore(open_database(store_url), clock=lambda: now[0])
    try:
        await store.migrate()
        for i in range(10):
            await store.use_nonce(f"old-{i}", 1100.0)
        now[0] = 1200.0
        assert await store.purge() == 10, "expired rows were not deleted"
        assert await store.count() == 0, "rows are left after the purge"
    finally:
        await store.aclose()
