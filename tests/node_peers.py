"""The official TypeScript x402 SDK peers (pinned in tests/node/package-lock.json), installed on demand."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

NODE_DIR = Path(__file__).resolve().parent / "node"


def ensure_node_peers() -> str:
    """Path of the ``node`` binary, after ``npm ci`` in tests/node if needed; skips when Node is absent."""
    node, npm = shutil.which("node"), shutil.which("npm")
    if node is None or npm is None:
        pytest.skip("Node.js/npm not installed: the official TypeScript SDK peers cannot run")
    if not (NODE_DIR / "node_modules" / "@x402" / "core").is_dir():
        subprocess.run([npm, "ci", "--no-audit", "--no-fund"], cwd=NODE_DIR, check=True, capture_output=True,
                       timeout=900)
    return node
