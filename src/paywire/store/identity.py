"""The seller's sign-in state: single-use SIWX nonces, and who paid what (re-access).

``siwx_nonces`` holds one row per *accepted* sign-in (never for an unpaid or anonymous request): the nonce is
the primary key, so of any number of concurrent uses of one signed message exactly one INSERT wins. Each row
expires with its challenge (``expires_at``); expired rows are deleted as new ones arrive, so the table holds at
most the sign-ins of one challenge lifetime.

Re-access reads the seller's ledger (``seller_payments``): a settled payment of this payer for this route and
path, settled recently enough.
"""

from __future__ import annotations

from paywire.store.db import INLINE_MISS, Params, Row
from paywire.store.migrations import Repository, register
from paywire.store.payments import TABLE as PAYMENTS

COMPONENT = "identity"
NONCES = "siwx_nonces"
FREE = "identity_free_use"
PURGE_EVERY = 64
"""Inserts between two deletions of expired rows."""

register(COMPONENT, [[
    f"CREATE TABLE IF NOT EXISTS {NONCES} (nonce TEXT PRIMARY KEY, expires_at {{real}} NOT NULL, spent_on TEXT)",
    f"CREATE INDEX IF NOT EXISTS {NONCES}_expiry ON {NONCES} (expires_at)",
], [
    # free quotas: requests served free per (identity, route, window); rows end with their window
    f"""CREATE TABLE IF NOT EXISTS {FREE} (did TEXT NOT NULL, route TEXT NOT NULL, window_start BIGINT NOT NULL,
        used INTEGER NOT NULL, expires_at {{real}} NOT NULL, PRIMARY KEY (did, route, window_start))""",
    f"CREATE INDEX IF NOT EXISTS {FREE}_expiry ON {FREE} (expires_at)",
]])


class IdentityStore(Repository):
    """Single-use sign-in nonces and the re-access lookup, over the seller's database."""

    component = COMPONENT
    _inserts = 0

    async def _fetchone(self, sql: str, params: Params, *, write: bool = False) -> Row | None:
        """SQLite runs short statements inline when it can (as the payments store does); else the worker."""
        inline = getattr(self.db, "try_inline", None)
        if inline is not None:
            rows = inline(sql, params, fetch=True, write=write)
            if rows is not INLINE_MISS:
                return rows[0] if rows else None
        return await self.db.fetchone(sql, params)

    async def use_nonce(self, nonce: str, expires_at: float, spent_on: str | None = None) -> bool:
        """Spend ``nonce`` (kept until ``expires_at``) on ``spent_on`` (a payment's hash; None: a sign-in alone).
        False when it was already spent — unless on the same payment (a resent paid request)."""
        self._inserts += 1
        if self._inserts % PURGE_EVERY == 1:
            await self.purge()
        row = await self._fetchone(
            f"INSERT INTO {NONCES} (nonce, expires_at, spent_on) VALUES (?, ?, ?) ON CONFLICT DO NOTHING "
            "RETURNING nonce", (nonce, expires_at, spent_on), write=True)
        if row is not None:
            return True
        if spent_on is None:
            return False
        row = await self._fetchone(f"SELECT spent_on FROM {NONCES} WHERE nonce = ?", (nonce,))
        return row is not None and row["spent_on"] == spent_on

    async def purge(self) -> int:
        """Delete the rows of expired challenges and ended free-quota windows; returns how many."""
        now = self.clock()
        return (await self.db.execute(f"DELETE FROM {NONCES} WHERE expires_at < ?", (now,))
                + await self.db.execute(f"DELETE FROM {FREE} WHERE expires_at < ?", (now,)))

    async def take_free(self, did: str, route: str, limit: int, window: float) -> bool:
        """Use one of ``did``'s ``limit`` free requests of ``route`` in the current window of ``window`` seconds
        (one statement: concurrent requests cannot take more than ``limit``). False when none is left."""
        now = self.clock()
        start = int(now // window)
        row = await self._fetchone(
            f"INSERT INTO {FREE} (did, route, window_start, used, expires_at) VALUES (?, ?, ?, 1, ?) "
            f"ON CONFLICT (did, route, window_start) DO UPDATE SET used = {FREE}.used + 1 "
            f"WHERE {FREE}.used < ? RETURNING used", (did, route, start, (start + 1) * window, limit), write=True)
        return row is not None and int(row["used"]) <= limit

    async def count(self) -> int:
        row = await self.db.fetchone(f"SELECT COUNT(*) AS n FROM {NONCES}")
        return int(row["n"]) if row else 0

    async def paid(self, payer: str, route: str, path: str, since: float) -> int | None:
        """The id of the newest payment ``payer`` settled for ``route`` at ``path`` since ``since``, or None."""
        row = await self._fetchone(
            f"SELECT id FROM {PAYMENTS} WHERE lower(payer) = ? AND path = ? AND route = ? "
            "AND state IN ('served', 'settled') AND settled_at >= ? ORDER BY id DESC LIMIT 1",
            (payer.lower(), path, route, since))
        return int(row["id"]) if row else None


__all__ = ["FREE", "NONCES", "IdentityStore"]
