"""The exactly-once settlement engine: any scheme, any chain family (through its ``Rail``).

The states live in ``paywire.store.settlements`` (one row per authorization); every transition below is one
compare-and-set there, so instances sharing the database (fleet mode) never undo each other's work::

    (none) ──claim──► verified ──record──► submitted ──finish──► settled | failed
       ▲                 │                     │  ▲
       └────release──────┘                     │  └─re-record (re-signed / fee-bumped transaction)
                                               └─unresolve──► unresolved ──finish──► settled | failed

* **claim** (``SettlementStore.claim``): after verification, before any transaction exists. A ``verified``
  row whose lease ran out is taken over: its owner died before sending anything. So is one of this instance's
  own that no task of this process holds (``SettlementStore.working``): a run before a restart left it.
* **leases** end ``broadcast_margin`` seconds before the authorization's ``validBefore`` (never later than
  ``lease_seconds``), so another instance of a fleet takes a dead owner's row over while it can still be mined.
* **record** (``record_tx``): the signed transaction is written *before* it is broadcast. Dying after this
  leaves a ``submitted`` row with the bytes; the reconciler re-broadcasts them (or signs anew).
* **too late** (``expire_unsent``): a recorded transaction whose turn to be broadcast comes less than
  ``expiry_margin`` seconds before ``validBefore`` is not broadcast (it would revert, or never be mined): the
  row, still ours with that transaction, ends ``failed`` with the expired reason and the key's next
  transaction takes its nonce. Re-broadcasts, re-signs and fee bumps are not sent that late either; a row
  whose transaction may have reached a node ends only when the chain shows the authorization unused past
  ``validBefore``.
* **release** (``release``): nothing reached the chain (it would revert, the node refused every signed
  version): drop the claim — ``verified``, or ``submitted`` with a refused transaction — so a later settle
  may try again.
* **finish** / **unresolve** (``finish`` / ``mark_unresolved``, both through ``_record``): the chain decided,
  or could not tell us. Any instance may finish a row (the outcome is a fact of the chain); the first wins.

A settle of an authorization that already has a row answers from the row, waiting while someone else is
settling it. A caller waits at most ``answer_within`` seconds (or its own shorter deadline, ``answer_within()``
as a context): then it gets ``settlement_pending`` with what the record holds, while the settlement goes on.
``reconcile_once`` (on start and in the background) brings open rows to a final state: it resumes abandoned
claims (sends them), re-broadcasts, re-signs and replaces. Without a store, concurrent settles in one process
still share one transaction and nothing is recorded.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

from paywire.errors import ChainError, ChainRevert
from paywire.settlement.rail import Intent, Mined, Rail, SentTx
from paywire.store.db import open_database
from paywire.store.settlements import OPEN_STATES, Settlement, SettlementStore, settlement_id
from paywire.x402.models import SettleResponse, VerifyResponse
from paywire.x402.reasons import SETTLEMENT_PENDING as PENDING
from paywire.x402.reasons import SETTLEMENT_UNRESOLVED as UNRESOLVED

__all__ = ["PENDING", "UNRESOLVED", "Plan", "Prepare", "Reasons", "SettlementEngine", "answer_within", "settling_id"]

log = logging.getLogger(__name__)

ANSWER_WITHIN = 25.0
"""Default longest wait of one settle call (official x402 facilitator clients give up after 30 s)."""
BROADCAST_MARGIN = 15.0
"""Default seconds before ``validBefore`` at which a claim's lease ends: time for a takeover to send and mine."""
MIN_LEASE = 3.0
"""A claim is always ours at least this long (to sign and record), even close to ``validBefore``."""
FIRST_POLL = 0.003
"""Default seconds between a broadcast's answer and the first receipt poll: even a local automining node
(anvil) has often not mined the transaction when it answers; a block-producing chain never has."""
EXPIRY_MARGIN = 3.0
"""Default seconds a transaction needs to be mined: none is broadcast later than this before ``validBefore``
(less than the 6 s a verified authorization must have left, more than a 2 s L2 block; raise it for slow chains)."""

_caller_wait: ContextVar[float | None] = ContextVar("paywire_settle_answer_within", default=None)

settling_id: ContextVar[str | None] = ContextVar("paywire_settling_id", default=None)
"""The settlement record id of the last intent a ``SettlementEngine.settle`` awaited in this context was given
(set before it settles): the facilitator's ``X-Paywire-Settlement-Id`` without parsing the payload again."""


class answer_within:
    """Settles awaited inside this block answer within ``seconds`` (a caller's own deadline, e.g. the HTTP
    ``Prefer: wait=N`` of a facilitator client): ``settlement_pending`` if the outcome is not known by then.
    A plain class, not ``contextlib.contextmanager``: no generator per settle."""

    __slots__ = ("_token", "seconds")

    def __init__(self, seconds: float | None) -> None:
        self.seconds = seconds

    def __enter__(self) -> None:
        self._token = _caller_wait.set(self.seconds)

    def __exit__(self, *exc: object) -> None:
        _caller_wait.reset(self._token)


@dataclass(frozen=True, slots=True)
class Reasons:
    """The scheme's x402 error reasons the engine answers with.

    ``expired``: the authorization's deadline passed before it was settled; ``reused``: the authorization
    belongs to a settlement of other payment requirements; ``revert``: reason for a rail's revert message.
    """

    expired: str
    reused: str
    revert: Callable[[str], str]


@dataclass(frozen=True, slots=True)
class Plan:
    """How to send a verified intent: from ``signer`` with resource ``limit`` (both as learned by verifying)."""

    signer: str
    limit: int | None = None


Prepare = Callable[[], Awaitable[tuple[VerifyResponse, Plan | None]]]
"""Verify the payment now (on chain); a valid verdict comes with the ``Plan`` to send it."""


# -- what the chain says about a settlement -------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Final:
    """The chain decided; ``expired``: the authorization can no longer be used (nothing moved)."""

    response: SettleResponse
    block_number: int | None
    expired: bool = False


@dataclass(frozen=True, slots=True)
class _Open:
    """Not decided yet. ``known``: the node has the transaction (pending); ``lost``: it does not and the
    authorization is unused (re-broadcast); ``error``: the chain did not answer usefully."""

    known: bool = False
    lost: bool = False
    error: str | None = None


class _Gate:
    """``in_time`` for a rail's send: whether ``valid_before`` is more than ``margin`` seconds away by ``clock``.
    Remembers a "no" (``declined``): the send was then not broadcast."""

    def __init__(self, clock: Callable[[], float], margin: float, valid_before: int) -> None:
        self.clock, self.margin, self.valid_before = clock, margin, valid_before
        self.declined = False

    def __call__(self) -> bool:
        if self.clock() + self.margin < self.valid_before:
            return True
        self.declined = True
        return False


class _Recorder:
    """Records each signed transaction of one settlement over the previous one (compare-and-set)."""

    def __init__(self, store: SettlementStore, sid: str, previous: str | None, lease: Callable[[], float]) -> None:
        self.store, self.sid, self.last, self.lease = store, sid, previous, lease
        self.refused = False

    async def __call__(self, tx: SentTx) -> bool:
        ok = await self.store.record_tx(self.sid, tx_hash=tx.hash, raw_tx=tx.raw, signer=tx.signer,
                                        tx_nonce=tx.nonce, previous_hash=self.last, lease_seconds=self.lease())
        if ok:
            self.last = tx.hash
        else:
            self.refused = True
        return ok


def _judge(mined: Mined, intent: Intent) -> SettleResponse:
    """A mined settlement succeeded only if it executed and moved exactly what was authorized."""
    if not mined.ok:
        return SettleResponse(False, mined.hash, intent.network, payer=intent.payer,
                              error_reason="transaction_failed", error_message="settlement transaction reverted")
    if mined.paid:
        return SettleResponse(True, mined.hash, intent.network, payer=intent.payer, amount=intent.amount)
    return SettleResponse(False, mined.hash, intent.network, payer=intent.payer,
                          error_reason="invalid_transaction_state",
                          error_message="transaction succeeded without the expected Transfer log")


class SettlementEngine:
    """Settles intents exactly once over ``rails`` (one per network) and a ``SettlementStore``.

    ``store``: a ``SettlementStore`` or its URL (opened and migrated on first use); ``None`` keeps no record.
    ``load``: rebuilds an ``Intent`` from a row's stored record (for the reconciler). ``receipt_timeout``: how
    long a settlement waits for its transaction before recording it pending; ``settle_wait``: how long a
    duplicate settle waits for an in-flight one; ``answer_within``: the longest a settle call waits before it
    answers ``settlement_pending`` (the settlement goes on; a caller's shorter ``answer_within()`` wins);
    ``lease_seconds``: how long a claim is owned before another instance may take it over, cut to end
    ``broadcast_margin`` seconds before the authorization expires; ``stuck_after``: seconds before a pending
    transaction is replaced; ``expiry_margin``: no transaction is broadcast (or re-broadcast, re-signed,
    replaced) later than this many seconds before its authorization's ``validBefore`` by ``clock``.
    """

    def __init__(
        self,
        rails: Mapping[str, Rail],
        *,
        store: SettlementStore | str | None,
        load: Callable[[Settlement], Intent],
        reasons: Reasons,
        receipt_timeout: float = 60.0,
        settle_wait: float | None = None,
        lease_seconds: float | None = None,
        stuck_after: float = 60.0,
        poll_interval: float = 0.05,
        first_poll: float = FIRST_POLL,
        answer_within: float = ANSWER_WITHIN,
        broadcast_margin: float = BROADCAST_MARGIN,
        expiry_margin: float = EXPIRY_MARGIN,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.rails = dict(rails)
        self.store = SettlementStore(open_database(store)) if isinstance(store, str) else store
        self._migrated = isinstance(store, SettlementStore)  # an opened store ran its migrations already
        self._load = load
        self._reasons = reasons
        self._receipt_timeout = receipt_timeout
        self._settle_wait = settle_wait if settle_wait is not None else receipt_timeout + 5.0
        self._lease = lease_seconds if lease_seconds is not None else receipt_timeout + 30.0
        self._answer_within = answer_within
        self._margin = broadcast_margin
        self._expiry_margin = expiry_margin
        self._clock = clock
        self._stuck_after = stuck_after
        self._poll = poll_interval
        self._first_poll = min(first_poll, poll_interval)
        self._tasks: dict[tuple[Any, ...], asyncio.Task[SettleResponse]] = {}
        self._background: set[asyncio.Task[Any]] = set()  # confirmations of resumed claims

    @property
    def expiry_margin(self) -> float:
        """Seconds before ``validBefore`` after which nothing is broadcast (verification refuses such payments)."""
        return self._expiry_margin

    def _lease_for(self, intent: Intent) -> float:
        """Seconds a claim (or its recorded transaction) stays ours: ``lease_seconds``, but ending
        ``broadcast_margin`` before ``validBefore`` so that if we die another instance still has time to send
        and mine it; at least ``MIN_LEASE`` (to sign and record)."""
        left = intent.valid_before - time.time() - self._margin
        return min(self._lease, max(min(MIN_LEASE, self._lease), left))

    def _gate(self, intent: Intent) -> _Gate:
        """Whether the intent's transaction may still be broadcast (asked now, or by a rail at its turn)."""
        return _Gate(self._clock, self._expiry_margin, intent.valid_before)

    def _recorder(self, store: SettlementStore, sid: str, previous: str | None, intent: Intent) -> _Recorder:
        return _Recorder(store, sid, previous, lambda: self._lease_for(intent))

    def _abandoned(self, store: SettlementStore, row: Settlement) -> bool:
        """Nobody works on this open row: its owner's lease ran out, or it is ours from before a restart."""
        return row.lease_until < time.time() or (row.owner == store.instance_id and row.id not in store.working)

    async def _ensure_schema(self) -> None:
        if not self._migrated and self.store is not None:
            await self.store.migrate()
            self._migrated = True

    # -- settle -------------------------------------------------------------------------------------------
    async def settle(self, intent: Intent, prepare: Prepare) -> SettleResponse:
        """Settle once. Concurrent settles of one authorization in this process share one task, which runs to
        completion even if the requests that wait for it are cancelled."""
        settling_id.set(_sid(intent))
        loop = asyncio.get_running_loop()
        key = (intent.network, intent.asset.lower(), intent.payer.lower(), intent.nonce.lower(), intent.digest, loop)
        task = self._tasks.get(key)
        if task is None:
            task = asyncio.create_task(self._settle_task(intent, prepare))
            self._tasks[key] = task
            task.add_done_callback(lambda _t, k=key: self._tasks.pop(k, None))  # type: ignore[misc]
        if self.store is None:  # nothing to reconcile a pending answer with: wait for the outcome
            return await asyncio.shield(task)
        wanted = _caller_wait.get()
        budget = min(self._answer_within if wanted is None else max(wanted, 0.0), self._settle_wait)
        try:
            # cheaper than wait_for (no extra future and callbacks); timeout_at: timeout() asks for the loop again
            async with asyncio.timeout_at(loop.time() + budget):
                return await asyncio.shield(task)
        except TimeoutError:  # the settlement goes on; the caller gets what the record says now
            return await self._pending(self.store, intent)

    async def _pending(self, store: SettlementStore, intent: Intent) -> SettleResponse:
        """The answer for a caller who cannot wait longer: the record (pending with its transaction, if any)."""
        sid = _sid(intent)
        row: Settlement | None = None
        with contextlib.suppress(Exception):
            row = await store.get(sid)
        if row is not None and row.requirements_digest == intent.digest:
            return self.response_for(row)
        return _failure(intent, PENDING, f"settlement {sid} is in progress; ask again or GET /settlements/{sid}")

    async def _settle_task(self, intent: Intent, prepare: Prepare) -> SettleResponse:
        try:
            if self.store is None:
                return await self._settle_unrecorded(intent, prepare)
            await self._ensure_schema()
            return await self._settle_stored(self.store, intent, prepare, takeover=True)
        except Exception as exc:  # never lose an answer to a bug: say what the record says, if anything
            log.exception("settle of %s failed", _sid(intent))
            row = None
            if self.store is not None:
                with contextlib.suppress(Exception):
                    row = await self.store.get(_sid(intent))
            if row is not None and row.tx_hash:
                return self.response_for(row)
            return _failure(intent, "unexpected_settle_error", f"{type(exc).__name__}: {exc}")

    async def _settle_stored(
        self, store: SettlementStore, intent: Intent, prepare: Prepare, *, takeover: bool, force: bool = False
    ) -> SettleResponse:
        """``force``: a stale claim was seen; verify and claim (which takes it over) without answering from it.

        The row is not read first: the claim (``INSERT … ON CONFLICT DO NOTHING``) says whether it exists, and
        a payment that has a row already is answered from it — after a verification that, for a retry of a
        settled payment, fails (its authorization is used) and reads the row. One statement fewer per
        settlement; a retry pays a verification instead."""
        sid = _sid(intent)
        if sid in store.working:  # another task of this process (a resumed claim) is on it: answer from it
            row = await store.get(sid)
            if row is not None:
                return await self._answer_row(store, row, intent, prepare, takeover=False)
        store.working.add(sid)  # from here until we return, only this task acts on the row in this process
        try:
            done = await self._claim_and_submit(store, intent, prepare, take_own=force)
        finally:
            store.working.discard(sid)
        if isinstance(done, SettleResponse):
            return done
        return await self._answer_row(store, done, intent, prepare, takeover=takeover and not force)

    async def _claim_and_submit(
        self, store: SettlementStore, intent: Intent, prepare: Prepare, *, take_own: bool
    ) -> SettleResponse | Settlement:
        """Verify, claim and send; the row to answer from when someone else has it. ``take_own``: the row is
        ours from before a restart (or its lease ran out): take it over."""
        verdict, plan = await prepare()
        if not verdict.is_valid or plan is None:
            # another request/instance may have settled it meanwhile (its transaction used the nonce)
            row = await store.get(_sid(intent))
            if row is not None:
                return row
            return SettleResponse(False, "", intent.network, payer=verdict.payer or intent.payer,
                                  error_reason=verdict.invalid_reason, error_message=verdict.invalid_message)
        # transition claim: none | abandoned verified → verified (ours). Dying after it leaves a 'verified' row
        # that a restart of this instance resumes at once, and the fleet once the lease has run out.
        claimed, row = await store.claim(
            network=intent.network, asset=intent.asset, payer=intent.payer, nonce=intent.nonce,
            requirements_digest=intent.digest, request=intent.record, amount=intent.amount, pay_to=intent.pay_to,
            lease_seconds=self._lease_for(intent), take_own=take_own,
        )
        if not claimed:
            return row
        return await self._submit(store, row, intent, plan)

    async def _answer_row(
        self, store: SettlementStore, row: Settlement, intent: Intent, prepare: Prepare, *, takeover: bool
    ) -> SettleResponse:
        """Answer from an existing record, waiting while it is being settled by someone else."""
        if row.requirements_digest != intent.digest:
            return _failure(intent, self._reasons.reused,
                            f"this authorization belongs to settlement {row.id} of other payment requirements")
        deadline = time.monotonic() + self._settle_wait
        delay = self._poll
        reconciled = False
        current: Settlement | None = row
        while current is not None and current.state in ("verified", "submitted"):
            if self._abandoned(store, current):
                if current.state == "verified" and takeover:
                    # its owner died (or we restarted) before broadcasting anything: settle it ourselves
                    return await self._settle_stored(store, intent, prepare, takeover=False, force=True)
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
                return await self._settle_stored(store, intent, prepare, takeover=False)
            return _failure(intent, "unexpected_settle_error",
                            "a concurrent settlement attempt was abandoned; try again")
        if current.state == "unresolved" and not reconciled:
            await self.reconcile_row(current)
            current = await store.get(current.id) or current
        return self.response_for(current)

    def response_for(self, row: Settlement) -> SettleResponse:
        """The ``SettleResponse`` a record stands for; identical for every caller that asks."""
        return self._respond(row, row.state, row.tx_hash or "", row.error_reason, row.error_message)

    def _respond(self, row: Settlement, state: str, tx: str, error_reason: str | None,
                 error_message: str | None) -> SettleResponse:
        """``response_for`` of ``row`` with its state, transaction and error as given (what was just written)."""
        rail = self.rails.get(row.network)
        payer = rail.account(row.payer) if rail is not None else row.payer
        if state == "settled":
            return SettleResponse(True, tx, row.network, payer=payer, amount=row.amount)
        if state == "failed":
            return SettleResponse(False, tx, row.network, payer=payer,
                                  error_reason=error_reason or "transaction_failed", error_message=error_message)
        if state == "unresolved":
            return SettleResponse(False, tx, row.network, payer=payer, error_reason=UNRESOLVED,
                                  error_message=f"outcome unknown (chain unavailable); settlement {row.id} is "
                                                f"being reconciled: {error_message or ''}".strip())
        return SettleResponse(False, tx, row.network, payer=payer, error_reason=PENDING,
                              error_message=f"settlement {row.id} is in progress; ask again or GET /settlements/{row.id}")

    async def _submit(self, store: SettlementStore, row: Settlement, intent: Intent, plan: Plan) -> SettleResponse:
        """We own the claim: sign, record (verified → submitted), broadcast, then wait for the chain's verdict."""
        rail, sid = self.rails[intent.network], row.id
        record, gate = self._recorder(store, sid, None, intent), self._gate(intent)
        try:
            tx, unknown = await rail.send(intent, signer=plan.signer, limit=plan.limit, record=record, in_time=gate)
        except ChainError as exc:
            if record.refused:  # the claim was lost before anything was sent: answer the row's owner
                lost = await store.get(sid)
                return self.response_for(lost) if lost else _failure(intent, "unexpected_settle_error",
                                                                     "claim lost; try again")
            if gate.declined and record.last is not None:  # its turn came too late: nothing was broadcast
                return await self._expire_unsent(store, row, intent, record.last)
            # nothing was accepted by the node (it would revert, was refused, no chain): release the claim
            await store.release(sid, tx_hash=record.last)
            if isinstance(exc, ChainRevert):  # gas estimation reverted: nothing was signed or sent
                return _failure(intent, self._reasons.revert(exc.reason), exc.reason)
            return _failure(intent, "unexpected_settle_error", f"not sent: {exc}")
        except Exception as exc:  # the store failed while recording: we did not broadcast
            log.exception("recording settlement %s failed", sid)
            seen: Settlement | None = None
            with contextlib.suppress(Exception):
                seen = await store.get(sid)
            if seen is not None and seen.tx_hash:
                return self.response_for(seen)  # recorded but not sent: the reconciler will broadcast it
            with contextlib.suppress(Exception):
                await store.release(sid)
            return _failure(intent, "unexpected_settle_error", f"not sent: store error {type(exc).__name__}: {exc}")
        # if the process dies here the row is 'submitted' with the bytes (tx): the reconciler finishes it
        return await self._confirm(store, row, intent, tx, unknown)

    async def _confirm(
        self, store: SettlementStore, row: Settlement, intent: Intent, tx: SentTx, broadcast_error: str | None
    ) -> SettleResponse:
        """Wait up to ``receipt_timeout`` for the chain's verdict on our recorded transaction."""
        rail = self.rails[intent.network]
        deadline = time.monotonic() + self._receipt_timeout
        delay = self._poll
        outcome: _Final | _Open = _Open(error=broadcast_error)
        unsent = broadcast_error is not None
        last_push = last_full = time.monotonic()
        hashes = [tx.hash]
        record = self._recorder(store, row.id, tx.hash, intent)
        if not unsent and self._first_poll > 0:  # no node has a receipt the moment it accepted the transaction
            await asyncio.sleep(self._first_poll)
        while True:
            full = time.monotonic() - last_full > 1.0 or time.monotonic() >= deadline
            if full:
                last_full = time.monotonic()
            outcome = await self._probe(rail, intent, hashes, full=full)
            if isinstance(outcome, _Final):
                break
            if outcome.error is None and (outcome.lost or (unsent and not outcome.known)) \
                    and time.monotonic() - last_push > 1.0 and record.last == tx.hash and self._gate(intent)():
                last_push = time.monotonic()  # the node does not have it (the first broadcast got lost)
                kind = await rail.rebroadcast(tx.raw)
                unsent = kind == "unknown"
                if kind in ("nonce_low", "nonce_high") and outcome.lost:
                    # it can never be included (its nonce went to another transaction, or a gap is before it)
                    # and the authorization is unused and valid: sign it anew now, not after the lease
                    tx, unsent = await self._resend(rail, intent, record, tx)
                    if tx.hash not in hashes:
                        hashes.append(tx.hash)
            if time.monotonic() >= deadline:
                break
            await asyncio.sleep(delay)
            delay = min(delay * 1.5, 0.5)
        if isinstance(outcome, _Final) and await self._record(row.id, outcome, was=row.state):
            r = outcome.response  # answer as the row now reads, without reading it back
            return self._respond(row, "settled" if r.success else "failed", (r.transaction or tx.hash).lower(),
                                 r.error_reason, r.error_message)
        if isinstance(outcome, _Open):
            await self._record(row.id, outcome, was=row.state)
        current = await store.get(row.id)  # pending, or someone else recorded the verdict first
        assert current is not None
        return self.response_for(current)

    async def _resend(self, rail: Rail, intent: Intent, record: _Recorder, dead: SentTx) -> tuple[SentTx, bool]:
        """Sign the intent anew over ``dead`` (recorded, never includable): (the transaction now on the record,
        whether its broadcast had no usable answer). On failure the dead one stays current; the reconciler
        takes the row over once the settle is done."""
        try:
            fresh, unknown = await rail.send(intent, record=record, in_time=self._gate(intent))
        except ChainError as exc:  # would revert (used or expired meanwhile), too late, refused, or no chain
            if self.store is not None:
                await self.store.note(record.sid, f"re-sign after a lost broadcast failed: {exc}")
            return dead, False
        return fresh, unknown is not None

    async def _expire_unsent(self, store: SettlementStore, row: Settlement, intent: Intent, tx_hash: str) -> SettleResponse:
        """Transition too late: our recorded ``tx_hash`` (the row's only transaction) was not broadcast because
        its turn came too close to ``validBefore``; nothing can move, so the row ends failed (expired) — if it is
        still ours with that transaction. Otherwise someone took it over: answer from the row."""
        reason = self._reasons.expired
        message = "the authorization expired before its transaction could be broadcast; nothing was sent"
        if await store.expire_unsent(row.id, tx_hash=tx_hash, error_reason=reason, error_message=message):
            log.warning("settlement %s failed: %s (%s) tx=-", row.id, reason, message)
            return self._respond(row, "failed", "", reason, message)
        current = await store.get(row.id)
        return self.response_for(current) if current is not None else _failure(intent, reason, message)

    async def _record(self, sid: str, outcome: _Final | _Open, *, from_states: Sequence[str] = OPEN_STATES,
                      was: str | None = None) -> bool:
        """The one place an outcome is written: the chain's verdict (open → settled | failed), or that the chain
        could not tell us (submitted | unresolved → unresolved). False when another writer got there first
        (or there is nothing to write). A failure, or a first turn to unresolved (``was``: the row's state
        before), leaves one WARNING line with the settlement id, state and reason."""
        assert self.store is not None
        if isinstance(outcome, _Final):
            r = outcome.response
            done = await self.store.finish(sid, "settled" if r.success else "failed", tx_hash=r.transaction or None,
                                           block_number=outcome.block_number, error_reason=r.error_reason,
                                           error_message=r.error_message, from_states=from_states)
            if done and not r.success:
                log.warning("settlement %s failed: %s (%s) tx=%s", sid, r.error_reason, r.error_message,
                            r.transaction or "-")
            return done
        if outcome.error is None:
            return False
        done = await self.store.mark_unresolved(sid, outcome.error)
        if done and was != "unresolved":
            log.warning("settlement %s unresolved: %s", sid, outcome.error)
        return done

    async def _probe(self, rail: Rail, intent: Intent, hashes: Sequence[str], *, full: bool = True) -> _Final | _Open:
        """Ask the chain what became of a settlement: by our transactions' receipts, else (``full``) by whether
        the authorization was used, its deadline, and the node's transaction pool."""
        try:
            reverted: Mined | None = None
            for h in reversed(hashes):
                mined = await rail.receipt(h, intent)
                if mined is None:
                    continue
                if not mined.confirmed:
                    return _Open(known=True)
                if mined.ok:
                    return _Final(_judge(mined, intent), mined.block_number)
                reverted = mined
            if not full and reverted is None:
                return _Open(known=True)
            if await rail.is_used(intent):
                found = await rail.find_use(intent)
                if found is None:
                    return _Open(error="the authorization is used on chain but its transaction was not found")
                if not found.confirmed:
                    return _Open(known=True)
                return _Final(_judge(found, intent), found.block_number)
            if reverted is not None:
                return _Final(_judge(reverted, intent), reverted.block_number)
            if await rail.now() >= intent.valid_before:
                return _Final(_failure(intent, self._reasons.expired, "the authorization expired before it was settled",
                                       tx=hashes[-1] if hashes else ""), None, expired=True)
            for h in hashes:
                if await rail.knows(h):
                    return _Open(known=True)
            return _Open(lost=True)
        except ChainError as exc:
            return _Open(error=f"{type(exc).__name__}: {exc}")

    # -- reconciliation -----------------------------------------------------------------------------------
    async def reconcile_once(self, *, limit: int = 200) -> dict[str, int]:
        """Resolve open records from the chain (all instances may run this; transitions are compare-and-set).
        Returns counts of what happened: ``checked``, ``settled``, ``failed``, ``unresolved``, ``resumed`` (a
        claim nobody had sent was sent), ``rebroadcast``, ``replaced``, ``open``."""
        stats = dict.fromkeys(("checked", "settled", "failed", "unresolved", "resumed", "rebroadcast", "replaced",
                               "open"), 0)
        if self.store is None:
            return stats
        await self._ensure_schema()
        for row in await self.store.open_rows(limit=limit):
            if row.network not in self.rails:
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
        rail = self.rails.get(row.network)
        if store is None or rail is None or row.final:
            return row.state if row.final else "open"
        intent = self._load(row)
        if row.state == "verified":
            # a claim nothing was sent for: finish it if the chain already decided; else, if nobody works on it
            # (its owner died, or it is ours from before a restart), send it ourselves while it is still valid
            if row.id in store.working:  # a settle of this process is sending it right now
                return "open"
            outcome = await self._probe(rail, intent, ())
            if isinstance(outcome, _Final) and (outcome.response.success or outcome.expired):
                await self._record(row.id, outcome, from_states=("verified",))
                return "settled" if outcome.response.success else "failed"
            if isinstance(outcome, _Open) and outcome.lost and self._abandoned(store, row) and self._gate(intent)():
                return await self._resume(store, rail, row, intent)
            return "open"
        outcome = await self._probe(rail, intent, row.tx_hashes or ((row.tx_hash,) if row.tx_hash else ()))
        if isinstance(outcome, _Final):
            done = await self._record(row.id, outcome)
            return ("settled" if outcome.response.success else "failed") if done else "open"
        if outcome.error is not None:
            await self._record(row.id, outcome, was=row.state)
            return "unresolved"
        # re-broadcasting, re-signing and replacing are for rows nobody is working on: the owner's lease ran
        # out, or the owner is this instance and no task of this process holds the row
        if not self._abandoned(store, row) or row.id in store.working:
            return "open"
        if not self._gate(intent)():  # too late to be mined in time: send nothing; once the chain is past
            return "open"              # validBefore with the authorization unused, the probe finishes it expired
        if outcome.lost and row.raw_tx:
            if not await store.take_lease(row.id, self._lease_for(intent), ("submitted", "unresolved")):
                return "open"  # taken first: a row's own transaction, recorded but unsent, may be expired unsent
            kind = await rail.rebroadcast(row.raw_tx)
            if kind is None:
                await store.note(row.id, "transaction re-broadcast by the reconciler", kind="settlement.rebroadcast")
                return "rebroadcast"
            if kind in ("nonce_low", "nonce_high"):  # the stored transaction cannot be included: sign a new one
                return await self._resign(store, rail, row, intent)
            if kind == "unknown":
                await self._record(row.id, _Open(error="re-broadcast got no usable answer"), was=row.state)
                return "unresolved"
            await store.note(row.id, f"re-broadcast refused ({kind})")
            return "open"
        if outcome.known and row.raw_tx and row.submitted_at is not None \
                and time.time() - row.updated_at > self._stuck_after:
            return await self._replace(store, rail, row, intent)
        return "open"

    async def _resume(self, store: SettlementStore, rail: Rail, row: Settlement, intent: Intent) -> str:
        """Transition record for a claim nobody sent (its owner died, or this instance restarted): take it over,
        sign, record and broadcast it now; its confirmation goes on in the background, holding the row."""
        if row.id in store.working:
            return "open"
        store.working.add(row.id)
        confirming = False
        try:
            if not await store.take_lease(row.id, self._lease_for(intent), ("verified",)):
                return "open"
            record, gate = self._recorder(store, row.id, None, intent), self._gate(intent)
            try:
                tx, unknown = await rail.send(intent, record=record, in_time=gate)
            except ChainRevert as exc:  # it would revert now: used meanwhile, or the payer cannot pay any more
                outcome = await self._probe(rail, intent, ())
                if isinstance(outcome, _Final):
                    await self._record(row.id, outcome, from_states=("verified",))
                    return "settled" if outcome.response.success else "failed"
                await store.release(row.id)  # nothing was sent: a retried settle verifies again and says why
                log.warning("resumed settlement %s would revert (%s); claim released", row.id, exc.reason)
                return "open"
            except ChainError as exc:
                if record.refused:  # someone else recorded a transaction first
                    return "open"
                if gate.declined and record.last is not None:  # its turn came too late: nothing was broadcast
                    done = await self._expire_unsent(store, row, intent, record.last)
                    return "failed" if done.error_reason == self._reasons.expired else "open"
                if record.last is not None:  # recorded, but the node refused it: nothing reached the chain
                    await store.release(row.id, tx_hash=record.last)
                else:  # the chain did not answer: the claim stays ours, the next pass tries again
                    await store.note(row.id, f"resume failed: {exc}")
                return "open"
            sent = dataclasses.replace(row, state="submitted", tx_hash=tx.hash, owner=store.instance_id)
            task = asyncio.create_task(self._confirm_quietly(store, sent, intent, tx, unknown))
            self._background.add(task)
            task.add_done_callback(self._background.discard)
            task.add_done_callback(lambda _t: store.working.discard(row.id))
            confirming = True
            return "resumed"
        finally:
            if not confirming:
                store.working.discard(row.id)

    async def _confirm_quietly(
        self, store: SettlementStore, row: Settlement, intent: Intent, tx: SentTx, broadcast_error: str | None
    ) -> None:
        try:
            await self._confirm(store, row, intent, tx, broadcast_error)
        except Exception:  # the reconciler reads the chain again on its next pass
            log.exception("confirming resumed settlement %s failed", row.id)

    async def _resign(self, store: SettlementStore, rail: Rail, row: Settlement, intent: Intent) -> str:
        """Transition re-record: a new transaction (fresh signer slot) over the dead recorded one."""
        if not await store.take_lease(row.id, self._lease_for(intent), ("submitted", "unresolved")):
            return "open"
        try:
            await rail.send(intent, record=self._recorder(store, row.id, row.tx_hash, intent), in_time=self._gate(intent))
        except ChainRevert as exc:  # would revert now: let the next round read the chain again
            await store.note(row.id, f"re-sign would revert: {exc.reason}")
            return "open"
        except ChainError as exc:
            await store.note(row.id, f"re-sign failed: {exc}")
            return "open"
        return "rebroadcast"

    async def _replace(self, store: SettlementStore, rail: Rail, row: Settlement, intent: Intent) -> str:
        """Transition re-record: the stuck transaction again with higher fees, by the key that signed it."""
        if row.raw_tx is None or row.signer is None or not rail.has_signer(row.signer):
            return "open"  # another instance's key: it replaces its own transactions
        if not await store.take_lease(row.id, self._lease_for(intent), ("submitted", "unresolved")):
            return "open"
        try:
            await rail.replace(row.raw_tx, row.signer, record=self._recorder(store, row.id, row.tx_hash, intent))
        except ChainError as exc:
            await store.note(row.id, f"replacement failed: {exc}")
            return "open"
        return "replaced"

    # -- settle without a store ---------------------------------------------------------------------------
    async def _settle_unrecorded(self, intent: Intent, prepare: Prepare) -> SettleResponse:
        """Verify, send and wait for the receipt; nothing is recorded (library use without a store)."""
        verdict, plan = await prepare()
        rail = self.rails.get(intent.network)
        if not verdict.is_valid or plan is None or rail is None:
            return SettleResponse(False, "", intent.network, payer=verdict.payer,
                                  error_reason=verdict.invalid_reason, error_message=verdict.invalid_message)
        gate = self._gate(intent)
        try:
            tx, unknown = await rail.send(intent, signer=plan.signer, limit=plan.limit, in_time=gate)
        except ChainRevert as exc:
            return _failure(intent, self._reasons.revert(exc.reason), exc.reason)
        except ChainError as exc:
            if gate.declined:
                return _failure(intent, self._reasons.expired, "the authorization expired before its transaction "
                                                               "could be broadcast; nothing was sent")
            return _failure(intent, "unexpected_settle_error", f"not sent: {exc}")
        try:
            mined = await rail.receipt(tx.hash, intent, wait=self._receipt_timeout)
        except ChainError as exc:
            return _failure(intent, UNRESOLVED, f"no receipt yet: {exc}" + (f" (send: {unknown})" if unknown else ""),
                            tx=tx.hash)
        assert mined is not None  # waiting returns a receipt or raises
        return _judge(mined, intent)


def _sid(intent: Intent) -> str:
    """The settlement record id of an intent: any instance derives the same one."""
    return settlement_id(intent.network, intent.asset, intent.payer, intent.nonce)


def _failure(intent: Intent, reason: str | None, message: str | None, *, tx: str = "") -> SettleResponse:
    return SettleResponse(False, tx, intent.network, payer=intent.payer, error_reason=reason, error_message=message)
