"""Reason codes: wire-decoding codes for ``WireError.reason`` and x402 protocol reasons.

Protocol reasons use the SPEC2 / Python-SDK spellings (digest §4.5a/b). The TypeScript and Go
SDKs spell several of them differently (§4.5c, §13.2); :data:`TS_ALIASES` maps those spellings to
ours and :func:`canonical_reason` normalises any incoming reason string.
"""

from __future__ import annotations

from typing import Final

# --------------------------------------------------------------------------------------------
# (a) Wire-decoding reasons (WireError.reason)
# --------------------------------------------------------------------------------------------

HEADER_TOO_LARGE: Final = "header_too_large"
"""The encoded value is longer than the codec's limit (checked before any decoding)."""
BODY_TOO_LARGE: Final = "body_too_large"
"""A JSON body is longer than the caller's limit (paywire addition for :func:`decode_json`)."""
INVALID_BASE64: Final = "invalid_base64"
"""Not canonical standard padded base64 (RFC 4648 §4)."""
INVALID_UTF8: Final = "invalid_utf8"
"""The decoded bytes are not valid UTF-8."""
INVALID_JSON: Final = "invalid_json"
"""Not JSON, or JSON we refuse (NaN/Infinity, duplicate keys, nesting too deep, lone surrogates)."""
NOT_AN_OBJECT: Final = "not_an_object"
"""The top-level JSON value is not an object."""
MISSING_FIELD: Final = "missing_field"
"""A required field is absent."""
INVALID_FIELD_TYPE: Final = "invalid_field_type"
"""A field has the wrong JSON type or an out-of-range / empty value."""
INVALID_AMOUNT: Final = "invalid_amount"
"""An amount or timestamp string is not a canonical base-10 integer below 2**256."""
INVALID_ADDRESS: Final = "invalid_address"
"""An address does not have the shape required by its network."""
INVALID_NETWORK: Final = "invalid_network"
"""A network identifier is not valid CAIP-2 (or a known v1 name where those are allowed)."""
UNSUPPORTED_VERSION: Final = "unsupported_version"
"""``x402Version`` is an integer we do not speak in this position."""
INVALID_PAYLOAD: Final = "invalid_payload"
"""The message is well-typed but violates a protocol rule (empty ``accepts``, bad nonce, ...)."""

WIRE_REASONS: Final[frozenset[str]] = frozenset(
    {
        HEADER_TOO_LARGE,
        BODY_TOO_LARGE,
        INVALID_BASE64,
        INVALID_UTF8,
        INVALID_JSON,
        NOT_AN_OBJECT,
        MISSING_FIELD,
        INVALID_FIELD_TYPE,
        INVALID_AMOUNT,
        INVALID_ADDRESS,
        INVALID_NETWORK,
        UNSUPPORTED_VERSION,
        INVALID_PAYLOAD,
    }
)

# --------------------------------------------------------------------------------------------
# (b) x402 protocol reasons (VerifyResponse.invalidReason / SettleResponse.errorReason)
# --------------------------------------------------------------------------------------------

# SPEC2 §9 core list
INSUFFICIENT_FUNDS: Final = "insufficient_funds"
INVALID_EXACT_EVM_PAYLOAD_AUTHORIZATION_VALID_AFTER: Final = (
    "invalid_exact_evm_payload_authorization_valid_after"
)
INVALID_EXACT_EVM_PAYLOAD_AUTHORIZATION_VALID_BEFORE: Final = (
    "invalid_exact_evm_payload_authorization_valid_before"
)
INVALID_EXACT_EVM_PAYLOAD_AUTHORIZATION_VALUE_MISMATCH: Final = (
    "invalid_exact_evm_payload_authorization_value_mismatch"
)
INVALID_EXACT_EVM_PAYLOAD_SIGNATURE: Final = "invalid_exact_evm_payload_signature"
INVALID_EXACT_EVM_PAYLOAD_RECIPIENT_MISMATCH: Final = "invalid_exact_evm_payload_recipient_mismatch"
# INVALID_NETWORK and INVALID_PAYLOAD are shared with the wire list above.
INVALID_PAYMENT_REQUIREMENTS: Final = "invalid_payment_requirements"
INVALID_SCHEME: Final = "invalid_scheme"
UNSUPPORTED_SCHEME: Final = "unsupported_scheme"
INVALID_X402_VERSION: Final = "invalid_x402_version"
INVALID_TRANSACTION_STATE: Final = "invalid_transaction_state"
UNEXPECTED_VERIFY_ERROR: Final = "unexpected_verify_error"
UNEXPECTED_SETTLE_ERROR: Final = "unexpected_settle_error"

# EVM exact (PY spellings, digest §4.5b)
INVALID_EXACT_EVM_PAYLOAD_UNDEPLOYED_SMART_WALLET: Final = "invalid_exact_evm_payload_undeployed_smart_wallet"
INVALID_EXACT_EVM_NONCE_ALREADY_USED: Final = "invalid_exact_evm_nonce_already_used"
INVALID_EXACT_EVM_INSUFFICIENT_BALANCE: Final = "invalid_exact_evm_insufficient_balance"
MISSING_EIP712_DOMAIN: Final = "missing_eip712_domain"
NETWORK_MISMATCH: Final = "network_mismatch"
TRANSACTION_FAILED: Final = "transaction_failed"
INVALID_EXACT_EVM_TOKEN_NAME_MISMATCH: Final = "invalid_exact_evm_token_name_mismatch"
INVALID_EXACT_EVM_TOKEN_VERSION_MISMATCH: Final = "invalid_exact_evm_token_version_mismatch"
INVALID_EXACT_EVM_EIP3009_NOT_SUPPORTED: Final = "invalid_exact_evm_eip3009_not_supported"
INVALID_EXACT_EVM_TRANSACTION_SIMULATION_FAILED: Final = "invalid_exact_evm_transaction_simulation_failed"
INVALID_EXACT_EVM_FAILED_TO_GET_NETWORK_CONFIG: Final = "invalid_exact_evm_failed_to_get_network_config"
INVALID_EXACT_EVM_FAILED_TO_VERIFY_SIGNATURE: Final = "invalid_exact_evm_failed_to_verify_signature"

# v1 (SPEC1) spelling of the amount check; v1 verifiers emit this one.
INVALID_EXACT_EVM_PAYLOAD_AUTHORIZATION_VALUE: Final = "invalid_exact_evm_payload_authorization_value"

# Permit2 settlement-revert reasons where TS and PY differ (digest §4.5d); PY spelling is ours.
INVALID_PERMIT2_AMOUNT: Final = "invalid_permit2_amount"
INVALID_PERMIT2_DESTINATION: Final = "invalid_permit2_destination"
INVALID_PERMIT2_OWNER: Final = "invalid_permit2_owner"
PERMIT2_INVALID_NONCE: Final = "permit2_invalid_nonce"
"""Permit2 refused the nonce: spent already (the official SDK and paywire spell it alike)."""

# paywire's own
SETTLEMENT_PENDING: Final = "settlement_pending"
"""Settlement was broadcast but its outcome is not known yet."""
SETTLEMENT_UNRESOLVED: Final = "settlement_unresolved"
"""Settlement outcome could not be determined (e.g. the chain stopped answering)."""

PROTOCOL_REASONS: Final[frozenset[str]] = frozenset(
    {
        INSUFFICIENT_FUNDS,
        INVALID_EXACT_EVM_PAYLOAD_AUTHORIZATION_VALID_AFTER,
        INVALID_EXACT_EVM_PAYLOAD_AUTHORIZATION_VALID_BEFORE,
        INVALID_EXACT_EVM_PAYLOAD_AUTHORIZATION_VALUE_MISMATCH,
        INVALID_EXACT_EVM_PAYLOAD_SIGNATURE,
        INVALID_EXACT_EVM_PAYLOAD_RECIPIENT_MISMATCH,
        INVALID_EXACT_EVM_PAYLOAD_UNDEPLOYED_SMART_WALLET,
        INVALID_EXACT_EVM_NONCE_ALREADY_USED,
        INVALID_EXACT_EVM_INSUFFICIENT_BALANCE,
        MISSING_EIP712_DOMAIN,
        NETWORK_MISMATCH,
        UNSUPPORTED_SCHEME,
        INVALID_NETWORK,
        INVALID_PAYLOAD,
        INVALID_PAYMENT_REQUIREMENTS,
        INVALID_SCHEME,
        INVALID_X402_VERSION,
        INVALID_TRANSACTION_STATE,
        UNEXPECTED_VERIFY_ERROR,
        UNEXPECTED_SETTLE_ERROR,
        TRANSACTION_FAILED,
        INVALID_EXACT_EVM_TOKEN_NAME_MISMATCH,
        INVALID_EXACT_EVM_TOKEN_VERSION_MISMATCH,
        INVALID_EXACT_EVM_EIP3009_NOT_SUPPORTED,
        INVALID_EXACT_EVM_TRANSACTION_SIMULATION_FAILED,
        INVALID_EXACT_EVM_FAILED_TO_GET_NETWORK_CONFIG,
        INVALID_EXACT_EVM_FAILED_TO_VERIFY_SIGNATURE,
        INVALID_EXACT_EVM_PAYLOAD_AUTHORIZATION_VALUE,
        INVALID_PERMIT2_AMOUNT,
        INVALID_PERMIT2_DESTINATION,
        INVALID_PERMIT2_OWNER,
        SETTLEMENT_PENDING,
        SETTLEMENT_UNRESOLVED,
    }
)

TS_ALIASES: Final[dict[str, str]] = {
    # EVM exact (TS/GO exact/facilitator/errors.ts vs SPEC2/PY; digest §4.5c, §13.2)
    "invalid_exact_evm_scheme": UNSUPPORTED_SCHEME,
    "invalid_exact_evm_network_mismatch": NETWORK_MISMATCH,
    "invalid_exact_evm_missing_eip712_domain": MISSING_EIP712_DOMAIN,
    "invalid_exact_evm_recipient_mismatch": INVALID_EXACT_EVM_PAYLOAD_RECIPIENT_MISMATCH,
    "invalid_exact_evm_signature": INVALID_EXACT_EVM_PAYLOAD_SIGNATURE,
    "invalid_exact_evm_authorization_value": INVALID_EXACT_EVM_PAYLOAD_AUTHORIZATION_VALUE_MISMATCH,
    "invalid_exact_evm_transaction_failed": TRANSACTION_FAILED,
    # Permit2 settlement-revert codes (prefix order differs; digest §4.5d)
    "permit2_invalid_amount": INVALID_PERMIT2_AMOUNT,
    "permit2_invalid_destination": INVALID_PERMIT2_DESTINATION,
    "permit2_invalid_owner": INVALID_PERMIT2_OWNER,
}
"""TS/GO spelling -> our (SPEC2, else PY) spelling."""


def canonical_reason(reason: str) -> str:
    """Return our spelling of ``reason`` (TS/GO aliases mapped; anything else unchanged)."""
    return TS_ALIASES.get(reason, reason)
