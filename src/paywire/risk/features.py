"""Features, pure: which sliding-window counters a checkpoint reads and bumps (a :class:`Plan` for a state
backend), and the flat feature map the rules see once the backend has answered.

Counters are keyed by a *subject* and its value (``payer:0xab…``, ``ip:203.0.113.7``). Each counts events
(``<subject>_count_<window>``) and, for subjects that pay, sums whole tokens (``<subject>_sum_<window>``);
failures (failed verifications, replays, underpayments, expired authorizations — whatever the caller reports
through :meth:`paywire.risk.engine.RiskEngine.note_failure`) are counted apart (``<subject>_failures_<window>``).
Each failure also counts under its kind (:func:`failure_kind`): ``<subject>_invalid_<window>`` (failed
verifications: bad signatures, unfunded wallets …), ``_replays_`` (an authorization already used),
``_underpaid_`` (less than the price) and ``_expired_`` (outside its validity window).
Per-route amount statistics (``route_amount_mean``, ``route_amount_p99``, ``route_amount_samples``; at the
facilitator per payee: ``payee_amount_…``) are kept over the longest window from the amounts of payments that
verified (:meth:`paywire.risk.engine.RiskEngine.note_amount`), as a log-binned histogram: the p99 is the upper
edge of its bin (within 19 %), ``amount_vs_p99`` the event's amount over it (0 without history).
Names are flat (``payer_count_1m``), so a rule that names an unknown feature is caught when it compiles.
"""

from __future__ import annotations

import functools
import ipaddress
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final, NamedTuple

from paywire.risk.model import CHECKPOINTS, Checkpoint, Event

DEFAULT_WINDOWS: Final[Mapping[str, int]] = {"1m": 60, "1h": 3600, "24h": 86400}
BUCKETS: Final = 12
"""A window is kept as this many buckets: a counter slides in steps of window / 12 (5 s for one minute)."""

# subject -> how it is found in an Event
SUBJECTS: Final[Mapping[Checkpoint, tuple[str, ...]]] = {
    "request": ("ip", "net", "route", "agent"),
    "payment": ("route", "payer", "payee", "payment"),
    "settle": ("payer", "payee", "requester", "payment"),
    "buyer": ("host", "route", "payee", "agent"),
}
"""Subjects counted (one event each time the checkpoint runs) at each checkpoint. The payment checkpoint does not
count the IP again (the request checkpoint did); it reads the IP's failures and new payers."""
SUMMED: Final = frozenset({"payer", "payee", "route", "host", "agent", "requester"})
"""Subjects whose counters also sum the amount (whole tokens) — at checkpoints that know an amount."""
FAILING: Final[Mapping[Checkpoint, tuple[str, ...]]] = {
    "request": ("ip", "net"),
    "payment": ("ip", "net", "payer"),
    "settle": ("payer", "requester"),
    "buyer": ("host",),
}
"""Subjects whose failure counters a checkpoint reads."""
FIRST_SEEN: Final[Mapping[Checkpoint, str]] = {"payment": "payer", "settle": "payer"}
"""The subject whose first-seen time a checkpoint reads (``<subject>_age`` seconds, ``<subject>_new``)."""
NEW_PER: Final = "ip"
"""At the payment checkpoint, new payers are also counted per IP (``ip_new_payers_<window>``)."""

FAILURE_KINDS: Final = ("invalid", "replays", "underpaid", "expired")
"""Failure counters by kind, beside ``<subject>_failures`` (every kind)."""
STATS: Final[Mapping[Checkpoint, str]] = {"payment": "route", "settle": "payee"}
"""The subject whose amount statistics a checkpoint reads (``<subject>_amount_mean`` / ``_p99`` / ``_samples``)."""
STAT_NAMES: Final = ("amount_mean", "amount_p99", "amount_samples")
BINS_PER_DOUBLING: Final = 4


def failure_kind(reason: str | None) -> str:
    """The kind of a failure from its reason code (a facilitator's ``invalid_reason``, or a kind itself)."""
    words = (reason or "").lower().replace(":", " ").split()
    r = words[0] if words else ""  # the code, not the message after it
    if r in FAILURE_KINDS:
        return r
    if "already_used" in r or "replay" in r or "nonce_used" in r:
        return "replays"
    if "valid_before" in r or "valid_after" in r or "expired" in r:
        return "expired"
    if "authorization_value" in r or "amount" in r or "underpa" in r:
        return "underpaid"
    return "invalid"


def amount_bin(amount: float) -> int:
    """The histogram bin of an amount (``BINS_PER_DOUBLING`` bins per doubling; 0 and less: bin -4096)."""
    return math.floor(math.log2(amount) * BINS_PER_DOUBLING) if amount > 0 else -4096


def bin_top(b: int) -> float:
    return 0.0 if b <= -4096 else float(2 ** ((b + 1) / BINS_PER_DOUBLING))


def summarize(bins: Mapping[int, int], total: float) -> tuple[int, float, float]:
    """(samples, mean, p99) of a histogram ``bins`` (bin → count) whose amounts sum to ``total``."""
    n = sum(bins.values())
    if n <= 0:
        return 0, 0.0, 0.0
    need, seen = math.ceil(0.99 * n), 0
    for b in sorted(bins):
        seen += bins[b]
        if seen >= need:
            return n, total / n, bin_top(b)
    return n, total / n, bin_top(max(bins))


SCALARS: Final[Mapping[Checkpoint, Mapping[str, Any]]] = {
    "request": {"ip": "", "route": "", "method": "", "agent": "", "header_bytes": 0, "has_payment": False},
    "payment": {"ip": "", "route": "", "method": "", "agent": "", "header_bytes": 0, "payer": "", "payee": "",
                "amount": 0.0, "amount_units": 0, "asset": "", "network": "", "scheme": "", "protocol": "",
                "amount_vs_p99": 0.0},
    "settle": {"payer": "", "payee": "", "requester": "", "amount": 0.0, "amount_units": 0, "asset": "",
               "network": "", "scheme": "", "amount_vs_p99": 0.0},
    "buyer": {"host": "", "route": "", "payee": "", "agent": "", "amount": 0.0, "amount_units": 0, "asset": "",
              "network": "", "price_ratio_host": 1.0, "price_ratio_route": 1.0},
}
"""Plain values of the event each checkpoint exposes (name → an example of its type)."""
LISTED: Final[Mapping[Checkpoint, tuple[str, ...]]] = {
    "request": ("ip",),
    "payment": ("ip", "payer", "payee"),
    "settle": ("payer", "payee"),
    "buyer": ("payee", "host"),
}
"""Values looked up in the lists: ``<subject>_sanctioned``, ``<subject>_denied``, ``<subject>_allowed``."""


@functools.lru_cache(maxsize=4096)
def network_prefix(ip: str) -> str:
    """The /24 (IPv4) or /48 (IPv6) an address belongs to; the text itself when it is not an address."""
    try:
        addr = ipaddress.ip_address(ip)
    except ValueError:
        return ip
    bits = 24 if addr.version == 4 else 48
    return str(ipaddress.ip_network(f"{ip}/{bits}", strict=False))


def subject_value(event: Event, subject: str) -> str | None:
    """The key value of ``subject`` in ``event`` (addresses lower-cased), or ``None`` when unknown."""
    if subject == "net":
        return network_prefix(event.ip) if event.ip else None
    if subject == "payment":
        return event.payment_key
    value = getattr(event, subject)
    if value is None or value == "":
        return None
    text = str(value)
    return text.lower() if text.startswith("0x") else text


def feature_names(checkpoint: Checkpoint, windows: Mapping[str, int] = DEFAULT_WINDOWS) -> frozenset[str]:
    """Every feature a rule at ``checkpoint`` may name."""
    return _feature_names(checkpoint, tuple(windows))


def defaults(checkpoint: Checkpoint, windows: Mapping[str, int] = DEFAULT_WINDOWS) -> dict[str, Any]:
    """Every feature of ``checkpoint`` at its zero value (a fresh copy)."""
    return dict(_defaults(checkpoint, tuple(windows)))


@functools.lru_cache(maxsize=64)
def _defaults(checkpoint: Checkpoint, windows: tuple[str, ...]) -> Mapping[str, Any]:
    scalars = SCALARS[checkpoint]
    return {name: scalars[name] if name in scalars
            else (False if name.endswith(("_sanctioned", "_denied", "_allowed", "_new"))
                  else 0.0 if name.endswith(("_amount_mean", "_amount_p99")) else 0)
            for name in _feature_names(checkpoint, windows)}


@functools.lru_cache(maxsize=64)
def _feature_names(checkpoint: Checkpoint, windows: tuple[str, ...]) -> frozenset[str]:
    names = set(SCALARS[checkpoint])
    for subject in SUBJECTS[checkpoint]:
        for w in windows:
            names.add(f"{subject}_count_{w}")
            if subject in SUMMED and checkpoint != "request":
                names.add(f"{subject}_sum_{w}")
    for subject in FAILING[checkpoint]:
        for kind in ("failures", *FAILURE_KINDS):
            names.update(f"{subject}_{kind}_{w}" for w in windows)
    stats = STATS.get(checkpoint)
    if stats:
        names.update(f"{stats}_{n}" for n in STAT_NAMES)
    seen = FIRST_SEEN.get(checkpoint)
    if seen:
        names.update({f"{seen}_age", f"{seen}_new"})
        if checkpoint == "payment":
            names.update(f"{NEW_PER}_new_payers_{w}" for w in windows)
    for subject in LISTED[checkpoint]:
        names.update({f"{subject}_sanctioned", f"{subject}_denied", f"{subject}_allowed"})
    return frozenset(names)


def state_features(checkpoint: Checkpoint, windows: Mapping[str, int] = DEFAULT_WINDOWS) -> frozenset[str]:
    """The features of ``checkpoint`` read from counters, statistics or first-seen times (not from the event or
    the lists): unless the engine counts everything, only those some rule reads are measured."""
    return _state_features(checkpoint, tuple(windows))


@functools.lru_cache(maxsize=64)
def _state_features(checkpoint: Checkpoint, windows: tuple[str, ...]) -> frozenset[str]:
    plain = (set(SCALARS[checkpoint]) - _DERIVED) | {"amount", "amount_units"}
    return frozenset(n for n in _feature_names(checkpoint, windows)
                     if n not in plain and not n.endswith(("_sanctioned", "_denied", "_allowed")))


def all_feature_names(windows: Mapping[str, int] = DEFAULT_WINDOWS) -> dict[Checkpoint, frozenset[str]]:
    return {c: feature_names(c, windows) for c in CHECKPOINTS}


class Counter(NamedTuple):
    """One sliding-window counter to bump (``add`` events, ``amount``) and read over ``widths`` (seconds)."""

    name: str  # feature prefix, e.g. "payer_count" → payer_count_1m …
    key: str  # backend key, e.g. "c:payer:0xab…"
    add: int  # events to add (0: read only)
    amount: float
    summed: bool  # the amounts are kept (added, and read as ``<subject>_sum_<window>``)
    only_if_new: bool = False  # bump only when the first-seen subject is new (ip_new_payers)
    widths: tuple[int, ...] = ()
    """The windows (seconds, in the engine's order) this counter keeps: those some rule reads (every window with
    ``count_all``). A backend bumps and answers (count, sum) for these only."""
    features: tuple[tuple[str, str | None], ...] = ()
    """Per kept window, the features it fills: its count's name and its sum's (``None``: sums not kept)."""


@dataclass(frozen=True, slots=True)
class Plan:
    """What a state backend must do for one checkpoint: bump and read ``counters``; read (and set, if unset)
    ``first_seen``. The buyer's price history is two read-only counters (``price_host``, ``price_route``)
    bumped only once a payment is made (:func:`paid_counters`). ``values``: the event's subject values."""

    counters: tuple[Counter, ...]
    first_seen: str | None
    values: Mapping[str, str | None]
    stats: str | None = None  # the amount histogram to read (``a:route:GET /x``)


@dataclass(frozen=True, slots=True)
class Observed:
    """A backend's answer: per counter key, (count, sum) per window in the engine's window order; the
    first-seen subject's age in seconds (``None``: first seen now)."""

    windows: Mapping[str, tuple[tuple[int, float], ...]]
    first_seen_age: float | None = None
    known: bool = True  # False: the backend was down; counters read 0 and nobody counts as new
    stats: tuple[int, float, float] = (0, 0.0, 0.0)  # the plan's amount histogram: (samples, mean, p99)


def subject_values(event: Event) -> dict[str, str | None]:
    """Every subject value ``event``'s checkpoint counts, fails or lists."""
    cp = event.checkpoint
    names = {*SUBJECTS[cp], *FAILING[cp], *LISTED[cp], "payer", "payee"}
    return {s: subject_value(event, s) for s in names}


FIRST_SEEN_COUNTER: Final = "first_seen"
STATS_COUNTER: Final = "amount_stats"


def counters_read(variables: Iterable[str], windows: Iterable[str]) -> frozenset[str]:
    """The counters (``payer_count``, ``ip_failures``, ``price_host``, ``first_seen`` …) that rules naming
    ``variables`` read: what :func:`plan` must keep when only the rules' features are counted."""
    suffixes = tuple(f"_{w}" for w in windows)
    out: set[str] = set()
    for v in variables:
        if v.startswith("price_ratio_"):
            out.add("price_" + v.removeprefix("price_ratio_"))
        elif v == "amount_vs_p99" or v.endswith(tuple(f"_{n}" for n in STAT_NAMES)):
            out.add(STATS_COUNTER)
        elif v.endswith(("_age", "_new")) and v.split("_", 1)[0] in FIRST_SEEN.values():
            out.add(FIRST_SEEN_COUNTER)
        elif v.endswith(suffixes):
            base = v.rsplit("_", 1)[0]
            if base.endswith("_sum"):
                base = base.removesuffix("_sum") + "_count"
            out.add(base)
            if base == f"{NEW_PER}_new_payers":
                out.add(FIRST_SEEN_COUNTER)
    return frozenset(out)


class Kept(NamedTuple):
    """What one counter keeps: its windows (names, in the engine's order) and whether its sums are read."""

    windows: tuple[str, ...]
    sums: bool


def counters_kept(variables: Iterable[str], windows: Mapping[str, int]) -> dict[str, Kept]:
    """Per counter that rules naming ``variables`` read, the windows they read and whether they read its sums
    (``payer_sum_1h``); a buyer's price ratio reads the longest window's sum. Windows no rule reads are not
    kept: their features read 0, like those of counters no rule reads."""
    names = tuple(windows)
    longest = max(names, key=lambda n: windows[n]) if names else None
    read: dict[str, set[str]] = {}
    sums: set[str] = set()
    for v in variables:
        if v.startswith("price_ratio_"):
            base = "price_" + v.removeprefix("price_ratio_")
            read.setdefault(base, set()).update([longest] if longest is not None else [])
            sums.add(base)
            continue
        base, _, w = v.rpartition("_")
        if not base or w not in windows or v.endswith(tuple(f"_{n}" for n in STAT_NAMES)):
            continue
        if base.endswith("_sum"):
            base = base.removesuffix("_sum") + "_count"
            sums.add(base)
        read.setdefault(base, set()).add(w)
    return {c: Kept(tuple(n for n in names if n in ws), c in sums) for c, ws in read.items()}


class Layout(NamedTuple):
    """How one counter is kept by an engine: ``widths`` (seconds), the ``features`` each fills, sums or not."""

    widths: tuple[int, ...]
    features: tuple[tuple[str, str | None], ...]
    sums: bool


def layout(name: str, windows: Mapping[str, int], kept: Mapping[str, Kept] | None, summable: bool) -> Layout:
    """The :class:`Layout` of counter ``name`` (``kept``: :func:`counters_kept` of the rules, ``None``: every
    window, sums where ``summable``). A price history keeps its longest window only (its ratio reads no other)."""
    if name.startswith("price_"):
        longest = max(windows, key=lambda n: windows[n]) if windows else None
        wanted: tuple[str, ...] = (longest,) if longest is not None and (kept is None or name in kept) else ()
        return Layout(tuple(windows[n] for n in wanted), (), True)
    k = kept.get(name) if kept is not None else Kept(tuple(windows), summable)
    if k is None:
        return Layout((), (), False)
    sums = summable and k.sums
    sum_name = name.removesuffix("_count") + "_sum"
    return Layout(tuple(windows[n] for n in k.windows),
                  tuple((f"{name}_{n}", f"{sum_name}_{n}" if sums else None) for n in k.windows), sums)


class PlanSpec(NamedTuple):
    """What :func:`plan` does at one checkpoint for one engine's rules, worked out once (:func:`plan_spec`)."""

    checkpoint: Checkpoint
    names: tuple[str, ...]  # the subject values to look up
    counted: tuple[tuple[str, str, str, Layout], ...]  # (subject, counter name, key prefix, layout)
    failing: tuple[tuple[str, tuple[tuple[str, str, Layout], ...]], ...]  # (subject, ((name, key prefix, layout), …))
    stats: str | None  # the subject whose amount histogram is read
    first: str | None  # the first-seen subject
    new_per: Layout | None  # count new payers per NEW_PER
    prices: tuple[tuple[str, Layout], ...]  # buyer: the price-history subjects read


def plan_spec(cp: Checkpoint, windows: Mapping[str, int], needed: frozenset[str] | None = None,
              kept: Mapping[str, Kept] | None = None) -> PlanSpec:
    """The :class:`PlanSpec` of ``cp``: with ``needed`` (:func:`counters_read` of ``cp``'s rules) only those
    counters, each keeping the windows ``kept`` says (:func:`counters_kept` of every checkpoint's rules: a
    counter key is shared by the checkpoints that count it); ``None``: every counter, every window."""
    def lay(name: str, summable: bool) -> Layout:
        return layout(name, windows, kept if needed is not None else None, summable)

    names = tuple(sorted({*SUBJECTS[cp], *FAILING[cp], *LISTED[cp], "payer", "payee"}))
    counted = tuple((s, f"{s}_count", f"c:{s}:", lay(f"{s}_count", s in SUMMED and cp != "request"))
                    for s in SUBJECTS[cp] if needed is None or f"{s}_count" in needed)
    failing = tuple((s, tuple((f"{s}_{kind}", f"{_fkey(kind)}:{s}:", lay(f"{s}_{kind}", False))
                              for kind in ("failures", *FAILURE_KINDS)
                              if needed is None or f"{s}_{kind}" in needed)) for s in FAILING[cp])
    stats = STATS[cp] if cp in STATS and (needed is None or STATS_COUNTER in needed) else None
    first = FIRST_SEEN.get(cp) if needed is None or FIRST_SEEN_COUNTER in needed else None
    new_per = (lay(f"{NEW_PER}_new_payers", False)
               if cp == "payment" and (needed is None or f"{NEW_PER}_new_payers" in needed) else None)
    prices = tuple((s, lay(f"price_{s}", True)) for s in ("host", "route")
                   if cp == "buyer" and (needed is None or f"price_{s}" in needed))
    return PlanSpec(cp, names, counted, tuple(f for f in failing if f[1]), stats, first, new_per, prices)


@functools.lru_cache(maxsize=64)
def _full_spec(cp: Checkpoint, windows: tuple[tuple[str, int], ...]) -> PlanSpec:
    return plan_spec(cp, dict(windows))


def plan(event: Event, spec: PlanSpec | None = None) -> Plan:
    """The counters ``event`` bumps and reads, as ``spec`` (:func:`plan_spec`) says; ``None``: every counter
    over the default windows."""
    spec = spec if spec is not None else _full_spec(event.checkpoint, tuple(DEFAULT_WINDOWS.items()))
    amount = event.value if spec.checkpoint != "request" else 0.0
    values = {s: subject_value(event, s) for s in spec.names}
    counters: list[Counter] = []
    for subject, name, prefix, lay in spec.counted:
        value = values[subject]
        if value is not None:
            counters.append(Counter(name, prefix + value, 1, amount if lay.sums else 0.0, lay.sums, False,
                                    lay.widths, lay.features))
    for subject, kinds in spec.failing:
        value = values[subject]
        if value is not None:
            for name, prefix, lay in kinds:
                counters.append(Counter(name, prefix + value, 0, 0.0, False, False, lay.widths, lay.features))
    stats = None
    if spec.stats is not None and (value := values[spec.stats]) is not None:
        stats = f"a:{spec.stats}:{value}"
    first = None
    if spec.first is not None and (value := values[spec.first]) is not None:
        first = f"s:{spec.first}:{value}"
        ip = values[NEW_PER] if spec.new_per is not None else None
        if ip is not None and spec.new_per is not None:
            lay = spec.new_per
            counters.append(Counter(f"{NEW_PER}_new_payers", f"n:{NEW_PER}:{ip}", 1, 0.0, False, True,
                                    lay.widths, lay.features))
    for subject, lay in spec.prices:
        value = values[subject]
        if value is not None:
            counters.append(Counter(f"price_{subject}", f"p:{subject}:{value}", 0, 0.0, True, False, lay.widths))
    return Plan(tuple(counters), first, values, stats)


def paid_counters(event: Event) -> tuple[Counter, ...]:
    """Buyer: the price-history counters a payment actually made bumps (the price it paid)."""
    return tuple(Counter(f"price_{s}", f"p:{s}:{v}", 1, event.value, True)
                 for s in ("host", "route") if (v := subject_value(event, s)) is not None)


def _fkey(kind: str) -> str:
    return "f" if kind == "failures" else "f" + kind


def failure_counters(event: Event, kind: str = "invalid") -> tuple[Counter, ...]:
    """The failure counters a failed outcome of ``event`` bumps: every kind's, and ``kind``'s
    (:func:`failure_kind` of a reason code)."""
    out = []
    kind = failure_kind(kind)
    for subject in FAILING[event.checkpoint]:
        value = subject_value(event, subject)
        if value is not None:
            out.append(Counter(f"{subject}_failures", f"f:{subject}:{value}", 1, 0.0, False))
            out.append(Counter(f"{subject}_{kind}", f"{_fkey(kind)}:{subject}:{value}", 1, 0.0, False))
    return tuple(out)


def stats_key(event: Event) -> str | None:
    """The amount histogram an outcome of ``event`` joins (``None``: its checkpoint keeps none)."""
    subject = STATS.get(event.checkpoint)
    value = subject_value(event, subject) if subject else None
    return f"a:{subject}:{value}" if value is not None else None


_DERIVED = frozenset({"amount", "amount_units", "price_ratio_host", "price_ratio_route", "amount_vs_p99"})


@functools.lru_cache(maxsize=64)
def _scalar_names(checkpoint: Checkpoint) -> tuple[tuple[str, bool], ...]:
    """The event values a checkpoint exposes as they are: (name, read from the subject values)."""
    return tuple((n, n in ("payer", "payee")) for n in SCALARS[checkpoint] if n not in _DERIVED)


def build(event: Event, p: Plan, seen: Observed, windows: Mapping[str, int],
          listed: Mapping[str, bool]) -> dict[str, Any]:
    """The flat feature map for ``event``: defaults, then the event's values, the counters, lists, prices."""
    cp = event.checkpoint
    wnames = tuple(windows)
    out = dict(_defaults(cp, wnames))
    scalars = SCALARS[cp]
    for name, from_values in _scalar_names(cp):
        value = p.values[name] if from_values else getattr(event, name)
        out[name] = value if value is not None else scalars[name]
    if "amount" in out:
        out["amount"], out["amount_units"] = event.value, event.amount
    got = seen.windows
    for c in p.counters:
        values = got.get(c.key, ())  # () when the backend was down: the defaults stay
        if c.features:
            if values:  # one (count, sum) per feature pair; indexed, as zip(strict=False) costs a keyword call
                for i, (cname, sname) in enumerate(c.features):
                    count, total = values[i]
                    out[cname] = count
                    if sname is not None:
                        out[sname] = total
        elif c.name.startswith("price_"):  # mean price paid over the longest window (its only one) → ratio
            count, total = values[0] if values else (0, 0.0)
            mean = total / count if count else 0.0
            out[f"price_ratio_{c.name[6:]}"] = event.value / mean if mean > 0 else 1.0
    if p.stats is not None:
        subject = STATS[cp]
        n, mean, p99 = seen.stats
        out[f"{subject}_amount_samples"], out[f"{subject}_amount_mean"], out[f"{subject}_amount_p99"] = n, mean, p99
        out["amount_vs_p99"] = event.value / p99 if p99 > 0 else 0.0
    first = FIRST_SEEN.get(cp)
    if first and p.first_seen is not None:
        out[f"{first}_age"] = seen.first_seen_age or 0.0
        out[f"{first}_new"] = seen.known and seen.first_seen_age is None
    if listed:
        out.update(listed)
    return out


def windows_from(spec: Mapping[str, int] | Sequence[str] | None) -> dict[str, int]:
    """``{"1m": 60, …}`` from a mapping or names such as ``"5m"``, ``"1h"``, ``"24h"``, ``"30s"``."""
    if spec is None:
        return dict(DEFAULT_WINDOWS)
    if isinstance(spec, Mapping):
        return {str(k): int(v) for k, v in spec.items()}
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    out = {}
    for name in spec:
        if len(name) < 2 or name[-1] not in units or not name[:-1].isdigit() or int(name[:-1]) <= 0:
            raise ValueError(f"window {name!r}: expected a number and s/m/h/d, such as '1m' or '24h'")
        out[name] = int(name[:-1]) * units[name[-1]]
    return out
