"""L402 root keys: one random 32-byte key per minted token, stored under ``sha256(identifier)``.

Deleting (revoking) the row makes every macaroon derived from that identifier invalid (checklist 100).
"""

from __future__ import annotations

from paywire.store.migrations import Repository, register

COMPONENT = "l402"
TABLE = "l402_root_keys"

register(COMPONENT, [[
    f"""CREATE TABLE IF NOT EXISTS {TABLE} (
        key_id TEXT PRIMARY KEY,
        root_key {{blob}} NOT NULL,
        payment_hash TEXT NOT NULL,
        token_id TEXT NOT NULL,
        service TEXT NOT NULL,
        created_at {{real}} NOT NULL
    )""",
    f"CREATE INDEX IF NOT EXISTS {TABLE}_hash ON {TABLE} (payment_hash)",
]])


class L402Store(Repository):
    """Repository of L402 root keys over a ``paywire.store.Database``."""

    component = COMPONENT

    async def put(self, key_id: str, root_key: bytes, *, payment_hash: str, token_id: str, service: str) -> None:
        await self.db.execute(
            f"INSERT INTO {TABLE} (key_id, root_key, payment_hash, token_id, service, created_at) "
            "VALUES (?, ?, ?, ?, ?, ?)", (key_id, root_key, payment_hash, token_id, service, self.clock()))

    async def get(self, key_id: str) -> bytes | None:
        row = await self.db.fetchone(f"SELECT root_key FROM {TABLE} WHERE key_id = ?", (key_id,))
        return bytes(row["root_key"]) if row else None

    async def revoke(self, key_id: str) -> bool:
        return await self.db.execute(f"DELETE FROM {TABLE} WHERE key_id = ?", (key_id,)) == 1
