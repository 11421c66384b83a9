"""Audit events written with the ledger changes they record: one INSERT into ``audit_queue`` in the same
transaction as the change (see docs/audit.md, "Events from the ledgers").

A ledger store holds an :class:`AuditTrail` in its ``audit`` attribute (``None``: auditing off, and the store
runs exactly the statements it ran before). With a trail, each change runs as ``UPDATE/INSERT/DELETE …
RETURNING <subject columns>`` plus the queue INSERT in one transaction (:func:`paywire.store.db.in_transaction`:
on SQLite inline, without a thread hop); the event is queued only when the compare-and-set won, so a lost race
writes neither. Changes of bookkeeping columns only (lease, owner) are not money events and are not logged.
On SQLite the seller ledger's inserts and updates are audited by TEMP triggers instead (:mod:`paywire.audit.triggers`:
the event is written inside the change's own statement, the paid path's cheapest way).
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from paywire.audit.events import digest, make_event
from paywire.audit.ledger import BUYER, DELETED, FACILITATOR, SELLER, LedgerSpec, ledger_event
from paywire.audit.store import enqueue
from paywire.store.db import INLINE_MAX_PARAM, Database, Executor, Params, Row, SqliteDatabase, in_transaction


def default_instance(component: str) -> str:
    """``<component>-<host>-<pid>``: an instance id when none is configured."""
    return f"{component}-{socket.gethostname()}-{os.getpid()}"


@dataclass(slots=True)
class AuditTrail:
    """Makes one ledger's events and queues them on the caller's transaction."""

    spec: LedgerSpec
    instance: str
    clock: Callable[[], float] = time.time
    events: int = field(default=0, init=False)  # queued from Python by this process (committed or not)
    in_db: bool = False
    """The database writes the events of inserts and updates itself (SQLite TEMP triggers,
    :mod:`paywire.audit.triggers`): the store runs those changes as plain statements."""

    def event(self, state: str, subject: Mapping[str, Any], previous: str | None,
              data: Mapping[str, Any] | None = None, kind: str | None = None) -> bytes:
        """The event for a row now in ``state``; a ``data`` value that looks like a secret is kept as its digest."""
        return ledger_event(self.spec, self.instance, self.clock(), state, subject, previous, data, kind)

    async def record(self, tx: Executor, row: Row, previous: str | None, data: Mapping[str, Any] | None = None,
                     *, state: str | None = None, kind: str | None = None) -> None:
        """Queue the event describing ``row`` (as the change left it) on ``tx``."""
        self.events += 1
        await enqueue(tx, self.event(state or self.spec.state_of(row), self.spec.subject(row), previous, data, kind),
                      now=self.clock())

    def returning(self) -> str:
        return " RETURNING " + ", ".join(self.spec.columns)

    async def state_of(self, tx: Executor, key_column: str, key: Any) -> str | None:
        """The row's state before a change whose compare-and-set allows several (row locked on PostgreSQL)."""
        lock = " FOR UPDATE" if tx.dialect == "postgres" else ""
        row = await tx.fetchone(f"SELECT {', '.join(self.spec.columns)} FROM {self.spec.table} "
                                f"WHERE {key_column} = ?{lock}", (key,))
        return None if row is None else self.spec.state_of(row)

    async def change(self, db: Database, sql: str, params: Params, *, previous: str | None = None,
                     key: tuple[str, Any] | None = None, data: Mapping[str, Any] | None = None,
                     deleted: bool = False, kind: str | None = None) -> Row | None:
        """Run one ``UPDATE``/``INSERT``/``DELETE`` (without RETURNING) and queue its event in one transaction;
        the changed row, or None (nothing changed, nothing queued). ``previous``: the state it left, or give
        ``key`` (column, value) to read it first."""

        async def body(tx: Executor) -> Row | None:
            before = previous
            if key is not None:
                before = await self.state_of(tx, *key)
            rows = await tx.fetchall(sql + self.returning(), params)
            if len(rows) != 1:
                return None
            if deleted:  # RETURNING of a DELETE shows the row as it was
                before = self.spec.state_of(rows[0])
            await self.record(tx, rows[0], before, data, state=DELETED if deleted else None, kind=kind)
            return rows[0]

        big = any(isinstance(p, str | bytes) and len(p) > INLINE_MAX_PARAM for p in params)
        return await in_transaction(db, body, inline=not big)


async def enable_audit(store: Any, component: str, instance: str | None = None) -> AuditTrail:
    """Create the audit tables in ``store``'s database and give the store a trail: from now on each of its
    changes queues an event in the same transaction. ``component``: ``seller``, ``facilitator`` (a
    ``SettlementStore``) or ``buyer`` (a ``SpendLedger``)."""
    from paywire.audit.store import COMPONENT
    from paywire.store.migrations import migrate

    await migrate(store.db, [COMPONENT])
    spec = {"seller": SELLER, "facilitator": FACILITATOR, "buyer": BUYER}[component]
    trail = AuditTrail(spec, instance or default_instance(component))
    if component == "seller" and isinstance(store.db, SqliteDatabase):
        from paywire.audit.triggers import seller_setup

        await store.db.add_connection_setup(seller_setup(trail.instance))
        trail.in_db = True
    store.audit = trail
    return trail


def seller_routes(seller: Any) -> list[dict[str, Any]]:
    """What a seller sells, as an audit event records it: each route's key, settle mode, protocols and (when they
    do not depend on the request) its x402 requirements."""
    static = getattr(seller, "_static", {})  # offers resolved when the seller was built
    out: list[dict[str, Any]] = []
    for i, route in enumerate(seller.routes):
        offers = static.get(i, ((), ()))[0]
        out.append({"route": route.key, "settle": route.settle, "mpp": list(route.mpp), "l402": bool(route.l402),
                    "sats": None if route.sats is None else str(route.sats),
                    "offers": [o.to_wire() for o in offers] if offers or i in static else "per request"})
    return out


async def record_config(db: Database, instance: str, kind: str, settings: Mapping[str, Any], *,
                        clock: Callable[[], float] = time.time) -> bytes:
    """Queue a configuration event (``config.seller_started`` with the routes and prices in force, …) on its
    own; its subject carries the digest of ``settings`` so a change stands out between two starts."""
    from paywire.mpp.jcs import canonicalize

    body = dict(settings)
    event = make_event("config", kind, instance=instance, time=clock(),
                       subject={"instance": instance, "settings_digest": digest(canonicalize(body))}, data=body)
    await enqueue(db, event, now=clock())
    return event


def policy_settings(policy: Any, account: str) -> dict[str, Any]:
    """A buyer's policy as an audit event records it (limits as decimal strings, allow-lists sorted)."""
    out: dict[str, Any] = {"account": account}
    for name in ("max_per_payment", "per_host", "per_payee", "daily", "total", "approval_threshold", "btc_usd"):
        value = getattr(policy, name, None)
        out[name] = None if value is None else str(value)
    for name in ("allowed_networks", "allowed_assets", "allowed_payees", "allowed_hosts"):
        value = getattr(policy, name, None)
        out[name] = None if value is None else sorted(str(v) for v in value)
    out["protocols"] = [str(p) for p in getattr(policy, "protocols", ())]
    out["dry_run"] = bool(getattr(policy, "dry_run", False))
    out["assets"] = sorted(f"{a.network}:{a.address}" for a in getattr(policy, "assets", ()))
    return out
