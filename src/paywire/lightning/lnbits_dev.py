"""A throwaway local LNbits (FakeWallet funding source) for tests and demos: real BOLT11, real preimages.

LNbits has heavy dependencies of its own, so it lives in a separate virtualenv (created on first use with
``python -m venv`` + ``pip install lnbits==<pin>``), never in paywire's. ``LnbitsDev`` starts it on a
pre-bound free port with its own data folder, makes a super user, a payer wallet (funded by the super user's
balance top-up) and a payee wallet, and stops the whole process group on ``stop()``. LNbits never outlives the
process that started it: it is spawned through :mod:`paywire.lightning.child`, so interpreter exit, SIGTERM,
SIGHUP and (on Linux) even SIGKILL of the parent stop it too, and its data folder is removed.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Final

import httpx

from paywire.lightning import child

LNBITS_PIN: Final = "lnbits==1.6.2"
EXTRA_PINS: Final = ("bitstring<5",)  # bitstring 5 breaks bolt11 2.x (ImportError: ConstBitStream)
DEFAULT_VENV: Final = Path(".paywire") / "lnbits-venv"


class LnbitsUnavailable(RuntimeError):
    """LNbits could not be installed or started here; the message says why."""


@dataclass(frozen=True, slots=True)
class LnbitsWallet:
    id: str
    name: str
    admin_key: str
    invoice_key: str


def venv_python(venv: Path) -> Path:
    return venv / "bin" / "python"


def _has_lnbits(venv: Path) -> bool:
    py = venv_python(venv)
    if not py.exists():
        return False
    # cwd = the venv: importing lnbits writes ./data/.lnbits_auth_key
    r = subprocess.run([str(py), "-c", "import lnbits, bolt11"], capture_output=True, timeout=120, cwd=venv)
    return r.returncode == 0


def ensure_lnbits_venv(venv: Path = DEFAULT_VENV, *, timeout: float = 1200) -> Path:
    """Create the LNbits virtualenv if missing (file-locked, so parallel test processes install once)."""
    venv = venv.absolute()
    venv.parent.mkdir(parents=True, exist_ok=True)
    with open(str(venv) + ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if _has_lnbits(venv):
            return venv
        shutil.rmtree(venv, ignore_errors=True)
        base = getattr(sys, "_base_executable", None) or shutil.which("python3") or sys.executable
        steps = [[base, "-m", "venv", str(venv)],
                 [str(venv_python(venv)), "-m", "pip", "install", "-q", "--disable-pip-version-check",
                  LNBITS_PIN, *EXTRA_PINS]]
        for cmd in steps:
            r = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
            if r.returncode != 0:
                tail = (r.stderr or r.stdout).strip().splitlines()[-5:]
                raise LnbitsUnavailable(f"`{' '.join(cmd[:4])} …` failed: {' | '.join(tail)}")
        if not _has_lnbits(venv):
            raise LnbitsUnavailable("lnbits installed but cannot be imported")
        return venv


def _site_packages(venv: Path) -> Path:
    out = subprocess.run([str(venv_python(venv)), "-c", "import lnbits, os; print(os.path.dirname(os.path.dirname("
                          "lnbits.__file__)))"], capture_output=True, text=True, check=True, timeout=120,
                         cwd=venv)
    return Path(out.stdout.strip())


class LnbitsDev:
    """``async with LnbitsDev() as ln:`` → ``ln.url``, ``ln.payer``, ``ln.payee`` (wallets), ``ln.fund``."""

    def __init__(self, *, venv: Path = DEFAULT_VENV, payer_sats: int = 1_000_000, startup_timeout: float = 90,
                 log_path: Path | None = None) -> None:
        self.venv = venv
        self.payer_sats = payer_sats
        self.startup_timeout = startup_timeout
        self.log_path = log_path
        self.url = ""
        self.payer: LnbitsWallet | None = None
        self.payee: LnbitsWallet | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        self._data: tempfile.TemporaryDirectory[str] | None = None
        self._token = ""
        self._log: Any = None

    async def __aenter__(self) -> LnbitsDev:
        try:
            await self.start()
        except BaseException:
            await self.stop()
            raise
        return self

    async def __aexit__(self, et: type[BaseException] | None, e: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self.stop()

    async def start(self) -> None:
        venv = await asyncio.to_thread(ensure_lnbits_venv, self.venv)
        site = await asyncio.to_thread(_site_packages, venv)
        self._data = tempfile.TemporaryDirectory(prefix="paywire-lnbits-")
        data = Path(self._data.name)
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", 0))
        sock.listen(64)
        port = sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{port}"
        env = {k: v for k, v in os.environ.items() if not k.startswith(("LNBITS_", "VIRTUAL_ENV"))}
        env.update({
            "LNBITS_DATA_FOLDER": str(data / "data"),
            "LNBITS_EXTENSIONS_PATH": str(data / "ext"),
            "LNBITS_BACKEND_WALLET_CLASS": "FakeWallet",
            "FAKE_WALLET_SECRET": secrets.token_hex(16),
            "LNBITS_ADMIN_UI": "true",
            "HOST": "127.0.0.1",
            "PORT": str(port),
            "LNBITS_SITE_TITLE": "paywire-dev",
            "DEBUG": "false",
            "AUTH_SECRET_KEY": secrets.token_hex(32),
        })
        (data / "data").mkdir()
        (data / "ext" / "extensions").mkdir(parents=True)
        self._log = open(self.log_path or data / "lnbits.log", "wb")  # noqa: SIM115
        try:
            self._proc = child.spawn(
                [str(venv_python(venv)), "-m", "uvicorn", "lnbits.__main__:app", "--fd", str(sock.fileno()),
                 "--log-level", "warning"],
                cleanup=self._remove_files, cwd=site, env=env, stdout=self._log, stderr=subprocess.STDOUT,
                pass_fds=[sock.fileno()],
            )
        finally:
            sock.close()
        await self._wait_ready()
        await self._bootstrap()

    async def _wait_ready(self) -> None:
        deadline = time.monotonic() + self.startup_timeout
        async with httpx.AsyncClient(base_url=self.url, timeout=5) as c:
            while time.monotonic() < deadline:
                if self._proc is not None and self._proc.poll() is not None:
                    raise LnbitsUnavailable(f"LNbits exited with {self._proc.returncode}: {self._tail()}")
                try:
                    if (await c.get("/api/v1/health")).status_code in (200, 302, 307):  # 307: first-install
                        return
                except httpx.HTTPError:
                    pass
                await asyncio.sleep(0.3)
        raise LnbitsUnavailable(f"LNbits did not answer within {self.startup_timeout}s: {self._tail()}")

    def _tail(self) -> str:
        if self._data is None:
            return ""
        path = self.log_path or Path(self._data.name) / "lnbits.log"
        with contextlib.suppress(OSError):
            return " | ".join(path.read_text(errors="replace").strip().splitlines()[-6:])
        return ""

    async def _bootstrap(self) -> None:
        async with httpx.AsyncClient(base_url=self.url, timeout=30) as c:
            r = await c.put("/api/v1/auth/first_install", json={
                "username": "paywire", "password": "paywire-dev-1", "password_repeat": "paywire-dev-1"})
            if r.status_code != 200:
                raise LnbitsUnavailable(f"LNbits first install refused: {r.status_code} {r.text[:200]}")
            self._token = r.json()["access_token"]
            self.payer = await self.create_wallet("payer")
            self.payee = await self.create_wallet("payee")
            if self.payer_sats:
                await self.fund(self.payer, self.payer_sats)

    async def create_wallet(self, name: str) -> LnbitsWallet:
        """A new account with one wallet (no auth needed on LNbits)."""
        async with httpx.AsyncClient(base_url=self.url, timeout=30) as c:
            r = await c.post("/api/v1/account", json={"name": name})
            r.raise_for_status()
            w = r.json()
            return LnbitsWallet(w["id"], w["name"], w["adminkey"], w["inkey"])

    async def fund(self, wallet: LnbitsWallet, sats: int) -> None:
        """Credit ``sats`` as the super user (LNbits' admin top-up)."""
        async with httpx.AsyncClient(base_url=self.url, timeout=30) as c:
            r = await c.put("/users/api/v1/balance", json={"id": wallet.id, "amount": sats},
                            headers={"Authorization": f"Bearer {self._token}"})
            if r.status_code != 200:
                raise LnbitsUnavailable(f"LNbits top-up refused: {r.status_code} {r.text[:200]}")

    async def balance_msat(self, wallet: LnbitsWallet) -> int:
        async with httpx.AsyncClient(base_url=self.url, timeout=30) as c:
            r = await c.get("/api/v1/wallet", headers={"X-Api-Key": wallet.invoice_key})
            r.raise_for_status()
            return int(r.json()["balance"])

    @property
    def pid(self) -> int | None:
        """The LNbits server process, while it runs."""
        return self._proc.pid if self._proc is not None else None

    async def stop(self) -> None:
        proc, self._proc = self._proc, None
        if proc is not None:
            await asyncio.to_thread(child.terminate, proc)  # SIGTERM the group, SIGKILL after a grace period
        self._remove_files()

    def _remove_files(self) -> None:
        log_file, self._log = self._log, None
        if log_file is not None:
            log_file.close()
        data, self._data = self._data, None
        if data is not None:
            data.cleanup()
