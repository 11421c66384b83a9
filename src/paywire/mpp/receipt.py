"""``Payment-Receipt: <base64url JSON>`` on paid 2xx responses (digest §11.3, checklist 111)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from paywire.errors import WireError
from paywire.mpp.b64 import b64url_decode, b64url_encode
from paywire.mpp.jcs import canonicalize
from paywire.mpp.timefmt import format_rfc3339, parse_rfc3339
from paywire.x402._json import loads_object

HEADER: Final = "Payment-Receipt"
_BASE: Final = ("status", "method", "timestamp", "reference", "challengeId")


@dataclass(frozen=True, slots=True)
class Receipt:
    """``status`` is always ``success``; ``reference`` is method-specific (tx hash, payment hash, …)."""

    method: str
    reference: str
    timestamp: str
    challenge_id: str | None = None
    status: str = "success"
    extra: Mapping[str, Any] = field(default_factory=dict)

    @classmethod
    def success(cls, method: str, reference: str, *, now: float, challenge_id: str | None = None,
                **extra: Any) -> Receipt:
        return cls(method, reference, format_rfc3339(now), challenge_id, "success", extra)

    def to_wire(self) -> dict[str, Any]:
        out: dict[str, Any] = {"status": self.status, "method": self.method, "timestamp": self.timestamp,
                               "reference": self.reference}
        if self.challenge_id is not None:
            out["challengeId"] = self.challenge_id
        for k, v in self.extra.items():
            if k not in out:
                out[k] = v
        return out

    def to_header(self) -> str:
        return b64url_encode(canonicalize(self.to_wire()))

    @classmethod
    def from_header(cls, value: str) -> Receipt:
        """Parse and validate (status ``success``, RFC 3339 timestamp, string fields)."""
        try:
            obj = loads_object(b64url_decode(value.strip(), what="receipt").decode("utf-8"))
        except UnicodeDecodeError:
            raise WireError("invalid_receipt", "receipt is not UTF-8") from None
        for key in ("status", "method", "timestamp", "reference"):
            if not isinstance(obj.get(key), str):
                raise WireError("invalid_receipt", f"receipt.{key} must be a string")
        if obj["status"] != "success":
            raise WireError("invalid_receipt", "receipt.status must be 'success'")
        parse_rfc3339(obj["timestamp"])
        cid = obj.get("challengeId")
        if cid is not None and not isinstance(cid, str):
            raise WireError("invalid_receipt", "receipt.challengeId must be a string")
        return cls(obj["method"], obj["reference"], obj["timestamp"], cid, "success",
                   {k: v for k, v in obj.items() if k not in _BASE})
