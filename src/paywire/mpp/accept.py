"""``Accept-Payment`` client preferences: parse, then filter and order a server's challenges (digest §11.1)."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

HEADER: Final = "Accept-Payment"
_RANGE_RE: Final = re.compile(
    r"\s*(\*|[a-z][a-z0-9:_-]*)/(\*|[A-Za-z0-9-]+)\s*(?:;\s*q\s*=\s*(0(?:\.\d{0,3})?|1(?:\.0{0,3})?))?\s*"
)


@dataclass(frozen=True, slots=True)
class PaymentRange:
    method: str  # or "*"
    intent: str  # or "*"
    q: float = 1.0

    def matches(self, method: str, intent: str) -> bool:
        return self.method in ("*", method) and self.intent in ("*", intent)

    @property
    def specificity(self) -> int:
        return (2 if self.method != "*" else 0) + (1 if self.intent != "*" else 0)


def parse_accept_payment(value: str | None) -> list[PaymentRange] | None:
    """The ranges in order, or None when the header is absent, empty or malformed (then: accept all)."""
    if value is None or not value.strip():
        return None
    out: list[PaymentRange] = []
    for part in value.split(","):
        if not part.strip():
            continue
        m = _RANGE_RE.fullmatch(part)
        if m is None:
            return None
        out.append(PaymentRange(m.group(1), m.group(2), float(m.group(3)) if m.group(3) else 1.0))
    return out or None


def preference(ranges: Sequence[PaymentRange], method: str, intent: str) -> float | None:
    """The q of the most specific matching range; None when no range matches."""
    best: PaymentRange | None = None
    for r in ranges:
        if r.matches(method, intent) and (best is None or r.specificity > best.specificity):
            best = r
    return best.q if best is not None else None


def rank_offers(offers: Sequence[tuple[str, str]], accept_payment: str | None) -> list[int]:
    """Indices of ``(method, intent)`` offers to send, best first.

    Without a (valid) header every offer goes out in server order. Otherwise offers with q > 0 are kept and
    sorted by descending q, server order breaking ties. An offer the client refused (a matching range with
    ``q=0``) is never sent; when no offer has q > 0, the ones the header does not mention go out in server
    order (the client may still take them), so refusing everything yields no offer at all.
    """
    ranges = parse_accept_payment(accept_payment)
    everything = list(range(len(offers)))
    if ranges is None:
        return everything
    scored = [(preference(ranges, m, i), idx) for idx, (m, i) in enumerate(offers)]
    kept = [(q, idx) for q, idx in scored if q is not None and q > 0]
    if not kept:
        return [idx for q, idx in scored if q is None]
    kept.sort(key=lambda t: (-t[0], t[1]))
    return [idx for _, idx in kept]
