"""The examples run against ``paywire devnet`` in one command each, exactly as their docstrings say.

Three real processes: ``paywire devnet`` (embedded chain served as JSON-RPC, writes devnet.json), then
``python examples/fastapi_app.py`` and ``python examples/flask_app.py`` (self-facilitating, the default).
A payment to each settles on the devnet; balances are read over its RPC.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

import httpx
import pytest

from paywire.chain import HttpTransport, RpcChain
from paywire.evm import token
from paywire.evm.signer import LocalSigner
from paywire.schemes.evm_exact import ExactEvmClient
from paywire.x402.codec import decode_payment_required, decode_payment_response, encode_payment_payload
from paywire.x402.models import PaymentPayload

ROOT = Path(__file__).resolve().parent.parent
URL_RE = re.compile(r"(http://127\.0\.0\.1:\d+)")


@contextmanager
def process(args: list[str], env: dict[str, str], wait_for: re.Pattern[str] | None = None,
            timeout: float = 120) -> Iterator[str]:
    """Start a process (stderr+stdout to a temp file); optionally wait until its output matches ``wait_for``
    and yield the first group. Terminated (by its pid) on exit."""
    log = tempfile.TemporaryFile("w+")  # noqa: SIM115 - closed below
    proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, text=True, env=env, cwd=env["CWD"])
    try:
        found = ""
        if wait_for is not None:
            deadline = time.monotonic() + timeout
            while not found:
                log.seek(0)
                m = wait_for.search(log.read())
                if m:
                    found = m.group(1)
                elif proc.poll() is not None or time.monotonic() > deadline:
                    log.seek(0)
                    pytest.fail(f"{args[-1]} did not start:\n{log.read()[-3000:]}")
                else:
                    time.sleep(0.2)
        yield found
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


async def pay(url: str, payer_key: str) -> httpx.Response:
    async with httpx.AsyncClient(timeout=60) as http:
        r = await http.get(url)
        assert r.status_code == 402, r.text
        pr = decode_payment_required(r.headers["payment-required"])
        inner = await ExactEvmClient(LocalSigner(payer_key)).create_payload(pr.accepts[0])
        p = PaymentPayload(accepted=pr.accepts[0], payload=inner, resource=pr.resource)
        return await http.get(url, headers={"PAYMENT-SIGNATURE": encode_payment_payload(p)})


def test_examples_run_against_paywire_devnet(tmp_path: Path) -> None:
    env = {**os.environ, "CWD": str(tmp_path), "HOME": str(tmp_path),  # the devnet's profile goes to this HOME
           "PAYWIRE_DEVNET": str(tmp_path / "devnet.json"), "PORT": "0",
           "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), str(ROOT)])}
    paywire = [sys.executable, "-m", "paywire.cli.main"]
    with ExitStack() as stack:
        stack.enter_context(process([*paywire, "devnet", "--state", str(tmp_path / "devnet.json")], env,
                                    re.compile(r"(serving)")))
        urls = {}
        for name in ("fastapi_app", "flask_app"):
            e = {**env, "PAYWIRE_STORE": f"sqlite:///{tmp_path / name}.db"}
            urls[name] = stack.enter_context(process([sys.executable, str(ROOT / "examples" / f"{name}.py")], e,
                                                     URL_RE))
        info = json.loads((tmp_path / "devnet.json").read_text())

        async def run() -> None:
            chain = RpcChain(HttpTransport(info["rpc_url"]))

            async def balance(who: str) -> int:
                return token.decode_uint(await chain.call(info["token"], token.balance_of(info["addresses"][who])))

            try:
                for name, path, amount in (("fastapi_app", "/weather", 10_000), ("fastapi_app", "/report", 50_000),
                                           ("flask_app", "/weather", 10_000), ("flask_app", "/report", 50_000)):
                    before = (await balance("payer"), await balance("payee"))
                    r = await pay(urls[name] + path, info["payer_key"])
                    assert r.status_code == 200, (name, path, r.text)
                    assert decode_payment_response(r.headers["payment-response"]).success
                    after = (await balance("payer"), await balance("payee"))
                    assert (before[0] - after[0], after[1] - before[1]) == (amount, amount), (name, path)
            finally:
                await chain.aclose()

        asyncio.run(run())
