"""`paywire audit serve` as a process: it sequences what the application queued, signs a checkpoint, serves it
and the proofs over HTTP, and stops cleanly on SIGTERM."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from pathlib import Path

from audit_support import ORIGIN, event

from paywire.audit.note import Signer
from paywire.audit.proofs import verify_proof
from paywire.audit.store import AuditStore
from paywire.transport.keepalive import KeepAliveClient


async def test_serve_sequences_signs_and_serves_until_sigterm(sqlite_url: str) -> None:
    signer = Signer.generate(ORIGIN)
    store = await AuditStore.open(sqlite_url)
    for i in range(5):
        await store.enqueue(event(i))
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "paywire.cli.main", "audit", "serve", "--store", sqlite_url, "--every-entries", "5",
        env={**os.environ, "PAYWIRE_AUDIT_KEY": signer.skey, "PYTHONPATH": str(Path(__file__).parent.parent / "src")},
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    try:
        assert proc.stderr is not None
        line = (await asyncio.wait_for(proc.stderr.readline(), 60)).decode()
        assert line.startswith("serving http://127.0.0.1:"), f"serve announces its URL: {line!r}"
        base = line.split()[1].removesuffix("/audit/checkpoint")
        client = KeepAliveClient(base)
        status, body = 404, b""
        for _ in range(300):  # the sequencer runs in the other process: poll its HTTP answer, bounded
            status, body = await client.send("GET", "/audit/checkpoint")
            if status == 200:
                break
            await asyncio.sleep(0.05)
        assert status == 200, f"a checkpoint is served once the queued events are sequenced: {status} {body!r}"
        assert body.decode().split("\n")[:2] == [ORIGIN, "5"], f"the checkpoint covers the 5 events: {body!r}"
        status, proof = await client.send("GET", "/audit/proof/3")
        assert status == 200, f"the proof of entry 3 is served: {proof!r}"
        row = await store.entry(3)
        assert row is not None
        assert verify_proof(proof.decode(), row.entry, [signer.verifier]).index == 3, "and verifies offline"
        await client.aclose()
        proc.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(proc.wait(), 30) == 0, "serve exits 0 on SIGTERM"
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
        await store.aclose()
