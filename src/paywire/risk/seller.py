"""The seller's two risk checkpoints, as the payment flow calls them (:class:`SellerRisk`).

* ``request`` — before anything else: the client IP (and its /24), the route, the agent identity if any, the
  header size, the IP's recent failures;
* ``payment`` — once the payment is parsed (payer, amount, asset, network, the credential's identity) and
  before the facilitator is asked: a denial here costs no facilitator call and moves no money.

A ``deny`` is a 403 without a payment receipt: x402 gets ``{"error": "risk_denied", "reason", "rule"}``, MPP an
``application/problem+json`` (``verification-failed``, 403, with ``reason`` and ``rule``). A ``challenge``
asks for a fresh payment: the route's 402 with ``error`` ``risk_challenge:<reason>``. ``review`` is served and
recorded. Verification failures are fed back (:meth:`SellerRisk.failed`) into the failure counters.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from paywire.mpp.problems import CONTENT_TYPE, VERIFICATION_FAILED, Problem
from paywire.risk.engine import RiskEngine
from paywire.risk.model import Checkpoint, Decision, Event
from paywire.server.core import EXPOSED_HEADERS, PaidRoute, Proceed, Reply, Seller, json_reply, scheme_payer
from paywire.server.request import RequestInfo
from paywire.x402.models import PaymentRequirements

DENIED = "risk_denied"
CHALLENGE = "risk_challenge"


def _is_mpp(route: PaidRoute, req: RequestInfo, protocol: str | None = None) -> bool:
    if protocol is not None:
        return protocol == "mpp"
    auth = req.header("authorization") or ""
    return auth[:8].lower() == "payment " or (not route.x402 and bool(route.mpp))


def denial(decision: Decision, mpp: bool) -> Reply:
    """The 403 for a denied request: JSON for x402 (no ``PAYMENT-RESPONSE``), problem+json for MPP."""
    reason = decision.reason or DENIED
    if mpp:
        problem = Problem(VERIFICATION_FAILED, f"refused by risk rule {decision.rule or 'fail mode'}: {reason}",
                          status=403, extra={"reason": reason, "rule": decision.rule})
        return Reply(403, (("content-type", CONTENT_TYPE), ("cache-control", "no-store"),
                           ("access-control-expose-headers", EXPOSED_HEADERS)), problem.body())
    return json_reply(403, {"error": DENIED, "reason": reason, "rule": decision.rule})


def client_ip(req: RequestInfo, trust_forwarded: bool) -> str | None:
    """The client address: the first ``X-Forwarded-For`` hop when the seller sits behind a trusted proxy."""
    if trust_forwarded:
        fwd = req.header("x-forwarded-for")
        if fwd:
            return fwd.split(",", 1)[0].strip() or req.client
    return req.client


@dataclass
class SellerRisk:
    """The seller's side of a :class:`~paywire.risk.engine.RiskEngine`.

    ``trust_forwarded``: take the client IP from ``X-Forwarded-For`` (only behind a proxy that sets it).
    ``agent_of``: the agent identity of a request, when the seller knows one (e.g. a verified identity).
    """

    engine: RiskEngine
    trust_forwarded: bool = False
    agent_of: Callable[[RequestInfo], str | None] | None = None

    async def startup(self, db: Any) -> None:
        """Called by the flow once its store is open: an engine without a recorder records into that store."""
        if self.engine.recorder is None:
            from paywire.store.risk import RiskRecords

            records = RiskRecords(db)
            await records.migrate()
            self.engine.recorder = records

    def _event(self, checkpoint: Checkpoint, route: PaidRoute, req: RequestInfo, **fields: Any) -> Event:
        return Event(checkpoint, ip=client_ip(req, self.trust_forwarded), route=route.key, method=req.method,
                     agent=self.agent_of(req) if self.agent_of is not None else None,
                     header_bytes=sum(len(k) + len(v) + 4 for k, v in req.headers.items()), **fields)

    async def before_request(self, seller: Seller, route: PaidRoute, req: RequestInfo) -> Reply | None:
        """``request`` checkpoint: a reply to send instead (403, or 402 for a challenge), or ``None``."""
        has_payment = bool(req.header("payment-signature") or req.header("x-payment")
                           or (req.header("authorization") or "")[:8].lower() == "payment ")
        event = self._event("request", route, req, has_payment=has_payment)
        d = await self.engine.check(event)
        return self._enforce(d, seller, route, req, None)

    def payment_event(self, p: Proceed, req: RequestInfo) -> Event:
        o = p.offer
        return self._event("payment", p.route, req, payer=p.payer or scheme_payer(o, p.payload.payload),
                           payee=o.pay_to, amount=o.amount, decimals=p.decimals, asset=o.asset, network=o.network,
                           scheme=o.scheme, protocol=p.protocol, payment_key=p.auth_key, has_payment=True)

    async def before_verify(self, seller: Seller, p: Proceed, req: RequestInfo) -> Reply | None:
        """``payment`` checkpoint, before the facilitator is asked: a reply to send instead, or ``None``."""
        d = await self.engine.check(self.payment_event(p, req))
        return self._enforce(d, seller, p.route, req, p.protocol, p.offers)

    async def failed(self, p: Proceed, req: RequestInfo) -> None:
        """The payment failed verification: count it against its IP, network and payer."""
        await self.engine.note_failure(self.payment_event(p, req))

    def _enforce(self, d: Decision, seller: Seller, route: PaidRoute, req: RequestInfo, protocol: str | None,
                 offers: Sequence[PaymentRequirements] | None = None) -> Reply | None:
        if d.allowed:
            return None
        if d.action == "challenge":
            priced = offers if offers is not None else seller.offers_for(route, req)[0]
            return seller.payment_required(route, req, priced, f"{CHALLENGE}:{d.reason}")
        return denial(d, _is_mpp(route, req, protocol))
