"""Verify verdicts in the audit log, bounded: tallies, not one event per call.

Anyone who can reach a seller can make its facilitator verify (a made-up payment header costs nothing), so an
event per verdict would let unpaid requests grow the log without bound. Instead each facilitator instance counts
its verdicts in memory (valid / invalid by reason, per network) and queues one ``facilitator.verify_summary``
event at most every ``interval`` seconds, when there is something to report: the log grows with time, never with
the request rate. A crash loses at most the last interval's tallies (verdicts move no money; every settlement
has its own events).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any

from paywire.audit.events import make_event
from paywire.audit.store import enqueue
from paywire.store.db import Database

log = logging.getLogger("paywire.audit")

MAX_KEYS = 256
"""Distinct (network, verdict) tallies kept per interval; further ones are counted under ``other``."""


class Tally:
    """Counts keyed occurrences in memory; :meth:`count` queues one summary event (``kind``, component
    ``component``) when ``interval`` has passed since the last one, and :meth:`flush` queues it now."""

    component = "facilitator"
    kind = "facilitator.verify_summary"
    field = "verdicts"

    def __init__(self, db: Database, instance: str, *, interval: float = 60.0,
                 clock: Callable[[], float] = time.time) -> None:
        self.db = db
        self.instance = instance
        self.interval = interval
        self.clock = clock
        self.counts: dict[tuple[str, ...], int] = {}
        self.since = clock()
        self._flushing: asyncio.Lock | None = None

    def add(self, *key: str) -> None:
        k = tuple(part[:64] for part in key)
        if k not in self.counts and len(self.counts) >= MAX_KEYS:
            k = ("other",) * len(key)
        self.counts[k] = self.counts.get(k, 0) + 1

    async def count(self, *key: str) -> None:
        """Count one occurrence; queue the summary if one is due (a failing write is logged, never raised: the
        caller must get its answer)."""
        self.add(*key)
        if self.clock() - self.since >= self.interval:
            try:
                await self.flush()
            except Exception:
                log.exception("audit: could not queue %s", self.kind)

    async def flush(self) -> bytes | None:
        """Queue the summary of what was counted since the last one (none: nothing to report)."""
        if self._flushing is None:
            self._flushing = asyncio.Lock()
        async with self._flushing:
            if not self.counts:
                return None
            counts, since, now = self.counts, self.since, self.clock()
            self.counts, self.since = {}, now
            data: dict[str, Any] = {self.field: [[*k, n] for k, n in sorted(counts.items())],
                                    "total": sum(counts.values()), "since_ms": int(since * 1000)}
            event = make_event(self.component, self.kind, instance=self.instance, time=now,
                               subject={"instance": self.instance}, data=data)
            await enqueue(self.db, event, now=now)
            return event


class VerdictTally(Tally):
    """The facilitator's verify verdicts: ``[[network, "valid" | reason, n], …]``."""

    async def note(self, valid: bool, reason: str | None, network: str) -> None:
        await self.count(network, "valid" if valid else (reason or "invalid"))


class ChallengeTally(Tally):
    """The seller's 402 challenges (x402 offers, MPP challenges, L402 tokens and invoices issued):
    ``[[route, "x402+mpp+l402", n], …]``: issuance is unpaid traffic, so it is tallied, never logged per request."""

    component = "seller"
    kind = "seller.challenges_summary"
    field = "challenges"

    async def note(self, route: str, protocols: str) -> None:
        await self.count(route, protocols)
