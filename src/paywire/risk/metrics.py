"""Prometheus counters for risk decisions (text exposition; no client library needed)."""

from __future__ import annotations

from dataclasses import dataclass, field

from paywire.risk.model import Decision


def _label(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


@dataclass
class RiskMetrics:
    """Decisions per (checkpoint, rule, action, shadow), degraded decisions per checkpoint, backend health."""

    decisions: dict[tuple[str, str, str, str], int] = field(default_factory=dict)
    degraded: dict[str, int] = field(default_factory=dict)
    backend_up: int = 1
    records_dropped: int = 0
    challenges: dict[tuple[str, str], int] = field(default_factory=dict)
    failures: dict[tuple[str, str], int] = field(default_factory=dict)

    def challenged(self, checkpoint: str, outcome: str) -> None:
        """A challenge was passed (``identity`` / ``payment``) or answered with a 402 (``issued`` / ``failed``)."""
        self.challenges[(checkpoint, outcome)] = self.challenges.get((checkpoint, outcome), 0) + 1

    def failure(self, checkpoint: str, kind: str) -> None:
        self.failures[(checkpoint, kind)] = self.failures.get((checkpoint, kind), 0) + 1

    def count(self, d: Decision) -> None:
        key = (d.checkpoint, d.rule or "", d.action, "true" if d.shadow else "false")
        self.decisions[key] = self.decisions.get(key, 0) + 1
        if d.degraded:
            self.degraded[d.checkpoint] = self.degraded.get(d.checkpoint, 0) + 1

    def render(self) -> str:
        """The Prometheus text for these counters."""
        lines = ["# HELP paywire_risk_decisions_total Risk decisions by checkpoint, deciding rule and action.",
                 "# TYPE paywire_risk_decisions_total counter"]
        for (cp, rule, action, shadow), n in sorted(self.decisions.items()):
            lines.append(f'paywire_risk_decisions_total{{checkpoint="{cp}",rule="{_label(rule)}",'
                         f'action="{action}",shadow="{shadow}"}} {n}')
        lines += ["# HELP paywire_risk_degraded_total Decisions made while the state backend was unreachable.",
                  "# TYPE paywire_risk_degraded_total counter"]
        lines += [f'paywire_risk_degraded_total{{checkpoint="{cp}"}} {n}' for cp, n in sorted(self.degraded.items())]
        lines += ["# HELP paywire_risk_backend_up 1 while the risk state backend answers, 0 during an outage.",
                  "# TYPE paywire_risk_backend_up gauge", f"paywire_risk_backend_up {self.backend_up}",
                  "# HELP paywire_risk_records_dropped_total Decisions not recorded: over max_records_per_second.",
                  "# TYPE paywire_risk_records_dropped_total counter",
                  f"paywire_risk_records_dropped_total {self.records_dropped}",
                  "# HELP paywire_risk_challenges_total Risk challenges by checkpoint and outcome (identity or payment:"
                  " passed; issued or failed: answered with a 402).",
                  "# TYPE paywire_risk_challenges_total counter"]
        lines += [f'paywire_risk_challenges_total{{checkpoint="{cp}",outcome="{o}"}} {n}'
                  for (cp, o), n in sorted(self.challenges.items())]
        lines += ["# HELP paywire_risk_failures_total Payment failures fed back to risk, by checkpoint and kind.",
                  "# TYPE paywire_risk_failures_total counter"]
        lines += [f'paywire_risk_failures_total{{checkpoint="{cp}",kind="{k}"}} {n}'
                  for (cp, k), n in sorted(self.failures.items())]
        return "\n".join(lines) + "\n"
