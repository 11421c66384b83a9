"""The seller's protocol decisions (digest §3.3), free of any framework: what to answer, when to pay."""

from __future__ import annotations

import fnmatch
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from paywire.errors import WireError
from paywire.x402.codec import (
    PAYMENT_REQUIRED,
    PAYMENT_RESPONSE,
    PAYMENT_SIGNATURE,
    X_PAYMENT,
    X_PAYMENT_RESPONSE,
    decode_payment_signature,
    encode_header,
)
from paywire.x402.matching import find_matching_requirements, find_matching_v1
from paywire.x402.models import (
    PaymentPayload,
    PaymentPayloadV1,
    PaymentRequired,
    PaymentRequirements,
    PaymentRequirementsV1,
    ResourceInfo,
    SettleResponse,
    requirements_v2_to_v1,
)

EXPOSED_HEADERS = "PAYMENT-REQUIRED, PAYMENT-RESPONSE, X-PAYMENT-RESPONSE"


@dataclass(frozen=True, slots=True)
class PaidRoute:
    """A priced route: ``method`` (or ``*``) and a path pattern (``/weather``, ``/api/*``)."""

    path: str
    offers: tuple[PaymentRequirements, ...]
    method: str = "*"
    description: str = ""
    mime_type: str = "application/json"

    def matches(self, method: str, path: str) -> bool:
        if self.method not in ("*", method.upper()):
            return False
        return path == self.path or fnmatch.fnmatchcase(path, self.path)


@dataclass(frozen=True, slots=True)
class Reply:
    """A response the middleware sends itself (402 and friends)."""

    status: int
    headers: tuple[tuple[str, str], ...]
    body: bytes


@dataclass(frozen=True, slots=True)
class Proceed:
    """A decodable payment that matches one of the route's offers: verify it next."""

    payload: PaymentPayload | PaymentPayloadV1
    requirements: PaymentRequirements | PaymentRequirementsV1
    v1: bool


@dataclass(slots=True)
class Seller:
    """Route table plus the x402 exchange rules."""

    routes: Sequence[PaidRoute] = field(default_factory=tuple)

    def route_for(self, method: str, path: str) -> PaidRoute | None:
        for r in self.routes:
            if r.matches(method, path):
                return r
        return None

    def payment_required(self, route: PaidRoute, url: str, error: str | None = None) -> Reply:
        """402 with ``PAYMENT-REQUIRED`` (v2) and a v1 JSON body, so both generations can pay."""
        resource = ResourceInfo(url=url, description=route.description, mime_type=route.mime_type)
        pr = PaymentRequired(x402_version=2, accepts=route.offers, resource=resource,
                             error=error or "Payment required", extensions=None)
        v1 = {
            "x402Version": 1,
            "error": error or "X-PAYMENT header is required",
            "accepts": [requirements_v2_to_v1(o, resource).to_wire() for o in route.offers],
        }
        headers = (
            (PAYMENT_REQUIRED, encode_header(pr.to_wire())),
            ("content-type", "application/json"),
            ("cache-control", "no-store"),
            ("access-control-expose-headers", EXPOSED_HEADERS),
        )
        return Reply(402, headers, json.dumps(v1, separators=(",", ":")).encode())

    def inspect(self, route: PaidRoute, url: str, headers: Mapping[str, str]) -> Reply | Proceed:
        """Decode and match the payment header; anything wrong is a 402 with a reason (checklist 10, 11)."""
        v2 = headers.get(PAYMENT_SIGNATURE.lower())
        v1 = headers.get(X_PAYMENT.lower())
        raw = v2 if v2 is not None else v1
        if raw is None:
            return self.payment_required(route, url)
        try:
            payload = decode_payment_signature(raw)
        except WireError as exc:
            return self.payment_required(route, url, f"invalid payment header: {exc.reason}")
        if isinstance(payload, PaymentPayloadV1):
            resource = ResourceInfo(url=url, description=route.description, mime_type=route.mime_type)
            offers_v1 = [requirements_v2_to_v1(o, resource) for o in route.offers]
            m1 = find_matching_v1(offers_v1, payload)
            if m1 is None:
                return self.payment_required(route, url, "No matching payment requirements")
            return Proceed(payload, m1, True)
        m = find_matching_requirements(route.offers, payload.accepted)
        if m is None:
            return self.payment_required(route, url, "No matching payment requirements")
        return Proceed(payload, m, False)

    @staticmethod
    def settlement_headers(res: SettleResponse, v1: bool) -> tuple[tuple[str, str], ...]:
        name = X_PAYMENT_RESPONSE if v1 else PAYMENT_RESPONSE
        return ((name, encode_header(res.to_wire())), ("access-control-expose-headers", EXPOSED_HEADERS))
