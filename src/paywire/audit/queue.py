"""Reading the audit queue: each queued row as its event's canonical bytes.

A row holds either the event itself (``entry``: what :func:`paywire.audit.store.enqueue` writes) or, for a seller
ledger change on SQLite, the ledger row's columns as that change left them (:data:`paywire.audit.store.ROW_COLUMNS`,
copied by the trigger of :mod:`paywire.audit.triggers` inside the change's own statement). The second kind is
turned into the event here, when the sequencer integrates it: the same bytes the Python writer
(:class:`paywire.audit.wiring.AuditTrail`) makes, from values fixed when the change committed (never a later state
of the ledger row, which may have moved on or been deleted since).
"""

from __future__ import annotations

import functools
import hashlib
import json
from collections.abc import Mapping
from typing import Any

from paywire.audit.events import SCHEMA_VERSION, digest, secret_value, utc_time
from paywire.audit.ledger import SELLER, ledger_event
from paywire.audit.store import QUEUE, ROW_COLUMNS
from paywire.mpp.jcs import MAX_EXACT_INT
from paywire.store.db import Executor
from paywire.x402._json import SURROGATE_RE

SELECT = f"SELECT id, entry, created_at, {', '.join(ROW_COLUMNS)} FROM {QUEUE}"
"""The queue's rows with what :func:`entry_of` needs (append ``ORDER BY id`` and a limit)."""


@functools.lru_cache(maxsize=4096)
def _auth_digest(auth_key: str) -> str:
    """A row's ``auth_key`` never changes: of a payment's events only the first hashes it."""
    return "sha256:" + hashlib.sha256(auth_key.encode()).hexdigest()


_secret = functools.lru_cache(maxsize=8192)(secret_value)
"""Most subject values (payer, asset, network, route, a payment's ids) recur in every event: check each once."""
_encode = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False).encode


def _plain(values: Mapping[str, Any]) -> bool:
    """Strings that are no secrets, None and exact integers: sorted compact JSON of them is RFC 8785."""
    for v in values.values():
        kind = type(v)
        if kind is str:
            if _secret(v):
                return False
        elif kind is int:
            if abs(v) > MAX_EXACT_INT:
                return False
        elif v is not None:
            return False
    return True


def seller_event(row: Mapping[str, Any]) -> bytes:
    """The event of a queued seller row (``previous`` NULL: the claim's insert; ``error``: set by this change):
    byte for byte what :class:`paywire.audit.wiring.AuditTrail` makes of the same change."""
    state, previous, error = str(row["state"]), row["previous"], row["error"]
    instance, time = str(row["instance"]), float(row["created_at"])
    subject = {"amount": str(row["amount"]), "asset": row["asset"], "auth_digest": _auth_digest(str(row["auth_key"])),
               "identity": row["identity"], "network": row["network"], "payee": row["pay_to"], "payer": row["payer"],
               "payment_id": row["payment_id"], "protocol": row["protocol"] or "x402", "record": int(row["record"]),
               "route": row["route"], "scheme": row["scheme"], "tx_hash": row["tx"]}  # keys in sorted order
    kind = ("payment.abandoned" if previous is not None and error is not None and str(error).startswith("abandoned")
            else SELLER.kind(state, previous))
    data = {"state": state} if error is None else {"error": error, "state": state}
    head = {"instance": instance, "kind": kind, "previous": previous, "state": state}
    if _plain(subject) and _plain(head) and type(error) in (str, type(None)):
        if error is not None and secret_value(error):
            data = {"error_digest": digest(error), "state": state}
        event = {"component": SELLER.component, "data": data, "instance": instance, "kind": kind, "previous": previous,
                 "subject": subject, "time": utc_time(time), "v": SCHEMA_VERSION}  # keys in sorted order
        text = _encode(event)
        if not SURROGATE_RE.search(text):
            return text.encode()
    # the general writer (RFC 8785 encoder, secret checks); a secret-looking subject value (the ledger validates
    # them, so never expected) is logged as its digest rather than stopping the sequencer at this row
    safe = {k: digest(v) if isinstance(v, str) and secret_value(v) else v for k, v in subject.items()}
    return ledger_event(SELLER, instance, time, state, safe, previous, None if error is None else {"error": error},
                        kind)


def entry_of(row: Mapping[str, Any]) -> bytes:
    """The canonical event bytes of one queued row (a row of :data:`SELECT`)."""
    entry = row["entry"]
    return str(entry).encode() if entry is not None else seller_event(row)


async def queued_events(ex: Executor) -> list[bytes]:
    """Every queued event, in queue order (not yet in the log)."""
    return [entry_of(r) for r in await ex.fetchall(SELECT + " ORDER BY id")]
