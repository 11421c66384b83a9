"""Rules: CEL expressions over a checkpoint's features, loaded from TOML, checked when they load.

    [[rule]]
    id = "sanctioned_payer"
    description = "A payer on the sanctions list is never served."
    checkpoint = "payment"            # or a list: ["payment", "settle"]
    when = "payer_sanctioned"         # CEL; true = the rule matches
    action = "deny"                   # allow | deny | challenge | review
    reason = "sanctioned"             # the code a denial carries (default: the id)
    priority = 100                    # highest matching priority decides; ties go to the stricter action
    shadow = false                    # true: evaluate and record, never enforce

A rule that does not parse, does not compile, names a feature its checkpoint does not have, or does not
evaluate to a boolean on the checkpoint's default features raises :class:`RiskConfigError` naming the file,
the rule id and its line. CEL runs in the Rust ``cel`` runtime (PyPI ``common-expression-language``), imported
on the first compile.
"""

from __future__ import annotations

import logging
import re
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from paywire.risk.features import DEFAULT_WINDOWS, SCALARS, feature_names
from paywire.risk.model import ACTIONS, CHECKPOINTS, SEVERITY, Action, Checkpoint, RiskConfigError

log = logging.getLogger("paywire.risk")

_ID = re.compile(r"^[a-z][a-z0-9_]{0,63}$")
_KEYS = {"id", "description", "checkpoint", "when", "action", "reason", "priority", "shadow"}


@dataclass(frozen=True, slots=True)
class Rule:
    """One compiled rule."""

    id: str
    when: str
    action: Action
    checkpoints: tuple[Checkpoint, ...]
    description: str = ""
    reason: str = ""
    priority: int = 0
    shadow: bool = False
    line: int = 0
    program: Any = field(default=None, compare=False, repr=False)

    def matches(self, context: Any) -> bool:
        return self.program.execute(context) is True


@dataclass(frozen=True, slots=True)
class Verdict:
    """What the rules said: the deciding rule (``None``: none matched) and every match."""

    rule: Rule | None
    matched: tuple[Rule, ...]
    errors: tuple[str, ...] = ()


class RuleSet:
    """Rules per checkpoint, ordered: priority (high first), then stricter action first, then file order."""

    def __init__(self, rules: Sequence[Rule], *, source: str = "<rules>", version: str = "") -> None:
        self.rules = tuple(rules)
        self.source, self.version = source, version
        order = sorted(range(len(self.rules)),
                       key=lambda i: (-self.rules[i].priority, -SEVERITY[self.rules[i].action], i))
        self._by_checkpoint: dict[str, tuple[Rule, ...]] = {
            c: tuple(self.rules[i] for i in order if c in self.rules[i].checkpoints) for c in CHECKPOINTS}

    def for_checkpoint(self, checkpoint: Checkpoint) -> tuple[Rule, ...]:
        return self._by_checkpoint[checkpoint]

    def variables(self, checkpoint: Checkpoint) -> frozenset[str]:
        """Every feature the checkpoint's rules name."""
        return frozenset(v for r in self._by_checkpoint[checkpoint] for v in r.program.variables())

    def evaluate(self, checkpoint: Checkpoint, features: Mapping[str, Any], *, all_rules: bool = False) -> Verdict:
        """The first matching enforced rule decides; shadow rules are evaluated too (recorded, never enforced).
        ``all_rules``: evaluate every rule (to record every match); otherwise stop at the decider once every
        shadow rule has had its turn. A rule that fails to evaluate (e.g. division by zero) does not match."""
        context = _cel().Context()
        context.set_variable_resolver(features.get)
        decider: Rule | None = None
        matched: list[Rule] = []
        errors: list[str] = []
        for rule in self._by_checkpoint[checkpoint]:
            if decider is not None and not rule.shadow and not all_rules:
                continue
            try:
                hit = rule.program.execute(context) is True  # Rule.matches, without a call per rule
            except Exception as exc:
                errors.append(f"{rule.id}: {exc}")
                continue
            if hit:
                matched.append(rule)
                if decider is None and not rule.shadow:
                    decider = rule
        if decider is None:  # only shadow rules matched: the strongest one is what would have happened
            decider = next(iter(matched), None)
        return Verdict(decider, tuple(matched), tuple(errors))


_CEL: Any = None


def _cel() -> Any:
    """The CEL runtime (the ``risk`` extra, imported once); a clear error when it is not installed."""
    global _CEL
    if _CEL is None:
        try:
            import cel
        except ImportError:
            raise RiskConfigError("risk rules need the CEL runtime: pip install 'paywire[risk]' "
                                  "(common-expression-language)") from None
        _CEL = cel
    return _CEL


def _rule_lines(text: str) -> list[int]:
    return [i + 1 for i, line in enumerate(text.splitlines()) if line.strip().startswith("[[rule]]")]


def _line_of(text: str, start: int, key: str) -> int:
    lines = text.splitlines()
    for i in range(max(start - 1, 0), len(lines)):
        if i >= start and lines[i].strip().startswith("[[rule]]"):
            break
        if re.match(rf"\s*{key}\s*=", lines[i]):
            return i + 1
    return start


def compile_rule(raw: Mapping[str, Any], *, where: str, windows: Mapping[str, int] = DEFAULT_WINDOWS,
                 line: int = 0) -> Rule:
    """One rule from its table; ``where`` is how errors name it (``rules.toml:12 rule 'x'``)."""
    def bad(msg: str) -> RiskConfigError:
        return RiskConfigError(f"{where}: {msg}")

    unknown = set(raw) - _KEYS
    if unknown:
        raise bad(f"unknown key(s) {sorted(unknown)}; a rule has {sorted(_KEYS)}")
    rid = raw.get("id")
    if not isinstance(rid, str) or not _ID.match(rid):
        raise bad("id must be lower-case letters, digits and _ (starting with a letter)")
    when, action = raw.get("when"), raw.get("action")
    if not isinstance(when, str) or not when.strip():
        raise bad("'when' (the CEL condition) is missing")
    if action not in ACTIONS:
        raise bad(f"action {action!r}: expected one of {', '.join(ACTIONS)}")
    cps = raw.get("checkpoint")
    cp_list = [cps] if isinstance(cps, str) else cps
    if not isinstance(cp_list, list) or not cp_list or any(c not in CHECKPOINTS for c in cp_list):
        raise bad(f"checkpoint {cps!r}: expected one or a list of {', '.join(CHECKPOINTS)}")
    priority, shadow = raw.get("priority", 0), raw.get("shadow", False)
    if not isinstance(priority, int) or isinstance(priority, bool):
        raise bad(f"priority {priority!r}: expected an integer")
    if not isinstance(shadow, bool):
        raise bad(f"shadow {shadow!r}: expected true or false")
    cel = _cel()
    try:
        program = cel.compile(when)
    except (ValueError, RuntimeError) as exc:
        raise bad(f"'when' does not compile: {exc}") from None
    checkpoints: tuple[Checkpoint, ...] = tuple(cp_list)
    for cp in checkpoints:
        known = feature_names(cp, windows)
        missing = [v for v in program.variables() if v not in known]
        if missing:
            raise bad(f"'when' names unknown feature(s) {missing} at checkpoint {cp!r} "
                      f"(see docs/risk.md; e.g. {', '.join(sorted(known)[:6])}, …)")
        defaults = {n: SCALARS[cp].get(n, False if n.endswith(("_sanctioned", "_denied", "_allowed", "_new"))
                                        else 0) for n in known}
        try:
            result = program.execute(defaults)
        except Exception as exc:
            raise bad(f"'when' fails on checkpoint {cp!r}'s default features: {exc}") from None
        if not isinstance(result, bool):
            raise bad(f"'when' must be true or false; it gives {type(result).__name__} ({result!r})")
    return Rule(rid, when, action, checkpoints, str(raw.get("description", "")), str(raw.get("reason") or rid),
                priority, shadow, line, program)


def parse_rules(text: str, *, source: str = "<rules>", windows: Mapping[str, int] = DEFAULT_WINDOWS) -> RuleSet:
    """A :class:`RuleSet` from TOML text (``[[rule]]`` tables; optional top-level ``version``)."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise RiskConfigError(f"{source}: not valid TOML: {exc}") from None
    extra = set(data) - {"rule", "version"}
    if extra:
        raise RiskConfigError(f"{source}: unknown top-level key(s) {sorted(extra)}; expected [[rule]] tables "
                              "and an optional version")
    raws = data.get("rule", [])
    if not isinstance(raws, list):
        raise RiskConfigError(f"{source}: 'rule' must be [[rule]] tables")
    starts = _rule_lines(text)
    rules: list[Rule] = []
    seen: set[str] = set()
    for i, raw in enumerate(raws):
        start = starts[i] if i < len(starts) else 0
        rid = raw.get("id") if isinstance(raw, dict) else None
        line = _line_of(text, start, "when") if start else 0
        where = f"{source}:{line or start} rule {rid!r}" if rid else f"{source}:{start} rule #{i + 1}"
        rule = compile_rule(raw, where=where, windows=windows, line=start)
        if rule.id in seen:
            raise RiskConfigError(f"{source}:{start}: rule id {rule.id!r} is used twice")
        seen.add(rule.id)
        rules.append(rule)
    return RuleSet(rules, source=source, version=str(data.get("version", "")))


def load_rules(path: str | Path | None = None, *, windows: Mapping[str, int] = DEFAULT_WINDOWS) -> RuleSet:
    """Rules from a TOML file; ``None``: the shipped default rule set (``paywire/risk/default_rules.toml``)."""
    if path is None:
        text = resources.files("paywire.risk").joinpath("default_rules.toml").read_text("utf-8")
        return parse_rules(text, source="default_rules.toml", windows=windows)
    p = Path(path)
    try:
        text = p.read_text("utf-8")
    except OSError as exc:
        raise RiskConfigError(f"risk rules {p}: cannot read it ({exc.strerror or exc})") from None
    return parse_rules(text, source=str(p), windows=windows)
