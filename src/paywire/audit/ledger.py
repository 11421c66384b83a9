"""What each ledger's audit events say about its rows, and the check that every row agrees with its latest event
(sans-I/O).

Each ledger row is described by a *subject* (the ids, parties and amount a reader searches by) and a *state*. The
writers (:mod:`paywire.audit.wiring`) put both into every event they queue with the change, in the same
transaction; ``paywire audit verify`` recomputes them from the current rows and compares them with the latest
event naming each row. A row edited without its event, a row deleted without its event, and a row no event
mentions are all named, with the sequence number of the event that no longer matches.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from paywire.audit.events import SecretFieldError, digest, make_event

DELETED = "deleted"
"""The state an event records when its change removed the row (a refused claim forgotten)."""


def _s(value: Any) -> str | None:
    return None if value is None else str(value)


def _state_column(row: Mapping[str, Any]) -> str:
    return str(row["state"])


@dataclass(frozen=True, slots=True)
class LedgerSpec:
    """One ledger table as the audit log sees it."""

    component: str
    table: str
    key: str  # the subject field that names a row
    columns: tuple[str, ...]  # what ``subject`` and ``kind`` read from a row
    subject: Callable[[Mapping[str, Any]], dict[str, Any]]
    kinds: Mapping[str, str]  # row state → event kind
    state_of: Callable[[Mapping[str, Any]], str] = _state_column
    """A row's state (the buyer ledger's is ``budget:outcome``)."""
    kind_of: Callable[[str], str] | None = None  # instead of ``kinds``
    inserted: Mapping[str, str] = field(default_factory=dict)
    """Row state → event kind for a row's insert (no ``previous`` state), where it differs from ``kinds``."""

    def kind(self, state: str, previous: str | None = "") -> str:
        """The kind of a change that left a row in ``state``; ``previous`` None: the row was inserted."""
        if previous is None and state in self.inserted:
            return self.inserted[state]
        if self.kind_of is not None:
            return self.kind_of(state)
        return self.kinds.get(state, f"{self.component}.{state}")

    def row_key(self, row: Mapping[str, Any]) -> str:
        return str(self.subject(row)[self.key])


def _seller_subject(row: Mapping[str, Any]) -> dict[str, Any]:
    return {"record": int(row["id"]), "payment_id": row.get("payment_id"), "auth_digest": digest(str(row["auth_key"])),
            "protocol": row.get("protocol") or "x402", "scheme": row["scheme"], "network": row["network"],
            "asset": row["asset"], "payee": row["pay_to"], "amount": str(row["amount"]), "payer": row.get("payer"),
            "route": row["route"], "tx_hash": row.get("tx"), "identity": row.get("identity")}


SELLER = LedgerSpec(
    "seller", "seller_payments", "record",
    ("id", "payment_id", "auth_key", "protocol", "scheme", "network", "asset", "pay_to", "amount", "payer", "route",
     "tx", "identity", "state"),
    _seller_subject,
    {"verifying": "payment.claimed", "claimed": "payment.verified", "settling": "payment.settling",
     "settled": "payment.settled", "served": "payment.served", "failed": "payment.failed",
     "unresolved": "payment.unresolved", DELETED: "payment.refused"},
    # the seller flow inserts a payment once /verify passed, as claimed (settle="after") or settling ("before"):
    # that insert is the payment's claim (a row claimed before verification is ``verifying`` first)
    inserted={"claimed": "payment.claimed", "settling": "payment.claimed"})



def _facilitator_subject(row: Mapping[str, Any]) -> dict[str, Any]:
    return {"settlement_id": str(row["id"]), "network": row["network"], "asset": row["asset"], "payer": row["payer"],
            "payee": row["pay_to"], "amount": str(row["amount"]), "nonce": row["nonce"],
            "tx_hash": _s(row.get("tx_hash")), **_identity(row)}


def _identity(row: Mapping[str, Any]) -> dict[str, Any]:
    """The payer's DID when the row names one (rows from before identity keep their subject unchanged)."""
    did = row.get("identity")
    return {"identity": did} if did else {}


FACILITATOR = LedgerSpec(
    "facilitator", "paywire_settlements", "settlement_id",
    ("id", "network", "asset", "payer", "pay_to", "amount", "nonce", "tx_hash", "identity", "state"),
    _facilitator_subject,
    {"verified": "settlement.claimed", "submitted": "settlement.tx_recorded", "settled": "settlement.settled",
     "failed": "settlement.failed", "unresolved": "settlement.unresolved", DELETED: "settlement.released"})

def _buyer_subject(row: Mapping[str, Any]) -> dict[str, Any]:
    return {"record": int(row["id"]), "account": row["account"], "host": row["host"], "url": row["url"],
            "protocol": row.get("protocol") or "x402", "network": row.get("network"), "asset": row.get("asset"),
            "payee": row.get("pay_to"), "amount": _s(row.get("amount")), "usd_micros": str(row.get("usd_micros") or 0),
            "payment_id": row.get("payment_id"), "payload_hash": row.get("payload_hash"), "tx_hash": row.get("tx"),
            "status_code": row.get("status_code"), **_identity(row)}


def _buyer_state(row: Mapping[str, Any]) -> str:
    return f"{row['budget']}:{row['outcome']}"


def _buyer_kind(state: str) -> str:
    """``budget:outcome`` → kind: the budget step, or the policy's decision for rows that never count."""
    budget, _, outcome = state.partition(":")
    if budget == "none":
        return "policy.refused" if outcome in ("refused", "declined") else f"buyer.{outcome}"
    if budget == "reserved":
        return "payment.signed" if outcome == "signed" else "budget.reserved"
    return f"budget.{budget}"


BUYER = LedgerSpec(
    "buyer", "buyer_payments", "record",
    ("id", "account", "host", "url", "protocol", "network", "asset", "pay_to", "amount", "usd_micros", "payment_id",
     "payload_hash", "tx", "status_code", "identity", "budget", "outcome"),
    _buyer_subject, {}, _buyer_state, _buyer_kind)

LEDGERS = (SELLER, FACILITATOR, BUYER)


def _fingerprint(subject: Mapping[str, Any], state: str) -> bytes:
    return hashlib.sha256(json.dumps([subject, state], sort_keys=True, separators=(",", ":")).encode()).digest()[:16]


@dataclass(frozen=True, slots=True)
class Mismatch:
    """A ledger row and its latest event disagree: ``seq`` is that event's (``None``: no event names the row)."""

    component: str
    key: str
    seq: int | None
    why: str


class LedgerCheck:
    """Feed every event (in log order, then the queued ones) with :meth:`add`, then every current row of each
    ledger with :meth:`row`, then :meth:`finish`. Keeps one fingerprint per row, not the events."""

    def __init__(self, specs: tuple[LedgerSpec, ...] = LEDGERS) -> None:
        self.specs = {s.component: s for s in specs}
        self._last: dict[tuple[str, str], tuple[int | None, bytes]] = {}
        self._seen: set[str] = set()
        self.mismatches: list[Mismatch] = []

    def add(self, seq: int | None, event: Mapping[str, Any]) -> None:
        """One event (``seq`` None for a queued one); events of other components are ignored."""
        spec = self.specs.get(str(event.get("component")))
        subject, data = event.get("subject"), event.get("data")
        if spec is None or not isinstance(subject, dict) or not isinstance(data, dict) or spec.key not in subject:
            return
        state = data.get("state")
        if not isinstance(state, str):
            return
        self._seen.add(spec.component)
        self._last[(spec.component, str(subject[spec.key]))] = (seq, b"" if state == DELETED
                                                                else _fingerprint(subject, state))

    def components(self) -> set[str]:
        """Components with at least one event so far (only their ledgers are checked)."""
        return {c for c, _ in self._last} | self._seen

    def row(self, component: str, row: Mapping[str, Any]) -> None:
        spec = self.specs[component]
        subject = spec.subject(row)
        key = str(subject[spec.key])
        last = self._last.pop((component, key), None)
        if last is None:
            self.mismatches.append(Mismatch(component, key, None, f"{spec.table} row {key} has no audit event: "
                                                                  "changed or inserted without its event"))
        elif not last[1]:
            self.mismatches.append(Mismatch(component, key, last[0], f"{spec.table} row {key} exists but its latest "
                                                                     "audit event removed it"))
        elif last[1] != _fingerprint(subject, spec.state_of(row)):
            self.mismatches.append(Mismatch(
                component, key, last[0], f"{spec.table} row {key} differs from its latest audit event: the row was "
                                         "edited without its event (or the event was)"))

    def finish(self) -> list[Mismatch]:
        """Rows the log says exist but the ledger lacks, then every mismatch, logged ones first by seq."""
        for (component, key), (seq, fingerprint) in self._last.items():
            if not fingerprint:  # removed, as its event says
                continue
            self.mismatches.append(Mismatch(component, key, seq, f"{self.specs[component].table} row {key} is "
                                                                 "missing: deleted without its event"))
        self._last.clear()
        return sorted(self.mismatches, key=lambda m: (m.seq is None, m.seq or 0))


def ledger_event(spec: LedgerSpec, instance: str, time: float, state: str, subject: Mapping[str, Any],
                 previous: str | None, data: Mapping[str, Any] | None = None, kind: str | None = None) -> bytes:
    """The event for a row of ``spec`` now in ``state``; a ``data`` value that looks like a secret is kept as its
    digest (``<name>_digest``)."""
    body = {"state": state, **(data or {})}
    try:
        return make_event(spec.component, kind or spec.kind(state, previous), instance=instance, time=time, subject=subject,
                          previous=previous, data=body)
    except SecretFieldError:
        safe = {k if k == "state" else f"{k}_digest": v if k == "state" else digest(str(v)) for k, v in body.items()}
        return make_event(spec.component, kind or spec.kind(state, previous), instance=instance, time=time, subject=subject,
                          previous=previous, data=safe)
