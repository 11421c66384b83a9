"""The buyer's protocol decisions: read a 402, choose an offer, build the payment header. No I/O."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from paywire.errors import PaywireError, WireError
from paywire.schemes.base import ClientScheme, handles
from paywire.x402.codec import (
    PAYMENT_REQUIRED,
    PAYMENT_RESPONSE,
    PAYMENT_SIGNATURE,
    X_PAYMENT,
    X_PAYMENT_RESPONSE,
    decode_header,
    decode_payment_required,
    decode_payment_response,
    encode_header,
)
from paywire.x402.models import (
    PaymentPayload,
    PaymentPayloadV1,
    PaymentRequired,
    PaymentRequiredV1,
    PaymentRequirements,
    SettleResponse,
    requirements_v1_to_v2,
)


class PaymentError(PaywireError):
    """The client could not (or would not) pay for a 402."""


@dataclass(frozen=True, slots=True)
class PaymentAttempt:
    """What the client sends on the retry."""

    header: str
    value: str
    requirements: PaymentRequirements
    version: int


def parse_challenge(headers: Mapping[str, str], body: bytes) -> PaymentRequired | PaymentRequiredV1:
    """v2 ``PAYMENT-REQUIRED`` header first, else a v1 JSON body (checklist 26)."""
    raw = headers.get(PAYMENT_REQUIRED.lower()) or headers.get(PAYMENT_REQUIRED)
    if raw is not None:
        return decode_payment_required(raw)
    try:
        obj = json.loads(body) if body else None
    except ValueError:
        obj = None
    if isinstance(obj, dict) and obj.get("x402Version") == 1:
        return PaymentRequiredV1.from_wire(obj)
    raise WireError("missing_field", "402 without PAYMENT-REQUIRED header or v1 body")


def parse_settlement(headers: Mapping[str, str]) -> SettleResponse | None:
    """The settlement a paid response carries (checklist 36); None when absent or unreadable."""
    raw = headers.get(PAYMENT_RESPONSE.lower()) or headers.get(X_PAYMENT_RESPONSE.lower())
    if raw is None:
        return None
    try:
        return decode_payment_response(raw)
    except WireError:
        return None


class Payer:
    """Chooses an offer a registered scheme can pay and signs it."""

    def __init__(self, schemes: Sequence[ClientScheme]) -> None:
        self.schemes = list(schemes)

    def _scheme_for(self, req: PaymentRequirements) -> ClientScheme | None:
        for s in self.schemes:
            if handles(s, req.scheme, req.network) and s.can_pay(req):
                return s
        return None

    async def pay(self, challenge: PaymentRequired | PaymentRequiredV1) -> PaymentAttempt:
        """Sign the first payable offer in the server's order (checklist 27-29)."""
        if isinstance(challenge, PaymentRequiredV1):
            for r1 in challenge.accepts:
                req, _ = requirements_v1_to_v2(r1)
                scheme = self._scheme_for(req)
                if scheme is not None:
                    inner = await scheme.create_payload(req)
                    p1 = PaymentPayloadV1(x402_version=1, scheme=r1.scheme, network=r1.network, payload=inner)
                    return PaymentAttempt(X_PAYMENT, encode_header(p1.to_wire()), req, 1)
            raise PaymentError("no offer in the 402 can be paid by this wallet")
        for req in challenge.accepts:
            scheme = self._scheme_for(req)
            if scheme is not None:
                inner = await scheme.create_payload(req)
                p = PaymentPayload(x402_version=2, accepted=req, payload=inner, resource=challenge.resource,
                                   extensions=challenge.extensions)
                return PaymentAttempt(PAYMENT_SIGNATURE, encode_header(p.to_wire()), req, 2)
        raise PaymentError("no offer in the 402 can be paid by this wallet")


def challenge_error(headers: Mapping[str, str]) -> str | None:
    """The server's reason on a 402 after paying, if it gave one."""
    raw = headers.get(PAYMENT_REQUIRED.lower())
    if raw is None:
        return None
    try:
        err = decode_header(raw).get("error")
    except WireError:
        return None
    return err if isinstance(err, str) else None
