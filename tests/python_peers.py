"""Python test peers that cannot share the project's venv, each in its own venv from a pinned requirements file.

The official x402 SDK's ``sign_in_with_x`` extension needs ``signinwithethereum``, which pins ``eth-account<0.14``
and ``web3<8`` (ours: eth-account 0.14, web3 8), so it runs in ``tests/peers/.venv-x402-siwx`` (built once, on
demand, from ``tests/peers/x402_siwx_requirements.txt``: x402 2.25.0, signinwithethereum 5.0.2).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

PEERS = Path(__file__).resolve().parent / "peers"
SIWX_VENV = PEERS / ".venv-x402-siwx"
SIWX_REQUIREMENTS = PEERS / "x402_siwx_requirements.txt"
SIWX_SCRIPT = PEERS / "x402_siwx_peer.py"


def siwx_python() -> str:
    """The peer venv's python (created when missing or stale); skips when it cannot be built (offline)."""
    python = SIWX_VENV / "bin" / "python"
    stamp = SIWX_VENV / "requirements.txt"
    want = SIWX_REQUIREMENTS.read_text()
    if python.is_file() and stamp.is_file() and stamp.read_text() == want:
        return str(python)
    try:
        subprocess.run([sys.executable, "-m", "venv", "--clear", str(SIWX_VENV)], check=True, capture_output=True,
                       timeout=300)
        subprocess.run([str(python), "-m", "pip", "install", "-q", "--no-deps", "-r", str(SIWX_REQUIREMENTS)],
                       check=True, capture_output=True, timeout=900)
    except (subprocess.CalledProcessError, subprocess.TimeoutExpired) as exc:
        pytest.skip(f"could not build the x402 SIWX peer venv: {exc}")
    stamp.write_text(want)
    return str(python)


def siwx_peer(command: str, **args: Any) -> dict[str, Any]:
    """Run one command of tests/peers/x402_siwx_peer.py (JSON in, JSON out) with the official SDK."""
    out = subprocess.run([siwx_python(), str(SIWX_SCRIPT), command], input=json.dumps(args), capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 0, f"the x402 SIWX peer failed: {out.stderr[-2000:]}"
    result: dict[str, Any] = json.loads(out.stdout)
    return result
