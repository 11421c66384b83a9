"""Settlement records of the facilitator: one row per authorization, compare-and-set state transitions.

Identity: ``(network, asset, payer, nonce)`` of an EIP-3009 authorization — a PRIMARY KEY on its digest and a
UNIQUE constraint on the columns make a second claim of one authorization impossible, across processes and
machines that share the database. States::

    verified ──► submitted ──► settled | failed | unresolved ──► settled | failed

* ``verified``  — claimed by ``owner`` after verification; nothing broadcast yet (a claim whose lease ran out,
  or one this instance holds from before a restart, may be taken over: its owner died before sending).
* ``submitted`` — the signed transaction (``raw_tx``, ``tx_hash``) is recorded; it is broadcast only after
  this row is written, so a crash after sending can be recovered by re-broadcasting the same bytes.
* ``settled`` / ``failed`` — final, judged from the chain (or ``failed``: a recorded transaction was never
  broadcast and its authorization expired first, ``expire_unsent``).
* ``unresolved`` — the chain could not tell us (RPC timed out or answered garbage); the reconciler retries.
"""

from __future__ import annotations

import functools
import hashlib
import json
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from paywire.identity.metadata import settling_for
from paywire.store.db import Database, Params, Row, execute_point, fetchone_point, open_database
from paywire.store.migrations import migrate, register

if TYPE_CHECKING:
    from paywire.audit.wiring import AuditTrail

__all__ = [
    "FINAL_STATES",
    "OPEN_STATES",
    "STATES",
    "Settlement",
    "SettlementStore",
    "requirements_digest",
    "settlement_id",
]

STATES = ("verified", "submitted", "settled", "failed", "unresolved")
FINAL_STATES = ("settled", "failed")
OPEN_STATES = ("verified", "submitted", "unresolved")
TABLE = "paywire_settlements"

# json.dumps(…) with these options, without building an encoder per call
_compact = json.JSONEncoder(separators=(",", ":")).encode
_canonical = json.JSONEncoder(sort_keys=True, separators=(",", ":")).encode

_COLUMNS = """
        id TEXT PRIMARY KEY,
        network TEXT NOT NULL,
        asset TEXT NOT NULL,
        payer TEXT NOT NULL,
        nonce TEXT NOT NULL,
        requirements_digest TEXT NOT NULL,
        request TEXT NOT NULL,
        amount TEXT NOT NULL,
        pay_to TEXT NOT NULL,
        state TEXT NOT NULL {state_check},
        tx_hash TEXT,
        tx_hashes TEXT NOT NULL DEFAULT '',
        raw_tx {{blob}},
        signer TEXT,
        tx_nonce BIGINT,
        block_number BIGINT,
        error_reason TEXT,
        error_message TEXT,
        owner TEXT NOT NULL,
        lease_until {{real}} NOT NULL,
        attempts INTEGER NOT NULL DEFAULT 1,
        created_at {{real}} NOT NULL,
        updated_at {{real}} NOT NULL,
        submitted_at {{real}},
        finished_at {{real}},{more}
        UNIQUE (network, asset, payer, nonce)"""
_NAMES = ("id, network, asset, payer, nonce, requirements_digest, request, amount, pay_to, state, tx_hash, tx_hashes, "
          "raw_tx, signer, tx_nonce, block_number, error_reason, error_message, owner, lease_until, attempts, "
          "created_at, updated_at, submitted_at, finished_at, identity")
# The same five states as comparisons: SQLite builds a temporary table for a five-value ``IN`` list every time
# a statement that sets ``state`` checks it (three per settlement), not for ``=`` ... ``OR``.
_STATE_CHECK = "CHECK (" + " OR ".join(f"state = '{s}'" for s in STATES) + ")"
_INDEXES = [
    f"CREATE INDEX IF NOT EXISTS {TABLE}_open ON {TABLE} (state, lease_until)",
    f"CREATE INDEX IF NOT EXISTS {TABLE}_tx ON {TABLE} (tx_hash)",
]

register("facilitator", [[
    f"CREATE TABLE IF NOT EXISTS {TABLE} ("
    + _COLUMNS.format(state_check="CHECK (state IN ('verified', 'submitted', 'settled', 'failed', 'unresolved'))",
                      more="") + ")",
    *_INDEXES,
], [
    # the payer's identity (a DID) as the seller stated it in the request (paywire.identity.metadata)
    f"ALTER TABLE {TABLE} ADD COLUMN identity TEXT",
], [
    # SQLite: the state CHECK as comparisons (see _STATE_CHECK); a CHECK cannot be altered, so the table is
    # rebuilt (inside the migration's transaction). Postgres keeps its CHECK, which costs it nothing.
    {"sqlite": f"CREATE TABLE {TABLE}_v3 ("
               + _COLUMNS.format(state_check=_STATE_CHECK, more="\n        identity TEXT,") + ")",
     "postgres": "SELECT 1"},
    {"sqlite": f"INSERT INTO {TABLE}_v3 ({_NAMES}) SELECT {_NAMES} FROM {TABLE}", "postgres": "SELECT 1"},
    {"sqlite": f"DROP TABLE {TABLE}", "postgres": "SELECT 1"},
    {"sqlite": f"ALTER TABLE {TABLE}_v3 RENAME TO {TABLE}", "postgres": "SELECT 1"},
    *_INDEXES,
]])


@functools.lru_cache(maxsize=4096)
def settlement_id(network: str, asset: str, payer: str, nonce: bytes | str) -> str:
    """The id of an authorization's settlement record: any instance derives the same one (remembered for the
    last few thousand: one settlement asks for it three times)."""
    n = nonce.hex() if isinstance(nonce, bytes) else nonce.lower().removeprefix("0x")
    key = f"{network}|{asset.lower()}|{payer.lower()}|0x{n}"
    return hashlib.sha256(key.encode()).hexdigest()[:40]


def requirements_digest(requirements_wire: Mapping[str, Any]) -> str:
    """Digest of the payment requirements a settlement was made for (canonical JSON, sha256)."""
    canon = _canonical(requirements_wire)
    return hashlib.sha256(canon.encode()).hexdigest()


@dataclass(frozen=True, slots=True)
class Settlement:
    """One settlement record (see the module docs for the states)."""

    id: str
    network: str
    asset: str
    payer: str
    nonce: str
    requirements_digest: str
    request: dict[str, Any]
    amount: int
    pay_to: str
    state: str
    tx_hash: str | None
    tx_hashes: tuple[str, ...]
    raw_tx: bytes | None
    signer: str | None
    tx_nonce: int | None
    block_number: int | None
    error_reason: str | None
    error_message: str | None
    owner: str
    lease_until: float
    attempts: int
    created_at: float
    updated_at: float
    submitted_at: float | None
    finished_at: float | None
    identity: str | None = None
    """The payer's DID, as the seller named it (``extensions["paywire-identity"]``), or None."""

    @property
    def final(self) -> bool:
        return self.state in FINAL_STATES

    @classmethod
    def from_row(cls, r: Row) -> Settlement:
        raw = r.get("raw_tx")
        return cls(
            id=r["id"], network=r["network"], asset=r["asset"], payer=r["payer"], nonce=r["nonce"],
            requirements_digest=r["requirements_digest"], request=json.loads(r["request"]),
            amount=int(r["amount"]), pay_to=r["pay_to"], state=r["state"], tx_hash=r.get("tx_hash"),
            tx_hashes=tuple(h for h in (r.get("tx_hashes") or "").split(",") if h),
            raw_tx=bytes(raw) if raw is not None else None, signer=r.get("signer"),
            tx_nonce=_opt_int(r.get("tx_nonce")), block_number=_opt_int(r.get("block_number")),
            error_reason=r.get("error_reason"), error_message=r.get("error_message"), owner=r["owner"],
            lease_until=float(r["lease_until"]), attempts=int(r["attempts"]), created_at=float(r["created_at"]),
            updated_at=float(r["updated_at"]), submitted_at=_opt_float(r.get("submitted_at")),
            finished_at=_opt_float(r.get("finished_at")), identity=r.get("identity"),
        )

    def to_json(self) -> dict[str, Any]:
        """The public view (``GET /settlements/{id}``); the raw transaction is not included."""
        return {
            "id": self.id, "state": self.state, "network": self.network, "asset": self.asset,
            "payer": self.payer, "nonce": self.nonce, "payTo": self.pay_to, "amount": str(self.amount),
            "requirementsDigest": self.requirements_digest, "transaction": self.tx_hash or "",
            "transactions": list(self.tx_hashes), "signer": self.signer, "blockNumber": self.block_number,
            "errorReason": self.error_reason, "errorMessage": self.error_message, "owner": self.owner,
            "attempts": self.attempts, "createdAt": self.created_at, "updatedAt": self.updated_at,
            "submittedAt": self.submitted_at, "finishedAt": self.finished_at,
            **({"identity": self.identity} if self.identity else {}),
        }


def _opt_int(v: Any) -> int | None:
    return int(v) if v is not None else None


def _opt_float(v: Any) -> float | None:
    return float(v) if v is not None else None


def _in(states: Sequence[str]) -> str:
    return "(" + ", ".join("?" for _ in states) + ")"


class SettlementStore:
    """Repository over a ``Database``. Every transition is a compare-and-set ``UPDATE … WHERE state IN (…)``;
    a method returns False when another instance got there first (re-read the row to see what happened)."""

    def __init__(self, db: Database, *, instance_id: str | None = None) -> None:
        self.db = db
        self.instance_id = instance_id or f"fac-{uuid.uuid4().hex[:12]}"
        # ids of rows this process is working on right now (not stored): a row of ours that is not in here was
        # left by an earlier run of this instance (a restart) and may be resumed at once
        self.working: set[str] = set()
        self.audit: AuditTrail | None = None
        """Set (``paywire.audit.wiring.enable_audit``) to queue an audit event with every change, in its transaction."""

    async def _change(self, sql: str, params: Params, *, sid: str | None = None, previous: str | None = None,
                      deleted: bool = False, kind: str | None = None, data: Mapping[str, Any] | None = None) -> int:
        """Run one statement; with an audit trail, together with its event (``sid``: read the state it leaves)."""
        if self.audit is None:
            return await execute_point(self.db, sql, params)
        row = await self.audit.change(self.db, sql, params, previous=previous, key=None if sid is None else ("id", sid),
                                      deleted=deleted, kind=kind, data=data)
        return 0 if row is None else 1

    @classmethod
    async def open(cls, url: str, *, instance_id: str | None = None) -> SettlementStore:
        """Open ``url`` (``sqlite:///file.db`` or ``postgresql://…``) and run the facilitator migrations."""
        db = open_database(url)
        await migrate(db, ["facilitator"])
        return cls(db, instance_id=instance_id)

    async def migrate(self) -> None:
        await migrate(self.db, ["facilitator"])

    async def aclose(self) -> None:
        await self.db.aclose()

    # -- reads --------------------------------------------------------------------------------------------

    async def get(self, settlement_id: str) -> Settlement | None:
        row = await fetchone_point(self.db, f"SELECT * FROM {TABLE} WHERE id = ?", (settlement_id,))
        return Settlement.from_row(row) if row else None

    async def by_tx_hash(self, tx_hash: str) -> Settlement | None:
        row = await self.db.fetchone(f"SELECT * FROM {TABLE} WHERE tx_hash = ?", (tx_hash.lower(),))
        return Settlement.from_row(row) if row else None

    async def open_rows(self, *, limit: int = 100, now: float | None = None) -> list[Settlement]:
        """Rows the reconciler should look at: submitted/unresolved ones, claims whose lease ran out, and this
        instance's own claims (after a restart they are nobody's work)."""
        now = time.time() if now is None else now
        rows = await self.db.fetchall(
            f"SELECT * FROM {TABLE} WHERE state IN ('submitted', 'unresolved') "
            f"OR (state = 'verified' AND (lease_until < ? OR owner = ?)) ORDER BY updated_at LIMIT ?",
            (now, self.instance_id, limit),
        )
        return [Settlement.from_row(r) for r in rows]

    async def next_lease_end(self, *, now: float | None = None) -> float | None:
        """When the next lease of an open row runs out (None: no lease is running): the moment another instance
        may take that row over."""
        now = time.time() if now is None else now
        row = await self.db.fetchone(
            f"SELECT MIN(lease_until) AS t FROM {TABLE} WHERE state IN ('verified', 'submitted') AND lease_until >= ?",
            (now,),
        )
        return float(row["t"]) if row is not None and row.get("t") is not None else None

    async def counts(self) -> dict[str, int]:
        rows = await self.db.fetchall(f"SELECT state, COUNT(*) AS n FROM {TABLE} GROUP BY state")
        out = dict.fromkeys(STATES, 0)
        out.update({r["state"]: int(r["n"]) for r in rows})
        return out

    # -- claim --------------------------------------------------------------------------------------------

    async def claim(
        self, *, network: str, asset: str, payer: str, nonce: str, requirements_digest: str,
        request: Mapping[str, Any], amount: int, pay_to: str, lease_seconds: float, take_own: bool = False,
    ) -> tuple[bool, Settlement]:
        """Claim an authorization for this instance. ``(True, row)`` if we own it now (a fresh claim, or a
        ``verified`` claim whose owner's lease ran out), else ``(False, the existing row)``. ``take_own``: also
        take a ``verified`` claim of this instance whose lease still runs — the caller holds the id in
        ``working`` and knows no task of this process has it (a run before a restart left it)."""
        sid = settlement_id(network, asset, payer, nonce)
        now = time.time()
        identity = settling_for.get()
        inserted = await self._change(
            f"INSERT INTO {TABLE} (id, network, asset, payer, nonce, requirements_digest, request, amount, "
            f"pay_to, state, owner, lease_until, created_at, updated_at, identity) "
            f"VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, 'verified', ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
            (sid, network, asset.lower(), payer.lower(), nonce.lower(), requirements_digest,
             _compact(request if isinstance(request, dict) else dict(request)), str(amount), pay_to.lower(), self.instance_id,
             now + lease_seconds, now, now, identity),
        )
        if inserted == 1:
            return True, Settlement(
                id=sid, network=network, asset=asset.lower(), payer=payer.lower(), nonce=nonce.lower(),
                requirements_digest=requirements_digest, request=dict(request), amount=amount,
                pay_to=pay_to.lower(), state="verified", tx_hash=None, tx_hashes=(), raw_tx=None, signer=None,
                tx_nonce=None, block_number=None, error_reason=None, error_message=None, owner=self.instance_id,
                lease_until=now + lease_seconds, attempts=1, created_at=now, updated_at=now, submitted_at=None,
                finished_at=None, identity=identity,
            )
        took = await execute_point(self.db,
            f"UPDATE {TABLE} SET owner = ?, lease_until = ?, updated_at = ?, attempts = attempts + 1 "
            f"WHERE id = ? AND state = 'verified' AND (lease_until < ? OR owner = ?)",
            (self.instance_id, now + lease_seconds, now, sid, now, self.instance_id if take_own else None),
        )
        row = await self.get(sid)
        if row is None:  # released between our INSERT and SELECT: try once more
            return await self.claim(network=network, asset=asset, payer=payer, nonce=nonce,
                                    requirements_digest=requirements_digest, request=request, amount=amount,
                                    pay_to=pay_to, lease_seconds=lease_seconds, take_own=take_own)
        return took == 1, row

    async def take_lease(self, settlement_id: str, lease_seconds: float, states: Sequence[str]) -> bool:
        """Own a row in ``states`` for ``lease_seconds``: ours already, or its owner's lease ran out."""
        now = time.time()
        n = await self.db.execute(
            f"UPDATE {TABLE} SET owner = ?, lease_until = ?, updated_at = ? "
            f"WHERE id = ? AND (lease_until < ? OR owner = ?) AND state IN {_in(states)}",
            (self.instance_id, now + lease_seconds, now, settlement_id, now, self.instance_id, *states),
        )
        return n == 1

    async def extend_lease(self, settlement_id: str, lease_seconds: float) -> bool:
        now = time.time()
        n = await self.db.execute(
            f"UPDATE {TABLE} SET lease_until = ? WHERE id = ? AND owner = ?",
            (now + lease_seconds, settlement_id, self.instance_id),
        )
        return n == 1

    async def release(self, settlement_id: str, *, tx_hash: str | None = None) -> bool:
        """Drop our claim when nothing reached the chain (verification or the node refused the transaction),
        so a later settle may try again. With ``tx_hash``: only if that is still the recorded transaction."""
        if tx_hash is None:
            n = await self._change(
                f"DELETE FROM {TABLE} WHERE id = ? AND owner = ? AND state = 'verified'",
                (settlement_id, self.instance_id), deleted=True,
            )
        else:
            n = await self._change(
                f"DELETE FROM {TABLE} WHERE id = ? AND owner = ? AND state IN ('submitted', 'verified') "
                f"AND tx_hash = ?",
                (settlement_id, self.instance_id, tx_hash.lower()), deleted=True,
            )
        return n == 1

    # -- transitions --------------------------------------------------------------------------------------

    async def record_tx(
        self, settlement_id: str, *, tx_hash: str, raw_tx: bytes, signer: str, tx_nonce: int,
        previous_hash: str | None, lease_seconds: float,
    ) -> bool:
        """Record the signed transaction BEFORE it is broadcast: ``verified → submitted`` (first transaction,
        ``previous_hash=None``) or a re-signed/replacement one over ``previous_hash`` (row stays open)."""
        now = time.time()
        tx_hash = tx_hash.lower()
        data = None if self.audit is None else {  # the audit event's facts (no audit trail: not needed)
            "raw_tx_digest": "sha256:" + hashlib.sha256(raw_tx).hexdigest(), "signer": signer, "tx_nonce": tx_nonce}
        if previous_hash is None:
            n = await self._change(
                f"UPDATE {TABLE} SET state = 'submitted', tx_hash = ?, tx_hashes = ?, raw_tx = ?, signer = ?, "
                f"tx_nonce = ?, submitted_at = ?, updated_at = ?, lease_until = ? "
                f"WHERE id = ? AND owner = ? AND state = 'verified'",
                (tx_hash, tx_hash, raw_tx, signer, tx_nonce, now, now, now + lease_seconds, settlement_id,
                 self.instance_id), previous="verified", data=data)
        else:
            n = await self._change(
                f"UPDATE {TABLE} SET tx_hash = ?, tx_hashes = tx_hashes || ?, raw_tx = ?, signer = ?, "
                f"tx_nonce = ?, updated_at = ?, lease_until = ? "
                f"WHERE id = ? AND owner = ? AND state IN ('submitted', 'unresolved') AND tx_hash = ?",
                (tx_hash, "," + tx_hash, raw_tx, signer, tx_nonce, now, now + lease_seconds, settlement_id,
                 self.instance_id, previous_hash.lower()), sid=settlement_id, kind="settlement.tx_replaced",
                data=None if data is None else {**data, "previous_tx_hash": previous_hash.lower()})
        return n == 1

    async def finish(
        self, settlement_id: str, state: str, *, tx_hash: str | None, block_number: int | None = None,
        error_reason: str | None = None, error_message: str | None = None,
        from_states: Sequence[str] = OPEN_STATES,
    ) -> bool:
        """``open → settled | failed``: the chain decided. Any instance may do this (the outcome is a fact
        of the chain), so there is no owner check; the first writer wins."""
        if state not in FINAL_STATES:
            raise ValueError(f"not a final state: {state!r}")
        now = time.time()
        common: tuple[Any, ...]
        if tuple(from_states) == OPEN_STATES:  # every state but the final ones (the CHECK allows no other),
            common = (block_number, error_reason, error_message, now, now, settlement_id)  # without an IN list,
            where = "WHERE id = ? AND state <> 'settled' AND state <> 'failed'"  # which SQLite builds a table for
        else:
            common = (block_number, error_reason, error_message, now, now, settlement_id, *from_states)
            where = f"WHERE id = ? AND state IN {_in(from_states)}"
        data = {k: v for k, v in (("block_number", block_number), ("error_reason", error_reason)) if v is not None}
        if tx_hash is None:
            n = await self._change(
                f"UPDATE {TABLE} SET state = ?, block_number = ?, error_reason = ?, error_message = ?, "
                f"updated_at = ?, finished_at = ? {where}", (state, *common), sid=settlement_id, data=data)
        else:
            tx_hash = tx_hash.lower()
            # The common case first: the mined transaction is the row's current one, already in its list. The
            # statement below would write both back unchanged; this one leaves them out of the SET, so SQLite
            # does not rewrite the row's ``tx_hash`` index entry (one WAL page fewer per settlement). Same row.
            n = await self._change(
                f"UPDATE {TABLE} SET state = ?, block_number = ?, error_reason = ?, error_message = ?, "
                f"updated_at = ?, finished_at = ? {where} AND tx_hash = ? AND tx_hashes LIKE ?",
                (state, *common, tx_hash, f"%{tx_hash}%"), sid=settlement_id, data=data)
            if n == 1:
                return True
            n = await self._change(
                f"UPDATE {TABLE} SET state = ?, tx_hash = ?, tx_hashes = CASE WHEN tx_hashes LIKE ? THEN tx_hashes "
                f"WHEN tx_hashes = '' THEN ? ELSE tx_hashes || ? END, block_number = ?, error_reason = ?, "
                f"error_message = ?, updated_at = ?, finished_at = ? {where}",
                (state, tx_hash, f"%{tx_hash}%", tx_hash, "," + tx_hash, *common), sid=settlement_id, data=data)
        return n == 1

    async def expire_unsent(self, settlement_id: str, *, tx_hash: str, error_reason: str, error_message: str) -> bool:
        """``submitted | unresolved → failed`` without the chain: our recorded ``tx_hash`` was never broadcast
        and never will be (its authorization expires before it could be mined), so nothing can move. Only while
        the row is ours and still carries that transaction: whoever else acts on a row (re-broadcast, re-sign,
        replace) takes its lease first, so nobody else can have sent it. The row keeps no current transaction."""
        now = time.time()
        n = await self._change(
            f"UPDATE {TABLE} SET state = 'failed', tx_hash = NULL, error_reason = ?, error_message = ?, "
            f"updated_at = ?, finished_at = ? "
            f"WHERE id = ? AND owner = ? AND tx_hash = ? AND state IN ('submitted', 'unresolved')",
            (error_reason, error_message[:500], now, now, settlement_id, self.instance_id, tx_hash.lower()),
            sid=settlement_id, data={"error_reason": error_reason},
        )
        return n == 1

    async def mark_unresolved(self, settlement_id: str, message: str) -> bool:
        """``submitted → unresolved``: we could not learn the outcome from the chain (RPC failure)."""
        now = time.time()
        n = await self._change(
            f"UPDATE {TABLE} SET state = 'unresolved', error_reason = 'settlement_unresolved', error_message = ?, "
            f"updated_at = ? WHERE id = ? AND state IN ('submitted', 'unresolved')",
            (message[:500], now, settlement_id), sid=settlement_id, data={"error_reason": "settlement_unresolved"},
        )
        return n == 1

    async def note(self, settlement_id: str, message: str, *, kind: str | None = None) -> None:
        """Keep the latest observation on an open row (shown by ``GET /settlements/{id}``); ``kind``: a reconciler
        action the audit log records (``settlement.rebroadcast``) when auditing is on."""
        sql = f"UPDATE {TABLE} SET error_message = ?, updated_at = ? WHERE id = ? AND state IN {_in(OPEN_STATES)}"
        params = (message[:500], time.time(), settlement_id, *OPEN_STATES)
        if kind is not None and self.audit is not None:
            await self._change(sql, params, sid=settlement_id, kind=kind, data={"action": message[:200]})
            return
        await self.db.execute(sql, params)
