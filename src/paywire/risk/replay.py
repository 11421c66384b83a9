"""``paywire risk test RULES.toml --replay FILE``: what a rule file would have decided on recorded traffic.

Each record (a line of JSON, as ``paywire risk decisions --json`` writes them) carries the checkpoint, the
features the rules saw then and the action taken. The new rules run on those same features (counters are not
recomputed), so the report says exactly which recorded requests a change would have decided differently.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from paywire.risk.features import defaults
from paywire.risk.model import CHECKPOINTS, Action, RiskConfigError
from paywire.risk.rules import RuleSet


@dataclass
class ReplayReport:
    """Counts over a replay: per rule (matched, decided), and recorded action → new action."""

    records: int = 0
    matched: Counter[str] = field(default_factory=Counter)
    decided: Counter[str] = field(default_factory=Counter)
    changes: Counter[tuple[str, str]] = field(default_factory=Counter)
    labels: Counter[tuple[str, str]] = field(default_factory=Counter)
    """(label, new action) when records carry a ``label`` (bench traffic: ``honest``, ``card_testing`` …)."""
    unrecorded: Counter[str] = field(default_factory=Counter)
    """Features the rules read that records lack (not measured then: they were replayed at their defaults)."""

    def changed(self) -> int:
        return sum(n for (old, new), n in self.changes.items() if old != new)


def read_records(path: str | Path) -> list[dict[str, Any]]:
    """JSON lines (or one JSON list) of records; a bad line raises :class:`RiskConfigError` naming it."""
    p = Path(path)
    try:
        text = p.read_text("utf-8")
    except OSError as exc:
        raise RiskConfigError(f"replay file {p}: cannot read it ({exc.strerror or exc})") from None
    if text.lstrip().startswith("["):
        data = json.loads(text)
        return [dict(r) for r in data]
    out = []
    for n, line in enumerate(text.splitlines(), start=1):
        if line.strip():
            try:
                out.append(dict(json.loads(line)))
            except (ValueError, TypeError) as exc:
                raise RiskConfigError(f"replay file {p}:{n}: not a JSON object ({exc})") from None
    return out


def replay(rules: RuleSet, records: Iterable[Mapping[str, Any]]) -> ReplayReport:
    """Run ``rules`` over each record's features; count matches, decisions and changes."""
    report = ReplayReport()
    for rec in records:
        cp = rec.get("checkpoint")
        if cp not in CHECKPOINTS:
            continue
        recorded = dict(rec.get("features") or {})
        for name in rules.variables(cp) - recorded.keys():
            report.unrecorded[name] += 1
        features = {**defaults(cp), **recorded}
        verdict = rules.evaluate(cp, features, all_rules=True)
        report.records += 1
        for r in verdict.matched:
            report.matched[r.id] += 1
        rule = verdict.rule
        new: Action = "allow" if rule is None or rule.shadow else rule.action
        if rule is not None:
            report.decided[rule.id] += 1
        report.changes[(str(rec.get("action", "allow")), new)] += 1
        if rec.get("label"):
            report.labels[(str(rec["label"]), new)] += 1
    return report
