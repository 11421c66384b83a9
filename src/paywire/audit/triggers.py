"""The seller ledger's audit events queued by SQLite itself: TEMP triggers on the audited process's connections.

On the paid path an audited change costs one statement, as an unaudited one does: an ``AFTER INSERT`` /
``AFTER UPDATE`` trigger on ``seller_payments`` copies the row's columns as the change left them (plus the state it
left and the error it set) into ``audit_queue`` inside the statement's own transaction. No change without its
event, no event without its change; no extra transaction, no Python work and no JSON per event on the paid path:
the sequencer writes each event's canonical JSON when it integrates the row (:mod:`paywire.audit.queue`), from
these copied values only.

The triggers are TEMP (per connection, see :meth:`paywire.store.db.SqliteDatabase.add_connection_setup`): they
carry this replica's instance id, and a process with auditing off, or a tool, writes without them. Removing a row
(a refused claim) keeps its event in Python, with the reason. PostgreSQL keeps the event a second statement of
the change's transaction (:class:`paywire.audit.wiring.AuditTrail`).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable

from paywire.audit.ledger import SELLER
from paywire.audit.store import QUEUE, ROW_COLUMNS

INSERT_TRIGGER = "paywire_audit_seller_insert"
UPDATE_TRIGGER = "paywire_audit_seller_update"
WATCHED = ("state", "error", "tx", "payer", "amount", "payment_id", "auth_key", "protocol", "scheme", "network",
           "asset", "pay_to", "route", "identity", "resp_status")
"""An UPDATE that changes one of these columns is an event (owner, lease and timestamps alone are not)."""


def _quote(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def _values_sql(instance: str, *, update: bool) -> str:
    """The queued values (:data:`ROW_COLUMNS` order): ``error`` only when this change set it."""
    special = {"instance": _quote(instance), "record": "NEW.id", "previous": "OLD.state" if update else "NULL",
               "error": "CASE WHEN NEW.error IS NOT OLD.error THEN NEW.error END" if update else "NEW.error"}
    return ", ".join(special.get(c, f"NEW.{c}") for c in ROW_COLUMNS)


def seller_trigger_sql(instance: str) -> list[str]:
    """The statements that make a connection audit ``seller_payments`` inserts and updates as ``instance``."""
    watched = " OR ".join(f"NEW.{c} IS NOT OLD.{c}" for c in WATCHED)
    table = SELLER.table
    columns = ", ".join(("created_at", *ROW_COLUMNS))
    return [
        f"DROP TRIGGER IF EXISTS temp.{INSERT_TRIGGER}",
        f"DROP TRIGGER IF EXISTS temp.{UPDATE_TRIGGER}",
        f"CREATE TEMP TRIGGER {INSERT_TRIGGER} AFTER INSERT ON main.{table} BEGIN "
        f"INSERT INTO {QUEUE} ({columns}) VALUES (NEW.updated_at, {_values_sql(instance, update=False)}); END",
        f"CREATE TEMP TRIGGER {UPDATE_TRIGGER} AFTER UPDATE ON main.{table} WHEN {watched} BEGIN "
        f"INSERT INTO {QUEUE} ({columns}) VALUES (NEW.updated_at, {_values_sql(instance, update=True)}); END",
    ]


def seller_setup(instance: str) -> Callable[[sqlite3.Connection], None]:
    """A connection setup (TEMP triggers) that audits the seller ledger as ``instance``."""
    statements = seller_trigger_sql(instance)

    def setup(conn: sqlite3.Connection) -> None:
        for sql in statements:
            conn.execute(sql)

    return setup
