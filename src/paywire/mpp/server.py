"""Sans-I/O seller side of the Payment scheme: issue challenges, judge credentials, build replies.

``MppServer.check`` runs the core checks of checklist 105–112 in order (parse, HMAC binding, realm,
method/intent, request and opaque against the route's offers, body digest, expiry) and returns ``Accepted``
or a ``Problem``; the method then verifies its payload and the store makes the challenge single-use
(see :mod:`paywire.mpp.redeem`).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

from paywire.errors import WireError
from paywire.mpp import problems as P
from paywire.mpp.accept import rank_offers
from paywire.mpp.challenge import Challenge, ChallengeBinder, decode_json_param, encode_json_param
from paywire.mpp.credential import MULTIPLE, Credential, extract_payment_credentials, parse_authorization
from paywire.mpp.digest import content_digest, digest_matches
from paywire.mpp.jcs import JcsError, canonicalize
from paywire.mpp.problems import Problem
from paywire.mpp.receipt import HEADER as RECEIPT_HEADER
from paywire.mpp.receipt import Receipt
from paywire.mpp.timefmt import format_rfc3339, parse_rfc3339

NONCE_KEY: Final = "_mpp_nonce"
"""Opaque key holding a random nonce so two challenges never share an id (pympp's convention)."""
DEFAULT_TTL: Final = 300


@dataclass(frozen=True, slots=True)
class Offer:
    """One way a route can be paid: method, intent and the (method-shaped) ``request`` object.

    ``not_after`` caps the challenge expiry (a Lightning invoice's own expiry, for example).
    """

    method: str
    intent: str
    request: Mapping[str, Any]
    description: str | None = None
    opaque: Mapping[str, str] | None = None
    ttl: int | None = None
    not_after: float | None = None
    header: str | None = None
    dynamic: frozenset[str] = frozenset()
    """``methodDetails`` keys that differ per challenge (a Lightning invoice) and are ignored when matching."""

    def matches(self, request: Mapping[str, Any]) -> bool:
        """Same request as this offer, ``dynamic`` method details aside (JCS comparison)."""
        return canonicalize(_strip(self.request, self.dynamic)) == canonicalize(_strip(request, self.dynamic))


def _strip(request: Mapping[str, Any], keys: frozenset[str]) -> Mapping[str, Any]:
    details = request.get("methodDetails")
    if not keys or not isinstance(details, Mapping):
        return request
    return {**request, "methodDetails": {k: v for k, v in details.items() if k not in keys}}


@dataclass(frozen=True, slots=True)
class Accepted:
    """A credential whose challenge this server issued for this route, unexpired and body-bound."""

    credential: Credential
    challenge: Challenge
    offer: Offer
    expires_at: float


@dataclass(frozen=True, slots=True)
class Reply:
    """An HTTP answer: status, headers (repeatable) and body."""

    status: int
    headers: list[tuple[str, str]] = field(default_factory=list)
    body: bytes = b""

    def header(self, name: str) -> str | None:
        low = name.lower()
        return next((v for k, v in self.headers if k.lower() == low), None)

    def header_values(self, name: str) -> list[str]:
        low = name.lower()
        return [v for k, v in self.headers if k.lower() == low]


def _canon(obj: Mapping[str, Any] | None) -> bytes | None:
    return None if obj is None else canonicalize(obj)


class MppServer:
    """Challenges and credential checks for one ``realm`` (identical on every replica, it is HMAC-bound)."""

    def __init__(
        self,
        realm: str,
        binder: ChallengeBinder,
        *,
        default_ttl: int = DEFAULT_TTL,
        unique_challenges: bool = True,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if not realm:
            raise ValueError("realm must be non-empty")
        self.realm = realm
        self.binder = binder
        self.default_ttl = default_ttl
        self.unique_challenges = unique_challenges
        self.clock = clock

    # -- issuing ------------------------------------------------------------------------------------
    def issue(self, offer: Offer, *, body: bytes | None = None, now: float | None = None) -> Challenge:
        """A fresh challenge for ``offer``; ``body`` (non-empty) is bound through ``digest``."""
        t = self.clock() if now is None else now
        expires_at = t + (offer.ttl if offer.ttl is not None else self.default_ttl)
        if offer.not_after is not None:
            expires_at = min(expires_at, offer.not_after)
        opaque: dict[str, str] | None = dict(offer.opaque) if offer.opaque is not None else None
        if self.unique_challenges:
            opaque = {**(opaque or {}), NONCE_KEY: os.urandom(32).hex()}
        return Challenge.create(
            self.binder, realm=self.realm, method=offer.method, intent=offer.intent, request=offer.request,
            expires=format_rfc3339(expires_at), digest=content_digest(body) if body else None,
            description=offer.description, opaque=opaque, header=offer.header,
        )

    def issue_all(self, offers: Sequence[Offer], *, accept_payment: str | None = None,
                  body: bytes | None = None) -> list[Challenge]:
        """One challenge per offer, filtered and ordered by ``Accept-Payment``."""
        order = rank_offers([(o.method, o.intent) for o in offers], accept_payment)
        now = self.clock()
        return [self.issue(offers[i], body=body, now=now) for i in order]

    # -- replies ------------------------------------------------------------------------------------
    def reply_problem(self, problem: Problem, offers: Sequence[Offer], *, accept_payment: str | None = None,
                      body: bytes | None = None) -> Reply:
        """The error reply: 402s get fresh challenges and ``Cache-Control: no-store`` (checklist 104/108)."""
        headers: list[tuple[str, str]] = [("Content-Type", P.CONTENT_TYPE), ("Cache-Control", "no-store")]
        if problem.wants_challenge:
            challenges = self.issue_all(offers, accept_payment=accept_payment, body=body)
            headers.extend(("WWW-Authenticate", c.to_header()) for c in challenges)
            if problem.challenge_id is None and challenges:
                problem = problem.with_challenge_id(challenges[0].id)
        return Reply(problem.status, headers, problem.body())

    def reply_payment_required(self, offers: Sequence[Offer], *, accept_payment: str | None = None,
                               body: bytes | None = None, detail: str = "") -> Reply:
        return self.reply_problem(
            Problem(P.PAYMENT_REQUIRED, detail or f'Payment is required for "{self.realm}".'),
            offers, accept_payment=accept_payment, body=body,
        )

    @staticmethod
    def receipt_headers(receipt: Receipt) -> list[tuple[str, str]]:
        """``Payment-Receipt`` plus ``Cache-Control: private`` for a paid 2xx (checklist 111)."""
        return [(RECEIPT_HEADER, receipt.to_header()), ("Cache-Control", "private")]

    # -- checking -----------------------------------------------------------------------------------
    @staticmethod
    def has_credential(authorization: str | None) -> bool:
        return bool(authorization) and bool(extract_payment_credentials(str(authorization)))

    def check(self, authorization: str | None, offers: Sequence[Offer], *, body: bytes | None = None,
              now: float | None = None) -> Accepted | Problem | None:
        """None when no Payment credential was sent; else ``Accepted`` or the ``Problem`` to answer with."""
        if not authorization or not extract_payment_credentials(authorization):
            return None
        try:
            cred = parse_authorization(authorization)
        except WireError as exc:
            if exc.reason == MULTIPLE:
                return Problem(P.MALFORMED_CREDENTIAL, "send exactly one Payment credential", status=400)
            return Problem(P.MALFORMED_CREDENTIAL, exc.detail or "credential is malformed")
        e = cred.challenge
        try:
            request = decode_json_param(e.request, "challenge.request")
            opaque = decode_json_param(e.opaque, "challenge.opaque") if e.opaque is not None else None
        except WireError as exc:
            return Problem(P.MALFORMED_CREDENTIAL, exc.detail, challenge_id=e.id)
        if opaque is not None and not all(isinstance(v, str) for v in opaque.values()):
            return Problem(P.MALFORMED_CREDENTIAL, "challenge.opaque is not a string map", challenge_id=e.id)
        if not self._bound(cred, request, opaque):
            return Problem(P.INVALID_CHALLENGE, "challenge was not issued by this server", challenge_id=e.id)
        if e.realm != self.realm:
            return Problem(P.INVALID_CHALLENGE, "challenge was issued for another realm", challenge_id=e.id)
        same_method = [o for o in offers if o.method == e.method]
        if not same_method:
            return Problem(P.METHOD_UNSUPPORTED, f'payment method "{e.method}" is not accepted here',
                           challenge_id=e.id)
        try:
            app_opaque = {k: v for k, v in (opaque or {}).items() if k != NONCE_KEY} or None
            want_opaque = _canon(app_opaque)
            offer = next((o for o in same_method if o.intent == e.intent and o.matches(request)
                          and _canon(o.opaque or None) == want_opaque), None)
        except JcsError:
            offer = None
        if offer is None:
            return Problem(P.INVALID_CHALLENGE, "credential does not match this route's offer", challenge_id=e.id)
        if e.digest is not None:
            if not digest_matches(e.digest, body or b""):
                return Problem(P.INVALID_CHALLENGE, "request body does not match the challenge digest",
                               challenge_id=e.id)
        elif body:
            return Problem(P.INVALID_CHALLENGE, "challenge does not bind this request body", challenge_id=e.id)
        if not e.expires:
            return Problem(P.INVALID_CHALLENGE, "challenge has no expires", challenge_id=e.id)
        try:
            expires_at = parse_rfc3339(e.expires)
        except WireError:
            return Problem(P.INVALID_CHALLENGE, "challenge expires is not RFC 3339", challenge_id=e.id)
        t = self.clock() if now is None else now
        if expires_at <= t:
            return Problem(P.PAYMENT_EXPIRED, f"challenge expired at {e.expires}", challenge_id=e.id)
        challenge = Challenge(e.id, e.realm, e.method, e.intent, request, e.request, e.expires, e.digest,
                              e.description, opaque, e.opaque, e.header)
        return Accepted(cred, challenge, offer, expires_at)

    def _bound(self, cred: Credential, request: dict[str, Any], opaque: dict[str, Any] | None) -> bool:
        e = cred.challenge
        if self.binder.matches(e.id, e.realm, e.method, e.intent, e.request, e.expires, e.digest, e.opaque,
                               header=e.header):
            return True
        # A client that re-serialized request/opaque (same JSON, other bytes): bind the canonical form.
        try:
            req_b64 = encode_json_param(request)
            op_b64 = encode_json_param(opaque) if opaque is not None else None
        except WireError:
            return False
        if req_b64 == e.request and op_b64 == e.opaque:
            return False
        return self.binder.matches(e.id, e.realm, e.method, e.intent, req_b64, e.expires, e.digest, op_b64,
                                   header=e.header)
