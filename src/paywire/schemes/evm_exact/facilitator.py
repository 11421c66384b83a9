"""Facilitator side of ``exact`` on EVM via EIP-3009: verify (cheap checks first) and settle."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from paywire.chain.base import Chain, Receipt
from paywire.chain.tx import TxSender
from paywire.errors import ChainError, ChainRevert, WireError
from paywire.evm import token
from paywire.evm.crypto import address_bytes, keccak256, recover_address, to_checksum
from paywire.evm.eip712 import domain_separator, transfer_authorization_digest
from paywire.x402.models import (
    ExactEvmPayload,
    PaymentPayload,
    PaymentRequirements,
    SettleResponse,
    VerifyResponse,
)
from paywire.x402.networks import evm_chain_id

TIME_BUFFER_SECONDS = 6  # validBefore must leave this much room for block inclusion (checklist 50)

# Revert strings of EIP-3009 tokens → x402 reasons (digest §5.1, settlement mapping).
_REVERT_MAP: tuple[tuple[str, str], ...] = (
    ("authorization is expired", "invalid_exact_evm_payload_authorization_valid_before"),
    ("not yet valid", "invalid_exact_evm_payload_authorization_valid_after"),
    ("authorization is used", "invalid_exact_evm_nonce_already_used"),
    ("usedorcanceled", "invalid_exact_evm_nonce_already_used"),
    ("exceeds balance", "invalid_exact_evm_insufficient_balance"),
    ("insufficientbalance", "invalid_exact_evm_insufficient_balance"),
    ("invalid signature", "invalid_exact_evm_payload_signature"),
    ("signermismatch", "invalid_exact_evm_payload_signature"),
)


def map_revert(reason: str) -> str:
    """x402 reason code for a token revert string."""
    low = reason.lower()
    for needle, code in _REVERT_MAP:
        if needle in low:
            return code
    return "invalid_exact_evm_transaction_simulation_failed"


@dataclass(slots=True)
class EvmNetwork:
    """One chain the facilitator settles on, with the keys that pay gas."""

    network: str
    chain: Chain
    senders: Sequence[TxSender]
    _next: int = field(default=0, repr=False)

    def sender(self) -> TxSender:
        s = self.senders[self._next % len(self.senders)]
        self._next += 1
        return s


@dataclass(frozen=True, slots=True)
class CheckedAuthorization:
    """What the pure checks learned: the parsed payload, its digest and the recovered signer."""

    payload: ExactEvmPayload
    digest: bytes
    signer_ok: bool  # ECDSA recovered ``from``; False means a contract-wallet check is still needed
    payer: str


def check_offchain(
    payload: PaymentPayload, requirements: PaymentRequirements, now: int, *, v1: bool = False
) -> VerifyResponse | CheckedAuthorization:
    """Every check that needs no chain, in the order of digest §5.1 (cheap first). Pure."""
    accepted = payload.accepted
    if accepted.scheme != "exact" or requirements.scheme != "exact":
        return VerifyResponse(False, "unsupported_scheme", invalid_message="scheme is not exact")
    if accepted.network != requirements.network:
        return VerifyResponse(False, "network_mismatch", invalid_message="accepted.network differs")
    try:
        chain_id = evm_chain_id(requirements.network)
    except WireError:
        return VerifyResponse(False, "invalid_exact_evm_failed_to_get_network_config")
    name, version = requirements.extra.get("name"), requirements.extra.get("version")
    if not isinstance(name, str) or not isinstance(version, str):
        return VerifyResponse(False, "missing_eip712_domain", invalid_message="extra.name/version required")
    try:
        p = ExactEvmPayload.from_wire(payload.payload)
    except WireError as exc:
        return VerifyResponse(False, "invalid_payload", invalid_message=str(exc))
    a = p.authorization
    payer = to_checksum(a.from_)
    if a.to.lower() != requirements.pay_to.lower():
        return VerifyResponse(False, "invalid_exact_evm_payload_recipient_mismatch", payer=payer)
    if a.value != requirements.amount:
        reason = "invalid_exact_evm_payload_authorization_value" if v1 else (
            "invalid_exact_evm_payload_authorization_value_mismatch"
        )
        return VerifyResponse(False, reason, payer=payer)
    if a.valid_before < now + TIME_BUFFER_SECONDS:
        return VerifyResponse(False, "invalid_exact_evm_payload_authorization_valid_before", payer=payer)
    if a.valid_after > now:
        return VerifyResponse(False, "invalid_exact_evm_payload_authorization_valid_after", payer=payer)
    if accepted.asset.lower() != requirements.asset.lower():
        return VerifyResponse(False, "invalid_exact_evm_payload_signature", payer=payer,
                              invalid_message="accepted.asset differs from the offer")
    try:
        from_b = address_bytes(a.from_)
        digest = transfer_authorization_digest(
            domain_separator(name, version, chain_id, requirements.asset),
            from_b, address_bytes(a.to), a.value, a.valid_after, a.valid_before, a.nonce,
        )
    except (ValueError, OverflowError) as exc:
        return VerifyResponse(False, "invalid_payload", payer=payer, invalid_message=str(exc))
    sig = p.signature
    ok = len(sig) == 65 and recover_address(digest, sig) == from_b
    return CheckedAuthorization(p, digest, ok, payer)


class ExactEvmFacilitator:
    """``exact`` × ``eip155:*`` for the facilitator role."""

    scheme = "exact"
    network_pattern = "eip155:*"

    def __init__(
        self,
        networks: Mapping[str, EvmNetwork] | Sequence[EvmNetwork],
        *,
        simulate: bool = True,
        receipt_timeout: float = 60.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        nets = networks.values() if isinstance(networks, Mapping) else networks
        self._nets: dict[str, EvmNetwork] = {n.network: n for n in nets}
        self._simulate = simulate
        self._receipt_timeout = receipt_timeout
        self._clock = clock
        self._inflight: dict[tuple[str, str, str, bytes], asyncio.Future[SettleResponse]] = {}

    # -- registry facts -------------------------------------------------------------------------
    def networks(self) -> Sequence[str]:
        return list(self._nets)

    def signer_addresses(self) -> Sequence[str]:
        return sorted({s.address for n in self._nets.values() for s in n.senders})

    def kind_extra(self, network: str) -> Mapping[str, Any] | None:
        return None

    # -- verify ---------------------------------------------------------------------------------
    async def verify(
        self, payload: PaymentPayload, requirements: PaymentRequirements, *, v1: bool = False
    ) -> VerifyResponse:
        res = await self._verify(payload, requirements, v1=v1, simulate=self._simulate)
        return res[0]

    async def _verify(
        self, payload: PaymentPayload, requirements: PaymentRequirements, *, v1: bool, simulate: bool
    ) -> tuple[VerifyResponse, CheckedAuthorization | None]:
        checked = check_offchain(payload, requirements, int(self._clock()), v1=v1)
        if isinstance(checked, VerifyResponse):
            return checked, None
        net = self._nets.get(requirements.network)
        if net is None:
            return VerifyResponse(False, "invalid_network", payer=checked.payer,
                                  invalid_message=f"this facilitator does not settle on {requirements.network}"), None
        try:
            bad = await self._check_onchain(net, checked, requirements, simulate=simulate)
        except ChainError as exc:
            return VerifyResponse(False, "unexpected_verify_error", payer=checked.payer,
                                  invalid_message=f"chain unavailable: {exc}"), None
        if bad is not None:
            return VerifyResponse(False, bad[0], payer=checked.payer, invalid_message=bad[1]), None
        return VerifyResponse(True, payer=checked.payer), checked

    async def _check_onchain(
        self, net: EvmNetwork, c: CheckedAuthorization, req: PaymentRequirements, *, simulate: bool
    ) -> tuple[str, str] | None:
        a = c.payload.authorization
        chain, asset = net.chain, req.asset
        if not c.signer_ok:
            sig = c.payload.signature
            code = await chain.get_code(a.from_)
            if not code:
                if sig.endswith(token.ERC6492_MAGIC):
                    return ("invalid_exact_evm_payload_undeployed_smart_wallet",
                            "ERC-6492 wallet deployment is not enabled on this facilitator")
                return ("invalid_exact_evm_payload_signature", "signature does not recover to authorization.from")
            try:
                out = await chain.call(a.from_, token.is_valid_signature(c.digest, sig))
            except ChainRevert:
                out = b""
            if out[:4] != token.EIP1271_MAGIC:
                return ("invalid_exact_evm_payload_signature", "EIP-1271 wallet rejected the signature")
        used, balance = await asyncio.gather(
            chain.call(asset, token.authorization_state(a.from_, a.nonce)),
            chain.call(asset, token.balance_of(a.from_)),
        )
        if token.decode_bool(used):
            return ("invalid_exact_evm_nonce_already_used", "authorization nonce already used or canceled")
        if token.decode_uint(balance) < a.value:
            return ("invalid_exact_evm_insufficient_balance", "payer balance is below the amount")
        if simulate:
            data = token.transfer_with_authorization(
                a.from_, a.to, a.value, a.valid_after, a.valid_before, a.nonce, c.payload.signature
            )
            try:
                await chain.call(asset, data, sender=net.senders[0].address if net.senders else None)
            except ChainRevert as exc:
                return (await self._diagnose(chain, asset, req, exc.reason), exc.reason)
        return None

    async def _diagnose(self, chain: Chain, asset: str, req: PaymentRequirements, revert: str) -> str:
        code = map_revert(revert)
        if code != "invalid_exact_evm_payload_signature":
            return code
        try:  # a wrong EIP-712 domain in `extra` silently breaks signatures: say which part
            name = token.decode_string(await chain.call(asset, token.NAME))
            version = token.decode_string(await chain.call(asset, token.VERSION))
        except (ChainError, Exception):
            return code
        if name != req.extra.get("name"):
            return "invalid_exact_evm_token_name_mismatch"
        if version != req.extra.get("version"):
            return "invalid_exact_evm_token_version_mismatch"
        return code

    # -- settle ---------------------------------------------------------------------------------
    async def settle(
        self, payload: PaymentPayload, requirements: PaymentRequirements, *, v1: bool = False
    ) -> SettleResponse:
        """Re-verify, then send ``transferWithAuthorization`` and confirm the ``Transfer`` log.

        Concurrent settles of one authorization in this process share one transaction.
        """
        try:
            p = ExactEvmPayload.from_wire(payload.payload)
            key = (requirements.network, requirements.asset.lower(), p.authorization.from_.lower(),
                   p.authorization.nonce)
        except WireError:
            return await self._settle(payload, requirements, v1=v1)
        fut = self._inflight.get(key)
        if fut is not None:
            return await asyncio.shield(fut)
        fut = asyncio.get_running_loop().create_future()
        self._inflight[key] = fut
        try:
            res = await self._settle(payload, requirements, v1=v1)
            fut.set_result(res)
            return res
        except BaseException as exc:
            fut.set_exception(exc)
            fut.exception()  # mark retrieved
            raise
        finally:
            self._inflight.pop(key, None)

    async def _settle(
        self, payload: PaymentPayload, requirements: PaymentRequirements, *, v1: bool
    ) -> SettleResponse:
        network = requirements.network
        verdict, checked = await self._verify(payload, requirements, v1=v1, simulate=self._simulate)
        if not verdict.is_valid or checked is None:
            return SettleResponse(False, "", network, payer=verdict.payer,
                                  error_reason=verdict.invalid_reason, error_message=verdict.invalid_message)
        net = self._nets[network]
        a = checked.payload.authorization
        data = token.transfer_with_authorization(
            a.from_, a.to, a.value, a.valid_after, a.valid_before, a.nonce, checked.payload.signature
        )
        sender = net.sender()
        try:
            tx_hash = await sender.send(requirements.asset, data)
        except ChainRevert as exc:
            return SettleResponse(False, "", network, payer=checked.payer,
                                  error_reason=map_revert(exc.reason), error_message=exc.reason)
        except ChainError as exc:
            return SettleResponse(False, "", network, payer=checked.payer,
                                  error_reason="settlement_unresolved", error_message=f"send failed: {exc}")
        try:
            receipt = await net.chain.wait_for_receipt(tx_hash, timeout=self._receipt_timeout)
        except ChainError as exc:
            return SettleResponse(False, tx_hash, network, payer=checked.payer,
                                  error_reason="settlement_unresolved", error_message=f"no receipt yet: {exc}")
        return settle_outcome(receipt, requirements, checked.payload, checked.payer)


def settle_outcome(
    receipt: Receipt, requirements: PaymentRequirements, p: ExactEvmPayload, payer: str
) -> SettleResponse:
    """Judge a mined settlement: success only with status 1 and the exact ``Transfer`` log."""
    network = requirements.network
    if receipt.status != 1:
        return SettleResponse(False, receipt.transaction_hash, network, payer=payer,
                              error_reason="transaction_failed", error_message="settlement transaction reverted")
    a = p.authorization
    want = (keccak256(b"Transfer(address,address,uint256)"), bytes(12) + address_bytes(a.from_),
            bytes(12) + address_bytes(a.to))
    for log in receipt.logs:
        if (log.address.lower() == requirements.asset.lower() and log.topics[:3] == want
                and int.from_bytes(log.data[:32], "big") == a.value):
            return SettleResponse(True, receipt.transaction_hash, network, payer=payer,
                                  amount=a.value)
    return SettleResponse(False, receipt.transaction_hash, network, payer=payer,
                          error_reason="invalid_transaction_state",
                          error_message="transaction succeeded without the expected Transfer log")
