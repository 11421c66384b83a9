"""The background reconciler: on start, every ``interval`` seconds and whenever a lease of an open settlement
record runs out, resolve open records (and resume claims nobody is sending)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

from paywire.facilitator.core import Facilitator
from paywire.facilitator.metrics import Metrics

log = logging.getLogger(__name__)

__all__ = ["Reconciler"]


class Reconciler:
    """Runs ``facilitator.reconcile_once()`` now and then every ``interval`` seconds until stopped; sooner when
    a lease of an open record runs out (its owner may be dead: take it over while the authorization is still
    valid) and ``follow_up`` seconds after a pass sent something (to record its outcome).

    Every facilitator instance may run one: records move by compare-and-set, so instances sharing a store
    (fleet mode) never undo each other's work, and any of them finishes what a dead one left open. The first
    pass at start resumes this instance's own open records (same ``instance_id`` after a restart) at once.
    """

    def __init__(self, facilitator: Facilitator, *, interval: float = 5.0, metrics: Metrics | None = None,
                 follow_up: float = 1.0) -> None:
        self.facilitator = facilitator
        self.interval = interval
        self.follow_up = follow_up
        self.metrics = metrics
        self._task: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()
        self.passes = 0

    async def run_once(self) -> dict[str, int]:
        stats = await self.facilitator.reconcile_once()
        self.passes += 1
        if self.metrics is not None:
            self.metrics.inc("reconcile_runs_total")
            for outcome, n in stats.items():
                if n and outcome != "checked":
                    self.metrics.inc("reconciled_total", n, outcome=outcome)
        return stats

    def start(self) -> None:
        if self._task is None or self._task.done():
            self._wake = asyncio.Event()
            self._task = asyncio.create_task(self._loop(), name="paywire-reconciler")

    def poke(self) -> None:
        """Run the next pass now."""
        self._wake.set()

    async def next_pass_in(self, stats: dict[str, int]) -> float:
        """Seconds until the next pass: ``interval``, or less when a lease runs out sooner or a pass sent."""
        wait = self.interval
        if stats.get("resumed") or stats.get("rebroadcast") or stats.get("replaced"):
            wait = min(wait, self.follow_up)
        store = self.facilitator.store
        if store is not None:
            try:
                end = await store.next_lease_end()
            except Exception:  # the store is in trouble: the pass itself will say so
                end = None
            if end is not None:
                wait = min(wait, max(end - time.time(), 0.0) + 0.05)
        return wait

    async def _loop(self) -> None:
        while True:
            stats: dict[str, int] = {}
            try:
                stats = await self.run_once()
                if stats.get("checked"):
                    log.info("reconciler: %s", stats)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("reconciler pass failed")
                if self.metrics is not None:
                    self.metrics.inc("reconcile_errors_total")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=await self.next_pass_in(stats))
            self._wake.clear()

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
