"""Where the sliding-window counters live: the :class:`RiskState` protocol and the in-process backend.

A backend carries out a :class:`~paywire.risk.features.Plan` atomically: set the first-seen time if unset,
bump each counter's current bucket, drop buckets older than the window, and answer (count, sum) per window the
counter keeps (:attr:`~paywire.risk.features.Counter.widths`: only the windows some rule reads).
``StateUnavailable`` means the backend could not be reached: the engine then applies the checkpoint's fail
mode. The Redis backend for a fleet is :mod:`paywire.risk.redis_state`.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Sequence
from typing import Protocol

from paywire.risk.features import BUCKETS, Counter, Observed, Plan, amount_bin, summarize


class StateUnavailable(Exception):
    """The state backend did not answer (connection refused, timeout): the outcome is the fail mode's."""


class RiskState(Protocol):
    async def observe(self, plan: Plan, windows: Sequence[int], now: float) -> Observed:
        """Carry out ``plan`` at time ``now`` (seconds); ``windows``: the engine's (seconds each), each counter's
        ``widths`` among them."""
        ...

    async def bump(self, counters: Sequence[Counter], windows: Sequence[int], now: float) -> None:
        """Add to counters without reading them (failures, prices paid)."""
        ...

    async def add_amount(self, key: str, amount: float, windows: Sequence[int], now: float) -> None:
        """Add ``amount`` to the histogram ``key`` (kept over the longest of ``windows``)."""
        ...

    async def aclose(self) -> None: ...


class _Histogram:
    """Amounts over one window, as :data:`BUCKETS` time slices of log-binned counts (bin → count) and sums."""

    __slots__ = ("slices",)

    def __init__(self) -> None:
        self.slices: dict[int, tuple[dict[int, int], list[float]]] = {}

    def add(self, t: int, amount: float) -> None:
        bins, total = self.slices.setdefault(t, ({}, [0.0]))
        b = amount_bin(amount)
        bins[b] = bins.get(b, 0) + 1
        total[0] += amount

    def read(self, t: int) -> tuple[int, float, float]:
        for old in [k for k in self.slices if k <= t - BUCKETS]:
            del self.slices[old]
        merged: dict[int, int] = {}
        total = 0.0
        for bins, s in self.slices.values():
            total += s[0]
            for b, n in bins.items():
                merged[b] = merged.get(b, 0) + n
        return summarize(merged, total)


class _Window:
    """One window (``width`` seconds) of one counter: live buckets and their running totals. Buckets hold
    numbers only (bucket → events, bucket → amounts), so their dictionaries stay out of the cyclic GC's way."""

    __slots__ = ("count", "counts", "last", "sums", "total", "width")

    def __init__(self, width: int, last: int = -1) -> None:
        self.width = width
        self.counts: dict[int, int] = {}
        self.sums: dict[int, float] = {}  # summed counters only
        self.last = last  # a new window starts at the current bucket: nothing to drop, nothing to recount
        self.count, self.total = 0, 0.0

    def slide(self, b: int) -> None:
        """Make ``b`` the current bucket: drop expired buckets, recount."""
        self.last = b
        low = b - BUCKETS
        for k in [k for k in self.counts if k <= low]:
            del self.counts[k]
            self.sums.pop(k, None)
        self.count = sum(self.counts.values())
        self.total = sum(self.sums.values())


_ZEROS: tuple[tuple[tuple[int, float], ...], ...] = tuple(((0, 0.0),) * n for n in range(8))


class MemoryState:
    """Counters in this process (one server). Bounded: at most ``max_keys`` counters (least recently used
    dropped first) and ``max_keys`` first-seen entries, each window kept as :data:`BUCKETS` buckets."""

    def __init__(self, *, max_keys: int = 200_000, first_seen_ttl: float = 30 * 86400) -> None:
        self.max_keys, self.first_seen_ttl = max_keys, first_seen_ttl
        # per key: the widths its windows keep, and the windows in that order
        self._counters: OrderedDict[str, tuple[tuple[int, ...], list[_Window]]] = OrderedDict()
        self._seen: OrderedDict[str, float] = OrderedDict()
        self._hist: OrderedDict[str, _Histogram] = OrderedDict()

    def __len__(self) -> int:
        return len(self._counters)

    def _apply(self, c: Counter, count: int, buckets: dict[int, int]) -> tuple[tuple[int, float], ...]:
        """Bump (``count`` events) and read one counter over its windows; one dictionary look-up."""
        counters = self._counters
        entry = counters.get(c.key)
        widths = c.widths
        if entry is None:
            if not count:  # read-only and never bumped: zeros, and nothing stored for it
                n = len(widths)
                return _ZEROS[n] if n < len(_ZEROS) else ((0, 0.0),) * n
            wins = [_Window(w, buckets[w]) for w in widths]
            counters[c.key] = (widths, wins)
            if len(counters) > self.max_keys:
                counters.popitem(last=False)
        else:
            counters.move_to_end(c.key)
            wins = entry[1]
            if entry[0] != widths:  # the rules read other windows now: keep the ones still read, start the new
                have = {w.width: w for w in wins}
                wins = [have.get(w) or _Window(w, buckets[w]) for w in widths]
                counters[c.key] = (widths, wins)
        amount = c.amount if count else 0.0
        out = []
        for win in wins:
            b = buckets[win.width]
            if b != win.last:  # the window slid
                win.slide(b)
            if count:
                counts = win.counts
                counts[b] = counts.get(b, 0) + count
                if c.summed:
                    sums = win.sums
                    sums[b] = sums.get(b, 0.0) + amount
                win.count += count
                win.total += amount
            out.append((win.count, win.total))
        return tuple(out)

    def _first_seen(self, key: str, now: float) -> float | None:
        at = self._seen.get(key)
        if at is not None and now - at < self.first_seen_ttl:
            return now - at
        self._seen[key] = now
        self._seen.move_to_end(key)
        if len(self._seen) > self.max_keys:
            self._seen.popitem(last=False)
        return None

    async def observe(self, plan: Plan, windows: Sequence[int], now: float) -> Observed:
        age = self._first_seen(plan.first_seen, now) if plan.first_seen is not None else None
        is_new = plan.first_seen is not None and age is None
        buckets = {w: math.floor(now * BUCKETS / w) for w in windows}
        seen = {c.key: self._apply(c, c.add if (is_new or not c.only_if_new) else 0, buckets)
                for c in plan.counters}
        if plan.stats is None:
            return Observed(seen, age)
        hist = self._hist.get(plan.stats)
        stats = hist.read(math.floor(now * BUCKETS / max(windows))) if hist is not None and windows else (0, 0.0, 0.0)
        return Observed(seen, age, stats=stats)

    async def add_amount(self, key: str, amount: float, windows: Sequence[int], now: float) -> None:
        if not windows:
            return
        hist = self._hist.get(key)
        if hist is None:
            hist = self._hist[key] = _Histogram()
            if len(self._hist) > self.max_keys:
                self._hist.popitem(last=False)
        else:
            self._hist.move_to_end(key)
        hist.add(math.floor(now * BUCKETS / max(windows)), amount)

    async def bump(self, counters: Sequence[Counter], windows: Sequence[int], now: float) -> None:
        buckets = {w: math.floor(now * BUCKETS / w) for w in windows}
        for c in counters:
            self._apply(c, c.add, buckets)

    async def aclose(self) -> None:
        return None
