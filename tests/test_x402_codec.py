"""x402 header codecs: malformed-header corpus, fuzzing, encoding shape (digest §3.2; checklist 4, 10, 29, 92)."""

from __future__ import annotations

import base64
import json
import re
import sys
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from paywire.errors import WireError
from paywire.schemes.evm_exact.payload import ExactEvmPayload
from paywire.x402 import (
    MAX_HEADER_BYTES,
    FacilitatorRequest,
    PaymentPayload,
    PaymentPayloadV1,
    PaymentRequired,
    PaymentRequiredV1,
    SettleResponse,
    SupportedResponse,
    VerifyResponse,
    decode_body,
    decode_header,
    decode_json,
    decode_payment_required,
    decode_payment_response,
    decode_payment_signature,
    decode_v1_body,
    encode_header,
    encode_json,
    encode_payment_payload,
    encode_payment_required,
    encode_payment_response,
    encode_v1_body,
    reasons,
)

try:  # tests/ is a rootdir-style directory (pytest's default prepend import mode)
    from test_x402_models import (
        evm_requirements,
        exact_evm_payload,
        payment_payload,
        payment_required,
        requirements_v1,
    )
except ImportError:  # pragma: no cover - tests/ turned into a package
    from tests.test_x402_models import (  # type: ignore[no-redef]
        evm_requirements,
        exact_evm_payload,
        payment_payload,
        payment_required,
        requirements_v1,
    )

HEADER_RE = re.compile(r"[A-Za-z0-9+/]*={0,2}")  # checklist 4


def b64(obj: Any) -> str:
    """Standard base64 of compact JSON (how a peer would encode ``obj``)."""
    return base64.b64encode(json.dumps(obj, separators=(",", ":")).encode()).decode()


def b64raw(data: bytes | str) -> str:
    return base64.b64encode(data.encode() if isinstance(data, str) else data).decode()


def with_accepted(**fields: Any) -> dict[str, Any]:
    pp = payment_payload()
    pp["accepted"].update(fields)
    return pp


def with_auth(**fields: Any) -> dict[str, Any]:
    pp = payment_payload()
    pp["payload"]["authorization"].update(fields)
    return pp


def without(obj: dict[str, Any], key: str) -> dict[str, Any]:
    return {k: v for k, v in obj.items() if k != key}


def decode_exact(value: str | bytes) -> ExactEvmPayload | None:
    """PAYMENT-SIGNATURE -> PaymentPayload -> exact/EVM EIP-3009 payload (what the scheme plugin does)."""
    pp = decode_payment_signature(value)
    if not isinstance(pp, PaymentPayload):
        return None
    return ExactEvmPayload.from_wire(pp.payload, "payload")


SIG = decode_payment_signature
REQ = decode_payment_required
RESP = decode_payment_response
EXACT = decode_exact
VALID = b64(payment_payload())
DEEP_OK = {"x402Version": 2}

_pp_v1 = {"x402Version": 1, "scheme": "exact", "network": "base-sepolia", "payload": exact_evm_payload()}

Case = tuple[str, Callable[[Any], Any], Any, str]

# fmt: off
MALFORMED: list[Case] = [
    # --- size (checked before base64) -------------------------------------------------------------
    ("oversized-str", SIG, "A" * (MAX_HEADER_BYTES + 4), reasons.HEADER_TOO_LARGE),
    ("oversized-bytes", SIG, b"A" * (MAX_HEADER_BYTES + 4), reasons.HEADER_TOO_LARGE),
    ("oversized-garbage", SIG, "\x00 -_" * MAX_HEADER_BYTES, reasons.HEADER_TOO_LARGE),
    ("oversized-valid-json", REQ, b64({**payment_required(), "error": "x" * 13000}), reasons.HEADER_TOO_LARGE),
    # --- base64 alphabet / padding / whitespace ---------------------------------------------------
    ("base64url-dash", SIG, "e-30", reasons.INVALID_BASE64),
    ("base64url-underscore", SIG, "e_30", reasons.INVALID_BASE64),
    ("base64url-of-real-payload", SIG, base64.urlsafe_b64encode(b'{"a":"\xff\xfe~~~"}').decode(), reasons.INVALID_BASE64),
    ("unpadded", SIG, VALID.rstrip("="), reasons.INVALID_BASE64),
    ("leading-space", SIG, " " + VALID, reasons.INVALID_BASE64),
    ("trailing-space", SIG, VALID + " ", reasons.INVALID_BASE64),
    ("trailing-newline", SIG, VALID + "\n", reasons.INVALID_BASE64),
    ("mime-wrapped", SIG, base64.encodebytes(json.dumps(payment_payload()).encode()).decode(), reasons.INVALID_BASE64),
    ("tab-inside", SIG, VALID[:8] + "\t" + VALID[8:], reasons.INVALID_BASE64),
    ("missing-padding", SIG, "e30", reasons.INVALID_BASE64),
    ("extra-padding", SIG, "e30==", reasons.INVALID_BASE64),
    ("only-padding", SIG, "====", reasons.INVALID_BASE64),
    ("padding-in-middle", SIG, "e30=e30=", reasons.INVALID_BASE64),
    ("non-canonical-bits", SIG, "e31=", reasons.INVALID_BASE64),
    ("non-ascii-str", SIG, "e30=é", reasons.INVALID_BASE64),
    ("fullwidth-letters", SIG, "ｅ３０＝", reasons.INVALID_BASE64),
    ("nul-byte", SIG, b"e30=\x00", reasons.INVALID_BASE64),
    ("not-str-or-bytes", SIG, 12345, reasons.INVALID_BASE64),
    # --- UTF-8 ------------------------------------------------------------------------------------
    ("latin1-bytes", SIG, b64raw(b'{"a":"\xe9"}'), reasons.INVALID_UTF8),
    ("utf16-bom", SIG, b64raw("{}".encode("utf-16")), reasons.INVALID_UTF8),
    ("overlong-utf8", SIG, b64raw(b'{"a":"\xc0\xaf"}'), reasons.INVALID_UTF8),
    ("utf8-encoded-surrogate", SIG, b64raw(b'{"a":"\xed\xa0\x80"}'), reasons.INVALID_UTF8),
    ("truncated-utf8", SIG, b64raw(b'{"a":"\xe2\x82"}'), reasons.INVALID_UTF8),
    # --- JSON -------------------------------------------------------------------------------------
    ("empty", SIG, "", reasons.INVALID_JSON),
    ("not-json", SIG, b64raw("hello"), reasons.INVALID_JSON),
    ("truncated-json", SIG, b64raw('{"x402Version":2'), reasons.INVALID_JSON),
    ("trailing-garbage", SIG, b64raw("{}x"), reasons.INVALID_JSON),
    ("single-quotes", SIG, b64raw("{'x402Version':2}"), reasons.INVALID_JSON),
    ("utf8-bom", SIG, b64raw(b"\xef\xbb\xbf{}"), reasons.INVALID_JSON),
    ("nan", SIG, b64raw('{"x402Version":2,"n":NaN}'), reasons.INVALID_JSON),
    ("infinity", SIG, b64raw('{"x402Version":2,"n":Infinity}'), reasons.INVALID_JSON),
    ("minus-infinity", SIG, b64raw('{"x402Version":2,"n":-Infinity}'), reasons.INVALID_JSON),
    ("float-overflow", SIG, b64raw('{"x402Version":2,"n":1e400}'), reasons.INVALID_JSON),
    ("huge-int-literal", SIG, b64raw('{"x402Version":' + "9" * 5000 + "}"), reasons.INVALID_JSON),
    ("duplicate-key-top", SIG, b64raw('{"x402Version":2,"x402Version":1}'), reasons.INVALID_JSON),
    (
        "duplicate-key-nested",
        SIG,
        b64raw(json.dumps(payment_payload())[:-1] + ',"payload":{"a":1,"a":1}}'),
        reasons.INVALID_JSON,
    ),
    ("depth-33", SIG, b64raw('{"a":' + "[" * 32 + "]" * 32 + "}"), reasons.INVALID_JSON),
    ("depth-5000", SIG, b64raw("[" * 5000 + "]" * 5000), reasons.INVALID_JSON),
    ("lone-surrogate-escape", SIG, b64raw('{"x402Version":2,"s":"\\ud800"}'), reasons.INVALID_JSON),
    ("lone-surrogate-key", SIG, b64raw('{"\\udfff":1}'), reasons.INVALID_JSON),
    ("json-array", SIG, b64([payment_payload()]), reasons.NOT_AN_OBJECT),
    ("json-string", SIG, b64("x"), reasons.NOT_AN_OBJECT),
    ("json-null", SIG, b64(None), reasons.NOT_AN_OBJECT),
    ("json-number", SIG, b64(2), reasons.NOT_AN_OBJECT),
    # --- missing fields ---------------------------------------------------------------------------
    ("missing-accepted", SIG, b64(without(payment_payload(), "accepted")), reasons.MISSING_FIELD),
    ("missing-payload", SIG, b64(without(payment_payload(), "payload")), reasons.MISSING_FIELD),
    ("missing-version", SIG, b64(without(payment_payload(), "x402Version")), reasons.MISSING_FIELD),
    ("missing-accepted-asset", SIG, b64({**payment_payload(), "accepted": without(evm_requirements(), "asset")}), reasons.MISSING_FIELD),
    ("missing-max-timeout", SIG, b64({**payment_payload(), "accepted": without(evm_requirements(), "maxTimeoutSeconds")}), reasons.MISSING_FIELD),
    ("missing-accepts", REQ, b64(without(payment_required(), "accepts")), reasons.MISSING_FIELD),
    ("missing-resource-url", REQ, b64({**payment_required(), "resource": {"description": "x"}}), reasons.MISSING_FIELD),
    ("missing-authorization", EXACT, b64({**payment_payload(), "payload": {"signature": "0x" + "11" * 65}}), reasons.MISSING_FIELD),
    ("missing-auth-nonce", EXACT, b64({**payment_payload(), "payload": {**exact_evm_payload(), "authorization": without(exact_evm_payload()["authorization"], "nonce")}}), reasons.MISSING_FIELD),
    ("auth-nonce-null", EXACT, b64(with_auth(nonce=None)), reasons.INVALID_FIELD_TYPE),
    ("v1-missing-scheme", SIG, b64(without(_pp_v1, "scheme")), reasons.MISSING_FIELD),
    ("settle-missing-success", RESP, b64({"transaction": "", "network": "eip155:1"}), reasons.MISSING_FIELD),
    # --- wrong JSON types -------------------------------------------------------------------------
    ("bool-version", SIG, b64({**payment_payload(), "x402Version": True}), reasons.INVALID_FIELD_TYPE),
    ("string-version", SIG, b64({**payment_payload(), "x402Version": "2"}), reasons.INVALID_FIELD_TYPE),
    ("float-version", SIG, b64({**payment_payload(), "x402Version": 2.0}), reasons.INVALID_FIELD_TYPE),
    ("float-max-timeout", SIG, b64(with_accepted(maxTimeoutSeconds=60.0)), reasons.INVALID_FIELD_TYPE),
    ("string-max-timeout", SIG, b64(with_accepted(maxTimeoutSeconds="60")), reasons.INVALID_FIELD_TYPE),
    ("negative-max-timeout", SIG, b64(with_accepted(maxTimeoutSeconds=-1)), reasons.INVALID_FIELD_TYPE),
    ("bool-max-timeout", SIG, b64(with_accepted(maxTimeoutSeconds=True)), reasons.INVALID_FIELD_TYPE),
    ("amount-as-number", SIG, b64(with_accepted(amount=10000)), reasons.INVALID_FIELD_TYPE),
    ("amount-as-float", SIG, b64(with_accepted(amount=1.5)), reasons.INVALID_FIELD_TYPE),
    ("amount-null", SIG, b64(with_accepted(amount=None)), reasons.INVALID_FIELD_TYPE),
    ("scheme-empty", SIG, b64(with_accepted(scheme="")), reasons.INVALID_FIELD_TYPE),
    ("scheme-number", SIG, b64(with_accepted(scheme=1)), reasons.INVALID_FIELD_TYPE),
    ("payto-number", SIG, b64(with_accepted(payTo=1)), reasons.INVALID_FIELD_TYPE),
    ("accepted-null", SIG, b64({**payment_payload(), "accepted": None}), reasons.INVALID_FIELD_TYPE),
    ("accepted-array", SIG, b64({**payment_payload(), "accepted": [evm_requirements()]}), reasons.INVALID_FIELD_TYPE),
    ("payload-array", SIG, b64({**payment_payload(), "payload": []}), reasons.INVALID_FIELD_TYPE),
    ("extra-array", SIG, b64(with_accepted(extra=[])), reasons.INVALID_FIELD_TYPE),
    ("extensions-string", SIG, b64({**payment_payload(), "extensions": "x"}), reasons.INVALID_FIELD_TYPE),
    ("resource-string", SIG, b64({**payment_payload(), "resource": "https://a.test"}), reasons.INVALID_FIELD_TYPE),
    ("accepts-object", REQ, b64({**payment_required(), "accepts": evm_requirements()}), reasons.INVALID_FIELD_TYPE),
    ("accepts-item-string", REQ, b64({**payment_required(), "accepts": ["exact"]}), reasons.INVALID_FIELD_TYPE),
    ("error-number", REQ, b64({**payment_required(), "error": 402}), reasons.INVALID_FIELD_TYPE),
    ("settle-success-string", RESP, b64({"success": "true", "transaction": "", "network": "eip155:1"}), reasons.INVALID_FIELD_TYPE),
    ("signature-number", EXACT, b64({**payment_payload(), "payload": {**exact_evm_payload(), "signature": 1}}), reasons.INVALID_FIELD_TYPE),
    # --- amounts (canonical base-10, ASCII, < 2**256) ---------------------------------------------
    ("amount-plus", SIG, b64(with_accepted(amount="+10")), reasons.INVALID_AMOUNT),
    ("amount-leading-space", SIG, b64(with_accepted(amount=" 10")), reasons.INVALID_AMOUNT),
    ("amount-trailing-space", SIG, b64(with_accepted(amount="10 ")), reasons.INVALID_AMOUNT),
    ("amount-trailing-newline", SIG, b64(with_accepted(amount="10\n")), reasons.INVALID_AMOUNT),
    ("amount-leading-zero", SIG, b64(with_accepted(amount="010")), reasons.INVALID_AMOUNT),
    ("amount-double-zero", SIG, b64(with_accepted(amount="00")), reasons.INVALID_AMOUNT),
    ("amount-exponent", SIG, b64(with_accepted(amount="1e3")), reasons.INVALID_AMOUNT),
    ("amount-negative", SIG, b64(with_accepted(amount="-1")), reasons.INVALID_AMOUNT),
    ("amount-empty", SIG, b64(with_accepted(amount="")), reasons.INVALID_AMOUNT),
    ("amount-hex", SIG, b64(with_accepted(amount="0x10")), reasons.INVALID_AMOUNT),
    ("amount-decimal-point", SIG, b64(with_accepted(amount="1.0")), reasons.INVALID_AMOUNT),
    ("amount-underscore", SIG, b64(with_accepted(amount="1_000")), reasons.INVALID_AMOUNT),
    ("amount-fullwidth", SIG, b64(with_accepted(amount="１")), reasons.INVALID_AMOUNT),
    ("amount-arabic-indic", SIG, b64(with_accepted(amount="١٢")), reasons.INVALID_AMOUNT),
    ("amount-2pow256", SIG, b64(with_accepted(amount=str(2**256))), reasons.INVALID_AMOUNT),
    ("amount-79-digits", SIG, b64(with_accepted(amount="1" * 79)), reasons.INVALID_AMOUNT),
    ("auth-value-decimal", EXACT, b64(with_auth(value="1.0")), reasons.INVALID_AMOUNT),
    ("auth-valid-before-negative", EXACT, b64(with_auth(validBefore="-5")), reasons.INVALID_AMOUNT),
    ("settle-amount-leading-zero", RESP, b64({"success": True, "transaction": "0x1", "network": "eip155:1", "amount": "01"}), reasons.INVALID_AMOUNT),
    # --- addresses --------------------------------------------------------------------------------
    ("payto-short", SIG, b64(with_accepted(payTo="0x" + "a" * 39)), reasons.INVALID_ADDRESS),
    ("payto-long", SIG, b64(with_accepted(payTo="0x" + "a" * 41)), reasons.INVALID_ADDRESS),
    ("payto-no-prefix", SIG, b64(with_accepted(payTo="a" * 40)), reasons.INVALID_ADDRESS),
    ("payto-uppercase-prefix", SIG, b64(with_accepted(payTo="0X" + "a" * 40)), reasons.INVALID_ADDRESS),
    ("asset-non-hex", SIG, b64(with_accepted(asset="0x" + "g" * 40)), reasons.INVALID_ADDRESS),
    ("asset-trailing-newline", SIG, b64(with_accepted(asset="0x" + "a" * 40 + "\n")), reasons.INVALID_ADDRESS),
    ("asset-solana-on-evm", SIG, b64(with_accepted(asset="EPjFWdd5AufqSSqeM2qN1xzybapC8G4wEGGkZwyTDt1v")), reasons.INVALID_ADDRESS),
    ("payto-empty-non-evm", SIG, b64(with_accepted(network="solana:5eykt4UsFv8P8NJdTREpY1vzqKqZKvdp", payTo="")), reasons.INVALID_ADDRESS),
    ("auth-from-bad", EXACT, b64(with_auth(**{"from": "0x1234"})), reasons.INVALID_ADDRESS),
    # --- networks ---------------------------------------------------------------------------------
    ("v2-legacy-name", SIG, b64(with_accepted(network="base-sepolia")), reasons.INVALID_NETWORK),
    ("caip2-no-colon", SIG, b64(with_accepted(network="eip155")), reasons.INVALID_NETWORK),
    ("caip2-uppercase-namespace", SIG, b64(with_accepted(network="EIP155:1")), reasons.INVALID_NETWORK),
    ("caip2-empty-reference", SIG, b64(with_accepted(network="eip155:")), reasons.INVALID_NETWORK),
    ("caip2-short-namespace", SIG, b64(with_accepted(network="ab:1")), reasons.INVALID_NETWORK),
    ("caip2-long-reference", SIG, b64(with_accepted(network="eip155:" + "1" * 33)), reasons.INVALID_NETWORK),
    ("caip2-two-colons", SIG, b64(with_accepted(network="eip155:1:2")), reasons.INVALID_NETWORK),
    ("caip2-trailing-newline", SIG, b64(with_accepted(network="eip155:8453\n")), reasons.INVALID_NETWORK),
    ("caip2-bad-char", SIG, b64(with_accepted(network="eip155:84.53")), reasons.INVALID_NETWORK),
    ("v1-unknown-network", SIG, b64({**_pp_v1, "network": "base-mainnet"}), reasons.INVALID_NETWORK),
    ("settle-bad-network", RESP, b64({"success": True, "transaction": "0x1", "network": "Base Mainnet"}), reasons.INVALID_NETWORK),
    # --- versions ---------------------------------------------------------------------------------
    ("version-3", SIG, b64({**payment_payload(), "x402Version": 3}), reasons.UNSUPPORTED_VERSION),
    ("version-0", SIG, b64({**payment_payload(), "x402Version": 0}), reasons.UNSUPPORTED_VERSION),
    ("version-negative", SIG, b64({**payment_payload(), "x402Version": -2}), reasons.UNSUPPORTED_VERSION),
    ("payment-required-v1-in-header", REQ, b64({**payment_required(), "x402Version": 1}), reasons.UNSUPPORTED_VERSION),
    # --- protocol-level payload rules -------------------------------------------------------------
    ("accepts-empty", REQ, b64({**payment_required(), "accepts": []}), reasons.INVALID_PAYLOAD),
    ("nonce-short", EXACT, b64(with_auth(nonce="0x" + "ab" * 31)), reasons.INVALID_PAYLOAD),
    ("nonce-long", EXACT, b64(with_auth(nonce="0x" + "ab" * 33)), reasons.INVALID_PAYLOAD),
    ("nonce-no-prefix", EXACT, b64(with_auth(nonce="ab" * 32)), reasons.INVALID_PAYLOAD),
    ("nonce-non-hex", EXACT, b64(with_auth(nonce="0x" + "zz" * 32)), reasons.INVALID_PAYLOAD),
    ("nonce-decimal", EXACT, b64(with_auth(nonce="12345")), reasons.INVALID_PAYLOAD),
    ("signature-odd-length", EXACT, b64({**payment_payload(), "payload": {**exact_evm_payload(), "signature": "0x" + "a" * 129}}), reasons.INVALID_PAYLOAD),
    ("signature-no-prefix", EXACT, b64({**payment_payload(), "payload": {**exact_evm_payload(), "signature": "ab" * 65}}), reasons.INVALID_PAYLOAD),
    ("signature-empty", EXACT, b64({**payment_payload(), "payload": {**exact_evm_payload(), "signature": "0x"}}), reasons.INVALID_PAYLOAD),
    ("signature-one-byte", EXACT, b64({**payment_payload(), "payload": {**exact_evm_payload(), "signature": "0xab"}}), reasons.INVALID_PAYLOAD),
    ("signature-whitespace", EXACT, b64({**payment_payload(), "payload": {**exact_evm_payload(), "signature": "0x ab ab"}}), reasons.INVALID_PAYLOAD),
]
# fmt: on


@pytest.mark.parametrize(
    ("decoder", "value", "reason"), [c[1:] for c in MALFORMED], ids=[c[0] for c in MALFORMED]
)
def test_malformed_header_corpus(decoder: Callable[[Any], Any], value: Any, reason: str) -> None:
    """checklist 10: a header that is not valid base64 JSON (or not a valid message) never decodes."""
    with pytest.raises(WireError) as exc:
        decoder(value)
    assert type(exc.value) is WireError
    assert exc.value.reason == reason, exc.value.detail
    assert exc.value.reason in reasons.WIRE_REASONS


def test_corpus_is_large_enough_and_ids_unique() -> None:
    assert len(MALFORMED) >= 40
    assert len({c[0] for c in MALFORMED}) == len(MALFORMED)


def test_valid_headers_decode() -> None:
    """The baseline values the corpus mutates are themselves accepted."""
    assert isinstance(decode_payment_signature(VALID), PaymentPayload)
    assert isinstance(decode_payment_signature(VALID.encode()), PaymentPayload)
    assert isinstance(decode_payment_signature(b64(_pp_v1)), PaymentPayloadV1)
    assert isinstance(decode_exact(VALID), ExactEvmPayload)
    assert isinstance(decode_payment_required(b64(payment_required())), PaymentRequired)
    resp = decode_payment_response(b64({"success": True, "transaction": "0x1", "network": "eip155:1"}))
    assert resp.success
    assert decode_header(b64({"a": '{"depth":' + "[" * 40 + "}"})) == {"a": '{"depth":' + "[" * 40 + "}"}


def test_depth_limit_boundary() -> None:
    """Depth 32 (top-level object included) is accepted, 33 is not."""
    expected: list[Any] = []
    for _ in range(30):
        expected = [expected]
    assert decode_header(b64raw('{"a":' + "[" * 31 + "]" * 31 + "}")) == {"a": expected}
    with pytest.raises(WireError) as exc:
        decode_header(b64raw('{"a":' + "[" * 32 + "]" * 32 + "}"))
    assert exc.value.reason == reasons.INVALID_JSON


def test_depth_check_independent_of_recursion_limit() -> None:
    """Deep input is refused before parsing, even if some library raised the recursion limit."""
    old = sys.getrecursionlimit()
    sys.setrecursionlimit(100_000)
    try:
        for text in ("[" * 5000 + "]" * 5000, '{"a":' + "[" * 6000 + "]" * 6000 + "}"):
            with pytest.raises(WireError) as exc:
                decode_header(b64raw(text))
            assert exc.value.reason == reasons.INVALID_JSON
        with pytest.raises(WireError) as exc:
            decode_json("[" * 400_000 + "]" * 400_000)
        assert exc.value.reason == reasons.INVALID_JSON
    finally:
        sys.setrecursionlimit(old)


def test_brackets_inside_strings_do_not_count_as_depth() -> None:
    deep_looking = {"a": "[" * 100 + "{" * 100, "b": ['\\"[[[', '"{{{'], "c": [[[[{"d": "]]]]"}]]]]}
    assert decode_header(b64(deep_looking)) == deep_looking


def test_size_limit_boundary() -> None:
    """MAX_HEADER_BYTES exactly is decoded; one group more is header_too_large."""
    filler = "x" * (MAX_HEADER_BYTES * 3 // 4 - len('{"a":""}'))
    value = b64({"a": filler})
    assert len(value) == MAX_HEADER_BYTES
    assert decode_header(value) == {"a": filler}
    with pytest.raises(WireError) as exc:
        decode_header(b64({"a": filler + "xxx"}))
    assert exc.value.reason == reasons.HEADER_TOO_LARGE


def test_escaped_surrogate_pair_is_fine() -> None:
    """A valid \\ud83d\\ude00 pair (ensure_ascii encoders) decodes to one character."""
    assert decode_header(b64raw('{"s":"\\ud83d\\ude00"}')) == {"s": "😀"}


# ------------------------------------------------------------------------------------------------
# Encoding (checklist 4, 29)
# ------------------------------------------------------------------------------------------------


def test_encoded_headers_match_standard_alphabet() -> None:
    """checklist 4: ^[A-Za-z0-9+/]*={0,2}$ for every header we emit, including non-ASCII content."""
    pr = PaymentRequired.from_wire({**payment_required(), "error": "Zahlung erforderlich — ¥€ 😀 ~~~???>>>"})
    values = [
        encode_payment_required(pr),
        encode_payment_payload(PaymentPayload.from_wire(payment_payload())),
        encode_payment_payload(PaymentPayloadV1.from_wire(_pp_v1)),
        encode_payment_response(SettleResponse(True, "0x" + "ab" * 32, "eip155:8453", payer="0x" + "1" * 40)),
        encode_header({"a": "?>?>~~~"}),  # would produce '+' and '/' in the output
    ]
    for value in values:
        assert HEADER_RE.fullmatch(value), value
        assert len(value) % 4 == 0
    assert "+" in values[-1] or "/" in values[-1]


def test_encoding_is_compact_utf8() -> None:
    value = encode_header({"a": "é", "b": [1, 2]})
    assert base64.b64decode(value) == '{"a":"é","b":[1,2]}'.encode()


def test_typed_round_trips_through_headers() -> None:
    pr = PaymentRequired.from_wire(payment_required())
    assert decode_payment_required(encode_payment_required(pr)) == pr
    pp = PaymentPayload.from_wire(payment_payload())
    assert decode_payment_signature(encode_payment_payload(pp)) == pp
    resp = SettleResponse(False, "", "eip155:8453", error_reason="insufficient_funds")
    assert decode_payment_response(encode_payment_response(resp)) == resp


@pytest.mark.parametrize(
    ("obj", "reason"),
    [
        ({"n": float("nan")}, reasons.INVALID_JSON),
        ({"s": {1, 2}}, reasons.INVALID_JSON),
        ({"s": "\ud800"}, reasons.INVALID_UTF8),
        ({"big": "x" * MAX_HEADER_BYTES}, reasons.HEADER_TOO_LARGE),
    ],
    ids=["nan", "set", "lone-surrogate", "too-large"],
)
def test_encode_header_failures(obj: dict[str, Any], reason: str) -> None:
    with pytest.raises(WireError) as exc:
        encode_header(obj)
    assert exc.value.reason == reason


# ------------------------------------------------------------------------------------------------
# v1 bodies (checklist 92) and JSON bodies
# ------------------------------------------------------------------------------------------------


def test_v1_body_round_trip() -> None:
    body = {"x402Version": 1, "error": "X-PAYMENT header is required", "accepts": [requirements_v1()]}
    pr = decode_v1_body(json.dumps(body).encode())
    assert isinstance(pr, PaymentRequiredV1)
    assert pr.accepts[0].network == "base-sepolia"
    assert json.loads(encode_v1_body(pr)) == body
    assert decode_v1_body(json.dumps(body)) == pr


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b"{}", reasons.MISSING_FIELD),
        (b'{"x402Version":2,"accepts":[]}', reasons.UNSUPPORTED_VERSION),
        (b"[]", reasons.NOT_AN_OBJECT),
        (b"\xff", reasons.INVALID_UTF8),
        (b'{"x402Version":1,"accepts":[]}', reasons.INVALID_PAYLOAD),
        (b" " * 2_000_000, reasons.BODY_TOO_LARGE),
    ],
    ids=["empty-object", "v2", "array", "bad-utf8", "no-accepts", "too-large"],
)
def test_v1_body_failures(body: bytes, reason: str) -> None:
    with pytest.raises(WireError) as exc:
        decode_v1_body(body)
    assert exc.value.reason == reason


def test_decode_body_facilitator_messages() -> None:
    """checklist 38/39: facilitator request/response bodies decode strictly into typed models."""
    body = json.dumps(
        {"x402Version": 2, "paymentPayload": payment_payload(), "paymentRequirements": evm_requirements()}
    ).encode()
    request = decode_body(FacilitatorRequest, body)
    assert isinstance(request.payment_payload, PaymentPayload)
    assert json.loads(encode_json(request.to_wire())) == json.loads(body)
    assert decode_body(VerifyResponse, b'{"isValid":true,"payer":"0xabc"}') == VerifyResponse(
        True, payer="0xabc"
    )
    supported = decode_body(SupportedResponse, '{"kinds":[]}')
    assert supported.kinds == ()
    with pytest.raises(WireError) as exc:
        decode_body(VerifyResponse, b'{"isValid":"yes"}')
    assert exc.value.reason == reasons.INVALID_FIELD_TYPE
    with pytest.raises(WireError) as exc:
        decode_body(SettleResponse, b'{"success":true,"success":false}')
    assert exc.value.reason == reasons.INVALID_JSON


def test_decode_json_limits() -> None:
    assert decode_json(b' {"a": 1} ') == {"a": 1}
    with pytest.raises(WireError) as exc:
        decode_json(b'{"a":1}', max_bytes=3)
    assert exc.value.reason == reasons.BODY_TOO_LARGE
    assert encode_json({"a": [1, "é"]}) == '{"a":[1,"é"]}'.encode()


# ------------------------------------------------------------------------------------------------
# Fuzzing: only WireError or success ever comes out
# ------------------------------------------------------------------------------------------------

DECODERS: list[Callable[[Any], Any]] = [
    decode_header,
    decode_payment_signature,
    decode_payment_required,
    decode_payment_response,
    decode_exact,
]

json_leaves = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**300)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=40)
    | st.sampled_from(
        ["exact", "eip155:8453", "base", "10000", "0x" + "a" * 40, "0x" + "b" * 64, "010", "", "１", 2, 1, 60]
    )
)
json_values = st.recursive(
    json_leaves,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=5)
    ),
    max_leaves=12,
)
FIELD_NAMES = [
    "x402Version", "accepted", "payload", "resource", "extensions", "accepts", "error", "scheme", "network",
    "amount", "asset", "payTo", "maxTimeoutSeconds", "extra", "signature", "authorization", "from", "to",
    "value", "validAfter", "validBefore", "nonce", "success", "transaction", "url",
]  # fmt: skip


def _outcome_ok(decoder: Callable[[Any], Any], value: Any) -> None:
    try:
        decoder(value)
    except WireError as exc:
        assert type(exc) is WireError
        assert exc.reason in reasons.WIRE_REASONS


def _mutate(base: Any, path: list[int], replacement: Any) -> Any:
    """Replace one node of ``base`` (chosen by ``path`` indices) with ``replacement``."""
    if not path or not isinstance(base, dict | list) or not base:
        return replacement
    if isinstance(base, dict):
        keys = list(base)
        key = keys[path[0] % len(keys)]
        return {**base, key: _mutate(base[key], path[1:], replacement)}
    i = path[0] % len(base)
    return [*base[:i], _mutate(base[i], path[1:], replacement), *base[i + 1 :]]


FUZZ = settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@FUZZ
@given(st.binary(max_size=300))
def test_fuzz_random_bytes(data: bytes) -> None:
    for decoder in DECODERS:
        _outcome_ok(decoder, data)
        _outcome_ok(decoder, base64.b64encode(data))


@FUZZ
@given(st.text(max_size=300))
def test_fuzz_random_text(text: str) -> None:
    for decoder in DECODERS:
        _outcome_ok(decoder, text)
        _outcome_ok(decoder, b64raw(text))
    _outcome_ok(decode_v1_body, text)


@FUZZ
@given(json_values)
def test_fuzz_random_json(value: Any) -> None:
    encoded = b64(value)
    for decoder in DECODERS:
        _outcome_ok(decoder, encoded)
        _outcome_ok(decoder, json.dumps(value))  # not base64-encoded
    _outcome_ok(decode_v1_body, json.dumps(value).encode())


@FUZZ
@given(st.dictionaries(st.sampled_from(FIELD_NAMES), json_values, max_size=8))
def test_fuzz_random_objects_with_protocol_keys(obj: dict[str, Any]) -> None:
    for version in (1, 2, None):
        candidate = obj if version is None else {**obj, "x402Version": version}
        for decoder in DECODERS:
            _outcome_ok(decoder, b64(candidate))
        _outcome_ok(decode_v1_body, json.dumps(candidate))


@FUZZ
@given(
    st.sampled_from(
        [
            payment_payload(),
            payment_required(),
            {**_pp_v1},
            {"x402Version": 1, "accepts": [requirements_v1()]},
        ]
    ),
    st.lists(st.integers(min_value=0, max_value=50), min_size=1, max_size=5),
    json_values,
)
def test_fuzz_mutated_valid_messages(base: dict[str, Any], path: list[int], replacement: Any) -> None:
    """Replace one node deep inside a valid message with a random JSON value."""
    mutated = _mutate(base, path, replacement)
    for decoder in DECODERS:
        _outcome_ok(decoder, b64(mutated))
    _outcome_ok(decode_v1_body, json.dumps(mutated))


@FUZZ
@given(st.dictionaries(st.text(max_size=20), json_values, max_size=6))
def test_fuzz_encode_decode_round_trip(obj: dict[str, Any]) -> None:
    """checklist 4 for arbitrary objects; decode(encode(x)) == x."""
    try:
        value = encode_header(obj)
    except WireError as exc:
        assert exc.reason == reasons.HEADER_TOO_LARGE
        return
    assert HEADER_RE.fullmatch(value)
    assert decode_header(value) == obj
