"""The buyer decodes a 402 a second time for a sign-in challenge only when it can hold one: the quick check
must never skip a ``PAYMENT-REQUIRED`` value in which the strict decode finds the sign-in extension."""

from __future__ import annotations

import base64
import json

import pytest

from paywire.client.engine import _may_ask_sign_in
from paywire.errors import WireError
from paywire.identity.siwx import SIGN_IN_WITH_X
from paywire.x402.codec import decode_header


def _b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


PLAIN = {"x402Version": 2, "accepts": [], "resource": {"url": "https://a.example/x"}}
ASKS = {**PLAIN, "extensions": {SIGN_IN_WITH_X: {"info": {"domain": "a.example"}}}}

VALUES = [
    ("plain", _b64(json.dumps(PLAIN)), False),
    ("asks", _b64(json.dumps(ASKS)), True),
    ("asks, key escaped", _b64(json.dumps(ASKS).replace("sign-in", "sign\\u002din")), True),
    ("asks, all escaped", _b64(json.dumps(ASKS, ensure_ascii=True).replace("s", "\\u0073")), True),
    ("not base64", "%%%not base64%%%", False),
    ("not canonical base64", _b64(json.dumps(ASKS)).rstrip("="), True),
]


@pytest.mark.parametrize(("name", "value", "has_extension"), VALUES, ids=[v[0] for v in VALUES])
def test_the_quick_check_never_skips_a_sign_in_challenge(name: str, value: str, has_extension: bool) -> None:
    try:
        strict = SIGN_IN_WITH_X in (decode_header(value).get("extensions") or {})
    except WireError:
        strict = False
    if name != "not canonical base64":
        assert strict is has_extension, f"{name}: the strict decode itself changed"
    if strict:
        assert _may_ask_sign_in(value), f"{name}: a sign-in challenge was skipped by the quick check"
    if name == "plain":
        assert not _may_ask_sign_in(value), "a 402 without a sign-in challenge was decoded twice"
