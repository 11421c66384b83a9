"""The MPP MCP transport (``draft-payment-transport-mcp-00``) mapped onto the HTTP shapes the flow and the buyer
engine speak, sans-I/O.

* A tool that needs paying answers the JSON-RPC error ``-32042`` whose ``data.challenges`` are the ``Payment``
  challenges as native JSON (``request`` an object, not base64url), ``-32043`` when a credential failed
  verification (fresh challenges and a ``failure``), ``-32602`` for a malformed credential.
* The client retries with ``params._meta["org.paymentauth/credential"]``: the challenge echoed as JSON, the
  method's ``payload``, optional ``source``.
* A paid result carries ``result._meta["org.paymentauth/receipt"]``.

Over HTTP the same objects travel as ``WWW-Authenticate: Payment …`` (``request`` base64url of its JCS form),
``Authorization: Payment <base64url(JCS credential)>`` and ``Payment-Receipt``; the functions here convert one
form into the other, so the seller's MPP protocol and the buyer's MPP reader do all the checking.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from paywire.errors import WireError
from paywire.mpp import problems as P
from paywire.mpp.b64 import b64url_decode, b64url_encode
from paywire.mpp.challenge import Challenge, decode_json_param, encode_json_param, parse_www_authenticate
from paywire.mpp.credential import parse_authorization
from paywire.mpp.jcs import JcsError, canonicalize
from paywire.mpp.receipt import HEADER as RECEIPT_HEADER
from paywire.server.core import Reply
from paywire.x402._json import loads_object

MPP_CREDENTIAL: Final = "org.paymentauth/credential"
MPP_RECEIPT: Final = "org.paymentauth/receipt"
PAYMENT_REQUIRED: Final = -32042
VERIFICATION_FAILED: Final = -32043
MALFORMED_CREDENTIAL: Final = -32602
CODES: Final = frozenset({PAYMENT_REQUIRED, VERIFICATION_FAILED})
"""The errors that carry challenges to pay."""
_MALFORMED: Final = "Payment not-a-credential"  # an Authorization value the seller refuses as malformed


@dataclass(frozen=True, slots=True)
class RpcError:
    """A JSON-RPC error the server must answer instead of a tool result."""

    code: int
    message: str
    data: Mapping[str, Any] = field(default_factory=dict)


# ------------------------------------------------------------------------------------------------ seller side


def credential_authorization(credential: Any) -> str:
    """The ``_meta`` credential as an ``Authorization: Payment`` value; anything malformed becomes a value the
    seller refuses as a malformed credential (never a crash)."""
    if not isinstance(credential, Mapping):
        return _MALFORMED
    challenge = credential.get("challenge")
    if not isinstance(challenge, Mapping):
        return _MALFORMED
    echo = dict(challenge)
    try:
        for key in ("request", "opaque"):
            if isinstance(echo.get(key), Mapping):
                echo[key] = encode_json_param(echo[key])
        wire = {**credential, "challenge": echo}
        return "Payment " + b64url_encode(canonicalize(wire))
    except (WireError, JcsError, TypeError, ValueError):
        return _MALFORMED


def challenge_object(c: Challenge) -> dict[str, Any]:
    """A ``Payment`` challenge as the MCP transport sends it (``request``/``opaque`` as JSON objects)."""
    out: dict[str, Any] = {"id": c.id, "realm": c.realm, "method": c.method, "intent": c.intent,
                           "request": dict(c.request)}
    for key, value in (("expires", c.expires), ("description", c.description), ("digest", c.digest),
                       ("opaque", dict(c.opaque) if c.opaque is not None else None)):
        if value is not None:
            out[key] = value
    return out


def reply_error(reply: Reply, *, presented: bool) -> RpcError | None:
    """The flow's 402 as the MPP error to raise (None when it carries no ``Payment`` challenge).

    ``presented``: the call carried a credential (then a 402 means it was refused: ``-32043``, or ``-32602``
    when it was malformed)."""
    if reply.status != 402:
        return None
    challenges = parse_www_authenticate([v for k, v in reply.headers if k.lower() == "www-authenticate"])
    if not challenges:
        return None
    try:
        body = json.loads(reply.body) if reply.body else {}
    except ValueError:
        body = {}
    problem = {k: body[k] for k in ("type", "title", "status", "detail", "challengeId")
               if isinstance(body, dict) and k in body}
    data: dict[str, Any] = {"httpStatus": 402, "challenges": [challenge_object(c) for c in challenges]}
    if problem:
        data["problem"] = problem
    slug = str(problem.get("type", "")).rsplit("/", 1)[-1]
    if presented and slug == P.MALFORMED_CREDENTIAL.slug:
        return RpcError(MALFORMED_CREDENTIAL, "Invalid params", {**data, "detail": problem.get("detail", "")})
    if presented:
        data["failure"] = {"reason": slug or "verification-failed", "detail": problem.get("detail", "")}
        return RpcError(VERIFICATION_FAILED, "Payment Verification Failed", data)
    return RpcError(PAYMENT_REQUIRED, "Payment Required", data)


def receipt_object(reply: Reply) -> dict[str, Any] | None:
    """The ``Payment-Receipt`` of a paid reply as the JSON object ``_meta`` carries."""
    raw = reply.header(RECEIPT_HEADER)
    if raw is None:
        return None
    try:
        return loads_object(b64url_decode(raw.strip(), what="receipt").decode("utf-8"))
    except (WireError, UnicodeDecodeError):
        return None


# ------------------------------------------------------------------------------------------------ buyer side


def error_as_http(code: int, data: Any) -> tuple[int, dict[str, str], bytes] | None:
    """A ``-32042``/``-32043`` error as the 402 the buyer engine reads (``www-authenticate`` challenges and a
    problem body with the reason); None when it carries no usable challenge."""
    if code not in CODES or not isinstance(data, Mapping):
        return None
    values: list[str] = []
    for raw in data.get("challenges") or ():
        if not isinstance(raw, Mapping) or not isinstance(raw.get("request"), Mapping):
            continue
        try:
            opaque = raw.get("opaque")
            values.append(Challenge(
                id=str(raw["id"]), realm=str(raw["realm"]), method=str(raw["method"]), intent=str(raw["intent"]),
                request=dict(raw["request"]), request_b64=encode_json_param(raw["request"]),
                expires=raw.get("expires"), digest=raw.get("digest"), description=raw.get("description"),
                opaque=dict(opaque) if isinstance(opaque, Mapping) else None,
                opaque_b64=encode_json_param(opaque) if isinstance(opaque, Mapping) else None).to_header())
        except (KeyError, WireError, TypeError, ValueError):
            continue
    if not values:
        return None
    problem = dict(data.get("problem") or {}) if isinstance(data.get("problem"), Mapping) else {}
    failure = data.get("failure")
    if isinstance(failure, Mapping) and failure.get("detail") and not problem.get("detail"):
        problem["detail"] = str(failure["detail"])
    body = json.dumps(problem, separators=(",", ":")).encode()
    return 402, {"www-authenticate": ", ".join(values)}, body


def credential_meta(authorization: str) -> dict[str, Any]:
    """The ``_meta`` credential for an ``Authorization: Payment`` value the buyer engine built."""
    cred = parse_authorization(authorization)
    echo: dict[str, Any] = dict(cred.challenge.to_wire())
    echo["request"] = decode_json_param(cred.challenge.request, "request")
    if cred.challenge.opaque is not None:
        echo["opaque"] = decode_json_param(cred.challenge.opaque, "opaque")
    echo.pop("header", None)
    return {"challenge": echo, **{k: v for k, v in cred.to_wire().items() if k != "challenge"}}


def receipt_header(receipt: Any) -> str | None:
    """``_meta["org.paymentauth/receipt"]`` as the ``Payment-Receipt`` value the buyer engine reads."""
    if not isinstance(receipt, Mapping):
        return None
    try:
        return b64url_encode(canonicalize(dict(receipt)))
    except (JcsError, TypeError, ValueError):
        return None
