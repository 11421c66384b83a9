"""Our buying client pays the official x402 servers, settling through our facilitator on the embedded chain:

* the official Python resource server (``x402`` 2.25.0 FastAPI middleware) in v2;
* the official TypeScript resource server (``@x402/express`` 2.27.0, tests/node/package-lock.json) in v2;
* the official v1 resource server (``x402-express`` 1.2.0, tests/node/buyer_v1/package-lock.json) in v1.

The devnet runs as chain 84532 so the v1 network name ``base-sepolia`` resolves to it for the v1 peer. Every
test asserts the on-chain balance delta and that the paid handler ran once.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
import pytest_asyncio

from paywire.client import Policy, receipt_of, settlement_of, x402_client
from paywire.facilitator.app import create_app
from paywire.facilitator.core import Facilitator
from paywire.serving import serve_asgi
from paywire.wallet import Wallet
from tests.helpers import close_devnet, facilitator_for, new_devnet
from tests.node_peers import NODE_DIR, ensure_node_peers
from tests.test_buyer_support import CENT, balance

pytestmark = [pytest.mark.interop, pytest.mark.asyncio(loop_scope="module")]
CHAIN_ID = 84532
V1_DIR = NODE_DIR / "buyer_v1"


class Env:
    def __init__(self, net, fac_url: str) -> None:
        self.net, self.fac_url = net, fac_url

    def client(self, tmp_path: Path) -> httpx.AsyncClient:
        wallet = Wallet.from_key(self.net.info.payer_key, chains={self.net.info.network: self.net.chain})
        policy = Policy(max_per_payment="$0.10", daily="$1", assets=[self.net.asset])
        return x402_client(wallet, policy, store=f"sqlite:///{tmp_path / 'buyer.db'}")

    def peer_env(self) -> dict[str, str]:
        i = self.net.info
        return {**os.environ, "FACILITATOR_URL": self.fac_url, "NETWORK": i.network, "ASSET": i.token,
                "PAY_TO": self.net.payee.address, "AMOUNT": str(CENT), "TOKEN_NAME": i.token_name,
                "TOKEN_VERSION": i.token_version}


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def env() -> AsyncIterator[Env]:
    net = await new_devnet("embedded", chain_id=CHAIN_ID)
    try:
        async with serve_asgi(create_app(Facilitator([facilitator_for(net)]))) as fac_url:
            yield Env(net, fac_url)
    finally:
        await close_devnet(net)


async def pay_and_check(env: Env, tmp_path: Path, url: str, version: int) -> httpx.Response:
    before = await balance(env.net, env.net.payee.address), await balance(env.net, env.net.payer.address)
    async with env.client(tmp_path) as client:
        r = await client.get(url)
    assert r.status_code == 200, r.text
    s = settlement_of(r)
    assert s is not None and s.success and s.transaction.startswith("0x")
    rc = receipt_of(r)
    assert rc is not None and rc.outcome == "paid" and rc.x402_version == version and rc.tx == s.transaction
    after = await balance(env.net, env.net.payee.address), await balance(env.net, env.net.payer.address)
    assert after == (before[0] + CENT, before[1] - CENT)
    return r


async def test_official_python_server_v2(env: Env, tmp_path: Path) -> None:
    """x402's FastAPI middleware prices a route in our token; our client pays it in v2 (checklist 26-29, 36)."""
    from fastapi import FastAPI
    from x402 import x402ResourceServer
    from x402.http import FacilitatorConfig, HTTPFacilitatorClient, PaymentOption
    from x402.http.middleware.fastapi import PaymentMiddlewareASGI
    from x402.http.types import RouteConfig
    from x402.mechanisms.evm.exact import ExactEvmServerScheme

    i = env.net.info
    calls = []
    app = FastAPI()

    @app.get("/paid")
    async def paid() -> dict[str, str]:
        calls.append(1)
        return {"server": "x402 FastAPI"}

    server = x402ResourceServer(HTTPFacilitatorClient(FacilitatorConfig(url=env.fac_url)))
    server.register(i.network, ExactEvmServerScheme())
    routes = {"GET /paid": RouteConfig(
        accepts=PaymentOption(scheme="exact", network=i.network, pay_to=env.net.payee.address,
                              price={"amount": str(CENT), "asset": i.token,
                                     "extra": {"name": i.token_name, "version": i.token_version}},
                              max_timeout_seconds=60),
        description="paid by paywire's client", mime_type="application/json")}
    # the SDK middleware fetches /supported synchronously when built: build it off the event loop
    wrapped = await asyncio.to_thread(PaymentMiddlewareASGI, app, routes=routes, server=server)
    async with serve_asgi(wrapped) as url:
        r = await pay_and_check(env, tmp_path, url + "/paid", 2)
    assert r.json() == {"server": "x402 FastAPI"} and len(calls) == 1


@contextlib.asynccontextmanager
async def node_server(node: str, script: Path, env: dict[str, str]) -> AsyncIterator[str]:
    proc = await asyncio.create_subprocess_exec(node, str(script), cwd=script.parent, env=env,
                                                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
    lines: list[str] = []
    try:
        assert proc.stdout is not None
        while True:
            raw = await asyncio.wait_for(proc.stdout.readline(), 60)
            if not raw:
                raise AssertionError(f"{script.name} exited:\n" + "".join(lines))
            line = raw.decode()
            lines.append(line)
            if line.startswith("LISTENING "):
                break
        yield f"http://127.0.0.1:{int(line.split()[1])}"
    finally:
        if proc.returncode is None:
            proc.terminate()
            try:
                await asyncio.wait_for(proc.wait(), 10)
            except TimeoutError:
                proc.kill()


@pytest.mark.node
async def test_official_typescript_server_v2(env: Env, tmp_path: Path) -> None:
    """@x402/express (official TS server) is paid in v2 by our client."""
    node = ensure_node_peers()
    async with node_server(node, NODE_DIR / "buyer_express_server.mjs", env.peer_env()) as url:
        r = await pay_and_check(env, tmp_path, url + "/paid", 2)
        async with httpx.AsyncClient(timeout=60) as plain:
            calls = (await plain.get(url + "/calls")).json()["calls"]
    assert r.json()["server"] == "@x402/express" and calls == 1


def ensure_v1_peer() -> str:
    """Node, after ``npm ci`` of the pinned v1 server (x402-express 1.2.0) in tests/node/buyer_v1."""
    node = ensure_node_peers()
    npm = shutil.which("npm")
    assert npm is not None
    if not (V1_DIR / "node_modules" / "x402-express").is_dir():
        subprocess.run([npm, "ci", "--no-audit", "--no-fund"], cwd=V1_DIR, check=True, capture_output=True,
                       timeout=1200)
    return node


@pytest.mark.node
async def test_official_v1_server(env: Env, tmp_path: Path) -> None:
    """x402-express 1.2.0 (official v1 server): 402 with a v1 JSON body on ``base-sepolia``; our client pays
    with X-PAYMENT and reads X-PAYMENT-RESPONSE (checklist 26, 92-94)."""
    node = await asyncio.to_thread(ensure_v1_peer)
    async with node_server(node, V1_DIR / "buyer_v1_express_server.mjs", env.peer_env()) as url:
        async with httpx.AsyncClient(timeout=60) as plain:
            challenge = await plain.get(url + "/paid")
        assert challenge.status_code == 402 and "payment-required" not in challenge.headers
        body = json.loads(challenge.content)
        assert body["x402Version"] == 1 and body["accepts"][0]["network"] == "base-sepolia"
        r = await pay_and_check(env, tmp_path, url + "/paid", 1)
        assert "x-payment-response" in r.headers
        async with httpx.AsyncClient(timeout=60) as plain:
            calls = (await plain.get(url + "/calls")).json()["calls"]
    assert r.json()["server"] == "x402-express v1" and calls == 1
