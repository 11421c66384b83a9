"""The verified payer, as headers the upstream can trust: ``Paywire-*`` headers signed with an HMAC key shared by
the proxy and the upstream. The proxy removes every incoming ``Paywire-*`` header, so a client cannot set them;
the signature lets the upstream check that they came from the proxy (and for this very request).

The upstream checks a request with :func:`verify_identity` (no I/O; the headers as a mapping)::

    identity = verify_identity(request.headers, SECRET, method=request.method, target=path_and_query)
    if identity is None: reject
    identity["payer"], identity["amount"], identity["protocol"] …

Signed text: the version, the method, the request target (path and query as forwarded) and each identity header
``name:value`` in :data:`FIELDS` order, joined by newlines; ``Paywire-Signature: v1=<hex HMAC-SHA256>``.
``Paywire-Time`` (Unix seconds) bounds how old a signature may be (``max_age``).
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import time
from collections.abc import Mapping
from typing import Any

__all__ = ["FIELDS", "PREFIX", "SIGNATURE", "identity_headers", "verify_identity"]

PREFIX = "paywire-"
SIGNATURE = "paywire-signature"
FIELDS = ("payer", "protocol", "amount", "decimals", "asset", "network", "pay-to", "route", "transaction",
          "payment-id", "time")


def _text(method: str, target: str, values: Mapping[str, str]) -> bytes:
    lines = ["paywire-identity-v1", method.upper(), target, *(f"{f}:{values.get(f, '')}" for f in FIELDS)]
    return "\n".join(lines).encode()


@functools.lru_cache(maxsize=16)
def _pads(secret: bytes) -> tuple[Any, Any]:
    """HMAC-SHA256's inner and outer hash states after the key block (RFC 2104): each MAC starts from copies of
    them, a quarter of what ``hmac.new`` costs per call."""
    if len(secret) > 64:
        secret = hashlib.sha256(secret).digest()
    block = secret.ljust(64, b"\0")
    return hashlib.sha256(bytes(b ^ 0x36 for b in block)), hashlib.sha256(bytes(b ^ 0x5C for b in block))


def _mac(secret: bytes, method: str, target: str, values: Mapping[str, str]) -> str:
    """HMAC-SHA256 of the signed text, hex."""
    pads = _pads(bytes(secret))
    inner, outer = pads[0].copy(), pads[1].copy()
    inner.update(_text(method, target, values))
    outer.update(inner.digest())
    return str(outer.hexdigest())


def identity_headers(payment: Any, secret: bytes, method: str, target: str,
                     now: float | None = None) -> list[tuple[str, str]]:
    """``Paywire-*`` headers (and the signature) for a :class:`~paywire.server.flow.PaymentInfo`."""
    values = {
        "payer": payment.payer or "", "protocol": payment.protocol, "amount": str(payment.amount),
        "decimals": str(payment.decimals), "asset": payment.asset, "network": payment.network,
        "pay-to": payment.pay_to, "route": payment.route, "transaction": payment.transaction or "",
        "payment-id": payment.payment_id or "", "time": str(int(now if now is not None else time.time())),
    }
    out = [(PREFIX + f, values[f]) for f in FIELDS if values[f]]
    out.append((SIGNATURE, "v1=" + _mac(secret, method, target, values)))
    return out


def verify_identity(headers: Mapping[str, str], secret: bytes, *, method: str, target: str,
                    max_age: float = 300.0, now: float | None = None) -> dict[str, str] | None:
    """The identity fields (``payer``, ``amount`` …) when the signature checks out for this request, else None.

    ``headers``: any mapping (case-insensitive lookups are tried lower-case first)."""
    def get(name: str) -> str:
        value = headers.get(name)
        if value is None:
            value = headers.get(name.title())
        return value or ""

    sig = get(SIGNATURE)
    if not sig.startswith("v1="):
        return None
    values = {f: get(PREFIX + f) for f in FIELDS}
    if not hmac.compare_digest(sig[3:], _mac(secret, method, target, values)):
        return None
    try:
        stamp = float(values["time"])
    except ValueError:
        return None
    if abs((now if now is not None else time.time()) - stamp) > max_age:
        return None
    return {f: v for f, v in values.items() if v}
