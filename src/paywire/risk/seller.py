"""The seller's two risk checkpoints, as the payment flow calls them (:class:`SellerRisk`).

* ``request`` — before anything else: the client IP (and its /24), the route, the agent identity if any, the
  header size, the IP's recent failures;
* ``payment`` — once the payment is parsed (payer, amount, asset, network, the credential's identity) and
  before the facilitator is asked: a denial here costs no facilitator call and moves no money.

A ``deny`` is a 403 without a payment receipt: x402 gets ``{"error": "risk_denied", "reason", "rule"}``, MPP an
``application/problem+json`` (``verification-failed``, 403, with ``reason`` and ``rule``).

A ``challenge`` asks for an identity proof (:mod:`paywire.identity`): a Sign-In-With-X proof or an RFC 9421
agent signature that checks out passes it (its nonce is spent, so one proof passes once); at the ``request``
checkpoint a payment attached to the request passes it too (the payment then faces the ``payment`` checkpoint).
Otherwise the answer is the route's 402 with ``error`` ``risk_challenge:<reason>; bring …`` naming the proofs
it takes, and a fresh ``sign-in-with-x`` extension: paywire's buyer answers it by itself (``sign_in=True``, the
default; an ``agent_key`` signs every request anyway), resending the same payment with the proof. ``review``
is served and recorded. Outcomes of payments are fed back by kind (:meth:`SellerRisk.failed`) into the
failure counters, and the amounts of verified ones into the route's amount statistics.
"""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from paywire.mpp.problems import CONTENT_TYPE, VERIFICATION_FAILED, Problem
from paywire.risk.engine import RiskEngine
from paywire.risk.model import Checkpoint, Decision, Event
from paywire.server.core import EXPOSED_HEADERS, PaidRoute, Proceed, Reply, Seller, json_reply, scheme_payer
from paywire.server.request import RequestInfo
from paywire.x402.models import PaymentRequirements

DENIED = "risk_denied"
CHALLENGE = "risk_challenge"
PROOFS = ("bring an identity proof: a Sign-In-With-X proof (SIGN-IN-WITH-X header answering this 402's "
          "sign-in-with-x extension) or an RFC 9421 agent signature (Signature-Agent, Signature-Input, Signature)")


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


def _has_payment(req: RequestInfo) -> bool:
    return bool(req.header("payment-signature") or req.header("x-payment")
                or (req.header("authorization") or "")[:8].lower() == "payment ")


@dataclass
class SellerRisk:
    """The seller's side of a :class:`~paywire.risk.engine.RiskEngine`.

    ``trust_forwarded``: take the client IP from ``X-Forwarded-For`` (only behind a proxy that sets it).
    ``agent_of``: the agent identity of a request, when the seller knows one (e.g. a verified identity).
    ``metrics_token``: serve the Prometheus counters (decisions per checkpoint, rule and action; challenges;
    failures by kind; the state backend's health) at ``metrics_path`` to ``Authorization: Bearer <token>``;
    ``None`` (the default): no such route, the path is the app's.
    """

    engine: RiskEngine
    trust_forwarded: bool = False
    agent_of: Callable[[RequestInfo], str | None] | None = None
    metrics_token: str | None = None
    metrics_path: str = "/metrics"
    _flow: Any = field(default=None, init=False, repr=False)
    _gates: tuple[Any, Any] | None = field(default=None, init=False, repr=False)
    _db: Any = field(default=None, init=False, repr=False)

    async def startup(self, db: Any, flow: Any = None) -> None:
        """Called by the flow once its store is open: an engine without a recorder records into that store, and
        reads the allow/deny lists kept there (unless given another list store); a challenge checks identity proofs with the flow's settings (agent directories, EIP-1271 chains)."""
        from paywire.store.risk import RiskListStore, RiskRecords

        self.bind(db, flow)
        records = RiskRecords(db)
        await records.migrate()
        if self.engine.recorder is None:
            self.engine.recorder = records
        if self.engine.lists.store is None:  # `paywire risk lists add deny …` on the seller's store applies
            self.engine.lists.store = RiskListStore(db)

    def bind(self, db: Any, flow: Any = None) -> None:
        """Use ``db`` (the seller's store) for identity nonces and ``flow``'s identity settings."""
        self._db, self._flow, self._gates = db, flow, None

    def _event(self, checkpoint: Checkpoint, route: PaidRoute, req: RequestInfo, **fields: Any) -> Event:
        return Event(checkpoint, ip=client_ip(req, self.trust_forwarded), route=route.key, method=req.method,
                     agent=self.agent_of(req) if self.agent_of is not None else None,
                     header_bytes=sum(len(k) + len(v) + 4 for k, v in req.headers.items()), **fields)

    async def before_request(self, seller: Seller, route: PaidRoute, req: RequestInfo) -> Reply | None:
        """``request`` checkpoint: a reply to send instead (403, or 402 for a challenge), or ``None``."""
        event = self._event("request", route, req, has_payment=_has_payment(req))
        d = await self.engine.check(event)
        return await self._enforce(d, seller, route, req, None)

    def payment_event(self, p: Proceed, req: RequestInfo) -> Event:
        o = p.offer
        return self._event("payment", p.route, req, payer=p.payer or scheme_payer(o, p.payload.payload),
                           payee=o.pay_to, amount=o.amount, decimals=p.decimals, asset=o.asset, network=o.network,
                           scheme=o.scheme, protocol=p.protocol, payment_key=p.auth_key, has_payment=True)

    async def before_verify(self, seller: Seller, p: Proceed, req: RequestInfo) -> Reply | None:
        """``payment`` checkpoint, before the facilitator is asked: a reply to send instead, or ``None``."""
        d = await self.engine.check(self.payment_event(p, req))
        return await self._enforce(d, seller, p.route, req, p.protocol, p.offers)

    async def failed(self, p: Proceed, req: RequestInfo, kind: str = "invalid") -> None:
        """The payment failed (``kind``: the facilitator's invalid reason, or ``replay``): count it against its
        IP, network and payer, split by kind (failed verification, replay, underpayment, expiry)."""
        await self.engine.note_failure(self.payment_event(p, req), kind)

    async def rejected(self, route: PaidRoute, req: RequestInfo, outcome: Reply | str | None) -> None:
        """A payment the seller refused before any facilitator call (unreadable, not matching the offers, …):
        counted against the request's IP and network (kind from its reason) — a storm of junk payments meets
        ``failure_storm`` too. An unpaid request's 402 is not a failure."""
        if not _has_payment(req):
            return
        if isinstance(outcome, Reply):
            if outcome.status not in (400, 401, 402, 412):
                return
            from paywire.server.protocols.base import error_of

            outcome = str(error_of(outcome) or "invalid_payment")
        await self.engine.note_failure(self._event("request", route, req), outcome or "invalid_payment")

    async def verified(self, p: Proceed, req: RequestInfo) -> None:
        """The payment verified: its amount joins the route's amount statistics (mean, p99)."""
        await self.engine.note_amount(self.payment_event(p, req))

    def metrics_reply(self, req: RequestInfo) -> Reply | None:
        """The ``/metrics`` answer (401 without the token), or None when ``req`` is not for it."""
        if self.metrics_token is None or req.path != self.metrics_path:
            return None
        auth = req.header("authorization") or ""
        given = auth[7:].strip() if auth[:7].lower() == "bearer " else ""
        if not hmac.compare_digest(given.encode(), self.metrics_token.encode()):
            return Reply(401, (("content-type", "application/json"), ("www-authenticate", 'Bearer realm="metrics"'),
                               ("cache-control", "no-store")), b'{"error":"unauthorized"}')
        if req.method not in ("GET", "HEAD"):
            return Reply(405, (("allow", "GET, HEAD"),), b"")
        body = self.engine.metrics.render().encode()
        return Reply(200, (("content-type", "text/plain; version=0.0.4"), ("cache-control", "no-store")),
                     body if req.method == "GET" else b"")

    # -- challenges ------------------------------------------------------------------------------
    def _identity_gates(self, seller: Seller) -> tuple[Any, Any]:
        """(spending, peeking) identity gates: a proof the route's own identity step checks next is only
        peeked at here (that step spends its nonce), any other is spent here."""
        if self._gates is None:
            from paywire.server.identity import IdentityGate
            from paywire.store.risk import PeekNonces

            flow = self._flow
            private = bool(getattr(flow, "agent_directories_private", False))
            chains = getattr(flow, "identity_chains", None)
            spend = IdentityGate(seller, self._db, allow_private_directories=private, chains=chains)
            peek = IdentityGate(seller, self._db, directories=spend.directories, chains=chains)
            peek.store = PeekNonces(self._db, clock=seller.clock)
            self._gates = (spend, peek)
        return self._gates

    async def prove(self, seller: Seller, route: PaidRoute, req: RequestInfo,
                    offers: Sequence[PaymentRequirements], payer: str | None = None) -> tuple[Any, str | None]:
        """(the identity a request proves, or None; why its proof failed, or None when it brought none).
        ``payer``: the payment's payer, when known (the ``payment`` checkpoint)."""
        from paywire.identity.agent import AgentProof, claimed
        from paywire.identity.siwx import HEADER, SiwxProof

        if self._db is None:
            raise RuntimeError("SellerRisk.startup() (or bind()) has not run: its store is unknown")
        if self._gates is None:
            await self._identity_gates(seller)[0].store.migrate()
        spend, peek = self._identity_gates(seller)
        credential = seller.x402_header(route, req) or req.header("authorization")
        spent_on = hashlib.sha256(credential.encode()).hexdigest() if credential is not None else None
        failure = None
        if claimed(req.headers) is not None:
            gate = peek if route.identity in ("agent-sig", "required") else spend
            agent = await gate._agent_proof(req, spent_on)
            if isinstance(agent, AgentProof):
                return agent.identity, None
            failure = f"{agent.code}: {agent.message}"
        if req.header(HEADER) is not None and seller.siwx is not None:
            gate = peek if route.signs_in else spend
            signed = await gate._sign_in(route, req, tuple(offers), spent_on)
            if isinstance(signed, SiwxProof) and spent_on is not None:
                # with a payment the gate defers the nonce (docs/identity.md): signed by the payer itself it
                # needs none (a replay comes with that address's payment); anyone else's is spent here
                gate.take_deferred()
                if (payer or "").lower() != signed.address.lower() and not await gate.store.use_nonce(
                        signed.nonce, signed.expires_at, spent_on):
                    return None, "invalid_siwx_nonce_used: this sign-in was already used: answer a fresh 402"
            if isinstance(signed, SiwxProof):
                return signed.identity, None
            if signed is not None:
                failure = f"{signed.code}: {signed.message}"
        return None, failure

    async def _challenge(self, d: Decision, seller: Seller, route: PaidRoute, req: RequestInfo,
                         offers: Sequence[PaymentRequirements] | None) -> Reply | None:
        priced = offers if offers is not None else seller.offers_for(route, req)[0]
        payer = d.features.get("payer") or None if d.checkpoint == "payment" else None
        identity, failure = await self.prove(seller, route, req, priced, payer)
        if identity is not None:
            self.engine.metrics.challenged(d.checkpoint, "identity")
            return None
        if d.checkpoint == "request" and _has_payment(req):  # a payment answers it; the payment checkpoint judges it
            self.engine.metrics.challenged(d.checkpoint, "payment")
            return None
        self.engine.metrics.challenged(d.checkpoint, "failed" if failure else "issued")
        if seller.siwx is None:  # the challenge carries a sign-in; a fleet sets Seller(siwx=SiwxIssuer(secret))
            from paywire.identity.siwx import SiwxIssuer

            seller.siwx = SiwxIssuer()
        asks = PROOFS + (" or a fresh payment" if d.checkpoint == "request" else ", with the payment")
        error = f"{CHALLENGE}:{d.reason}; {asks}" + (f" (the one sent failed: {failure})" if failure else "")
        return seller.payment_required(dataclasses.replace(route, siwx=True), req, priced, error)

    async def _enforce(self, d: Decision, seller: Seller, route: PaidRoute, req: RequestInfo, protocol: str | None,
                       offers: Sequence[PaymentRequirements] | None = None) -> Reply | None:
        if d.allowed:
            return None
        if d.action == "challenge":
            return await self._challenge(d, seller, route, req, offers)
        return denial(d, _is_mpp(route, req, protocol))
