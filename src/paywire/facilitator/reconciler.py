"""The background reconciler: on start and every ``interval`` seconds, resolve open settlement records."""

from __future__ import annotations

import asyncio
import contextlib
import logging

from paywire.facilitator.core import Facilitator
from paywire.facilitator.metrics import Metrics

log = logging.getLogger(__name__)

__all__ = ["Reconciler"]


class Reconciler:
    """Runs ``facilitator.reconcile_once()`` now and then every ``interval`` seconds until stopped.

    Every facilitator instance may run one: records move by compare-and-set, so instances sharing a store
    (fleet mode) never undo each other's work, and any of them finishes what a dead one left open.
    """

    def __init__(self, facilitator: Facilitator, *, interval: float = 5.0, metrics: Metrics | None = None) -> None:
        self.facilitator = facilitator
        self.interval = interval
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

    async def _loop(self) -> None:
        while True:
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
                await asyncio.wait_for(self._wake.wait(), timeout=self.interval)
            self._wake.clear()

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
