"""The seller ledger's audit events written by SQLite itself: TEMP triggers on the audited process's connections.

On the paid path an audited change costs one statement, as an unaudited one does: an ``AFTER INSERT`` /
``AFTER UPDATE`` trigger on ``seller_payments`` builds the event (the same canonical JSON as
:func:`paywire.audit.events.make_event`: keys sorted, compact, RFC 8785 string escapes, which SQLite's JSON writer
produces) and inserts it into ``audit_queue`` inside the statement's own transaction. No change without its event,
no event without its change; no extra transaction, no Python work per event.

The triggers are TEMP (per connection, see :meth:`paywire.store.db.SqliteDatabase.add_connection_setup`): they
carry this replica's instance id, and a process with auditing off, or a tool, writes without them. Removing a row
(a refused claim) keeps its event in Python, with the reason. PostgreSQL keeps the event a second statement of
the change's transaction (:class:`paywire.audit.wiring.AuditTrail`).
"""

from __future__ import annotations

import functools
import hashlib
import sqlite3
from collections.abc import Callable

from paywire.audit.events import SCHEMA_VERSION, SecretFieldError, check_no_secrets, digest
from paywire.audit.ledger import SELLER
from paywire.audit.store import QUEUE
from paywire.mpp.jcs import canonicalize

INSERT_TRIGGER = "paywire_audit_seller_insert"
UPDATE_TRIGGER = "paywire_audit_seller_update"
WATCHED = ("state", "error", "tx", "payer", "amount", "payment_id", "auth_key", "protocol", "scheme", "network",
           "asset", "pay_to", "route", "identity", "resp_status")
"""An UPDATE that changes one of these columns is an event (owner, lease and timestamps alone are not)."""


def _quote(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def _sha256_hex(value: str | bytes | None) -> str | None:
    if value is None:
        return None
    raw = value.encode() if isinstance(value, str) else bytes(value)
    return hashlib.sha256(raw).hexdigest()


_sha256_cached = functools.lru_cache(maxsize=4096)(_sha256_hex)
"""The ``auth_digest`` callback: a row's ``auth_key`` never changes, so of a payment's four events only the claim
hashes it; its three updates hit this cache (C code, no Python frame: ~2 µs less per event). Bounded; a pure
function of its argument, so a hit is byte-for-byte what hashing again would give."""


def _data(state: str, error: str) -> str:
    """``data`` of an event whose change set ``error`` (rare: failures), guarded for secrets as in Python."""
    body = {"error": error, "state": state}
    try:
        check_no_secrets(body)
    except SecretFieldError:
        body = {"error_digest": digest(error), "state": state}
    return canonicalize(body).decode()


def _kind_sql() -> str:
    cases = " ".join(f"WHEN {_quote(state)} THEN {_quote(kind)}" for state, kind in SELLER.kinds.items())
    return f"CASE NEW.state {cases} ELSE 'seller.' || NEW.state END"


def _event_sql(instance: str, *, update: bool) -> str:
    """The SQL expression of one event (keys in sorted order: the output is canonical)."""
    subject = ("json_object('amount', CAST(NEW.amount AS TEXT), 'asset', NEW.asset, "
               "'auth_digest', 'sha256:' || paywire_sha256(NEW.auth_key), 'identity', NEW.identity, "
               "'network', NEW.network, 'payee', NEW.pay_to, 'payer', NEW.payer, 'payment_id', NEW.payment_id, "
               "'protocol', coalesce(nullif(NEW.protocol, ''), 'x402'), 'record', NEW.id, 'route', NEW.route, "
               "'scheme', NEW.scheme, 'tx_hash', NEW.tx)")
    kind = _kind_sql()
    if update:
        error_set = "NEW.error IS NOT NULL AND NEW.error IS NOT OLD.error"
        kind = f"CASE WHEN {error_set} AND NEW.error LIKE 'abandoned%' THEN 'payment.abandoned' ELSE {kind} END"
        data = (f"CASE WHEN {error_set} THEN json(paywire_audit_data(NEW.state, NEW.error)) "
                "ELSE json_object('state', NEW.state) END")
        previous = "OLD.state"
    else:
        data = ("CASE WHEN NEW.error IS NOT NULL THEN json(paywire_audit_data(NEW.state, NEW.error)) "
                "ELSE json_object('state', NEW.state) END")
        previous = "NULL"
    return (f"json_object('component', 'seller', 'data', {data}, 'instance', {_quote(instance)}, 'kind', {kind}, "
            f"'previous', {previous}, 'subject', {subject}, "
            "'time', strftime('%Y-%m-%dT%H:%M:%fZ', NEW.updated_at, 'unixepoch'), "
            f"'v', {SCHEMA_VERSION})")


def seller_trigger_sql(instance: str) -> list[str]:
    """The statements that make a connection audit ``seller_payments`` inserts and updates as ``instance``."""
    watched = " OR ".join(f"NEW.{c} IS NOT OLD.{c}" for c in WATCHED)
    table = SELLER.table
    return [
        f"DROP TRIGGER IF EXISTS temp.{INSERT_TRIGGER}",
        f"DROP TRIGGER IF EXISTS temp.{UPDATE_TRIGGER}",
        f"CREATE TEMP TRIGGER {INSERT_TRIGGER} AFTER INSERT ON main.{table} BEGIN "
        f"INSERT INTO {QUEUE} (entry, created_at) VALUES ({_event_sql(instance, update=False)}, NEW.updated_at); "
        "END",
        f"CREATE TEMP TRIGGER {UPDATE_TRIGGER} AFTER UPDATE ON main.{table} WHEN {watched} BEGIN "
        f"INSERT INTO {QUEUE} (entry, created_at) VALUES ({_event_sql(instance, update=True)}, NEW.updated_at); "
        "END",
    ]


def seller_setup(instance: str) -> Callable[[sqlite3.Connection], None]:
    """A connection setup (functions + TEMP triggers) that audits the seller ledger as ``instance``."""
    statements = seller_trigger_sql(instance)

    def setup(conn: sqlite3.Connection) -> None:
        conn.create_function("paywire_sha256", 1, _sha256_cached, deterministic=True)
        conn.create_function("paywire_audit_data", 2, _data, deterministic=True)
        for sql in statements:
            conn.execute(sql)

    return setup
