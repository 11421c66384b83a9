"""Header codecs against the official x402 Python SDK (checklist 4, 27, 29, 36)."""

from __future__ import annotations

import pytest

from paywire.x402 import (
    PaymentPayload,
    PaymentRequired,
    SettleResponse,
    decode_payment_required,
    decode_payment_response,
    decode_payment_signature,
    encode_payment_payload,
    encode_payment_required,
    encode_payment_response,
)

try:  # tests/ is a rootdir-style directory (pytest's default prepend import mode)
    from test_x402_models import payment_payload, payment_required
except ImportError:  # pragma: no cover - tests/ turned into a package
    from tests.test_x402_models import payment_payload, payment_required  # type: ignore[no-redef]

sdk_http = pytest.importorskip("x402.http.utils")
sdk = pytest.importorskip("x402.schemas")

pytestmark = pytest.mark.interop


def test_sdk_decodes_our_payment_required() -> None:
    ours = PaymentRequired.from_wire(payment_required())
    theirs = sdk_http.decode_payment_required_header(encode_payment_required(ours))
    assert isinstance(theirs, sdk.PaymentRequired)
    assert theirs.model_dump(by_alias=True, exclude_none=True) == payment_required()


def test_we_decode_sdk_payment_required() -> None:
    theirs = sdk.PaymentRequired.model_validate(payment_required())
    ours = decode_payment_required(sdk_http.encode_payment_required_header(theirs))
    assert ours.to_wire() == payment_required()


def test_payment_payload_both_ways() -> None:
    theirs = sdk.PaymentPayload.model_validate(payment_payload())
    ours = decode_payment_signature(sdk_http.encode_payment_signature_header(theirs))
    assert isinstance(ours, PaymentPayload)
    assert ours.to_wire() == payment_payload()
    back = sdk_http.decode_payment_signature_header(encode_payment_payload(ours))
    assert back.model_dump(by_alias=True, exclude_none=True) == payment_payload()


def test_settle_response_both_ways() -> None:
    """The SDK encodes PAYMENT-RESPONSE with non-compact json.dumps; still canonical base64."""
    theirs = sdk.SettleResponse(
        success=True, transaction="0x" + "ab" * 32, network="eip155:8453", payer="0x" + "1" * 40, amount="5"
    )
    ours = decode_payment_response(sdk_http.encode_payment_response_header(theirs))
    assert ours == SettleResponse(True, "0x" + "ab" * 32, "eip155:8453", payer="0x" + "1" * 40, amount=5)
    again = sdk_http.decode_payment_response_header(encode_payment_response(ours))
    assert again == theirs


def test_v1_network_names_match_the_official_sdk() -> None:
    """Checklist 93: every legacy v1 EVM name the pinned SDK signs for maps to the same chain id here."""
    from x402.mechanisms.evm.v1.constants import V1_NETWORK_CHAIN_IDS

    from paywire.x402.networks import V1_NETWORKS

    for name, chain_id in V1_NETWORK_CHAIN_IDS.items():
        assert V1_NETWORKS[name] == f"eip155:{chain_id}", name
