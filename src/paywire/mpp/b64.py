"""base64url without padding (RFC 4648 §5), strict on input: the MPP encoding of requests, credentials, receipts."""

from __future__ import annotations

import base64
import binascii
import re
from typing import Final

from paywire.errors import WireError

_B64URL_RE: Final = re.compile(r"[A-Za-z0-9_-]*={0,2}")
_B64STD_RE: Final = re.compile(r"[A-Za-z0-9+/]*={0,2}")


def b64url_encode(data: bytes) -> str:
    """base64url, no ``=`` padding."""
    return base64.urlsafe_b64encode(data).decode("ascii").rstrip("=")


def b64url_decode(text: str, *, what: str = "value") -> bytes:
    """Decode base64url with or without padding; anything else (``+``, ``/``, spaces, bad length) is refused."""
    if not isinstance(text, str) or _B64URL_RE.fullmatch(text) is None:
        raise WireError("invalid_base64", f"{what} is not base64url")
    body = text.rstrip("=")
    if len(body) % 4 == 1 or (text != body and len(text) % 4 != 0):
        raise WireError("invalid_base64", f"{what} has an impossible base64url length")
    try:
        return base64.urlsafe_b64decode(body + "=" * (-len(body) % 4))
    except (binascii.Error, ValueError):
        raise WireError("invalid_base64", f"{what} is not base64url") from None


def b64_any_decode(text: str, *, what: str = "value") -> bytes:
    """Decode standard *or* URL-safe base64, padded or not (L402 macaroons travel in both)."""
    if _B64URL_RE.fullmatch(text) is not None:
        return b64url_decode(text, what=what)
    if _B64STD_RE.fullmatch(text) is None:
        raise WireError("invalid_base64", f"{what} is not base64")
    return b64url_decode(text.replace("+", "-").replace("/", "_"), what=what)
