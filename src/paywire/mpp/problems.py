"""RFC 9457 problem details with the registered Payment problem types (digest §11.3, checklist 108/109).

Every 402 problem goes out with a fresh challenge; ``method-unsupported`` is a 400, and a valid payment that
policy refuses is a 403 without a challenge (typed ``verification-failed``, as pympp answers a replay).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any, Final

BASE_URI: Final = "https://paymentauth.org/problems/"
CONTENT_TYPE: Final = "application/problem+json"


@dataclass(frozen=True, slots=True)
class ProblemType:
    slug: str
    status: int
    title: str

    @property
    def uri(self) -> str:
        return BASE_URI + self.slug


PAYMENT_REQUIRED: Final = ProblemType("payment-required", 402, "Payment Required")
PAYMENT_INSUFFICIENT: Final = ProblemType("payment-insufficient", 402, "Payment Insufficient")
PAYMENT_EXPIRED: Final = ProblemType("payment-expired", 402, "Payment Expired")
VERIFICATION_FAILED: Final = ProblemType("verification-failed", 402, "Verification Failed")
METHOD_UNSUPPORTED: Final = ProblemType("method-unsupported", 400, "Method Unsupported")
MALFORMED_CREDENTIAL: Final = ProblemType("malformed-credential", 402, "Malformed Credential")
INVALID_CHALLENGE: Final = ProblemType("invalid-challenge", 402, "Invalid Challenge")
# lightning/charge (draft-lightning-charge-00 §Error Responses)
LN_MALFORMED_CREDENTIAL: Final = ProblemType("lightning/malformed-credential", 402, "Malformed Credential")
LN_UNKNOWN_CHALLENGE: Final = ProblemType("lightning/unknown-challenge", 402, "Unknown Challenge")
LN_INVALID_PREIMAGE: Final = ProblemType("lightning/invalid-preimage", 402, "Invalid Preimage")
LN_EXPIRED_INVOICE: Final = ProblemType("lightning/expired-invoice", 402, "Expired Invoice")

ALL_TYPES: Final = (PAYMENT_REQUIRED, PAYMENT_INSUFFICIENT, PAYMENT_EXPIRED, VERIFICATION_FAILED,
                    METHOD_UNSUPPORTED, MALFORMED_CREDENTIAL, INVALID_CHALLENGE, LN_MALFORMED_CREDENTIAL,
                    LN_UNKNOWN_CHALLENGE, LN_INVALID_PREIMAGE, LN_EXPIRED_INVOICE)


@dataclass(frozen=True, slots=True)
class Problem:
    """One problem occurrence; ``status`` defaults to the type's."""

    type: ProblemType
    detail: str = ""
    status: int = 0
    title: str = ""
    challenge_id: str | None = None
    extra: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.status:
            object.__setattr__(self, "status", self.type.status)
        if not self.title:
            object.__setattr__(self, "title", self.type.title)

    @property
    def wants_challenge(self) -> bool:
        """402s carry a fresh challenge; 400/403/5xx do not."""
        return self.status == 402

    def with_challenge_id(self, challenge_id: str | None) -> Problem:
        return replace(self, challenge_id=challenge_id)

    def to_wire(self) -> dict[str, Any]:
        out: dict[str, Any] = {"type": self.type.uri, "title": self.title, "status": self.status}
        if self.detail:
            out["detail"] = self.detail
        if self.challenge_id is not None:
            out["challengeId"] = self.challenge_id
        for k, v in self.extra.items():
            out.setdefault(k, v)
        return out

    def body(self) -> bytes:
        return json.dumps(self.to_wire(), separators=(",", ":")).encode("utf-8")


def forbidden(detail: str) -> Problem:
    """Paid (or replayed) but refused by policy: 403, no challenge (checklist 108)."""
    return Problem(VERIFICATION_FAILED, detail, status=403, title="Forbidden")


def unresolved(detail: str) -> Problem:
    """The payment may have landed but its outcome is unknown: 503 without a challenge, never an invitation
    to pay again. The same credential can be retried."""
    return Problem(VERIFICATION_FAILED, detail, status=503, title="Settlement Pending")
