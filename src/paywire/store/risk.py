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
from paywire.store.identity import NONCES, IdentityStore
from paywire.store.migrations import Repository, register

if TYPE_CHECKING:  # the store does not import the risk package (it imports the store's engines' packages)
    from paywire.risk.model import Decision, Event

COMPONENT = "risk"
TABLE = "risk_decisions"
LISTS = "risk_lists"
LIST_NAMES = ("allow", "deny")

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
], [
    f"""CREATE TABLE IF NOT EXISTS {LISTS} (
        list TEXT NOT NULL,
        value TEXT NOT NULL,
        note TEXT NOT NULL,
        added_at {{real}} NOT NULL,
        PRIMARY KEY (list, value)
    )""",
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


def _norm(value: str) -> str:
    v = value.strip()
    return v.lower() if v.lower().startswith("0x") else v


@dataclass(frozen=True, slots=True)
class ListEntry:
    list: str
    value: str
    note: str
    added_at: float


class RiskListStore(Repository):
    """The operator's allow and deny lists (addresses, IPs, hosts) in the SQL store, shared by a fleet
    (``paywire risk lists``); :class:`~paywire.risk.lists.RiskLists` reads them beside the sanctions file."""

    component = COMPONENT

    async def add(self, list_name: str, value: str, note: str = "") -> bool:
        """Put ``value`` on ``list_name`` (``allow`` or ``deny``); False when it was there already."""
        if list_name not in LIST_NAMES:
            raise ValueError(f"risk list {list_name!r}: expected one of {', '.join(LIST_NAMES)}")
        v = _norm(value)
        if not v or len(v) > 256:
            raise ValueError("a list entry is 1 to 256 characters")
        n = await self.db.execute(f"INSERT INTO {LISTS} (list, value, note, added_at) VALUES (?, ?, ?, ?) "
                                  "ON CONFLICT DO NOTHING", (list_name, v, note[:500], self.clock()))
        return n > 0

    async def remove(self, list_name: str, value: str) -> bool:
        return await self.db.execute(f"DELETE FROM {LISTS} WHERE list = ? AND value = ?",
                                     (list_name, _norm(value))) > 0

    async def entries(self, list_name: str | None = None) -> list[ListEntry]:
        rows = await (self.db.fetchall(f"SELECT * FROM {LISTS} WHERE list = ? ORDER BY value", (list_name,))
                      if list_name is not None else
                      self.db.fetchall(f"SELECT * FROM {LISTS} ORDER BY list, value"))
        return [ListEntry(r["list"], r["value"], r["note"], float(r["added_at"])) for r in rows]

    async def load(self) -> tuple[frozenset[str], frozenset[str], str]:
        """(allow, deny, version): the version is a digest of both lists, so any change shows in decisions."""
        import hashlib

        rows = await self.db.fetchall(f"SELECT list, value FROM {LISTS} ORDER BY list, value")
        allow = frozenset(r["value"] for r in rows if r["list"] == "allow")
        deny = frozenset(r["value"] for r in rows if r["list"] == "deny")
        text = "\n".join(f"{r['list']}:{r['value']}" for r in rows)
        return allow, deny, "sql:" + hashlib.sha256(text.encode()).hexdigest()[:12]


class PeekNonces(IdentityStore):
    """Identity nonces looked at, not spent: a risk challenge checks a proof that the route's own identity step
    spends right after (so the proof still works there once)."""

    async def use_nonce(self, nonce: str, expires_at: float, spent_on: str | None = None) -> bool:
        row = await self.db.fetchone(f"SELECT spent_on FROM {NONCES} WHERE nonce = ?", (nonce,))
        return row is None or (spent_on is not None and row["spent_on"] == spent_on)
