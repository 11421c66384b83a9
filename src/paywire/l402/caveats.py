"""L402 first-party caveats and their satisfiers (digest §10.2/10.3, checklist 101).

Caveats are ``condition=value``. Known conditions (``services``, ``<svc>_capabilities``,
``<svc>_valid_until``) may repeat, but each later one must be at least as strict as the one before
(attenuation): ``services`` a subset of the earlier services, each at a tier no higher than before (tiers are
uint8, 0 the base tier); capabilities a subset; an expiry no later. The last one must hold for this request.
Unknown conditions are skipped, so holders can attenuate for third parties.

``identity=<DID>[,<DID>…]`` binds a token to identities (docs/identity.md): the request must also prove one
of them (Sign-In-With-X, an RFC 9421 agent signature; a wallet address listed stands for its ``did:pkh``), so a
stolen token is useless without the holder's key. Later identity caveats may only drop names.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Final

SERVICES: Final = "services"
IDENTITY: Final = "identity"
CAPABILITIES_SUFFIX: Final = "_capabilities"
VALID_UNTIL_SUFFIX: Final = "_valid_until"
MAX_TIER: Final = 255
_SERVICE_RE: Final = re.compile(r"([^,:\s]+):(\d{1,3})")


class CaveatError(Exception):
    """A caveat is malformed, widens an earlier one, or does not allow this request."""


@dataclass(frozen=True, slots=True)
class Caveat:
    condition: str
    value: str

    @classmethod
    def parse(cls, text: str) -> Caveat:
        cond, sep, value = text.partition("=")
        if not sep or not cond.strip():
            raise CaveatError(f"caveat {text[:60]!r} is not condition=value")
        return cls(cond.strip(), value.strip())

    def __str__(self) -> str:
        return f"{self.condition}={self.value}"


def services_caveat(services: dict[str, int] | Iterable[str]) -> Caveat:
    """``services=name:tier,…`` (tier 0 for bare names)."""
    items = services.items() if isinstance(services, dict) else ((s, 0) for s in services)
    return Caveat(SERVICES, ",".join(f"{n}:{t}" for n, t in items))


def capabilities_caveat(service: str, capabilities: Iterable[str]) -> Caveat:
    return Caveat(service + CAPABILITIES_SUFFIX, ",".join(capabilities))


def valid_until_caveat(service: str, unix_seconds: int) -> Caveat:
    return Caveat(service + VALID_UNTIL_SUFFIX, str(int(unix_seconds)))


def decode_services(value: str) -> dict[str, int]:
    out: dict[str, int] = {}
    for part in value.split(","):
        m = _SERVICE_RE.fullmatch(part.strip())
        if m is None or int(m.group(2)) > MAX_TIER:
            raise CaveatError(f"bad services entry {part[:40]!r}")
        if m.group(1) in out:
            raise CaveatError(f"service {m.group(1)[:40]!r} listed twice")
        out[m.group(1)] = int(m.group(2))
    if not out:
        raise CaveatError("empty services caveat")
    return out


def _int(value: str, what: str) -> int:
    if re.fullmatch(r"-?\d{1,19}", value) is None:
        raise CaveatError(f"{what} is not an integer")
    return int(value)


@dataclass(frozen=True, slots=True)
class Satisfier:
    condition: str
    previous: Callable[[Caveat, Caveat], None]  # raise if ``cur`` widens ``prev``
    final: Callable[[Caveat], None]  # raise if the last caveat does not allow the request


def services_satisfier(service: str) -> Satisfier:
    def previous(prev: Caveat, cur: Caveat) -> None:
        before, now = decode_services(prev.value), decode_services(cur.value)
        extra = set(now) - set(before)
        if extra:
            raise CaveatError(f"services caveat widens access to {sorted(extra)}")
        raised = sorted(f"{name} from {before[name]} to {tier}" for name, tier in now.items() if tier > before[name])
        if raised:
            raise CaveatError(f"services caveat raises the tier of {', '.join(raised)}")

    def final(c: Caveat) -> None:
        if service not in decode_services(c.value):
            raise CaveatError(f"token is not valid for service {service!r}")

    return Satisfier(SERVICES, previous, final)


def capabilities_satisfier(service: str, capability: str) -> Satisfier:
    def previous(prev: Caveat, cur: Caveat) -> None:
        extra = set(cur.value.split(",")) - set(prev.value.split(","))
        if extra:
            raise CaveatError(f"capabilities caveat widens access to {sorted(extra)}")

    def final(c: Caveat) -> None:
        if capability not in c.value.split(","):
            raise CaveatError(f"capability {capability!r} of {service!r} is not allowed")

    return Satisfier(service + CAPABILITIES_SUFFIX, previous, final)


def valid_until_satisfier(service: str, now: float) -> Satisfier:
    cond = service + VALID_UNTIL_SUFFIX

    def previous(prev: Caveat, cur: Caveat) -> None:
        if _int(cur.value, cond) > _int(prev.value, cond):
            raise CaveatError(f"{cond} caveat extends an earlier expiry")

    def final(c: Caveat) -> None:
        if not now < _int(c.value, cond):
            raise CaveatError(f"token for {service!r} expired")

    return Satisfier(cond, previous, final)


def identity_caveat(*names: str) -> Caveat:
    """``identity=<DID>,…``: the token serves only a request that proves one of ``names``."""
    if not names or any("," in n or "=" in n or not n.strip() for n in names):
        raise CaveatError("an identity caveat names one or more DIDs (without ',' or '=')")
    return Caveat(IDENTITY, ",".join(n.strip() for n in names))


def identity_satisfier(proven: Iterable[str]) -> Satisfier:
    """The request proved these names (its DID and linked addresses; none: no proof)."""
    have = {p.lower() for p in proven}

    def names(c: Caveat) -> set[str]:
        return {n.strip().lower() for n in c.value.split(",") if n.strip()}

    def previous(prev: Caveat, cur: Caveat) -> None:
        if names(cur) - names(prev):
            raise CaveatError("identity caveat widens the identities an earlier one allows")

    def final(c: Caveat) -> None:
        if not names(c) & have:
            raise CaveatError("token is bound to another identity: prove it (Sign-In-With-X or an agent signature)")

    return Satisfier(IDENTITY, previous, final)


def check_caveats(caveats: Sequence[Caveat], satisfiers: Sequence[Satisfier]) -> None:
    """Group by condition; successive caveats must narrow; the last must hold. Raises ``CaveatError``."""
    by_cond: dict[str, list[Caveat]] = {}
    for c in caveats:
        by_cond.setdefault(c.condition, []).append(c)
    for s in satisfiers:
        group = by_cond.get(s.condition)
        if not group:
            continue
        for prev, cur in itertools.pairwise(group):
            s.previous(prev, cur)
        s.final(group[-1])


def request_satisfiers(service: str, capability: str | None, now: float) -> list[Satisfier]:
    """The standard satisfiers for a request to ``service`` (and ``capability``) at ``now``."""
    out = [services_satisfier(service), valid_until_satisfier(service, now)]
    if capability is not None:
        out.append(capabilities_satisfier(service, capability))
    return out
