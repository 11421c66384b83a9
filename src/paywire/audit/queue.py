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
from collections.abc import Mapping
from typing import Any

from paywire.audit.ledger import SELLER, ledger_event
from paywire.audit.store import QUEUE, ROW_COLUMNS
from paywire.store.db import Executor

SELECT = f"SELECT id, entry, created_at, {', '.join(ROW_COLUMNS)} FROM {QUEUE}"
"""The queue's rows with what :func:`entry_of` needs (append ``ORDER BY id`` and a limit)."""


@functools.lru_cache(maxsize=4096)
def _auth_digest(auth_key: str) -> str:
    """A row's ``auth_key`` never changes: of a payment's events only the first hashes it."""
    return "sha256:" + hashlib.sha256(auth_key.encode()).hexdigest()


def seller_event(row: Mapping[str, Any]) -> bytes:
    """The event of a queued seller row (``previous`` NULL: the claim's insert; ``error``: set by this change)."""
    state, previous, error = str(row["state"]), row["previous"], row["error"]
    subject = {"record": int(row["record"]), "payment_id": row["payment_id"],
               "auth_digest": _auth_digest(str(row["auth_key"])), "protocol": row["protocol"] or "x402",
               "scheme": row["scheme"], "network": row["network"], "asset": row["asset"], "payee": row["pay_to"],
               "amount": str(row["amount"]), "payer": row["payer"], "route": row["route"], "tx_hash": row["tx"],
               "identity": row["identity"]}
    kind = "payment.abandoned" if previous is not None and error is not None and str(error).startswith(
        "abandoned") else None
    return ledger_event(SELLER, str(row["instance"]), float(row["created_at"]), state, subject, previous,
                        {"error": error} if error is not None else None, kind)


def entry_of(row: Mapping[str, Any]) -> bytes:
    """The canonical event bytes of one queued row (a row of :data:`SELECT`)."""
    entry = row["entry"]
    return str(entry).encode() if entry is not None else seller_event(row)


async def queued_events(ex: Executor) -> list[bytes]:
    """Every queued event, in queue order (not yet in the log)."""
    return [entry_of(r) for r in await ex.fetchall(SELECT + " ORDER BY id")]
