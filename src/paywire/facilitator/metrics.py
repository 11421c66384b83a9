"""Prometheus metrics for the facilitator, in the text exposition format (no client library needed)."""

from __future__ import annotations

import bisect
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

__all__ = ["Metrics"]

LabelKey = tuple[tuple[str, str], ...]
DEFAULT_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)


_KEYS: dict[tuple[tuple[str, Any], ...], LabelKey] = {}
_MAX_KEYS = 4096


def _key(labels: Mapping[str, str]) -> LabelKey:
    """The sorted label pairs of a series; remembered per label set as given (every request names the same few)."""
    given = tuple(labels.items())
    key = _KEYS.get(given)
    if key is None:
        key = tuple(sorted((k, str(v)) for k, v in given))
        if len(_KEYS) < _MAX_KEYS:
            _KEYS[given] = key
    return key


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _fmt_labels(key: Iterable[tuple[str, str]]) -> str:
    parts = [f'{k}="{_escape(v)}"' for k, v in key]
    return "{" + ",".join(parts) + "}" if parts else ""


def _num(v: float) -> str:
    if math.isinf(v):
        return "+Inf" if v > 0 else "-Inf"
    return repr(float(v)) if not float(v).is_integer() else str(int(v))


@dataclass(slots=True)
class _Histogram:
    buckets: tuple[float, ...]
    counts: list[int] = field(default_factory=list)
    total: float = 0.0
    n: int = 0

    def observe(self, value: float) -> None:
        """Counted in the first bucket it fits (``cumulative()`` gives Prometheus' cumulative counts)."""
        if not self.counts:
            self.counts = [0] * (len(self.buckets) + 1)
        self.counts[bisect.bisect_left(self.buckets, value)] += 1
        self.total += value
        self.n += 1

    def cumulative(self) -> list[int]:
        """Observations ``<=`` each bucket's upper bound."""
        out, running = [], 0
        for c in (self.counts or [0] * (len(self.buckets) + 1))[:len(self.buckets)]:
            running += c
            out.append(running)
        return out


class Metrics:
    """Counters, gauges and histograms with labels; ``render()`` gives the ``/metrics`` body."""

    def __init__(self, prefix: str = "paywire_facilitator_") -> None:
        self.prefix = prefix
        self._help: dict[str, tuple[str, str]] = {}
        self._counters: dict[str, dict[LabelKey, float]] = {}
        self._gauges: dict[str, dict[LabelKey, float]] = {}
        self._hists: dict[str, dict[LabelKey, _Histogram]] = {}
        self._buckets: dict[str, tuple[float, ...]] = {}

    def describe(self, name: str, kind: str, help_text: str, buckets: tuple[float, ...] = DEFAULT_BUCKETS) -> None:
        self._help[name] = (kind, help_text)
        if kind == "histogram":
            self._buckets[name] = buckets

    def inc(self, name: str, value: float = 1.0, **labels: str) -> None:
        series = self._counters.setdefault(name, {})
        k = _key(labels)
        series[k] = series.get(k, 0.0) + value

    def set(self, name: str, value: float, **labels: str) -> None:
        self._gauges.setdefault(name, {})[_key(labels)] = value

    def observe(self, name: str, value: float, **labels: str) -> None:
        series = self._hists.setdefault(name, {})
        k = _key(labels)
        h = series.get(k)
        if h is None:
            h = series[k] = _Histogram(self._buckets.get(name, DEFAULT_BUCKETS))
        h.observe(value)

    def value(self, name: str, **labels: str) -> float:
        """A counter's or gauge's current value (0 if never touched); for tests and status pages."""
        k = _key(labels)
        return self._counters.get(name, {}).get(k, self._gauges.get(name, {}).get(k, 0.0))

    def render(self) -> str:
        lines: list[str] = []
        names = sorted(set(self._counters) | set(self._gauges) | set(self._hists) | set(self._help))
        for name in names:
            full = self.prefix + name
            kind, help_text = self._help.get(name, ("untyped", ""))
            if name in self._counters:
                kind = "counter"
            elif name in self._hists:
                kind = "histogram"
            elif name in self._gauges:
                kind = "gauge"
            if help_text:
                lines.append(f"# HELP {full} {help_text}")
            lines.append(f"# TYPE {full} {kind}")
            for k, v in sorted(self._counters.get(name, {}).items()):
                lines.append(f"{full}{_fmt_labels(k)} {_num(v)}")
            for k, v in sorted(self._gauges.get(name, {}).items()):
                lines.append(f"{full}{_fmt_labels(k)} {_num(v)}")
            for k, h in sorted(self._hists.get(name, {}).items()):
                for b, c in zip(h.buckets, h.cumulative(), strict=True):
                    lines.append(f"{full}_bucket{_fmt_labels((*k, ('le', _num(b))))} {c}")
                lines.append(f"{full}_bucket{_fmt_labels((*k, ('le', '+Inf')))} {h.n}")
                lines.append(f"{full}_sum{_fmt_labels(k)} {_num(h.total)}")
                lines.append(f"{full}_count{_fmt_labels(k)} {h.n}")
        return "\n".join(lines) + "\n"


def facilitator_metrics() -> Metrics:
    """A ``Metrics`` with the facilitator's series described."""
    m = Metrics()
    m.describe("http_requests_total", "counter", "HTTP requests by route and status code.")
    m.describe("http_request_duration_seconds", "histogram", "HTTP request latency by route.")
    m.describe("verify_total", "counter", "Verifications by result and reason.")
    m.describe("settle_total", "counter", "Settle answers by result and reason.")
    m.describe("settlements", "gauge", "Settlement records in the store by state.")
    m.describe("reconcile_runs_total", "counter", "Reconciler passes.")
    m.describe("reconciled_total", "counter", "Records the reconciler acted on, by outcome.")
    m.describe("reconcile_errors_total", "counter", "Reconciler passes that failed.")
    m.describe("signer_in_flight", "gauge", "Transactions being prepared or broadcast per signer key.")
    m.describe("up", "gauge", "1 while the facilitator serves.")
    return m
