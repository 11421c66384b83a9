"""`paywire audit keygen | prove | verify-proof | show | export` as a user runs them."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path

from audit_support import ORIGIN, event
from typer.testing import CliRunner

from paywire.audit.note import parse_skey, parse_vkey
from paywire.audit.sequencer import CheckpointPolicy, Sequencer
from paywire.audit.store import AuditStore
from paywire.cli.main import app


def _cli(*args: str) -> tuple[int, str]:
    r = CliRunner().invoke(app, ["audit", *args], catch_exceptions=False)
    return r.exit_code, r.output


def _log(url: str, key_file: Path, count: int = 12) -> None:
    async def run() -> None:
        store = await AuditStore.open(url)
        try:
            seq = Sequencer(store, parse_skey(key_file.read_text()), batch=5, policy=CheckpointPolicy(every_entries=5))
            for i in range(count):
                await store.enqueue(event(i, payer="0xabc" if i % 2 else "0xdef"))
            await seq.drain()
            await seq.integrate(force_checkpoint=True)
        finally:
            await store.aclose()
    asyncio.run(run())


def test_keygen_writes_a_private_key_once_and_prints_the_vkey(tmp_path: Path) -> None:
    key = tmp_path / "log.key"
    code, out = _cli("keygen", ORIGIN, "--out", str(key))
    assert code == 0, out
    vkey = parse_vkey(out.strip())
    assert vkey.name == ORIGIN and vkey.sig_type == 1, "a log key (Ed25519, type 0x01) named as asked"
    assert parse_skey(key.read_text()).verifier == vkey, "the key file holds the matching private key"
    assert key.stat().st_mode & 0o777 == 0o600, "readable by its owner only"
    code, out = _cli("keygen", ORIGIN, "--out", str(key))
    assert code == 1 and "not overwriting" in out, f"an existing key is never overwritten: {out}"
    code, out = _cli("keygen", "witness.example/w1", "--witness", "--out", str(tmp_path / "w.key"))
    assert code == 0 and parse_vkey(out.strip()).sig_type == 4, "a witness key is a cosigner key (type 0x04)"


def test_prove_then_verify_proof_offline(tmp_path: Path, sqlite_url: str) -> None:
    key = tmp_path / "log.key"
    code, vkey = _cli("keygen", ORIGIN, "--out", str(key))
    _log(sqlite_url, key)
    proof = tmp_path / "p.tlog-proof"
    code, out = _cli("prove", "pay-7", "--store", sqlite_url, "--out", str(proof))
    assert code == 0, out
    assert proof.read_text().startswith("c2sp.org/tlog-proof@v1\nextra "), "a tlog-proof carrying the entry"
    code, out = _cli("verify-proof", str(proof), "--key", vkey.strip())
    assert code == 0 and "OK: entry 7 (seller payment.settled)" in out, out
    forged = proof.read_text().replace("index 7", "index 6")
    (tmp_path / "forged.tlog-proof").write_text(forged)
    code, out = _cli("verify-proof", str(tmp_path / "forged.tlog-proof"), "--key", vkey.strip())
    assert code == 1 and out.startswith("REJECTED"), f"a proof moved to another index is rejected: {out}"
    code, out = _cli("prove", "no-such-payment", "--store", sqlite_url)
    assert code == 1 and "no audit entry names" in out, out


def test_prove_before_any_checkpoint_says_so(tmp_path: Path, sqlite_url: str) -> None:
    async def run() -> None:
        store = await AuditStore.open(sqlite_url)
        await store.enqueue(event(0))
        await store.aclose()
    asyncio.run(run())
    code, out = _cli("prove", "--seq", "0", "--store", sqlite_url)
    assert code == 1 and "no audit entry 0" in out, f"a queued event is not in the log yet: {out}"


def test_show_filters_by_payer(tmp_path: Path, sqlite_url: str) -> None:
    key = tmp_path / "log.key"
    _cli("keygen", ORIGIN, "--out", str(key))
    _log(sqlite_url, key)
    r = CliRunner().invoke(app, ["audit", "show", "--store", sqlite_url, "--payer", "0xabc"],
                           env={"COLUMNS": "250"})
    assert r.exit_code == 0, r.output
    seqs = re.findall(r"│\s+(\d+)\s+│", r.output)
    assert seqs == ["1", "3", "5", "7", "9", "11"], f"the odd payments are 0xabc's: {seqs}\n{r.output}"
