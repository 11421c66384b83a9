"""The risk engine: one object, four checkpoints (seller ``request`` and ``payment``, facilitator ``settle``,
buyer ``buyer``).

    engine = RiskEngine()                                   # the default rules, counters in this process
    engine = RiskEngine("rules.toml", state=RedisState("redis://127.0.0.1:6379/0"),
                        lists=RiskLists(sanctions="sanctions.csv"), fail={"payment": "closed"})
    decision = await engine.check(Event("payment", payer=..., amount=..., ip=...))

``check`` bumps and reads the event's counters (one round trip to the state backend), looks the event's values
up in the lists, builds the features and runs the checkpoint's rules. When the backend is unreachable the
checkpoint's fail mode decides: ``open`` evaluates the rules with the counters at zero (the lists still
apply), ``closed`` denies with reason ``risk_unavailable``; either way the decision is ``degraded``, the
``paywire_risk_backend_up`` gauge drops to 0 and the log says so once per outage.
"""

from __future__ import annotations

import dataclasses
import logging
import random
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Literal, Protocol

from paywire.risk.features import (
    Counter,
    Kept,
    Layout,
    Observed,
    PlanSpec,
    build,
    counters_kept,
    counters_read,
    failure_counters,
    failure_kind,
    layout,
    paid_counters,
    plan,
    plan_spec,
    state_features,
    stats_key,
    windows_from,
)
from paywire.risk.lists import RiskLists
from paywire.risk.metrics import RiskMetrics
from paywire.risk.model import CHECKPOINTS, Action, Checkpoint, Decision, Event, RiskConfigError
from paywire.risk.rules import RuleSet, load_rules
from paywire.risk.state import MemoryState, RiskState, StateUnavailable

log = logging.getLogger("paywire.risk")

FailMode = Literal["open", "closed"]
UNAVAILABLE = "risk_unavailable"


class DecisionRecorder(Protocol):
    async def record(self, decision: Decision, event: Event) -> None: ...


def _fail_modes(fail: FailMode | Mapping[str, FailMode]) -> dict[Checkpoint, FailMode]:
    base: dict[Checkpoint, FailMode] = dict.fromkeys(CHECKPOINTS, "open")
    if isinstance(fail, str):
        base = dict.fromkeys(CHECKPOINTS, fail)
    else:
        for cp, mode in fail.items():
            if cp not in base:
                raise RiskConfigError(f"risk fail mode for {cp!r}: not a checkpoint ({', '.join(CHECKPOINTS)})")
            base[cp] = mode
    bad = {m for m in base.values() if m not in ("open", "closed")}
    if bad:
        raise RiskConfigError(f"risk fail mode {sorted(bad)}: expected 'open' or 'closed'")
    return base


class RiskEngine:
    """Decisions at every checkpoint.

    ``rules``: a :class:`RuleSet`, a TOML path, or ``None`` for the shipped defaults. ``state``: where counters
    live (default in this process). ``shadow``: evaluate and record, never enforce. ``fail``: per checkpoint
    (or one for all) what a state-backend outage means. ``recorder``: where decisions go (every non-allow, and
    ``sample_allows`` of the allows). ``clock``: seconds (the counters' time). Only the counters some rule
    reads are kept, each over the windows some rule reads (the other features read 0; records leave them out);
    ``count_all=True`` keeps every one, so recorded decisions carry every feature for
    ``paywire risk test --replay`` of rules that read others.
    ``max_records_per_second``: records written at most this often (a flood of denials must not become a
    flood of database writes); the rest are counted in ``paywire_risk_records_dropped_total``.
    """

    def __init__(self, rules: RuleSet | str | Path | None = None, *, state: RiskState | None = None,
                 lists: RiskLists | None = None, windows: Mapping[str, int] | Sequence[str] | None = None,
                 shadow: bool = False, fail: FailMode | Mapping[str, FailMode] = "open",
                 recorder: DecisionRecorder | None = None, sample_allows: float = 0.01,
                 metrics: RiskMetrics | None = None, clock: Callable[[], float] = time.time,
                 count_all: bool = False, max_records_per_second: float = 200.0) -> None:
        try:
            self.windows = windows_from(windows)
        except ValueError as exc:
            raise RiskConfigError(f"risk windows: {exc}") from None
        self._count_all = count_all
        self.rules = rules if isinstance(rules, RuleSet) else load_rules(rules, windows=self.windows)
        self.state: RiskState = state if state is not None else MemoryState()
        self.lists = lists or RiskLists()
        self.shadow, self.fail = shadow, _fail_modes(fail)
        self.recorder, self.sample_allows = recorder, sample_allows
        self.metrics = metrics or RiskMetrics()
        self.clock = clock
        self._widths = tuple(self.windows.values())
        self._down = False
        self._record_rate = max_records_per_second
        self._record_budget, self._record_at = max_records_per_second, clock()

    @property
    def rules(self) -> RuleSet:
        """The rules; assigning new ones (a reload) also changes which counters and windows are kept."""
        return self._rules

    @rules.setter
    def rules(self, rules: RuleSet) -> None:
        # only the counters and windows the rules read are kept (each costs writes, in Redis too); count_all
        # keeps every one. A counter's key is shared by the checkpoints that count it, so its windows are the
        # union of what every checkpoint's rules read.
        needed = None if self._count_all else {cp: counters_read(rules.variables(cp), self.windows)
                                               for cp in CHECKPOINTS}
        kept: dict[str, Kept] | None = None if needed is None else counters_kept(
            (v for cp in CHECKPOINTS for v in rules.variables(cp)), self.windows)
        self._specs: dict[str, PlanSpec] = {
            cp: plan_spec(cp, self.windows, needed[cp] if needed is not None else None, kept) for cp in CHECKPOINTS}
        self._kept = kept
        # features no rule reads are not measured (they hold defaults): records leave them out, so a replay of
        # other rules can tell a missing value from a zero
        self._unmeasured: dict[str, frozenset[str]] = {} if needed is None else {
            cp: state_features(cp, self.windows) - rules.variables(cp) for cp in CHECKPOINTS}
        self._layouts: dict[str, Layout] = {}
        self._rules = rules

    def _backend(self, up: bool, exc: BaseException | None = None) -> None:
        if up == (not self._down):
            return
        self._down = not up
        self.metrics.backend_up = 1 if up else 0
        if up:
            log.warning("paywire risk: state backend is back")
        else:
            log.warning("paywire risk: state backend unavailable (%s): fail modes apply %s", exc, self.fail)

    async def check(self, event: Event) -> Decision:
        """Evaluate ``event`` at its checkpoint; the decision is recorded and counted."""
        cp = event.checkpoint
        p = plan(event, self._specs[cp])
        degraded = False
        try:
            seen = await self.state.observe(p, self._widths, self.clock())
            self._backend(True)
        except StateUnavailable as exc:
            self._backend(False, exc)
            degraded = True
            seen = Observed({}, None, False)
        if self.lists.store is not None:
            await self.lists.refresh()
        features = build(event, p, seen, self.windows, self.lists.lookup(event, p.values))
        version = self.lists.version
        if degraded and self.fail[cp] == "closed":
            decision = Decision("deny", cp, None, UNAVAILABLE, self.shadow, (), features, version, True)
            if self.shadow:
                decision = Decision("allow", cp, None, UNAVAILABLE, True, (), features, version, True)
        else:
            verdict = self.rules.evaluate(cp, features)
            for err in verdict.errors:
                log.warning("paywire risk: rule failed to evaluate: %s", err)
            rule = verdict.rule
            matched = tuple(r.id for r in verdict.matched)
            if rule is None:
                decision = Decision("allow", cp, None, None, False, matched, features, version, degraded)
            else:
                shadow = self.shadow or rule.shadow
                action: Action = "allow" if shadow else rule.action
                decision = Decision(action, cp, rule.id, rule.reason if rule.action != "allow" else None, shadow,
                                    matched, features, version, degraded)
        self.metrics.count(decision)
        if self.recorder is not None and (decision.action != "allow" or decision.rule is not None
                                          or random.random() < self.sample_allows):
            if self._may_record():
                try:
                    await self.recorder.record(self._measured(decision), event)
                except Exception:  # a recording failure must not change the decision
                    log.exception("paywire risk: could not record a decision")
            else:
                self.metrics.records_dropped += 1
        return decision

    def _measured(self, decision: Decision) -> Decision:
        """``decision`` with only the features that were measured (see :attr:`rules`)."""
        drop = self._unmeasured.get(decision.checkpoint)
        if not drop:
            return decision
        return dataclasses.replace(decision, features={k: v for k, v in decision.features.items() if k not in drop})

    def _may_record(self) -> bool:
        """A token bucket of ``max_records_per_second`` (burst: one second's worth), on the engine's clock."""
        now = self.clock()
        self._record_budget = min(self._record_rate,
                                  self._record_budget + max(0.0, now - self._record_at) * self._record_rate)
        self._record_at = now
        if self._record_budget < 1:
            return False
        self._record_budget -= 1
        return True

    async def note_failure(self, event: Event, kind: str = "invalid") -> None:
        """A payment of ``event`` failed: bump its subjects' failure counters, all kinds' and ``kind``'s (a
        reason code such as ``invalid_exact_evm_nonce_already_used`` → ``replays``; see
        :func:`~paywire.risk.features.failure_kind`), which the next decisions read. Best effort: a backend
        outage is logged, not raised."""
        self.metrics.failure(event.checkpoint, failure_kind(kind))
        await self._bump(failure_counters(event, kind))

    async def note_amount(self, event: Event) -> None:
        """A payment of ``event`` verified (seller) or settled (facilitator): its amount joins the route's (the
        payee's) amount statistics. Best effort, like :meth:`note_failure`."""
        key = stats_key(event)
        if key is None:
            return
        try:
            await self.state.add_amount(key, event.value, self._widths, self.clock())
            self._backend(True)
        except StateUnavailable as exc:
            self._backend(False, exc)

    async def note_paid(self, event: Event) -> None:
        """Buyer: a payment was made at ``event``'s price; it joins the host's and route's price history."""
        await self._bump(paid_counters(event))

    def _layout(self, c: Counter) -> Layout:
        lay = self._layouts.get(c.name)
        if lay is None:
            lay = self._layouts[c.name] = layout(c.name, self.windows, self._kept, c.summed)
        return lay

    async def _bump(self, counters: Sequence[Counter]) -> None:
        """Bump ``counters`` over the windows this engine keeps for each (none: not bumped at all)."""
        kept = []
        for c in counters:
            lay = self._layout(c)
            if lay.widths:
                kept.append(c._replace(widths=lay.widths, features=lay.features, summed=lay.sums,
                                       amount=c.amount if lay.sums else 0.0))
        if not kept:
            return
        try:
            await self.state.bump(kept, self._widths, self.clock())
            self._backend(True)
        except StateUnavailable as exc:
            self._backend(False, exc)

    async def aclose(self) -> None:
        await self.state.aclose()
