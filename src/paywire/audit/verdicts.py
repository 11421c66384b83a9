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


class VerdictTally:
    """Counts verdicts; :meth:`note` queues the summary when ``interval`` has passed since the last one."""

    def __init__(self, db: Database, instance: str, *, interval: float = 60.0,
                 clock: Callable[[], float] = time.time) -> None:
        self.db = db
        self.instance = instance
        self.interval = interval
        self.clock = clock
        self.counts: dict[tuple[str, str], int] = {}
        self.since = clock()
        self._flushing: asyncio.Lock | None = None

    def add(self, valid: bool, reason: str | None, network: str) -> None:
        key = (network[:64], "valid" if valid else (reason or "invalid")[:64])
        if key not in self.counts and len(self.counts) >= MAX_KEYS:
            key = ("other", "other")
        self.counts[key] = self.counts.get(key, 0) + 1

    async def note(self, valid: bool, reason: str | None, network: str) -> None:
        """Count one verdict; queue the summary if one is due (a failing write is logged, never raised: the
        verdict's caller must get its answer)."""
        self.add(valid, reason, network)
        if self.clock() - self.since >= self.interval:
            try:
                await self.flush()
            except Exception:
                log.exception("audit: could not queue the verify summary")

    async def flush(self) -> bytes | None:
        """Queue the summary of the verdicts counted since the last one (none: nothing to report)."""
        if self._flushing is None:
            self._flushing = asyncio.Lock()
        async with self._flushing:
            if not self.counts:
                return None
            counts, since, now = self.counts, self.since, self.clock()
            self.counts, self.since = {}, now
            event = summary_event(self.instance, counts, since, now)
            await enqueue(self.db, event, now=now)
            return event


def summary_event(instance: str, counts: dict[tuple[str, str], int], since: float, until: float) -> bytes:
    """One ``facilitator.verify_summary`` event: ``[[network, "valid" | reason, n], …]`` over [since, until)."""
    data: dict[str, Any] = {"verdicts": [[net, verdict, n] for (net, verdict), n in sorted(counts.items())],
                            "total": sum(counts.values()), "since_ms": int(since * 1000)}
    return make_event("facilitator", "facilitator.verify_summary", instance=instance, time=until,
                      subject={"instance": instance}, data=data)
