"""The witness over real HTTP: it cosigns each checkpoint that extends the last one it cosigned (checking the
consistency proof the log serves), the log keeps only cosignatures that verify, and a rewritten log is refused
loudly — `paywire audit witness` exits 3 and logs the refusal."""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

import pytest
from audit_support import ORIGIN, event, truncate

from paywire.audit.http import audit_app
from paywire.audit.note import COSIGNATURE_V1, Signer
from paywire.audit.ops import verify_store
from paywire.audit.sequencer import CheckpointPolicy, Sequencer
from paywire.audit.store import AuditStore
from paywire.audit.witness import Witness
from paywire.audit.witness_core import WitnessRefusal, WitnessState
from paywire.serving import serve_asgi
from paywire.transport.keepalive import KeepAliveClient


async def _grow(store: AuditStore, seq: Sequencer, start: int, count: int, *, amount: str = "1000") -> None:
    for i in range(start, start + count):
        await store.enqueue(event(i, amount=amount))
    await seq.drain()
    await seq.integrate(force_checkpoint=True)


async def test_the_witness_cosigns_consistent_checkpoints_and_refuses_a_rewrite(sqlite_url: str,
                                                                               tmp_path: Path) -> None:
    store = await AuditStore.open(sqlite_url)
    log_key = Signer.generate(ORIGIN)
    w_key = Signer.generate("witness.example/w1", sig_type=COSIGNATURE_V1)
    seq = Sequencer(store, log_key, batch=50, policy=CheckpointPolicy(every_entries=1000))
    state = tmp_path / "witness.json"
    try:
        async with serve_asgi(audit_app(store, witness_keys=[w_key.verifier])) as url:
            client = KeepAliveClient(url)
            status, _ = await client.send("GET", "/audit/checkpoint")
            assert status == 404, "no checkpoint before the first entry"
            witness = Witness(url, origin=ORIGIN, log_keys=[log_key.verifier], signer=w_key, state_path=state)
            await _grow(store, seq, 0, 13)
            first = await witness.step()
            assert first is not None and first.checkpoint.size == 13, "the first checkpoint is cosigned"
            await _grow(store, seq, 13, 20)
            second = await witness.step()
            assert second is not None and second.checkpoint.size == 33, "the next one, via a consistency proof"
            assert await witness.step() is None, "nothing new: no new cosignature"
            report = await verify_store(store, [log_key.verifier], witness_keys=[w_key.verifier],
                                        cosignatures_required=1)
            assert report.ok, f"the log verifies: {report.findings}"
            assert report.witnessed_size == 33, "every entry is in a cosigned checkpoint"

            stranger = Signer.generate("witness.example/w1", sig_type=COSIGNATURE_V1)
            status, body = await client.send("POST", "/audit/cosignature?size=33",
                                             (await _cosig_line(store, stranger, 33)).encode(),
                                             content_type="text/plain")
            assert status == 403, f"a cosignature by an unknown key is not kept: {status} {body!r}"
            status, _ = await client.send("GET", "/audit/consistency?old=40&new=3")
            assert status == 400, "an impossible consistency request is a 400"
            status, _ = await client.send("GET", "/audit/proof/999")
            assert status == 404, "a proof of an entry that does not exist is a 404"

            # The operator rewrites history from entry 20 on and re-signs with the log's own key.
            await truncate(store, 20)
            await _grow(store, Sequencer(store, log_key, batch=50), 20, 20, amount="1")
            with pytest.raises(WitnessRefusal) as refused:
                await witness.step()
            assert refused.value.kind == "inconsistent", f"refused as a rewrite: {refused.value}"
            assert witness.metrics.value("refused_total", kind="inconsistent") == 1, "the refusal is counted"
            assert 'paywire_audit_witness_refused_total{kind="inconsistent"} 1' in witness.metrics.render(), (
                "and exported as a Prometheus counter")
            assert WitnessState.from_json(state.read_text()).size == 33, "the state keeps the last good checkpoint"

            proc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "paywire.cli.main", "audit", "witness", "--log", url, "--log-key",
                log_key.verifier.vkey, "--state", str(state), "--once",
                env={**os.environ, "PAYWIRE_WITNESS_KEY": w_key.skey,
                     "PYTHONPATH": str(Path(__file__).parent.parent / "src")},
                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
            out, err = await asyncio.wait_for(proc.communicate(), 120)
            assert proc.returncode == 3, f"the witness CLI exits 3 on a rewrite: {out!r} {err!r}"
            assert b"REFUSED" in err and b"inconsistent" in err, f"and says why: {err!r}"
            assert b"ERROR audit witness REFUSED" in err, f"and logs the refusal: {err!r}"
            await witness.aclose()
            await client.aclose()
    finally:
        await store.aclose()


async def _cosig_line(store: AuditStore, signer: Signer, size: int) -> str:
    from paywire.audit.note import cosign, parse_note

    note = await store.checkpoint(size)
    assert note is not None
    return (await cosign(parse_note(note).text, signer, 1_700_000_000)).line



async def test_bad_requests_and_a_damaged_store_get_4xx_not_5xx(sqlite_url: str) -> None:
    store = await AuditStore.open(sqlite_url)
    seq = Sequencer(store, Signer.generate(ORIGIN), batch=50, policy=CheckpointPolicy(every_seconds=1e9))
    try:
        await _grow(store, seq, 0, 13)
        await store.enqueue(event(13))
        await seq.integrate()  # logged, not yet in a checkpoint
        async with serve_asgi(audit_app(store)) as url:
            client = KeepAliveClient(url)
            for path, want in [("/audit/proof/abc", 400), ("/audit/proof/13", 409), ("/audit/proof/14", 404), ("/audit/consistency?old=x", 400),
                               ("/audit/consistency?old=3&new=99", 400)]:
                status, body = await client.send("GET", path)
                assert status == want, f"GET {path}: {status} {body!r}"
            status, body = await client.send("POST", "/audit/cosignature?size=13", b"not a signature line\n",
                                             content_type="text/plain")
            assert status == 400, f"a malformed cosignature is a 400: {status} {body!r}"
            await store.db.execute("DELETE FROM audit_log WHERE seq = 4")
            status, _ = await client.send("GET", "/audit/proof/4")
            assert status == 404, "a proof of a deleted entry is a 404, not a server error"
            await store.db.execute("DELETE FROM audit_nodes")
            status, _ = await client.send("GET", "/audit/consistency?old=5&new=13")
            assert status == 404, "a consistency proof over missing tree nodes is a 404, not a server error"
            await client.aclose()
    finally:
        await store.aclose()


async def test_the_witness_process_exports_its_metrics(sqlite_url: str, tmp_path: Path) -> None:
    store = await AuditStore.open(sqlite_url)
    log_key = Signer.generate(ORIGIN)
    w_key = Signer.generate("witness.example/w1", sig_type=COSIGNATURE_V1)
    try:
        await _grow(store, Sequencer(store, log_key, batch=50), 0, 7)
        async with serve_asgi(audit_app(store, witness_keys=[w_key.verifier])) as url:
            proc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "paywire.cli.main", "audit", "witness", "--log", url, "--log-key",
                log_key.verifier.vkey, "--state", str(tmp_path / "w.json"), "--interval", "0.05",
                "--metrics-port", "0",
                env={**os.environ, "PAYWIRE_WITNESS_KEY": w_key.skey,
                     "PYTHONPATH": str(Path(__file__).parent.parent / "src")},
                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
            try:
                assert proc.stderr is not None
                line = ""
                for _ in range(50):
                    line = (await asyncio.wait_for(proc.stderr.readline(), 60)).decode()
                    if line.startswith("metrics on "):
                        break
                metrics = KeepAliveClient(line.split()[2].removesuffix("/metrics"))
                text = ""
                for _ in range(1200):  # the witness runs in another process: poll its metrics, bounded
                    _, body = await metrics.send("GET", "/metrics")
                    text = body.decode()
                    if "paywire_audit_witness_cosigned_size 7" in text:
                        break
                    await asyncio.sleep(0.05)
                assert "paywire_audit_witness_cosigned_total 1" in text, f"one checkpoint cosigned:\n{text}"
                assert "paywire_audit_witness_cosigned_size 7" in text, f"of size 7:\n{text}"
                await metrics.aclose()
            finally:
                proc.terminate()
                await proc.wait()
    finally:
        await store.aclose()
