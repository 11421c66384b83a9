"""What an MPP payment method provides: a pure payload check and an async settlement."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar

from paywire.errors import WireError
from paywire.mpp.problems import Problem
from paywire.mpp.server import Accepted


@dataclass(frozen=True, slots=True)
class Verified:
    """A payload that passed the method's checks; ``replay_key`` identifies the proof for single use."""

    accepted: Accepted
    replay_key: str
    payer: str | None = None
    amount: str | None = None
    currency: str | None = None
    data: Any = None


@dataclass(frozen=True, slots=True)
class Settled:
    """The money moved; ``reference`` goes into the receipt (tx hash, payment hash, …)."""

    reference: str
    receipt_extra: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Refused:
    """Definitively not paid; ``nothing_moved`` lets the store release the claim so the payer may retry."""

    problem: Problem
    nothing_moved: bool = True


@dataclass(frozen=True, slots=True)
class Unknown:
    """The outcome is unknown (a transaction was sent, no receipt yet): keep the claim, never re-challenge."""

    detail: str
    reference: str | None = None


class MppMethod(Protocol):
    """One ``method``/``intent`` pair on the seller side."""

    method: str
    intent: str

    def verify(self, accepted: Accepted, now: float) -> Verified | Problem:
        """Pure checks of ``accepted.credential.payload`` against ``accepted.challenge.request``."""
        ...

    async def settle(self, verified: Verified) -> Settled | Refused | Unknown:
        """Move (or confirm) the money."""
        ...


def reject_unknown(obj: Mapping[str, Any], allowed: Iterable[str], what: str, reason: str) -> None:
    """Strict parsing: ``WireError(reason)`` naming the first field of ``obj`` that is not ``allowed``."""
    unknown = set(obj) - set(allowed)
    if unknown:
        raise WireError(reason, f"unknown {what} field {sorted(unknown)[0]!r}")


_Req = TypeVar("_Req")
_Pay = TypeVar("_Pay")


def parse_charge(accepted: Accepted, parse_request: Callable[[Mapping[str, Any]], _Req],
                 parse_payload: Callable[[Mapping[str, Any]], _Pay]) -> tuple[_Req, _Pay] | Problem:
    """A method's strict view of an accepted credential: (request, payload), or the problem to answer with
    (a bad request is ``verification-failed``: our own challenge; a bad payload is ``malformed-credential``)."""
    from paywire.mpp import problems as P

    try:
        req = parse_request(accepted.challenge.request)
    except WireError as exc:
        return Problem(P.VERIFICATION_FAILED, f"request: {exc.detail}")
    try:
        payload = parse_payload(accepted.credential.payload)
    except WireError as exc:
        return Problem(P.MALFORMED_CREDENTIAL, exc.detail)
    return req, payload
