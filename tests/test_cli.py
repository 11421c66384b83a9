"""The README's first command and `paywire devnet`, run as a user would: as subprocesses."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from web3 import Web3

from paywire.evm import token

PAYWIRE = [sys.executable, "-m", "paywire.cli.main"]


def test_demo_settles_three_purchases_on_chain() -> None:
    """`paywire demo` exits 0 after at least 3 purchases that settled on chain, offline."""
    r = subprocess.run([*PAYWIRE, "demo"], capture_output=True, text=True, timeout=180,
                       env={**os.environ, "COLUMNS": "200"})
    assert r.returncode == 0, r.stdout + r.stderr
    assert "3 purchases paid and settled on chain" in r.stdout
    assert r.stdout.count(" 200 ") >= 3
    assert r.stdout.count("0x") >= 4  # token address + three tx hashes
    assert "paywire demo: deploying the token" in r.stderr, "no progress while the demo starts"
    assert "inclusion proof /weather" in r.stdout and " verified with " in r.stdout, \
        f"the demo verifies an inclusion proof of one purchase in the audit log:\n{r.stdout}"
    assert "audit verify OK: 10 entries" in r.stdout, \
        f"and the whole log (the seller's configuration, 3 events per purchase: claimed, settling, served):\n{r.stdout}"


def _wait_for(path: Path, proc: subprocess.Popen[str], timeout: float = 60) -> dict[str, object]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists() and path.stat().st_size:
            return json.loads(path.read_text())
        if proc.poll() is not None:
            raise AssertionError(f"devnet exited early: {proc.stdout.read() if proc.stdout else ''}")
        time.sleep(0.1)
    raise AssertionError("devnet did not write its state file")


@pytest.mark.parametrize("kind", ["embedded", "anvil"])
def test_devnet_serves_standard_json_rpc(tmp_path: Path, kind: str) -> None:
    """`paywire devnet` writes its state file and any web3 client can use the chain it serves."""
    if kind == "anvil":
        from tests.helpers import need_npm

        need_npm()
    state = tmp_path / "devnet.json"
    proc = subprocess.Popen([*PAYWIRE, "devnet", "--chain", kind, "--state", str(state), "--no-profile"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=Path.cwd())
    try:
        info = _wait_for(state, proc)
        assert info["network"] == "eip155:31337" and info["chain_id"] == 31337
        w3 = Web3(Web3.HTTPProvider(str(info["rpc_url"])))
        assert w3.eth.chain_id == 31337
        tok = str(info["token"])
        assert len(w3.eth.get_code(Web3.to_checksum_address(tok))) > 100
        payer = info["addresses"]["payer"]  # type: ignore[index]
        bal = w3.eth.call({"to": Web3.to_checksum_address(tok), "data": "0x" + token.balance_of(payer).hex()})
        assert int.from_bytes(bal, "big") == 1_000 * 10**6
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
