"""x402 wire core: typed v1/v2 messages, strict codecs, CAIP-2 helpers and offer matching (sans-I/O)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from paywire._lazy import lazy_exports

if TYPE_CHECKING:
    from paywire.x402 import reasons
    from paywire.x402.codec import (
        MAX_BODY_BYTES,
        MAX_HEADER_BYTES,
        PAYMENT_REQUIRED,
        PAYMENT_RESPONSE,
        PAYMENT_SIGNATURE,
        X_PAYMENT,
        X_PAYMENT_RESPONSE,
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
    )
    from paywire.x402.matching import (
        find_matching_requirements,
        find_matching_v1,
        json_equal,
        requirements_match,
        select_requirements,
    )
    from paywire.x402.models import (
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
        requirements_v1_to_v2,
        requirements_v2_to_v1,
    )
    from paywire.x402.networks import (
        V1_NETWORKS,
        evm_chain_id,
        is_caip2,
        is_evm,
        matches_pattern,
        parse_caip2,
        to_caip2,
        to_v1_name,
    )
    from paywire.x402.reasons import TS_ALIASES, canonical_reason

__getattr__, __dir__ = lazy_exports(__name__, {
    "paywire.x402.codec": (
        "MAX_BODY_BYTES", "MAX_HEADER_BYTES", "PAYMENT_REQUIRED", "PAYMENT_RESPONSE", "PAYMENT_SIGNATURE",
        "X_PAYMENT", "X_PAYMENT_RESPONSE", "decode_body", "decode_header", "decode_json", "decode_payment_required",
        "decode_payment_response", "decode_payment_signature", "decode_v1_body", "encode_header", "encode_json",
        "encode_payment_payload", "encode_payment_required", "encode_payment_response", "encode_v1_body",
    ),
    "paywire.x402.matching": (
        "find_matching_requirements", "find_matching_v1", "json_equal", "requirements_match", "select_requirements",
    ),
    "paywire.x402.models": (
        "FacilitatorRequest", "PaymentPayload", "PaymentPayloadV1",
        "PaymentRequired", "PaymentRequiredV1", "PaymentRequirements", "PaymentRequirementsV1", "ResourceInfo",
        "SettleResponse", "SupportedKind", "SupportedResponse", "VerifyResponse", "parse_payment_payload",
        "requirements_v1_to_v2", "requirements_v2_to_v1",
    ),
    "paywire.x402.networks": (
        "V1_NETWORKS", "evm_chain_id", "is_caip2", "is_evm", "matches_pattern", "parse_caip2", "to_caip2",
        "to_v1_name",
    ),
    "paywire.x402.reasons": ("TS_ALIASES", "canonical_reason", "reasons"),
})
__all__ = [
    "MAX_BODY_BYTES",
    "MAX_HEADER_BYTES",
    "PAYMENT_REQUIRED",
    "PAYMENT_RESPONSE",
    "PAYMENT_SIGNATURE",
    "TS_ALIASES",
    "V1_NETWORKS",
    "X_PAYMENT",
    "X_PAYMENT_RESPONSE",
    "FacilitatorRequest",
    "PaymentPayload",
    "PaymentPayloadV1",
    "PaymentRequired",
    "PaymentRequiredV1",
    "PaymentRequirements",
    "PaymentRequirementsV1",
    "ResourceInfo",
    "SettleResponse",
    "SupportedKind",
    "SupportedResponse",
    "VerifyResponse",
    "canonical_reason",
    "decode_body",
    "decode_header",
    "decode_json",
    "decode_payment_required",
    "decode_payment_response",
    "decode_payment_signature",
    "decode_v1_body",
    "encode_header",
    "encode_json",
    "encode_payment_payload",
    "encode_payment_required",
    "encode_payment_response",
    "encode_v1_body",
    "evm_chain_id",
    "find_matching_requirements",
    "find_matching_v1",
    "is_caip2",
    "is_evm",
    "json_equal",
    "matches_pattern",
    "parse_caip2",
    "parse_payment_payload",
    "reasons",
    "requirements_match",
    "requirements_v1_to_v2",
    "requirements_v2_to_v1",
    "select_requirements",
    "to_caip2",
    "to_v1_name",
]
