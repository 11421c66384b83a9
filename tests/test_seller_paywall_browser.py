"""Our browser paywall paying in a real browser: Debian's headless Chromium driven by playwright-core.

Checklist 20: a browser (its own ``Accept: text/html`` and Mozilla user agent) gets our HTML paywall with a 402;
the page's "Pay with wallet" button signs an EIP-3009 authorization with the injected EIP-1193 wallet
(``eth_signTypedData_v4``; the wallet is a viem local account answering from Node), fetches the resource with
``PAYMENT-SIGNATURE`` and shows the paid result. Settlement is real, on the embedded chain.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from eth_account import Account
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import Route

from paywire.devnet import Devnet
from paywire.facilitator.app import create_app
from paywire.facilitator.client import HttpFacilitatorClient
from paywire.server.asgi import PaymentMiddleware
from paywire.server.core import PaidRoute
from paywire.server.pricing import Offer
from paywire.serving import serve_asgi
from paywire.x402.reasons import INVALID_EXACT_EVM_INSUFFICIENT_BALANCE
from tests.helpers import close_devnet, full_facilitator, new_devnet
from tests.node_peers import NODE_DIR, ensure_node_peers

pytestmark = [pytest.mark.interop, pytest.mark.node, pytest.mark.asyncio(loop_scope="module")]
CHROMIUM = Path("/usr/bin/chromium")
PRICE, PAGE_PRICE = 10_000, 20_000
APP_NAME = "paywire browser test"
BROWSER_TIMEOUT = 300


@dataclass
class World:
    net: Devnet
    url: str
    runs: dict[str, int] = field(default_factory=dict)

    async def balances(self) -> tuple[int, int]:
        return (await self.net.token_balance(self.net.payer.address),
                await self.net.token_balance(self.net.payee.address))


def paid_app(runs: dict[str, int]) -> Starlette:
    async def article(request: Request) -> Response:
        runs["article"] = runs.get("article", 0) + 1
        return JSONResponse({"article": "The weather in Lisbon", "payer": request.state.payment.payer})

    async def members(request: Request) -> Response:
        runs["members"] = runs.get("members", 0) + 1
        return JSONResponse({"article": "Members only", "payer": request.state.payment.payer})

    async def page(request: Request) -> Response:
        runs["page"] = runs.get("page", 0) + 1
        return HTMLResponse("<!doctype html><title>Paid page</title><h1 id='paid'>Thanks for paying</h1>")

    return Starlette(routes=[Route("/article", article), Route("/members", members), Route("/page", page)])


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def world(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[World]:
    net = await new_devnet("embedded")
    store = tmp_path_factory.mktemp("paywall") / "seller.db"
    runs: dict[str, int] = {}
    routes = [PaidRoute("GET /article", offers=(Offer(price=PRICE, asset=net.asset),),
                        description="Premium weather article"),
              PaidRoute("GET /members", offers=(Offer(price=PRICE, asset=net.asset),), description="Members only",
                        payment_identifier="required"),
              PaidRoute("GET /page", offers=(Offer(price=PAGE_PRICE, asset=net.asset),), description="A paid page")]
    try:
        async with contextlib.AsyncExitStack() as stack:
            fac = await stack.enter_async_context(serve_asgi(create_app(full_facilitator(net))))
            mw = PaymentMiddleware(paid_app(runs), routes, HttpFacilitatorClient(fac, timeout=60),
                                   pay_to=net.payee.address, store=f"sqlite:///{store}", app_name=APP_NAME)
            stack.push_async_callback(mw.flow.aclose)
            url = await stack.enter_async_context(serve_asgi(mw))
            yield World(net, url, runs)
    finally:
        await close_devnet(net)


def browser_node() -> str:
    """``node`` with playwright-core installed in tests/node; skips without Chromium or Node."""
    if not CHROMIUM.is_file():
        pytest.skip("Chromium not installed: .ci/run installs it")
    return ensure_node_peers()


async def pay_in_browser(world: World, path: str, tmp_path: Path, mode: str = "approve",
                         key: str | None = None) -> dict[str, Any]:
    node = browser_node()
    shot = tmp_path / "paywall.png"
    proc = await asyncio.create_subprocess_exec(
        node, "paywall_browser.mjs", world.url + path, key or world.net.info.payer_key, str(shot), mode, cwd=NODE_DIR,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    communicate = asyncio.ensure_future(proc.communicate())
    try:
        out, err = await asyncio.wait_for(asyncio.shield(communicate), timeout=BROWSER_TIMEOUT)
    except TimeoutError:
        proc.kill()
        out, err = await communicate
        pytest.fail(f"paywall_browser.mjs ran over {BROWSER_TIMEOUT}s: {out.decode()[-2000:]} {err.decode()[-2000:]}")
    lines = out.decode().strip().splitlines()
    assert lines, f"paywall_browser.mjs printed nothing: {err.decode()}"
    result: dict[str, Any] = json.loads(lines[-1])
    assert "error" not in result, result["error"]
    assert shot.is_file() and shot.stat().st_size > 0
    return result


def settlement(header: str) -> dict[str, Any]:
    decoded: dict[str, Any] = json.loads(base64.b64decode(header))
    return decoded


def console_errors(result: dict[str, Any], url: str) -> list[dict[str, Any]]:
    """The page's console errors, less Chromium's own network log line for an expected 402 of ``url`` (the paywall
    document itself, or a refused payment)."""
    expected = {"text": "Failed to load resource: the server responded with a status of 402 (Payment Required)",
                "url": url}
    errors: list[dict[str, Any]] = result["consoleErrors"]
    return [e for e in errors if e != expected]


def assert_paywall_shown(result: dict[str, Any], world: World, display: str, description: str) -> None:
    shown = result["paywall"]
    assert shown["status"] == 402 and shown["contentType"].startswith("text/html")
    assert "Mozilla" in shown["userAgent"] and shown["hasProvider"] is True
    assert shown["title"] == "Payment required" and shown["app"] == APP_NAME
    assert shown["description"] == description
    assert shown["price"] == f"{display} {world.net.info.token_name}"
    assert world.net.payee.address in shown["details"] and world.net.info.network in shown["details"]
    assert shown["buttonEnabled"] is True


@pytest.mark.parametrize(("path", "mode", "title", "description"), [
    ("/article", "approve", "The weather in Lisbon", "Premium weather article"),
    ("/members", "switch", "Members only", "Members only"),
])
async def test_paywall_pays_in_a_real_browser(world: World, tmp_path: Path, path: str, mode: str, title: str,
                                              description: str) -> None:
    """Checklist 20: 402 paywall page → Pay → wallet signs → 200 with PAYMENT-RESPONSE shown on the page;
    the price moved payer → payee on chain and the handler ran once. ``/members`` requires the
    payment-identifier extension (the page adds an id) and its wallet starts on another chain (the page asks it
    to switch)."""
    before, runs = await world.balances(), world.runs.get(path[1:], 0)
    result = await pay_in_browser(world, path, tmp_path, mode)
    assert_paywall_shown(result, world, "0.01", description)
    (paid,) = result["paid"]
    assert paid["status"] == 200 and paid["contentType"].startswith("application/json")
    body = json.loads(paid["body"])
    assert body == {"article": title, "payer": world.net.payer.address}
    settled = settlement(paid["paymentResponse"])
    assert settled["success"] is True and settled["transaction"].startswith("0x")
    assert settled["payer"].lower() == world.net.payer.address.lower()
    after = result["after"]
    assert after["statusIsError"] is False and after["status"] == f"Paid — transaction {settled['transaction']}."
    assert json.loads(after["result"]) == body and after["buttonDisabled"] is True
    assert after["overflowing"] == []  # the transaction hash wraps inside the card
    switch = ["wallet_switchEthereumChain"] if mode == "switch" else []
    assert result["calls"] == ["eth_requestAccounts", "eth_chainId", *switch, "eth_signTypedData_v4"]
    assert console_errors(result, world.url + path) == [] and result["failedRequests"] == []
    now = await world.balances()
    assert (before[0] - now[0], now[1] - before[1]) == (PRICE, PRICE)
    assert world.runs.get(path[1:]) == runs + 1


async def test_paid_html_replaces_the_paywall(world: World, tmp_path: Path) -> None:
    """Checklist 20: a paid HTML resource replaces the paywall page in the browser."""
    before, runs = await world.balances(), world.runs.get("page", 0)
    result = await pay_in_browser(world, "/page", tmp_path)
    assert_paywall_shown(result, world, "0.02", "A paid page")
    (paid,) = result["paid"]
    assert paid["status"] == 200 and paid["contentType"].startswith("text/html")
    assert settlement(paid["paymentResponse"])["success"] is True
    assert result["after"]["bodyText"].strip() == "Thanks for paying" and result["after"]["buttonDisabled"] is None
    assert console_errors(result, world.url + "/page") == [] and result["failedRequests"] == []
    now = await world.balances()
    assert (before[0] - now[0], now[1] - before[1]) == (PAGE_PRICE, PAGE_PRICE)
    assert world.runs.get("page") == runs + 1


async def test_wallet_rejection_charges_nothing(world: World, tmp_path: Path) -> None:
    """The user rejects the signature in the wallet: the page says so, can retry, nothing is fetched or paid."""
    before = await world.balances()
    runs = dict(world.runs)
    result = await pay_in_browser(world, "/article", tmp_path, mode="reject")
    assert_paywall_shown(result, world, "0.01", "Premium weather article")
    after = result["after"]
    assert after["statusIsError"] is True and after["status"] == "User rejected the request."
    assert after["buttonDisabled"] is False and after["result"] == ""
    assert result["paid"] == [] and result["calls"][-1] == "eth_signTypedData_v4"
    assert console_errors(result, world.url + "/article") == [] and result["failedRequests"] == []
    assert await world.balances() == before and world.runs == runs


async def test_refused_payment_shows_the_reason(world: World, tmp_path: Path) -> None:
    """Checklist 20: a wallet without tokens signs, the server answers 402 with a reason in PAYMENT-REQUIRED;
    the page shows it and lets the user retry; nothing moved, the handler never ran."""
    poor = Account.create()
    before = await world.balances()
    runs = dict(world.runs)
    result = await pay_in_browser(world, "/article", tmp_path, key="0x" + bytes(poor.key).hex())
    (paid,) = result["paid"]
    assert paid["status"] == 402 and paid["paymentResponse"] is None
    reason = json.loads(base64.b64decode(paid["paymentRequired"]))["error"]
    after = result["after"]
    assert reason == INVALID_EXACT_EVM_INSUFFICIENT_BALANCE
    assert after["statusIsError"] is True and after["status"] == f"Payment refused: {reason}"
    assert after["buttonDisabled"] is False and after["result"] == ""
    assert console_errors(result, world.url + "/article") == [] and result["failedRequests"] == []
    assert await world.balances() == before and world.runs == runs
