"""The facilitator's discovery catalogue (x402 bazaar, digest §4.4): one row per resource it has settled a payment
for whose payment carried a ``bazaar`` extension, keyed by (resource URL, MCP tool name or ``""``). A later
payment for the same resource refreshes its row (price, description, extension, ``updated_at``)."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from paywire.store.migrations import Repository, register

COMPONENT = "discovery"
TABLE = "discovery_resources"

register(COMPONENT, [[
    f"""CREATE TABLE IF NOT EXISTS {TABLE} (
        resource TEXT NOT NULL,
        tool TEXT NOT NULL,
        type TEXT NOT NULL,
        x402_version INTEGER NOT NULL,
        accepts TEXT NOT NULL,
        description TEXT,
        mime_type TEXT,
        extensions TEXT,
        pay_to TEXT NOT NULL,
        network TEXT NOT NULL,
        scheme TEXT NOT NULL,
        updated_at {{real}} NOT NULL,
        PRIMARY KEY (resource, tool)
    )""",
    f"CREATE INDEX IF NOT EXISTS {TABLE}_updated ON {TABLE} (updated_at)",
]])


def _json(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), sort_keys=True)


class DiscoveryCatalog(Repository):
    """Upserts and pages of the catalogue, on any paywire ``Database`` (SQLite or Postgres)."""

    component = COMPONENT

    async def upsert(self, *, resource: str, tool: str, kind: str, x402_version: int,
                     accepts: Sequence[Mapping[str, Any]], description: str | None, mime_type: str | None,
                     extensions: Mapping[str, Any] | None, pay_to: str, network: str, scheme: str) -> None:
        now = self.clock()
        values = (kind, x402_version, _json(list(accepts)), description, mime_type,
                  _json(extensions) if extensions else None, pay_to, network, scheme, now)
        await self.db.execute(
            f"INSERT INTO {TABLE} (resource, tool, type, x402_version, accepts, description, mime_type, extensions, "
            "pay_to, network, scheme, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) "
            "ON CONFLICT (resource, tool) DO UPDATE SET type = excluded.type, x402_version = excluded.x402_version, "
            "accepts = excluded.accepts, description = excluded.description, mime_type = excluded.mime_type, "
            "extensions = excluded.extensions, pay_to = excluded.pay_to, network = excluded.network, "
            "scheme = excluded.scheme, updated_at = excluded.updated_at",
            (resource, tool, *values))

    async def page(self, *, kind: str | None = None, pay_to: str | None = None, network: str | None = None,
                   scheme: str | None = None, limit: int = 20, offset: int = 0) -> tuple[list[dict[str, Any]], int]:
        """(rows newest first, total matching)."""
        where, params = [], []
        for column, value in (("type", kind), ("pay_to", pay_to), ("network", network), ("scheme", scheme)):
            if value is not None:
                where.append(f"{'LOWER(pay_to)' if column == 'pay_to' else column} = ?")
                params.append(value.lower() if column == "pay_to" else value)
        clause = f" WHERE {' AND '.join(where)}" if where else ""
        total_row = await self.db.fetchone(f"SELECT COUNT(*) AS n FROM {TABLE}{clause}", tuple(params))
        rows = await self.db.fetchall(
            f"SELECT * FROM {TABLE}{clause} ORDER BY updated_at DESC, resource LIMIT ? OFFSET ?",
            (*params, limit, offset))
        out = []
        for r in rows:
            out.append({"resource": r["resource"], "tool": r["tool"], "type": r["type"],
                        "x402_version": int(r["x402_version"]), "accepts": json.loads(r["accepts"]),
                        "description": r["description"], "mime_type": r["mime_type"],
                        "extensions": json.loads(r["extensions"]) if r["extensions"] else None,
                        "updated_at": float(r["updated_at"])})
        return out, int(total_row["n"]) if total_row else 0
