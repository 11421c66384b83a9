"""``paywire audit witness``: a separate process, with its own key, that follows one log over HTTP.

Each round it fetches the log's latest checkpoint, asks for the consistency proof from the last checkpoint it
cosigned, checks both (:mod:`paywire.audit.witness_core`), persists its new state *before* answering, and posts
its cosignature back to the log (``POST /audit/cosignature``). A fork or rewrite raises
:class:`~paywire.audit.witness_core.WitnessRefusal`: the CLI logs one line and exits non-zero, and the state file
keeps the last good checkpoint (plus the refused one in ``refused.txt`` beside it, as evidence).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
import os
import time
from collections.abc import Sequence
from pathlib import Path

from paywire.audit.note import Signer, Verifier
from paywire.audit.witness_core import Cosigned, WitnessRefusal, WitnessState, check_and_cosign
from paywire.facilitator.metrics import Metrics
from paywire.transport.keepalive import HttpError, KeepAliveClient

log = logging.getLogger("paywire.audit.witness")


class LogUnavailable(Exception):
    """The log did not answer as expected (not a refusal: the witness tries again next round)."""


def witness_metrics() -> Metrics:
    """Prometheus series of a witness (``paywire_audit_witness_*``)."""
    m = Metrics(prefix="paywire_audit_witness_")
    m.describe("cosigned_total", "counter", "Checkpoints cosigned.")
    m.describe("refused_total", "counter", "Checkpoints refused, by kind (fork, inconsistent, shrunk, …).")
    m.describe("unavailable_total", "counter", "Rounds where the log did not answer.")
    m.describe("cosigned_size", "gauge", "Tree size of the last checkpoint cosigned.")
    return m


class Witness:
    """Follows the log at ``log_url`` (the base URL the ``/audit`` routes hang off)."""

    def __init__(self, log_url: str, *, origin: str, log_keys: Sequence[Verifier], signer: Signer,
                 state_path: str | Path, timeout: float = 10.0) -> None:
        self.client = KeepAliveClient(log_url.rstrip("/"), timeout=timeout)
        self.origin, self.log_keys, self.signer = origin, list(log_keys), signer
        self.state_path = Path(state_path)
        self.metrics = witness_metrics()

    def state(self) -> WitnessState | None:
        try:
            return WitnessState.from_json(self.state_path.read_text())
        except FileNotFoundError:
            return None

    def _persist(self, state: WitnessState) -> None:
        tmp = self.state_path.with_suffix(".tmp")
        self.state_path.parent.mkdir(parents=True, exist_ok=True)
        with open(tmp, "w") as f:
            f.write(state.to_json())
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.state_path)

    async def _get(self, path: str) -> str:
        status, body = await self.client.send("GET", path)
        if status != 200:
            raise LogUnavailable(f"GET {path}: HTTP {status}: {body[:200]!r}")
        return body.decode()

    async def step(self) -> Cosigned | None:
        """One round: the new cosignature, or ``None`` when the log has not moved."""
        note_text = await self._get("/audit/checkpoint")
        state = self.state()
        size_line = note_text.split("\n")[1] if note_text.count("\n") > 2 else ""
        new_size = int(size_line) if size_line.isdigit() else -1
        old = state.size if state is not None else 0
        proof: list[bytes] = []
        if 0 < old < new_size:
            lines = await self._get(f"/audit/consistency?old={old}&new={new_size}")
            proof = [base64.b64decode(line) for line in lines.split("\n") if line]
        try:
            result = await check_and_cosign(note_text, proof, state=state, log_keys=self.log_keys,
                                            signer=self.signer, origin=self.origin, now=int(time.time()))
        except WitnessRefusal as exc:
            self.metrics.inc("refused_total", kind=exc.kind)
            with contextlib.suppress(OSError):
                self.state_path.with_name(self.state_path.name + ".refused.txt").write_text(note_text)
            raise
        if state is not None and result.checkpoint.size == state.size:
            return None
        self._persist(result.state)
        status, body = await self.client.send("POST", f"/audit/cosignature?size={result.checkpoint.size}",
                                              result.signature.line.encode(), content_type="text/plain")
        if status != 200:
            log.warning("audit witness: the log did not keep the cosignature of size %d: HTTP %d %s",
                        result.checkpoint.size, status, body[:200])
        self.metrics.inc("cosigned_total")
        self.metrics.set("cosigned_size", result.checkpoint.size)
        log.info("audit witness: cosigned %s size %d", self.origin, result.checkpoint.size)
        return result

    async def run(self, stop: asyncio.Event, *, interval: float = 5.0) -> None:
        """Rounds until ``stop`` is set; a :class:`WitnessRefusal` ends the run (raised to the caller)."""
        while not stop.is_set():
            try:
                await self.step()
            except LogUnavailable as exc:
                self.metrics.inc("unavailable_total")
                log.warning("audit witness: %s", exc)
            except (OSError, HttpError) as exc:
                self.metrics.inc("unavailable_total")
                log.warning("audit witness: log unreachable: %s", exc)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), interval)

    async def aclose(self) -> None:
        await self.client.aclose()
