"""Our checkpoints and proofs verify with an independent implementation: Go's golang.org/x/mod/sumdb/note
(signed notes, Ed25519 key ids) and sumdb/tlog (RFC 6962 inclusion and consistency proofs), through a small
verifier built from tests/audit_go/main.go with Debian's Go toolchain and x/mod sources (offline, GOPATH mode).
Skips, saying what to install, when those are not on the machine; .ci/run installs them."""

from __future__ import annotations

import asyncio
import base64
import os
import shutil
import subprocess
from pathlib import Path

import pytest
from audit_support import ORIGIN, event

from paywire.audit.checkpoint import TlogProof
from paywire.audit.note import Signer
from paywire.audit.ops import prove
from paywire.audit.sequencer import CheckpointPolicy, Sequencer
from paywire.audit.store import AuditStore

GO_SRC = Path(__file__).parent / "audit_go"
GOPATHS = [Path("/usr/share/gocode")]
INSTALL = "apt-get install golang-go golang-golang-x-mod-dev"


@pytest.fixture(scope="module")
def go_verifier(tmp_path_factory: pytest.TempPathFactory) -> Path:
    go = shutil.which("go")
    if go is None:
        pytest.skip(f"no Go toolchain to build the independent verifier ({INSTALL})")
    gopath = next((p for p in GOPATHS if (p / "src/golang.org/x/mod/sumdb/note").is_dir()), None)
    if gopath is None:
        pytest.skip(f"golang.org/x/mod sources are not installed ({INSTALL})")
    out = tmp_path_factory.mktemp("go") / "auditverify"
    env = {**os.environ, "GO111MODULE": "off", "GOPATH": str(gopath), "GOFLAGS": "",
           "GOCACHE": str(out.parent / "cache")}
    r = subprocess.run([go, "build", "-o", str(out), "."], cwd=GO_SRC, env=env, capture_output=True, text=True,
                       timeout=300)
    assert r.returncode == 0, f"building the Go verifier failed:\n{r.stderr}"
    return out


def _go(binary: Path, *args: str | Path) -> tuple[int, str]:
    r = subprocess.run([str(binary), *map(str, args)], capture_output=True, text=True, timeout=60)
    return r.returncode, r.stdout + r.stderr


def test_go_sumdb_verifies_our_checkpoints_inclusion_and_consistency_proofs(go_verifier: Path,
                                                                            sqlite_url: str, tmp_path: Path) -> None:
    signer = Signer.generate(ORIGIN)

    async def build() -> tuple[list[TlogProof], str, str]:
        store = await AuditStore.open(sqlite_url)
        try:
            seq = Sequencer(store, signer, batch=16, policy=CheckpointPolicy(every_entries=16))
            for i in range(37):
                await store.enqueue(event(i))
            await seq.drain()
            await seq.integrate(force_checkpoint=True)
            proofs = []
            for s in (0, 5, 16, 36):
                p = await prove(store, s)
                proofs.append(TlogProof(s, p.proof.proof, p.proof.checkpoint, p.entry))
            old = await store.checkpoint(16)
            assert old is not None
            cons = await store.consistency_proof(16, 37)
            return proofs, old, "".join(base64.b64encode(h).decode() + "\n" for h in cons)
        finally:
            await store.aclose()

    proofs, old, cons = asyncio.run(build())
    (tmp_path / "old.checkpoint").write_text(old)
    (tmp_path / "cons.txt").write_text(cons)
    vkey = signer.verifier.vkey
    for p in proofs:
        path = tmp_path / f"{p.index}.tlog-proof"
        path.write_text(p.format())
        code, out = _go(go_verifier, vkey, path)
        assert (code, out.strip()) == (0, "OK"), f"Go rejects our proof of entry {p.index}: {out}"
    code, out = _go(go_verifier, vkey, tmp_path / "36.tlog-proof", tmp_path / "old.checkpoint", tmp_path / "cons.txt")
    assert (code, out.strip()) == (0, "OK"), f"Go rejects our consistency proof 16 -> 37: {out}"

    forged = proofs[1]
    assert forged.extra is not None
    bad = TlogProof(forged.index, forged.proof, forged.checkpoint, forged.extra.replace(b"1000", b"9000"))
    (tmp_path / "bad.tlog-proof").write_text(bad.format())
    code, out = _go(go_verifier, vkey, tmp_path / "bad.tlog-proof")
    assert code == 1 and "inclusion" in out, f"Go must reject an edited entry: {out}"
    code, out = _go(go_verifier, Signer.generate(ORIGIN).verifier.vkey, tmp_path / "5.tlog-proof")
    assert code == 1 and "signature" in out, f"Go must reject a checkpoint under another key: {out}"


@pytest.fixture(scope="module")
def go_tiles(go_verifier: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiles reader (tests/audit_go_tiles), built like the verifier (which already checked the toolchain)."""
    out = tmp_path_factory.mktemp("go-tiles") / "audittiles"
    env = {**os.environ, "GO111MODULE": "off", "GOPATH": str(GOPATHS[0]), "GOFLAGS": "",
           "GOCACHE": str(go_verifier.parent / "cache")}
    r = subprocess.run([shutil.which("go") or "go", "build", "-o", str(out), "."], cwd=GO_SRC.parent / "audit_go_tiles",
                       env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, f"building the Go tiles reader failed:\n{r.stderr}"
    return out


def test_go_tlog_reads_our_tiles_and_entry_bundles(go_tiles: Path, sqlite_url: str) -> None:
    """``paywire audit serve``'s C2SP tlog-tiles: Go's TileHashReader loads them (checking each against the
    signed tree), proves entries from them and finds the entries in the bundles; a corrupted tile is refused."""
    from paywire.audit.http import audit_app
    from paywire.serving import serve_asgi

    signer = Signer.generate(ORIGIN)

    async def scenario() -> list[tuple[int, str]]:
        store = await AuditStore.open(sqlite_url)
        try:
            seq = Sequencer(store, signer, batch=1000, policy=CheckpointPolicy(every_entries=10_000))
            for lo in range(0, 600, 100):
                async with store.db.transaction() as tx:
                    for i in range(lo, lo + 100):
                        await tx.execute("INSERT INTO audit_queue (entry, created_at) VALUES (?, 0)",
                                         (event(i).decode(),))
            await seq.drain()
            await seq.integrate(force_checkpoint=True)
            results = []
            async with serve_asgi(audit_app(store)) as url:
                prefix = url + "/audit"
                results.append(await asyncio.to_thread(_go, go_tiles, signer.verifier.vkey, prefix,
                                                       "0", "255", "256", "511", "599"))
                # corrupt the stored leaf hash of 301, in level-0 tile 1: the proof of 300 (its sibling) goes wrong
                await store.db.execute("UPDATE audit_log SET leaf_hash = ? WHERE seq = 301", (b"\0" * 32,))
                results.append(await asyncio.to_thread(_go, go_tiles, signer.verifier.vkey, prefix, "300"))
            return results
        finally:
            await store.aclose()

    (code, out), (bad_code, bad_out) = asyncio.run(scenario())
    assert (code, out.strip()) == (0, "OK"), f"Go could not prove our entries from our tiles: {out}"
    assert bad_code == 1, f"Go must refuse a tile that does not match the signed tree: {bad_out}"
