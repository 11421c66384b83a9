"""Run foundry's ``anvil`` as a local chain, installed on demand from npm (``@foundry-rs/anvil-linux-amd64``).

``ensure_anvil()`` installs the pinned package under ``$PAYWIRE_HOME/npm`` (default ``./.paywire/npm``) and
returns the binary. ``Anvil`` starts it on 127.0.0.1 with ``--port 0``, learns the bound port from its
``Listening on host:port`` line, waits until ``eth_chainId`` answers, and terminates it on ``stop()`` (and at
interpreter exit). Its dev accounts are derived from ``--mnemonic`` (anvil's default test mnemonic unless
you pass another), so ``private_keys`` never depends on parsing anvil's banner.
"""

from __future__ import annotations

import asyncio
import atexit
import collections
import contextlib
import fcntl
import json
import os
import platform
import re
import shutil
import subprocess
import threading
import time
from collections.abc import Sequence
from pathlib import Path

from paywire.chain.devkeys import DEFAULT_DERIVATION_PATH, DEFAULT_MNEMONIC, address_of, dev_keys
from paywire.chain.rpc import HttpTransport, RpcChain, from_quantity
from paywire.errors import ChainError

__all__ = ["ANVIL_PACKAGE", "ANVIL_VERSION", "Anvil", "anvil_path", "ensure_anvil", "paywire_home"]

ANVIL_PACKAGE = "@foundry-rs/anvil-linux-amd64"
ANVIL_VERSION = "1.7.1"

_LISTENING = re.compile(r"Listening on\s+(?P<host>\S+):(?P<port>\d+)")


def paywire_home() -> Path:
    """``$PAYWIRE_HOME``, else ``<cwd>/.paywire``."""
    env = os.environ.get("PAYWIRE_HOME")
    return Path(env).expanduser() if env else Path.cwd() / ".paywire"


def anvil_path(home: Path | None = None) -> Path:
    """Where ``ensure_anvil`` puts the binary."""
    home = home if home is not None else paywire_home()
    return home / "npm" / "node_modules" / Path(*ANVIL_PACKAGE.split("/")) / "bin" / "anvil"


def _installed_version(binary: Path) -> str | None:
    try:
        meta = json.loads((binary.parent.parent / "package.json").read_text())
    except (OSError, ValueError):
        return None
    version = meta.get("version") if isinstance(meta, dict) else None
    return version if isinstance(version, str) else None


def ensure_anvil(home: Path | None = None) -> Path:
    """Return the anvil binary, installing ``@foundry-rs/anvil-linux-amd64@1.7.1`` with npm if missing.

    ``$PAYWIRE_ANVIL`` (a path to an anvil binary) skips the install. Raises ``ChainError`` with what to do
    when npm is unavailable, the platform is not linux/x86-64, or the install fails.
    """
    override = os.environ.get("PAYWIRE_ANVIL")
    if override:
        path = Path(override).expanduser()
        if not (path.is_file() and os.access(path, os.X_OK)):
            raise ChainError(f"PAYWIRE_ANVIL={override!r} is not an executable file")
        return path
    home = home if home is not None else paywire_home()
    binary = anvil_path(home)
    if binary.is_file() and os.access(binary, os.X_OK) and _installed_version(binary) == ANVIL_VERSION:
        return binary
    if platform.system() != "Linux" or platform.machine().lower() not in ("x86_64", "amd64"):
        raise ChainError(
            f"{ANVIL_PACKAGE} only runs on linux/x86-64 (this is {platform.system()}/{platform.machine()}); "
            "install foundry's anvil yourself and set PAYWIRE_ANVIL=/path/to/anvil"
        )
    npm = shutil.which("npm")
    if npm is None:
        raise ChainError(
            f"anvil is not installed and npm is not on PATH: install Node.js (npm), or run "
            f"`npm install --prefix {home / 'npm'} {ANVIL_PACKAGE}@{ANVIL_VERSION}` elsewhere and set "
            "PAYWIRE_ANVIL=/path/to/anvil"
        )
    prefix = home / "npm"
    prefix.mkdir(parents=True, exist_ok=True)
    with open(home / "npm.lock", "w") as lock:  # serialise concurrent installs (several test workers)
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            if binary.is_file() and _installed_version(binary) == ANVIL_VERSION:
                return binary
            cmd = [
                npm, "install", "--no-save", "--no-audit", "--no-fund", "--loglevel=error",
                "--prefix", str(prefix), f"{ANVIL_PACKAGE}@{ANVIL_VERSION}",
            ]
            try:
                done = subprocess.run(cmd, capture_output=True, text=True, timeout=600, check=False)
            except (OSError, subprocess.TimeoutExpired) as exc:
                raise ChainError(f"`{' '.join(cmd)}` failed: {exc}") from exc
            if done.returncode != 0:
                tail = (done.stderr or done.stdout).strip()[-800:]
                raise ChainError(f"`{' '.join(cmd)}` exited with {done.returncode}:\n{tail}")
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
    if not binary.is_file():
        raise ChainError(f"npm installed {ANVIL_PACKAGE}@{ANVIL_VERSION} but {binary} is missing")
    if not os.access(binary, os.X_OK):
        binary.chmod(binary.stat().st_mode | 0o111)
    return binary


class Anvil:
    """An anvil process. ``async with Anvil(chain_id=84532) as anvil: anvil.url, anvil.private_keys[0]``.

    ``block_time=None`` mines on every transaction (anvil's automine); a number mines every that many
    seconds. ``extra_args`` are appended to the command line (e.g. ``["--base-fee", …]``).
    """

    def __init__(
        self,
        chain_id: int = 31337,
        block_time: float | None = None,
        *,
        accounts: int = 10,
        balance_eth: int = 10_000,
        mnemonic: str = DEFAULT_MNEMONIC,
        host: str = "127.0.0.1",
        extra_args: Sequence[str] = (),
        binary: Path | str | None = None,
        home: Path | None = None,
        startup_timeout: float = 30.0,
    ) -> None:
        self.chain_id = chain_id
        self.block_time = block_time
        self.host = host
        self._accounts = accounts
        self._balance_eth = balance_eth
        self._mnemonic = mnemonic
        self._extra_args = list(extra_args)
        self._binary = Path(binary) if binary is not None else None
        self._home = home
        self.startup_timeout = startup_timeout
        self.port: int | None = None
        self._proc: subprocess.Popen[str] | None = None
        self._reader: threading.Thread | None = None
        self._output: collections.deque[str] = collections.deque(maxlen=200)
        self._listening = threading.Event()
        self._transports: list[HttpTransport] = []

    # -- info -----------------------------------------------------------------------------------------

    @property
    def url(self) -> str:
        if self.port is None:
            raise RuntimeError("anvil is not running")
        return f"http://{self.host}:{self.port}"

    @property
    def private_keys(self) -> list[bytes]:
        return dev_keys(self._accounts, self._mnemonic, DEFAULT_DERIVATION_PATH)

    @property
    def accounts(self) -> list[str]:
        return [address_of(k) for k in self.private_keys]

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    @property
    def output(self) -> str:
        """The last lines anvil printed (for diagnostics)."""
        return "\n".join(self._output)

    def __repr__(self) -> str:
        state = self.url if self.port is not None else "stopped"
        return f"Anvil(chain_id={self.chain_id}, {state})"

    def transport(self, timeout: float = 10.0) -> HttpTransport:
        """A new ``HttpTransport`` to this anvil (closed by ``stop()`` if still open)."""
        transport = HttpTransport(self.url, timeout=timeout)
        self._transports.append(transport)
        return transport

    def chain(self) -> RpcChain:
        return RpcChain(self.transport())

    # -- lifecycle ------------------------------------------------------------------------------------

    def command(self, binary: Path) -> list[str]:
        cmd = [
            str(binary),
            "--host", self.host,
            "--port", "0",
            "--chain-id", str(self.chain_id),
            "--accounts", str(self._accounts),
            "--balance", str(self._balance_eth),
            "--mnemonic", self._mnemonic,
            "--color", "never",
        ]
        if self.block_time is not None:
            cmd += ["--block-time", f"{self.block_time:g}"]
        return cmd + self._extra_args

    async def start(self) -> str:
        """Start anvil (installing it first if needed); returns the URL once ``eth_chainId`` answers."""
        if self._proc is not None:
            return self.url
        binary = self._binary if self._binary is not None else await asyncio.to_thread(ensure_anvil, self._home)
        cmd = self.command(binary)
        try:
            proc = subprocess.Popen(
                cmd,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
                encoding="utf-8",
                errors="replace",
            )
        except OSError as exc:
            raise ChainError(f"cannot start anvil ({binary}): {exc}") from exc
        self._proc = proc
        self._listening.clear()
        self._reader = threading.Thread(target=self._read_output, args=(proc,), name="anvil-output", daemon=True)
        self._reader.start()
        atexit.register(self.terminate)
        try:
            await self._wait_ready()
        except BaseException:
            await asyncio.to_thread(self.terminate)
            raise
        return self.url

    def _read_output(self, proc: subprocess.Popen[str]) -> None:
        # Always drain stdout: anvil logs every request, and a full pipe would block it.
        assert proc.stdout is not None
        for line in proc.stdout:
            line = line.rstrip("\n")
            self._output.append(line)
            if not self._listening.is_set():
                m = _LISTENING.search(line)
                if m:
                    self.port = int(m.group("port"))
                    self._listening.set()

    async def _wait_ready(self) -> None:
        assert self._proc is not None
        deadline = time.monotonic() + self.startup_timeout
        while not self._listening.is_set():
            if self._proc.poll() is not None:
                raise ChainError(f"anvil exited with {self._proc.returncode} before listening:\n{self.output[-1500:]}")
            if time.monotonic() > deadline:
                raise ChainError(f"anvil did not report a listening address within {self.startup_timeout}s")
            await asyncio.sleep(0.02)
        probe = HttpTransport(self.url, timeout=2.0)
        try:
            while True:
                try:
                    chain_id = from_quantity(await probe.request("eth_chainId", []))
                except ChainError:
                    if self._proc.poll() is not None:
                        raise ChainError(f"anvil exited with {self._proc.returncode}:\n{self.output[-1500:]}") from None
                    if time.monotonic() > deadline:
                        raise
                    await asyncio.sleep(0.05)
                    continue
                if chain_id != self.chain_id:
                    raise ChainError(f"anvil reports chain id {chain_id}, expected {self.chain_id}")
                return
        finally:
            await probe.aclose()

    def terminate(self, timeout: float = 5.0) -> None:
        """Stop the process now (SIGTERM, then SIGKILL). Safe to call repeatedly and from ``atexit``."""
        proc, self._proc = self._proc, None
        with contextlib.suppress(Exception):
            atexit.unregister(self.terminate)
        if proc is None:
            return
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout)
        if self._reader is not None:
            self._reader.join(timeout)
            self._reader = None
        if proc.stdout is not None:
            proc.stdout.close()
        self.port = None

    async def stop(self) -> None:
        transports, self._transports = self._transports, []
        for transport in transports:
            with contextlib.suppress(Exception):
                await transport.aclose()
        await asyncio.to_thread(self.terminate)

    async def __aenter__(self) -> Anvil:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()
