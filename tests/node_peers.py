"""The Node.js test peers (official TypeScript SDKs and friends), pinned in package-lock files, installed on demand."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

NODE_DIR = Path(__file__).resolve().parent / "node"
NODE_PACKAGES = ("@x402/core", "playwright-core")  # npm ci again when one is missing (a stale node_modules)
MPP_DIR = NODE_DIR / "mpp"
MPP_PACKAGES = ("mppx", "@getalby/lightning-tools", "macaroon")


def _installed(folder: Path, packages: tuple[str, ...], what: str) -> str:
    """Path of ``node`` after ``npm ci`` in ``folder`` when one of ``packages`` is missing; skips without Node."""
    node, npm = shutil.which("node"), shutil.which("npm")
    if node is None or npm is None:
        pytest.skip(f"Node.js/npm not installed: {what} cannot run")
    if not all((folder / "node_modules" / pkg / "package.json").is_file() for pkg in packages):
        subprocess.run([npm, "ci", "--no-audit", "--no-fund"], cwd=folder, check=True, capture_output=True,
                       timeout=900)
    return node


def ensure_node_peers() -> str:
    """``node`` with tests/node installed (the official @x402 TypeScript SDK peers, playwright-core)."""
    return _installed(NODE_DIR, NODE_PACKAGES, "the official TypeScript SDK peers")


def ensure_mpp_peers() -> str:
    """``node`` with tests/node/mpp installed (mppx, @getalby/lightning-tools, js-macaroon)."""
    return _installed(MPP_DIR, MPP_PACKAGES, "the mppx and L402 Node peers")
