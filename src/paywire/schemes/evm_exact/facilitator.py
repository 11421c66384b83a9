"""Facilitator side of ``exact`` on EVM via EIP-3009: verify (cheap checks first) and settle exactly once.

Settlement with a ``SettlementStore`` (what the ``paywire facilitator`` service always uses):

1. a settle of an authorization that already has a record answers from the record — waiting (by polling the
   store) while another request or instance is still settling it — instead of sending again;
2. otherwise verify, then *claim* the authorization in the store (a unique row per (network, asset, payer,
   nonce)) before any transaction exists;
3. sign the transaction locally, *record* the signed bytes and hash, and only then broadcast them;
4. wait for the receipt and record ``settled``/``failed``; if the chain cannot tell us, record ``unresolved``
   (or leave ``submitted``) and answer ``settlement_unresolved``/``settlement_pending`` with the hash —
   never a false failure;
5. ``reconcile_once`` (run on start and in the background) resolves open rows from the chain: receipt by
   hash, else ``authorizationState`` and the token's ``AuthorizationUsed`` log, re-broadcasting the stored
   bytes (or re-signing) when the transaction got lost while the authorization is still unused.

Without a store (library use, tests) concurrent settles in one process still share one transaction, and the
token's single-use nonce keeps a replay from moving money twice.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import os
import signal
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from paywire.chain.base import Chain, Receipt
from paywire.chain.tx import FeeCapExceeded, RecordRefused, SenderPool, SignedTx, TxSender
from paywire.errors import ChainError, ChainRevert, WireError
from paywire.evm import token
from paywire.evm.crypto import address_bytes, keccak256, recover_address, to_checksum
from paywire.evm.eip712 import domain_separator, transfer_authorization_digest
from paywire.schemes.evm_exact.payload import ExactEvmPayload
from paywire.store.db import open_database
from paywire.store.settlements import Settlement, SettlementStore, requirements_digest, settlement_id
from paywire.x402.models import (
    PaymentPayload,
    PaymentRequirements,
    SettleResponse,
    VerifyResponse,
)
from paywire.x402.networks import evm_chain_id

log = logging.getLogger(__name__)

TIME_BUFFER_SECONDS = 6  # validBefore must leave this much room for block inclusion (checklist 50)
CRASH_AFTER_SEND_ENV = "PAYWIRE_TEST_CRASH_AFTER_SEND"  # test hook: SIGKILL ourselves right after broadcasting
AUTHORIZATION_USED_TOPIC = keccak256(b"AuthorizationUsed(address,bytes32)")
PENDING = "settlement_pending"
UNRESOLVED = "settlement_unresolved"

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
    """One chain the facilitator settles on, with the keys that pay gas (used round-robin).

    ``confirmations``: blocks a settlement needs (1 = mined) before it is reported settled;
    ``gas_limit``: fixed gas per settlement transaction (default: the facilitator's, else an estimate).
    """

    network: str
    chain: Chain
    senders: Sequence[TxSender]
    confirmations: int = 1
    gas_limit: int | None = None
    _pool: SenderPool | None = field(default=None, repr=False)

    def sender(self) -> TxSender:
        if self._pool is None:
            self._pool = SenderPool(self.senders)
        return self._pool.next()

    def sender_for(self, address: str | None) -> TxSender | None:
        if address is None:
            return None
        return next((s for s in self.senders if s.address.lower() == address.lower()), None)


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


# -- what the chain says about a settlement -----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Final:
    response: SettleResponse
    block_number: int | None


@dataclass(frozen=True, slots=True)
class _Open:
    """Not decided yet. ``known``: the node has the transaction (pending); ``lost``: it does not and the
    authorization is unused (re-broadcast); ``error``: the chain did not answer usefully."""

    known: bool = False
    lost: bool = False
    error: str | None = None


@dataclass(frozen=True, slots=True)
class _Job:
    """One authorization being settled: the parsed pieces every step needs."""

    network: str
    requirements: PaymentRequirements
    payload: ExactEvmPayload
    payer: str  # checksummed
    digest: str  # requirements digest
    v1: bool

    @property
    def sid(self) -> str:
        a = self.payload.authorization
        return settlement_id(self.network, self.requirements.asset, a.from_, a.nonce)


class ExactEvmFacilitator:
    """``exact`` × ``eip155:*`` for the facilitator role.

    ``store``: a ``SettlementStore`` (or its URL, e.g. ``"sqlite:///settlements.db"``, opened and migrated on
    first use) for exactly-once settlement with crash recovery (see the module docs); ``None`` keeps no record. ``receipt_timeout``: how long one ``/settle`` waits for its transaction before
    answering ``settlement_pending``; ``settle_wait``: how long a duplicate settle waits for an in-flight one
    (default ``receipt_timeout + 5``); ``lease_seconds``: how long a claim is owned before another instance
    may take it over (default ``receipt_timeout + 30``); ``stuck_after``: seconds before a pending
    transaction is replaced with higher fees by the reconciler; ``gas_limit``: fixed gas per settlement
    (default: estimate).
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
    ) -> None:
        nets = networks.values() if isinstance(networks, Mapping) else networks
        self._nets: dict[str, EvmNetwork] = {n.network: n for n in nets}
        self.store = SettlementStore(open_database(store)) if isinstance(store, str) else store
        self._migrated = isinstance(store, SettlementStore)  # an opened store ran its migrations already
        self._simulate = simulate
        self._receipt_timeout = receipt_timeout
        self._settle_wait = settle_wait if settle_wait is not None else receipt_timeout + 5.0
        self._lease = lease_seconds if lease_seconds is not None else receipt_timeout + 30.0
        self._stuck_after = stuck_after
        self._gas_limit = gas_limit
        self._poll = poll_interval
        self._lookback = log_lookback_blocks
        self._clock = clock
        self._tasks: dict[tuple[Any, ...], asyncio.Task[SettleResponse]] = {}
        self._sending: set[str] = set()  # settlements this process is sending/confirming right now

    async def _ensure_schema(self) -> None:
        if not self._migrated and self.store is not None:
            await self.store.migrate()
            self._migrated = True

    # -- registry facts -------------------------------------------------------------------------
    def networks(self) -> Sequence[str]:
        return list(self._nets)

    def signer_addresses(self) -> Sequence[str]:
        return sorted({s.address for n in self._nets.values() for s in n.senders})

    def kind_extra(self, network: str) -> Mapping[str, Any] | None:
        return None

    def settlement_key(self, payload: PaymentPayload, requirements: PaymentRequirements) -> str | None:
        """The settlement record id of this payment (``GET /settlements/{id}``), or None if unparseable."""
        try:
            a = ExactEvmPayload.from_wire(payload.payload).authorization
        except WireError:
            return None
        return settlement_id(requirements.network, requirements.asset, a.from_, a.nonce)

    # -- verify ---------------------------------------------------------------------------------
    async def verify(
        self, payload: PaymentPayload, requirements: PaymentRequirements, *, v1: bool = False
    ) -> VerifyResponse:
        res = await self._verify(payload, requirements, v1=v1, simulate=self._simulate)
        return res[0]

    async def _verify(
        self, payload: PaymentPayload, requirements: PaymentRequirements, *, v1: bool, simulate: bool,
        gas_for: TxSender | None = None,
    ) -> tuple[VerifyResponse, CheckedAuthorization | None, int | None]:
        """Verify; with ``gas_for`` (settling) the simulation is an ``eth_estimateGas`` from that key, whose
        result (with the sender's margin) is returned as the gas limit to send with."""
        checked = check_offchain(payload, requirements, int(self._clock()), v1=v1)
        if isinstance(checked, VerifyResponse):
            return checked, None, None
        net = self._nets.get(requirements.network)
        if net is None:
            return VerifyResponse(False, "invalid_network", payer=checked.payer,
                                  invalid_message=f"this facilitator does not settle on {requirements.network}"), None, None
        try:
            bad, gas = await self._check_onchain(net, checked, requirements, simulate=simulate, gas_for=gas_for)
        except ChainError as exc:
            return VerifyResponse(False, "unexpected_verify_error", payer=checked.payer,
                                  invalid_message=f"chain unavailable: {exc}"), None, None
        if bad is not None:
            return VerifyResponse(False, bad[0], payer=checked.payer, invalid_message=bad[1]), None, None
        return VerifyResponse(True, payer=checked.payer), checked, gas

    async def _check_onchain(
        self, net: EvmNetwork, c: CheckedAuthorization, req: PaymentRequirements, *, simulate: bool,
        gas_for: TxSender | None = None,
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
            data = token.transfer_with_authorization(
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
        """Settle once (see the module docs). Concurrent settles of one authorization in this process share
        one task, which runs to completion even if the requests that wait for it are cancelled."""
        try:
            p = ExactEvmPayload.from_wire(payload.payload)
        except WireError:
            return await self._settle_unrecorded(payload, requirements, v1=v1)
        digest = requirements_digest(requirements.to_wire())
        a = p.authorization
        key = (requirements.network, requirements.asset.lower(), a.from_.lower(), a.nonce, digest,
               asyncio.get_running_loop())
        task = self._tasks.get(key)
        if task is None:
            job = _Job(requirements.network, requirements, p, to_checksum(a.from_), digest, v1)
            task = asyncio.create_task(self._settle_task(payload, job))
            self._tasks[key] = task
            task.add_done_callback(lambda _t, k=key: self._tasks.pop(k, None))  # type: ignore[misc]
        return await asyncio.shield(task)

    async def _settle_task(self, payload: PaymentPayload, job: _Job) -> SettleResponse:
        try:
            if self.store is None:
                return await self._settle_unrecorded(payload, job.requirements, v1=job.v1)
            await self._ensure_schema()
            return await self._settle_stored(self.store, payload, job, takeover=True)
        except Exception as exc:  # never lose an answer to a bug: say what the record says, if anything
            log.exception("settle of %s failed", job.sid)
            row = None
            if self.store is not None:
                with contextlib.suppress(Exception):
                    row = await self.store.get(job.sid)
            if row is not None and row.tx_hash:
                return self.response_for(row)
            return SettleResponse(False, "", job.network, payer=job.payer, error_reason="unexpected_settle_error",
                                  error_message=f"{type(exc).__name__}: {exc}")

    async def _settle_stored(
        self, store: SettlementStore, payload: PaymentPayload, job: _Job, *, takeover: bool, force: bool = False
    ) -> SettleResponse:
        """``force``: a stale claim was seen; verify and claim (which takes it over) without answering from it."""
        if not force:
            row = await store.get(job.sid)
            if row is not None:
                return await self._answer_row(store, row, payload, job, takeover=takeover)
        net = self._nets.get(job.network)
        sender = net.sender() if net is not None else None
        verdict, checked, gas = await self._verify(payload, job.requirements, v1=job.v1, simulate=self._simulate,
                                                   gas_for=sender)
        if not verdict.is_valid or checked is None or net is None or sender is None:
            # another request/instance may have settled it meanwhile (its transaction used the nonce)
            row = await store.get(job.sid)
            if row is not None:
                return await self._answer_row(store, row, payload, job, takeover=False)
            return SettleResponse(False, "", job.network, payer=verdict.payer or job.payer,
                                  error_reason=verdict.invalid_reason, error_message=verdict.invalid_message)
        a = checked.payload.authorization
        claimed, row = await store.claim(
            network=job.network, asset=job.requirements.asset, payer=a.from_, nonce="0x" + a.nonce.hex(),
            requirements_digest=job.digest, request=_request_record(job), amount=a.value, pay_to=a.to,
            lease_seconds=self._lease,
        )
        if not claimed:
            return await self._answer_row(store, row, payload, job, takeover=False)
        self._sending.add(row.id)
        try:
            return await self._submit(store, row, job, net, sender, net.gas_limit or self._gas_limit or gas)
        finally:
            self._sending.discard(row.id)

    async def _answer_row(
        self, store: SettlementStore, row: Settlement, payload: PaymentPayload, job: _Job, *, takeover: bool
    ) -> SettleResponse:
        """Answer from an existing record, waiting while it is being settled by someone else."""
        if row.requirements_digest != job.digest:
            return SettleResponse(
                False, "", job.network, payer=job.payer, error_reason="invalid_exact_evm_nonce_already_used",
                error_message=f"this authorization belongs to settlement {row.id} of other payment requirements",
            )
        deadline = time.monotonic() + self._settle_wait
        delay = self._poll
        reconciled = False
        current: Settlement | None = row
        while current is not None and current.state in ("verified", "submitted"):
            now = time.time()
            if current.lease_until < now:
                if current.state == "verified" and takeover:
                    # its owner died before broadcasting anything: settle it ourselves
                    return await self._settle_stored(store, payload, job, takeover=False, force=True)
                if current.state == "submitted" and not reconciled:
                    reconciled = True  # its owner is gone after recording a transaction: ask the chain now
                    await self.reconcile_row(current)
                    current = await store.get(current.id)
                    continue
            if time.monotonic() >= deadline:
                break
            await asyncio.sleep(delay)
            delay = min(delay * 1.5, 0.5)
            current = await store.get(row.id)
        if current is None:  # the claim was released (nothing was sent): try ourselves, once
            if takeover:
                return await self._settle_stored(store, payload, job, takeover=False)
            return SettleResponse(False, "", job.network, payer=job.payer, error_reason="unexpected_settle_error",
                                  error_message="a concurrent settlement attempt was abandoned; try again")
        if current.state == "unresolved" and not reconciled:
            await self.reconcile_row(current)
            current = await store.get(current.id) or current
        return self.response_for(current)

    def response_for(self, row: Settlement) -> SettleResponse:
        """The ``SettleResponse`` a record stands for; identical for every caller that asks."""
        payer = to_checksum(row.payer)
        tx = row.tx_hash or ""
        if row.state == "settled":
            return SettleResponse(True, tx, row.network, payer=payer, amount=row.amount)
        if row.state == "failed":
            return SettleResponse(False, tx, row.network, payer=payer,
                                  error_reason=row.error_reason or "transaction_failed", error_message=row.error_message)
        if row.state == "unresolved":
            return SettleResponse(False, tx, row.network, payer=payer, error_reason=UNRESOLVED,
                                  error_message=f"outcome unknown (chain unavailable); settlement {row.id} is "
                                                f"being reconciled: {row.error_message or ''}".strip())
        return SettleResponse(False, tx, row.network, payer=payer, error_reason=PENDING,
                              error_message=f"settlement {row.id} is in progress; ask again or GET /settlements/{row.id}")

    async def _submit(
        self, store: SettlementStore, row: Settlement, job: _Job, net: EvmNetwork, sender: TxSender, gas: int | None
    ) -> SettleResponse:
        """We own the claim: sign, record, broadcast, then wait for the chain's verdict."""
        a = job.payload.authorization
        data = token.transfer_with_authorization(
            a.from_, a.to, a.value, a.valid_after, a.valid_before, a.nonce, job.payload.signature
        )
        recorded: list[str] = []

        async def record(tx: SignedTx) -> bool:
            ok = await store.record_tx(job.sid, tx_hash=tx.hash, raw_tx=tx.raw, signer=tx.sender, tx_nonce=tx.nonce,
                                       previous_hash=recorded[-1] if recorded else None, lease_seconds=self._lease)
            if ok:
                recorded.append(tx.hash)
            return ok

        def failure(reason: str, message: str) -> SettleResponse:
            return SettleResponse(False, "", job.network, payer=job.payer, error_reason=reason, error_message=message)

        def last() -> str | None:
            return recorded[-1] if recorded else None

        try:
            tx, unknown = await sender.send_recorded(job.requirements.asset, data, gas=gas, record=record)
        except RecordRefused:
            lost = await store.get(job.sid)
            return self.response_for(lost) if lost else failure("unexpected_settle_error", "claim lost; try again")
        except ChainRevert as exc:  # gas estimation reverted: nothing was signed or sent
            await store.release(job.sid, tx_hash=last())
            return failure(map_revert(exc.reason), exc.reason)
        except FeeCapExceeded as exc:
            await store.release(job.sid, tx_hash=last())
            return failure("unexpected_settle_error", f"not sent: {exc}")
        except ChainError as exc:  # refused by the node, or no chain before signing: nothing was accepted
            await store.release(job.sid, tx_hash=last())
            return failure("unexpected_settle_error", f"not sent: {exc}")
        except Exception as exc:  # the store failed while recording: we did not broadcast
            log.exception("recording settlement %s failed", job.sid)
            seen: Settlement | None = None
            with contextlib.suppress(Exception):
                seen = await store.get(job.sid)
            if seen is not None and seen.tx_hash:
                return self.response_for(seen)  # recorded but not sent: the reconciler will broadcast it
            with contextlib.suppress(Exception):
                await store.release(job.sid)
            return failure("unexpected_settle_error", f"not sent: store error {type(exc).__name__}: {exc}")
        if os.environ.get(CRASH_AFTER_SEND_ENV):
            os.kill(os.getpid(), signal.SIGKILL)
        row = dataclasses.replace(row, state="submitted", tx_hash=tx.hash)
        return await self._confirm(store, row, net, job, tx, unknown)

    async def _confirm(
        self, store: SettlementStore, row: Settlement, net: EvmNetwork, job: _Job, tx: SignedTx,
        broadcast_error: ChainError | None,
    ) -> SettleResponse:
        """Wait up to ``receipt_timeout`` for the chain's verdict on our recorded transaction."""
        deadline = time.monotonic() + self._receipt_timeout
        delay = self._poll
        last_error = str(broadcast_error) if broadcast_error else None
        unsent = broadcast_error is not None
        last_push = time.monotonic()
        last_full = time.monotonic()
        while True:
            full = time.monotonic() - last_full > 1.0 or time.monotonic() >= deadline
            if full:
                last_full = time.monotonic()
            state = await self._probe(net, job, (tx.hash,), full=full)
            if isinstance(state, _Final):
                return await self._finish(store, row, state)
            last_error = state.error
            if state.error is None and (state.lost or (unsent and not state.known)) \
                    and time.monotonic() - last_push > 1.0:
                last_push = time.monotonic()  # the node does not have it (the first broadcast got lost)
                kind = await TxSender.broadcast_raw(net.chain, tx.raw)
                unsent = kind == "unknown"
            if time.monotonic() >= deadline:
                break
            await asyncio.sleep(delay)
            delay = min(delay * 1.5, 0.5)
        if last_error is not None:
            await store.mark_unresolved(job.sid, last_error)
        current = await store.get(job.sid)
        assert current is not None
        return self.response_for(current)

    async def _finish(self, store: SettlementStore, row: Settlement, state: _Final) -> SettleResponse:
        """Record the chain's verdict (compare-and-set) and answer what the record now says."""
        r = state.response
        final = "settled" if r.success else "failed"
        if await store.finish(row.id, final, tx_hash=r.transaction or None, block_number=state.block_number,
                              error_reason=r.error_reason, error_message=r.error_message):
            return self.response_for(dataclasses.replace(
                row, state=final, tx_hash=(r.transaction or row.tx_hash or "").lower() or None,
                error_reason=r.error_reason, error_message=r.error_message))
        current = await store.get(row.id)  # someone else recorded it first: answer their record
        assert current is not None
        return self.response_for(current)

    async def _probe(self, net: EvmNetwork, job: _Job, hashes: Sequence[str], *, full: bool = True) -> _Final | _Open:
        """Ask the chain what became of a settlement: by our transactions' receipts, else (``full``) by the
        token's authorization state and the node's transaction pool."""
        chain, req, p = net.chain, job.requirements, job.payload
        a = p.authorization
        try:
            reverted: Receipt | None = None
            for h in reversed(hashes):
                receipt = await chain.get_transaction_receipt(h)
                if receipt is None:
                    continue
                if not await self._confirmed(net, receipt):
                    return _Open(known=True)
                if receipt.status == 1:
                    return _Final(settle_outcome(receipt, req, p, job.payer), receipt.block_number)
                reverted = receipt
            if not full and reverted is None:
                return _Open(known=True)
            used = token.decode_bool(await chain.call(req.asset, token.authorization_state(a.from_, a.nonce)))
            if used:
                found = await self._find_authorization_tx(net, req.asset, a.from_, a.nonce)
                if found is None:
                    return _Open(error="the authorization is used on chain but its transaction was not found")
                if not await self._confirmed(net, found):
                    return _Open(known=True)
                return _Final(settle_outcome(found, req, p, job.payer), found.block_number)
            if reverted is not None:
                out = SettleResponse(False, reverted.transaction_hash, job.network, payer=job.payer,
                                     error_reason="transaction_failed", error_message="settlement transaction reverted")
                return _Final(out, reverted.block_number)
            if await chain.block_timestamp() >= a.valid_before:
                out = SettleResponse(False, hashes[-1] if hashes else "", job.network, payer=job.payer,
                                     error_reason="invalid_exact_evm_payload_authorization_valid_before",
                                     error_message="the authorization expired before it was settled")
                return _Final(out, None)
            for h in hashes:
                if await chain.request("eth_getTransactionByHash", [h]) is not None:
                    return _Open(known=True)
            return _Open(lost=True)
        except ChainError as exc:
            return _Open(error=f"{type(exc).__name__}: {exc}")

    async def _confirmed(self, net: EvmNetwork, receipt: Receipt) -> bool:
        if net.confirmations <= 1:
            return True
        return await net.chain.block_number() >= receipt.block_number + net.confirmations - 1

    async def _find_authorization_tx(self, net: EvmNetwork, asset: str, payer: str, nonce: bytes) -> Receipt | None:
        head = await net.chain.block_number()
        logs = await net.chain.get_logs(
            address=asset, topics=[AUTHORIZATION_USED_TOPIC, bytes(12) + address_bytes(payer), nonce],
            from_block=max(0, head - self._lookback), to_block="latest",
        )
        if not logs:
            return None
        return await net.chain.get_transaction_receipt(logs[-1].transaction_hash)

    # -- reconciliation ---------------------------------------------------------------------------
    async def reconcile_once(self, *, limit: int = 200) -> dict[str, int]:
        """Resolve open records from the chain (all instances may run this; transitions are compare-and-set).
        Returns counts of what happened: ``checked``, ``settled``, ``failed``, ``unresolved``,
        ``rebroadcast``, ``replaced``, ``open``."""
        stats = dict.fromkeys(("checked", "settled", "failed", "unresolved", "rebroadcast", "replaced", "open"), 0)
        if self.store is None:
            return stats
        await self._ensure_schema()
        for row in await self.store.open_rows(limit=limit):
            if row.network not in self._nets:
                continue
            stats["checked"] += 1
            try:
                outcome = await self.reconcile_row(row)
            except Exception:  # one bad row must not stop the others
                log.exception("reconciling settlement %s failed", row.id)
                outcome = "open"
            stats[outcome] = stats.get(outcome, 0) + 1
        return stats

    async def reconcile_row(self, row: Settlement) -> str:
        """Bring one open record closer to final; returns what happened (see ``reconcile_once``)."""
        store = self.store
        net = self._nets.get(row.network)
        if store is None or net is None or row.final:
            return row.state if row.final else "open"
        job = _job_from_record(row)
        if row.state == "verified":
            # a claim whose owner vanished before sending: only finish it if the chain already decided
            state = await self._probe(net, job, ())
            if isinstance(state, _Final) and (state.response.success or state.response.error_reason
                                              == "invalid_exact_evm_payload_authorization_valid_before"):
                await store.finish(row.id, "settled" if state.response.success else "failed",
                                   tx_hash=state.response.transaction or None, block_number=state.block_number,
                                   error_reason=state.response.error_reason,
                                   error_message=state.response.error_message, from_states=("verified",))
                return "settled" if state.response.success else "failed"
            return "open"
        state = await self._probe(net, job, row.tx_hashes or ((row.tx_hash,) if row.tx_hash else ()))
        if isinstance(state, _Final):
            r = state.response
            done = await store.finish(row.id, "settled" if r.success else "failed", tx_hash=r.transaction or None,
                                      block_number=state.block_number, error_reason=r.error_reason,
                                      error_message=r.error_message)
            return ("settled" if r.success else "failed") if done else "open"
        if state.error is not None:
            await store.mark_unresolved(row.id, state.error)
            return "unresolved"
        # re-broadcasting, re-signing and replacing are for rows nobody is working on: the owner's lease ran
        # out, or the owner is this process and its /settle has returned
        if not (row.lease_until < time.time() or (row.owner == store.instance_id and row.id not in self._sending)):
            return "open"
        if state.lost and row.raw_tx:
            kind = await TxSender.broadcast_raw(net.chain, row.raw_tx)
            if kind is None:
                await store.note(row.id, "transaction re-broadcast by the reconciler")
                return "rebroadcast"
            if kind == "nonce_low":  # the stored transaction can never be mined: sign a new one
                return await self._resign(store, net, row, job)
            if kind == "unknown":
                await store.mark_unresolved(row.id, "re-broadcast got no usable answer")
                return "unresolved"
            await store.note(row.id, f"re-broadcast refused ({kind})")
            return "open"
        if state.known and row.raw_tx and row.submitted_at is not None \
                and time.time() - row.updated_at > self._stuck_after:
            return await self._replace(store, net, row)
        return "open"

    async def _resign(self, store: SettlementStore, net: EvmNetwork, row: Settlement, job: _Job) -> str:
        if not await store.take_lease(row.id, self._lease, ("submitted", "unresolved")):
            return "open"
        a = job.payload.authorization
        data = token.transfer_with_authorization(
            a.from_, a.to, a.value, a.valid_after, a.valid_before, a.nonce, job.payload.signature
        )
        prev = row.tx_hash

        async def record(tx: SignedTx) -> bool:
            nonlocal prev
            ok = await store.record_tx(row.id, tx_hash=tx.hash, raw_tx=tx.raw, signer=tx.sender, tx_nonce=tx.nonce,
                                       previous_hash=prev, lease_seconds=self._lease)
            if ok:
                prev = tx.hash
            return ok

        try:
            await net.sender().send_recorded(job.requirements.asset, data, gas=net.gas_limit or self._gas_limit, record=record)
        except ChainRevert as exc:  # would revert now: let the next round read the chain again
            await store.note(row.id, f"re-sign would revert: {exc.reason}")
            return "open"
        except ChainError as exc:
            await store.note(row.id, f"re-sign failed: {exc}")
            return "open"
        return "rebroadcast"

    async def _replace(self, store: SettlementStore, net: EvmNetwork, row: Settlement) -> str:
        sender = net.sender_for(row.signer)
        if sender is None or row.raw_tx is None or row.signer is None:
            return "open"  # another instance's key: it replaces its own transactions
        if not await store.take_lease(row.id, self._lease, ("submitted", "unresolved")):
            return "open"
        old = SignedTx.decode(row.raw_tx, row.signer)
        prev = row.tx_hash

        async def record(tx: SignedTx) -> bool:
            return await store.record_tx(row.id, tx_hash=tx.hash, raw_tx=tx.raw, signer=tx.sender, tx_nonce=tx.nonce,
                                         previous_hash=prev, lease_seconds=self._lease)

        try:
            await sender.replace(old, record=record)
        except ChainError as exc:
            await store.note(row.id, f"replacement failed: {exc}")
            return "open"
        return "replaced"

    # -- settle without a store -------------------------------------------------------------------
    async def _settle_unrecorded(
        self, payload: PaymentPayload, requirements: PaymentRequirements, *, v1: bool
    ) -> SettleResponse:
        network = requirements.network
        net = self._nets.get(network)
        sender = net.sender() if net is not None else None
        verdict, checked, gas = await self._verify(payload, requirements, v1=v1, simulate=self._simulate,
                                                   gas_for=sender)
        if not verdict.is_valid or checked is None or net is None or sender is None:
            return SettleResponse(False, "", network, payer=verdict.payer,
                                  error_reason=verdict.invalid_reason, error_message=verdict.invalid_message)
        a = checked.payload.authorization
        data = token.transfer_with_authorization(
            a.from_, a.to, a.value, a.valid_after, a.valid_before, a.nonce, checked.payload.signature
        )
        try:
            tx, unknown = await sender.send_recorded(requirements.asset, data,
                                                     gas=net.gas_limit or self._gas_limit or gas)
        except ChainRevert as exc:
            return SettleResponse(False, "", network, payer=checked.payer,
                                  error_reason=map_revert(exc.reason), error_message=exc.reason)
        except ChainError as exc:
            return SettleResponse(False, "", network, payer=checked.payer,
                                  error_reason="unexpected_settle_error", error_message=f"not sent: {exc}")
        try:
            receipt = await net.chain.wait_for_receipt(tx.hash, timeout=self._receipt_timeout)
        except ChainError as exc:
            return SettleResponse(False, tx.hash, network, payer=checked.payer, error_reason=UNRESOLVED,
                                  error_message=f"no receipt yet: {exc}" + (f" (send: {unknown})" if unknown else ""))
        return settle_outcome(receipt, requirements, checked.payload, checked.payer)


def _request_record(job: _Job) -> dict[str, Any]:
    """What the reconciler needs to judge a settlement later (stored with the claim)."""
    a = job.payload.authorization
    return {
        "authorization": {
            "from": to_checksum(a.from_), "to": to_checksum(a.to), "value": str(a.value),
            "validAfter": str(a.valid_after), "validBefore": str(a.valid_before), "nonce": "0x" + a.nonce.hex(),
        },
        "signature": "0x" + job.payload.signature.hex(),
        "requirements": job.requirements.to_wire(),
        "v1": job.v1,
    }


def _job_from_record(row: Settlement) -> _Job:
    rec = row.request
    p = ExactEvmPayload.from_wire({"authorization": rec["authorization"], "signature": rec["signature"]})
    req = PaymentRequirements.from_wire(rec["requirements"])
    return _Job(row.network, req, p, to_checksum(p.authorization.from_), row.requirements_digest,
                bool(rec.get("v1", False)))


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
    for log_ in receipt.logs:
        if (log_.address.lower() == requirements.asset.lower() and log_.topics[:3] == want
                and int.from_bytes(log_.data[:32], "big") == a.value):
            return SettleResponse(True, receipt.transaction_hash, network, payer=payer,
                                  amount=a.value)
    return SettleResponse(False, receipt.transaction_hash, network, payer=payer,
                          error_reason="invalid_transaction_state",
                          error_message="transaction succeeded without the expected Transfer log")
