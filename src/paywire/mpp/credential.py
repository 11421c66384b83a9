"""``Authorization: Payment <base64url JSON>`` credentials (digest §11.2, checklist 106)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from paywire.errors import WireError
from paywire.mpp.b64 import b64url_decode, b64url_encode
from paywire.mpp.challenge import METHOD_RE, Challenge, credential_header
from paywire.mpp.jcs import JcsError, canonicalize
from paywire.x402._json import loads_object

MAX_AUTHORIZATION_BYTES: Final = 64 * 1024
MALFORMED: Final = "malformed_credential"
MULTIPLE: Final = "multiple_credentials"

_ECHO_KEYS: Final = ("id", "realm", "method", "intent", "request", "expires", "digest", "header", "opaque",
                     "description")


@dataclass(frozen=True, slots=True)
class ChallengeEcho:
    """The challenge parameters a credential echoes, as wire strings."""

    id: str
    realm: str
    method: str
    intent: str
    request: str
    expires: str | None = None
    digest: str | None = None
    opaque: str | None = None
    description: str | None = None
    header: str | None = None

    @classmethod
    def of(cls, c: Challenge) -> ChallengeEcho:
        """The exact echo of a received challenge."""
        return cls(c.id, c.realm, c.method, c.intent, c.request_b64, c.expires, c.digest, c.opaque_b64,
                   c.description, c.header)

    def to_wire(self) -> dict[str, str]:
        out = {"id": self.id, "realm": self.realm, "method": self.method, "intent": self.intent,
               "request": self.request}
        for key in _ECHO_KEYS[5:]:
            value = getattr(self, key)
            if value is not None:
                out[key] = value
        return out


@dataclass(frozen=True, slots=True)
class Credential:
    """A payment credential: challenge echo, optional payer ``source`` (a DID), method ``payload``."""

    challenge: ChallengeEcho
    payload: Mapping[str, Any]
    source: str | None = None
    other: Mapping[str, Any] = field(default_factory=dict)

    def to_wire(self) -> dict[str, Any]:
        out: dict[str, Any] = {"challenge": self.challenge.to_wire(), "payload": dict(self.payload)}
        if self.source is not None:
            out["source"] = self.source
        return out

    def to_authorization(self) -> str:
        """``Payment <base64url(JCS JSON)>`` (sorted keys, like pympp's encoder)."""
        try:
            return "Payment " + b64url_encode(canonicalize(self.to_wire()))
        except JcsError as exc:
            raise WireError(MALFORMED, str(exc)) from None


def _opt_str(d: Mapping[str, Any], key: str, path: str) -> str | None:
    value = d.get(key)
    if value is None:
        return None
    if not isinstance(value, str):
        raise WireError(MALFORMED, f"{path}{key} must be a string")
    return value


def credential_from_json(obj: Mapping[str, Any]) -> Credential:
    """Validate a decoded credential object."""
    ch = obj.get("challenge")
    if not isinstance(ch, dict):
        raise WireError(MALFORMED, "challenge must be an object")
    payload = obj.get("payload")
    if not isinstance(payload, dict):
        raise WireError(MALFORMED, "payload must be an object")
    values: dict[str, str | None] = {k: _opt_str(ch, k, "challenge.") for k in _ECHO_KEYS}
    for key in ("id", "realm", "method", "intent", "request"):
        if not values[key]:
            raise WireError(MALFORMED, f"challenge.{key} is missing or empty")
    if METHOD_RE.fullmatch(str(values["method"])) is None:
        raise WireError(MALFORMED, "challenge.method is not a method id")
    try:
        header = credential_header(values["header"])
    except WireError:
        raise WireError(MALFORMED, "challenge.header is not a field name") from None
    echo = ChallengeEcho(
        id=str(values["id"]), realm=str(values["realm"]), method=str(values["method"]),
        intent=str(values["intent"]), request=str(values["request"]), expires=values["expires"] or None,
        digest=values["digest"] or None, opaque=values["opaque"] or None, description=values["description"],
        header=header,
    )
    return Credential(echo, payload, _opt_str(obj, "source", ""),
                      {k: v for k, v in obj.items() if k not in ("challenge", "payload", "source")})


def extract_payment_credentials(authorization: str) -> list[str]:
    """The base64url tokens of every ``Payment`` credential in an ``Authorization`` value (RFC 9110 list)."""
    out: list[str] = []
    for part in authorization.split(","):
        part = part.strip()
        scheme, _, rest = part.partition(" ")
        if scheme.lower() == "payment":
            out.append(rest.strip())
    return out


def parse_authorization(authorization: str) -> Credential:
    """Parse the one Payment credential in ``authorization``.

    ``WireError`` reasons: ``malformed_credential`` (none, oversized, bad base64url/JSON/shape) or
    ``multiple_credentials`` (more than one Payment credential: the spec asks for a 400).
    """
    if len(authorization) > MAX_AUTHORIZATION_BYTES:
        raise WireError(MALFORMED, f"Authorization exceeds {MAX_AUTHORIZATION_BYTES} bytes")
    tokens = extract_payment_credentials(authorization)
    if not tokens:
        raise WireError(MALFORMED, "no Payment credential")
    if len(tokens) > 1:
        raise WireError(MULTIPLE, "more than one Payment credential")
    try:
        raw = b64url_decode(tokens[0], what="credential")
        obj = loads_object(raw.decode("utf-8"))
    except (WireError, UnicodeDecodeError) as exc:
        raise WireError(MALFORMED, f"credential is not base64url JSON: {getattr(exc, 'detail', exc)}") from None
    return credential_from_json(obj)
