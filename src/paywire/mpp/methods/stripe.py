"""``stripe/charge`` (draft-stripe-charge-00): a card/wallet payment through a Stripe Shared Payment Token.

The request is ``{amount (smallest currency unit), currency, description?, externalId?, recipient?,
methodDetails: {networkId, paymentMethodTypes, metadata?}}`` and the credential payload ``{spt, externalId?}``
(field names read from pympp 0.16 and mppx 0.11). Parsing, request building and the payload checks are exact
and offline. Settlement confirms a PaymentIntent with the SPT at Stripe: :class:`StripeChargeMethod` refuses to
settle unless a live :class:`StripeSettler` (for example :class:`StripeApiSettler` with a secret key) is set.
"""

from __future__ import annotations

import base64
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final, Protocol

from paywire.errors import WireError
from paywire.mpp import problems as P
from paywire.mpp.challenge import Challenge
from paywire.mpp.credential import ChallengeEcho, Credential
from paywire.mpp.methods.base import Refused, Settled, Unknown, Verified, parse_charge, reject_unknown
from paywire.mpp.methods.tempo import no_backend
from paywire.mpp.problems import Problem
from paywire.mpp.server import Accepted, Offer

METHOD: Final = "stripe"
INTENT: Final = "charge"
API_BASE: Final = "https://api.stripe.com/v1"
API_VERSION: Final = "2026-07-29.preview"  # the machine-payments preview version pympp 0.16 pins
METADATA_MAX_KEYS: Final = 50

_UINT_RE: Final = re.compile(r"0|[1-9][0-9]{0,30}")
_CURRENCY_RE: Final = re.compile(r"[a-z]{3}")
_SPT_RE: Final = re.compile(r"spt_[A-Za-z0-9_]{1,255}")
_REQUEST_KEYS: Final = frozenset({"amount", "currency", "description", "externalId", "recipient", "extra",
                                  "methodDetails"})
_DETAIL_KEYS: Final = frozenset({"networkId", "paymentMethodTypes", "metadata"})


def _opt_str(req: Mapping[str, Any], key: str) -> str | None:
    value = req.get(key)
    if value is not None and not isinstance(value, str):
        raise WireError("invalid_request", f"{key} must be a string")
    return value


def _str_map(value: Any, what: str) -> dict[str, str] | None:
    if value is None:
        return None
    if not isinstance(value, dict) or not all(isinstance(v, str) for v in value.values()):
        raise WireError("invalid_request", f"{what} must be a string-to-string map")
    return dict(value)


@dataclass(frozen=True, slots=True)
class StripeChargeRequest:
    """The ``request`` of a ``stripe/charge`` challenge."""

    amount: int
    currency: str
    network_id: str
    payment_method_types: tuple[str, ...]
    metadata: Mapping[str, str] | None = None
    description: str | None = None
    external_id: str | None = None
    recipient: str | None = None
    extra: Mapping[str, str] | None = None

    @classmethod
    def from_request(cls, req: Mapping[str, Any]) -> StripeChargeRequest:
        """Strict parse; ``WireError("invalid_request")`` names the first problem."""
        reject_unknown(req, _REQUEST_KEYS, "request", "invalid_request")
        amount = req.get("amount")
        if not isinstance(amount, str) or _UINT_RE.fullmatch(amount) is None:
            raise WireError("invalid_request", "amount must be an integer string in the smallest currency unit")
        currency = req.get("currency")
        if not isinstance(currency, str) or _CURRENCY_RE.fullmatch(currency) is None:
            raise WireError("invalid_request", "currency must be a lowercase ISO 4217 code")
        details = req.get("methodDetails")
        if not isinstance(details, dict):
            raise WireError("invalid_request", "methodDetails is required")
        reject_unknown(details, _DETAIL_KEYS, "methodDetails", "invalid_request")
        network_id = details.get("networkId")
        if not isinstance(network_id, str) or not network_id:
            raise WireError("invalid_request", "methodDetails.networkId must be a non-empty string")
        types = details.get("paymentMethodTypes")
        if not isinstance(types, list) or not types or not all(isinstance(t, str) and t for t in types):
            raise WireError("invalid_request", "methodDetails.paymentMethodTypes must list payment method types")
        metadata = _str_map(details.get("metadata"), "methodDetails.metadata")
        if metadata is not None and ("externalId" in metadata or len(metadata) > METADATA_MAX_KEYS):
            raise WireError("invalid_request", "methodDetails.metadata is over Stripe's limits or uses externalId")
        return cls(int(amount), currency, network_id, tuple(types), metadata, _opt_str(req, "description"),
                   _opt_str(req, "externalId"), _opt_str(req, "recipient"), _str_map(req.get("extra"), "extra"))

    def to_request(self) -> dict[str, Any]:
        details: dict[str, Any] = {"networkId": self.network_id, "paymentMethodTypes": list(self.payment_method_types)}
        if self.metadata is not None:
            details["metadata"] = dict(self.metadata)
        req: dict[str, Any] = {"amount": str(self.amount), "currency": self.currency, "methodDetails": details}
        for key, value in (("description", self.description), ("externalId", self.external_id),
                           ("recipient", self.recipient)):
            if value is not None:
                req[key] = value
        if self.extra is not None:
            req["extra"] = dict(self.extra)
        return req


def stripe_charge_request(amount: int, currency: str, *, network_id: str,
                          payment_method_types: Sequence[str] = ("card",), metadata: Mapping[str, str] | None = None,
                          description: str | None = None, external_id: str | None = None,
                          recipient: str | None = None) -> dict[str, Any]:
    """A validated ``stripe/charge`` request (``amount`` in the smallest currency unit, e.g. cents)."""
    req = StripeChargeRequest(amount, currency, network_id, tuple(payment_method_types),
                              dict(metadata) if metadata is not None else None, description, external_id, recipient)
    wire = req.to_request()
    StripeChargeRequest.from_request(wire)
    return wire


def stripe_offer(amount: int, currency: str, *, network_id: str, description: str | None = None,
                 **kw: Any) -> Offer:
    """A route offer for :class:`paywire.mpp.server.MppServer`."""
    return Offer(METHOD, INTENT, stripe_charge_request(amount, currency, network_id=network_id, **kw),
                 description=description)


@dataclass(frozen=True, slots=True)
class StripePayload:
    """``{spt, externalId?}``: the Shared Payment Token, and the echo of the request's ``externalId``."""

    spt: str
    external_id: str | None = None

    @classmethod
    def from_payload(cls, payload: Mapping[str, Any]) -> StripePayload:
        reject_unknown(payload, {"spt", "externalId"}, "payload", "malformed_credential")
        spt = payload.get("spt")
        if not isinstance(spt, str) or _SPT_RE.fullmatch(spt) is None:
            raise WireError("malformed_credential", "payload.spt must be a Shared Payment Token (spt_…)")
        ext = payload.get("externalId")
        if ext is not None and not isinstance(ext, str):
            raise WireError("malformed_credential", "payload.externalId must be a string")
        return cls(spt, ext)

    def to_payload(self) -> dict[str, str]:
        out = {"spt": self.spt}
        if self.external_id is not None:
            out["externalId"] = self.external_id
        return out


def stripe_credential(challenge: Challenge, spt: str) -> Credential:
    """Buyer side: the credential for an SPT minted for this challenge (echoing the request's externalId)."""
    ext = challenge.request.get("externalId")
    payload = StripePayload(spt, ext if isinstance(ext, str) else None)
    return Credential(ChallengeEcho.of(challenge), payload.to_payload())


class StripeSettler(Protocol):
    """A live Stripe backend: confirms a PaymentIntent with the SPT."""

    async def settle(self, verified: Verified, request: StripeChargeRequest,
                     payload: StripePayload) -> Settled | Refused | Unknown: ...


class StripeApiSettler:
    """Stripe's REST API with a secret key (``POST /v1/payment_intents``, confirm=true, idempotent per SPT)."""

    def __init__(self, secret_key: str, *, api_base: str = API_BASE, timeout: float = 30.0) -> None:
        self.secret_key = secret_key
        self.api_base = api_base
        self.timeout = timeout

    def form(self, verified: Verified, request: StripeChargeRequest, payload: StripePayload) -> dict[str, str]:
        body = {"amount": str(request.amount), "currency": request.currency, "confirm": "true",
                "shared_payment_granted_token": payload.spt,
                "metadata[mpp_challenge_id]": verified.accepted.challenge.id}
        for i, t in enumerate(request.payment_method_types):
            body[f"payment_method_types[{i}]"] = t
        for k, v in (request.metadata or {}).items():
            body[f"metadata[{k}]"] = v
        return body

    async def settle(self, verified: Verified, request: StripeChargeRequest,
                     payload: StripePayload) -> Settled | Refused | Unknown:
        import httpx

        auth = base64.b64encode(f"{self.secret_key}:".encode()).decode()
        headers = {"Authorization": f"Basic {auth}", "Stripe-Version": API_VERSION,
                   "Idempotency-Key": f"mpp_{verified.accepted.challenge.id}_{payload.spt}"}
        try:
            async with httpx.AsyncClient(timeout=self.timeout) as client:
                r = await client.post(f"{self.api_base}/payment_intents", headers=headers,
                                      data=self.form(verified, request, payload))
        except httpx.HTTPError as exc:
            return Unknown(f"Stripe unreachable: {type(exc).__name__}")
        if r.status_code >= 500:
            return Unknown(f"Stripe answered {r.status_code}")
        try:
            data = r.json()
        except ValueError:
            return Unknown(f"Stripe answered {r.status_code} without JSON")
        if r.status_code >= 400:
            msg = (data.get("error") or {}).get("message") or f"Stripe answered {r.status_code}"
            return Refused(Problem(P.VERIFICATION_FAILED, str(msg)))
        if r.headers.get("idempotent-replayed") == "true":
            return Refused(P.forbidden("this Shared Payment Token was already used"), nothing_moved=False)
        status, pi = data.get("status"), str(data.get("id"))
        if status == "succeeded":
            return Settled(pi, {"externalId": request.external_id} if request.external_id is not None else {})
        if status == "processing":
            return Unknown("PaymentIntent is processing", pi)
        return Refused(Problem(P.VERIFICATION_FAILED, f"Stripe PaymentIntent status: {status}"),
                       nothing_moved=status != "requires_capture")


class StripeChargeMethod:
    """Seller side of ``stripe/charge``: exact offline payload checks; money moves only through ``settler``."""

    method = METHOD
    intent = INTENT

    def __init__(self, settler: StripeSettler | None = None) -> None:
        self.settler = settler

    def verify(self, accepted: Accepted, now: float) -> Verified | Problem:
        parsed = parse_charge(accepted, StripeChargeRequest.from_request, StripePayload.from_payload)
        if isinstance(parsed, Problem):
            return parsed
        req, payload = parsed
        if req.external_id is not None and payload.external_id != req.external_id:
            return Problem(P.INVALID_CHALLENGE, "credential externalId does not match the request")
        return Verified(accepted, f"stripe:spt:{payload.spt}", amount=str(req.amount), currency=req.currency,
                        data=(req, payload))

    async def settle(self, verified: Verified) -> Settled | Refused | Unknown:
        """Needs the configured :class:`StripeSettler`; without one, a 503 and the claim is released."""
        if self.settler is None:
            return no_backend(METHOD)
        req, payload = verified.data
        return await self.settler.settle(verified, req, payload)
