"""Durable state behind one interface: SQLite by default, PostgreSQL for fleets.

``db = open_database(url)`` then ``await migrate(db)``; components (settlements, seller payments, buyer
budgets, …) are repositories over the same ``Database`` and register their own migrations.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from paywire._lazy import lazy_exports

if TYPE_CHECKING:
    from paywire.store.db import Database, Executor, PostgresDatabase, Row, SqliteDatabase, open_database
    from paywire.store.migrations import migrate, register

__getattr__, __dir__ = lazy_exports(__name__, {
    "paywire.store.db": ("Database", "Executor", "PostgresDatabase", "Row", "SqliteDatabase", "open_database"),
    "paywire.store.migrations": ("migrate", "register"),
})

DEFAULT_STORE_URL = "sqlite:///paywire.db"


def store_url(explicit: str | None = None) -> str:
    """The store URL from an argument, ``PAYWIRE_STORE``, or the SQLite default."""
    return explicit or os.environ.get("PAYWIRE_STORE") or DEFAULT_STORE_URL


__all__ = [
    "DEFAULT_STORE_URL",
    "Database",
    "Executor",
    "PostgresDatabase",
    "Row",
    "SqliteDatabase",
    "migrate",
    "open_database",
    "register",
    "store_url",
]
