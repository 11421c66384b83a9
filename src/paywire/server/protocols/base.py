"""What every payment protocol implements on the seller, and the one 402 that carries all of a route's protocols.

A protocol (x402, MPP, L402 …) is one module in this package with a class that satisfies
:class:`SellerProtocol`: it issues its challenges for a route, parses a request's credential into
*proceed* (a :class:`~paywire.server.core.Proceed` the flow claims, verifies and settles exactly once),
*reject* (:class:`Reject`: answer with a problem and every fresh challenge) or *pass* (:class:`Admit`: a
reusable credential that checked out; the request goes through), builds the receipt headers of a paid response
and maps a verify/settle failure to its problem. ``paywire.server.flow`` only talks to this interface.

A route with more than one protocol answers an unpaid request with one reply (checklist 1, 95, 104): x402's 402
(``PAYMENT-REQUIRED`` and its JSON body), the other protocols' ``WWW-Authenticate`` challenges in the route's
``challenge_order`` (L402 first by default: Aperture-style clients read only the first value), and an
``application/problem+json`` body (RFC 9457, the problem types of ``paywire.mpp.problems``) that also keeps
the x402 fields; :func:`challenge_reply` builds it.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from paywire.lightning.base import LightningBackend
from paywire.mpp import problems as P
from paywire.mpp.problems import Problem
from paywire.server.core import Headers, PaidRoute, Pass, Priced, Proceed, Reply, Seller
from paywire.server.request import RequestInfo
from paywire.store.db import Database
from paywire.store.payments import NewPayment, PaymentRecord
from paywire.x402.models import PaymentRequirements, PaymentRequirementsV1, SettleResponse

NO_LIGHTNING = ("a route takes Lightning (mpp 'lightning' or l402): give the flow a Lightning backend "
                "(lightning=LnbitsBackend(url, invoice_key=…))")


@dataclass(frozen=True, slots=True)
class Reject:
    """A credential of this protocol that failed its checks: answer ``problem`` with fresh challenges.

    The reply is the route's x402 402 (with ``reason`` as its error) combined with every challenge of the
    route; ``status`` overrides the problem's status (L402: 401 for a token that does not verify)."""

    problem: Problem
    offers: tuple[PaymentRequirements, ...]
    status: int | None = None
    reason: str | None = None


@dataclass(frozen=True, slots=True)
class Admit:
    """A reusable credential that checked out: let the request through. ``payment`` is its ledger row (written
    once per ``auth_key``, on first use, as ``served`` with ``tx``)."""

    payment: NewPayment
    tx: str


@dataclass(frozen=True, slots=True)
class Challenges:
    """``WWW-Authenticate`` values, and the id of the first challenge (for the problem's ``challengeId``)."""

    headers: tuple[str, ...] = ()
    first_id: str | None = None


Parsed = Pass | Reply | Proceed | Reject | Admit | None
"""What a protocol makes of a request: None = it carries no credential of this protocol."""


@dataclass(frozen=True, slots=True)
class SellerContext:
    """What the seller's protocols may use: the route table and x402 rules, the Lightning node, options."""

    seller: Seller
    lightning: LightningBackend | None = None
    invoice_expiry: int = 600
    confirm_with_node: bool = False
    l402_reject_status: int = 401


class SellerProtocol(Protocol):
    """One payment protocol on the seller."""

    name: str
    """Its ledger name (``seller_payments.protocol``, ``PaymentInfo.protocol``)."""

    def takes(self, route: PaidRoute) -> bool:
        """Whether ``route`` accepts payments by this protocol."""

    def needs_lightning(self, route: PaidRoute) -> bool:
        """Whether this protocol needs a Lightning node on ``route``."""

    async def startup(self, db: Database) -> None:
        """Prepare what it keeps (tables) in the seller's database."""

    async def parse(self, route: PaidRoute, req: RequestInfo, priced: Priced) -> Parsed:
        """The request's credential of this protocol as proceed / reject / pass; None when it has none."""

    async def challenges(self, route: PaidRoute, req: RequestInfo) -> Challenges:
        """Fresh ``WWW-Authenticate`` challenges for an unpaid request (x402's challenge is the 402 itself)."""

    def receipt_headers(self, rec: PaymentRecord, res: SettleResponse,
                        app_headers: Sequence[tuple[str, str]]) -> Headers:
        """The headers of a paid response: the app's, with this protocol's receipt."""

    def failure_problem(self, reason: str) -> Problem | None:
        """A verify/settle failure ``reason`` as this protocol's problem (None: x402's own 402 says it)."""

    def used(self, p: Proceed) -> Reject | None:
        """A copy of an already claimed payment: None replays the recorded outcome; a :class:`Reject` answers
        protocols whose credentials are delivered once."""

    def facilitator_for(self, requirements: PaymentRequirements | PaymentRequirementsV1) -> Any | None:
        """Who verifies and settles this protocol's pairs, when not the seller's facilitator."""


class ProtocolDefaults:
    """The optional hooks of :class:`SellerProtocol` with their usual answers; a protocol overrides what it needs."""

    def needs_lightning(self, route: PaidRoute) -> bool:
        return False

    async def startup(self, db: Database) -> None:
        return None

    def failure_problem(self, reason: str) -> Problem | None:
        return None

    def used(self, p: Proceed) -> Reject | None:
        return None

    def facilitator_for(self, requirements: PaymentRequirements | PaymentRequirementsV1) -> Any | None:
        return None


def error_of(reply: Reply) -> Any:
    """The ``error`` field of a JSON reply body (None if there is none)."""
    try:
        return json.loads(reply.body).get("error") if reply.body else None
    except (ValueError, AttributeError):
        return None


async def challenge_reply(protocols: Sequence[SellerProtocol], route: PaidRoute, req: RequestInfo, reply: Reply,
                          problem: Problem | None = None, status: int | None = None) -> Reply:
    """Add the route's challenges (in its ``challenge_order``) to an x402 402: one reply, every way to pay.
    Replies that are not payment challenges (paywall page, 409, 503, already combined) are returned unchanged."""
    ctype = (reply.header("content-type") or "").lower()
    if reply.status not in (401, 402) or "text/html" in ctype or P.CONTENT_TYPE in ctype:
        return reply
    if problem is None:
        err = error_of(reply)
        generic = err in (None, "Payment required", "X-PAYMENT header is required")
        problem = Problem(P.PAYMENT_REQUIRED, "" if generic else str(err))
    if not problem.wants_challenge and status is None:  # 400 method-unsupported, 403
        return Reply(problem.status, (("content-type", P.CONTENT_TYPE), ("cache-control", "no-store")),
                     problem.body())
    headers: list[str] = []
    first_id: str | None = None
    ordered = challenge_order(protocols, route)
    # each protocol may wait on its own node (an L402 and an MPP lightning invoice): ask them all at once
    if len(ordered) == 1:
        all_issued = [await ordered[0].challenges(route, req)]
    else:
        all_issued = await asyncio.gather(*(proto.challenges(route, req) for proto in ordered))
    for issued in all_issued:
        headers += issued.headers
        first_id = first_id or issued.first_id
    if problem.challenge_id is None and first_id is not None:
        problem = problem.with_challenge_id(first_id)
    code, combined, body = combined_402(reply.headers, reply.body, headers, problem, status)
    return Reply(code, combined, body if req.method != "HEAD" else b"")


def challenge_order(protocols: Sequence[SellerProtocol], route: PaidRoute) -> list[SellerProtocol]:
    """``protocols`` in the order their challenges go out on ``route``: those its ``challenge_order`` names first,
    in that order, then the rest as given."""
    rank = {name: i for i, name in enumerate(route.challenge_order)}
    return sorted(protocols, key=lambda p: rank.get(p.name, len(rank)))  # stable: the rest keep their order


def combined_402(base_headers: Sequence[tuple[str, str]], base_body: bytes, challenges: Sequence[str],
                 problem: Problem, status: int | None = None) -> tuple[int, tuple[tuple[str, str], ...], bytes]:
    """x402's 402 (its ``PAYMENT-REQUIRED`` and JSON body) plus ``WWW-Authenticate`` challenges, as one
    problem+json reply with ``Cache-Control: no-store`` (checklist 104, 109)."""
    drop = {"content-type", "cache-control", "www-authenticate", "content-length"}
    headers = [(k, v) for k, v in base_headers if k.lower() not in drop]
    headers += [("content-type", P.CONTENT_TYPE), ("cache-control", "no-store")]
    headers += [("www-authenticate", c) for c in challenges]
    try:
        x402_body = json.loads(base_body) if base_body else {}
    except ValueError:
        x402_body = {}
    body: dict[str, Any] = dict(x402_body) if isinstance(x402_body, Mapping) else {}
    body.update(problem.to_wire())
    if status is not None:
        body["status"] = status
    return status or problem.status, tuple(headers), json.dumps(body, separators=(",", ":")).encode()


__all__ = [
    "NO_LIGHTNING",
    "Admit",
    "Challenges",
    "Parsed",
    "ProtocolDefaults",
    "Reject",
    "SellerContext",
    "SellerProtocol",
    "challenge_order",
    "challenge_reply",
    "combined_402",
    "error_of",
]
