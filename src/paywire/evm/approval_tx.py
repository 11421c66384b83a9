"""x402 ``erc20ApprovalGasSponsoring``: the payer's signed EIP-1559 transaction ``token.approve(Permit2, amount)``,
carried in ``extensions.erc20ApprovalGasSponsoring.info`` (``from``, ``asset``, ``spender``, ``amount``,
``signedTransaction``, ``version``), which the facilitator broadcasts (funding the payer's gas when short) before
settling through Permit2. Building, decoding and checking that transaction; pure (no I/O)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import rlp

from paywire.errors import WireError
from paywire.evm.crypto import keccak256, recover_address, to_checksum
from paywire.evm.permit2 import PERMIT2_ADDRESS

ERC20_APPROVAL_GAS_SPONSORING = "erc20ApprovalGasSponsoring"
APPROVE_SELECTOR = bytes.fromhex("095ea7b3")
APPROVAL_GAS = 100_000
"""Gas the payer's approval may ask for at most (an ERC-20 ``approve`` needs ~46,000): bounds what is funded."""
MAX_UINT256 = 2**256 - 1


def approve_calldata(spender: str, amount: int) -> bytes:
    return APPROVE_SELECTOR + bytes(12) + bytes.fromhex(spender[2:]) + amount.to_bytes(32, "big")


def _fields(chain_id: int, nonce: int, tip: int, max_fee: int, gas: int, to: str, data: bytes) -> list[Any]:
    return [chain_id, nonce, tip, max_fee, gas, bytes.fromhex(to[2:]), 0, data, []]


def approval_sighash(chain_id: int, nonce: int, tip: int, max_fee: int, gas: int, token: str, data: bytes) -> bytes:
    """The digest the payer signs for the approval transaction (EIP-1559, empty access list)."""
    return keccak256(b"\x02" + rlp.encode(_fields(chain_id, nonce, tip, max_fee, gas, token, data)))


def encode_approval(chain_id: int, nonce: int, tip: int, max_fee: int, gas: int, token: str, data: bytes,
                    signature: bytes) -> bytes:
    """The raw signed transaction from the fields and a 65-byte r‖s‖v signature of :func:`approval_sighash`."""
    v = signature[64] - 27 if signature[64] >= 27 else signature[64]
    r, s = int.from_bytes(signature[:32], "big"), int.from_bytes(signature[32:64], "big")
    return b"\x02" + bytes(rlp.encode([*_fields(chain_id, nonce, tip, max_fee, gas, token, data), v, r, s]))


@dataclass(frozen=True, slots=True)
class ApprovalTx:
    """A decoded, signature-checked approval transaction."""

    raw: bytes
    sender: str
    chain_id: int
    nonce: int
    tip: int
    max_fee: int
    gas: int
    to: str
    value: int
    data: bytes

    @property
    def cost(self) -> int:
        """Wei it can cost at most (what the payer's balance must cover)."""
        return self.gas * self.max_fee


def decode_approval(raw: bytes) -> ApprovalTx:
    """Decode a signed type-2 transaction and recover its sender; ``ValueError`` when it is not one."""
    if not raw or raw[0] != 2:
        raise ValueError("not an EIP-1559 (type 2) transaction")
    f = rlp.decode(raw[1:])
    if not isinstance(f, list) or len(f) != 12 or f[8] != []:
        raise ValueError("malformed EIP-1559 transaction (or one with an access list)")

    def n(b: Any) -> int:
        return int.from_bytes(bytes(b), "big")

    if len(bytes(f[5])) != 20:
        raise ValueError("the transaction has no 20-byte target")
    chain_id, nonce, tip, max_fee, gas, value, v = (n(f[i]) for i in (0, 1, 2, 3, 4, 6, 9))
    to, data = to_checksum("0x" + bytes(f[5]).hex()), bytes(f[7])
    if v not in (0, 1):
        raise ValueError("bad signature parity")
    sig = n(f[10]).to_bytes(32, "big") + n(f[11]).to_bytes(32, "big") + bytes([v])
    sender = recover_address(approval_sighash(chain_id, nonce, tip, max_fee, gas, to, data), sig)
    if sender is None:
        raise ValueError("the signature does not recover")
    return ApprovalTx(bytes(raw), to_checksum("0x" + sender.hex()), chain_id, nonce, tip, max_fee, gas, to, value,
                      data)


@dataclass(frozen=True, slots=True)
class SponsoredApproval:
    """The extension's info, checked against one payment: ``tx`` approves Permit2 on ``token`` for ``payer``."""

    tx: ApprovalTx
    amount: int


def approval_from_extensions(extensions: Mapping[str, Any] | None, payer: str, token: str, chain_id: int,
                             needed: int) -> tuple[SponsoredApproval | None, str | None]:
    """(the approval, None) when the payload's ``erc20ApprovalGasSponsoring`` can approve Permit2 for
    ``payer`` on ``token`` for at least ``needed``; (None, the official SDK's reason) when it cannot; (None, None)
    without one. The chain-dependent checks (nonce, fees, balance) are the facilitator's."""
    ext = (extensions or {}).get(ERC20_APPROVAL_GAS_SPONSORING)
    info = ext.get("info") if isinstance(ext, Mapping) else None
    if not isinstance(info, Mapping) or "signedTransaction" not in info:
        return None, None  # absent, or the seller's declaration echoed back
    try:
        sender, asset, spender = str(info["from"]), str(info["asset"]), str(info["spender"])
        amount, raw = int(str(info["amount"])), bytes.fromhex(str(info["signedTransaction"]).removeprefix("0x"))
    except (KeyError, ValueError):
        return None, "invalid_erc20_approval_extension_format"
    if sender.lower() != payer.lower():
        return None, "erc20_approval_from_mismatch"
    if asset.lower() != token.lower():
        return None, "erc20_approval_asset_mismatch"
    if spender.lower() != PERMIT2_ADDRESS.lower():
        return None, "erc20_approval_spender_not_permit2"
    try:
        tx = decode_approval(raw)
    except (ValueError, rlp.exceptions.DecodingError, WireError):
        return None, "erc20_approval_tx_parse_failed"
    if tx.sender.lower() != payer.lower():
        return None, "erc20_approval_tx_signer_mismatch"
    if tx.to.lower() != token.lower():
        return None, "erc20_approval_tx_wrong_target"
    if tx.data[:4] != APPROVE_SELECTOR or len(tx.data) != 68:
        return None, "erc20_approval_tx_wrong_selector"
    if tx.data[4:36] != bytes(12) + bytes.fromhex(PERMIT2_ADDRESS[2:]):
        return None, "erc20_approval_tx_wrong_spender"
    approved = int.from_bytes(tx.data[36:68], "big")
    if approved != amount or approved < needed or tx.value != 0 or tx.chain_id != chain_id:
        return None, "erc20_approval_tx_invalid_calldata"
    if tx.gas > APPROVAL_GAS or tx.tip > tx.max_fee:
        return None, "erc20_approval_tx_gas_out_of_bounds"
    return SponsoredApproval(tx, approved), None


def approval_extension(payer: str, token: str, amount: int, raw: bytes) -> dict[str, Any]:
    """``{erc20ApprovalGasSponsoring: {info}}`` for a payment payload's ``extensions``."""
    return {ERC20_APPROVAL_GAS_SPONSORING: {"info": {
        "from": to_checksum(payer), "asset": to_checksum(token), "spender": PERMIT2_ADDRESS, "amount": str(amount),
        "signedTransaction": "0x" + raw.hex(), "version": "1"}}}


__all__ = ["APPROVAL_GAS", "ERC20_APPROVAL_GAS_SPONSORING", "MAX_UINT256", "ApprovalTx", "SponsoredApproval",
           "approval_extension", "approval_from_extensions", "approval_sighash", "approve_calldata",
           "decode_approval", "encode_approval"]
