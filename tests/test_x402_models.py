"""x402 wire models: round-trips, strictness, v1<->v2 conversion (digest §1, §2; checklist 2, 3, 92-94)."""

from __future__ import annotations

import collections
import copy
import dataclasses
import enum
import json
from typing import Any

import pytest

from paywire.errors import WireError
from paywire.schemes.evm_exact.payload import Eip3009Authorization, ExactEvmPayload
from paywire.x402 import (
    FacilitatorRequest,
    PaymentPayload,
    PaymentPayloadV1,
    PaymentRequired,
    PaymentRequiredV1,
    PaymentRequirements,
    PaymentRequirementsV1,
    ResourceInfo,
    SettleResponse,
    SupportedKind,
    SupportedResponse,
    VerifyResponse,
    parse_payment_payload,
    reasons,
    requirements_v1_to_v2,
    requirements_v2_to_v1,
)

USDC_BASE_SEPOLIA = "0x036CbD53842c5426634e7929541eC2318f3dCF7e"  # digest §1.7
USDC_BASE = "0x833589fCD6eDb6E08f4c7C32D4f71b54bdA02913"  # digest §1.7
PAY_TO = "0x209693Bc6afc0C5328bA36FaF03C514EF312287C"
PAYER = "0x857b06519E91e3A54538791bDbb0E22373e36b66"
SOLANA_MAINNET = "solana:5eykt4UsFv8P8NJdTREpY1vzqKqZKvdp"
SOLANA_USDC = "EPjFWdd5AufqSSqeM2qN1xzybapC8G4wEGGkZwyTDt1v"  # digest §1.7
NONCE = "0x" + "f3746613c2d920b5fdabc0856f2aeb2d4f88ee6037b8cc5d04a71a4462f13480"
SIGNATURE = (
    "0x"
    + "2d6a7588d6acca505cbf0d9a4a227e0c52c6c34008c8e8986a1283259764173608a2ce6496642e377d6da8dbbf5836e9bd15092f9ecab05ded3d6293af148b571c"
)


def evm_requirements(**overrides: Any) -> dict[str, Any]:
    """The Base Sepolia USDC exact offer assembled from digest §1.2/§1.7 (name "USDC", version "2")."""
    req: dict[str, Any] = {
        "scheme": "exact",
        "network": "eip155:84532",
        "amount": "10000",
        "asset": USDC_BASE_SEPOLIA,
        "payTo": PAY_TO,
        "maxTimeoutSeconds": 60,
        "extra": {"name": "USDC", "version": "2"},
    }
    req.update(overrides)
    return req


def svm_requirements() -> dict[str, Any]:
    return {
        "scheme": "exact",
        "network": SOLANA_MAINNET,
        "amount": "1000",
        "asset": SOLANA_USDC,
        "payTo": "2wKupLR9q6wXYppw8Gr2NvWxKBUqm4PPJKkQfoxHDBg4",
        "maxTimeoutSeconds": 60,
        "extra": {"feePayer": "EwWqGE4ZFKLofuestmU4LDdK7XM1N4ALgdZccwYugwGd"},
    }


def payment_required() -> dict[str, Any]:
    """A v2 PAYMENT-REQUIRED object shaped like the SPEC2 example (digest §1.1, §1.3, §9.2)."""
    return {
        "x402Version": 2,
        "error": "Payment required",
        "resource": {
            "url": "https://api.example.com/premium-data",
            "description": "Access to premium market data",
            "mimeType": "application/json",
        },
        "accepts": [evm_requirements(), svm_requirements()],
        "extensions": {
            "payment-identifier": {
                "info": {"required": False},
                "schema": {
                    "$schema": "https://json-schema.org/draft/2020-12/schema",
                    "type": "object",
                    "properties": {"required": {"type": "boolean"}, "id": {"type": "string"}},
                    "required": ["required"],
                },
            }
        },
    }


def exact_evm_payload() -> dict[str, Any]:
    return {
        "signature": SIGNATURE,
        "authorization": {
            "from": PAYER,
            "to": PAY_TO,
            "value": "10000",
            "validAfter": "1740672089",
            "validBefore": "1740672154",
            "nonce": NONCE,
        },
    }


def payment_payload() -> dict[str, Any]:
    return {
        "x402Version": 2,
        "resource": payment_required()["resource"],
        "accepted": evm_requirements(),
        "payload": exact_evm_payload(),
        "extensions": {"payment-identifier": {"info": {"required": False, "id": "pay_" + "a" * 32}}},
    }


def requirements_v1() -> dict[str, Any]:
    return {
        "scheme": "exact",
        "network": "base-sepolia",
        "maxAmountRequired": "10000",
        "resource": "https://api.example.com/premium-data",
        "description": "Access to premium market data",
        "mimeType": "application/json",
        "outputSchema": {"type": "object"},
        "payTo": PAY_TO,
        "maxTimeoutSeconds": 60,
        "asset": USDC_BASE_SEPOLIA,
        "extra": {"name": "USDC", "version": "2"},
    }


# ------------------------------------------------------------------------------------------------
# Round-trips: to_wire(from_wire(x)) == x
# ------------------------------------------------------------------------------------------------

ROUND_TRIP_CASES: list[tuple[type[Any], dict[str, Any]]] = [
    (ResourceInfo, {"url": "mcp://tool/weather", "description": "", "mimeType": ""}),
    (PaymentRequirements, evm_requirements()),
    (PaymentRequirements, svm_requirements()),
    (
        PaymentRequirements,
        # non-chain rail mimicking CAIP-2: ISO-4217 asset and role payTo (digest §1.2)
        {
            "scheme": "batch-settlement",
            "network": "ach:us",
            "amount": "0",
            "asset": "USD",
            "payTo": "merchant",
            "maxTimeoutSeconds": 0,
            "extra": {},
        },
    ),
    (PaymentRequired, payment_required()),
    (PaymentRequired, {"x402Version": 2, "accepts": [evm_requirements()]}),
    (PaymentPayload, payment_payload()),
    (PaymentPayload, {"x402Version": 2, "accepted": svm_requirements(), "payload": {"transaction": "AQAB"}}),
    (VerifyResponse, {"isValid": True, "payer": PAYER}),
    (
        VerifyResponse,
        {
            "isValid": False,
            "invalidReason": "invalid_exact_evm_payload_signature",
            "payer": PAYER,
            "invalidMessage": "signature does not recover to from",
        },
    ),
    (
        SettleResponse,
        {"success": True, "payer": PAYER, "transaction": "0x" + "ab" * 32, "network": "eip155:84532"},
    ),
    # checklist 18: failure example
    (
        SettleResponse,
        {
            "success": False,
            "errorReason": "insufficient_funds",
            "transaction": "",
            "network": "eip155:84532",
            "errorMessage": "balance too low",
        },
    ),
    # checklist 77/78: zero-amount upto settles without a transaction, amount always present
    (
        SettleResponse,
        {
            "success": True,
            "payer": PAYER,
            "transaction": "",
            "network": "eip155:8453",
            "amount": "0",
            "extensions": {"offer-receipt": {"info": {"receipt": {"x": 1}}}},
        },
    ),
    # v1 X-PAYMENT-RESPONSE with a legacy network name
    (SettleResponse, {"success": True, "payer": PAYER, "transaction": "0x" + "cd" * 32, "network": "base"}),
    (SupportedKind, {"x402Version": 2, "scheme": "exact", "network": "eip155:8453"}),
    (
        SupportedResponse,
        {
            "kinds": [
                {"x402Version": 2, "scheme": "exact", "network": "eip155:84532"},
                {
                    "x402Version": 2,
                    "scheme": "exact",
                    "network": SOLANA_MAINNET,
                    "extra": {"feePayer": "EwWqGE4ZFKLofuestmU4LDdK7XM1N4ALgdZccwYugwGd"},
                },
                {"x402Version": 1, "scheme": "exact", "network": "base-sepolia"},
            ],
            "extensions": ["bazaar", "payment-identifier"],
            "signers": {
                "eip155:*": [PAYER],
                "solana:*": ["EwWqGE4ZFKLofuestmU4LDdK7XM1N4ALgdZccwYugwGd"],
            },
        },
    ),
    (PaymentRequirementsV1, requirements_v1()),
    (
        PaymentRequiredV1,
        {"x402Version": 1, "error": "X-PAYMENT header is required", "accepts": [requirements_v1()]},
    ),
    (
        PaymentPayloadV1,
        {"x402Version": 1, "scheme": "exact", "network": "base-sepolia", "payload": exact_evm_payload()},
    ),
    (Eip3009Authorization, exact_evm_payload()["authorization"]),
    (ExactEvmPayload, exact_evm_payload()),
    (
        FacilitatorRequest,
        {"x402Version": 2, "paymentPayload": payment_payload(), "paymentRequirements": evm_requirements()},
    ),
    (
        FacilitatorRequest,
        {
            "x402Version": 1,
            "paymentPayload": {
                "x402Version": 1,
                "scheme": "exact",
                "network": "base-sepolia",
                "payload": exact_evm_payload(),
            },
            "paymentRequirements": requirements_v1(),
        },
    ),
]


@pytest.mark.parametrize(
    ("cls", "wire"), ROUND_TRIP_CASES, ids=[f"{c.__name__}-{i}" for i, (c, _) in enumerate(ROUND_TRIP_CASES)]
)
def test_round_trip(cls: Any, wire: dict[str, Any]) -> None:
    """to_wire(from_wire(x)) == x, including key order, and from_wire(to_wire(m)) == m."""
    original = copy.deepcopy(wire)
    model = cls.from_wire(wire)
    out = model.to_wire()
    assert out == original
    assert list(out) == list(original)
    assert json.dumps(out) == json.dumps(original)
    assert cls.from_wire(out) == model
    assert wire == original  # input not mutated


def test_to_wire_returns_fresh_containers() -> None:
    model = PaymentPayload.from_wire(payment_payload())
    out = model.to_wire()
    out["payload"]["authorization"]["value"] = "999"
    out["accepted"]["extra"]["name"] = "evil"
    assert model.to_wire() == payment_payload()


def test_from_wire_copies_input() -> None:
    wire = payment_payload()
    model = PaymentPayload.from_wire(wire)
    wire["payload"]["signature"] = "0x00"
    wire["accepted"]["extra"]["name"] = "evil"
    assert model.to_wire() == payment_payload()


def test_typed_values() -> None:
    """checklist 3: amounts are ints, timeouts ints, network CAIP-2."""
    pr = PaymentRequired.from_wire(payment_required())
    assert pr.x402_version == 2
    first = pr.accepts[0]
    assert first.amount == 10000
    assert first.max_timeout_seconds == 60
    assert first.pay_to == PAY_TO
    assert first.extra == {"name": "USDC", "version": "2"}
    assert first.is_evm and not pr.accepts[1].is_evm
    assert pr.resource == ResourceInfo(
        "https://api.example.com/premium-data", "Access to premium market data", "application/json"
    )


def test_unknown_keys_preserved_for_verbatim_echo() -> None:
    """checklist 27: a client echoing accepts[] reproduces unknown keys and key order exactly."""
    peer = {
        "network": "eip155:8453",
        "scheme": "exact",
        "futureField": {"nested": [1, 2, {"a": None}]},
        "amount": "1",
        "payTo": PAY_TO.lower(),
        "asset": USDC_BASE,
        "maxTimeoutSeconds": 300,
        "extra": {"name": "USD Coin", "version": "2", "assetTransferMethod": "eip3009"},
        "zzz": True,
    }
    req = PaymentRequirements.from_wire(peer)
    assert req.other == {"futureField": {"nested": [1, 2, {"a": None}]}, "zzz": True}
    echoed = PaymentPayload(accepted=req, payload={"x": "y"}).to_wire()["accepted"]
    assert echoed == peer
    assert json.dumps(echoed) == json.dumps(peer)


def test_absent_extra_is_not_invented_on_echo() -> None:
    """Some servers omit an empty extra (Go omitempty); the echo must omit it too."""
    peer = evm_requirements()
    del peer["extra"]
    req = PaymentRequirements.from_wire(peer)
    assert req.extra == {}
    assert req.to_wire() == peer
    # A locally built offer always emits extra (PY/TS servers do).
    built = dataclasses.replace(req, wire_keys=())
    assert built.to_wire()["extra"] == {}
    assert built == req  # wire_keys takes no part in equality


def test_resource_info_unknown_keys_and_defaults() -> None:
    """PY SDK 2.x ResourceInfo adds serviceName/tags/iconUrl; PY omits empty description/mimeType."""
    info = ResourceInfo.from_wire({"url": "https://x.test/a", "serviceName": "X", "tags": ["a"]})
    assert (info.description, info.mime_type) == ("", "")
    assert info.other == {"serviceName": "X", "tags": ["a"]}
    assert info.to_wire() == {
        "url": "https://x.test/a",
        "description": "",
        "mimeType": "",
        "serviceName": "X",
        "tags": ["a"],
    }


def test_null_optionals_are_absent() -> None:
    wire = {
        "x402Version": 2,
        "error": None,
        "resource": None,
        "accepts": [evm_requirements()],
        "extensions": None,
    }
    pr = PaymentRequired.from_wire(wire)
    assert pr.error is None and pr.resource is None and pr.extensions is None
    assert pr.to_wire() == {"x402Version": 2, "accepts": [evm_requirements()]}


def test_constructors_and_kw_only_version() -> None:
    req = PaymentRequirements("exact", "eip155:8453", 1_000_000, USDC_BASE, PAY_TO, 60, {"name": "USD Coin"})
    pr = PaymentRequired((req,), ResourceInfo("https://a.test/"), "Payment required")
    assert pr.x402_version == 2
    wire = pr.to_wire()
    assert list(wire) == ["x402Version", "error", "resource", "accepts"]
    assert wire["accepts"][0] == {
        "scheme": "exact",
        "network": "eip155:8453",
        "amount": "1000000",
        "asset": USDC_BASE,
        "payTo": PAY_TO,
        "maxTimeoutSeconds": 60,
        "extra": {"name": "USD Coin"},
    }
    assert PaymentPayloadV1("exact", "base", {}).x402_version == 1
    assert PaymentRequiredV1("err", ()).x402_version == 1


def test_settle_response_failure_may_omit_transaction_and_network() -> None:
    """A hook-aborted settle is 200 {success:false, errorReason, network} (digest §4.3)."""
    resp = SettleResponse.from_wire({"success": False, "errorReason": "unexpected_settle_error"})
    assert resp.transaction == "" and resp.network == ""
    assert resp.to_wire() == {
        "success": False,
        "errorReason": "unexpected_settle_error",
        "transaction": "",
        "network": "",
    }


def test_settle_response_success_requires_transaction() -> None:
    with pytest.raises(WireError) as exc:
        SettleResponse.from_wire({"success": True, "network": "eip155:8453"})
    assert exc.value.reason == reasons.MISSING_FIELD
    assert "transaction" in exc.value.detail


def test_supported_response_with_signers() -> None:
    """checklist 40: kinds, extensions and signers (CAIP family pattern -> addresses)."""
    wire = ROUND_TRIP_CASES[15][1]
    sup = SupportedResponse.from_wire(wire)
    assert sup.signers == {
        "eip155:*": (PAYER,),
        "solana:*": ("EwWqGE4ZFKLofuestmU4LDdK7XM1N4ALgdZccwYugwGd",),
    }
    assert sup.extensions == ("bazaar", "payment-identifier")
    assert [k.x402_version for k in sup.kinds] == [2, 2, 1]
    assert sup.kinds[1].extra == {"feePayer": "EwWqGE4ZFKLofuestmU4LDdK7XM1N4ALgdZccwYugwGd"}


def test_supported_response_v1_shape() -> None:
    """v1 /supported is {kinds} only; to_wire emits the v2 shape."""
    sup = SupportedResponse.from_wire({"kinds": [{"x402Version": 1, "scheme": "exact", "network": "base"}]})
    assert sup.extensions == () and sup.signers == {}
    assert sup.to_wire() == {
        "kinds": [{"x402Version": 1, "scheme": "exact", "network": "base"}],
        "extensions": [],
        "signers": {},
    }


def test_supported_kind_v1_tolerates_unknown_legacy_name() -> None:
    """A facilitator may list a v1 chain newer than our table; v2 kinds must be CAIP-2."""
    assert (
        SupportedKind.from_wire({"x402Version": 1, "scheme": "exact", "network": "xlayer"}).network
        == "xlayer"
    )
    with pytest.raises(WireError) as exc:
        SupportedKind.from_wire({"x402Version": 2, "scheme": "exact", "network": "xlayer"})
    assert exc.value.reason == reasons.INVALID_NETWORK


# ------------------------------------------------------------------------------------------------
# EIP-3009 payload
# ------------------------------------------------------------------------------------------------


def test_exact_evm_payload_typed() -> None:
    """checklist 31: nonce is 32 bytes, value/validAfter/validBefore decimal strings."""
    p = ExactEvmPayload.from_wire(exact_evm_payload())
    assert len(p.signature) == 65
    auth = p.authorization
    assert auth.from_ == PAYER and auth.to == PAY_TO
    assert (auth.value, auth.valid_after, auth.valid_before) == (10000, 1740672089, 1740672154)
    assert auth.nonce == bytes.fromhex(NONCE[2:])


def test_exact_evm_payload_path_in_errors() -> None:
    bad = exact_evm_payload()
    bad["authorization"]["nonce"] = "0x1234"
    with pytest.raises(WireError) as exc:
        ExactEvmPayload.from_wire(bad, "payload")
    assert exc.value.reason == reasons.INVALID_PAYLOAD
    assert "payload.authorization.nonce" in exc.value.detail


def test_exact_evm_payload_to_wire_lowercases_hex() -> None:
    wire = exact_evm_payload()
    wire["signature"] = wire["signature"].upper().replace("0X", "0x")
    out = ExactEvmPayload.from_wire(wire).to_wire()
    assert out["signature"] == SIGNATURE.lower()


# ------------------------------------------------------------------------------------------------
# v1 (checklist 92-94)
# ------------------------------------------------------------------------------------------------


def test_v1_extra_as_json_string() -> None:
    """digest §2: v1 EVM extra may arrive as a JSON-encoded string."""
    wire = requirements_v1()
    wire["extra"] = json.dumps({"name": "USDC", "version": "2"})
    r1 = PaymentRequirementsV1.from_wire(wire)
    assert r1.extra == {"name": "USDC", "version": "2"}
    assert r1.to_wire()["extra"] == {"name": "USDC", "version": "2"}


@pytest.mark.parametrize(
    ("extra", "reason"),
    [
        ("not json", reasons.INVALID_JSON),
        ("[1]", reasons.NOT_AN_OBJECT),
        ('{"a":1,"a":2}', reasons.INVALID_JSON),
    ],
)
def test_v1_extra_bad_json_string(extra: str, reason: str) -> None:
    wire = requirements_v1()
    wire["extra"] = extra
    with pytest.raises(WireError) as exc:
        PaymentRequirementsV1.from_wire(wire)
    assert exc.value.reason == reason
    assert "extra" in exc.value.detail


def test_v1_to_v2_base_sepolia() -> None:
    """checklist 93: base-sepolia -> eip155:84532; resource metadata moves to ResourceInfo."""
    r1 = PaymentRequirementsV1.from_wire(requirements_v1())
    r2, resource = requirements_v1_to_v2(r1)
    assert r2 == PaymentRequirements(
        "exact", "eip155:84532", 10000, USDC_BASE_SEPOLIA, PAY_TO, 60, {"name": "USDC", "version": "2"}
    )
    assert resource == ResourceInfo(
        "https://api.example.com/premium-data", "Access to premium market data", "application/json"
    )
    assert r1.caip2_network == "eip155:84532"


def test_v2_to_v1_and_back() -> None:
    r2 = PaymentRequirements.from_wire(evm_requirements())
    resource = ResourceInfo("https://api.example.com/premium-data", "d", "text/plain")
    r1 = requirements_v2_to_v1(r2, resource)
    assert r1.network == "base-sepolia"
    assert r1.max_amount_required == 10000
    assert (r1.resource, r1.description, r1.mime_type) == (
        "https://api.example.com/premium-data",
        "d",
        "text/plain",
    )
    assert PaymentRequirementsV1.from_wire(r1.to_wire()) == r1
    back, back_resource = requirements_v1_to_v2(r1)
    assert back == r2 and back_resource == resource


def test_v2_to_v1_without_legacy_name_keeps_caip2() -> None:
    r2 = PaymentRequirements.from_wire(evm_requirements(network="eip155:999999"))
    r1 = requirements_v2_to_v1(r2, ResourceInfo("https://a.test/"))
    assert r1.network == "eip155:999999"
    assert r1.extra == {"name": "USDC", "version": "2"}


def test_v2_to_v1_empty_extra_becomes_absent() -> None:
    r2 = PaymentRequirements.from_wire(evm_requirements(extra={}))
    assert "extra" not in requirements_v2_to_v1(r2, ResourceInfo("https://a.test/")).to_wire()


def test_v1_optional_description_and_mime_type() -> None:
    """PY SDK makes v1 description/mimeType optional (exclude_none); we default to ""."""
    wire = requirements_v1()
    del wire["description"], wire["mimeType"], wire["outputSchema"], wire["extra"]
    r1 = PaymentRequirementsV1.from_wire(wire)
    assert (r1.description, r1.mime_type, r1.extra, r1.output_schema) == ("", "", None, None)


def test_v1_solana_network() -> None:
    wire = requirements_v1()
    wire.update(
        network="solana-devnet", payTo="2wKupLR9q6wXYppw8Gr2NvWxKBUqm4PPJKkQfoxHDBg4", asset=SOLANA_USDC
    )
    r2, _ = requirements_v1_to_v2(PaymentRequirementsV1.from_wire(wire))
    assert r2.network == "solana:EtWTRABZaYq6iMfeYKouRu166VU2xqa1"


def test_v1_evm_name_requires_evm_addresses() -> None:
    wire = requirements_v1()
    wire["payTo"] = "2wKupLR9q6wXYppw8Gr2NvWxKBUqm4PPJKkQfoxHDBg4"
    with pytest.raises(WireError) as exc:
        PaymentRequirementsV1.from_wire(wire)
    assert exc.value.reason == reasons.INVALID_ADDRESS


def test_v1_unknown_top_level_keys_ignored_and_error_optional() -> None:
    """LEGACY servers add payer to failure bodies; PY makes error optional."""
    pr = PaymentRequiredV1.from_wire({"x402Version": 1, "accepts": [requirements_v1()], "payer": PAYER})
    assert pr.error == ""


def test_parse_payment_payload_dispatch() -> None:
    """checklist 94: version dispatch for PAYMENT-SIGNATURE / X-PAYMENT."""
    assert isinstance(parse_payment_payload(payment_payload()), PaymentPayload)
    v1 = {"x402Version": 1, "scheme": "exact", "network": "base", "payload": {}}
    assert isinstance(parse_payment_payload(v1), PaymentPayloadV1)
    with pytest.raises(WireError) as exc:
        parse_payment_payload({**v1, "x402Version": 3})
    assert exc.value.reason == reasons.UNSUPPORTED_VERSION


def test_facilitator_request_version_mismatch() -> None:
    """checklist 13: the top-level x402Version follows paymentPayload.x402Version."""
    with pytest.raises(WireError) as exc:
        FacilitatorRequest.from_wire(
            {"x402Version": 1, "paymentPayload": payment_payload(), "paymentRequirements": requirements_v1()}
        )
    assert exc.value.reason == reasons.INVALID_PAYLOAD


def test_facilitator_request_types() -> None:
    req = FacilitatorRequest.from_wire(
        {"x402Version": 2, "paymentPayload": payment_payload(), "paymentRequirements": evm_requirements()}
    )
    assert isinstance(req.payment_payload, PaymentPayload)
    assert isinstance(req.payment_requirements, PaymentRequirements)
    with pytest.raises(WireError) as exc:
        FacilitatorRequest.from_wire({"x402Version": 2, "paymentPayload": payment_payload()})
    assert exc.value.reason == reasons.MISSING_FIELD
    assert "paymentRequirements" in exc.value.detail


# ------------------------------------------------------------------------------------------------
# Strictness on Python input that json.loads could never produce
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "bad_extra",
    [
        {"n": float("nan")},
        {"n": float("inf")},
        {1: "int key"},
        {"t": (1, 2)},
        {"s": {1, 2}},
        {"b": b"bytes"},
        {"o": object()},
    ],
    ids=["nan", "inf", "int-key", "tuple", "set", "bytes", "object"],
)
def test_non_json_python_values_rejected(bad_extra: dict[Any, Any]) -> None:
    with pytest.raises(WireError) as exc:
        PaymentRequirements.from_wire(evm_requirements(extra=bad_extra))
    assert exc.value.reason == reasons.INVALID_JSON
    assert exc.value.detail.startswith("extra")


def test_json_subclasses_become_plain_values() -> None:
    class Color(str, enum.Enum):  # noqa: UP042 - str() of this is "Color.RED", unlike StrEnum
        RED = "red"

    class Level(enum.IntEnum):
        HIGH = 3

    extra = collections.OrderedDict([(Color.RED, [Level.HIGH, Color.RED, 1.5])])
    req = PaymentRequirements.from_wire(evm_requirements(extra=extra))
    assert req.extra == {"red": [3, "red", 1.5]}
    out = req.to_wire()["extra"]
    assert type(out) is dict and [type(x) for x in out["red"]] == [int, str, float]
    assert json.dumps(out) == '{"red": [3, "red", 1.5]}'


def test_lone_surrogate_from_python_input_fails_on_encode() -> None:
    """from_wire on Python input does not scan for surrogates; encoding then raises WireError."""
    from paywire.x402 import encode_payment_required

    pr = PaymentRequired.from_wire({**payment_required(), "error": "\ud800"})
    with pytest.raises(WireError) as exc:
        encode_payment_required(pr)
    assert exc.value.reason == reasons.INVALID_UTF8


def test_cyclic_python_input_rejected() -> None:
    loop: dict[str, Any] = {}
    loop["self"] = loop
    with pytest.raises(WireError) as exc:
        PaymentRequirements.from_wire(evm_requirements(extra=loop))
    assert exc.value.reason == reasons.INVALID_JSON


def test_unknown_key_non_string_rejected() -> None:
    wire: dict[Any, Any] = evm_requirements()
    wire[7] = "x"
    with pytest.raises(WireError) as exc:
        PaymentRequirements.from_wire(wire)
    assert exc.value.reason == reasons.INVALID_JSON


def test_error_paths_name_the_field() -> None:
    """Details name the failing field path, e.g. accepts[1].amount."""
    wire = payment_required()
    wire["accepts"][1]["amount"] = "01"
    with pytest.raises(WireError) as exc:
        PaymentRequired.from_wire(wire)
    assert exc.value.reason == reasons.INVALID_AMOUNT
    assert exc.value.detail.startswith("accepts[1].amount")

    wire = payment_payload()
    wire["accepted"]["payTo"] = "0x123"
    with pytest.raises(WireError) as exc:
        PaymentPayload.from_wire(wire)
    assert exc.value.reason == reasons.INVALID_ADDRESS
    assert exc.value.detail.startswith("accepted.payTo")


def test_uint256_bounds() -> None:
    top = str(2**256 - 1)
    assert PaymentRequirements.from_wire(evm_requirements(amount=top)).amount == 2**256 - 1
    with pytest.raises(WireError) as exc:
        PaymentRequirements.from_wire(evm_requirements(amount=str(2**256)))
    assert exc.value.reason == reasons.INVALID_AMOUNT


def test_max_timeout_bounds() -> None:
    assert PaymentRequirements.from_wire(evm_requirements(maxTimeoutSeconds=0)).max_timeout_seconds == 0
    for bad in (-1, 2**53, 60.0, "60", True, None):
        with pytest.raises(WireError) as exc:
            PaymentRequirements.from_wire(evm_requirements(maxTimeoutSeconds=bad))
        assert exc.value.reason == reasons.INVALID_FIELD_TYPE, bad


def test_evm_address_any_case_accepted() -> None:
    for addr in (PAY_TO, PAY_TO.lower(), "0x" + PAY_TO[2:].upper()):
        assert PaymentRequirements.from_wire(evm_requirements(payTo=addr)).pay_to == addr


def test_non_evm_address_rules() -> None:
    wire = svm_requirements()
    for bad in ("", " x", "x ", "a" * 129):
        with pytest.raises(WireError) as exc:
            PaymentRequirements.from_wire({**wire, "payTo": bad})
        assert exc.value.reason == reasons.INVALID_ADDRESS
    assert PaymentRequirements.from_wire({**wire, "payTo": "a" * 128}).pay_to == "a" * 128
