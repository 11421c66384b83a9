"""Official x402 clients pay our example sellers; on-chain balance deltas asserted.

* the official Python client (``x402`` 2.25.0, httpx) and the official TypeScript client (``@x402/fetch``
  2.27.0, pinned in tests/node) pay examples/fastapi_app.py and examples/flask_app.py in v2;
* the official Python client in v1 mode (no ``PAYMENT-REQUIRED`` header, v1 JSON body) pays a v1-only route;
* our browser paywall page pays with an injected EIP-1193 wallet (viem local account) run by Node.

The devnet uses chain id 84532 so the v1 network name (``base-sepolia``) is one every SDK knows; the token is
our devnet's, which the SDK clients must allow-list (it is not their default USDC).
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import json
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import pytest_asyncio
from eth_account import Account
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route
from x402 import x402Client
from x402.http import decode_payment_response_header
from x402.http.clients.httpx import x402HttpxClient
from x402.mechanisms.evm.exact import ExactEvmScheme
from x402.mechanisms.evm.exact.v1 import ExactEvmSchemeV1Client

from paywire.facilitator.app import create_app
from paywire.facilitator.client import HttpFacilitatorClient
from paywire.server.asgi import PaymentMiddleware
from paywire.server.core import PaidRoute
from paywire.server.pricing import Offer
from paywire.serving import serve_asgi
from tests.helpers import close_devnet, full_facilitator, new_devnet, serve_wsgi
from tests.node_peers import NODE_DIR, ensure_node_peers

pytestmark = [pytest.mark.interop, pytest.mark.asyncio(loop_scope="module")]
ROOT = Path(__file__).resolve().parent.parent
CHAIN_ID = 84532  # base-sepolia: a v1 name every SDK knows
WEATHER, REPORT = 10_000, 50_000


def load_example(name: str) -> Any:
    spec = importlib.util.spec_from_file_location(f"paywire_example_{name}", ROOT / "examples" / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


class Env:
    def __init__(self, net: Any, fastapi_url: str, flask_url: str, v1_url: str) -> None:
        self.net, self.fastapi_url, self.flask_url, self.v1_url = net, fastapi_url, flask_url, v1_url

    async def balances(self) -> tuple[int, int]:
        return (await self.net.token_balance(self.net.payer.address),
                await self.net.token_balance(self.net.payee.address))

    async def assert_paid(self, before: tuple[int, int], amount: int) -> None:
        after = await self.balances()
        assert (before[0] - after[0], after[1] - before[1]) == (amount, amount)


def v1_app(net: Any, facilitator_url: str, store: str) -> PaymentMiddleware:
    """A route only x402 v1 clients can pay: no PAYMENT-REQUIRED header, a v1 JSON body."""

    async def data(request: Request) -> JSONResponse:
        return JSONResponse({"v1": True, "payer": request.state.payment.payer})

    return PaymentMiddleware(Starlette(routes=[Route("/v1data", data)]),
                             [PaidRoute("GET /v1data", offers=(Offer(price=WEATHER, asset=net.asset),),
                                        x402_versions=(1,), description="v1 only")],
                             HttpFacilitatorClient(facilitator_url), pay_to=net.payee.address, store=store)


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def env(tmp_path_factory) -> AsyncIterator[Env]:
    net = await new_devnet("embedded", chain_id=CHAIN_ID)
    tmp = tmp_path_factory.mktemp("interop")
    fastapi_example, flask_example = load_example("fastapi_app"), load_example("flask_app")
    try:
        async with contextlib.AsyncExitStack() as stack:
            fac = await stack.enter_async_context(serve_asgi(create_app(full_facilitator(net))))
            fastapi_app = fastapi_example.create_app(net.info, fac, store=f"sqlite:///{tmp / 'fastapi.db'}")
            fastapi_url = await stack.enter_async_context(serve_asgi(fastapi_app))
            flask_app = flask_example.create_app(net.info, fac, store=f"sqlite:///{tmp / 'flask.db'}")
            stack.callback(flask_app.wsgi_app.close)
            flask_url = stack.enter_context(serve_wsgi(flask_app))
            v1_url = await stack.enter_async_context(serve_asgi(v1_app(net, fac, f"sqlite:///{tmp / 'v1.db'}")))
            yield Env(net, fastapi_url, flask_url, v1_url)
    finally:
        await close_devnet(net)


def sdk_client(net: Any) -> x402Client:
    client = x402Client()
    client.register(net.info.network, ExactEvmScheme(Account.from_key(net.info.payer_key)))
    client.register_v1("base-sepolia", ExactEvmSchemeV1Client(Account.from_key(net.info.payer_key)))
    # our devnet token is not the SDK's default USDC for this chain, so its spend controls must allow it
    client.set_spend_controls({"allowed_assets": [{"network": net.info.network, "asset": net.info.token},
                                                  {"network": "base-sepolia", "asset": net.info.token}]})
    return client


@pytest.mark.parametrize(("server", "path", "amount"), [
    ("fastapi", "/weather", WEATHER), ("fastapi", "/report", REPORT),
    ("flask", "/weather", WEATHER), ("flask", "/report", REPORT),
])
async def test_official_python_client_pays_our_examples(env: Env, server: str, path: str, amount: int) -> None:
    """x402 httpx client (v2): 402 → sign → PAYMENT-SIGNATURE → 200 with PAYMENT-RESPONSE; tokens moved."""
    url = (env.fastapi_url if server == "fastapi" else env.flask_url) + path
    before = await env.balances()
    async with x402HttpxClient(sdk_client(env.net), timeout=60) as http:
        r = await http.get(url)
    assert r.status_code == 200, r.text
    settlement = decode_payment_response_header(r.headers["PAYMENT-RESPONSE"])
    assert settlement.success and settlement.transaction.startswith("0x")
    assert r.headers["cache-control"].startswith("private")
    await env.assert_paid(before, amount)


async def test_official_python_client_pays_in_v1(env: Env) -> None:
    """Checklist 92-94: the SDK sees no PAYMENT-REQUIRED, takes the v1 path (X-PAYMENT), gets
    X-PAYMENT-RESPONSE."""
    before = await env.balances()
    async with httpx.AsyncClient(timeout=60) as plain:
        first = await plain.get(env.v1_url + "/v1data")
    async with x402HttpxClient(sdk_client(env.net), timeout=60) as http:
        r = await http.get(env.v1_url + "/v1data")
    assert "payment-required" not in first.headers and first.json()["x402Version"] == 1
    assert first.json()["accepts"][0]["network"] == "base-sepolia"
    assert r.status_code == 200, r.text
    assert r.json()["payer"] == env.net.payer.address
    assert "payment-response" not in r.headers
    assert decode_payment_response_header(r.headers["X-PAYMENT-RESPONSE"]).success
    await env.assert_paid(before, WEATHER)


async def run_node(script: str, *args: str) -> dict[str, Any]:
    node = ensure_node_peers()
    proc = await asyncio.create_subprocess_exec(node, script, *args, cwd=NODE_DIR, stdout=asyncio.subprocess.PIPE,
                                                stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(proc.communicate(), timeout=120)
    lines = out.decode().strip().splitlines()
    assert lines, f"{script} printed nothing: {err.decode()}"
    result: dict[str, Any] = json.loads(lines[-1])
    assert "error" not in result, result["error"]
    return result


@pytest.mark.node
@pytest.mark.parametrize(("server", "path", "amount"), [("fastapi", "/weather", WEATHER),
                                                        ("flask", "/report", REPORT)])
async def test_official_typescript_client_pays_our_examples(env: Env, server: str, path: str, amount: int) -> None:
    """@x402/fetch (v2) pays the FastAPI and the Flask example."""
    url = (env.fastapi_url if server == "fastapi" else env.flask_url) + path
    before = await env.balances()
    result = await run_node("seller_fetch_client.mjs", url, env.net.info.payer_key, env.net.info.network,
                            env.net.info.token)
    assert result["status"] == 200, result
    assert result["paymentResponse"]["success"] is True
    assert result["paymentResponse"]["payer"].lower() == env.net.payer.address.lower()
    await env.assert_paid(before, amount)


@pytest.mark.node
async def test_paywall_pays_with_an_injected_wallet(env: Env) -> None:
    """Checklist 20: the paywall page's own script signs with an EIP-1193 wallet (eth_signTypedData_v4) and
    fetches the resource with PAYMENT-SIGNATURE."""
    before = await env.balances()
    result = await run_node("seller_paywall_wallet.mjs", env.fastapi_url + "/weather", env.net.info.payer_key)
    assert result["status"] == 200, result
    assert json.loads(result["body"])["city"] == "Lisbon"
    assert result["settlement"]["success"] is True
    assert result["calls"][:2] == ["eth_requestAccounts", "eth_chainId"] and "eth_signTypedData_v4" in result["calls"]
    await env.assert_paid(before, WEATHER)
