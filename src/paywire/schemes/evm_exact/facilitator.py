"""Facilitator side of ``exact`` on EVM via EIP-3009: verify (cheap checks first), then settle exactly once.
Permit2 payloads (``assetTransferMethod: permit2``) go to ``paywire.schemes.evm_permit2`` over the same engine.

Verification is here: the off-chain checks (``check_offchain``), then the chain (contract-wallet signatures,
a simulated ``transferWithAuthorization`` that also estimates the gas to send it with, the reads that name
a revert). Settlement is the rail-agnostic engine's (``paywire.settlement.engine``: claim in the store,
record before broadcast, poll, reconcile) over the EVM rail (``paywire.chain.rail.EvmRail``); this module
describes each authorization to it as an ``Intent``.

Without a store (library use, tests) concurrent settles in one process still share one transaction, and the
token's single-use nonce keeps a replay from moving money twice.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from paywire.chain.base import Chain
from paywire.chain.rail import EvmNetwork, EvmRail
from paywire.chain.tx import TxSender
from paywire.errors import ChainError, ChainRevert, WireError
from paywire.evm import token
from paywire.evm.crypto import address_bytes, recover_address, to_checksum
from paywire.evm.eip712 import domain_separator, transfer_authorization_digest
from paywire.evm.permit2 import is_permit2_payload
from paywire.schemes.evm_exact.payload import ExactEvmPayload
from paywire.settlement.engine import EXPIRY_MARGIN, Plan, Reasons, SettlementEngine
from paywire.settlement.rail import Intent
from paywire.store.settlements import Settlement, SettlementStore, requirements_digest, settlement_id
from paywire.x402.models import (
    PaymentPayload,
    PaymentRequirements,
    SettleResponse,
    VerifyResponse,
)
from paywire.x402.networks import evm_chain_id

__all__ = [
    "TIME_BUFFER_SECONDS",
    "CheckedAuthorization",
    "EvmNetwork",
    "ExactEvmFacilitator",
    "check_offchain",
    "intent_of",
    "map_revert",
]

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


@dataclass(frozen=True, slots=True)
class CheckedAuthorization:
    """What the pure checks learned: the parsed payload, its digest and the recovered signer."""

    payload: ExactEvmPayload
    digest: bytes
    signer_ok: bool  # ECDSA recovered ``from``; False means a contract-wallet check is still needed
    payer: str


def check_offchain(
    payload: PaymentPayload, requirements: PaymentRequirements, now: int, *, v1: bool = False,
    parsed: ExactEvmPayload | None = None, time_buffer: float = TIME_BUFFER_SECONDS,
) -> VerifyResponse | CheckedAuthorization:
    """Every check that needs no chain, in the order of digest §5.1 (cheap first). Pure. ``parsed``: the
    ``ExactEvmPayload`` of ``payload.payload`` when the caller parsed it already (settling does);
    ``time_buffer``: seconds ``validBefore`` must be ahead of ``now`` (at least the spec's 6)."""
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
        p = parsed if parsed is not None else ExactEvmPayload.from_wire(payload.payload)
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
    if a.valid_before < now + time_buffer:
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


# -- what the settlement engine is told ---------------------------------------------------------------------

EXPIRED = "invalid_exact_evm_payload_authorization_valid_before"
def _revert_reason(reason: str) -> str:
    from paywire.schemes.evm_permit2 import reason_for_revert

    found = reason_for_revert(reason, default="")
    return found or map_revert(reason)


REASONS = Reasons(expired=EXPIRED, reused="invalid_exact_evm_nonce_already_used", revert=_revert_reason)


def intent_of(payload: ExactEvmPayload, requirements: PaymentRequirements, *, v1: bool = False) -> Intent:
    """The engine's view of an authorization: who pays whom, and the ``transferWithAuthorization`` call."""
    a = payload.authorization
    wire = requirements.wire_view()  # encoded into the record and its digest, never changed
    record = {
        "authorization": {
            "from": to_checksum(a.from_), "to": to_checksum(a.to), "value": str(a.value),
            "validAfter": str(a.valid_after), "validBefore": str(a.valid_before), "nonce": "0x" + a.nonce.hex(),
        },
        "signature": "0x" + payload.signature.hex(),
        "requirements": wire,
        "v1": v1,
    }
    return Intent(
        network=requirements.network, asset=requirements.asset, payer=to_checksum(a.from_), pay_to=a.to,
        amount=a.value, nonce="0x" + a.nonce.hex(), valid_before=a.valid_before, target=requirements.asset,
        payload=token.transfer_with_authorization(a.from_, a.to, a.value, a.valid_after, a.valid_before, a.nonce,
                                                  payload.signature),
        digest=requirements_digest(wire), record=record,
    )


def intent_from_record(row: Settlement) -> Intent:
    """Rebuild the intent of a stored settlement (what ``intent_of`` recorded with the claim)."""
    rec = row.request
    p = ExactEvmPayload.from_wire({"authorization": rec["authorization"], "signature": rec["signature"]})
    intent = intent_of(p, PaymentRequirements.from_wire(rec["requirements"]), v1=bool(rec.get("v1", False)))
    return dataclasses.replace(intent, digest=row.requirements_digest)


class ExactEvmFacilitator:
    """``exact`` × ``eip155:*`` for the facilitator role.

    ``store``: a ``SettlementStore`` (or its URL, e.g. ``"sqlite:///settlements.db"``, opened and migrated on
    first use) for exactly-once settlement with crash recovery (see ``paywire.settlement.engine``);
    ``None`` keeps no record. ``receipt_timeout``: how long one ``/settle`` waits for its transaction before
    answering ``settlement_pending``; ``settle_wait``: how long a duplicate settle waits for an in-flight one
    (default ``receipt_timeout + 5``); ``lease_seconds``: how long a claim is owned before another instance
    may take it over (default ``receipt_timeout + 30``); ``stuck_after``: seconds before a pending
    transaction is replaced with higher fees by the reconciler; ``gas_limit``: fixed gas per settlement
    (default: estimate); ``expiry_margin``: no settlement transaction is broadcast later than this many
    seconds (by ``clock``) before its authorization's ``validBefore``: it ends expired, unsent.
    """

    scheme = "exact"
    network_pattern = "eip155:*"

    def __init__(
        self,
        networks: Mapping[str, EvmNetwork] | Sequence[EvmNetwork],
        *,
        store: SettlementStore | str | None = None,
        simulate: bool = True,
        receipt_timeout: float = 60.0,
        settle_wait: float | None = None,
        lease_seconds: float | None = None,
        stuck_after: float = 60.0,
        gas_limit: int | None = None,
        poll_interval: float = 0.05,
        log_lookback_blocks: int = 100_000,
        clock: Callable[[], float] = time.time,
        expiry_margin: float = EXPIRY_MARGIN,
    ) -> None:
        nets = networks.values() if isinstance(networks, Mapping) else networks
        self._nets: dict[str, EvmNetwork] = {n.network: n for n in nets}
        self._simulate = simulate
        self._clock = clock
        # what /settle would refuse as too late to broadcast, /verify refuses too (a seller must not serve it)
        self._time_buffer = max(float(TIME_BUFFER_SECONDS), expiry_margin)
        rails = {name: EvmRail(n, gas_limit=gas_limit, log_lookback_blocks=log_lookback_blocks)
                 for name, n in self._nets.items()}
        from paywire.schemes.evm_permit2 import EXACT, Permit2Facilitator
        from paywire.schemes.evm_permit2 import intent_from_record as any_intent

        self.engine = SettlementEngine(
            rails, store=store, load=any_intent, reasons=REASONS, receipt_timeout=receipt_timeout,
            settle_wait=settle_wait, lease_seconds=lease_seconds, stuck_after=stuck_after,
            poll_interval=poll_interval, expiry_margin=expiry_margin, clock=clock,
        )
        # assetTransferMethod "permit2": the same engine (one store, one reconciler), Permit2's checks
        self.permit2 = Permit2Facilitator(EXACT, self._nets, simulate=simulate, clock=clock, engine=self.engine)
        self.extensions = self.permit2.extensions  # eip2612GasSponsoring for Permit2 payments

    @property
    def store(self) -> SettlementStore | None:
        return self.engine.store

    # -- registry facts -------------------------------------------------------------------------
    def networks(self) -> Sequence[str]:
        return list(self._nets)

    def signer_addresses(self) -> Sequence[str]:
        return sorted({s.address for n in self._nets.values() for s in n.senders})

    def kind_extra(self, network: str) -> Mapping[str, Any] | None:
        return None

    def settlement_key(self, payload: PaymentPayload, requirements: PaymentRequirements) -> str | None:
        """The settlement record id of this payment (``GET /settlements/{id}``), or None if unparseable."""
        if is_permit2_payload(payload.payload):
            return self.permit2.settlement_key(payload, requirements)
        try:
            a = ExactEvmPayload.from_wire(payload.payload).authorization
        except WireError:
            return None
        return settlement_id(requirements.network, requirements.asset, a.from_, a.nonce)

    # -- verify ---------------------------------------------------------------------------------
    async def verify(
        self, payload: PaymentPayload, requirements: PaymentRequirements, *, v1: bool = False
    ) -> VerifyResponse:
        if not v1 and is_permit2_payload(payload.payload):
            return await self.permit2.verify(payload, requirements)
        res = await self._verify(payload, requirements, v1=v1, simulate=self._simulate)
        return res[0]

    async def _verify(
        self, payload: PaymentPayload, requirements: PaymentRequirements, *, v1: bool, simulate: bool,
        gas_for: TxSender | None = None, parsed: ExactEvmPayload | None = None, calldata: bytes | None = None,
    ) -> tuple[VerifyResponse, CheckedAuthorization | None, int | None]:
        """Verify; with ``gas_for`` (settling) the simulation is an ``eth_estimateGas`` from that key, whose
        result (with the sender's margin) is returned as the gas limit to send with. ``parsed``: the payload,
        already parsed by the caller; ``calldata``: its ``transferWithAuthorization`` call, already encoded."""
        checked = check_offchain(payload, requirements, int(self._clock()), v1=v1, parsed=parsed,
                                 time_buffer=self._time_buffer)
        if isinstance(checked, VerifyResponse):
            return checked, None, None
        net = self._nets.get(requirements.network)
        if net is None:
            return VerifyResponse(False, "invalid_network", payer=checked.payer,
                                  invalid_message=f"this facilitator does not settle on {requirements.network}"), None, None
        try:
            bad, gas = await self._check_onchain(net, checked, requirements, simulate=simulate, gas_for=gas_for,
                                                 calldata=calldata)
        except ChainError as exc:
            return VerifyResponse(False, "unexpected_verify_error", payer=checked.payer,
                                  invalid_message=f"chain unavailable: {exc}"), None, None
        if bad is not None:
            return VerifyResponse(False, bad[0], payer=checked.payer, invalid_message=bad[1]), None, None
        return VerifyResponse(True, payer=checked.payer), checked, gas

    async def _check_onchain(
        self, net: EvmNetwork, c: CheckedAuthorization, req: PaymentRequirements, *, simulate: bool,
        gas_for: TxSender | None = None, calldata: bytes | None = None,
    ) -> tuple[tuple[str, str] | None, int | None]:
        a = c.payload.authorization
        chain, asset = net.chain, req.asset
        if not c.signer_ok:
            sig = c.payload.signature
            code = await chain.get_code(a.from_)
            if not code:
                if sig.endswith(token.ERC6492_MAGIC):
                    return ("invalid_exact_evm_payload_undeployed_smart_wallet",
                            "ERC-6492 wallet deployment is not enabled on this facilitator"), None
                return ("invalid_exact_evm_payload_signature", "signature does not recover to authorization.from"), None
            try:
                out = await chain.call(a.from_, token.is_valid_signature(c.digest, sig))
            except ChainRevert:
                out = b""
            if out[:4] != token.EIP1271_MAGIC:
                return ("invalid_exact_evm_payload_signature", "EIP-1271 wallet rejected the signature"), None
        if simulate:
            # One call decides the common case: the simulated transfer checks time window, nonce, signature
            # and balance. Only a revert pays for the reads that name the reason (same priority as before).
            data = calldata if calldata is not None else token.transfer_with_authorization(
                a.from_, a.to, a.value, a.valid_after, a.valid_before, a.nonce, c.payload.signature
            )
            gas = None
            try:
                if gas_for is not None:
                    gas = await gas_for.estimate(asset, data)
                else:
                    await chain.call(asset, data, sender=net.senders[0].address if net.senders else None)
            except ChainRevert as exc:
                bad = await self._read_state(chain, asset, a.from_, a.nonce, a.value)
                return bad or (await self._diagnose(chain, asset, req, exc.reason), exc.reason), None
            return None, gas
        return await self._read_state(chain, asset, a.from_, a.nonce, a.value), None

    @staticmethod
    async def _read_state(chain: Chain, asset: str, payer: str, nonce: bytes, value: int) -> tuple[str, str] | None:
        used, balance = await asyncio.gather(
            chain.call(asset, token.authorization_state(payer, nonce)),
            chain.call(asset, token.balance_of(payer)),
        )
        if token.decode_bool(used):
            return ("invalid_exact_evm_nonce_already_used", "authorization nonce already used or canceled")
        if token.decode_uint(balance) < value:
            return ("invalid_exact_evm_insufficient_balance", "payer balance is below the amount")
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
        """Verify on chain and settle once through the engine (``paywire.settlement.engine``)."""
        if not v1 and is_permit2_payload(payload.payload):
            return await self.permit2.settle(payload, requirements)

        p: ExactEvmPayload | None = None
        calldata: bytes | None = None

        async def prepare() -> tuple[VerifyResponse, Plan | None]:
            net = self._nets.get(requirements.network)
            sender = net.sender() if net is not None else None
            verdict, checked, gas = await self._verify(payload, requirements, v1=v1, simulate=self._simulate,
                                                       gas_for=sender, parsed=p, calldata=calldata)
            if not verdict.is_valid or checked is None or sender is None:
                return verdict, None
            return verdict, Plan(sender.address, gas)

        try:
            p = ExactEvmPayload.from_wire(payload.payload)
        except WireError:  # verification says what is wrong with it
            verdict, _ = await prepare()
            return SettleResponse(False, "", requirements.network, payer=verdict.payer,
                                  error_reason=verdict.invalid_reason, error_message=verdict.invalid_message)
        intent = intent_of(p, requirements, v1=v1)
        calldata = intent.payload  # the simulation sends what the transaction will carry, encoded once
        return await self.engine.settle(intent, prepare)

    def response_for(self, row: Settlement) -> SettleResponse:
        """The ``SettleResponse`` a record stands for; identical for every caller that asks."""
        return self.engine.response_for(row)

    async def reconcile_once(self, *, limit: int = 200) -> dict[str, int]:
        """Resolve open records from the chain; see ``SettlementEngine.reconcile_once``."""
        return await self.engine.reconcile_once(limit=limit)

    async def reconcile_row(self, row: Settlement) -> str:
        return await self.engine.reconcile_row(row)
