"""The ``WWW-Authenticate: Payment`` challenge and its stateless HMAC-SHA256 id binding (digest §11.1).

``Challenge.create`` canonicalizes ``request`` and ``opaque`` (JCS, base64url) and derives ``id`` from the
seven positional slots ``realm|method|intent|request|expires|digest|opaque`` (plus the SDKs' ``header``
extension before ``opaque`` when it names a field other than ``Authorization``). ``ChallengeBinder`` holds
the current secret first and older ones after it, so challenges issued before a rotation still verify.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

from paywire.errors import WireError
from paywire.mpp.authparams import AuthChallenge, format_challenge, parse_challenges
from paywire.mpp.b64 import b64url_decode, b64url_encode
from paywire.mpp.jcs import JcsError, canonicalize
from paywire.x402._json import loads_object

SCHEME: Final = "Payment"
MAX_PARAM_BYTES: Final = 16 * 1024
"""Largest ``request``/``opaque`` auth-param accepted (the SDKs' limit)."""
MIN_SECRET_BYTES: Final = 32

METHOD_RE: Final = re.compile(r"[a-z][a-z0-9:_-]*")  # the SDKs' grammar; the spec's 1*LOWERALPHA is a subset
INTENT_RE: Final = re.compile(r"[A-Za-z0-9-]+")
_HEADER_NAME_RE: Final = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")


def encode_json_param(value: Mapping[str, Any]) -> str:
    """base64url-nopad of the JCS form (the wire form of ``request`` and ``opaque``)."""
    try:
        return b64url_encode(canonicalize(value))
    except JcsError as exc:
        raise WireError("invalid_request", str(exc)) from None


def decode_json_param(text: str, what: str) -> dict[str, Any]:
    """Inverse of :func:`encode_json_param`: a JSON object, strictly parsed, at most 16 KiB on the wire."""
    if len(text) > MAX_PARAM_BYTES:
        raise WireError("too_large", f"{what} exceeds {MAX_PARAM_BYTES} bytes")
    raw = b64url_decode(text, what=what)
    try:
        return loads_object(raw.decode("utf-8"))
    except UnicodeDecodeError:
        raise WireError("invalid_json", f"{what} is not UTF-8") from None


def credential_header(header: str | None) -> str | None:
    """The advertised credential field, or None for the implicit ``Authorization`` default."""
    if header is None or header == "" or header.lower() == "authorization":
        return None
    if _HEADER_NAME_RE.fullmatch(header) is None:
        raise WireError("invalid_challenge", "header parameter is not a field name")
    return header


class ChallengeBinder:
    """Stateless challenge ids: HMAC-SHA256 under the current secret; older secrets still verify."""

    __slots__ = ("_keys",)

    def __init__(self, secrets: Sequence[bytes | str]) -> None:
        keys = [s.encode("utf-8") if isinstance(s, str) else bytes(s) for s in secrets]
        if not keys:
            raise ValueError("give at least one secret (current first, then previous ones)")
        for k in keys:
            if len(k) < MIN_SECRET_BYTES:
                raise ValueError(f"challenge secrets must be at least {MIN_SECRET_BYTES} bytes")
        self._keys = tuple(keys)

    @staticmethod
    def hmac_input(
        realm: str, method: str, intent: str, request_b64: str, expires: str | None, digest: str | None,
        opaque_b64: str | None, header: str | None = None,
    ) -> bytes:
        """The ``|``-joined slots (checklist 107)."""
        slots = [realm, method, intent, request_b64, expires or "", digest or ""]
        if credential_header(header):
            slots.append(str(header))
        slots.append(opaque_b64 or "")
        return "|".join(slots).encode("utf-8")

    def compute(self, *slots: Any, **kw: Any) -> str:
        """The id under the current secret (arguments as :meth:`hmac_input`)."""
        return b64url_encode(hmac.new(self._keys[0], self.hmac_input(*slots, **kw), hashlib.sha256).digest())

    def matches(self, challenge_id: str, *slots: Any, **kw: Any) -> bool:
        """True when ``challenge_id`` is the binding under any configured secret (constant-time compares)."""
        data = self.hmac_input(*slots, **kw)
        got = challenge_id.encode("utf-8", "surrogatepass")
        ok = False
        for key in self._keys:
            want = b64url_encode(hmac.new(key, data, hashlib.sha256).digest()).encode("ascii")
            ok |= hmac.compare_digest(want, got)
        return ok


@dataclass(frozen=True, slots=True)
class Challenge:
    """One Payment challenge; ``request``/``opaque`` decoded, ``request_b64``/``opaque_b64`` as on the wire."""

    id: str
    realm: str
    method: str
    intent: str
    request: Mapping[str, Any]
    request_b64: str
    expires: str | None = None
    digest: str | None = None
    description: str | None = None
    opaque: Mapping[str, str] | None = None
    opaque_b64: str | None = None
    header: str | None = None
    other: Mapping[str, str] = field(default_factory=dict)

    @classmethod
    def create(
        cls,
        binder: ChallengeBinder,
        *,
        realm: str,
        method: str,
        intent: str,
        request: Mapping[str, Any],
        expires: str | None = None,
        digest: str | None = None,
        description: str | None = None,
        opaque: Mapping[str, str] | None = None,
        header: str | None = None,
    ) -> Challenge:
        """A challenge with an HMAC-bound id (checklist 105, 107)."""
        if METHOD_RE.fullmatch(method) is None or INTENT_RE.fullmatch(intent) is None:
            raise ValueError(f"bad method/intent {method!r}/{intent!r}")
        if opaque is not None and not all(isinstance(v, str) for v in opaque.values()):
            raise ValueError("opaque must be a flat string-to-string map")
        header = credential_header(header)
        request_b64 = encode_json_param(request)
        opaque_b64 = encode_json_param(opaque) if opaque is not None else None
        cid = binder.compute(realm, method, intent, request_b64, expires, digest, opaque_b64, header=header)
        return cls(cid, realm, method, intent, dict(request), request_b64, expires, digest, description,
                   dict(opaque) if opaque is not None else None, opaque_b64, header)

    def to_header(self) -> str:
        """The ``WWW-Authenticate`` value (one challenge per value)."""
        params: list[tuple[str, str]] = [
            ("id", self.id), ("realm", self.realm), ("method", self.method), ("intent", self.intent),
            ("request", self.request_b64),
        ]
        for key, value in (("digest", self.digest), ("expires", self.expires), ("description", self.description),
                           ("header", self.header), ("opaque", self.opaque_b64)):
            if value is not None:
                params.append((key, value))
        return format_challenge(SCHEME, params)

    @classmethod
    def from_auth(cls, c: AuthChallenge) -> Challenge:
        """Validate a parsed ``Payment`` challenge; ``WireError`` says what is wrong."""
        if not c.is_scheme(SCHEME):
            raise WireError("invalid_challenge", "not a Payment challenge")
        if not c.valid:
            raise WireError("invalid_challenge", "repeated parameter or unterminated quoted string")
        p = c.params
        for key in ("id", "realm", "method", "intent", "request"):
            if not p.get(key):
                raise WireError("invalid_challenge", f"missing or empty {key!r}")
        if METHOD_RE.fullmatch(p["method"]) is None:
            raise WireError("invalid_challenge", "method must be lowercase")
        if INTENT_RE.fullmatch(p["intent"]) is None:
            raise WireError("invalid_challenge", "bad intent")
        request = decode_json_param(p["request"], "request")
        opaque_b64 = p.get("opaque") or None
        opaque: dict[str, str] | None = None
        if opaque_b64 is not None:
            raw = decode_json_param(opaque_b64, "opaque")
            if not all(isinstance(v, str) for v in raw.values()):
                raise WireError("invalid_challenge", "opaque is not a string-to-string map")
            opaque = raw
        known = {"id", "realm", "method", "intent", "request", "expires", "digest", "description", "opaque",
                 "header"}
        return cls(
            id=p["id"], realm=p["realm"], method=p["method"], intent=p["intent"], request=request,
            request_b64=p["request"], expires=p.get("expires"), digest=p.get("digest"),
            description=p.get("description"), opaque=opaque, opaque_b64=opaque_b64,
            header=credential_header(p.get("header")),
            other={k: v for k, v in p.items() if k not in known},
        )

    def verify_id(self, binder: ChallengeBinder) -> bool:
        """Does ``id`` bind these exact wire parameters?"""
        return binder.matches(self.id, self.realm, self.method, self.intent, self.request_b64, self.expires,
                              self.digest, self.opaque_b64, header=self.header)


def parse_www_authenticate(values: str | Iterable[str]) -> list[Challenge]:
    """Every valid Payment challenge in the given ``WWW-Authenticate`` value(s); others are skipped."""
    out: list[Challenge] = []
    for c in parse_challenges(values):
        if not c.is_scheme(SCHEME):
            continue
        try:
            out.append(Challenge.from_auth(c))
        except WireError:
            continue
    return out
