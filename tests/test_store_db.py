"""The store's database layer on real SQLite and PostgreSQL: migrations, unique claims under concurrency."""

from __future__ import annotations

import asyncio

from paywire.store import migrate, open_database, register

register("test_component", [
    ["CREATE TABLE IF NOT EXISTS t_claims (id TEXT PRIMARY KEY, owner TEXT NOT NULL, n INTEGER NOT NULL)"],
    ["ALTER TABLE t_claims ADD COLUMN note TEXT"],
])


async def test_migrations_are_idempotent_and_concurrent(store_url: str) -> None:
    dbs = [open_database(store_url) for _ in range(4)]
    try:
        await asyncio.gather(*(migrate(db, ["test_component"]) for db in dbs))
        await migrate(dbs[0], ["test_component"])
        row = await dbs[0].fetchone("SELECT version FROM paywire_schema WHERE component = ?", ("test_component",))
        assert row is not None and row["version"] == 2
        await dbs[0].execute("INSERT INTO t_claims (id, owner, n, note) VALUES (?, ?, ?, ?)", ("a", "x", 1, "hi"))
    finally:
        for db in dbs:
            await db.aclose()


async def test_exactly_one_claim_wins_under_concurrency(store_url: str) -> None:
    """A unique key in the database, not an in-memory set, decides who owns a claim."""
    dbs = [open_database(store_url) for _ in range(3)]
    try:
        await migrate(dbs[0], ["test_component"])

        async def claim(i: int) -> int:
            db = dbs[i % len(dbs)]
            return await db.execute(
                "INSERT INTO t_claims (id, owner, n) VALUES (?, ?, ?) ON CONFLICT (id) DO NOTHING",
                ("payment-1", f"w{i}", i),
            )

        won = await asyncio.gather(*(claim(i) for i in range(30)))
        assert sum(won) == 1
        rows = await dbs[1].fetchall("SELECT owner FROM t_claims WHERE id = ?", ("payment-1",))
        assert len(rows) == 1
    finally:
        for db in dbs:
            await db.aclose()


async def test_transaction_rolls_back_on_error(store_url: str) -> None:
    db = open_database(store_url)
    try:
        await migrate(db, ["test_component"])
        try:
            async with db.transaction() as tx:
                await tx.execute("INSERT INTO t_claims (id, owner, n) VALUES (?, ?, ?)", ("r", "x", 1))
                raise RuntimeError("boom")
        except RuntimeError:
            pass
        assert await db.fetchone("SELECT id FROM t_claims WHERE id = ?", ("r",)) is None
        async with db.transaction() as tx:
            await tx.execute("INSERT INTO t_claims (id, owner, n) VALUES (?, ?, ?)", ("r", "x", 1))
            assert (await tx.fetchone("SELECT n FROM t_claims WHERE id = ?", ("r",))) == {"n": 1}
        assert (await db.fetchone("SELECT owner FROM t_claims WHERE id = ?", ("r",))) == {"owner": "x"}
    finally:
        await db.aclose()


async def test_many_concurrent_transactions_do_not_starve(store_url: str) -> None:
    """40 concurrent read-modify-write transactions in one process all commit, and none is lost."""
    db = open_database(store_url)
    try:
        await migrate(db, ["test_component"])
        await db.execute("INSERT INTO t_claims (id, owner, n) VALUES (?, ?, ?)", ("counter", "x", 0))

        async def bump() -> None:
            async with db.transaction() as tx:
                if tx.dialect == "postgres":
                    row = await tx.fetchone("SELECT n FROM t_claims WHERE id = ? FOR UPDATE", ("counter",))
                else:
                    row = await tx.fetchone("SELECT n FROM t_claims WHERE id = ?", ("counter",))
                assert row is not None
                await asyncio.sleep(0)
                await tx.execute("UPDATE t_claims SET n = ? WHERE id = ?", (row["n"] + 1, "counter"))

        await asyncio.wait_for(asyncio.gather(*(bump() for _ in range(40))), timeout=60)
        assert await db.fetchone("SELECT n FROM t_claims WHERE id = ?", ("counter",)) == {"n": 40}
    finally:
        await db.aclose()
