"""Real-time risk decisions for sellers, facilitators and buyers (see docs/risk.md).

Importing this package loads nothing else; the CEL runtime loads when the first rule compiles and Redis only
with :class:`RedisState`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from paywire._lazy import lazy_exports

if TYPE_CHECKING:
    from paywire.risk.buyer import BuyerGuard, RiskRefused
    from paywire.risk.engine import RiskEngine
    from paywire.risk.lists import RiskLists, SanctionsFile
    from paywire.risk.metrics import RiskMetrics
    from paywire.risk.model import Decision, Event, RiskConfigError
    from paywire.risk.redis_state import RedisState
    from paywire.risk.rules import Rule, RuleSet, load_rules, parse_rules
    from paywire.risk.state import MemoryState, RiskState, StateUnavailable

__getattr__, __dir__ = lazy_exports(__name__, {
    "paywire.risk.engine": ("RiskEngine",),
    "paywire.risk.lists": ("RiskLists", "SanctionsFile"),
    "paywire.risk.metrics": ("RiskMetrics",),
    "paywire.risk.buyer": ("BuyerGuard", "RiskRefused"),
    "paywire.risk.model": ("Decision", "Event", "RiskConfigError"),
    "paywire.risk.redis_state": ("RedisState",),
    "paywire.risk.rules": ("Rule", "RuleSet", "load_rules", "parse_rules"),
    "paywire.risk.state": ("MemoryState", "RiskState", "StateUnavailable"),
})

__all__ = [
    "BuyerGuard",
    "Decision",
    "Event",
    "MemoryState",
    "RedisState",
    "RiskConfigError",
    "RiskEngine",
    "RiskLists",
    "RiskMetrics",
    "RiskRefused",
    "RiskState",
    "Rule",
    "RuleSet",
    "SanctionsFile",
    "StateUnavailable",
    "load_rules",
    "parse_rules",
]
