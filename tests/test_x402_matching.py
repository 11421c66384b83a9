"""Offer matching (digest §1.5, §3.3; checklist 11, 12, 26, 27)."""

from __future__ import annotations

import dataclasses
from types import MappingProxyType
from typing import Any

import pytest

from paywire.x402 import (
    PaymentPayload,
    PaymentPayloadV1,
    PaymentRequired,
    PaymentRequirements,
    PaymentRequirementsV1,
    find_matching_requirements,
    find_matching_v1,
    json_equal,
    requirements_match,
    select_requirements,
)

try:  # tests/ is a rootdir-style directory (pytest's default prepend import mode)
    from test_x402_models import evm_requirements, payment_required, requirements_v1, svm_requirements
except ImportError:  # pragma: no cover - tests/ turned into a package
    from tests.test_x402_models import (  # type: ignore[no-redef]
        evm_requirements,
        payment_required,
        requirements_v1,
        svm_requirements,
    )


def req(**overrides: Any) -> PaymentRequirements:
    return PaymentRequirements.from_wire(evm_requirements(**overrides))


OFFERS = (req(), req(amount="20000"), PaymentRequirements.from_wire(svm_requirements()))


def test_echoed_offer_matches_and_returns_our_object() -> None:
    """checklist 11/13: a verbatim echo matches and the server's own offer is returned."""
    pr = PaymentRequired(OFFERS)
    wire = pr.to_wire()
    for i, offer in enumerate(OFFERS):
        accepted = PaymentPayload.from_wire(
            {"x402Version": 2, "accepted": wire["accepts"][i], "payload": {}}
        ).accepted
        assert find_matching_requirements(OFFERS, accepted) is offer


def test_first_matching_offer_wins() -> None:
    duplicate = req()
    assert find_matching_requirements((duplicate, req()), req()) is duplicate


@pytest.mark.parametrize(
    "change",
    [
        {"scheme": "upto"},
        {"network": "eip155:8453"},
        {"amount": "10001"},
        {"asset": "0x833589fCD6eDb6E08f4c7C32D4f71b54bdA02913"},
        {"payTo": "0x" + "1" * 40},
        {"maxTimeoutSeconds": 61},
        {"extra": {"name": "USDC", "version": "1"}},
        {"extra": {"name": "USDC"}},
        {"extra": {"name": "USDC", "version": "2", "assetTransferMethod": "permit2"}},
        {"extra": {}},
    ],
    ids=lambda change: "-".join(f"{k}={v}" for k, v in change.items()),
)
def test_any_difference_is_no_match(change: dict[str, Any]) -> None:
    """checklist 12: scheme, network, amount, asset, payTo, extra and maxTimeoutSeconds must all agree."""
    assert find_matching_requirements(OFFERS, req(**change)) is None


def test_evm_addresses_compare_case_insensitively() -> None:
    accepted = req(
        asset=evm_requirements()["asset"].lower(),
        payTo="0x" + evm_requirements()["payTo"][2:].upper(),
    )
    assert find_matching_requirements(OFFERS, accepted) is OFFERS[0]


def test_non_evm_addresses_are_case_sensitive() -> None:
    base = svm_requirements()
    accepted = PaymentRequirements.from_wire({**base, "payTo": base["payTo"].lower()})
    assert find_matching_requirements(OFFERS, accepted) is None


def test_extra_key_order_is_irrelevant() -> None:
    accepted = req(extra={"version": "2", "name": "USDC"})
    assert find_matching_requirements(OFFERS, accepted) is OFFERS[0]


def test_unknown_keys_are_ignored() -> None:
    """A client (e.g. the PY SDK) that drops unknown keys, or adds some, still matches."""
    offer = dataclasses.replace(req(), other={"future": 1})
    assert requirements_match(offer, req())
    assert requirements_match(req(), dataclasses.replace(req(), other={"x": True}))


def test_json_equal_distinguishes_bool_from_number() -> None:
    """Python's True == 1 must not leak into deep equality (TS deepEqual semantics)."""
    assert not requirements_match(req(extra={"flag": True}), req(extra={"flag": 1}))
    assert not requirements_match(req(extra={"n": 0}), req(extra={"n": False}))
    assert requirements_match(req(extra={"n": 1}), req(extra={"n": 1.0}))


@pytest.mark.parametrize(
    ("a", "b", "equal"),
    [
        ({"a": [1, {"b": None}]}, {"a": [1, {"b": None}]}, True),
        ({"a": 1, "b": 2}, {"b": 2, "a": 1}, True),
        ({"a": None}, {}, False),
        ({"a": None}, {"b": None}, False),
        ([1, 2], [2, 1], False),
        ([1], (1,), True),
        ("1", 1, False),
        (None, False, False),
        (None, None, True),
        (True, True, True),
        (False, True, False),
        ({"a": "x"}, {"a": "x", "b": 1}, False),
        # the str-leaf and plain-dict fast paths decide exactly as the general checks
        ("true", True, False),
        ("x", ["x"], False),
        ("", None, False),
        ({"name": "USDC", "version": "2"}, MappingProxyType({"version": "2", "name": "USDC"}), True),
        ({"name": "USDC"}, MappingProxyType({"name": "USDC", "version": "2"}), False),
        ({"name": "USDC"}, ["name"], False),
    ],
)
def test_json_equal(a: Any, b: Any, equal: bool) -> None:
    assert json_equal(a, b) is equal
    assert json_equal(b, a) is equal


def test_empty_offers() -> None:
    assert find_matching_requirements((), req()) is None


def test_find_matching_v1_by_scheme_and_network() -> None:
    """v1 rule: same scheme + network; legacy names and their CAIP-2 ids are the same network."""
    offers = (
        PaymentRequirementsV1.from_wire(requirements_v1()),
        PaymentRequirementsV1.from_wire({**requirements_v1(), "network": "base"}),
    )
    payload = PaymentPayloadV1("exact", "base", {})
    assert find_matching_v1(offers, payload) is offers[1]
    assert find_matching_v1(offers, PaymentPayloadV1("exact", "eip155:84532", {})) is offers[0]
    assert find_matching_v1(offers, PaymentPayloadV1("upto", "base", {})) is None
    assert find_matching_v1(offers, PaymentPayloadV1("exact", "polygon", {})) is None


def test_select_requirements_first_supported_in_server_order() -> None:
    """checklist 26: the client picks the first accepts[] entry it has a scheme client for."""
    pr = PaymentRequired.from_wire(payment_required())
    svm_only = select_requirements(pr.accepts, lambda r: r.network.startswith("solana:"))
    assert svm_only is pr.accepts[1]
    assert select_requirements(pr.accepts, lambda r: True) is pr.accepts[0]
    assert select_requirements(pr.accepts, lambda r: False) is None
    v1 = (PaymentRequirementsV1.from_wire(requirements_v1()),)
    assert select_requirements(v1, lambda r: r.network == "base-sepolia") is v1[0]
