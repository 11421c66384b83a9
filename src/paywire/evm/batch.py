"""The x402 ``batch-settlement`` escrow as x402 uses it on EVM: channel configs and ids, the EIP-712 digests of
vouchers, refunds and claim batches, the deposit collectors' data, and the escrow's calldata. Pure: no I/O.

A channel is the EIP-712 hash of its immutable :class:`ChannelConfig` under the domain
``("x402 Batch Settlement", "1", chainId, escrow)``; the payer authorizer signs cumulative
``Voucher(channelId, maxClaimableAmount)``; the receiver authorizer signs ``ClaimBatch`` (many channels in one
``claimWithSignature``) and ``Refund(channelId, nonce, amount)``.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Final

from eth_abi.abi import decode as abi_decode
from eth_abi.abi import encode as abi_encode

from paywire.evm.crypto import address_bytes, keccak256, to_checksum
from paywire.evm.permit2 import PERMIT2_ADDRESS
from paywire.evm.permit2 import domain_separator as permit2_domain

BATCH_SETTLEMENT_ADDRESS: Final = "0x4020074e9dF2ce1deE5A9C1b5c3f541D02a10003"
ERC3009_COLLECTOR_ADDRESS: Final = "0x4020806089470a89826cB9fB1f4059150b550004"
PERMIT2_COLLECTOR_ADDRESS: Final = "0x4020425FAf3B746C082C2f942b4E5159887B0005"
MULTICALL3_ADDRESS: Final = "0xcA11bde05977b3631167028862bE2a173976CA11"
ZERO_ADDRESS: Final = "0x0000000000000000000000000000000000000000"

MIN_WITHDRAW_DELAY: Final = 900
MAX_WITHDRAW_DELAY: Final = 2_592_000
MAX_UINT128: Final = 2**128 - 1

_DOMAIN_TYPEHASH: Final = keccak256(
    b"EIP712Domain(string name,string version,uint256 chainId,address verifyingContract)")
CHANNEL_CONFIG_TYPEHASH: Final = keccak256(
    b"ChannelConfig(address payer,address payerAuthorizer,address receiver,address receiverAuthorizer,"
    b"address token,uint40 withdrawDelay,bytes32 salt)")
VOUCHER_TYPEHASH: Final = keccak256(b"Voucher(bytes32 channelId,uint128 maxClaimableAmount)")
REFUND_TYPEHASH: Final = keccak256(b"Refund(bytes32 channelId,uint256 nonce,uint128 amount)")
CLAIM_ENTRY_TYPEHASH: Final = keccak256(b"ClaimEntry(bytes32 channelId,uint128 maxClaimableAmount,uint128 totalClaimed)")
CLAIM_BATCH_TYPEHASH: Final = keccak256(
    b"ClaimBatch(ClaimEntry[] claims)ClaimEntry(bytes32 channelId,uint128 maxClaimableAmount,uint128 totalClaimed)")
DEPOSIT_WITNESS_TYPE_STRING: Final = (
    "DepositWitness witness)DepositWitness(bytes32 channelId)TokenPermissions(address token,uint256 amount)")
_DEPOSIT_WITNESS_TYPEHASH: Final = keccak256(b"DepositWitness(bytes32 channelId)")
_PERMIT_DEPOSIT_TYPEHASH: Final = keccak256(
    b"PermitWitnessTransferFrom(TokenPermissions permitted,address spender,uint256 nonce,uint256 deadline,"
    + DEPOSIT_WITNESS_TYPE_STRING.encode())
_TOKEN_PERMISSIONS_TYPEHASH: Final = keccak256(b"TokenPermissions(address token,uint256 amount)")
_CONFIG_TYPE: Final = "(address,address,address,address,address,uint40,bytes32)"
_CLAIM_TYPE: Final = f"((({_CONFIG_TYPE[1:-1]}),uint128),bytes,uint128)"
_ZERO12: Final = bytes(12)


def _u256(n: int) -> bytes:
    return n.to_bytes(32, "big")


def _addr(a: str) -> bytes:
    return _ZERO12 + address_bytes(a)


def selector(signature: str) -> bytes:
    return keccak256(signature.encode())[:4]


def bytes32(value: str | bytes) -> bytes:
    """A ``0x`` + 64 hex digits string (or 32 bytes) as 32 bytes; ValueError otherwise."""
    if isinstance(value, bytes):
        raw = value
    else:
        text = value[2:] if value[:2] in ("0x", "0X") else "x"
        if len(text) != 64:
            raise ValueError("not a bytes32 (0x + 64 hex digits)")
        raw = bytes.fromhex(text)
    if len(raw) != 32:
        raise ValueError("not 32 bytes")
    return raw


def hex32(value: bytes) -> str:
    return "0x" + value.hex()


_HEX = frozenset("0123456789abcdef")


def _address(value: Any) -> str:
    """``0x`` + 40 hex digits, lower-cased (no checksum keccak on the hot path); ValueError otherwise."""
    if not isinstance(value, str) or len(value) != 42 or value[:2] not in ("0x", "0X"):
        raise ValueError("not an address")
    low = value.lower()
    if not _HEX.issuperset(low[2:]):
        raise ValueError("not an address")
    return "0x" + low[2:]


@lru_cache(maxsize=4096)
def _checksum(address: str) -> str:
    return to_checksum(address)


@dataclass(frozen=True, slots=True)
class ChannelConfig:
    """The immutable parameters of one channel (addresses as given or lower-cased when parsed — compare them
    case-insensitively; ``to_wire`` writes EIP-55 — and ``salt`` 32 bytes)."""

    payer: str
    payer_authorizer: str
    receiver: str
    receiver_authorizer: str
    token: str
    withdraw_delay: int
    salt: bytes

    @classmethod
    def from_wire(cls, obj: Any) -> ChannelConfig:
        """Parse the JSON ``channelConfig``; ValueError says which field is wrong. (Cached by content: a seller
        parses the same few configs on every voucher.)"""
        if not isinstance(obj, dict):
            raise ValueError("channelConfig must be an object")
        try:
            fields = tuple(obj[k] for k in _CONFIG_KEYS)
        except KeyError as exc:
            raise ValueError(f"channelConfig.{exc.args[0]} is missing") from None
        if not all(isinstance(f, str | int) and not isinstance(f, bool) for f in fields):
            raise ValueError("channelConfig is malformed: its fields are strings (withdrawDelay a number)")
        return _parse_config(fields)

    def to_wire(self) -> dict[str, Any]:
        """The JSON ``channelConfig`` (EIP-55 addresses)."""
        return {"payer": _checksum(self.payer), "payerAuthorizer": _checksum(self.payer_authorizer),
                "receiver": _checksum(self.receiver), "receiverAuthorizer": _checksum(self.receiver_authorizer),
                "token": _checksum(self.token), "withdrawDelay": self.withdraw_delay, "salt": hex32(self.salt)}

    def as_tuple(self) -> tuple[str, str, str, str, str, int, bytes]:
        return (self.payer, self.payer_authorizer, self.receiver, self.receiver_authorizer, self.token,
                self.withdraw_delay, self.salt)

    def struct_hash(self) -> bytes:
        return keccak256(CHANNEL_CONFIG_TYPEHASH + _addr(self.payer) + _addr(self.payer_authorizer)
                         + _addr(self.receiver) + _addr(self.receiver_authorizer) + _addr(self.token)
                         + _u256(self.withdraw_delay) + self.salt)

    def channel_id(self, chain_id: int, escrow: str = BATCH_SETTLEMENT_ADDRESS) -> bytes:
        """The chain- and escrow-bound channel id (what ``getChannelId`` returns; cached: a seller sees the same
        few configs again and again)."""
        return _channel_id(self, chain_id, escrow)


_CONFIG_KEYS: Final = ("payer", "payerAuthorizer", "receiver", "receiverAuthorizer", "token", "withdrawDelay", "salt")


@lru_cache(maxsize=4096)
def _parse_config(fields: tuple[str | int, ...]) -> ChannelConfig:
    try:
        payer, payer_authorizer, receiver, receiver_authorizer, token = (_address(f) for f in fields[:5])
        delay, salt = fields[5], bytes32(str(fields[6]))
        if not str(delay).isdigit():
            raise ValueError("withdrawDelay must be a non-negative integer")
    except (TypeError, ValueError) as exc:
        raise ValueError(f"channelConfig is malformed: {exc}") from None
    if int(delay) >= 2**40:
        raise ValueError("channelConfig.withdrawDelay does not fit uint40")
    return ChannelConfig(payer, payer_authorizer, receiver, receiver_authorizer, token, int(delay), salt)


@lru_cache(maxsize=8192)
def _channel_id(config: ChannelConfig, chain_id: int, escrow: str) -> bytes:
    return _typed(domain_separator(chain_id, escrow), config.struct_hash())


@lru_cache(maxsize=64)
def domain_separator(chain_id: int, escrow: str = BATCH_SETTLEMENT_ADDRESS) -> bytes:
    return keccak256(_DOMAIN_TYPEHASH + keccak256(b"x402 Batch Settlement") + keccak256(b"1") + _u256(chain_id)
                     + _addr(escrow))


def _typed(domain: bytes, struct_hash: bytes) -> bytes:
    return keccak256(b"\x19\x01" + domain + struct_hash)


def voucher_digest(channel_id: bytes, max_claimable: int, chain_id: int,
                   escrow: str = BATCH_SETTLEMENT_ADDRESS) -> bytes:
    """What the payer authorizer signs: ``Voucher(channelId, maxClaimableAmount)``."""
    return _typed(domain_separator(chain_id, escrow), keccak256(VOUCHER_TYPEHASH + channel_id + _u256(max_claimable)))


def refund_digest(channel_id: bytes, nonce: int, amount: int, chain_id: int,
                  escrow: str = BATCH_SETTLEMENT_ADDRESS) -> bytes:
    """What the receiver authorizer signs for ``refundWithSignature``."""
    return _typed(domain_separator(chain_id, escrow),
                  keccak256(REFUND_TYPEHASH + channel_id + _u256(nonce) + _u256(amount)))


@dataclass(frozen=True, slots=True)
class VoucherClaim:
    """One row of a claim: the payer's voucher (config, ceiling, signature) and the cumulative total claimed."""

    config: ChannelConfig
    max_claimable: int
    signature: bytes
    total_claimed: int

    def as_tuple(self) -> tuple[Any, ...]:
        return ((self.config.as_tuple(), self.max_claimable), self.signature, self.total_claimed)

    def to_wire(self) -> dict[str, Any]:
        return {"voucher": {"channel": self.config.to_wire(), "maxClaimableAmount": str(self.max_claimable)},
                "signature": "0x" + self.signature.hex(), "totalClaimed": str(self.total_claimed)}

    @classmethod
    def from_wire(cls, obj: Any) -> VoucherClaim:
        if not isinstance(obj, dict) or not isinstance(obj.get("voucher"), dict):
            raise ValueError("a claim must be {voucher: {channel, maxClaimableAmount}, signature, totalClaimed}")
        v = obj["voucher"]
        return cls(ChannelConfig.from_wire(v.get("channel")), uint(v.get("maxClaimableAmount"), 128),
                   hex_bytes(obj.get("signature")), uint(obj.get("totalClaimed"), 128))


def claim_batch_digest(claims: Sequence[VoucherClaim], chain_id: int,
                       escrow: str = BATCH_SETTLEMENT_ADDRESS) -> bytes:
    """What the receiver authorizer signs for ``claimWithSignature`` over ``claims``."""
    entries = b"".join(
        keccak256(CLAIM_ENTRY_TYPEHASH + c.config.channel_id(chain_id, escrow) + _u256(c.max_claimable)
                  + _u256(c.total_claimed)) for c in claims)
    return _typed(domain_separator(chain_id, escrow), keccak256(CLAIM_BATCH_TYPEHASH + keccak256(entries)))


# ------------------------------------------------------------------------------------------------ deposits


def erc3009_deposit_nonce(channel_id: bytes, salt: int) -> bytes:
    """The ``receiveWithAuthorization`` nonce the ERC-3009 collector expects: ``keccak(channelId, salt)``."""
    return keccak256(channel_id + _u256(salt))


def erc3009_collector_data(valid_after: int, valid_before: int, salt: int, signature: bytes) -> bytes:
    return abi_encode(["uint256", "uint256", "uint256", "bytes"], [valid_after, valid_before, salt, signature])


def permit2_collector_data(nonce: int, deadline: int, signature: bytes, eip2612: bytes = b"") -> bytes:
    return abi_encode(["uint256", "uint256", "bytes", "bytes"], [nonce, deadline, signature, eip2612])


def eip2612_permit_data(value: int, deadline: int, signature: bytes) -> bytes:
    """The Permit2 collector's optional EIP-2612 segment from a 65-byte (r, s, v) signature."""
    v = signature[64] if signature[64] >= 27 else signature[64] + 27
    return abi_encode(["uint256", "uint256", "uint8", "bytes32", "bytes32"],
                      [value, deadline, v, signature[:32], signature[32:64]])


def permit2_deposit_digest(token: str, amount: int, nonce: int, deadline: int, channel_id: bytes,
                           chain_id: int) -> bytes:
    """Permit2 ``PermitWitnessTransferFrom`` with the ``DepositWitness(channelId)`` witness, spender the Permit2
    collector."""
    permitted = keccak256(_TOKEN_PERMISSIONS_TYPEHASH + _addr(token) + _u256(amount))
    witness = keccak256(_DEPOSIT_WITNESS_TYPEHASH + channel_id)
    struct = keccak256(_PERMIT_DEPOSIT_TYPEHASH + permitted + _addr(PERMIT2_COLLECTOR_ADDRESS) + _u256(nonce)
                       + _u256(deadline) + witness)
    return keccak256(b"\x19\x01" + permit2_domain(chain_id, PERMIT2_ADDRESS) + struct)


# ------------------------------------------------------------------------------------------------ calldata

_DEPOSIT = selector(f"deposit({_CONFIG_TYPE},uint128,address,bytes)")
_CLAIM = selector(f"claim({_CLAIM_TYPE}[])")
_CLAIM_WITH_SIGNATURE = selector(f"claimWithSignature({_CLAIM_TYPE}[],bytes)")
_SETTLE = selector("settle(address,address)")
_REFUND = selector(f"refund({_CONFIG_TYPE},uint128)")
_REFUND_WITH_SIGNATURE = selector(f"refundWithSignature({_CONFIG_TYPE},uint128,uint256,bytes)")
_INITIATE_WITHDRAW = selector(f"initiateWithdraw({_CONFIG_TYPE},uint128)")
_FINALIZE_WITHDRAW = selector(f"finalizeWithdraw({_CONFIG_TYPE})")
_MULTICALL = selector("multicall(bytes[])")
_CHANNELS = selector("channels(bytes32)")
_PENDING = selector("pendingWithdrawals(bytes32)")
_REFUND_NONCE = selector("refundNonce(bytes32)")
_RECEIVERS = selector("receivers(address,address)")
_TRY_AGGREGATE = selector("tryAggregate(bool,(address,bytes)[])")


def deposit(config: ChannelConfig, amount: int, collector: str, collector_data: bytes) -> bytes:
    return _DEPOSIT + abi_encode([_CONFIG_TYPE, "uint128", "address", "bytes"],
                                 [config.as_tuple(), amount, collector, collector_data])


def claim(claims: Sequence[VoucherClaim]) -> bytes:
    return _CLAIM + abi_encode([f"{_CLAIM_TYPE}[]"], [[c.as_tuple() for c in claims]])


def claim_with_signature(claims: Sequence[VoucherClaim], signature: bytes) -> bytes:
    return _CLAIM_WITH_SIGNATURE + abi_encode([f"{_CLAIM_TYPE}[]", "bytes"],
                                              [[c.as_tuple() for c in claims], signature])


def settle(receiver: str, token: str) -> bytes:
    return _SETTLE + _addr(receiver) + _addr(token)


def refund(config: ChannelConfig, amount: int) -> bytes:
    return _REFUND + abi_encode([_CONFIG_TYPE, "uint128"], [config.as_tuple(), amount])


def refund_with_signature(config: ChannelConfig, amount: int, nonce: int, signature: bytes) -> bytes:
    return _REFUND_WITH_SIGNATURE + abi_encode([_CONFIG_TYPE, "uint128", "uint256", "bytes"],
                                               [config.as_tuple(), amount, nonce, signature])


def initiate_withdraw(config: ChannelConfig, amount: int) -> bytes:
    return _INITIATE_WITHDRAW + abi_encode([_CONFIG_TYPE, "uint128"], [config.as_tuple(), amount])


def finalize_withdraw(config: ChannelConfig) -> bytes:
    return _FINALIZE_WITHDRAW + abi_encode([_CONFIG_TYPE], [config.as_tuple()])


def multicall(calls: Iterable[bytes]) -> bytes:
    """The escrow's own ``multicall(bytes[])`` (several escrow calls in one transaction)."""
    return _MULTICALL + abi_encode(["bytes[]"], [list(calls)])


def channels_call(channel_id: bytes) -> bytes:
    return _CHANNELS + channel_id


def pending_withdrawal_call(channel_id: bytes) -> bytes:
    return _PENDING + channel_id


def refund_nonce_call(channel_id: bytes) -> bytes:
    return _REFUND_NONCE + channel_id


def receivers_call(receiver: str, token: str) -> bytes:
    return _RECEIVERS + _addr(receiver) + _addr(token)


def try_aggregate(calls: Sequence[tuple[str, bytes]]) -> bytes:
    """Multicall3 ``tryAggregate(false, calls)``."""
    return _TRY_AGGREGATE + abi_encode(["bool", "(address,bytes)[]"], [False, list(calls)])


def decode_try_aggregate(data: bytes) -> list[tuple[bool, bytes]]:
    (rows,) = abi_decode(["(bool,bytes)[]"], data)
    return [(bool(ok), bytes(ret)) for ok, ret in rows]


def decode_pair(data: bytes) -> tuple[int, int]:
    """Two words (``channels``, ``pendingWithdrawals``, ``receivers``)."""
    return int.from_bytes(data[:32], "big"), int.from_bytes(data[32:64], "big")


@dataclass(frozen=True, slots=True)
class OnchainChannel:
    """The escrow's view of one channel."""

    balance: int
    total_claimed: int
    withdraw_amount: int
    withdraw_requested_at: int
    refund_nonce: int

    @property
    def available(self) -> int:
        """Unclaimed escrow: what refunds and withdrawals can still return."""
        return self.balance - self.total_claimed

    def to_wire(self, channel_id: bytes) -> dict[str, Any]:
        return {"channelId": hex32(channel_id), "balance": str(self.balance), "totalClaimed": str(self.total_claimed),
                "withdrawRequestedAt": self.withdraw_requested_at, "refundNonce": str(self.refund_nonce)}


def channel_state_calls(channel_id: bytes) -> list[tuple[str, bytes]]:
    """The three reads of :class:`OnchainChannel`, for :func:`try_aggregate`."""
    return [(BATCH_SETTLEMENT_ADDRESS, channels_call(channel_id)),
            (BATCH_SETTLEMENT_ADDRESS, pending_withdrawal_call(channel_id)),
            (BATCH_SETTLEMENT_ADDRESS, refund_nonce_call(channel_id))]


def decode_channel_state(results: Sequence[tuple[bool, bytes]]) -> OnchainChannel:
    if len(results) < 3 or not all(ok for ok, _ in results[:3]):
        raise ValueError("a channel read failed")
    balance, claimed = decode_pair(results[0][1])
    wd_amount, wd_at = decode_pair(results[1][1])
    return OnchainChannel(balance, claimed, wd_amount, wd_at, int.from_bytes(results[2][1][:32], "big"))


# ------------------------------------------------------------------------------------------------ parsing


def uint(value: Any, bits: int = 256) -> int:
    """A decimal string (or int) that fits ``uint<bits>``; ValueError otherwise."""
    if isinstance(value, bool):
        raise ValueError("not an amount")
    text = str(value) if isinstance(value, int | str) else ""
    if not text.isdigit() or len(text) > 78:
        raise ValueError(f"not a non-negative integer: {str(value)[:40]!r}")
    n = int(text)
    if n >= 2**bits:
        raise ValueError(f"does not fit uint{bits}")
    return n


def hex_bytes(value: Any, limit: int = 4096) -> bytes:
    """``0x``-hex (bounded) as bytes; ValueError otherwise."""
    if not isinstance(value, str) or value[:2] not in ("0x", "0X") or len(value) > 2 + 2 * limit:
        raise ValueError("not 0x-hex bytes")
    try:
        return bytes.fromhex(value[2:])
    except ValueError:
        raise ValueError("not 0x-hex bytes") from None


_ERRORS: Final = {
    selector(s): s.split("(", 1)[0]
    for s in (
        "InvalidChannel()", "ZeroDeposit()", "DepositOverflow()", "InvalidSignature()", "NotReceiverAuthorizer()",
        "NotAuthorizedToClaim()", "NotAuthorizedToRefund()", "ClaimExceedsCeiling()", "ClaimExceedsBalance()",
        "WithdrawalAlreadyPending()", "WithdrawalNotPending()", "NotAuthorizedToFinalizeWithdraw()",
        "WithdrawDelayNotElapsed()", "NothingToWithdraw()", "WithdrawAmountExceedsAvailable()",
        "WithdrawDelayOutOfRange()", "EmptyBatch()", "DepositCollectionFailed()", "InvalidCollector()",
        "InvalidRefundNonce()", "ZeroRefund()", "ReentrancyGuardReentrantCall()", "TokenTransferFailed()",
        "OnlyX402BatchSettlement()", "Permit2612AmountMismatch()",
    )
}


def error_name(data: bytes) -> str | None:
    """The escrow / collector custom error a revert's data carries, or None."""
    return _ERRORS.get(bytes(data[:4]))


__all__ = [
    "BATCH_SETTLEMENT_ADDRESS", "ERC3009_COLLECTOR_ADDRESS", "MAX_WITHDRAW_DELAY", "MIN_WITHDRAW_DELAY",
    "MULTICALL3_ADDRESS", "PERMIT2_COLLECTOR_ADDRESS", "ZERO_ADDRESS", "ChannelConfig", "OnchainChannel",
    "VoucherClaim", "bytes32", "channel_state_calls", "claim", "claim_batch_digest", "claim_with_signature",
    "decode_channel_state", "decode_pair", "decode_try_aggregate", "deposit", "domain_separator",
    "eip2612_permit_data", "erc3009_collector_data", "erc3009_deposit_nonce", "error_name", "finalize_withdraw",
    "hex32", "hex_bytes", "initiate_withdraw", "multicall", "permit2_collector_data", "permit2_deposit_digest",
    "receivers_call", "refund", "refund_digest", "refund_nonce_call", "refund_with_signature", "settle",
    "try_aggregate", "uint", "voucher_digest",
]
