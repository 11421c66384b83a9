"""The official x402 SDKs complete paid requests through OUR facilitator, with on-chain balance deltas.

* Python: the SDK's FastAPI resource server (``PaymentMiddlewareASGI`` + ``HTTPFacilitatorClient`` pointed at
  paywire's facilitator) and the SDK's httpx client (``x402HttpxClient``), on the embedded chain and on anvil.
* TypeScript: ``@x402/express`` (pinned in tests/node/package-lock.json) as the resource server, paid by the
  SDK's Python httpx client, when Node.js is available.
"""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
import threading
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import pytest_asyncio
from eth_account import Account

from paywire.devnet import Devnet
from paywire.facilitator.app import create_app
from paywire.facilitator.core import Facilitator
from paywire.serving import serve_asgi
from paywire.store.settlements import SettlementStore
from tests.helpers import CHAIN_KINDS, close_devnet, new_devnet
from tests.node_peers import NODE_DIR, ensure_node_peers
from tests.test_facilitator_helpers import facilitator_with_store

pytestmark = [pytest.mark.interop, pytest.mark.asyncio(loop_scope="module")]
PRICE = 12_000


@pytest_asyncio.fixture(loop_scope="module", scope="module", params=CHAIN_KINDS)
async def net(request):
    n = await new_devnet(request.param)
    yield n
    await close_devnet(n)


@contextlib.asynccontextmanager
async def our_facilitator(net: Devnet, tmp_path: Path) -> AsyncIterator[tuple[str, SettlementStore]]:
    store = await SettlementStore.open(f"sqlite:///{tmp_path / 'fac.db'}")
    app = create_app(Facilitator([facilitator_with_store(net, store)], store=store))
    try:
        async with serve_asgi(app) as url:
            yield url, store
    finally:
        await store.aclose()


def sdk_resource_server(net: Devnet, facilitator_url: str, calls: list[int]) -> Any:
    """The SDK's FastAPI resource server selling GET /paid in our token (built in a worker thread: the SDK
    calls the facilitator's /supported synchronously while it builds its middleware)."""
    from fastapi import FastAPI
    from x402 import x402ResourceServer
    from x402.http import FacilitatorConfig, HTTPFacilitatorClient, PaymentOption
    from x402.http.middleware.fastapi import PaymentMiddlewareASGI
    from x402.http.types import RouteConfig
    from x402.mechanisms.evm.exact import ExactEvmServerScheme

    info = net.info
    server = x402ResourceServer(HTTPFacilitatorClient(FacilitatorConfig(url=facilitator_url)))
    server.register(info.network, ExactEvmServerScheme())
    routes = {"GET /paid": RouteConfig(
        accepts=PaymentOption(scheme="exact", network=info.network, pay_to=net.payee.address, max_timeout_seconds=60,
                              price={"amount": str(PRICE), "asset": info.token,
                                     "extra": {"name": info.token_name, "version": info.token_version}}),
        description="paid test resource", mime_type="application/json")}
    app = FastAPI()

    @app.get("/paid")
    async def paid() -> dict[str, bool]:
        calls.append(1)
        return {"ok": True}

    app.add_middleware(PaymentMiddlewareASGI, routes=routes, server=server)
    app.middleware_stack = app.build_middleware_stack()  # runs the SDK's startup /supported call here
    return app


async def sdk_client_get(net: Devnet, url: str) -> httpx.Response:
    """GET ``url`` with the SDK's auto-paying httpx client (pays 402 challenges in our token)."""
    from x402 import x402Client
    from x402.http.clients.httpx import x402HttpxClient
    from x402.mechanisms.evm.exact import ExactEvmScheme

    client = x402Client()
    client.register(net.info.network, ExactEvmScheme(Account.from_key(net.info.payer_key)))
    client.set_spend_controls({"allowed_assets": [{"network": net.info.network, "asset": net.info.token}]})
    async with x402HttpxClient(client, timeout=90) as http:
        return await http.get(url)


async def assert_paid_once(net: Devnet, response: httpx.Response, store: SettlementStore, before: list[int]) -> str:
    from x402.http import decode_payment_response_header

    assert response.status_code == 200, (response.status_code, response.headers, response.text)
    settlement = decode_payment_response_header(response.headers["PAYMENT-RESPONSE"])
    assert settlement.success and settlement.transaction.startswith("0x")
    assert [await net.token_balance(net.payer.address), await net.token_balance(net.payee.address)] == [
        before[0] - PRICE, before[1] + PRICE]
    row = await store.by_tx_hash(settlement.transaction)
    assert row is not None and row.state == "settled" and row.amount == PRICE
    return settlement.transaction


async def test_python_sdk_server_and_client_pay_through_our_facilitator(net, tmp_path: Path):
    """SDK resource server + SDK httpx client → our /verify and /settle → tokens move once, handler runs once;
    a second request pays again (a new authorization) and moves money again."""
    async with our_facilitator(net, tmp_path) as (fac_url, store):
        calls: list[int] = []
        app = await asyncio.to_thread(sdk_resource_server, net, fac_url, calls)
        async with serve_asgi(app) as api:
            async with httpx.AsyncClient(timeout=60) as plain:
                unpaid = await plain.get(api + "/paid")
            assert unpaid.status_code == 402 and "PAYMENT-REQUIRED" in unpaid.headers
            for n in (1, 2):
                before = [await net.token_balance(net.payer.address), await net.token_balance(net.payee.address)]
                r = await sdk_client_get(net, api + "/paid")
                await assert_paid_once(net, r, store, before)
                assert len(calls) == n


@pytest.mark.node
async def test_typescript_express_server_pays_through_our_facilitator(net, tmp_path: Path):
    """@x402/express (official TS server) verifies and settles through our facilitator; the SDK's Python
    client pays; balances move once and the handler runs once."""
    node = ensure_node_peers()
    async with our_facilitator(net, tmp_path) as (fac_url, store):
        info = net.info
        env = {"FACILITATOR_URL": fac_url, "NETWORK": info.network, "ASSET": info.token,
               "PAY_TO": net.payee.address, "AMOUNT": str(PRICE), "TOKEN_NAME": info.token_name,
               "TOKEN_VERSION": info.token_version, "PATH": "/usr/bin:/bin"}
        proc = subprocess.Popen([node, str(NODE_DIR / "facilitator_express_server.mjs")], cwd=NODE_DIR, env=env,
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        lines: list[str] = []
        port: list[int] = []
        ready = threading.Event()

        def read() -> None:
            assert proc.stdout is not None
            for line in proc.stdout:
                lines.append(line.rstrip())
                if line.startswith("LISTENING "):
                    port.append(int(line.split()[1]))
                    ready.set()

        threading.Thread(target=read, daemon=True).start()
        try:
            ok = await asyncio.to_thread(ready.wait, 60)
            assert ok, "express server did not start:\n" + "\n".join(lines)
            api = f"http://127.0.0.1:{port[0]}"
            before = [await net.token_balance(net.payer.address), await net.token_balance(net.payee.address)]
            r = await sdk_client_get(net, api + "/paid")
            await assert_paid_once(net, r, store, before)
            async with httpx.AsyncClient(timeout=60) as plain:
                assert (await plain.get(api + "/calls")).json() == {"calls": 1}
        finally:
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
