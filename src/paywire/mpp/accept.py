"""``Accept-Payment`` client preferences: parse, then filter and order a server's challenges (digest §11.1)."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

HEADER: Final = "Accept-Payment"
_RANGE_RE: Final = re.compile(
    r"\s*(\*|[a-z][a-z0-9:_-]*)/(\*|[A-Za-z0-9-]+)\s*(?:;\s*[qQ]\s*=\s*(0(?:\.\d{0,3})?|1(?:\.0{0,3})?))?\s*"
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

    Without a (valid) header every offer goes out in server order. With one, only the offers its most specific
    matching range gives q > 0 go out, by descending q, server order breaking ties: an offer the header does not
    list (no range matches it) is dropped like one it refuses (``q=0``), so a header that lists none of ours
    leaves no offer at all (the draft's SHOULD; its MAY to ignore such a header is not taken: the client said
    what it can pay).
    """
    ranges = parse_accept_payment(accept_payment)
    if ranges is None:
        return list(range(len(offers)))
    scored = [(preference(ranges, m, i), idx) for idx, (m, i) in enumerate(offers)]
    kept = [(q, idx) for q, idx in scored if q is not None and q > 0]
    kept.sort(key=lambda t: (-t[0], t[1]))
    return [idx for _, idx in kept]
