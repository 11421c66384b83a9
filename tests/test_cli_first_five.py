"""The first five minutes, as a new user lives them (issue 11, items 4, 14 and 15): ``paywire devnet`` leaves a
profile and prints no key, ``paywire pay URL`` then pays an example seller with no flags, starts show progress,
a busy port is one line, read-only commands never create a store. Everything runs as subprocesses with a private
HOME and no terminal on stdin."""

from __future__ import annotations

import json
import os
import re
import socket
import stat
import subprocess
import sys
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tests.test_seller_examples import ROOT, URL_RE, process

PAYWIRE = [sys.executable, "-m", "paywire.cli.main"]


def clean_env(home: Path, **extra: str) -> dict[str, str]:
    """No PAYWIRE_* from the caller, a private HOME, the worktree's sources first."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PAYWIRE_")}
    env.update(HOME=str(home), COLUMNS="200", CWD=str(home),
               PYTHONPATH=os.pathsep.join([str(ROOT / "src"), str(ROOT)]), **extra)
    return env


def paywire(home: Path, *args: str, cwd: Path | None = None, timeout: float = 180,
            **extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*PAYWIRE, *args], capture_output=True, text=True, timeout=timeout,
                          stdin=subprocess.DEVNULL, cwd=cwd or home, env=clean_env(home, **extra),
                          preexec_fn=lambda: os.umask(0o022))


# ------------------------------------------------------------------------------------------- item 4: devnet keys


@pytest.fixture(scope="module")
def devnet_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, subprocess.CompletedProcess[str]]:
    """``paywire devnet --exit`` once, over a devnet.json left world-readable by an earlier version."""
    home = tmp_path_factory.mktemp("home")
    state = home / "devnet.json"
    state.write_text("{}")
    state.chmod(0o644)
    return home, paywire(home, "devnet", "--exit", "--state", str(state))


def test_devnet_prints_addresses_and_never_a_private_key(devnet_run) -> None:
    home, r = devnet_run
    assert r.returncode == 0, r.stderr
    info = json.loads((home / "devnet.json").read_text())
    shown = r.stdout + r.stderr
    assert info["addresses"]["payer"] in shown, "the payer's address is not shown"
    for role in ("deployer", "facilitator", "payer", "payee"):
        key = info[f"{role}_key"].removeprefix("0x").lower()
        assert key[:16] not in shown.lower(), f"(a prefix of) the {role}'s private key is printed"


def test_devnet_state_and_key_files_are_readable_by_their_owner_only(devnet_run) -> None:
    home, r = devnet_run
    assert r.returncode == 0, r.stderr
    state_mode = stat.S_IMODE((home / "devnet.json").stat().st_mode)
    assert state_mode == 0o600, f"devnet.json (funded keys) has mode {state_mode:o}, not 600"
    assert not (home / ".paywire" / "devnet").exists(), "--exit left a profile for a chain that is gone"


def test_devnet_start_shows_its_steps_without_a_terminal(devnet_run) -> None:
    """No terminal: one line per step on stderr instead of ~14 silent seconds (item 15)."""
    _, r = devnet_run
    for step in ("starting the embedded chain", "deploying the token", "funding the payer"):
        assert f"paywire devnet: {step}" in r.stderr, f"no progress line for {step!r}"


# ------------------------------------------------------------------------------- item 14: pay with no flags


@pytest.fixture(scope="module")
def devnet_and_example(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, str, dict[str, object]]]:
    """``paywire devnet`` (embedded) and ``examples/fastapi_app.py`` as subprocesses on free ports."""
    home = tmp_path_factory.mktemp("home")
    env = clean_env(home, PAYWIRE_DEVNET=str(home / "devnet.json"), PORT="0")
    with ExitStack() as stack:
        stack.enter_context(process([*PAYWIRE, "devnet", "--state", str(home / "devnet.json")], env,
                                    re.compile(r"(serving)")))
        url = stack.enter_context(process([sys.executable, str(ROOT / "examples" / "fastapi_app.py")],
                                          {**env, "PAYWIRE_STORE": f"sqlite:///{home / 'seller.db'}"}, URL_RE))
        yield home, url, json.loads((home / "devnet.json").read_text())


def _balance(info: dict[str, object], who: str) -> int:
    import asyncio

    from paywire.chain import HttpTransport, RpcChain
    from paywire.evm import token

    async def read() -> int:
        chain = RpcChain(HttpTransport(str(info["rpc_url"])))
        try:
            owner = info["addresses"][who]  # type: ignore[index]
            return token.decode_uint(await chain.call(str(info["token"]), token.balance_of(owner)))
        finally:
            await chain.aclose()

    return asyncio.run(read())


def test_pay_after_devnet_needs_no_flags(devnet_and_example) -> None:
    """`paywire devnet`, then `paywire pay URL` with no flags, no wallet variables and no terminal: paid."""
    home, url, info = devnet_and_example
    before = (_balance(info, "payer"), _balance(info, "payee"))
    r = paywire(home, "pay", url + "/weather")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["city"] == "Lisbon", "the paid body is not on stdout"
    assert _balance(info, "payer") == before[0] - 10_000, "the payer was not charged $0.01"
    assert _balance(info, "payee") == before[1] + 10_000, "the payee did not receive $0.01"
    assert "profile: " in r.stderr, "the profile used is not named"
    assert f"store: {home / '.paywire' / 'paywire.db'}" in r.stderr, "the buyer's store path is not printed"


def test_devnet_profile_refers_to_a_key_file_readable_by_its_owner_only(devnet_and_example) -> None:
    home, _, info = devnet_and_example
    key_mode = stat.S_IMODE((home / ".paywire" / "devnet" / "payer.key").stat().st_mode)
    assert key_mode == 0o600, f"the profile's payer key file has mode {key_mode:o}, not 600"
    profile = (home / ".paywire" / "devnet" / "profile.json").read_text()
    assert str(info["payer_key"]).removeprefix("0x") not in profile, "the profile holds the key inline"


def test_wallet_show_and_balance_use_the_devnet_profile(devnet_and_example) -> None:
    home, _, info = devnet_and_example
    r = paywire(home, "wallet", "show")
    assert r.returncode == 0, r.stderr
    assert info["addresses"]["payer"] in r.stdout, "wallet show does not find the devnet payer"  # type: ignore[index]
    r = paywire(home, "wallet", "balance", "--json")
    assert r.returncode == 0, r.stderr
    assert str(info["token"]) in json.loads(r.stdout)["tokens"], "wallet balance does not read the devnet token"


def test_pay_above_the_profile_budget_without_a_terminal_names_the_flags(devnet_and_example) -> None:
    """Above what the profile pays without asking (a --max lower than the price is a refusal; a policy file
    with no approval threshold needs approval): the message names --yes and --max, not a Python API."""
    home, url, _ = devnet_and_example
    policy = home / "strict.json"
    policy.write_text(json.dumps({"allowed_networks": ["eip155:31337"]}))
    r = paywire(home, "pay", url + "/weather", "--policy", str(policy))
    assert r.returncode == 3, r.stderr
    assert "--yes" in r.stderr and "--max" in r.stderr, f"the CLI flags are not named: {r.stderr}"


def test_no_wallet_and_no_profile_says_what_to_do(tmp_path: Path) -> None:
    r = paywire(tmp_path, "pay", "http://127.0.0.1:9/none")
    assert r.returncode == 1
    assert "paywire devnet" in r.stderr and "PAYWIRE_WALLET_KEY" in r.stderr, r.stderr


# ------------------------------------------------------------------------------------------------ item 15


def test_version() -> None:
    from paywire import __version__
    from paywire.cli.main import app

    r = CliRunner().invoke(app, ["--version"])
    assert r.exit_code == 0, r.output
    assert r.output.strip() == f"paywire {__version__}", r.output


@pytest.fixture
def busy_port() -> Iterator[int]:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen()
    try:
        yield int(s.getsockname()[1])
    finally:
        s.close()


@pytest.mark.parametrize("command", [["devnet", "--exit"], ["facilitator", "--devnet"]])
def test_a_busy_port_is_one_line_not_a_traceback(tmp_path: Path, busy_port: int, command: list[str]) -> None:
    r = paywire(tmp_path, *command, "--port", str(busy_port))
    assert r.returncode == 1, r.stdout + r.stderr
    assert "Traceback" not in r.stderr, r.stderr
    errors = [line for line in r.stderr.splitlines() if "cannot listen" in line]
    assert len(errors) == 1, r.stderr
    assert f"127.0.0.1:{busy_port}" in errors[0] and "already in use" in errors[0], errors[0]


def test_sales_in_the_wrong_directory_creates_nothing_and_says_which_store(tmp_path: Path) -> None:
    r = paywire(tmp_path, "sales")
    assert r.returncode == 1, r.stdout
    assert str(tmp_path / "paywire.db") in r.stderr, f"the store path is not named: {r.stderr}"
    assert not (tmp_path / "paywire.db").exists(), "paywire sales created an empty store"


def test_sales_prints_the_store_it_reads(tmp_path: Path) -> None:
    import asyncio

    from paywire.store.payments import PaymentStore

    async def create() -> None:
        await (await PaymentStore.open(f"sqlite:///{tmp_path / 'paywire.db'}")).aclose()

    asyncio.run(create())
    r = paywire(tmp_path, "sales")
    assert r.returncode == 0, r.stderr
    assert f"store: {tmp_path / 'paywire.db'}" in r.stderr, r.stderr


def test_wallet_history_never_creates_a_store(tmp_path: Path) -> None:
    r = paywire(tmp_path, "wallet", "history", "--all")
    assert r.returncode == 1, r.stdout
    assert str(tmp_path / ".paywire" / "paywire.db") in r.stderr, r.stderr
    assert not (tmp_path / ".paywire" / "paywire.db").exists(), "wallet history created a store"


def test_seller_names_import_from_paywire_server() -> None:
    import paywire.server as server

    for name in ("PaidRoute", "Offer", "AssetRegistry", "Asset", "KNOWN_ASSETS", "PaymentMiddleware",
                 "WsgiPaymentMiddleware", "SellerConfig", "self_facilitator", "chain_assets"):
        assert getattr(server, name, None) is not None, f"paywire.server.{name} does not resolve"


@pytest.mark.parametrize("example", ["fastapi_app.py", "flask_app.py"])
def test_examples_import_seller_names_from_paywire_server(example: str) -> None:
    source = (ROOT / "examples" / example).read_text()
    for inner in ("paywire.schemes", "paywire.evm", "paywire.server.core", "paywire.server.pricing"):
        assert f"from {inner}" not in source, f"{example} reaches into {inner}"


def test_devnet_removes_its_profile_when_it_stops(tmp_path: Path) -> None:
    """The profile points at the devnet's chain: when `paywire devnet` stops, the profile and key file go too
    (a later `paywire pay` then says no wallet is configured instead of paying into a dead node)."""
    profile = tmp_path / ".paywire" / "devnet" / "profile.json"
    env = clean_env(tmp_path)
    with process([*PAYWIRE, "devnet", "--state", str(tmp_path / "devnet.json")], env, re.compile(r"(serving)")):
        assert profile.exists(), "a running devnet left no profile"
    assert not profile.exists(), "the profile outlived its devnet"
    assert not (tmp_path / ".paywire" / "devnet" / "payer.key").exists(), "the key file outlived its devnet"


def test_facilitator_devnet_prints_no_private_key(tmp_path: Path, busy_port: int) -> None:
    """`paywire facilitator --devnet` shows the devnet's addresses, never its keys (item 4); the busy port
    makes it stop right after printing them."""
    from paywire.chain.devkeys import dev_keys

    r = paywire(tmp_path, "facilitator", "--devnet", "--port", str(busy_port))
    shown = (r.stdout + r.stderr).lower()
    assert "payer" in shown, r.stdout
    for key in dev_keys(4):
        assert key.hex()[:16] not in shown, "a devnet private key is printed"


def test_a_key_file_others_can_read_is_refused(tmp_path: Path) -> None:
    """Like ssh: a profile's key file readable by group or others is refused, naming the fix."""
    key = tmp_path / "payer.key"
    key.write_text("0x" + "11" * 32 + "\n")
    key.chmod(0o644)
    profile = tmp_path / "profile.json"
    profile.write_text(json.dumps({"network": "eip155:31337", "rpc": "http://127.0.0.1:9", "key_file": str(key)}))
    r = paywire(tmp_path, "pay", "http://127.0.0.1:9/none", "--profile", str(profile))
    assert r.returncode == 1, r.stderr
    assert f"chmod 600 {key}" in r.stderr, r.stderr
