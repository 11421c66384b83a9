"""Permit2 on EVM, shared by ``exact`` (``assetTransferMethod: permit2``) and ``upto``: the facilitator's checks
(digest §5.2, §7.1; the upstream exact §Permit2 and upto EVM specs) and the settlement intent.

Verification, cheap first: scheme and network, payload shape, spender (the scheme's proxy), recipient, the
facilitator named in an upto witness, deadline (6 s of slack) and ``validAfter``, amount, token, then the
signature (ECDSA here; EIP-1271 wallets on chain). On chain, in one round of concurrent reads: the Permit2
nonce bit, the payer's ERC-20 allowance to Permit2 (missing: ``permit2_allowance_required`` naming the
approval to send; the seller answers 412), the balance; then a simulation of the proxy's ``settle`` from the
key that will send it, whose gas estimate the settlement uses.

Settlement is the engine's (``paywire.settlement.engine``) over the EVM rail: claim in the store, record,
broadcast, receipt; the rail knows a Permit2 authorization is used from Permit2's nonce bitmap.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from paywire.chain.base import Chain
from paywire.chain.rail import EvmNetwork, EvmRail
from paywire.chain.tx import TxSender
from paywire.errors import ChainError, ChainRevert, WireError
from paywire.evm import permit2 as p2
from paywire.evm import token
from paywire.evm.approval_tx import ERC20_APPROVAL_GAS_SPONSORING, SponsoredApproval, approval_from_extensions
from paywire.evm.crypto import address_bytes, recover_address, to_checksum
from paywire.settlement.engine import EXPIRY_MARGIN, Plan, Reasons, SettlementEngine
from paywire.settlement.rail import Intent
from paywire.store.settlements import Settlement, SettlementStore, requirements_digest, settlement_id
from paywire.x402.models import PaymentPayload, PaymentRequirements, SettleResponse, VerifyResponse
from paywire.x402.networks import evm_chain_id

log = logging.getLogger(__name__)

__all__ = [
    "EXACT",
    "UPTO",
    "Permit2Facilitator",
    "Permit2Kind",
    "check_offchain",
    "intent_from_record",
    "intent_of",
    "reason_for_revert",
]

DEADLINE_BUFFER_SECONDS = 6
ALLOWANCE_REQUIRED = "permit2_allowance_required"
SETTLEMENT_EXCEEDS_AMOUNT = "invalid_upto_evm_payload_settlement_exceeds_amount"


@dataclass(frozen=True, slots=True)
class Permit2Kind:
    """What differs between exact and upto: the scheme, its proxy, whether the witness names the facilitator,
    and the reason spellings of the official SDK for the checks that differ."""

    scheme: str
    proxy: str
    upto: bool
    bad_scheme: str
    bad_network: str
    no_balance: str
    failed: str


EXACT = Permit2Kind("exact", p2.EXACT_PROXY_ADDRESS, False, "unsupported_scheme", "network_mismatch",
                    "invalid_exact_evm_insufficient_balance", "transaction_failed")
UPTO = Permit2Kind("upto", p2.UPTO_PROXY_ADDRESS, True, "invalid_upto_evm_scheme",
                   "invalid_upto_evm_network_mismatch", "permit2_insufficient_balance",
                   "invalid_upto_evm_transaction_failed")

_REVERTS: dict[str, str] = {
    "InvalidNonce": "permit2_invalid_nonce",
    "SignatureExpired": "permit2_deadline_expired",
    "InvalidSignature": "invalid_permit2_signature",
    "InvalidSigner": "invalid_permit2_signature",
    "InvalidSignatureLength": "invalid_permit2_signature",
    "InvalidContractSignature": "invalid_permit2_signature",
    "InvalidAmount": "permit2_invalid_amount",
    "AmountExceedsPermitted": "upto_amount_exceeds_permitted",
    "UnauthorizedFacilitator": "upto_unauthorized_facilitator",
    "InvalidDestination": "permit2_invalid_destination",
    "InvalidOwner": "permit2_invalid_owner",
    "PaymentTooEarly": "permit2_payment_too_early",
    "Permit2612AmountMismatch": "permit2_2612_amount_mismatch",
    "TransferFromFailed": ALLOWANCE_REQUIRED,
}


def reason_for_revert(reason: str, data: bytes = b"", *, default: str = "transaction_failed") -> str:
    """x402 reason for a revert of Permit2 or a proxy (custom error by selector, else by name in ``reason``)."""
    if not data and reason.startswith("0x") and len(reason) == 10:  # an unregistered custom error's selector
        data = bytes.fromhex(reason[2:])
    name = p2.error_name(data) or reason.split("(", 1)[0]
    return _REVERTS.get(name, default)


def approval_message(payer: str, token_address: str, amount: int, allowance: int) -> str:
    """What a payer without a Permit2 allowance must do, in words."""
    return (f"{payer} has not approved Permit2 ({p2.PERMIT2_ADDRESS}) to spend token {token_address} "
            f"(allowance {allowance} < {amount}): send approve({p2.PERMIT2_ADDRESS}, <amount>) on the token once, "
            "then pay again")


@dataclass(frozen=True, slots=True)
class Checked:
    """What the pure checks learned."""

    payload: p2.Permit2Payload
    digest: bytes
    signer_ok: bool  # ECDSA recovered ``from``; False: an EIP-1271 check on chain decides
    payer: str
    permit: p2.Eip2612Permit | None = None  # eip2612GasSponsoring, when it checked out
    permit_error: str | None = None  # why the extension's permit cannot be used (matters without an allowance)
    approval: SponsoredApproval | None = None  # erc20ApprovalGasSponsoring, when it checked out (off chain)
    approval_error: str | None = None


def sponsored_permit(payload: PaymentPayload, a: p2.Permit2Authorization, now: int,
                     ) -> tuple[p2.Eip2612Permit | None, str | None]:
    """The payload's ``eip2612GasSponsoring`` permit if it can approve Permit2 for this authorization, else
    (None, the reason) — (None, None) when there is none. Pure."""
    try:
        permit = p2.Eip2612Permit.from_extensions(payload.extensions)
    except WireError:
        return None, "invalid_eip2612_extension_format"
    if permit is None:
        return None, None
    if permit.owner.lower() != a.from_.lower():
        return None, "eip2612_from_mismatch"
    if permit.token.lower() != a.token.lower():
        return None, "eip2612_asset_mismatch"
    if permit.spender.lower() != p2.PERMIT2_ADDRESS.lower():
        return None, "eip2612_spender_not_permit2"
    if permit.deadline < now + DEADLINE_BUFFER_SECONDS:
        return None, "eip2612_deadline_expired"
    if permit.value != a.amount:
        return None, "permit2_2612_amount_mismatch"
    return permit, None


def check_offchain(
    kind: Permit2Kind, payload: PaymentPayload, requirements: PaymentRequirements, now: int, *,
    facilitators: Sequence[str] = (), maximum: int | None = None, time_buffer: float = DEADLINE_BUFFER_SECONDS,
) -> VerifyResponse | Checked:
    """Every check that needs no chain. ``maximum``: the authorized amount to compare with ``permitted.amount``
    (default ``requirements.amount``; upto settles pass the signed maximum here). Pure."""
    if payload.accepted.scheme != kind.scheme or requirements.scheme != kind.scheme:
        return VerifyResponse(False, kind.bad_scheme, invalid_message=f"scheme is not {kind.scheme}")
    if payload.accepted.network != requirements.network:
        return VerifyResponse(False, kind.bad_network, invalid_message="accepted.network differs")
    try:
        chain_id = evm_chain_id(requirements.network)
        p = p2.Permit2Payload.from_wire(payload.payload)
    except WireError as exc:
        return VerifyResponse(False, "invalid_permit2_payload_format", invalid_message=str(exc))
    a = p.authorization
    payer = to_checksum(a.from_)

    def bad(reason: str, message: str | None = None) -> VerifyResponse:
        return VerifyResponse(False, reason, payer=payer, invalid_message=message)

    if a.spender.lower() != kind.proxy.lower():
        return bad("invalid_permit2_spender", f"spender must be the {kind.scheme} Permit2 proxy {kind.proxy}")
    if a.to.lower() != requirements.pay_to.lower():
        return bad("invalid_permit2_recipient_mismatch")
    if kind.upto:
        if a.facilitator is None or a.facilitator.lower() not in {f.lower() for f in facilitators}:
            return bad("upto_facilitator_mismatch", "witness.facilitator is not an address of this facilitator")
    elif a.facilitator is not None:
        return bad("invalid_permit2_payload_format", "an exact witness has no facilitator")
    if a.deadline < now + time_buffer:
        return bad("permit2_deadline_expired")
    if a.valid_after > now:
        return bad("permit2_not_yet_valid")
    if a.amount != (requirements.amount if maximum is None else maximum):
        return bad("permit2_amount_mismatch")
    if a.token.lower() != requirements.asset.lower():
        return bad("permit2_token_mismatch")
    digest = a.digest(chain_id)
    ok = len(p.signature) == 65 and recover_address(digest, p.signature) == address_bytes(a.from_)
    permit, permit_error = sponsored_permit(payload, a, now)
    approval, approval_error = approval_from_extensions(payload.extensions, a.from_, a.token, chain_id, a.amount)
    return Checked(p, digest, ok, payer, permit, permit_error, approval, approval_error)


def _nonce_hex(nonce: int) -> str:
    return f"0x{nonce:064x}"


def calldata(p: p2.Permit2Payload, amount: int, permit: p2.Eip2612Permit | None = None) -> bytes:
    """The proxy call that settles ``amount`` (upto) or the signed amount (exact); ``settleWithPermit``
    when an EIP-2612 permit approves Permit2 in the same transaction."""
    return p2.settle_calldata(p.authorization, amount, p.signature, permit)


def intent_of(kind: Permit2Kind, p: p2.Permit2Payload, requirements: PaymentRequirements, amount: int,
              permit: p2.Eip2612Permit | None = None, extensions: Mapping[str, Any] | None = None) -> Intent:
    """The engine's view: ``amount`` from payer to payee through the proxy (the record rebuilds it)."""
    a = p.authorization
    wire = requirements.to_wire()
    record: dict[str, Any] = {"permit2": p.to_wire(), "scheme": kind.scheme, "amount": str(amount),
                              "requirements": wire}
    if permit is not None and extensions is not None:
        record["extensions"] = {p2.EIP2612_GAS_SPONSORING: extensions[p2.EIP2612_GAS_SPONSORING]}
    return Intent(
        network=requirements.network, asset=requirements.asset, payer=to_checksum(a.from_), pay_to=a.to,
        amount=amount, nonce=_nonce_hex(a.nonce), valid_before=a.deadline + 1, target=kind.proxy,
        payload=calldata(p, amount, permit), digest=requirements_digest(wire), record=record,
    )


def intent_from_record(row: Settlement) -> Intent:
    """Rebuild any EVM settlement intent from its record: Permit2 ones here, EIP-3009 ones by ``exact``."""
    rec = row.request
    if "permit2" not in rec:
        from paywire.schemes.evm_exact.facilitator import intent_from_record as eip3009_intent

        return eip3009_intent(row)
    kind = UPTO if rec.get("scheme") == "upto" else EXACT
    p = p2.Permit2Payload.from_wire(rec["permit2"])
    extensions = rec.get("extensions")
    permit = p2.Eip2612Permit.from_extensions(extensions) if extensions else None
    intent = intent_of(kind, p, PaymentRequirements.from_wire(rec["requirements"]), int(rec["amount"]), permit,
                       extensions)
    return dataclasses.replace(intent, digest=row.requirements_digest)


class Permit2Facilitator:
    """The facilitator side of a Permit2 scheme (``kind``: :data:`EXACT` or :data:`UPTO`); options as
    ``ExactEvmFacilitator``'s. ``engine``: share another facilitator's settlement engine (one store, one
    reconciler)."""

    def __init__(
        self,
        kind: Permit2Kind,
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
        engine: SettlementEngine | None = None,
    ) -> None:
        self.kind = kind
        self.scheme = kind.scheme
        self.extensions = (p2.EIP2612_GAS_SPONSORING, ERC20_APPROVAL_GAS_SPONSORING)
        self._approval_locks: dict[str, asyncio.Lock] = {}
        self._receipt_timeout = receipt_timeout
        self.v2_only = kind.upto  # /supported: x402 v1 has no upto
        self.network_pattern = "eip155:*"
        nets = networks.values() if isinstance(networks, Mapping) else networks
        self._nets: dict[str, EvmNetwork] = {n.network: n for n in nets}
        self._simulate = simulate
        self._clock = clock
        if engine is None:
            rails = {name: EvmRail(n, gas_limit=gas_limit, log_lookback_blocks=log_lookback_blocks)
                     for name, n in self._nets.items()}
            reasons = Reasons(expired="permit2_deadline_expired", reused="permit2_invalid_nonce",
                              revert=lambda r: reason_for_revert(r, default=kind.failed))
            engine = SettlementEngine(
                rails, store=store, load=intent_from_record, reasons=reasons, receipt_timeout=receipt_timeout,
                settle_wait=settle_wait, lease_seconds=lease_seconds, stuck_after=stuck_after,
                poll_interval=poll_interval, expiry_margin=expiry_margin, clock=clock,
            )
        self.engine = engine
        # what /settle would refuse as too late to broadcast, /verify refuses too (a seller must not serve it)
        self._time_buffer = max(float(DEADLINE_BUFFER_SECONDS), engine.expiry_margin)

    @property
    def store(self) -> SettlementStore | None:
        return self.engine.store

    # -- registry facts -------------------------------------------------------------------------
    def networks(self) -> Sequence[str]:
        return list(self._nets)

    def signer_addresses(self) -> Sequence[str]:
        return sorted({s.address for n in self._nets.values() for s in n.all_senders})

    def kind_extra(self, network: str) -> Mapping[str, Any] | None:
        """upto: the address clients bind into the witness (the key that will send the settlement): the fleet
        key when configured, so every instance of a fleet names the same one."""
        net = self._nets.get(network)
        named = net.named if net is not None else None
        if not self.kind.upto or named is None:
            return None
        return {"facilitatorAddress": named.address}

    def settlement_key(self, payload: PaymentPayload, requirements: PaymentRequirements) -> str | None:
        try:
            a = p2.Permit2Payload.from_wire(payload.payload).authorization
        except WireError:
            return None
        return settlement_id(requirements.network, requirements.asset, a.from_, _nonce_hex(a.nonce))

    # -- verify ---------------------------------------------------------------------------------
    async def verify(
        self, payload: PaymentPayload, requirements: PaymentRequirements, *, v1: bool = False
    ) -> VerifyResponse:
        return (await self._verify(payload, requirements, None, simulate=self._simulate))[0]

    async def _verify(
        self, payload: PaymentPayload, requirements: PaymentRequirements, settle_amount: int | None, *,
        simulate: bool, use_permit: bool | None = None,
    ) -> tuple[VerifyResponse, Checked | None, Plan | None]:
        """Verify for the maximum (``settle_amount`` None) or before settling ``settle_amount``; a valid
        verdict comes with the plan to send (the key: upto's witness facilitator; the gas estimate)."""
        net = self._nets.get(requirements.network)
        facilitators = [s.address for s in net.all_senders] if net is not None else []
        maximum = None
        if settle_amount is not None and self.kind.upto:
            try:
                maximum = p2.Permit2Payload.from_wire(payload.payload).authorization.amount
            except WireError:
                maximum = None
        checked = check_offchain(self.kind, payload, requirements, int(self._clock()), facilitators=facilitators,
                                 maximum=maximum, time_buffer=self._time_buffer)
        if isinstance(checked, VerifyResponse):
            return checked, None, None
        if net is None:
            return VerifyResponse(False, "invalid_network", payer=checked.payer,
                                  invalid_message=f"this facilitator does not settle on {requirements.network}"), None, None
        a = checked.payload.authorization
        sender = net.sender_for(a.facilitator) if a.facilitator is not None else net.sender()
        amount = a.amount if settle_amount is None else settle_amount
        try:
            bad, gas = await self._check_onchain(net.chain, checked, amount, sender, simulate=simulate,
                                                 use_permit=use_permit)
        except ChainError as exc:
            return VerifyResponse(False, "unexpected_verify_error", payer=checked.payer,
                                  invalid_message=f"chain unavailable: {exc}"), None, None
        if bad is not None:
            return VerifyResponse(False, bad[0], payer=checked.payer, invalid_message=bad[1]), None, None
        plan = Plan(sender.address, gas) if sender is not None else None
        return VerifyResponse(True, payer=checked.payer), checked, plan

    async def _check_onchain(
        self, chain: Chain, c: Checked, amount: int, sender: TxSender | None, *, simulate: bool,
        use_permit: bool | None = None,
    ) -> tuple[tuple[str, str] | None, int | None]:
        """``use_permit``: simulate ``settleWithPermit`` (True) or ``settle`` (False) as the settlement will
        send it; None (verify): the permit is used when the allowance is short."""
        a, sig = c.payload.authorization, c.payload.signature
        if not c.signer_ok:
            code = await chain.get_code(a.from_)
            if not code:
                return ("invalid_permit2_signature", "signature does not recover to permit2Authorization.from"), None
            try:
                out = await chain.call(a.from_, token.is_valid_signature(c.digest, sig))
            except ChainRevert:
                out = b""
            if out[:4] != token.EIP1271_MAGIC:
                return ("invalid_permit2_signature", "EIP-1271 wallet rejected the signature"), None
        word, allowed, balance = await asyncio.gather(
            chain.call(p2.PERMIT2_ADDRESS, p2.nonce_bitmap(a.from_, a.nonce)),
            chain.call(a.token, p2.allowance(a.from_)),
            chain.call(a.token, token.balance_of(a.from_)),
        )
        if p2.nonce_used(token.decode_uint(word), a.nonce):
            return ("permit2_invalid_nonce", "this Permit2 nonce was already used"), None
        allowance = token.decode_uint(allowed)
        short = allowance < a.amount
        permit = c.permit if (use_permit if use_permit is not None else short) else None
        if short and permit is None:
            if c.approval is not None and sender is not None:  # erc20ApprovalGasSponsoring: relayed at settle
                if token.decode_uint(balance) < a.amount:
                    return (self.kind.no_balance, "payer balance is below the authorized amount"), None
                return await self._check_approval(chain, c.approval, sender), None
            if c.permit_error is not None:
                return (c.permit_error, "the eip2612GasSponsoring permit cannot approve Permit2"), None
            if c.approval_error is not None:
                return (c.approval_error, "the erc20ApprovalGasSponsoring transaction cannot approve Permit2"), None
            return (ALLOWANCE_REQUIRED, approval_message(to_checksum(a.from_), a.token, a.amount, allowance)), None
        if token.decode_uint(balance) < a.amount:
            return (self.kind.no_balance, "payer balance is below the authorized amount"), None
        if not simulate or sender is None or amount == 0:
            return None, None
        data = calldata(c.payload, amount, permit)
        try:
            gas = await sender.estimate(self.kind.proxy, data)
        except ChainRevert as exc:
            return (reason_for_revert(exc.reason, exc.data, default=self.kind.failed), exc.reason), None
        return None, gas

    async def _check_approval(self, chain: Chain, ap: SponsoredApproval, sender: TxSender,
                              ) -> tuple[str, str] | None:
        """The chain-dependent checks of a sponsored approval: its nonce is the payer's next, its fees are within
        twice what this facilitator pays now (so the gas it may fund is bounded), and ``approve`` would not
        revert when sent by the payer."""
        tx = ap.tx
        nonce, (max_fee, _tip) = await asyncio.gather(chain.get_transaction_count(tx.sender, "pending"),
                                                      sender.fees())
        if tx.nonce != nonce:
            return ("erc20_approval_tx_nonce_mismatch",
                    f"the approval's nonce {tx.nonce} is not the payer's next nonce {nonce}")
        if tx.max_fee > 2 * max_fee:
            return ("erc20_approval_tx_fee_too_high",
                    f"the approval's maxFeePerGas {tx.max_fee} is above twice the network's {max_fee}")
        try:
            await chain.call(tx.to, tx.data, sender=tx.sender)
        except ChainRevert as exc:
            return ("erc20_approval_tx_failed", f"approve would revert: {exc.reason}")
        return None

    async def _relay_approval(self, payload: PaymentPayload, p: p2.Permit2Payload, network: str) -> str | None:
        """erc20ApprovalGasSponsoring before settling: when the payer's allowance is still short and its signed
        approval checks out, fund the gas it lacks (at most the approval's own ``gas × maxFeePerGas``, both
        bounded) and broadcast the approval; None when done or not needed, else the failure reason. One payer at
        a time per process, so a retried settle does not fund twice."""
        a = p.authorization
        net = self._nets.get(network)
        if net is None or not payload.extensions or ERC20_APPROVAL_GAS_SPONSORING not in payload.extensions:
            return None
        lock = self._approval_locks.setdefault(a.from_.lower(), asyncio.Lock())
        async with lock:
            try:
                chain = net.chain
                if token.decode_uint(await chain.call(a.token, p2.allowance(a.from_))) >= a.amount:
                    return None
                ap, why = approval_from_extensions(payload.extensions, a.from_, a.token, await chain.chain_id(),
                                                   a.amount)
                if ap is None:
                    return why
                sender = net.sender()
                bad = await self._check_approval(chain, ap, sender)
                if bad is not None:
                    return bad[0]
                deficit = ap.tx.cost - await chain.get_balance(ap.tx.sender)
                if deficit > 0:
                    funded = await chain.wait_for_receipt(await sender.send(ap.tx.sender, b"", deficit, 21_000),
                                                          timeout=self._receipt_timeout)
                    if funded.status != 1:
                        return "erc20_approval_broadcast_failed"
                approved = await chain.wait_for_receipt(await chain.send_raw_transaction(ap.tx.raw),
                                                        timeout=self._receipt_timeout)
                return None if approved.status == 1 else "erc20_approval_tx_failed"
            except (ChainError, TimeoutError):
                log.warning("erc20ApprovalGasSponsoring relay failed for %s", a.from_, exc_info=True)
                return "erc20_approval_broadcast_failed"
            finally:
                if len(self._approval_locks) > 10_000:  # bounded: a payer's lock matters only while it settles
                    self._approval_locks.clear()

    # -- settle ---------------------------------------------------------------------------------
    async def settle(
        self, payload: PaymentPayload, requirements: PaymentRequirements, *, v1: bool = False
    ) -> SettleResponse:
        """Settle once: exact moves the signed amount; upto moves ``requirements.amount`` (the actual charge,
        at most the signed maximum; 0 settles nothing and sends no transaction)."""
        try:
            p = p2.Permit2Payload.from_wire(payload.payload)
        except WireError:
            verdict = (await self._verify(payload, requirements, None, simulate=False))[0]
            return SettleResponse(False, "", requirements.network, payer=verdict.payer,
                                  error_reason=verdict.invalid_reason, error_message=verdict.invalid_message)
        amount = requirements.amount if self.kind.upto else p.authorization.amount
        payer = to_checksum(p.authorization.from_)
        if self.kind.upto and amount > p.authorization.amount:
            return SettleResponse(False, "", requirements.network, payer=payer, error_reason=SETTLEMENT_EXCEEDS_AMOUNT,
                                  error_message=f"settle amount {amount} exceeds the authorized {p.authorization.amount}")
        if amount == 0:
            verdict = (await self._verify(payload, requirements, 0, simulate=False))[0]
            if not verdict.is_valid:
                return SettleResponse(False, "", requirements.network, payer=payer,
                                      error_reason=verdict.invalid_reason, error_message=verdict.invalid_message)
            return SettleResponse(True, "", requirements.network, payer=payer, amount=0)

        relay_error = await self._relay_approval(payload, p, requirements.network)
        if relay_error is not None:
            return SettleResponse(False, "", requirements.network, payer=payer, error_reason=relay_error,
                                  error_message="the erc20ApprovalGasSponsoring approval could not be relayed")
        permit = await self._permit_to_send(payload, p, requirements.network)

        async def prepare() -> tuple[VerifyResponse, Plan | None]:
            verdict, _checked, plan = await self._verify(payload, requirements, amount, simulate=self._simulate,
                                                         use_permit=permit is not None)
            return verdict, plan

        intent = intent_of(self.kind, p, requirements, amount, permit, payload.extensions)
        return await self.engine.settle(intent, prepare)

    async def _permit_to_send(self, payload: PaymentPayload, p: p2.Permit2Payload, network: str,
                              ) -> p2.Eip2612Permit | None:
        """The sponsored EIP-2612 permit to send with the settlement: only a usable one, and only while the
        payer's allowance to Permit2 is short (an approval made meanwhile saves the permit's gas)."""
        a = p.authorization
        permit, _ = sponsored_permit(payload, a, int(self._clock()))
        net = self._nets.get(network)
        if permit is None or net is None:
            return None
        try:
            allowed = token.decode_uint(await net.chain.call(a.token, p2.allowance(a.from_)))
        except ChainError:
            return permit
        return permit if allowed < a.amount else None

    def response_for(self, row: Settlement) -> SettleResponse:
        return self.engine.response_for(row)

    async def reconcile_once(self, *, limit: int = 200) -> dict[str, int]:
        return await self.engine.reconcile_once(limit=limit)

    async def reconcile_row(self, row: Settlement) -> str:
        return await self.engine.reconcile_row(row)
