"""A process that started ``LnbitsDev`` and is stopped by a signal takes LNbits with it (issue 11 item 7).

The parent is a real subprocess that runs ``LnbitsDev.start()`` and then waits; the test signals it and then
checks, through a pidfd opened while LNbits ran, that the LNbits server process has exited, and that its data
folder is gone. Where LNbits is not installed, the server is a stand-in: the same ``LnbitsDev`` code path (the
same command line, environment, inherited socket and readiness probe), with ``lnbits.__main__:app`` a
ten-line ASGI app; one more case runs the real LNbits (its virtualenv is built on first use).
"""

from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from paywire.lightning.lnbits_dev import ensure_lnbits_venv
from tests.lightning_fixtures import VENV

pytestmark = pytest.mark.skipif(not hasattr(os, "pidfd_open"), reason="needs Linux pidfds")

SRC = Path(__file__).resolve().parents[1] / "src"

STUB_APP = '''
async def app(scope, receive, send):
    if scope["type"] == "http":
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
        await send({"type": "http.response.body", "body": b"ok"})
'''

PARENT = '''
import asyncio, json, sys
from pathlib import Path
from paywire.lightning import lnbits_dev

async def main(venv, stub):
    if stub:  # LNbits is a stand-in: same LnbitsDev code path, served by paywire's own interpreter
        lnbits_dev.ensure_lnbits_venv = lambda v, **kw: v
        lnbits_dev._site_packages = lambda v: Path(stub)
        lnbits_dev.venv_python = lambda v: Path(sys.executable)
        async def no_wallets(self): pass
        lnbits_dev.LnbitsDev._bootstrap = no_wallets
    ln = lnbits_dev.LnbitsDev(venv=Path(venv), payer_sats=0, startup_timeout=300)
    await ln.start()
    print(json.dumps({"pid": ln.pid, "data": ln._data.name}), flush=True)
    await asyncio.Event().wait()

asyncio.run(main(sys.argv[1], sys.argv[2]))
'''


def _start_parent(tmp_path: Path, *, real: bool) -> tuple[subprocess.Popen[str], int, Path]:
    stub = ""
    if not real:
        (tmp_path / "stub" / "lnbits").mkdir(parents=True)
        (tmp_path / "stub" / "lnbits" / "__init__.py").write_text("")
        (tmp_path / "stub" / "lnbits" / "__main__.py").write_text(textwrap.dedent(STUB_APP))
        stub = str(tmp_path / "stub")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(SRC), os.environ.get("PYTHONPATH", "")])}
    parent = subprocess.Popen([sys.executable, "-c", PARENT, str(VENV if real else tmp_path / "venv"), stub],
                              stdout=subprocess.PIPE, text=True, env=env, start_new_session=True)
    assert parent.stdout is not None
    line = parent.stdout.readline()
    if not line:
        parent.wait()
        pytest.fail(f"the parent exited with {parent.returncode} before LNbits was ready")
    info = json.loads(line)
    return parent, int(info["pid"]), Path(info["data"])


def _has_exited(pidfd: int, wait: float) -> bool:
    """A pidfd turns readable when its process exits (``wait`` only bounds a hang)."""
    return bool(select.select([pidfd], [], [], wait)[0])


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGHUP, signal.SIGINT], ids=lambda s: s.name)
def test_signal_to_the_parent_stops_lnbits(tmp_path: Path, sig: signal.Signals) -> None:
    parent, pid, data = _start_parent(tmp_path, real=False)
    pidfd = os.pidfd_open(pid)
    try:
        assert not _has_exited(pidfd, 0), "LNbits was not running after start()"
        parent.send_signal(sig)
        assert parent.wait(timeout=60) in (-sig, 128 + sig), f"the parent ended with {parent.returncode}"
        assert _has_exited(pidfd, 0), f"LNbits (pid {pid}) still runs after its parent got {sig.name}"
        assert not data.exists(), f"LNbits' data folder {data} was left behind after {sig.name}"
    finally:
        _kill_leftovers(parent, pidfd)
        os.close(pidfd)


def test_sigkill_of_the_parent_stops_lnbits(tmp_path: Path) -> None:
    """SIGKILL runs no handler: the kernel's parent-death signal ends LNbits."""
    parent, pid, _ = _start_parent(tmp_path, real=False)
    pidfd = os.pidfd_open(pid)
    try:
        parent.kill()
        parent.wait(timeout=60)
        assert _has_exited(pidfd, 60), f"LNbits (pid {pid}) outlived its SIGKILLed parent"
    finally:
        _kill_leftovers(parent, pidfd)
        os.close(pidfd)


def test_sigterm_to_the_parent_stops_a_real_lnbits(tmp_path: Path) -> None:
    ensure_lnbits_venv(VENV)  # built once (file-locked) and shared with the other Lightning tests
    parent, pid, data = _start_parent(tmp_path, real=True)
    pidfd = os.pidfd_open(pid)
    try:
        parent.send_signal(signal.SIGTERM)
        parent.wait(timeout=120)
        assert _has_exited(pidfd, 0), f"LNbits (pid {pid}) still runs after its parent got SIGTERM"
        assert not data.exists(), f"LNbits' data folder {data} was left behind"
    finally:
        _kill_leftovers(parent, pidfd)
        os.close(pidfd)


def _kill_leftovers(parent: subprocess.Popen[str], pidfd: int) -> None:
    """Only on failure: never leave the processes this test started running (by pidfd and Popen, so a reused
    pid is never hit)."""
    if not _has_exited(pidfd, 0):
        signal.pidfd_send_signal(pidfd, signal.SIGKILL)
    if parent.poll() is None:
        parent.kill()
        parent.wait()
