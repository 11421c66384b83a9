"""``Paywire-Signature`` is plain HMAC-SHA256 over the documented text: an upstream in any language can check it."""

from __future__ import annotations

import hashlib
import hmac
from types import SimpleNamespace

import pytest

from paywire.proxy.identity import FIELDS, PREFIX, SIGNATURE, identity_headers, verify_identity

PAYMENT = SimpleNamespace(payer="0xAbC", protocol="x402", amount=10_000, decimals=6, asset="0x" + "ab" * 20,
                          network="eip155:8453", pay_to="0x" + "cd" * 20, route="GET /paid", transaction="0x01",
                          payment_id=None)


@pytest.mark.parametrize("secret", [b"short", b"k" * 64, b"a much longer secret than one SHA-256 block " * 3])
def test_signature_is_standard_hmac_sha256_of_the_documented_text(secret: bytes) -> None:
    headers = dict(identity_headers(PAYMENT, secret, "get", "/paid?x=1", now=1_700_000_000))
    text = "\n".join(["paywire-identity-v1", "GET", "/paid?x=1",
                      *(f"{f}:{headers.get(PREFIX + f, '')}" for f in FIELDS)]).encode()
    assert headers[SIGNATURE] == "v1=" + hmac.new(secret, text, hashlib.sha256).hexdigest()
    assert verify_identity(headers, secret, method="GET", target="/paid?x=1", now=1_700_000_000) is not None
    assert verify_identity(headers, secret + b"!", method="GET", target="/paid?x=1", now=1_700_000_000) is None
