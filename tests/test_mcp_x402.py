"""Paid MCP tools over the x402 MCP transport, on the embedded chain, balance deltas asserted.

* the official x402 Python MCP client (``x402`` 2.25.0 ``x402.mcp``) pays a tool priced with
  ``paywire.mcp.PaidTools`` on a FastMCP server, over streamable HTTP and over stdio (examples/mcp_server.py);
* eight concurrent copies of one payment run the tool once and move the money once;
* a settlement that fails after the tool ran returns the payment error, never the tool's output;
* a tool's own error is not charged; a payment for one tool is not accepted by another.

Spec: ``transports-v2/mcp.md`` (PaymentRequired in ``structuredContent`` and ``content[0].text``, payment in
``_meta["x402/payment"]``, settlement in ``_meta["x402/payment-response"]``).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import pytest_asyncio
from eth_account import Account
from mcp import ClientSession, StdioServerParameters
from mcp.client.stdio import stdio_client
from mcp.client.streamable_http import streamable_http_client
from mcp.server.fastmcp import Context, FastMCP
from x402 import x402Client
from x402.mcp.client import x402MCPSession
from x402.mechanisms.evm.exact import ExactEvmScheme

from paywire.chain.tx import TxSender
from paywire.evm import token
from paywire.evm.assets import KNOWN_ASSETS, AssetRegistry
from paywire.facilitator.app import create_app
from paywire.mcp import PaidTools, current_payment
from paywire.mcp.wire import X402_PAYMENT, X402_PAYMENT_RESPONSE
from paywire.serving import serve_asgi
from paywire.x402.models import PaymentRequirements
from tests.helpers import close_devnet, full_facilitator, new_devnet, payer_of, sign

pytestmark = [pytest.mark.interop, pytest.mark.asyncio(loop_scope="module")]
ROOT = Path(__file__).resolve().parent.parent
CHAIN_ID = 84532
WEATHER, REPORT = 10_000, 50_000  # $0.01, $0.05 in 6-decimal units
PUBLIC = "https://tools.example/mcp"  # a published server's declared URL (never dialled)


class Env:
    def __init__(self, net: Any, facilitator: str, url: str, tools: PaidTools, runs: dict[str, int],
                 tmp: Path) -> None:
        self.net, self.facilitator, self.url, self.tools, self.runs, self.tmp = (net, facilitator, url, tools,
                                                                                 runs, tmp)

    async def balances(self) -> tuple[int, int]:
        return (await self.net.token_balance(self.net.payer.address),
                await self.net.token_balance(self.net.payee.address))

    async def moved(self, before: tuple[int, int]) -> tuple[int, int]:
        """(paid by the payer, received by the payee) since ``before``."""
        after = await self.balances()
        return before[0] - after[0], after[1] - before[1]


def build_server(net: Any, facilitator: str, store: str, runs: dict[str, int]) -> tuple[FastMCP, PaidTools]:
    mcp = FastMCP("paid-tools")
    tools = PaidTools(mcp, facilitator, pay_to=net.payee.address, network=net.info.network,
                      assets=AssetRegistry((*KNOWN_ASSETS, net.info.asset)), store=store)

    @tools.paid_tool(price="$0.01", description="Current weather for a city",
                     discovery={"example": {"city": "Lisbon"}, "output": {"city": "Lisbon", "sky": "clear"}})
    async def weather(city: str) -> dict[str, Any]:
        runs["weather"] += 1
        payment = current_payment()
        return {"city": city, "sky": "clear", "payer": payment.payer if payment else None}

    @tools.paid_tool(price="$0.05", settle="before", description="Market report, settled before it runs")
    def report(topic: str) -> str:
        runs["report"] += 1
        payment = current_payment()
        return f"report on {topic}; paid in {payment.transaction if payment else None}"

    @tools.paid_tool(price="$0.01")
    async def broken(city: str) -> str:
        runs["broken"] += 1
        raise RuntimeError("the weather station is down")

    @tools.paid_tool(price="$0.01")
    async def drain(city: str) -> str:
        """Moves the payer's funds away while it runs, so the settlement after it fails on chain."""
        runs["drain"] += 1
        balance = await net.token_balance(net.payer.address)
        sender = TxSender(net.chain, net.payer.private_key)
        tx = await sender.send(net.info.token, token.transfer(net.deployer.address, balance))
        await net.chain.wait_for_receipt(tx)
        return "SECRET OUTPUT"

    @tools.paid_tool(price="$0.01")
    async def echo(text: str, ctx: Context) -> str:
        """A paid tool that takes FastMCP's Context itself."""
        return f"{text} (request {ctx.request_id})"

    @mcp.tool()
    async def free(city: str) -> str:
        return f"free for {city}"

    return mcp, tools


@contextlib.asynccontextmanager
async def serve_mcp_http(mcp: FastMCP) -> AsyncIterator[str]:
    """A FastMCP server's streamable-HTTP app on 127.0.0.1 (port 0); its session manager runs in a task of its
    own (its task group must be entered and left by the same task)."""
    app = mcp.streamable_http_app()
    ready, stop = asyncio.Event(), asyncio.Event()

    async def hold() -> None:
        async with mcp.session_manager.run():
            ready.set()
            await stop.wait()

    task = asyncio.create_task(hold())
    waiter = asyncio.create_task(ready.wait())
    await asyncio.wait({task, waiter}, return_when=asyncio.FIRST_COMPLETED)
    if task.done():
        waiter.cancel()
        task.result()
    try:
        async with serve_asgi(app) as base:
            yield base
    finally:
        stop.set()
        await task


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def env(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Env]:
    net = await new_devnet("embedded", chain_id=CHAIN_ID)
    tmp = tmp_path_factory.mktemp("mcp")
    runs = {"weather": 0, "report": 0, "broken": 0, "drain": 0}
    try:
        async with contextlib.AsyncExitStack() as stack:
            fac = await stack.enter_async_context(serve_asgi(create_app(full_facilitator(net))))
            mcp, tools = build_server(net, fac, f"sqlite:///{tmp / 'sales.db'}", runs)
            base = await stack.enter_async_context(serve_mcp_http(mcp))
            stack.push_async_callback(tools.aclose)
            yield Env(net, fac, base + "/mcp", tools, runs, tmp)
    finally:
        await close_devnet(net)


def sdk_client(net: Any) -> x402Client:
    client = x402Client()
    client.register(net.info.network, ExactEvmScheme(Account.from_key(net.info.payer_key)))
    client.set_spend_controls({"allowed_assets": [{"network": net.info.network, "asset": net.info.token}]})
    return client


@contextlib.asynccontextmanager
async def http_session(url: str) -> AsyncIterator[ClientSession]:
    async with streamable_http_client(url) as (read, write, _), ClientSession(read, write) as session:
        await session.initialize()
        yield session


async def test_official_x402_mcp_client_pays_our_tool_over_streamable_http(env: Env) -> None:
    before, runs = await env.balances(), env.runs["weather"]
    async with http_session(env.url) as session:
        result = await x402MCPSession(session, sdk_client(env.net)).call_tool("weather", {"city": "Lisbon"})
    assert result.payment_made, "the official client did not see a payment request"
    assert not result.is_error, f"the paid call failed: {result.content}"
    body = json.loads(result.content[0].text)
    assert body["city"] == "Lisbon", f"wrong tool output: {body}"
    assert body["payer"] == env.net.payer.address, "the tool did not see who paid"
    assert result.payment_response.success, "no successful settlement in _meta['x402/payment-response']"
    assert result.payment_response.transaction.startswith("0x"), "settlement without a transaction"
    assert env.runs["weather"] - runs == 1, "the tool did not run exactly once"
    assert await env.moved(before) == (WEATHER, WEATHER), "the tool's price did not move from payer to payee"


async def test_settle_before_tool_is_paid_before_it_runs(env: Env) -> None:
    before = await env.balances()
    async with http_session(env.url) as session:
        result = await x402MCPSession(session, sdk_client(env.net)).call_tool("report", {"topic": "rates"})
    assert not result.is_error, f"the paid call failed: {result.content}"
    tx = result.payment_response.transaction
    assert result.content[0].text == f"report on rates; paid in {tx}", "the tool did not see its settlement"
    assert await env.moved(before) == (REPORT, REPORT), "settle='before' did not move the price"


async def test_unpaid_call_gets_the_payment_required_result(env: Env) -> None:
    """Spec: isError, PaymentRequired in structuredContent and the same JSON in content[0].text."""
    async with http_session(env.url) as session:
        result = await session.call_tool("weather", {"city": "Lisbon"})
    assert result.isError, "an unpaid call of a paid tool was not an error result"
    required = result.structuredContent
    assert required is not None, "no PaymentRequired in structuredContent"
    assert json.loads(result.content[0].text) == required, "content[0].text is not the same PaymentRequired"
    assert required["x402Version"] == 2, "not x402 v2"
    assert required["resource"]["url"] == "mcp://tool/weather", "resource URL is not mcp://tool/<name>"
    assert required["accepts"][0]["amount"] == str(WEATHER), "wrong price in accepts"
    assert required["accepts"][0]["payTo"] == env.net.payee.address, "wrong payee in accepts"


async def test_a_published_tool_is_in_the_bazaar_and_listed_once_settled(env: Env) -> None:
    """Bazaar (extensions/bazaar.md, MCP input type; digest §4.4): the payment request of a tool published with
    ``discovery`` carries its name and arguments' schema, which the official SDK's validators accept; once the
    official client has paid it, the facilitator that settled it lists the tool."""
    from x402.extensions.bazaar import validate_discovery_extension, validate_discovery_extension_spec

    async with http_session(env.url) as session:
        required = (await session.call_tool("weather", {"city": "Lisbon"})).structuredContent
        listed = {t.name: t for t in (await session.list_tools()).tools}
    assert required is not None
    ext = required["extensions"]["bazaar"]
    assert validate_discovery_extension(ext).valid, validate_discovery_extension(ext).errors
    assert validate_discovery_extension_spec(ext).valid, validate_discovery_extension_spec(ext).errors
    declared = ext["info"]["input"]
    assert (declared["type"], declared["toolName"]) == ("mcp", "weather"), declared
    assert declared["inputSchema"]["properties"] == listed["weather"].inputSchema["properties"], declared
    assert declared["inputSchema"]["required"] == ["city"], "the declared schema lost the required argument"
    assert declared["example"] == {"city": "Lisbon"} and ext["info"]["output"]["example"]["sky"] == "clear"
    unpublished = (await _unpaid(env, "report", {"topic": "rates"}))
    assert "bazaar" not in (unpublished.get("extensions") or {}), "an unpublished tool was declared"

    # the bazaar names a tool by its server's URL and its name: a seller that gives its public URL is listed
    mcp = FastMCP("published")
    tools = PaidTools(mcp, env.facilitator, pay_to=env.net.payee.address, network=env.net.info.network,
                      assets=AssetRegistry((*KNOWN_ASSETS, env.net.info.asset)), public_url=PUBLIC,
                      store=f"sqlite:///{env.tmp / 'published.db'}")

    @tools.paid_tool(price="$0.01", discovery=True)
    async def forecast(city: str, days: int = 3) -> str:
        return f"{days} days of sun in {city}"

    before = await env.balances()
    try:
        async with serve_mcp_http(mcp) as base, http_session(base + "/mcp") as session:
            paid = await x402MCPSession(session, sdk_client(env.net)).call_tool("forecast", {"city": "Porto"})
    finally:
        await tools.aclose()
    assert paid.payment_response.success, f"the published tool's payment did not settle: {paid.content}"
    assert await env.moved(before) == (WEATHER, WEATHER), "the published tool's price did not move"
    async with httpx.AsyncClient(timeout=60) as http:
        items = (await http.get(env.facilitator + "/discovery/resources")).json()["items"]
    listed_tools = [i for i in items if i["resource"] == PUBLIC]
    assert len(listed_tools) == 1, f"the settled tool is not listed once: {items}"
    assert listed_tools[0]["type"] == "mcp", listed_tools[0]
    declared = listed_tools[0]["extensions"]["bazaar"]["info"]["input"]
    assert declared["toolName"] == "forecast" and set(declared["inputSchema"]["properties"]) == {"city", "days"}


async def _unpaid(env: Env, tool: str, args: dict[str, Any]) -> dict[str, Any]:
    async with http_session(env.url) as session:
        result = await session.call_tool(tool, args)
    assert result.structuredContent is not None
    return result.structuredContent


async def test_a_paid_tool_may_take_the_fastmcp_context(env: Env) -> None:
    before = await env.balances()
    async with http_session(env.url) as session:
        result = await x402MCPSession(session, sdk_client(env.net)).call_tool("echo", {"text": "hi"})
    assert not result.is_error, f"the paid call failed: {result.content}"
    assert result.content[0].text.startswith("hi (request "), f"the tool did not get its Context: {result.content}"
    assert await env.moved(before) == (WEATHER, WEATHER), "the price did not move"


async def test_paid_tools_list_their_own_arguments(env: Env) -> None:
    """tools/list shows each paid tool's parameters and docstring, not the wrapper's Context parameter."""
    async with http_session(env.url) as session:
        listed = {t.name: t for t in (await session.list_tools()).tools}
    assert set(listed["weather"].inputSchema["properties"]) == {"city"}, listed["weather"].inputSchema
    assert set(listed["echo"].inputSchema["properties"]) == {"text"}, listed["echo"].inputSchema
    assert listed["weather"].inputSchema["required"] == ["city"], "a required argument became optional"
    assert listed["drain"].description and "settlement" in listed["drain"].description, "docstring lost"


async def test_free_tool_on_the_same_server_is_untouched(env: Env) -> None:
    async with http_session(env.url) as session:
        result = await session.call_tool("free", {"city": "Porto"})
    assert not result.isError, f"a free tool failed: {result.content}"
    assert result.content[0].text == "free for Porto", "a free tool's output changed"


async def _signed(env: Env, session: ClientSession, tool: str, args: dict[str, Any]) -> dict[str, Any]:
    """A payment for ``tool`` signed by our own signer, for calls made with the bare MCP session."""
    probe = await session.call_tool(tool, args)
    assert probe.structuredContent is not None, "no PaymentRequired to sign"
    offer = PaymentRequirements.from_wire(probe.structuredContent["accepts"][0])
    payload = await sign(offer, payer_of(env.net))
    return payload.to_wire()


@pytest.mark.parametrize(("tool", "args", "price"), [("weather", {"city": "Faro"}, WEATHER),
                                                     ("report", {"topic": "rates"}, REPORT)])
async def test_eight_concurrent_copies_of_one_payment_run_the_tool_once(env: Env, tool: str, args: dict[str, Any],
                                                                         price: int) -> None:
    """settle="after" (weather) and settle="before" (report): one run, one transfer, one ledger row, and every
    copy gets the same result and settlement."""
    before, runs = await env.balances(), env.runs[tool]
    await env.tools.startup()  # the ledger opens at the first paid call; this test may run first
    rows = len(await env.tools.flow.payments.sales(limit=1000, states=None))
    async with contextlib.AsyncExitStack() as stack:
        sessions = [await stack.enter_async_context(http_session(env.url)) for _ in range(8)]
        payment = await _signed(env, sessions[0], tool, args)
        results = await asyncio.gather(*(s.call_tool(tool, args, meta={X402_PAYMENT: payment}) for s in sessions))
    assert all(not r.isError for r in results), [r.content for r in results if r.isError]
    texts = {r.content[0].text for r in results}
    assert len(texts) == 1, f"copies of one payment got different results: {texts}"
    settlements = {json.dumps((r.meta or {}).get(X402_PAYMENT_RESPONSE), sort_keys=True) for r in results}
    assert len(settlements) == 1, "copies of one payment got different settlements"
    assert env.runs[tool] - runs == 1, "eight copies of one payment ran the tool more than once"
    assert await env.moved(before) == (price, price), "eight copies of one payment moved more than once"
    assert len(await env.tools.flow.payments.sales(limit=1000, states=None)) - rows == 1, \
        "not one ledger row for one payment"


async def test_failed_settlement_never_returns_the_tools_output(env: Env) -> None:
    """The tool runs, the payer's funds are gone by the time it settles: the answer is the x402 payment error
    with the failed settlement, not "SECRET OUTPUT"; nothing moved to the payee."""
    before, runs = await env.balances(), env.runs["drain"]
    try:
        async with http_session(env.url) as session:
            payment = await _signed(env, session, "drain", {"city": "Faro"})
            result = await session.call_tool("drain", {"city": "Faro"}, meta={X402_PAYMENT: payment})
            replay = await session.call_tool("drain", {"city": "Faro"}, meta={X402_PAYMENT: payment})
    finally:
        await env.net.mint(env.net.payer.address, before[0])  # give the payer its funds back
    assert env.runs["drain"] - runs == 1, "the tool did not run exactly once"
    for r in (result, replay):
        assert r.isError, "a failed settlement was not an error result"
        assert "SECRET OUTPUT" not in json.dumps(r.model_dump(mode="json")), "the unpaid output leaked"
        assert r.structuredContent is not None and r.structuredContent["x402Version"] == 2, \
            "the failure is not an x402 PaymentRequired"
        assert (r.meta or {}).get(X402_PAYMENT_RESPONSE, {}).get("success") is False, \
            "no failed settlement in _meta['x402/payment-response']"
    assert (await env.balances())[1] == before[1], "the payee was paid for a failed settlement"


async def test_a_tool_that_fails_is_not_charged(env: Env) -> None:
    before = await env.balances()
    async with http_session(env.url) as session:
        payment = await _signed(env, session, "broken", {"city": "Faro"})
        result = await session.call_tool("broken", {"city": "Faro"}, meta={X402_PAYMENT: payment})
    assert result.isError, "a failing tool's result was not an error"
    assert "the weather station is down" in result.content[0].text, "the tool's error was not passed on"
    assert X402_PAYMENT_RESPONSE not in (result.meta or {}), "a failing tool carried a settlement"
    assert await env.moved(before) == (0, 0), "a failing tool was charged"


async def test_a_payment_for_one_tool_is_refused_by_another(env: Env) -> None:
    before = await env.balances()
    async with http_session(env.url) as session:
        payment = await _signed(env, session, "weather", {"city": "Faro"})
        first = await session.call_tool("weather", {"city": "Faro"}, meta={X402_PAYMENT: payment})
        other = await session.call_tool("broken", {"city": "Faro"}, meta={X402_PAYMENT: payment})
    assert not first.isError, f"the paid call failed: {first.content}"
    assert other.isError, "a payment for 'weather' was accepted by 'broken'"
    assert other.structuredContent is not None and other.structuredContent.get("httpStatus") == 409, \
        f"not a conflict: {other.structuredContent}"
    assert await env.moved(before) == (WEATHER, WEATHER), "one payment did not move exactly once"


@pytest.mark.parametrize("junk", ["not json", {"x402Version": 2}, 17])
async def test_a_malformed_payment_gets_a_payment_required_result(env: Env, junk: Any) -> None:
    async with http_session(env.url) as session:
        result = await session.call_tool("weather", {"city": "Faro"}, meta={X402_PAYMENT: junk})
    assert result.isError, "a malformed payment was accepted"
    assert result.structuredContent is not None and result.structuredContent.get("accepts"), \
        f"a malformed payment did not get a fresh PaymentRequired: {result.structuredContent}"
    assert "invalid payment header" in result.structuredContent["error"], "the reason is not given"


async def test_official_x402_mcp_client_pays_our_stdio_server(env: Env) -> None:
    """examples/mcp_server.py run as a subprocess over stdio, paying through the same facilitator."""
    state = env.net.write_state(env.tmp / "devnet.json")
    params = StdioServerParameters(command=sys.executable, args=[str(ROOT / "examples" / "mcp_server.py")],
                                   env={**os.environ, "PAYWIRE_DEVNET": str(state),
                                        "PAYWIRE_FACILITATOR": env.facilitator,
                                        "PAYWIRE_STORE": f"sqlite:///{env.tmp / 'stdio.db'}",
                                        "PYTHONPATH": str(ROOT / "src")})
    before = await env.balances()
    async with stdio_client(params) as (read, write), ClientSession(read, write) as session:
        await session.initialize()
        result = await x402MCPSession(session, sdk_client(env.net)).call_tool("weather", {"city": "Lisbon"})
    assert not result.is_error, f"the paid stdio call failed: {result.content}"
    assert json.loads(result.content[0].text)["city"] == "Lisbon", "wrong tool output over stdio"
    assert result.payment_response.success, "no settlement over stdio"
    assert await env.moved(before) == (WEATHER, WEATHER), "the stdio tool's price did not move"


async def test_example_client_pays_the_example_server_over_stdio(env: Env) -> None:
    """examples/mcp_client.py (PayingSession under a policy, the agent-tool adapter) spawns
    examples/mcp_server.py over stdio and pays for ``weather``."""
    state = env.net.write_state(env.tmp / "devnet-example.json")
    before = await env.balances()
    proc = await asyncio.create_subprocess_exec(
        sys.executable, str(ROOT / "examples" / "mcp_client.py"), stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env={**os.environ, "PAYWIRE_DEVNET": str(state), "PAYWIRE_FACILITATOR": env.facilitator,
             "PAYWIRE_STORE": f"sqlite:///{env.tmp / 'example-sales.db'}",
             "PAYWIRE_BUYER_STORE": f"sqlite:///{env.tmp / 'example-buyer.db'}", "PYTHONPATH": str(ROOT / "src")})
    out, err = await asyncio.wait_for(proc.communicate(), timeout=120)
    assert proc.returncode == 0, f"the example client failed: {err.decode()[-2000:]}"
    printed = json.loads(out.decode().strip().splitlines()[-1])
    assert json.loads(printed["answer"])["city"] == "Lisbon", f"wrong answer: {printed}"
    assert printed["outcome"] == "paid", f"the receipt says {printed['outcome']}"
    assert printed["url"] == "mcp://weather-example/tools/weather", "the receipt does not name the tool"
    assert await env.moved(before) == (WEATHER, WEATHER), "the example's payment did not move the price"


async def test_official_x402_mcp_client_pays_our_tool_over_sse(env: Env) -> None:
    """The SDK's one-call client (``create_x402_mcp_client``: legacy SSE transport) against the same tools served
    with FastMCP's SSE app."""
    from x402.mcp.client import create_x402_mcp_client

    mcp, tools = build_server(env.net, env.facilitator, f"sqlite:///{env.tmp / 'sse.db'}", env.runs)
    before = await env.balances()
    try:
        async with serve_asgi(mcp.sse_app()) as base, create_x402_mcp_client(sdk_client(env.net), base) as client:
            result = await client.call_tool("weather", {"city": "Sintra"})
    finally:
        await tools.aclose()
    assert not result.is_error, f"the paid SSE call failed: {result.content}"
    assert json.loads(result.content[0].text)["city"] == "Sintra", "wrong tool output over SSE"
    assert result.payment_response.success, "no settlement over SSE"
    assert await env.moved(before) == (WEATHER, WEATHER), "the SSE tool's price did not move"


@pytest.mark.postgres
async def test_two_replicas_on_one_postgres_run_a_payment_once(env: Env, pg_url: str) -> None:
    """Two MCP servers sharing one PostgreSQL ledger; eight copies of one payment, four to each: the tool runs
    once across both, the money moves once, and every copy gets the same result."""
    runs = {"weather": 0, "report": 0, "broken": 0, "drain": 0}
    before = await env.balances()
    async with contextlib.AsyncExitStack() as stack:
        urls = []
        for _ in range(2):
            mcp, tools = build_server(env.net, env.facilitator, pg_url, runs)
            urls.append(await stack.enter_async_context(serve_mcp_http(mcp)) + "/mcp")
            stack.push_async_callback(tools.aclose)
        sessions = [await stack.enter_async_context(http_session(urls[i % 2])) for i in range(8)]
        payment = await _signed(env, sessions[0], "weather", {"city": "Tavira"})
        results = await asyncio.gather(*(s.call_tool("weather", {"city": "Tavira"}, meta={X402_PAYMENT: payment})
                                         for s in sessions))
    assert all(not r.isError for r in results), [r.content for r in results if r.isError]
    assert len({r.content[0].text for r in results}) == 1, "replicas served different results for one payment"
    assert runs["weather"] == 1, f"two replicas ran the tool {runs['weather']} times for one payment"
    assert await env.moved(before) == (WEATHER, WEATHER), "two replicas moved money more than once"
