"""Variable prices (``upto``): the handler says what a request actually cost, at most what the payer authorized.

In a paid handler call ``bill(request, amount)`` (``request``: Starlette/FastAPI/Flask request, ASGI scope, WSGI
environ or the ``PaymentInfo``). ``amount``: an ``int`` of atomic units, ``"$0.002"`` (dollars of a USD token),
or ``"40%"`` of the maximum. Without a call, the response header ``Settlement-Overrides: {"amount": ...}`` (the
official x402 SDKs' way; removed before the response leaves) is read; without either, the maximum is charged.
``0`` charges nothing and sends no transaction.

Streamed responses (SSE / chunked) bill per unit: ``bill_unit(request, amount)`` before sending each unit adds
to the running charge; once the next unit would pass the maximum it raises ``MaximumReached`` (a
``ChargeExceedsMaximum``), which ends the stream cleanly — the payer is charged exactly the units billed. Pure.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any, Final

SETTLEMENT_OVERRIDES: Final = "settlement-overrides"
_PERCENT = re.compile(r"(\d+(?:\.\d{1,2})?)%")
_DOLLARS = re.compile(r"\$(\d+(?:\.\d+)?)")


class ChargeExceedsMaximum(ValueError):
    """A handler asked to charge more than the payer authorized: nothing is charged."""


class MaximumReached(ChargeExceedsMaximum):
    """``bill_unit``: the next unit would pass the authorized maximum. Raised out of a streaming handler, it
    ends the stream cleanly and the units billed before it are charged."""


@dataclass(slots=True)
class Meter:
    """The charge of one variable-price payment (``maximum``: what the payer signed, atomic units)."""

    maximum: int
    decimals: int
    charged: int | None = None

    def charge(self, amount: int | str) -> int:
        """Set the charge; returns it in atomic units. Raises ``ChargeExceedsMaximum`` or ``ValueError``."""
        atomic = to_atomic(amount, self.maximum, self.decimals)
        if atomic > self.maximum:
            raise ChargeExceedsMaximum(f"charge {atomic} exceeds the authorized maximum {self.maximum}")
        self.charged = atomic
        return atomic

    def add(self, amount: int | str) -> int:
        """Add one unit's price to the running charge; returns the new total. Raises ``MaximumReached`` (the
        total unchanged) when it would pass the maximum."""
        atomic = to_atomic(amount, self.maximum, self.decimals)
        total = (self.charged or 0) + atomic
        if total > self.maximum:
            raise MaximumReached(f"charge {total} would exceed the authorized maximum {self.maximum}")
        self.charged = total
        return total

    @property
    def remaining(self) -> int:
        """What can still be billed (atomic units)."""
        return self.maximum - (self.charged or 0)


def to_atomic(amount: int | str, maximum: int, decimals: int) -> int:
    """``int`` atomic units, ``"123"``, ``"$0.01"`` or ``"50%"`` (of ``maximum``, rounded down) → atomic units."""
    if isinstance(amount, bool):
        raise ValueError("a charge is an amount, not a bool")
    if isinstance(amount, int):
        value = amount
    else:
        text = str(amount).strip()
        pct, dollars = _PERCENT.fullmatch(text), _DOLLARS.fullmatch(text)
        try:
            if pct is not None:
                value = int(maximum * Decimal(pct.group(1)) / 100)
            elif dollars is not None:
                value = int(Decimal(dollars.group(1)).scaleb(decimals))
            elif text.isdigit():
                value = int(text)
            else:
                raise ValueError
        except (InvalidOperation, ValueError):
            raise ValueError(f"not a charge: {amount!r} (atomic units, '$0.01' or '50%')") from None
    if value < 0:
        raise ValueError("a charge cannot be negative")
    return value


def meter_of(request: Any) -> Meter:
    """The meter of the paid request ``request`` stands for (see the module docs)."""
    info = request
    for attr in ("scope", "environ"):
        inner = getattr(request, attr, None)
        if isinstance(inner, dict):
            request = inner
    if isinstance(request, dict):
        info = request.get("paywire.payment")
    meter = getattr(info, "meter", None)
    if not isinstance(meter, Meter):
        raise LookupError("this request carries no variable-price (upto) payment to charge")
    return meter


def bill(request: Any, amount: int | str) -> int:
    """Bill the paid ``request`` what it cost, ``amount`` (at most the authorized maximum); returns atomic units.
    (Not ``paywire.server.fastapi.charge``, which prices a FastAPI route.)"""
    return meter_of(request).charge(amount)


def bill_unit(request: Any, amount: int | str) -> int:
    """Add ``amount`` (one streamed unit's price) to the paid ``request``'s running charge; returns the total.
    Raises ``MaximumReached`` once that would pass the authorized maximum (ends a stream cleanly)."""
    return meter_of(request).add(amount)


def override_of(headers: Any) -> str | None:
    """The ``amount`` of a ``Settlement-Overrides`` response header, or None."""
    for name, value in headers:
        if name.lower() == SETTLEMENT_OVERRIDES:
            try:
                found = json.loads(value).get("amount")
            except (ValueError, AttributeError):
                return None
            return None if found is None else str(found)
    return None


__all__ = ["SETTLEMENT_OVERRIDES", "ChargeExceedsMaximum", "MaximumReached", "Meter", "bill", "bill_unit", "meter_of", "override_of", "to_atomic"]
