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
        for _ in range(1200):  # the sequencer runs in the other process: poll its HTTP answer, bounded
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


async def test_serve_anchors_every_k_checkpoints_on_the_embedded_chain(sqlite_url: str) -> None:
    from paywire.audit.anchor import Anchor, Anchorer, check_anchors
    from paywire.audit.store import enqueue
    from paywire.chain.server import make_app
    from paywire.serving import serve_asgi
    from tests.helpers import close_devnet, new_devnet

    net = await new_devnet("embedded")
    signer = Signer.generate(ORIGIN)
    store = await AuditStore.open(sqlite_url)
    reader = Anchorer(store, None, net.info.network)

    async def anchors_once(count: int) -> list[Anchor]:
        found: list[Anchor] = []
        for _ in range(1200):  # the sequencer runs in the other process: poll its anchors table, bounded
            found = await reader.anchors()
            if len(found) >= count:
                break
            await asyncio.sleep(0.05)
        return found

    for i in range(5):
        await store.enqueue(event(i))
    proc = None
    try:
        async with serve_asgi(make_app(net.chain.transport)) as rpc:  # the node, as serve reaches it over HTTP
            proc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "paywire.cli.main", "audit", "serve", "--store", sqlite_url, "--no-http",
                "--every-entries", "5", "--batch", "5", "--anchor-rpc", rpc, "--anchor-every", "2",
                env={**os.environ, "PAYWIRE_AUDIT_KEY": signer.skey,
                     "PAYWIRE_AUDIT_ANCHOR_KEY": "0x" + net.facilitator.private_key.hex(),
                     "PYTHONPATH": str(Path(__file__).parent.parent / "src")},
                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
            first = await anchors_once(1)
            assert [a.size for a in first] == [5], f"the first checkpoint (5 entries) is anchored: {first}"
            async with store.db.transaction() as tx:  # one commit: two more checkpoints of 5
                for i in range(5, 15):
                    await enqueue(tx, event(i))
            both = await anchors_once(2)
            assert [a.size for a in both] == [5, 15], f"then every 2nd checkpoint (not 10, but 15): {both}"
            assert {a.network for a in both} == {net.info.network}, "the node's chain id names the network"
            proc.send_signal(signal.SIGTERM)
            assert await asyncio.wait_for(proc.wait(), 30) == 0, "serve exits 0 on SIGTERM"
        assert await check_anchors(store, net.chain) == (2, []), "the anchor transactions are on the chain"
    finally:
        if proc is not None and proc.returncode is None:
            proc.kill()
            await proc.wait()
        await store.aclose()
        await close_devnet(net)
