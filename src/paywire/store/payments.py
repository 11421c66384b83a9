"""The seller's payments: one row per payment a paid route accepted, claimed before its handler runs.

Exactly-once comes from the database: ``auth_key`` (the EIP-3009 authorization: network, token, payer,
nonce) and ``payment_id`` (the ``payment-identifier`` extension) are UNIQUE, so of any number of concurrent
requests carrying one payment — in one process or in many sharing a Postgres — exactly one inserts the claim.
Every later transition is a compare-and-set on (state, owner). The seller flow claims a payment once the
facilitator verified it, inserting it as ``claimed`` (``settle="after"``) or ``settling`` (``settle="before"``);
an invalid payment writes nothing. States::

    claimed ──┬─> settling ─┬─> served   paid; the recorded response is replayed to retries
              │             ├─> failed   not charged (settlement refused)
              │             └─> unresolved  settlement outcome unknown; a retry reconciles it
              └─> failed     not charged (handler >= 400 / exception, or abandoned: see below)
    settling ──> settled ──> served        (settle="before": paid first, then the handler runs)

``claimed`` (``settle="after"``): the handler may have started — the state is in the store before it runs — so a
dead owner's row is retired (``failed``, abandoned), never run again. ``verifying`` (rows claimed before their
verification, by versions before 2026-12-04, and reusable credentials' first use): nothing has run and nothing
was settled, so a dead owner's row simply starts over (an invalid payment's row is deleted). Rows written before
``verifying`` existed used ``claimed`` for both; ``settle="before"`` rows never reach the handler in ``claimed``,
so theirs also start over.

Each row says which protocol carried the payment (``protocol``: ``x402``, ``mpp``, ``l402``). The same rows are
the seller's revenue ledger (:meth:`PaymentStore.sales`, ``paywire sales``).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, fields
from typing import TYPE_CHECKING, Any

from paywire.store.db import INLINE_MISS, Database, Params, Row
from paywire.store.migrations import Repository, register

if TYPE_CHECKING:
    from paywire.audit.wiring import AuditTrail

COMPONENT = "seller"
TABLE = "seller_payments"

register(COMPONENT, [[
    f"""CREATE TABLE IF NOT EXISTS {TABLE} (
        id {{autoinc}},
        auth_key TEXT NOT NULL UNIQUE,
        payment_id TEXT UNIQUE,
        payload_hash TEXT NOT NULL,
        state TEXT NOT NULL,
        owner TEXT,
        lease_until {{real}},
        route TEXT NOT NULL,
        method TEXT NOT NULL,
        path TEXT NOT NULL,
        settle_mode TEXT NOT NULL,
        x402_version INTEGER NOT NULL,
        scheme TEXT NOT NULL,
        network TEXT NOT NULL,
        asset TEXT NOT NULL,
        pay_to TEXT NOT NULL,
        amount TEXT NOT NULL,
        decimals INTEGER NOT NULL,
        payer TEXT,
        payload TEXT NOT NULL,
        requirements TEXT NOT NULL,
        tx TEXT,
        settle_response TEXT,
        error TEXT,
        resp_status INTEGER,
        resp_headers TEXT,
        resp_body {{blob}},
        created_at {{real}} NOT NULL,
        updated_at {{real}} NOT NULL,
        settled_at {{real}}
    )""",
    f"CREATE INDEX IF NOT EXISTS {TABLE}_state ON {TABLE} (state, updated_at)",
    f"CREATE INDEX IF NOT EXISTS {TABLE}_created ON {TABLE} (created_at)",
], [
    # every state change rewrote the (state, updated_at) entry: ~half the cost of a paid request's writes. The
    # ledger pages by id (insertion order) and only the reconciler looks rows up by state, unresolved ones.
    f"DROP INDEX IF EXISTS {TABLE}_state",
    f"DROP INDEX IF EXISTS {TABLE}_created",
    f"CREATE INDEX IF NOT EXISTS {TABLE}_unresolved ON {TABLE} (created_at) WHERE state = 'unresolved'",
], [
    # which protocol carried the payment, as a column: rows written before it say so by their payment id
    # (``mpp:<challenge id>``) or scheme (``l402``)
    f"ALTER TABLE {TABLE} ADD COLUMN protocol TEXT NOT NULL DEFAULT 'x402'",
    f"UPDATE {TABLE} SET protocol = 'mpp' WHERE substr(payment_id, 1, 4) = 'mpp:'",
    f"UPDATE {TABLE} SET protocol = 'l402' WHERE scheme = 'l402'",
], [
    # who paid, as proven (docs/identity.md): the DID of a verified identity, NULL when none was shown; and the
    # lookup behind SIWX re-access ("this payer already paid for this path")
    f"ALTER TABLE {TABLE} ADD COLUMN identity TEXT",
    f"CREATE INDEX IF NOT EXISTS {TABLE}_payer ON {TABLE} (lower(payer), path)",
]])

IN_FLIGHT = ("verifying", "claimed", "settling", "settled")
TERMINAL = ("served", "failed")


@dataclass(frozen=True, slots=True)
class StoredResponse:
    """A response as recorded for idempotent replay."""

    status: int
    headers: tuple[tuple[str, str], ...]
    body: bytes
    complete: bool = True  # False when a streamed body was longer than the recording limit


@dataclass(frozen=True, slots=True)
class NewPayment:
    """What a seller knows about a payment when it claims it."""

    auth_key: str
    payment_id: str | None
    payload_hash: str
    route: str
    method: str
    path: str
    settle_mode: str
    x402_version: int
    scheme: str
    network: str
    asset: str
    pay_to: str
    amount: int
    decimals: int
    payer: str | None
    payload: str  # wire JSON of the payment payload
    requirements: str  # wire JSON of the requirements sent to the facilitator
    protocol: str = "x402"  # which protocol carried it: "x402" | "mpp" | "l402"
    identity: str | None = None  # the DID of the identity the request proved (SIWX, agent signature)


@dataclass(frozen=True, slots=True)
class PaymentRecord:
    """One row of the seller's ledger."""

    id: int
    auth_key: str
    payment_id: str | None
    payload_hash: str
    state: str
    owner: str | None
    lease_until: float | None
    route: str
    method: str
    path: str
    settle_mode: str
    x402_version: int
    scheme: str
    network: str
    asset: str
    pay_to: str
    amount: int
    decimals: int
    payer: str | None
    payload: str
    requirements: str
    tx: str | None
    settle_response: str | None
    error: str | None
    resp_status: int | None
    resp_headers: str | None
    resp_body: bytes | None
    created_at: float
    updated_at: float
    settled_at: float | None
    protocol: str = "x402"
    identity: str | None = None

    @classmethod
    def from_row(cls, row: Row) -> PaymentRecord:
        data: dict[str, Any] = {name: row.get(name) for name in _RECORD_FIELDS}
        data["amount"] = int(data["amount"])
        if data["resp_body"] is not None:
            data["resp_body"] = bytes(data["resp_body"])
        return cls(**data)

    @property
    def response(self) -> StoredResponse | None:
        if self.resp_status is None:
            return None
        headers = tuple((str(k), str(v)) for k, v in json.loads(self.resp_headers or "[]"))
        return StoredResponse(int(self.resp_status), headers, self.resp_body or b"")

    @property
    def outcome(self) -> str:
        return self.state


_RECORD_FIELDS = tuple(f.name for f in fields(PaymentRecord))
_NEW_FIELDS = tuple(f.name for f in fields(NewPayment))  # a claimed row is the new payment plus its state

_UPDATABLE = frozenset({
    "state", "owner", "lease_until", "payer", "tx", "settle_response", "error", "resp_status", "resp_headers",
    "resp_body", "settled_at", "requirements", "amount",
})


def response_fields(resp: StoredResponse | None) -> dict[str, Any]:
    """Columns that record ``resp`` (or clear the recorded response)."""
    if resp is None:
        return {"resp_status": None, "resp_headers": None, "resp_body": None}
    return {"resp_status": resp.status, "resp_headers": json.dumps([list(h) for h in resp.headers]),
            "resp_body": resp.body}


_UPDATES: dict[tuple[Any, ...], str] = {}
"""``update``'s statement text by the shape of the change (columns, number of from-states, owner checked)."""

_CLAIM_SQL = (
    f"INSERT INTO {TABLE} (auth_key, payment_id, payload_hash, state, owner, lease_until, route, method, "
    "path, settle_mode, x402_version, scheme, network, asset, pay_to, amount, decimals, payer, payload, "
    "requirements, protocol, identity, created_at, updated_at) VALUES (" + ", ".join("?" * 24) + ") "
    "ON CONFLICT DO NOTHING RETURNING id")
_CLAIM_SQL_PLAIN = _CLAIM_SQL.removesuffix(" RETURNING id")

_SALE_SQL = (
    f"INSERT INTO {TABLE} (auth_key, payment_id, payload_hash, state, owner, lease_until, route, method, "
    "path, settle_mode, x402_version, scheme, network, asset, pay_to, amount, decimals, payer, payload, "
    "requirements, protocol, identity, tx, resp_status, created_at, updated_at, settled_at) VALUES ("
    + ", ".join("?" * 27) + ") ON CONFLICT DO NOTHING")


def sale_row(p: NewPayment, tx: str | None, status: int, now: float) -> tuple[str, list[Any]]:
    """The statement that records an already-served, already-paid sale (a ``batch-settlement`` voucher charge)
    as a ``served`` ledger row; a second insert under the same ``auth_key`` does nothing. The caller runs it in
    the transaction that commits the charge, so the ledger and the channel never disagree."""
    return _SALE_SQL, [p.auth_key, p.payment_id, p.payload_hash, "served", None, None, p.route, p.method, p.path,
                       p.settle_mode, p.x402_version, p.scheme, p.network, p.asset, p.pay_to, str(p.amount),
                       p.decimals, p.payer, p.payload, p.requirements, p.protocol, p.identity, tx, status, now, now,
                       now]


class PaymentStore(Repository):
    """Repository of seller payments over a ``paywire.store.Database``."""

    component = COMPONENT

    def __init__(self, db: Database, *, clock: Callable[[], float] = time.time) -> None:
        super().__init__(db, clock=clock)
        # SQLite: point statements run inline on the caller's loop when that needs no waiting (µs instead of a
        # worker-thread hop); the database, not this shortcut, still decides every claim and compare-and-set.
        self._inline: Callable[..., Any] | None = getattr(db, "try_inline", None)
        self.audit: AuditTrail | None = None
        """Set (``PaymentFlow(audit=…)``) to queue an audit event with every change of a row, in its transaction."""

    async def _execute(self, sql: str, params: Params) -> int:
        if self._inline is not None:
            n = self._inline(sql, params)
            if n is not INLINE_MISS:
                return int(n)
        return await self.db.execute(sql, params)

    async def _fetchone(self, sql: str, params: Params) -> Row | None:
        """A point read (writes go through ``_execute`` or the claim's own path)."""
        if self._inline is not None:
            rows = self._inline(sql, params, fetch=True, write=False)
            if rows is not INLINE_MISS:
                return rows[0] if rows else None
        return await self.db.fetchone(sql, params)

    # -- claims ---------------------------------------------------------------------------------
    async def claim(self, p: NewPayment, owner: str, lease: float, state: str = "verifying") -> PaymentRecord | None:
        """Insert the claim; None when this authorization or payment id is already claimed (unique keys).
        ``state``: ``verifying`` (claimed before verification), or ``claimed`` / ``settling`` for a payment the
        facilitator already verified (the seller flow claims after ``/verify``)."""
        now = self.clock()
        values: list[Any] = [p.auth_key, p.payment_id, p.payload_hash, state, owner, now + lease, p.route,
                             p.method, p.path, p.settle_mode, p.x402_version, p.scheme, p.network, p.asset,
                             p.pay_to, str(p.amount), p.decimals, p.payer, p.payload, p.requirements, p.protocol,
                             p.identity, now, now]
        rid: Any = INLINE_MISS
        if self.audit is not None and not self.audit.in_db:
            row = await self.audit.change(self.db, _CLAIM_SQL_PLAIN, values)
        elif self._inline is not None and (rid := self._inline(_CLAIM_SQL_PLAIN, values, rowid=True)) is not INLINE_MISS:
            row = None if rid is None else {"id": rid}  # the row id without RETURNING's cursor and row copies
        else:
            row = await self.db.fetchone(_CLAIM_SQL, values)
        if row is None:
            return None
        return PaymentRecord(
            id=int(row["id"]), state=state, owner=owner, lease_until=now + lease, tx=None, settle_response=None,
            error=None, resp_status=None, resp_headers=None, resp_body=None, created_at=now, updated_at=now,
            settled_at=None, **{f: getattr(p, f) for f in _NEW_FIELDS})

    async def find(self, auth_key: str, payment_id: str | None) -> PaymentRecord | None:
        """The payment claimed under this authorization, else under this payment id."""
        row = await self._fetchone(f"SELECT * FROM {TABLE} WHERE auth_key = ?", (auth_key,))
        if row is None and payment_id is not None:
            row = await self._fetchone(f"SELECT * FROM {TABLE} WHERE payment_id = ?", (payment_id,))
        return PaymentRecord.from_row(row) if row else None

    async def get(self, payment_id: int) -> PaymentRecord | None:
        row = await self._fetchone(f"SELECT * FROM {TABLE} WHERE id = ?", (payment_id,))
        return PaymentRecord.from_row(row) if row else None

    async def update(self, rid: int, holder: str | None, from_states: Sequence[str], /, **changes: Any) -> bool:
        """Compare-and-set: apply ``changes`` only if the row is in ``from_states`` (and owned by ``holder``)."""
        shape = (*changes, len(from_states), holder is not None)
        sql = _UPDATES.get(shape)
        if sql is None:
            bad = set(changes) - _UPDATABLE
            if bad:
                raise ValueError(f"not updatable: {sorted(bad)}")
            sql = (f"UPDATE {TABLE} SET " + ", ".join(f"{c} = ?" for c in [*changes, "updated_at"])
                   + " WHERE id = ? AND state IN (" + ", ".join("?" * len(from_states)) + ")"
                   + (" AND owner = ?" if holder is not None else ""))
            if len(_UPDATES) < 256:  # a handful of shapes in practice
                _UPDATES[shape] = sql
        params: list[Any] = [*changes.values(), self.clock(), rid, *from_states]
        if holder is not None:
            params.append(holder)
        trail = self.audit if self.audit is not None and not self.audit.in_db else None  # in_db: triggers log it
        if trail is not None and any(c not in ("owner", "lease_until") for c in changes):
            error = changes.get("error")
            kind = "payment.abandoned" if str(error).startswith("abandoned") else None
            return await trail.change(self.db, sql, params, data={"error": error} if error else None, kind=kind,
                                           previous=from_states[0],
                                           key=None if len(from_states) == 1 else ("id", rid)) is not None
        return await self._execute(sql, params) == 1

    async def take_over(self, rid: int, owner: str, from_states: Sequence[str], lease: float) -> bool:
        """Become the owner of a row in ``from_states`` that nobody holds (no owner, or its lease ran out)."""
        now = self.clock()
        params: list[Any] = [owner, now + lease, now, rid, *from_states, now]
        return await self._execute(
            f"UPDATE {TABLE} SET owner = ?, lease_until = ?, updated_at = ? WHERE id = ? AND state IN ("
            + ", ".join("?" * len(from_states)) + ") AND (owner IS NULL OR lease_until IS NULL OR lease_until < ?)",
            params) == 1

    async def renew(self, rid: int, owner: str, lease: float) -> bool:
        now = self.clock()
        return await self._execute(
            f"UPDATE {TABLE} SET lease_until = ? WHERE id = ? AND owner = ?", (now + lease, rid, owner)) == 1

    async def release_claim(self, rid: int, owner: str, reason: str | None = None) -> bool:
        """Forget a claim whose payment turned out invalid (nothing ran, nothing was charged): a ``verifying`` row,
        or an older ``settle="before"`` row still ``claimed``. ``reason`` goes into the audit event."""
        sql = (f"DELETE FROM {TABLE} WHERE id = ? AND owner = ? AND (state = 'verifying' OR (state = 'claimed' "
               "AND settle_mode = 'before'))")
        if self.audit is not None:
            return await self.audit.change(self.db, sql, (rid, owner), deleted=True,
                                           data={"reason": reason} if reason else None) is not None
        return await self._execute(sql, (rid, owner)) == 1

    # -- ledger ---------------------------------------------------------------------------------
    async def sales(self, *, limit: int = 100, route: str | None = None, states: Iterable[str] | None = None,
                    since: float | None = None) -> list[PaymentRecord]:
        """Newest first; filter by route key (``"GET /weather"``), states, and creation time."""
        where: list[str] = ["1 = 1"]
        params: list[Any] = []
        if route is not None:
            where.append("route = ?")
            params.append(route)
        st = list(states or [])
        if st:
            where.append("state IN (" + ", ".join("?" * len(st)) + ")")
            params += st
        if since is not None:
            where.append("created_at >= ?")
            params.append(since)
        params.append(int(limit))
        rows = await self.db.fetchall(
            f"SELECT * FROM {TABLE} WHERE {' AND '.join(where)} ORDER BY id DESC LIMIT ?", params)
        return [PaymentRecord.from_row(r) for r in rows]

    async def revenue(self, *, since: float | None = None) -> dict[tuple[str, str], tuple[int, int]]:
        """(network, asset) → (number of paid requests, atomic amount settled), over settled/served rows."""
        params: list[Any] = []
        sql = f"SELECT network, asset, amount FROM {TABLE} WHERE state IN ('settled', 'served')"
        if since is not None:
            sql += " AND created_at >= ?"
            params.append(since)
        out: dict[tuple[str, str], tuple[int, int]] = {}
        for r in await self.db.fetchall(sql, params):
            k = (str(r["network"]), str(r["asset"]).lower())
            n, total = out.get(k, (0, 0))
            out[k] = (n + 1, total + int(r["amount"]))
        return out

    async def stale_settling(self, window: int = 100_000, limit: int = 100) -> list[PaymentRecord]:
        """``settling`` rows nobody holds any more (owner gone, lease over) among the newest ``window`` rows,
        oldest first: a process stopped between a settle and recording its outcome. A rowid range, not a scan of
        the whole ledger (no index serves ``state``)."""
        rows = await self.db.fetchall(
            f"SELECT * FROM {TABLE} WHERE id > (SELECT COALESCE(MAX(id), 0) FROM {TABLE}) - ? AND state = 'settling'"
            " AND (owner IS NULL OR lease_until IS NULL OR lease_until < ?) ORDER BY id LIMIT ?",
            (int(window), self.clock(), int(limit)))
        return [PaymentRecord.from_row(r) for r in rows]

    async def unresolved(self, limit: int = 100) -> list[PaymentRecord]:
        """Unresolved settlements, oldest first (the partial index serves this query)."""
        rows = await self.db.fetchall(
            f"SELECT * FROM {TABLE} WHERE state = 'unresolved' ORDER BY created_at LIMIT ?", (int(limit),))
        return [PaymentRecord.from_row(r) for r in rows]


async def open_payment_store(url: str) -> PaymentStore:
    return await PaymentStore.open(url)
