"""``paywire pay`` and ``paywire wallet`` run as a person would: subprocesses, no terminal on stdin, against a
local paid server (our seller middleware + facilitator) settling on the embedded chain, which is served as
JSON-RPC so the subprocess can read balances too."""

from __future__ import annotations

import asyncio
import csv
import io
import json
import os
import stat
import sys
from pathlib import Path

import pytest
import pytest_asyncio

from paywire.chain import JsonRpcServer
from paywire.facilitator.core import Facilitator
from paywire.server.core import PaidRoute
from paywire.serving import serve_asgi
from paywire.wallet import Wallet
from tests.helpers import close_devnet, facilitator_for, new_devnet
from tests.test_buyer_support import CENT, balance, offer, paid_app

pytestmark = pytest.mark.asyncio(loop_scope="module")

PAYWIRE = [sys.executable, "-m", "paywire.cli.main"]


class Env:
    def __init__(self, net, url: str, rpc: str) -> None:
        self.net, self.url, self.rpc = net, url, rpc
        self.asset = f"{net.info.network}/{net.info.token}"

    async def payee(self) -> int:
        return await balance(self.net, self.net.payee.address)


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def env():
    net = await new_devnet("embedded")
    server = JsonRpcServer(net.chain.transport)
    rpc = await asyncio.to_thread(server.start)
    routes = [PaidRoute("/cheap", (offer(net, CENT),)), PaidRoute("/dear", (offer(net, 50 * CENT),)),
              PaidRoute("/echo", (offer(net, CENT),), method="POST")]
    try:
        async with serve_asgi(paid_app(routes, Facilitator([facilitator_for(net)]))) as url:
            yield Env(net, url, rpc)
    finally:
        await asyncio.to_thread(server.stop)
        await close_devnet(net)


async def run(tmp_path: Path, *args: str, env_extra: dict[str, str] | None = None,
              key: str | None = "payer", env_obj: Env | None = None) -> tuple[int, str, str]:
    """Run ``paywire ARGS`` with no stdin (non-interactive) and a private HOME and store."""
    environ = {k: v for k, v in os.environ.items() if not k.startswith("PAYWIRE_")}
    environ.update(HOME=str(tmp_path), COLUMNS="200", PAYWIRE_STORE=f"sqlite:///{tmp_path / 'buyer.db'}")
    if key == "payer" and env_obj is not None:
        environ["PAYWIRE_WALLET_KEY"] = env_obj.net.info.payer_key
    environ.update(env_extra or {})
    proc = await asyncio.create_subprocess_exec(*PAYWIRE, *args, stdin=asyncio.subprocess.DEVNULL,
                                                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
                                                env=environ)
    out, err = await asyncio.wait_for(proc.communicate(), 120)
    return proc.returncode or 0, out.decode(), err.decode()


async def test_pay_with_yes_pays_and_prints_the_receipt(env: Env, tmp_path: Path) -> None:
    """`paywire pay URL --yes`: body on stdout, price and receipt on stderr, one cent moved on chain."""
    before = await env.payee()
    code, out, err = await run(tmp_path, "pay", env.url + "/cheap", "--yes", "--asset", env.asset, env_obj=env)
    assert code == 0, err
    assert json.loads(out)["content"] == "paid content"
    assert "402 Payment Required" in err and "$0.01" in err
    assert "paid" in err and "0x" in err and "settled: True" in err
    assert await env.payee() == before + CENT


async def test_pay_without_yes_and_no_terminal_refuses(env: Env, tmp_path: Path) -> None:
    """Non-interactive, outside the policy, no --yes: a clear refusal, exit code 3, nothing moves."""
    before = await env.payee()
    code, out, err = await run(tmp_path, "pay", env.url + "/cheap", "--asset", env.asset, env_obj=env)
    assert code == 3, err
    assert "needs approval" in err and "--yes" in err and out == ""
    assert await env.payee() == before


async def test_pay_max_approves_up_to_it_without_a_terminal(env: Env, tmp_path: Path) -> None:
    """--max is the most the user will pay: within it no --yes is needed, even with no terminal (issue 11, 14)."""
    before = await env.payee()
    code, _, err = await run(tmp_path, "pay", env.url + "/cheap", "--max", "$0.01", "--asset", env.asset,
                             env_obj=env)
    assert code == 0, err
    assert "within --max" in err, err
    assert await env.payee() == before + CENT, "the payee did not receive $0.01"


async def test_refusal_of_an_unvalued_token_names_the_cli_flag(env: Env, tmp_path: Path) -> None:
    """A CLI error gives CLI advice (--asset), not the Python API (Policy(assets=...)) (issue 11, item 14)."""
    code, _, err = await run(tmp_path, "pay", env.url + "/cheap", "--max", "$0.10", env_obj=env)
    assert code == 3, err
    assert "--asset" in err, f"no CLI advice: {err}"
    assert "Policy(" not in err, f"Python API advice in a CLI error: {err}"


async def test_pay_max_caps_the_price(env: Env, tmp_path: Path) -> None:
    before = await env.payee()
    code, _, err = await run(tmp_path, "pay", env.url + "/dear", "--yes", "--max", "$0.10", "--asset", env.asset,
                             env_obj=env)
    assert code == 3 and "max_per_payment" in err and "$0.50" in err
    assert await env.payee() == before


async def test_pay_within_policy_and_daily_budget_across_processes(env: Env, tmp_path: Path) -> None:
    """A policy file (approval_threshold $0.05, daily $0.02) pays without asking; the third process in a row
    is refused by the daily budget remembered in the SQLite store."""
    policy = tmp_path / "policy.json"
    policy.write_text(json.dumps({"approval_threshold": "$0.05", "daily": "$0.02",
                                  "assets": [{"network": env.net.info.network, "address": env.net.info.token}]}))
    before = await env.payee()
    codes = []
    for _ in range(3):
        code, _, err = await run(tmp_path, "pay", env.url + "/cheap", "--policy", str(policy), env_obj=env)
        codes.append((code, err))
    assert [c for c, _ in codes] == [0, 0, 3], codes
    assert "within policy" in codes[0][1]
    assert "daily" in codes[2][1]
    assert await env.payee() == before + 2 * CENT


async def test_pay_is_curl_like(env: Env, tmp_path: Path) -> None:
    """-X, -H, -d and -o are passed through; the paid body lands in the file."""
    target = tmp_path / "body.json"
    code, out, err = await run(tmp_path, "pay", env.url + "/echo", "-X", "POST", "-H", "X-Test: hello",
                               "-d", "some body", "-o", str(target), "--yes", "--asset", env.asset, env_obj=env)
    assert code == 0, err
    got = json.loads(target.read_text())
    assert got == {"path": "/echo", "content": "paid content", "method": "POST", "body": "some body",
                   "x_test": "hello"}
    assert out == ""


async def test_pay_dry_run_signs_nothing(env: Env, tmp_path: Path) -> None:
    before = await env.payee()
    code, _, err = await run(tmp_path, "pay", env.url + "/cheap", "--dry-run", "--asset", env.asset, env_obj=env)
    assert code == 0 and "would pay $0.01" in err
    assert await env.payee() == before


async def test_wallet_new_show_balance_history(env: Env, tmp_path: Path) -> None:
    """`wallet new` writes an encrypted keystore (0600) that `wallet show` and Wallet.from_keystore read;
    `wallet balance` reads the chain; `wallet history` lists receipts as a table, JSON and CSV."""
    ks = tmp_path / "ks.json"
    pw = {"PAYWIRE_KEYSTORE_PASSWORD": "correct horse"}
    code, out, err = await run(tmp_path, "wallet", "new", "--keystore", str(ks), "--kdf", "pbkdf2",
                               env_extra=pw, key=None)
    assert code == 0, err
    address = out.split("address")[1].split()[0]
    assert stat.S_IMODE(ks.stat().st_mode) == 0o600
    assert "crypto" in json.loads(ks.read_text())
    assert Wallet.from_keystore(ks, "correct horse").address == address
    code, out, _ = await run(tmp_path, "wallet", "show", env_extra={"PAYWIRE_KEYSTORE": str(ks)}, key=None)
    assert code == 0 and address in out and "keystore" in out

    code, out, err = await run(tmp_path, "wallet", "balance", "--rpc", env.rpc, "--asset", env.net.info.token,
                               "--json", env_obj=env)
    assert code == 0, err
    info = json.loads(out)
    assert info["address"] == env.net.payer.address
    assert int(info["tokens"][env.net.info.token]["atomic"]) == await balance(env.net, env.net.payer.address)

    # one paid and one refused attempt, then the history in three formats
    assert (await run(tmp_path, "pay", env.url + "/cheap", "--yes", "--asset", env.asset, env_obj=env))[0] == 0
    assert (await run(tmp_path, "pay", env.url + "/dear", "--yes", "--max", "$0.10", "--asset", env.asset,
                      env_obj=env))[0] == 3
    code, out, _ = await run(tmp_path, "wallet", "history", "--format", "json", env_obj=env)
    rows = json.loads(out)
    assert [r["outcome"] for r in rows] == ["refused", "paid"]
    assert rows[1]["tx"].startswith("0x") and rows[1]["amount"] == str(CENT) and rows[0]["rule"] == "max_per_payment"
    assert rows[1]["url"].endswith("/cheap") and rows[1]["payload_hash"] and json.loads(rows[1]["challenge"])
    code, out, _ = await run(tmp_path, "wallet", "history", "--format", "csv", env_obj=env)
    parsed = list(csv.DictReader(io.StringIO(out)))
    assert [r["outcome"] for r in parsed] == ["refused", "paid"] and parsed[1]["price"] == "$0.01"
    code, out, _ = await run(tmp_path, "wallet", "history", env_obj=env)
    assert code == 0 and "paid" in out and "refused" in out
    export = tmp_path / "history.csv"
    code, _, err = await run(tmp_path, "wallet", "history", "--format", "csv", "-o", str(export), env_obj=env)
    assert code == 0 and "2 receipts written" in err and export.read_text().startswith("id,time,outcome")
