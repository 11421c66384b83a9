"""The seller's ``batch-settlement`` channels (SQLite / Postgres): one row per funded channel a payer paid on.

Per channel: its config, ``charged`` (the cumulative actual charge, what the seller may claim), the latest voucher
(``signed_max``, ``signature``), what has been claimed on chain (``claimed``), the mirrored on-chain snapshot
(``balance``, ``total_claimed``, ``withdraw_requested_at``, ``refund_nonce``, ``synced_at``) and a lease
(``lock_owner``, ``lock_until``): the one request that may change the row, whichever replica runs it.

A row exists only for a channel whose voucher or deposit the facilitator verified against funded escrow: an unpaid
request never writes here. Amounts are decimal text (they are ``uint128``); changes are compare-and-set on the
lease owner and the charge they started from, so two replicas can never both commit on one voucher.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from paywire.store.db import (
    INLINE_MISS,
    Executor,
    Row,
    SqliteDatabase,
    execute_point,
    fetchone_point,
    in_transaction,
)
from paywire.store.migrations import Repository, register

COMPONENT = "channels"
TABLE = "seller_channels"

register(COMPONENT, [[
    f"CREATE TABLE IF NOT EXISTS {TABLE} ("
    "channel_id TEXT PRIMARY KEY, network TEXT NOT NULL, config TEXT NOT NULL, requirements TEXT NOT NULL, "
    "charged TEXT NOT NULL, signed_max TEXT NOT NULL, signature TEXT NOT NULL, claimed TEXT NOT NULL, "
    "claim_due INTEGER NOT NULL DEFAULT 0, balance TEXT NOT NULL, total_claimed TEXT NOT NULL, "
    "withdraw_requested_at INTEGER NOT NULL DEFAULT 0, refund_nonce TEXT NOT NULL, synced_at {real} NOT NULL, "
    "requests INTEGER NOT NULL DEFAULT 0, lock_owner TEXT, lock_until {real}, updated_at {real} NOT NULL)",
    f"CREATE INDEX IF NOT EXISTS {TABLE}_due ON {TABLE} (claim_due)",
]])


_PARSED: dict[str, Any] = {}


def _parsed(text: str) -> Any:
    """A channel's config / requirements JSON, parsed once per distinct text (they never change for a channel,
    and each request reads its row): the parsed object is shared, read it only."""
    hit = _PARSED.get(text)
    if hit is None:
        if len(_PARSED) >= 4096:
            _PARSED.clear()
        hit = _PARSED[text] = json.loads(text)
    return hit


@dataclass(frozen=True, slots=True)
class ChannelRow:
    channel_id: str  # 0x + 64 lowercase hex
    network: str
    config: dict[str, Any]
    requirements: dict[str, Any]
    charged: int
    signed_max: int
    signature: str
    claimed: int
    balance: int
    total_claimed: int
    withdraw_requested_at: int
    refund_nonce: int
    synced_at: float
    requests: int
    lock_owner: str | None
    lock_until: float | None

    @classmethod
    def of(cls, r: Row) -> ChannelRow:
        return cls(str(r["channel_id"]), str(r["network"]), _parsed(r["config"]), _parsed(r["requirements"]),
                   int(r["charged"]), int(r["signed_max"]), str(r["signature"]), int(r["claimed"]),
                   int(r["balance"]), int(r["total_claimed"]), int(r["withdraw_requested_at"]),
                   int(r["refund_nonce"]), float(r["synced_at"]), int(r["requests"]),
                   r["lock_owner"], None if r["lock_until"] is None else float(r["lock_until"]))


@dataclass(frozen=True, slots=True)
class Onchain:
    """The mirrored escrow snapshot of a channel."""

    balance: int
    total_claimed: int
    withdraw_requested_at: int
    refund_nonce: int


class ChannelStore(Repository):
    """Seller channel accounting over the seller's database (see the module docs)."""

    component = COMPONENT

    async def get(self, channel_id: str) -> ChannelRow | None:
        row = await fetchone_point(self.db, f"SELECT * FROM {TABLE} WHERE channel_id = ?", (channel_id,))
        return ChannelRow.of(row) if row else None

    async def _returning(self, sql: str, params: tuple[Any, ...]) -> Row | None:
        """A point write with ``RETURNING``: inline on SQLite when that needs no waiting."""
        if isinstance(self.db, SqliteDatabase):
            rows = self.db.try_inline(sql, params, fetch=True, write=True)
            if rows is not INLINE_MISS:
                return rows[0] if rows else None
        return await self.db.fetchone(sql, params)

    async def take(self, channel_id: str, owner: str, lease: float) -> ChannelRow | None:
        """Take the channel's lease (free, or its holder's ran out) and read the row in the same statement;
        None when the channel is unknown or another request holds it."""
        now = self.clock()
        row = await self._returning(
            f"UPDATE {TABLE} SET lock_owner = ?, lock_until = ? WHERE channel_id = ? "
            "AND (lock_owner IS NULL OR lock_until < ?) RETURNING *", (owner, now + lease, channel_id, now))
        return ChannelRow.of(row) if row else None

    async def create_locked(self, channel_id: str, network: str, config: dict[str, Any],
                            requirements: dict[str, Any], base: int, onchain: Onchain, owner: str,
                            lease: float) -> bool:
        """Insert a verified channel, leased to ``owner``, charged ``base`` so far; False when it exists."""
        now = self.clock()
        n = await self.db.execute(
            f"INSERT INTO {TABLE} (channel_id, network, config, requirements, charged, signed_max, signature, "
            "claimed, claim_due, balance, total_claimed, withdraw_requested_at, refund_nonce, synced_at, requests, "
            "lock_owner, lock_until, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, 0, ?, ?, ?, ?, ?, 0, ?, ?, ?) "
            "ON CONFLICT DO NOTHING",
            (channel_id, network, json.dumps(config, separators=(",", ":")),
             json.dumps(requirements, separators=(",", ":")), str(base), str(base), "", str(onchain.total_claimed),
             str(onchain.balance), str(onchain.total_claimed), onchain.withdraw_requested_at,
             str(onchain.refund_nonce), now, owner, now + lease, now))
        return n == 1

    async def lease(self, channel_id: str, owner: str, lease: float) -> bool:
        """Take the channel's lease (free, or its holder's lease ran out); False when another request holds it."""
        now = self.clock()
        n = await execute_point(
            self.db, f"UPDATE {TABLE} SET lock_owner = ?, lock_until = ? WHERE channel_id = ? "
            "AND (lock_owner IS NULL OR lock_until < ?)", (owner, now + lease, channel_id, now))
        return n == 1

    async def renew(self, channel_id: str, owner: str, lease: float) -> bool:
        """Extend ``owner``'s lease (a long handler, a stream); False when it no longer holds it."""
        n = await execute_point(
            self.db, f"UPDATE {TABLE} SET lock_until = ? WHERE channel_id = ? AND lock_owner = ?",
            (self.clock() + lease, channel_id, owner))
        return n == 1

    async def release(self, channel_id: str, owner: str) -> None:
        await execute_point(self.db, f"UPDATE {TABLE} SET lock_owner = NULL, lock_until = NULL "
                            "WHERE channel_id = ? AND lock_owner = ?", (channel_id, owner))

    async def sync(self, channel_id: str, owner: str, onchain: Onchain) -> None:
        """Mirror a fresh on-chain snapshot (while holding the lease)."""
        await execute_point(
            self.db, f"UPDATE {TABLE} SET balance = ?, total_claimed = ?, withdraw_requested_at = ?, refund_nonce = ?, "
            "synced_at = ? WHERE channel_id = ? AND lock_owner = ?",
            (str(onchain.balance), str(onchain.total_claimed), onchain.withdraw_requested_at,
             str(onchain.refund_nonce), self.clock(), channel_id, owner))

    async def commit(self, channel_id: str, owner: str, charged_before: int, charge: int, signed_max: int,
                     signature: str, requirements: dict[str, Any] | None = None,
                     sale: tuple[str, Sequence[Any]] | None = None) -> bool:
        """A served request: ``charged += charge`` and the voucher it came with, and release the lease — only if
        this owner still holds it and nothing changed the charge meanwhile. False: nothing was written.
        ``sale``: a ledger statement (``paywire.store.payments.sale_row``) run in the same transaction."""
        if charge < 0 or charged_before + charge > signed_max:
            raise ValueError("a charge must be between 0 and what the voucher signed")
        sets = "requirements = ?, " if requirements is not None else ""
        params: tuple[Any, ...] = ((json.dumps(requirements, separators=(",", ":")),) if requirements else ())
        sql = (f"UPDATE {TABLE} SET {sets}charged = ?, signed_max = ?, signature = ?, "
               "claim_due = CASE WHEN claimed = ? THEN 0 ELSE 1 END, requests = requests + 1, "
               "lock_owner = NULL, lock_until = NULL, updated_at = ? WHERE channel_id = ? AND lock_owner = ? "
               "AND charged = ?")
        values = (*params, str(charged_before + charge), str(signed_max), signature, str(charged_before + charge),
                  self.clock(), channel_id, owner, str(charged_before))
        if sale is None:
            return await execute_point(self.db, sql, values) == 1

        if isinstance(self.db, SqliteDatabase):  # the hot path: one inline transaction, no thread hop
            def step(conn: Any) -> bool:
                if conn.execute(sql, values).rowcount != 1:
                    return False
                conn.execute(sale[0], tuple(sale[1]))
                return True

            done = self.db.try_inline_tx(step)
            if done is not INLINE_MISS:
                return bool(done)

        async def both(tx: Executor) -> bool:
            if await tx.execute(sql, values) != 1:
                return False
            await tx.execute(sale[0], sale[1])
            return True

        return await in_transaction(self.db, both)

    async def claim_due(self, limit: int = 100) -> list[ChannelRow]:
        """Channels charged beyond what was claimed on chain (for the claim manager)."""
        rows = await self.db.fetchall(f"SELECT * FROM {TABLE} WHERE claim_due = 1 LIMIT ?", (limit,))
        return [ChannelRow.of(r) for r in rows]

    async def mark_claimed(self, channel_id: str, claimed: int) -> None:
        """A claim up to ``claimed`` landed on chain (never lowers ``claimed``)."""
        row = await self.get(channel_id)
        if row is None or claimed <= row.claimed:
            return
        await self.db.execute(
            f"UPDATE {TABLE} SET claimed = ?, total_claimed = ?, "
            "claim_due = CASE WHEN charged = ? THEN 0 ELSE 1 END, updated_at = ? WHERE channel_id = ? AND claimed = ?",
            (str(claimed), str(max(claimed, row.total_claimed)), str(claimed), self.clock(), channel_id,
             str(row.claimed)))

    async def delete(self, channel_id: str, owner: str) -> None:
        """A channel refunded in full: forget it (a new deposit starts a new row)."""
        await self.db.execute(f"DELETE FROM {TABLE} WHERE channel_id = ? AND lock_owner = ?", (channel_id, owner))

    async def all(self, limit: int = 1000) -> list[ChannelRow]:
        rows = await self.db.fetchall(f"SELECT * FROM {TABLE} ORDER BY updated_at DESC LIMIT ?", (limit,))
        return [ChannelRow.of(r) for r in rows]


__all__ = ["TABLE", "ChannelRow", "ChannelStore", "Onchain"]


# ------------------------------------------------------------------------------------------------ buyer side

BUYER_COMPONENT = "buyer_channels"
BUYER_TABLE = "buyer_channels"

register(BUYER_COMPONENT, [[
    f"CREATE TABLE IF NOT EXISTS {BUYER_TABLE} ("
    "account TEXT NOT NULL, channel_id TEXT NOT NULL, network TEXT NOT NULL, config TEXT NOT NULL, "
    "charged TEXT NOT NULL, balance TEXT NOT NULL, pending_max TEXT NOT NULL, pending_deposit TEXT NOT NULL, "
    "distrusted TEXT NOT NULL, updated_at {real} NOT NULL, PRIMARY KEY (account, channel_id))",
]])


class BuyerChannelStore(Repository):
    """The payer's channels (``paywire.schemes.evm_batch.client.ClientChannel``) in the buyer's store, per
    account: what each seller charged so far, the deposited balance, and a voucher in flight."""

    component = BUYER_COMPONENT

    def __init__(self, db: Any, account: str = "", **kw: Any) -> None:
        super().__init__(db, **kw)
        self.account = account.lower()

    async def get(self, channel_id: str) -> Any:
        r = await self.db.fetchone(f"SELECT * FROM {BUYER_TABLE} WHERE account = ? AND channel_id = ?",
                                   (self.account, channel_id))
        return None if r is None else _client_channel(r)

    async def put(self, channel: Any) -> None:
        await self.db.execute(
            f"INSERT INTO {BUYER_TABLE} (account, channel_id, network, config, charged, balance, pending_max, "
            "pending_deposit, distrusted, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?) "
            "ON CONFLICT (account, channel_id) DO UPDATE SET charged = excluded.charged, balance = excluded.balance, "
            "pending_max = excluded.pending_max, pending_deposit = excluded.pending_deposit, "
            "distrusted = excluded.distrusted, updated_at = excluded.updated_at",
            (self.account, channel.channel_id, channel.network, json.dumps(channel.config, separators=(",", ":")),
             str(channel.charged), str(channel.balance), str(channel.pending_max), str(channel.pending_deposit),
             channel.distrusted, self.clock()))

    async def drop(self, channel_id: str) -> None:
        await self.db.execute(f"DELETE FROM {BUYER_TABLE} WHERE account = ? AND channel_id = ?",
                              (self.account, channel_id))

    async def all(self, *, all_accounts: bool = False) -> list[tuple[str, Any]]:
        """(account, channel) pairs, newest first."""
        rows = await self.db.fetchall(
            f"SELECT * FROM {BUYER_TABLE}" + ("" if all_accounts else " WHERE account = ?")
            + " ORDER BY updated_at DESC", () if all_accounts else (self.account,))
        return [(str(r["account"]), _client_channel(r)) for r in rows]


def _client_channel(r: Row) -> Any:
    from paywire.schemes.evm_batch.client import ClientChannel

    return ClientChannel(str(r["channel_id"]), str(r["network"]), json.loads(r["config"]), int(r["charged"]),
                         int(r["balance"]), int(r["pending_max"]), int(r["pending_deposit"]), str(r["distrusted"]))


__all__ += ["BuyerChannelStore"]
