"""Schema migrations per component (facilitator, seller, buyer, …), applied on start, safe under concurrency.

Each component registers an ordered list of DDL steps; ``migrate`` applies the ones a database lacks inside a
transaction (Postgres also takes an advisory lock), so several processes may start at once.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from typing import ClassVar, Self

from paywire.store.db import Database

Statement = str | Mapping[str, str]
"""One DDL statement, or one per dialect (``{"sqlite": …, "postgres": …}``) where the two cannot share one."""

_REGISTRY: dict[str, list[Sequence[Statement]]] = {}
_PG_LOCK_KEY = 0x70617977  # "payw"


def register(component: str, steps: Sequence[Sequence[Statement]]) -> None:
    """Declare ``component``'s migrations: step i is a list of statements (``{autoinc}``/``{blob}`` allowed)."""
    _REGISTRY[component] = [list(s) for s in steps]


def _render(stmt: Statement, dialect: str) -> str:
    sql = stmt if isinstance(stmt, str) else stmt[dialect]
    return sql.format(
        blob="BYTEA" if dialect == "postgres" else "BLOB",
        autoinc="BIGSERIAL PRIMARY KEY" if dialect == "postgres" else "INTEGER PRIMARY KEY AUTOINCREMENT",
        real="DOUBLE PRECISION" if dialect == "postgres" else "REAL",
    )


async def migrate(db: Database, components: Sequence[str] | None = None) -> None:
    """Bring the named components (default: all registered) up to date."""
    names = list(components) if components is not None else sorted(_REGISTRY)
    async with db.transaction() as tx:
        if db.dialect == "postgres":
            await tx.execute("SELECT pg_advisory_xact_lock(?)", (_PG_LOCK_KEY,))
        await tx.execute(
            "CREATE TABLE IF NOT EXISTS paywire_schema (component TEXT PRIMARY KEY, version INTEGER NOT NULL)"
        )
        for name in names:
            steps = _REGISTRY.get(name)
            if steps is None:
                raise KeyError(f"no migrations registered for {name!r}")
            row = await tx.fetchone("SELECT version FROM paywire_schema WHERE component = ?", (name,))
            have = int(row["version"]) if row else 0
            for i, step in enumerate(steps[have:], start=have + 1):
                for stmt in step:
                    await tx.execute(_render(stmt, db.dialect))
                if row is None and i == 1:
                    await tx.execute("INSERT INTO paywire_schema (component, version) VALUES (?, ?)", (name, i))
                else:
                    await tx.execute("UPDATE paywire_schema SET version = ? WHERE component = ?", (i, name))


class Repository:
    """Base of a component's store: holds the database, applies the component's migrations, opens by URL."""

    component: ClassVar[str]

    def __init__(self, db: Database, *, clock: Callable[[], float] = time.time) -> None:
        self.db = db
        self.clock = clock

    @classmethod
    async def open(cls, url: str) -> Self:
        """Open ``url`` (``sqlite:///file.db`` or ``postgresql://…``) and apply this component's migrations."""
        from paywire.store.db import open_database

        repo = cls(open_database(url))
        await repo.migrate()
        return repo

    async def migrate(self) -> None:
        await migrate(self.db, [self.component])

    async def aclose(self) -> None:
        await self.db.aclose()
