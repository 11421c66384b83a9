"""Our paying MCP client (``paywire.mcp.PayingSession``) on the embedded chain, balance deltas asserted.

* it pays a tool served by the official x402 MCP server wrapper (``x402.mcp.server.create_payment_wrapper`` on
  FastMCP, the SDK's resource server asking our facilitator), and a tool priced with ``PaidTools``;
* the wallet's policy holds: a price above ``max_per_payment`` is refused, an approval hook that says no
  declines, each without signing or moving anything, and every outcome is a receipt;
* retry safety as over HTTP: the paid call's answer is lost (the MCP read timeout fires while the tool works),
  the same signed payment is sent again, the tool runs once and the money moves once.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import sys
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from mcp import ClientSession, StdioServerParameters
from mcp.client.stdio import stdio_client
from mcp.server.fastmcp import FastMCP

from paywire.client import BuyerConfig, PaymentDeclined, PaymentRefused, Policy
from paywire.evm.assets import KNOWN_ASSETS, AssetRegistry
from paywire.facilitator.app import create_app
from paywire.mcp import PaidTools, PayingSession
from paywire.serving import serve_asgi
from paywire.store.settlements import SettlementStore
from paywire.wallet import Wallet
from tests.helpers import close_devnet, full_facilitator, new_devnet
from tests.mcp_sdk_server import build as build_sdk_server
from tests.test_mcp_x402 import http_session, serve_mcp_http

pytestmark = [pytest.mark.interop, pytest.mark.asyncio(loop_scope="module")]
CHAIN_ID = 84532
PRICE = 10_000  # $0.01


class Env:
    def __init__(self, net: Any, fac: str, sdk_url: str, ours_url: str, runs: dict[str, int],
                 gate: dict[str, Any]) -> None:
        self.net, self.fac, self.sdk_url, self.ours_url, self.runs, self.gate = net, fac, sdk_url, ours_url, runs, gate

    async def balances(self) -> tuple[int, int]:
        return (await self.net.token_balance(self.net.payer.address),
                await self.net.token_balance(self.net.payee.address))

    async def moved(self, before: tuple[int, int]) -> tuple[int, int]:
        after = await self.balances()
        return before[0] - after[0], after[1] - before[1]

    def wallet(self) -> Wallet:
        return Wallet.from_key(self.net.info.payer_key, chains={self.net.info.network: self.net.chain})


async def sdk_server(net: Any, facilitator: str, runs: dict[str, int]) -> FastMCP:
    """A FastMCP server whose tool is paid through the official x402 MCP wrapper and resource server."""

    def count() -> None:
        runs["sdk_weather"] += 1

    return await asyncio.to_thread(build_sdk_server, net.info, facilitator, count)


def our_server(net: Any, facilitator: str, store: str, runs: dict[str, int], gate: dict[str, Any]) -> FastMCP:
    mcp = FastMCP("paywire-tools")
    tools = PaidTools(mcp, facilitator, pay_to=net.payee.address, network=net.info.network,
                      assets=AssetRegistry((*KNOWN_ASSETS, net.info.asset)), store=store)

    @tools.paid_tool(price="$0.01")
    async def weather(city: str) -> str:
        runs["weather"] += 1
        return f"sunny in {city}"

    @tools.paid_tool(price="$0.50")
    async def expensive(city: str) -> str:
        runs["expensive"] += 1
        return "costly"

    @tools.paid_tool(price="$0.01")
    async def slow(city: str) -> str:
        """Waits until the test lets it finish (after the client gave up waiting and resent)."""
        runs["slow"] += 1
        await gate["release"].wait()
        return f"slow answer for {city}"

    return mcp


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def env(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Env]:
    net = await new_devnet("embedded", chain_id=CHAIN_ID)
    tmp = tmp_path_factory.mktemp("mcp-buyer")
    runs = {"sdk_weather": 0, "weather": 0, "expensive": 0, "slow": 0}
    gate: dict[str, Any] = {"release": asyncio.Event()}
    try:
        async with contextlib.AsyncExitStack() as stack:
            settlements = await SettlementStore.open(f"sqlite:///{tmp / 'facilitator.db'}")
            stack.push_async_callback(settlements.aclose)  # idempotent /settle: a repeat answers the same tx
            fac = await stack.enter_async_context(serve_asgi(create_app(full_facilitator(net, store=settlements))))
            sdk_url = await stack.enter_async_context(serve_mcp_http(await sdk_server(net, fac, runs)))
            ours = our_server(net, fac, f"sqlite:///{tmp / 'sales.db'}", runs, gate)
            ours_url = await stack.enter_async_context(serve_mcp_http(ours))
            yield Env(net, fac, sdk_url + "/mcp", ours_url + "/mcp", runs, gate)
    finally:
        await close_devnet(net)


def store(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'buyer.db'}"


async def test_our_client_pays_the_official_x402_mcp_server_wrapper(env: Env, tmp_path: Path) -> None:
    before, runs = await env.balances(), env.runs["sdk_weather"]
    async with http_session(env.sdk_url) as session:
        paying = PayingSession(session, env.wallet(), Policy(max_per_payment="$0.10", assets=[env.net.asset]),
                               server="sdk", store=store(tmp_path))
        try:
            call = await paying.pay_tool("sdk_weather", {"city": "Lisbon"})
        finally:
            await paying.aclose()
    assert not call.result.isError, f"the paid call failed: {call.result.content}"
    assert json.loads(call.result.content[0].text)["city"] == "Lisbon", "wrong tool output"
    assert call.settlement is not None and call.settlement.success, "no settlement read from _meta"
    assert call.receipt is not None and call.receipt.outcome == "paid", f"receipt: {call.receipt}"
    assert call.receipt.url == "mcp://sdk/tools/sdk_weather", "the receipt does not name the tool"
    assert call.receipt.tx == call.settlement.transaction, "the receipt does not keep the transaction"
    assert env.runs["sdk_weather"] - runs == 1, "the SDK's tool did not run exactly once"
    assert await env.moved(before) == (PRICE, PRICE), "the price did not move from payer to payee"


async def test_call_tool_is_a_drop_in_for_the_mcp_session(env: Env) -> None:
    before = await env.balances()
    async with http_session(env.ours_url) as session:
        paying = PayingSession(session, env.wallet(), Policy(max_per_payment="$0.10", assets=[env.net.asset]))
        result = await paying.call_tool("weather", {"city": "Porto"})
        tools = await paying.list_tools()  # everything else is the session's
    assert not result.isError, f"the paid call failed: {result.content}"
    assert result.content[0].text == "sunny in Porto", "wrong tool output"
    assert "weather" in {t.name for t in tools.tools}, "the wrapped session does not pass list_tools through"
    assert await env.moved(before) == (PRICE, PRICE), "the price did not move"


async def test_a_price_above_the_policy_is_refused_without_paying(env: Env, tmp_path: Path) -> None:
    before, runs = await env.balances(), env.runs["expensive"]
    async with http_session(env.ours_url) as session:
        paying = PayingSession(session, env.wallet(), Policy(max_per_payment="$0.10", assets=[env.net.asset]),
                               store=store(tmp_path))
        try:
            with pytest.raises(PaymentRefused) as refused:
                await paying.call_tool("expensive", {"city": "Porto"})
            history = await paying.buyer.history()
        finally:
            await paying.aclose()
    assert refused.value.rule == "max_per_payment", f"refused by {refused.value.rule}"
    assert [r.outcome for r in history] == ["refused"], f"the ledger has {[r.outcome for r in history]}"
    assert env.runs["expensive"] == runs, "a refused tool ran"
    assert await env.moved(before) == (0, 0), "a refused payment moved money"


async def test_an_approval_hook_that_says_no_declines(env: Env, tmp_path: Path) -> None:
    asked: list[str] = []

    def approve(request: Any) -> bool:
        asked.append(str(request))
        return False

    before = await env.balances()
    async with http_session(env.ours_url) as session:
        paying = PayingSession(session, env.wallet(), Policy(approval_threshold="$0.001", assets=[env.net.asset]),
                               store=store(tmp_path), approve=approve)
        try:
            with pytest.raises(PaymentDeclined):
                await paying.call_tool("weather", {"city": "Porto"})
        finally:
            await paying.aclose()
    assert len(asked) == 1 and "mcp://mcp/tools/weather" in asked[0], f"the hook was asked: {asked}"
    assert await env.moved(before) == (0, 0), "a declined payment moved money"


class LosesFirstAnswer:
    """Passes calls to the session; the first paid send waits 1 s for its answer (the seller's tool cannot answer
    before ``release``, so that answer is always lost); when the paid call is sent the second time, lets the
    seller's tool finish. Only that send has a short timeout: the unpaid call may take what a busy machine needs."""

    def __init__(self, session: ClientSession, release: asyncio.Event) -> None:
        self.session, self.release, self.paid_sends = session, release, 0

    async def call_tool(self, name: str, arguments: Any = None, read_timeout_seconds: Any = None,
                        progress_callback: Any = None, *, meta: Any = None) -> Any:
        if meta:
            self.paid_sends += 1
            if self.paid_sends == 1:
                read_timeout_seconds = timedelta(seconds=1)
            elif self.paid_sends == 2:
                self.release.set()
        return await self.session.call_tool(name, arguments, read_timeout_seconds, progress_callback, meta=meta)


async def test_a_lost_answer_resends_the_same_payment_and_pays_once(env: Env, tmp_path: Path) -> None:
    before, runs = await env.balances(), env.runs["slow"]
    async with http_session(env.ours_url) as session:
        flaky = LosesFirstAnswer(session, env.gate["release"])
        paying = PayingSession(flaky, env.wallet(),  # type: ignore[arg-type]
                               Policy(max_per_payment="$0.10", assets=[env.net.asset]), store=store(tmp_path),
                               config=BuyerConfig(retry_delay=0.0))
        try:
            call = await paying.pay_tool("slow", {"city": "Braga"})
        finally:
            await paying.aclose()
    assert flaky.paid_sends == 2, f"the paid call was sent {flaky.paid_sends} times"
    assert not call.result.isError, f"the resent payment failed: {call.result.content}"
    assert call.result.content[0].text == "slow answer for Braga", "wrong tool output after the resend"
    assert call.receipt is not None and call.receipt.outcome == "paid", f"receipt: {call.receipt}"
    assert env.runs["slow"] - runs == 1, "the resent payment ran the tool again"
    assert await env.moved(before) == (PRICE, PRICE), "the resent payment moved money twice"


async def test_our_client_pays_the_official_x402_mcp_server_wrapper_over_stdio(env: Env, tmp_path: Path) -> None:
    """tests/mcp_sdk_server.py (the SDK's wrapper) run as a subprocess over stdio."""
    root = Path(__file__).resolve().parent.parent
    state = env.net.write_state(tmp_path / "devnet.json")
    params = StdioServerParameters(command=sys.executable, args=[str(root / "tests" / "mcp_sdk_server.py")],
                                   env={**os.environ, "PAYWIRE_DEVNET": str(state), "PAYWIRE_FACILITATOR": env.fac,
                                        "PYTHONPATH": os.pathsep.join([str(root / "src"), str(root)])})
    before = await env.balances()
    async with stdio_client(params) as (read, write), ClientSession(read, write) as session:
        await session.initialize()
        paying = PayingSession(session, env.wallet(), Policy(max_per_payment="$0.10", assets=[env.net.asset]),
                               server="sdk-stdio", store=store(tmp_path))
        try:
            call = await paying.pay_tool("sdk_weather", {"city": "Evora"})
        finally:
            await paying.aclose()
    assert not call.result.isError, f"the paid stdio call failed: {call.result.content}"
    assert json.loads(call.result.content[0].text)["city"] == "Evora", "wrong tool output over stdio"
    assert call.receipt is not None and call.receipt.outcome == "paid", f"receipt: {call.receipt}"
    assert await env.moved(before) == (PRICE, PRICE), "the stdio tool's price did not move"


class SettleAnswerLost:
    """Our facilitator over HTTP, except that the answer to the first ``/settle`` is lost after the facilitator
    settled it: the seller cannot tell whether money moved."""

    def __init__(self, url: str) -> None:
        from paywire.facilitator.client import HttpFacilitatorClient

        self.inner, self.lost = HttpFacilitatorClient(url), 0

    async def verify(self, payload: Any, requirements: Any) -> Any:
        return await self.inner.verify(payload, requirements)

    async def settle(self, payload: Any, requirements: Any) -> Any:
        from paywire.facilitator.client import FacilitatorUnavailable

        answer = await self.inner.settle(payload, requirements)
        if self.lost == 0:
            self.lost += 1
            raise FacilitatorUnavailable("the answer to /settle was lost")
        return answer

    async def supported(self) -> Any:
        return await self.inner.supported()


async def test_a_settlement_with_a_lost_answer_is_finished_by_the_resend(env: Env, tmp_path: Path) -> None:
    """The seller's settle answer is lost: the tool's output is held back (503, retry the same payment); the
    paying session resends the same payment, the seller asks the facilitator again (idempotent), and releases
    the recorded output. The tool ran once, the money moved once, the receipt says paid."""
    runs = {"calls": 0}
    mcp = FastMCP("flaky-settle")
    facilitator = SettleAnswerLost(env.fac)
    tools = PaidTools(mcp, facilitator, pay_to=env.net.payee.address, network=env.net.info.network,
                      assets=AssetRegistry((*KNOWN_ASSETS, env.net.info.asset)),
                      store=f"sqlite:///{tmp_path / 'sales.db'}")

    @tools.paid_tool(price="$0.01")
    async def almanac(day: str) -> str:
        runs["calls"] += 1
        return f"{day}: full moon"

    before = await env.balances()
    try:
        async with serve_mcp_http(mcp) as base, http_session(base + "/mcp") as session:
            paying = PayingSession(session, env.wallet(), Policy(max_per_payment="$0.10", assets=[env.net.asset]),
                                   store=store(tmp_path), config=BuyerConfig(retry_delay=0.0))
            try:
                call = await paying.pay_tool("almanac", {"day": "friday"})
            finally:
                await paying.aclose()
        [row] = await tools.flow.payments.sales(limit=10)
    finally:
        await tools.aclose()
    assert facilitator.lost == 1, "the fault was not injected"
    assert not call.result.isError, f"the resend did not get the output: {call.result.content}"
    assert call.result.content[0].text == "friday: full moon", "wrong output after the resend"
    assert call.receipt is not None and call.receipt.outcome == "paid", f"receipt: {call.receipt}"
    assert runs["calls"] == 1, "the resend ran the tool again"
    assert row.state == "served", f"the ledger row is {row.state}"
    assert await env.moved(before) == (PRICE, PRICE), "a lost settle answer moved money twice (or not at all)"
