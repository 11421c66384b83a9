"""Receipts that point into the audit log (sans-I/O).

A paid response cannot carry its sequence number: the event is sequenced after the response, in a batch. It carries
an *audit reference* instead, under ``audit`` in the x402 ``PAYMENT-RESPONSE`` ``extensions`` and in the MPP
``Payment-Receipt``: the seller's log instance, its ledger row and the id its events name (the transaction hash,
else the payment id). The payer keeps it with its receipt; later it asks the log for the proofs of the entries
naming that id (``GET /audit/proofs?subject=…``, ``paywire audit verify-proof --log URL --subject ID``) and checks
them offline against the log's key: each proof gives the sequence number and the checkpoint that includes it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

KEY = "audit"
"""The extension / receipt field name."""


def reference(instance: str, record: int, tx: str | None, payment_id: str | None) -> dict[str, Any]:
    """The reference a seller's paid response carries (``subject``: the id its events name, to ask proofs of)."""
    ref: dict[str, Any] = {"instance": instance, "record": record}
    subject = tx or payment_id
    if subject:
        ref["subject"] = subject
    return ref


def reference_of(container: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """The audit reference inside a parsed ``PAYMENT-RESPONSE`` ``extensions`` or an MPP receipt, if well formed."""
    if not isinstance(container, Mapping):
        return None
    ref = container.get(KEY)
    if not isinstance(ref, Mapping):
        return None
    instance, record, subject = ref.get("instance"), ref.get("record"), ref.get("subject")
    if not isinstance(instance, str) or not isinstance(record, int) or isinstance(record, bool):
        return None
    if subject is not None and not isinstance(subject, str):
        return None
    out: dict[str, Any] = {"instance": instance[:200], "record": record}
    if subject:
        out["subject"] = subject[:200]
    return out
