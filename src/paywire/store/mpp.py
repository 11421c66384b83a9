"""Single-use MPP challenges and credentials (checklist 110).

One row per redeemed challenge. ``challenge_id`` is the primary key and ``replay_key`` (the method's proof
identity: EVM ``chainId:token:from:nonce``, Lightning payment hash) is UNIQUE, so of any number of concurrent
presentations of one credential — or of one proof under different challenges — exactly one INSERT wins and
only that request settles and is served. States::

    claimed ─┬─> settled      paid; the receipt is recorded
             ├─ (deleted)     definitively refused before anything moved (the payer may retry)
             └─> (stays)      outcome unknown: the row keeps the proof out until reconciled
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any

from paywire.store.db import Row
from paywire.store.migrations import Repository, register

COMPONENT = "mpp"
TABLE = "mpp_redemptions"

register(COMPONENT, [[
    f"""CREATE TABLE IF NOT EXISTS {TABLE} (
        challenge_id TEXT PRIMARY KEY,
        replay_key TEXT NOT NULL UNIQUE,
        realm TEXT NOT NULL,
        method TEXT NOT NULL,
        intent TEXT NOT NULL,
        state TEXT NOT NULL,
        payer TEXT,
        amount TEXT,
        currency TEXT,
        reference TEXT,
        receipt TEXT,
        error TEXT,
        expires_at {{real}} NOT NULL,
        created_at {{real}} NOT NULL,
        updated_at {{real}} NOT NULL
    )""",
    f"CREATE INDEX IF NOT EXISTS {TABLE}_state ON {TABLE} (state, updated_at)",
]])


@dataclass(frozen=True, slots=True)
class Redemption:
    """One redeemed (or being redeemed) challenge."""

    challenge_id: str
    replay_key: str
    realm: str
    method: str
    intent: str
    state: str
    payer: str | None
    amount: str | None
    currency: str | None
    reference: str | None
    receipt: str | None
    error: str | None
    expires_at: float
    created_at: float
    updated_at: float

    @classmethod
    def from_row(cls, row: Row) -> Redemption:
        data: dict[str, Any] = {f.name: row.get(f.name) for f in fields(cls)}
        return cls(**data)

    @property
    def receipt_json(self) -> Mapping[str, Any] | None:
        return json.loads(self.receipt) if self.receipt else None


class MppStore(Repository):
    """Repository over a ``paywire.store.Database``; claims are INSERTs guarded by unique keys."""

    component = COMPONENT

    async def claim(self, *, challenge_id: str, replay_key: str, realm: str, method: str, intent: str,
                    expires_at: float, payer: str | None = None, amount: str | None = None,
                    currency: str | None = None) -> bool:
        """True for the one caller that consumes this challenge id and proof; False for everyone else."""
        now = self.clock()
        n = await self.db.execute(
            f"INSERT INTO {TABLE} (challenge_id, replay_key, realm, method, intent, state, payer, amount, currency, "
            "expires_at, created_at, updated_at) VALUES (?, ?, ?, ?, ?, 'claimed', ?, ?, ?, ?, ?, ?) "
            "ON CONFLICT DO NOTHING",
            (challenge_id, replay_key, realm, method, intent, payer, amount, currency, expires_at, now, now))
        return n == 1

    async def set_reference(self, challenge_id: str, reference: str) -> bool:
        """Record where the payment went (a sent transaction) while it is still being confirmed."""
        return await self.db.execute(
            f"UPDATE {TABLE} SET reference = ?, updated_at = ? WHERE challenge_id = ? AND state = 'claimed'",
            (reference, self.clock(), challenge_id)) == 1

    async def complete(self, challenge_id: str, reference: str, receipt: Mapping[str, Any]) -> bool:
        """claimed → settled (compare-and-set)."""
        return await self.db.execute(
            f"UPDATE {TABLE} SET state = 'settled', reference = ?, receipt = ?, error = NULL, updated_at = ? "
            "WHERE challenge_id = ? AND state = 'claimed'",
            (reference, json.dumps(dict(receipt), separators=(",", ":")), self.clock(), challenge_id)) == 1

    async def note_error(self, challenge_id: str, error: str) -> None:
        """Keep the claim (outcome unknown) but say why."""
        await self.db.execute(f"UPDATE {TABLE} SET error = ?, updated_at = ? WHERE challenge_id = ?",
                              (error[:500], self.clock(), challenge_id))

    async def release(self, challenge_id: str) -> bool:
        """Forget a claim whose payment was refused before anything moved."""
        return await self.db.execute(
            f"DELETE FROM {TABLE} WHERE challenge_id = ? AND state = 'claimed' AND reference IS NULL",
            (challenge_id,)) == 1

    async def get(self, challenge_id: str) -> Redemption | None:
        row = await self.db.fetchone(f"SELECT * FROM {TABLE} WHERE challenge_id = ?", (challenge_id,))
        return Redemption.from_row(row) if row else None

    async def by_replay_key(self, replay_key: str) -> Redemption | None:
        row = await self.db.fetchone(f"SELECT * FROM {TABLE} WHERE replay_key = ?", (replay_key,))
        return Redemption.from_row(row) if row else None

    async def settled(self, *, limit: int = 100) -> list[Redemption]:
        rows = await self.db.fetchall(
            f"SELECT * FROM {TABLE} WHERE state = 'settled' ORDER BY updated_at DESC LIMIT ?", (limit,))
        return [Redemption.from_row(r) for r in rows]

    async def prune(self, before: float) -> int:
        """Drop settled rows of challenges that expired before ``before`` (their ids can never verify again)."""
        return await self.db.execute(f"DELETE FROM {TABLE} WHERE state = 'settled' AND expires_at < ?", (before,))
