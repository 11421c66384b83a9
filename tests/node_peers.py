"""The official TypeScript x402 SDK peers (pinned in tests/node/package-lock.json), installed on demand."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

NODE_DIR = Path(__file__).resolve().parent / "node"
NODE_PACKAGES = ("@x402/core", "playwright-core")  # npm ci again when one is missing (a stale node_modules)


def ensure_node_peers() -> str:
    """Path of the ``node`` binary, after ``npm ci`` in tests/node if needed; skips when Node is absent."""
    node, npm = shutil.which("node"), shutil.which("npm")
    if node is None or npm is None:
        pytest.skip("Node.js/npm not installed: the official TypeScript SDK peers cannot run")
    if not all((NODE_DIR / "node_modules" / pkg / "package.json").is_file() for pkg in NODE_PACKAGES):
        subprocess.run([npm, "ci", "--no-audit", "--no-fund"], cwd=NODE_DIR, check=True, capture_output=True,
                       timeout=900)
    return node

MPP_DIR = NODE_DIR / "mpp"
MPP_PACKAGES = ("mppx", "@getalby/lightning-tools", "macaroon")  # npm ci again when one is missing


def ensure_mpp_peers() -> str:
    """Path of ``node`` after ``npm ci`` in tests/node/mpp (the ``MPP_PACKAGES`` peers); skips without Node."""
    node, npm = shutil.which("node"), shutil.which("npm")
    if node is None or npm is None:
        pytest.skip("Node.js/npm not installed: the mppx and L402 Node peers cannot run")
    if not all((MPP_DIR / "node_modules" / pkg / "package.json").is_file() for pkg in MPP_PACKAGES):
        subprocess.run([npm, "ci", "--no-audit", "--no-fund"], cwd=MPP_DIR, check=True, capture_output=True,
                       timeout=900)
    return node
