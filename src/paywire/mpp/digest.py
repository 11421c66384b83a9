"""Request-body binding: RFC 9530 ``Content-Digest`` values in the challenge ``digest`` (checklist 112)."""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
from typing import Final

_ALGS: Final = {"sha-256": hashlib.sha256, "sha-512": hashlib.sha512}
_ITEM_RE: Final = re.compile(r"\s*([a-z0-9-]+)\s*=\s*(:[A-Za-z0-9+/=]*:|[A-Za-z0-9+/]+=*)\s*")


def content_digest(body: bytes, algorithm: str = "sha-256") -> str:
    """``sha-256=:<base64>:`` (RFC 9530 / RFC 8941 byte sequence)."""
    h = _ALGS[algorithm](body).digest()
    return f"{algorithm}=:{base64.b64encode(h).decode('ascii')}:"


def digest_matches(digest: str, body: bytes) -> bool:
    """True when some supported entry of ``digest`` matches ``body``.

    Accepts the RFC 9530 form and the colon-less ``sha-256=<base64>`` form pympp writes.
    """
    matched = False
    for item in digest.split(","):
        m = _ITEM_RE.fullmatch(item)
        if m is None:
            return False
        alg, value = m.group(1), m.group(2).strip(":")
        fn = _ALGS.get(alg)
        if fn is None:
            continue
        try:
            want = base64.b64decode(value, validate=True)
        except (binascii.Error, ValueError):
            return False
        if not hmac.compare_digest(want, fn(body).digest()):
            return False
        matched = True
    return matched
