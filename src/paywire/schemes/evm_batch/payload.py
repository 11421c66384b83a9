"""The ``batch-settlement`` payloads on EVM (spec ``scheme_batch_settlement_evm.md``) and its reason codes. Pure.

``type``: ``deposit`` (channel config, first/next voucher, token authorization), ``voucher``, ``refund`` (a
zero-charge voucher, optional ``amount``; the seller adds ``refundNonce``, ``claims`` and the receiver
authorizer's signatures before settling), and the seller-authored ``claim`` and ``settle``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final

from paywire.evm import batch as b

SCHEME: Final = "batch-settlement"
_P: Final = "invalid_batch_settlement_evm_"
CHANNEL_BUSY: Final = _P + "channel_busy"
CHANNEL_ID_MISMATCH: Final = _P + "channel_id_mismatch"
CHANNEL_NOT_FOUND: Final = _P + "channel_not_found"
CHANNEL_STATE_READ_FAILED: Final = _P + "channel_state_read_failed"
CHARGE_EXCEEDS_SIGNED: Final = _P + "charge_exceeds_signed_cumulative"
CLAIM_PAYLOAD: Final = _P + "claim_payload"
CLAIM_FAILED: Final = _P + "claim_transaction_failed"
CLAIM_SIMULATION_FAILED: Final = _P + "claim_simulation_failed"
CUMULATIVE_MISMATCH: Final = _P + "cumulative_amount_mismatch"
CUMULATIVE_BELOW_CLAIMED: Final = _P + "cumulative_below_claimed"
CUMULATIVE_EXCEEDS_BALANCE: Final = _P + "cumulative_exceeds_balance"
DEPOSIT_PAYLOAD: Final = _P + "deposit_payload"
DEPOSIT_SIMULATION_FAILED: Final = _P + "deposit_simulation_failed"
DEPOSIT_FAILED: Final = _P + "deposit_transaction_failed"
ERC3009_REQUIRED: Final = _P + "erc3009_authorization_required"
INSUFFICIENT_BALANCE: Final = _P + "insufficient_balance"
MISSING_CHANNEL: Final = _P + "missing_channel"
MISSING_EIP712_DOMAIN: Final = _P + "missing_eip712_domain"
NETWORK_MISMATCH: Final = _P + "network_mismatch"
VALID_AFTER: Final = _P + "payload_authorization_valid_after"
VALID_BEFORE: Final = _P + "payload_authorization_valid_before"
PAYLOAD_TYPE: Final = _P + "payload_type"
PERMIT2_ALLOWANCE_REQUIRED: Final = _P + "permit2_allowance_required"
PERMIT2_AMOUNT_MISMATCH: Final = _P + "permit2_amount_mismatch"
PERMIT2_DEADLINE_EXPIRED: Final = _P + "permit2_deadline_expired"
PERMIT2_INVALID_SIGNATURE: Final = _P + "permit2_invalid_signature"
PERMIT2_INVALID_SPENDER: Final = _P + "permit2_invalid_spender"
RECEIVE_AUTHORIZATION_SIGNATURE: Final = _P + "receive_authorization_signature"
RECEIVER_AUTHORIZER_MISMATCH: Final = _P + "receiver_authorizer_mismatch"
RECEIVER_MISMATCH: Final = _P + "receiver_mismatch"
REFUND_AMOUNT_INVALID: Final = _P + "refund_amount_invalid"
REFUND_NO_BALANCE: Final = _P + "refund_no_balance"
REFUND_PAYLOAD: Final = _P + "refund_payload"
REFUND_FAILED: Final = _P + "refund_transaction_failed"
REFUND_SIMULATION_FAILED: Final = _P + "refund_simulation_failed"
RPC_READ_FAILED: Final = _P + "rpc_read_failed"
SCHEME_MISMATCH: Final = _P + "scheme"
SETTLE_PAYLOAD: Final = _P + "settle_payload"
SETTLE_FAILED: Final = _P + "settle_transaction_failed"
TOKEN_MISMATCH: Final = _P + "token_mismatch"
VOUCHER_PAYLOAD: Final = _P + "voucher_payload"
VOUCHER_SIGNATURE: Final = _P + "voucher_signature"
WITHDRAW_DELAY_MISMATCH: Final = _P + "withdraw_delay_mismatch"
WITHDRAW_DELAY_OUT_OF_RANGE: Final = _P + "withdraw_delay_out_of_range"

PAYMENT_TYPES: Final = ("deposit", "voucher", "refund")
"""Payload types a payer sends; ``claim`` and ``settle`` come from the seller only."""


class PayloadError(ValueError):
    """A payload that does not parse; ``reason`` is the spec's code."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True, slots=True)
class Voucher:
    channel_id: bytes
    max_claimable: int
    signature: bytes

    def to_wire(self) -> dict[str, Any]:
        return {"channelId": b.hex32(self.channel_id), "maxClaimableAmount": str(self.max_claimable),
                "signature": "0x" + self.signature.hex()}


@dataclass(frozen=True, slots=True)
class Erc3009Deposit:
    valid_after: int
    valid_before: int
    salt: int
    signature: bytes


@dataclass(frozen=True, slots=True)
class Permit2Deposit:
    from_: str
    token: str
    amount: int
    spender: str
    nonce: int
    deadline: int
    witness_channel_id: bytes
    signature: bytes


@dataclass(frozen=True, slots=True)
class ChannelPayload:
    """A payer's payload: ``deposit``, ``voucher`` or ``refund``."""

    type: str
    config: b.ChannelConfig
    voucher: Voucher
    deposit_amount: int = 0
    erc3009: Erc3009Deposit | None = None
    permit2: Permit2Deposit | None = None
    refund_amount: int | None = None  # refund: None = everything unclaimed

    @property
    def channel_id(self) -> bytes:
        return self.voucher.channel_id


def _int(value: Any) -> int:
    """Decimal or 0x-hex (ERC-3009 salts come as hex)."""
    if isinstance(value, str) and value[:2] in ("0x", "0X"):
        if len(value) > 66:
            raise ValueError("too long")
        return int(value[2:], 16)
    return b.uint(value)


def parse_voucher(obj: Any) -> Voucher:
    if not isinstance(obj, dict):
        raise ValueError("voucher must be an object")
    return Voucher(b.bytes32(str(obj.get("channelId", ""))), b.uint(obj.get("maxClaimableAmount"), 128),
                   b.hex_bytes(obj.get("signature")))


def parse_payment(payload: Any) -> ChannelPayload:
    """A payer's payload; ``PayloadError`` with the spec's reason when it does not parse."""
    if not isinstance(payload, dict):
        raise PayloadError(PAYLOAD_TYPE, "the payload must be an object")
    kind = payload.get("type")
    if kind not in PAYMENT_TYPES:
        raise PayloadError(PAYLOAD_TYPE, f"payload type {str(kind)[:20]!r} is not deposit, voucher or refund")
    reason = {"deposit": DEPOSIT_PAYLOAD, "voucher": VOUCHER_PAYLOAD, "refund": REFUND_PAYLOAD}[str(kind)]
    try:
        config = b.ChannelConfig.from_wire(payload.get("channelConfig"))
        voucher = parse_voucher(payload.get("voucher"))
        if kind == "voucher":
            return ChannelPayload("voucher", config, voucher)
        if kind == "refund":
            raw = payload.get("amount")
            amount = None if raw is None else b.uint(raw, 128)
            if amount == 0:
                raise PayloadError(REFUND_AMOUNT_INVALID, "a refund amount must be positive")
            return ChannelPayload("refund", config, voucher, refund_amount=amount)
        dep = payload.get("deposit")
        if not isinstance(dep, dict) or not isinstance(dep.get("authorization"), dict):
            raise ValueError("deposit must be {amount, authorization}")
        amount = b.uint(dep.get("amount"), 128)
        auth = dep["authorization"]
        e, p = auth.get("erc3009Authorization"), auth.get("permit2Authorization")
        if (e is None) == (p is None):
            raise ValueError("exactly one of erc3009Authorization and permit2Authorization")
        erc3009 = permit2 = None
        if isinstance(e, dict):
            erc3009 = Erc3009Deposit(b.uint(e.get("validAfter")), b.uint(e.get("validBefore")), _int(e.get("salt")),
                                     b.hex_bytes(e.get("signature")))
        elif isinstance(p, dict):
            permitted, witness = p.get("permitted"), p.get("witness")
            if not isinstance(permitted, dict) or not isinstance(witness, dict):
                raise ValueError("permit2Authorization needs permitted and witness")
            from paywire.evm.crypto import to_checksum

            permit2 = Permit2Deposit(to_checksum(str(p.get("from"))), to_checksum(str(permitted.get("token"))),
                                     b.uint(permitted.get("amount")), to_checksum(str(p.get("spender"))),
                                     b.uint(p.get("nonce")), b.uint(p.get("deadline")),
                                     b.bytes32(str(witness.get("channelId", ""))), b.hex_bytes(p.get("signature")))
        else:
            raise ValueError("the deposit authorization must be an object")
        return ChannelPayload("deposit", config, voucher, amount, erc3009, permit2)
    except PayloadError:
        raise
    except (ValueError, TypeError, KeyError) as exc:
        raise PayloadError(reason, f"{kind} payload: {exc}") from None


_LAST: list[Any] = [None, None]


def parse_payment_once(payload: Any) -> ChannelPayload:
    """:func:`parse_payment` of a request's payload object, remembered for that object (the seller reads one
    payload twice: its claim key, then the voucher). Only for payloads nobody mutates (a decoded header)."""
    last = _LAST
    if last[0] is payload:  # the object is held here, so its id cannot be reused by another
        parsed: ChannelPayload = last[1]
        return parsed
    parsed = parse_payment(payload)
    _LAST[:] = [payload, parsed]
    return parsed


def channel_state_wire(channel_id: bytes, balance: int, total_claimed: int, withdraw_requested_at: int,
                       refund_nonce: int, charged: int | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {"channelId": b.hex32(channel_id), "balance": str(balance),
                           "totalClaimed": str(total_claimed), "withdrawRequestedAt": withdraw_requested_at,
                           "refundNonce": str(refund_nonce)}
    if charged is not None:
        out["chargedCumulativeAmount"] = str(charged)
    return out


__all__ = [name for name in dir() if name.isupper()] + [
    "ChannelPayload", "Erc3009Deposit", "PayloadError", "Permit2Deposit", "Voucher", "channel_state_wire",
    "parse_payment", "parse_payment_once", "parse_voucher",
]
