"""Risk decision records (``paywire risk decisions``; ``paywire risk test --replay`` reads them back).

Every non-allow decision, every decision a rule made (shadow matches and allow-list hits too) and a sample of
plain allows is written with its features. Bounded: rows older than ``retention`` seconds and rows beyond
``max_rows`` are deleted as new ones arrive (checked every ``prune_every`` writes).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from paywire.store.db import Database
from paywire.store.migrations import Repository, register

if TYPE_CHECKING:  # the store does not import the risk package (it imports the store's engines' packages)
    from paywire.risk.model import Decision, Event

COMPONENT = "risk"
TABLE = "risk_decisions"

register(COMPONENT, [[
    f"""CREATE TABLE IF NOT EXISTS {TABLE} (
        id {{autoinc}},
        at {{real}} NOT NULL,
        checkpoint TEXT NOT NULL,
        action TEXT NOT NULL,
        rule TEXT,
        reason TEXT,
        shadow INTEGER NOT NULL,
        degraded INTEGER NOT NULL,
        matched TEXT NOT NULL,
        list_version TEXT NOT NULL,
        event TEXT NOT NULL,
        features TEXT NOT NULL
    )""",
    f"CREATE INDEX IF NOT EXISTS {TABLE}_at ON {TABLE} (at)",
]])


@dataclass(frozen=True, slots=True)
class DecisionRow:
    """One recorded decision; ``event`` holds the checkpoint's inputs (enough to replay it)."""

    id: int
    at: float
    checkpoint: str
    action: str
    rule: str | None
    reason: str | None
    shadow: bool
    degraded: bool
    matched: tuple[str, ...]
    list_version: str
    event: dict[str, Any]
    features: dict[str, Any]


def _event_json(event: Event) -> str:
    return json.dumps({k: getattr(event, k) for k in event.__dataclass_fields__}, separators=(",", ":"))


class RiskRecords(Repository):
    """The decision log in the SQL store (SQLite or PostgreSQL)."""

    component = COMPONENT

    def __init__(self, db: Database, *, clock: Callable[[], float] | None = None, retention: float = 30 * 86400,
                 max_rows: int = 1_000_000, prune_every: int = 1000) -> None:
        import time

        super().__init__(db, clock=clock or time.time)
        self.retention, self.max_rows, self.prune_every = retention, max_rows, prune_every
        self._writes = 0

    async def record(self, decision: Decision, event: Event) -> None:
        """Write one decision (and every ``prune_every`` writes, drop what is past retention or the cap)."""
        d = decision
        await self.db.execute(
            f"INSERT INTO {TABLE} (at, checkpoint, action, rule, reason, shadow, degraded, matched, list_version,"
            " event, features) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (self.clock(), d.checkpoint, d.action, d.rule, d.reason, int(d.shadow), int(d.degraded),
             ",".join(d.matched), d.list_version, _event_json(event),
             json.dumps(dict(d.features), separators=(",", ":"), default=str)))
        self._writes += 1
        if self._writes % self.prune_every == 0:
            await self.prune()

    async def prune(self) -> int:
        """Delete rows past ``retention`` and beyond ``max_rows`` (oldest first); returns how many went."""
        gone = await self.db.execute(f"DELETE FROM {TABLE} WHERE at < ?", (self.clock() - self.retention,))
        row = await self.db.fetchone(f"SELECT MAX(id) AS top FROM {TABLE}")
        if row is not None and row["top"] is not None:
            gone += await self.db.execute(f"DELETE FROM {TABLE} WHERE id <= ?", (int(row["top"]) - self.max_rows,))
        return gone

    async def decisions(self, *, limit: int = 50, action: str | None = None, rule: str | None = None,
                        checkpoint: str | None = None, since: float | None = None) -> list[DecisionRow]:
        """The newest decisions first, filtered by action, rule, checkpoint, time."""
        where: list[str] = []
        params: list[Any] = []
        for col, val in (("action", action), ("rule", rule), ("checkpoint", checkpoint)):
            if val is not None:
                where.append(f"{col} = ?")
                params.append(val)
        if since is not None:
            where.append("at >= ?")
            params.append(since)
        sql = f"SELECT * FROM {TABLE}" + (f" WHERE {' AND '.join(where)}" if where else "")
        rows = await self.db.fetchall(sql + " ORDER BY id DESC LIMIT ?", (*params, limit))
        return [DecisionRow(int(r["id"]), float(r["at"]), r["checkpoint"], r["action"], r["rule"], r["reason"],
                            bool(r["shadow"]), bool(r["degraded"]), tuple(x for x in r["matched"].split(",") if x),
                            r["list_version"], json.loads(r["event"]), json.loads(r["features"]))
                for r in rows]

    async def count(self) -> int:
        row = await self.db.fetchone(f"SELECT COUNT(*) AS n FROM {TABLE}")
        return int(row["n"]) if row else 0
