"""x402 HTTP header and body codecs (digest §3.1-3.2), sans-I/O.

Headers carry standard padded base64 (RFC 4648 §4) of compact UTF-8 JSON. Decoding is strict:
canonical base64 only (no base64url, whitespace or stray padding), valid UTF-8, a JSON object
without NaN/Infinity, duplicate keys or nesting deeper than 32. Every failure is a
:class:`~paywire.errors.WireError`.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import Callable, Mapping
from typing import Any, Final, TypeVar

from paywire.errors import WireError
from paywire.x402 import reasons
from paywire.x402._json import loads_object
from paywire.x402.models import (
    PaymentPayload,
    PaymentPayloadV1,
    PaymentRequired,
    PaymentRequiredV1,
    SettleResponse,
    _parse_payment_payload,
    _Wire,
)

_T = TypeVar("_T")
_M = TypeVar("_M", bound=_Wire)

PAYMENT_REQUIRED: Final = "PAYMENT-REQUIRED"
"""v2 server -> client header on 402: base64 ``PaymentRequired``."""
PAYMENT_SIGNATURE: Final = "PAYMENT-SIGNATURE"
"""v2 client -> server header: base64 ``PaymentPayload``."""
PAYMENT_RESPONSE: Final = "PAYMENT-RESPONSE"
"""v2 server -> client header: base64 ``SettleResponse``."""
X_PAYMENT: Final = "X-PAYMENT"
"""v1 client -> server header: base64 v1 ``PaymentPayload``."""
X_PAYMENT_RESPONSE: Final = "X-PAYMENT-RESPONSE"
"""v1 server -> client header: base64 ``SettleResponse``."""
PAYMENT_IDENTIFIER: Final = "payment-identifier"
PAYMENT_ID_RE: Final = re.compile(r"[A-Za-z0-9_-]{16,128}")
"""What a ``payment-identifier`` id must match (digest §9.2)."""
"""Extension key of the idempotency id (digest §9.2): ``extensions["payment-identifier"].info.id``."""

MAX_HEADER_BYTES: Final = 16 * 1024
"""Longest encoded header value we decode or emit (16 KiB, Node's default total header limit).

Checked on the raw value before any base64 work (``header_too_large``)."""
_BYTES: Final = (bytes, bytearray, memoryview)

MAX_BODY_BYTES: Final = 1024 * 1024
"""Default limit for JSON bodies given to :func:`decode_json` / :func:`decode_v1_body`."""


def decode_header(value: str | bytes) -> dict[str, Any]:
    """Decode a base64 JSON header value into a dict, strictly (see module docstring)."""
    if isinstance(value, str):
        if len(value) > MAX_HEADER_BYTES:
            raise WireError(reasons.HEADER_TOO_LARGE, f"header value longer than {MAX_HEADER_BYTES} bytes")
        try:
            raw = value.encode("ascii")
        except UnicodeEncodeError:
            raise WireError(reasons.INVALID_BASE64, "non-ASCII character in header value") from None
    elif isinstance(value, _BYTES):
        if len(value) > MAX_HEADER_BYTES:
            raise WireError(reasons.HEADER_TOO_LARGE, f"header value longer than {MAX_HEADER_BYTES} bytes")
        raw = bytes(value)
    else:
        raise WireError(
            reasons.INVALID_BASE64, f"header value must be str or bytes, not {type(value).__name__}"
        )
    try:
        decoded = binascii.a2b_base64(raw, strict_mode=True)
    except (binascii.Error, ValueError):
        raise WireError(reasons.INVALID_BASE64, "not standard padded base64") from None
    # Re-encoding must give the input back: rejects missing/extra padding and stray trailing bits,
    # i.e. accepts exactly the canonical RFC 4648 §4 encoding (alphabet A-Z a-z 0-9 + /, '=' padding).
    if binascii.b2a_base64(decoded, newline=False) != raw:
        raise WireError(reasons.INVALID_BASE64, "not canonical standard padded base64")
    return _object_from_utf8(decoded)


def _object_from_utf8(data: bytes) -> dict[str, Any]:
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise WireError(reasons.INVALID_UTF8, f"invalid UTF-8 at byte {exc.start}") from None
    return loads_object(text)


def _trusted(parse: Callable[[object, str, bool], _T], obj: dict[str, Any]) -> _T:
    """Parse output of :func:`loads_object`, which is already strictly valid, fresh JSON."""
    return parse(obj, "", True)


def encode_header(obj: Mapping[str, Any]) -> str:
    """Standard padded base64 of compact UTF-8 JSON (``ensure_ascii=False``).

    Raises ``WireError`` (``invalid_json`` / ``invalid_utf8`` / ``header_too_large``) if the
    object is not JSON-serialisable or the result would exceed :data:`MAX_HEADER_BYTES`.
    """
    return _b64_header(encode_json(obj))


def _b64_header(data: bytes) -> str:
    out = base64.b64encode(data)
    if len(out) > MAX_HEADER_BYTES:
        raise WireError(reasons.HEADER_TOO_LARGE, f"encoded header is {len(out)} bytes > {MAX_HEADER_BYTES}")
    return out.decode("ascii")


def encode_json(obj: Mapping[str, Any]) -> bytes:
    """Compact UTF-8 JSON bytes (for headers and request/response bodies)."""
    try:
        text = json.dumps(
            obj if isinstance(obj, dict) else dict(obj),
            separators=(",", ":"),
            ensure_ascii=False,
            allow_nan=False,
        )
    except (TypeError, ValueError, RecursionError) as exc:
        raise WireError(reasons.INVALID_JSON, f"not JSON-serialisable: {str(exc)[:100]}") from None
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError:
        raise WireError(reasons.INVALID_UTF8, "lone UTF-16 surrogate in a string") from None


def decode_json(data: str | bytes, *, max_bytes: int = MAX_BODY_BYTES) -> dict[str, Any]:
    """Strictly parse a JSON object from a body (UTF-8 bytes or text); same rules as headers minus base64."""
    if isinstance(data, str):
        try:
            data = data.encode("utf-8")
        except UnicodeEncodeError:
            raise WireError(reasons.INVALID_UTF8, "lone UTF-16 surrogate in text") from None
    elif not isinstance(data, bytes | bytearray | memoryview):
        raise WireError(reasons.INVALID_JSON, f"body must be str or bytes, not {type(data).__name__}")
    if len(data) > max_bytes:
        raise WireError(reasons.BODY_TOO_LARGE, f"body longer than {max_bytes} bytes")
    return _object_from_utf8(bytes(data))


# ------------------------------------------------------------------------------------------------
# Typed helpers
# ------------------------------------------------------------------------------------------------


def decode_payment_required(value: str | bytes) -> PaymentRequired:
    """Decode a ``PAYMENT-REQUIRED`` header (v2 only)."""
    return _trusted(PaymentRequired._parse, decode_header(value))


def encode_payment_required(payment_required: PaymentRequired) -> str:
    """Encode a ``PAYMENT-REQUIRED`` header value."""
    return encode_header(payment_required.to_wire())


def decode_payment_signature(value: str | bytes) -> PaymentPayload | PaymentPayloadV1:
    """Decode ``PAYMENT-SIGNATURE`` / ``X-PAYMENT``; ``x402Version`` 1 -> v1, 2 -> v2, else ``unsupported_version``."""
    return _trusted(_parse_payment_payload, decode_header(value))


def encode_payment_payload(payload: PaymentPayload | PaymentPayloadV1) -> str:
    """Encode a ``PAYMENT-SIGNATURE`` (v2) or ``X-PAYMENT`` (v1) header value."""
    return encode_header(payload.to_wire())


def decode_payment_response(value: str | bytes) -> SettleResponse:
    """Decode ``PAYMENT-RESPONSE`` / ``X-PAYMENT-RESPONSE``."""
    return _trusted(SettleResponse._parse, decode_header(value))


def encode_payment_response(response: SettleResponse) -> str:
    """Encode a ``PAYMENT-RESPONSE`` / ``X-PAYMENT-RESPONSE`` header value."""
    return encode_header(response.to_wire())


def decode_body(model: type[_M], body: str | bytes, *, max_bytes: int = MAX_BODY_BYTES) -> _M:
    """Strictly decode a JSON body as ``model`` (e.g. ``FacilitatorRequest``, ``VerifyResponse``,
    ``SettleResponse``, ``SupportedResponse``): :func:`decode_json` then ``model.from_wire``."""
    return _trusted(model._parse, decode_json(body, max_bytes=max_bytes))


def decode_v1_body(body: str | bytes, *, max_bytes: int = MAX_BODY_BYTES) -> PaymentRequiredV1:
    """Decode a v1 402 JSON body ``{x402Version: 1, error, accepts}`` (checklist 92)."""
    return _trusted(PaymentRequiredV1._parse, decode_json(body, max_bytes=max_bytes))


def encode_v1_body(payment_required: PaymentRequiredV1) -> bytes:
    """Encode a v1 402 JSON body."""
    return encode_json(payment_required.to_wire())
