"""The seller's claim and settle manager for ``batch-settlement``: turns committed charges into on-chain claims,
many channels per transaction, then sweeps claimed funds to the receiver in one transfer per (receiver, token).

``claim()`` takes every channel charged beyond what is claimed (store flag ``claim_due``), groups them by network
and receiver authorizer and sends one ``claim`` per group of at most ``max_claims`` rows through the facilitator
(which signs the ``ClaimBatch`` when the channels delegate to it). ``settle()`` sends one ``settle`` per
(network, receiver, token). ``run()`` does both on a schedule, and earlier once ``threshold`` atomic units wait
unclaimed. State lives in the store, so a restarted seller picks up where it stopped (a claim is cumulative: one
sent twice is a no-op on chain).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field

from paywire.evm import batch as b
from paywire.facilitator.client import FacilitatorClient
from paywire.store.channels import ChannelRow, ChannelStore
from paywire.x402.models import PaymentPayload, PaymentRequirements, SettleResponse

log = logging.getLogger("paywire.server.channels")


@dataclass
class ClaimManager:
    store: ChannelStore
    facilitator: FacilitatorClient
    max_claims: int = 100
    interval: float = 60.0
    threshold: int | None = None
    transactions: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)
    """Channels whose own claim failed last time, with the reason (they stay due)."""
    landed: asyncio.Event = field(default_factory=asyncio.Event)
    """Set after each :meth:`run` pass that claimed and swept something (clear it to wait for the next)."""

    async def claim(self) -> int:
        """Claim every channel charged beyond its claims; returns how many channels were claimed. A batch that
        reverts is split until the rows that can land do (``failed`` names the others, retried next pass)."""
        done = 0
        self.failed.clear()
        while True:
            rows = await self.store.claim_due(10 * self.max_claims)
            groups: dict[tuple[str, str], list[ChannelRow]] = {}
            for r in rows:
                if r.signature and r.charged > r.claimed and r.channel_id not in self.failed:
                    groups.setdefault((r.network, str(r.config.get("receiverAuthorizer"))), []).append(r)
            if not groups:
                return done
            progressed = False
            for group in groups.values():
                for i in range(0, len(group), self.max_claims):
                    chunk = group[i:i + self.max_claims]
                    before = len(self.failed)
                    if await self._claim(chunk):
                        done += len(chunk) - sum(1 for r in chunk if r.channel_id in self.failed)
                        progressed = True
                    elif len(self.failed) == before:
                        return done
            if not progressed:
                return done

    async def _claim(self, rows: Sequence[ChannelRow]) -> bool:
        claims = [b.VoucherClaim(b.ChannelConfig.from_wire(r.config), r.signed_max, b.hex_bytes(r.signature),
                                 r.charged) for r in rows]
        req = PaymentRequirements.from_wire(rows[0].requirements)
        res = await self._send(req, {"type": "claim", "claims": [c.to_wire() for c in claims]})
        if not res.success:
            if len(rows) > 1:  # one bad row (e.g. a payer's withdrawal won the race) must not block the others
                half = len(rows) // 2
                first, second = await self._claim(rows[:half]), await self._claim(rows[half:])
                return first or second
            log.error("paywire: claiming channel %s failed: %s %s", rows[0].channel_id, res.error_reason,
                      res.error_message)
            self.failed[rows[0].channel_id] = res.error_reason or "claim_failed"
            return False
        for r in rows:
            await self.store.mark_claimed(r.channel_id, r.charged)
            self.failed.pop(r.channel_id, None)
        return True

    async def settle(self) -> list[SettleResponse]:
        """Sweep claimed funds to each receiver (one transaction per network, receiver and token)."""
        seen: dict[tuple[str, str, str], PaymentRequirements] = {}
        for r in await self.store.all(10_000):
            req = PaymentRequirements.from_wire(r.requirements)
            seen.setdefault((r.network, req.pay_to.lower(), req.asset.lower()), req)
        out = []
        for req in seen.values():
            res = await self._send(req, {"type": "settle", "receiver": req.pay_to, "token": req.asset})
            if res.success and res.transaction:
                self.transactions.append(res.transaction)
            out.append(res)
        return out

    async def _send(self, req: PaymentRequirements, inner: dict[str, object]) -> SettleResponse:
        res = await self.facilitator.settle(PaymentPayload(accepted=req, payload=inner), req)
        if res.success and res.transaction and inner["type"] == "claim":
            self.transactions.append(res.transaction)
        return res

    async def due(self) -> int:
        """Atomic units charged and not yet claimed (over the channels the store flags)."""
        return sum(r.charged - r.claimed for r in await self.store.claim_due(10_000))

    async def run(self, stop: asyncio.Event | None = None, poll: float = 1.0) -> None:
        """Claim and settle every ``interval`` seconds, or sooner once ``threshold`` waits unclaimed."""
        stop = stop or asyncio.Event()
        waited = 0.0
        while not stop.is_set():
            try:
                if waited >= self.interval or (self.threshold is not None and await self.due() >= self.threshold):
                    if await self.claim():
                        await self.settle()
                        self.landed.set()
                    waited = 0.0
            except Exception:  # keep the loop alive; the next pass retries
                log.exception("paywire: claim/settle pass failed")
            try:
                await asyncio.wait_for(stop.wait(), poll)
            except TimeoutError:
                waited += poll


__all__ = ["ClaimManager"]
