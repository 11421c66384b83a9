"""The README's first command installs only the core dependencies: the demo and the CLI must not import
anything that comes with an extra (test peers, frameworks, database drivers)."""

from __future__ import annotations

import subprocess
import sys

EXTRAS_ONLY = ["fastapi", "flask", "requests", "psycopg", "psycopg_pool", "pympp", "x402", "bolt11",
               "l402_requests", "pytest", "hypothesis"]

PROBE = f"""
import importlib.abc, sys
blocked = set({EXTRAS_ONLY!r})
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in blocked:
            raise ImportError("extra-only package imported: " + name)
        return None
sys.meta_path.insert(0, Block())
import paywire.demo, paywire.cli.main, paywire.server.asgi, paywire.server.wsgi, paywire.client
import paywire.facilitator.app, paywire.store, paywire.mpp, paywire.l402, paywire.lightning, paywire.wallet
print("ok")
"""


def test_core_modules_import_without_extras() -> None:
    r = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and r.stdout.strip() == "ok", r.stdout + r.stderr
