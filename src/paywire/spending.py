"""The buyer's spending vocabulary, pure (no I/O): what a payment would cost (:class:`Quote`), what already
counts against the budgets (:class:`Spent`), why a payment will not be made (:class:`Refusal`), the budget rules
(:func:`check_budget`) and one ledger entry (:class:`Receipt`).

The buyer's decisions (``paywire.client``) and its ledger (``paywire.store.spend``) both build on this module,
so neither imports the other. Amounts are micro-dollars (integers).
"""

from __future__ import annotations

import dataclasses
from contextvars import ContextVar
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, Final, Protocol

MICROS: Final = 1_000_000
"""Micro-dollars per dollar: the unit budgets are counted in."""

# Budget rule names, as they appear in refusals, receipts and the CLI (the other rules: paywire.client.policy).
PER_HOST: Final = "per_host"
PER_PAYEE: Final = "per_payee"
DAILY: Final = "daily"
TOTAL: Final = "total"

BUDGETED: ContextVar[int | None] = ContextVar("paywire_budgeted", default=None)
"""Atomic units the buyer's policy reserved for the payment being signed, for schemes whose cost is not the
offer's price (a ``batch-settlement`` deposit; see ``ClientScheme.budget_amount``). The buyer engine sets it
around signing; None outside a buyer."""


def fmt_usd(micros: int) -> str:
    """``100000`` → ``"$0.10"``; keeps up to six decimals when needed."""
    d = Decimal(micros) / MICROS
    text = f"{d:.6f}".rstrip("0")
    if len(text.split(".")[1]) < 2:
        text = f"{d:.2f}"
    return "$" + text


@dataclass(frozen=True, slots=True)
class Quote:
    """One way a 402 could be paid, as the policy sees it."""

    host: str
    payee: str
    network: str
    asset: str
    amount: int
    usd_micros: int | None
    """Dollar value in micro-dollars, or None when the asset cannot be valued."""


@dataclass(frozen=True, slots=True)
class Spent:
    """What already counts against the budgets (reserved, committed or held), in micro-dollars."""

    host: int = 0
    payee: int = 0
    day: int = 0
    total: int = 0


@dataclass(frozen=True, slots=True)
class Refusal:
    """Why a payment will not be made: the rule that refused and a sentence for humans."""

    rule: str
    reason: str

    def __str__(self) -> str:
        return f"{self.rule}: {self.reason}"


class Limits(Protocol):
    """What the budget rules read from a policy (``paywire.client.Policy`` is one)."""

    def limit(self, name: str) -> int | None: ...


def check_budget(policy: Limits, q: Quote, spent: Spent) -> Refusal | None:
    """Budget rules, given what already counts against them."""
    price = q.usd_micros or 0
    for rule, used, scope in (
        (PER_HOST, spent.host, f"host {q.host}"),
        (PER_PAYEE, spent.payee, f"payee {q.payee}"),
        (DAILY, spent.day, "today (UTC)"),
        (TOTAL, spent.total, "in total"),
    ):
        cap = policy.limit(rule)
        if cap is not None and used + price > cap:
            return Refusal(rule, f"paying {fmt_usd(price)} would bring spend for {scope} to "
                                 f"{fmt_usd(used + price)}, above the {rule} budget of {fmt_usd(cap)} "
                                 f"({fmt_usd(used)} already spent)")
    return None


@dataclass(frozen=True, slots=True)
class Receipt:
    """One ledger entry: a payment, or an attempt that was refused, declined, dry-run or failed.

    ``outcome``: ``paid`` | ``unknown`` | ``rejected`` | ``failed`` | ``refused`` | ``declined`` | ``dry_run``
    | ``pending``. ``budget``: ``none`` | ``reserved`` | ``committed`` | ``held`` | ``released``.
    """

    url: str
    outcome: str
    method: str = "GET"
    host: str = ""
    id: int | None = None
    created_at: float = 0.0
    updated_at: float = 0.0
    x402_version: int | None = None
    scheme: str | None = None
    network: str | None = None
    asset: str | None = None
    pay_to: str | None = None
    amount: int | None = None
    usd_micros: int = 0
    payload_hash: str | None = None
    payment_id: str | None = None
    nonce: str | None = None
    valid_before: int | None = None
    tx: str | None = None
    status_code: int | None = None
    budget: str = "none"
    rule: str | None = None
    reason: str | None = None
    challenge: str | None = None
    chosen: str | None = None
    protocol: str | None = None
    """``x402`` | ``mpp`` | ``l402`` (None on rows older than MPP/L402 support: x402)."""
    identity: str | None = None
    """The DID this buyer proved to the seller (Sign-In-With-X ``did:pkh``, agent signature ``did:key``)."""
    proofs: str | None = None
    """The seller's signed offer and receipt (x402 ``offer-receipt``) as JSON: ``{"signer", "offer", "receipt"}``."""
    audit: str | None = None
    """The seller's audit reference (JSON: its log instance, ledger row and the id its events name), when its paid
    response carried one: what to ask the seller's log for an inclusion proof with (docs/audit.md)."""
    charged: int | None = None
    """What the seller's receipt (``PAYMENT-RESPONSE``, or a stream's last ``payment-response`` event) says it
    charged, atomic units; ``amount`` is what was authorized (an ``upto`` maximum, a channel voucher's price)."""

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (amount as a decimal string)."""
        d = dataclasses.asdict(self)
        for k in ("amount", "charged"):
            if d[k] is not None:
                d[k] = str(d[k])
        return d
