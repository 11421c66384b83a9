"""The seller's channel accounting for ``batch-settlement`` (spec "Server: State & Forwarding"): what
:class:`~paywire.server.flow.PaymentFlow` does with a voucher, deposit or refund instead of claiming it.

One request per channel at a time (an in-process lock, and a lease in the store for every replica). The voucher
must be ``charged + amount`` (refund: ``charged``), else a corrective 402 carries ``channelState`` and the last
voucher (``voucherState``). A plain voucher with a fresh mirror of the escrow is checked here with one signature
recovery; deposits, refunds, contract-wallet vouchers and stale mirrors ask the facilitator. A deposit is settled
*before* the handler runs (money first). The handler's charge (``paywire.server.bill``; default: the maximum,
never more) is committed only after it succeeded, compare-and-set on the lease and the charge it started from; a
failed handler changes nothing and the payer may retry the same voucher.
"""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
import json
import logging
import time
import uuid
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from paywire.evm import batch as b
from paywire.schemes.evm_batch import payload as pl
from paywire.schemes.evm_batch.facilitator import Invalid, check_config
from paywire.schemes.evm_batch.local import check_voucher
from paywire.server.core import Proceed, Reply, json_reply
from paywire.server.metering import SETTLEMENT_OVERRIDES, Meter, override_of
from paywire.server.request import RequestInfo
from paywire.store.channels import ChannelRow, ChannelStore, Onchain
from paywire.store.payments import NewPayment, sale_row
from paywire.x402.models import PaymentPayload, PaymentRequirements, SettleResponse

if TYPE_CHECKING:
    from paywire.server.flow import PaymentFlow, Plan

log = logging.getLogger("paywire.server.channels")

ONCHAIN_TTL = 60.0
"""Seconds a mirrored escrow snapshot lets a plain voucher be checked locally (withdrawals take >= 15 min)."""
_MAX_LOCKS = 10_000


def _onchain(extra: Mapping[str, Any] | None) -> Onchain | None:
    state = extra.get("channelState", extra) if isinstance(extra, Mapping) else None
    if not isinstance(state, Mapping):
        return None
    try:
        return Onchain(int(str(state["balance"])), int(str(state["totalClaimed"])),
                       int(str(state.get("withdrawRequestedAt", 0))), int(str(state.get("refundNonce", 0))))
    except (KeyError, ValueError):
        return None


_WIRE: dict[int, tuple[PaymentRequirements, str]] = {}


def _wire(requirements: PaymentRequirements) -> str:
    """The compact JSON of a route's requirements, encoded once per requirements object."""
    hit = _WIRE.get(id(requirements))
    if hit is not None and hit[0] is requirements:
        return hit[1]
    if len(_WIRE) >= 256:
        _WIRE.clear()
    text = json.dumps(requirements.to_wire(), separators=(",", ":"))
    _WIRE[id(requirements)] = (requirements, text)
    return text


def _sale(p: Proceed, req: RequestInfo, cp: pl.ChannelPayload, cid: str, charged: int, charge: int, signature: str,
          deposit: SettleResponse | None, status: int) -> tuple[str, list[Any]]:
    """The seller's ledger row of one served voucher charge (``paywire sales``), keyed by the channel and its
    cumulative charge after it: one row per charge, whatever retries or replicas commit it."""
    assert isinstance(p.requirements, PaymentRequirements)
    # JSON by hand: every field is 0x-hex or digits (the same text json.dumps gives, without its encoder)
    voucher = f'{{"channelId":"{cid}","maxClaimableAmount":"{cp.voucher.max_claimable}","signature":"{signature}"}}'
    new = NewPayment(
        auth_key=f"channel:{cid}:{charged}", payment_id=None, payload_hash=signature, route=p.route.key,
        method=req.method, path=req.path, settle_mode="channel", x402_version=2, scheme=p.offer.scheme,
        network=p.offer.network, asset=p.offer.asset, pay_to=p.offer.pay_to, amount=charge, decimals=p.decimals,
        payer=cp.config.payer, payload=voucher,
        requirements=_wire(p.requirements), protocol=p.protocol,
        identity=p.identity)
    return sale_row(new, deposit.transaction if deposit is not None and deposit.transaction else None, status,
                    time.time())


class _LeaseKeeper:
    """Renews a channel's store lease while its handler runs past a third of the lease (a long stream), so no
    other replica takes the channel and our commit still lands. A timer until then: short requests pay nothing."""

    def __init__(self, store: ChannelStore, cid: str, owner: str, lease: float, max_life: float) -> None:
        self._store, self._cid, self._owner, self._lease = store, cid, owner, lease
        self._task: asyncio.Future[None] | None = None
        self._timer: asyncio.TimerHandle | None = asyncio.get_running_loop().call_later(
            lease / 3, self._start, max_life)

    def _start(self, max_life: float) -> None:
        self._timer = None
        self._task = asyncio.ensure_future(self._run(max_life))

    async def _run(self, max_life: float) -> None:
        end = time.monotonic() + max_life
        try:
            while await self._store.renew(self._cid, self._owner, self._lease) and time.monotonic() < end:
                await asyncio.sleep(self._lease / 3)
        except Exception:  # the lease lapses; the commit's compare-and-set then refuses, nothing is double-counted
            log.exception("paywire: renewing the lease of channel %s failed", self._cid)

    def stop(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
        if self._task is not None:
            self._task.cancel()


class ChannelSeller:
    """``batch-settlement`` payments for one :class:`PaymentFlow` (built on its first channel payment)."""

    def __init__(self, flow: PaymentFlow) -> None:
        self.flow = flow
        self.store = ChannelStore(flow.payments.db)
        self._locks: dict[str, asyncio.Lock] = {}
        self._migrated = False
        self._owner, self._serial = uuid.uuid4().hex, itertools.count()
        """Lease owners: this seller's random prefix and a serial, unique per request across replicas."""

    async def _ready(self) -> None:
        if not self._migrated:
            await self.store.migrate()
            self._migrated = True
            await self.flow.start_claims()

    def _lock(self, cid: str) -> asyncio.Lock:
        lock = self._locks.get(cid)
        if lock is None:
            if len(self._locks) >= _MAX_LOCKS:  # forget idle channels' locks
                for k in [k for k, v in self._locks.items() if not v.locked()]:
                    del self._locks[k]
            lock = self._locks[cid] = asyncio.Lock()
        return lock

    def _refuse(self, p: Proceed, req: RequestInfo, reason: str, offers: Any = None, status: int = 402) -> Plan:
        from paywire.server.flow import Respond

        reply = self.flow.seller.payment_required(p.route, req, offers if offers is not None else p.offers, reason)
        if status != 402:
            reply = Reply(status, reply.headers, reply.body)
        return Respond(reply)

    def _corrective(self, p: Proceed, req: RequestInfo, cid: str, row: ChannelRow | None, onchain: Onchain,
                    charged: int) -> Plan:
        """402 ``cumulative_amount_mismatch`` whose offer carries the channel snapshot and our last voucher."""
        extra: dict[str, Any] = {**p.offer.extra, "channelState": pl.channel_state_wire(
            b.bytes32(cid), onchain.balance, onchain.total_claimed, onchain.withdraw_requested_at,
            onchain.refund_nonce, charged)}
        if row is not None and row.signature:
            extra["voucherState"] = {"signedMaxClaimable": str(row.signed_max), "signature": row.signature}
        offers = tuple(dataclasses.replace(o, extra=extra) if o is p.offer or o == p.offer else o for o in p.offers)
        return self._refuse(p, req, pl.CUMULATIVE_MISMATCH, offers)

    async def _take(self, cid: str, owner: str) -> ChannelRow | None:
        """The store lease of an existing channel and its row as of the lease (waits for another replica's
        request, up to replay_wait); None: still held."""
        deadline = time.monotonic() + self.flow.replay_wait
        delay = 0.01
        while (row := await self.store.take(cid, owner, self.flow.lease)) is None:
            if time.monotonic() >= deadline:
                return None
            await asyncio.sleep(delay)
            delay = min(delay * 1.5, 0.2)
        return row

    async def pay(self, p: Proceed, req: RequestInfo) -> Plan:
        """The plan for one channel payment (see the module docs)."""
        await self._ready()
        if p.v1 or not isinstance(p.payload, PaymentPayload) or not isinstance(p.requirements, PaymentRequirements):
            return self._refuse(p, req, pl.SCHEME_MISMATCH)
        try:
            cp = pl.parse_payment_once(p.payload.payload)
            chain_id = int(p.requirements.network.split(":", 1)[1])
            check_config(cp, p.requirements, chain_id)
        except (pl.PayloadError, Invalid) as exc:
            return self._refuse(p, req, exc.reason)
        cid = b.hex32(cp.channel_id)
        lock = self._lock(cid)
        if not lock.locked() and not getattr(lock, "_waiters", True):  # free, nobody queued: taken at once
            await lock.acquire()
        else:  # wait for the channel's request in flight, up to replay_wait
            try:
                await asyncio.wait_for(lock.acquire(), self.flow.replay_wait)
            except TimeoutError:
                return self._refuse(p, req, pl.CHANNEL_BUSY)
        owner = f"{self._owner}{next(self._serial)}"
        handed_over = False
        try:
            plan = await self._locked(p, req, cp, cid, owner, chain_id)
            if isinstance(plan, tuple):  # (RunBuffered, finish): the lock is released when the handler is done
                handed_over = True
                return self._run(p, req, plan, lock)
            return plan
        finally:
            if not handed_over:
                lock.release()

    async def _locked(self, p: Proceed, req: RequestInfo, cp: pl.ChannelPayload, cid: str, owner: str,
                      chain_id: int) -> Plan | tuple[Any, ...]:
        assert isinstance(p.requirements, PaymentRequirements) and isinstance(p.payload, PaymentPayload)
        amount = p.requirements.amount
        row = await self.store.take(cid, owner, self.flow.lease)  # our lease and the row, in one statement
        if row is None and await self.store.get(cid) is not None:  # another request holds the channel
            row = await self._take(cid, owner)
            if row is None:
                return self._refuse(p, req, pl.CHANNEL_BUSY)
        leased = row is not None
        try:
            local = onchain = self._fresh_local(cp, row, p, chain_id)
            if onchain is None:  # ask the facilitator (and refresh the mirror)
                verdict = await self.flow._verify(p)
                if isinstance(verdict, BaseException):
                    return self._refuse(p, req, f"facilitator unavailable: {verdict}")
                if not verdict.is_valid:
                    return self._refuse(p, req, verdict.invalid_reason or "invalid_payment",
                                        status=412 if verdict.invalid_reason == pl.PERMIT2_ALLOWANCE_REQUIRED else 402)
                onchain = _onchain(verdict.extra)
                if onchain is None:
                    return self._refuse(p, req, pl.CHANNEL_STATE_READ_FAILED)
            base = row.charged if row is not None else onchain.total_claimed
            expected = base if cp.type == "refund" else base + amount
            if cp.voucher.max_claimable != expected:
                return self._corrective(p, req, cid, row, onchain, base)
            if cp.type == "refund":
                return await self._refund(p, req, cp, cid, owner, row, onchain, base, chain_id)
            deposit: SettleResponse | None = None
            if cp.type == "deposit":  # money first: the deposit lands before the handler runs
                settled = await self.flow._settle("x402", p.payload, p.requirements, False)
                deposit = settled[1]
                if settled[0] != "settled" or deposit is None:
                    reason = (deposit.error_reason if deposit is not None else None) or settled[2]
                    if settled[0] == "unresolved":
                        from paywire.server.flow import Respond

                        return Respond(self.flow.seller.settlement_pending(deposit, settled[2]))
                    return self._refuse(p, req, reason or pl.DEPOSIT_FAILED)
                onchain = _onchain(deposit.extra) or Onchain(onchain.balance + cp.deposit_amount,
                                                             onchain.total_claimed, onchain.withdraw_requested_at,
                                                             onchain.refund_nonce)
            if row is None:
                if not await self.store.create_locked(cid, p.requirements.network, cp.config.to_wire(),
                                                      p.requirements.to_wire(), base, onchain, owner,
                                                      self.flow.lease):
                    fresh = await self._take(cid, owner)
                    if fresh is None:
                        return self._refuse(p, req, pl.CHANNEL_BUSY)
                    leased = True
                    if fresh.charged != base:  # someone else moved the channel meanwhile
                        return self._corrective(p, req, cid, fresh, onchain, fresh.charged)
                leased = True
            elif local is None:  # the facilitator's snapshot (or the deposit's) refreshes the mirror
                await self.store.sync(cid, owner, onchain)
            leased = False  # handed to the handler's finish
            return (cp, cid, owner, base, onchain, deposit)
        finally:
            if leased:
                await self.store.release(cid, owner)

    def _fresh_local(self, cp: pl.ChannelPayload, row: ChannelRow | None, p: Proceed,
                     chain_id: int) -> Onchain | None:
        """A plain EOA voucher on a channel whose mirror is fresh: check it here (one ``ecrecover``)."""
        if cp.type != "voucher" or row is None or int(cp.config.payer_authorizer, 16) == 0:
            return None
        if time.time() - row.synced_at > ONCHAIN_TTL or row.withdraw_requested_at:
            return None
        assert isinstance(p.requirements, PaymentRequirements)
        if check_voucher(cp, p.requirements, chain_id, row.balance, row.total_claimed) is not None:
            return None  # let the facilitator give the reason (and refresh the mirror)
        return Onchain(row.balance, row.total_claimed, row.withdraw_requested_at, row.refund_nonce)

    def _run(self, p: Proceed, req: RequestInfo, held: tuple[Any, ...], lock: asyncio.Lock) -> Plan:
        from paywire.server.flow import PaymentInfo, RunBuffered

        cp, cid, owner, base, onchain, deposit = held
        offer = p.offer
        meter = Meter(offer.amount, p.decimals)
        info = PaymentInfo(0, p.route.key, cp.config.payer, offer.amount, p.decimals, offer.asset, offer.network,
                           offer.pay_to, offer.scheme, 2, None, deposit.transaction if deposit else None, p.protocol,
                           p.identity, meter=meter)

        keep = _LeaseKeeper(self.store, cid, owner, self.flow.lease, self.flow.max_handler_seconds)

        async def finish(result: Any) -> Reply:
            keep.stop()
            try:
                return await self._finish(p, req, cp, cid, owner, base, onchain, deposit, meter, result)
            finally:
                lock.release()

        return RunBuffered(info, finish)

    async def _finish(self, p: Proceed, req: RequestInfo, cp: pl.ChannelPayload, cid: str, owner: str, base: int,
                      onchain: Onchain, deposit: SettleResponse | None, meter: Meter, result: Any) -> Reply:
        seller = self.flow.seller
        if isinstance(result, BaseException) or result.status >= 400:  # not charged; the voucher may be retried
            await self.store.release(cid, owner)
            if isinstance(result, BaseException):
                return seller.handler_failed()
            return Reply(result.status, result.headers, result.body)
        headers = tuple(h for h in result.headers if h[0].lower() != SETTLEMENT_OVERRIDES)
        try:
            override = override_of(result.headers)
            charge = meter.charged if meter.charged is not None else (
                meter.charge(override) if override is not None else meter.maximum)
        except ValueError as exc:
            log.error("paywire: the handler's charge was refused, nothing charged: %s", exc)
            await self.store.release(cid, owner)
            return seller.handler_failed()
        signature = "0x" + cp.voucher.signature.hex()
        sale = _sale(p, req, cp, cid, base + charge, charge, signature, deposit, result.status) if charge else None
        if not await self.store.commit(cid, owner, base, charge, cp.voucher.max_claimable, signature, sale=sale):
            log.error("paywire: channel %s changed under a request (lease lost); not charged", cid)
            return json_reply(409, {"error": pl.CHANNEL_BUSY, "message": "the channel changed while serving; "
                                                                         "you were not charged: retry"})
        state = pl.channel_state_wire(b.bytes32(cid), onchain.balance, onchain.total_claimed,
                                      onchain.withdraw_requested_at, onchain.refund_nonce, base + charge)
        res = SettleResponse(True, deposit.transaction if deposit else "", p.requirements.network,
                             cp.config.payer, amount=deposit.amount if deposit else None,
                             extra={"chargedAmount": str(charge), "channelState": state})
        return Reply(result.status, seller.paid_headers(res, False, headers), result.body)

    async def _refund(self, p: Proceed, req: RequestInfo, cp: pl.ChannelPayload, cid: str, owner: str,
                      row: ChannelRow | None, onchain: Onchain, charged: int, chain_id: int) -> Plan:
        """A cooperative refund: claim what was charged, return (part of) the rest; the route is not run."""
        from paywire.server.flow import Respond

        assert isinstance(p.payload, PaymentPayload) and isinstance(p.requirements, PaymentRequirements)
        remainder = onchain.balance - charged
        if remainder <= 0:
            return self._refuse(p, req, pl.REFUND_NO_BALANCE)
        amount = cp.refund_amount if cp.refund_amount is not None else remainder
        if amount > remainder:
            return self._refuse(p, req, pl.REFUND_NO_BALANCE)
        claims = []
        if charged > onchain.total_claimed:
            claims.append(b.VoucherClaim(cp.config, cp.voucher.max_claimable, cp.voucher.signature, charged).to_wire())
        enriched = {**p.payload.payload, "amount": str(amount), "refundNonce": str(onchain.refund_nonce),
                    "claims": claims}
        payload = dataclasses.replace(p.payload, payload=enriched)
        outcome, res, detail = await self.flow._settle("x402", payload, p.requirements, False)
        if outcome != "settled" or res is None:
            if outcome == "unresolved":
                return Respond(self.flow.seller.settlement_pending(res, detail))
            return self._refuse(p, req, (res.error_reason if res else None) or pl.REFUND_FAILED)
        after = _onchain(res.extra) or Onchain(onchain.balance - amount, max(charged, onchain.total_claimed),
                                               onchain.withdraw_requested_at, onchain.refund_nonce + 1)
        if row is not None:  # kept even when drained: the claim manager still sweeps its claims to the receiver
            await self.store.mark_claimed(cid, charged)
            await self.store.sync(cid, owner, after)
        state = pl.channel_state_wire(cp.channel_id, after.balance, after.total_claimed,
                                      after.withdraw_requested_at, after.refund_nonce, charged)
        out = SettleResponse(True, res.transaction, p.requirements.network, cp.config.payer, amount=res.amount,
                             extra={"channelState": state})
        reply = json_reply(200, {"message": "Refund acknowledged", "channelId": cid})
        return Respond(Reply(200, self.flow.seller.paid_headers(out, False, reply.headers), reply.body))


__all__ = ["ONCHAIN_TTL", "ChannelSeller"]
