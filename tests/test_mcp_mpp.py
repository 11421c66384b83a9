"""MPP over MCP (``draft-payment-transport-mcp-00``) on the embedded chain, balance deltas asserted.

* pympp 0.16.0's MCP client (``mpp.extensions.mcp.McpClient`` with its ``evm/charge`` method) pays a tool priced
  with ``PaidTools(..., mpp=True)``: ``-32042`` with native-JSON challenges, credential in
  ``_meta["org.paymentauth/credential"]``, receipt in ``_meta["org.paymentauth/receipt"]``;
* our ``PayingSession`` pays a tool gated by pympp's ``verify_or_challenge`` on a low-level MCP server (pympp
  derives the EIP-3009 nonce its own way: our buyer re-signs once, as over HTTP);
* one credential runs the tool once (a copy is refused: MPP delivers once); a tampered credential is ``-32043``
  with fresh challenges; the unpaid call's error carries ``httpStatus`` 402.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from eth_account import Account
from mcp import ClientSession, StdioServerParameters, types
from mcp.client.stdio import stdio_client
from mcp.server.fastmcp import FastMCP
from mcp.server.streamable_http_manager import StreamableHTTPSessionManager
from mcp.shared.exceptions import McpError
from starlette.applications import Starlette
from starlette.routing import Mount

from paywire.client import Policy
from paywire.evm.assets import KNOWN_ASSETS, AssetRegistry
from paywire.facilitator.app import create_app
from paywire.mcp import PaidTools, PayingSession
from paywire.mcp.mpp import MPP_CREDENTIAL, MPP_RECEIPT
from paywire.serving import serve_asgi
from paywire.wallet import Wallet
from tests.helpers import close_devnet, full_facilitator, new_devnet
from tests.mcp_pympp_server import build as build_pympp_server
from tests.test_mcp_x402 import http_session, serve_mcp_http

pytestmark = [pytest.mark.interop, pytest.mark.asyncio(loop_scope="module")]
CHAIN_ID = 84532
PRICE = 10_000  # $0.01


class Env:
    def __init__(self, net: Any, fac: str, ours_url: str, pympp_url: str, tools: PaidTools,
                 runs: dict[str, int]) -> None:
        self.net, self.fac, self.ours_url, self.pympp_url, self.tools, self.runs = (net, fac, ours_url, pympp_url,
                                                                                    tools, runs)

    async def balances(self) -> tuple[int, int]:
        return (await self.net.token_balance(self.net.payer.address),
                await self.net.token_balance(self.net.payee.address))

    async def moved(self, before: tuple[int, int]) -> tuple[int, int]:
        after = await self.balances()
        return before[0] - after[0], after[1] - before[1]

    def pympp_method(self) -> Any:
        from mpp.methods.evm import client as evm

        info = self.net.info
        return evm.charge(currency=info.token, account=Account.from_key(info.payer_key), chain_id=CHAIN_ID,
                          decimals=info.decimals, authorization={"name": info.token_name,
                                                                 "version": info.token_version})


def our_server(net: Any, facilitator: str, store: str, runs: dict[str, int]) -> tuple[FastMCP, PaidTools]:
    mcp = FastMCP("paywire-mpp-tools")
    tools = PaidTools(mcp, facilitator, pay_to=net.payee.address, network=net.info.network,
                      assets=AssetRegistry((*KNOWN_ASSETS, net.info.asset)), store=store,
                      mpp_realm="tools.test", mpp_secret=os.urandom(32))

    @tools.paid_tool(price="$0.01", mpp=True)
    async def quote(symbol: str) -> str:
        runs["quote"] += 1
        return f"{symbol}: 42.00"

    @tools.paid_tool(price="$0.01", mpp=True, signal="x402")
    async def dual(symbol: str) -> str:
        """Takes MPP and x402; asks unpaid callers the x402 way."""
        runs["dual"] += 1
        return f"{symbol}: 43.00"

    return mcp, tools


@contextlib.asynccontextmanager
async def serve_pympp_tool(net: Any, facilitator: str, runs: dict[str, int]) -> AsyncIterator[str]:
    """tests/mcp_pympp_server.py's low-level server (pympp's ``verify_or_challenge``) on streamable HTTP."""

    def count() -> None:
        runs["forecast"] += 1

    server = build_pympp_server(net.info, facilitator, count)
    manager = StreamableHTTPSessionManager(app=server)
    ready, stop = asyncio.Event(), asyncio.Event()

    async def hold() -> None:
        async with manager.run():
            ready.set()
            await stop.wait()

    task = asyncio.create_task(hold())
    await ready.wait()
    try:
        async with serve_asgi(Starlette(routes=[Mount("/mcp", app=manager.handle_request)])) as base:
            yield base + "/mcp/"
    finally:
        stop.set()
        await task


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def env(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Env]:
    pytest.importorskip("mpp.extensions.mcp", reason="pympp not installed")
    net = await new_devnet("embedded", chain_id=CHAIN_ID)
    tmp = tmp_path_factory.mktemp("mcp-mpp")
    runs = {"quote": 0, "forecast": 0, "dual": 0}
    try:
        async with contextlib.AsyncExitStack() as stack:
            fac = await stack.enter_async_context(serve_asgi(create_app(full_facilitator(net))))
            mcp, tools = our_server(net, fac, f"sqlite:///{tmp / 'sales.db'}", runs)
            ours = await stack.enter_async_context(serve_mcp_http(mcp))
            stack.push_async_callback(tools.aclose)
            theirs = await stack.enter_async_context(serve_pympp_tool(net, fac, runs))
            yield Env(net, fac, ours + "/mcp", theirs, tools, runs)
    finally:
        await close_devnet(net)


async def test_the_server_advertises_mpp_in_its_capabilities(env: Env) -> None:
    from mcp.client.streamable_http import streamable_http_client

    async with streamable_http_client(env.ours_url) as (read, write, _), ClientSession(read, write) as session:
        init = await session.initialize()
    experimental = init.capabilities.experimental or {}
    assert experimental.get("payment") == {"methods": {"evm": {"intents": ["charge"]}}}, \
        f"capabilities.experimental: {experimental}"


async def test_unpaid_call_gets_the_mpp_payment_required_error(env: Env) -> None:
    async with http_session(env.ours_url) as session:
        with pytest.raises(McpError) as raised:
            await session.call_tool("quote", {"symbol": "ACME"})
    error = raised.value.error
    assert error.code == -32042, f"not -32042: {error.code}"
    assert isinstance(error.data, dict) and error.data["httpStatus"] == 402, "no httpStatus 402"
    [challenge] = error.data["challenges"]
    assert challenge["method"] == "evm" and challenge["intent"] == "charge", f"challenge: {challenge}"
    assert isinstance(challenge["request"], dict), "request is not native JSON"
    assert challenge["request"]["amount"] == str(PRICE), f"wrong amount: {challenge['request']}"
    assert challenge["realm"] == "tools.test", "wrong realm"


async def test_pympp_mcp_client_pays_our_tool(env: Env) -> None:
    from mpp.extensions.mcp import McpClient

    before, runs = await env.balances(), env.runs["quote"]
    async with http_session(env.ours_url) as session:
        result = await McpClient(session, methods=[env.pympp_method()]).call_tool("quote", {"symbol": "ACME"})
    assert not result.result.isError, f"the paid call failed: {result.result.content}"
    assert result.result.content[0].text == "ACME: 42.00", "wrong tool output"
    assert result.receipt is not None, "no receipt in _meta['org.paymentauth/receipt']"
    assert result.receipt.status == "success" and result.receipt.method == "evm", f"receipt: {result.receipt}"
    assert result.receipt.reference.startswith("0x"), "the receipt has no transaction"
    assert env.runs["quote"] - runs == 1, "the tool did not run exactly once"
    assert await env.moved(before) == (PRICE, PRICE), "the price did not move from payer to payee"


async def test_one_credential_runs_the_tool_once(env: Env) -> None:
    """Eight concurrent calls with one credential: one paid result with its receipt, the copies refused with
    -32043 (a credential is delivered once); the tool ran once and the money moved once."""
    from mpp.extensions.mcp import MCPChallenge, MCPCredential
    from mpp.runtime import PaymentRuntime

    before, runs = await env.balances(), env.runs["quote"]
    async with http_session(env.ours_url) as session:
        with pytest.raises(McpError) as asked:
            await session.call_tool("quote", {"symbol": "ACME"})
        challenge = MCPChallenge.from_dict(asked.value.error.data["challenges"][0])
        method = env.pympp_method()
        core = await PaymentRuntime([method]).create_credential(challenge.to_core(), method)
        meta = MCPCredential.from_core(core, challenge).to_meta()
        outcomes = await asyncio.gather(*(session.call_tool("quote", {"symbol": "ACME"}, meta=meta)
                                          for _ in range(8)), return_exceptions=True)
    paid = [o for o in outcomes if isinstance(o, types.CallToolResult)]
    refused = [o for o in outcomes if isinstance(o, McpError)]
    assert len(paid) == 1, f"{len(paid)} calls were served for one credential"
    assert MPP_RECEIPT in (paid[0].meta or {}), "the paid result has no receipt"
    assert [e.error.code for e in refused] == [-32043] * 7, f"copies got {[e.error.code for e in refused]}"
    assert env.runs["quote"] - runs == 1, "one credential ran the tool more than once"
    assert await env.moved(before) == (PRICE, PRICE), "one credential moved money more than once"


async def test_a_tampered_credential_gets_fresh_challenges(env: Env) -> None:
    from mpp.extensions.mcp import MCPChallenge, MCPCredential
    from mpp.runtime import PaymentRuntime

    before = await env.balances()
    async with http_session(env.ours_url) as session:
        with pytest.raises(McpError) as asked:
            await session.call_tool("quote", {"symbol": "ACME"})
        challenge = MCPChallenge.from_dict(asked.value.error.data["challenges"][0])
        method = env.pympp_method()
        core = await PaymentRuntime([method]).create_credential(challenge.to_core(), method)
        cred = MCPCredential.from_core(core, challenge).to_dict()
        cred["challenge"]["request"] = {**cred["challenge"]["request"], "amount": "1"}
        with pytest.raises(McpError) as refused:
            await session.call_tool("quote", {"symbol": "ACME"}, meta={MPP_CREDENTIAL: cred})
        with pytest.raises(McpError) as malformed:
            await session.call_tool("quote", {"symbol": "ACME"}, meta={MPP_CREDENTIAL: "junk"})
    assert refused.value.error.code == -32043, f"a tampered credential got {refused.value.error.code}"
    assert refused.value.error.data["challenges"], "no fresh challenge after a refused credential"
    assert malformed.value.error.code == -32602, f"a malformed credential got {malformed.value.error.code}"
    assert await env.moved(before) == (0, 0), "a refused credential moved money"


async def test_a_credential_buys_only_the_call_it_was_issued_for(env: Env) -> None:
    """The challenge binds the tool's name and arguments (its digest): a credential paid for quote(ACME) is
    refused (-32043, fresh challenges) by another tool at the same price and by quote with other arguments;
    neither runs, no money moves; the call it was issued for still gets served with it."""
    from mpp.extensions.mcp import MCPChallenge, MCPCredential
    from mpp.runtime import PaymentRuntime

    before, runs = await env.balances(), dict(env.runs)
    async with http_session(env.ours_url) as session:
        with pytest.raises(McpError) as asked:
            await session.call_tool("quote", {"symbol": "ACME"})
        challenge = MCPChallenge.from_dict(asked.value.error.data["challenges"][0])
        method = env.pympp_method()
        core = await PaymentRuntime([method]).create_credential(challenge.to_core(), method)
        meta = MCPCredential.from_core(core, challenge).to_meta()
        with pytest.raises(McpError) as other_tool:
            await session.call_tool("dual", {"symbol": "ACME"}, meta=meta)
        with pytest.raises(McpError) as other_args:
            await session.call_tool("quote", {"symbol": "EVIL"}, meta=meta)
        assert await env.moved(before) == (0, 0), "a credential for quote(ACME) moved money for another call"
        assert (env.runs["dual"], env.runs["quote"]) == (runs["dual"], runs["quote"]), \
            "a credential for quote(ACME) ran another call"
        paid = await session.call_tool("quote", {"symbol": "ACME"}, meta=meta)
    for refused in (other_tool, other_args):
        assert refused.value.error.code == -32043, f"a credential for another call got {refused.value.error.code}"
        assert refused.value.error.data["challenges"], "no fresh challenge"
    assert not paid.isError and paid.content[0].text == "ACME: 42.00", f"the bound call failed: {paid.content}"
    assert env.runs["quote"] - runs["quote"] == 1, "the bound call did not run once"
    assert await env.moved(before) == (PRICE, PRICE), "the bound call did not move the price once"


async def test_our_client_pays_a_pympp_mcp_tool(env: Env, tmp_path: Path) -> None:
    before, runs = await env.balances(), env.runs["forecast"]
    async with http_session(env.pympp_url) as session:
        paying = PayingSession(session, Wallet.from_key(env.net.info.payer_key),
                               Policy(max_per_payment="$0.10", assets=[env.net.asset]), server="pympp",
                               store=f"sqlite:///{tmp_path / 'buyer.db'}")
        try:
            call = await paying.pay_tool("forecast", {"city": "Porto"})
        finally:
            await paying.aclose()
    assert not call.result.isError, f"the paid call failed: {call.result.content}"
    assert call.result.content[0].text == "rain in Porto", "wrong tool output"
    assert call.receipt is not None and call.receipt.outcome == "paid", f"receipt: {call.receipt}"
    assert call.receipt.protocol == "mpp", "the receipt does not say MPP"
    assert call.receipt.tx is not None and call.receipt.tx.startswith("0x"), "no transaction on the receipt"
    assert env.runs["forecast"] - runs == 1, "pympp's tool did not run exactly once"
    assert await env.moved(before) == (PRICE, PRICE), "the price did not move from payer to payee"


async def test_our_client_pays_our_mpp_tool(env: Env, tmp_path: Path) -> None:
    before = await env.balances()
    async with http_session(env.ours_url) as session:
        paying = PayingSession(session, Wallet.from_key(env.net.info.payer_key),
                               Policy(max_per_payment="$0.10", assets=[env.net.asset]),
                               store=f"sqlite:///{tmp_path / 'buyer.db'}")
        try:
            call = await paying.pay_tool("quote", {"symbol": "ACME"})
        finally:
            await paying.aclose()
    assert not call.result.isError, f"the paid call failed: {call.result.content}"
    assert call.receipt is not None and call.receipt.protocol == "mpp", f"receipt: {call.receipt}"
    assert MPP_RECEIPT in (call.result.meta or {}), "no receipt in the result's _meta"
    assert await env.moved(before) == (PRICE, PRICE), "the price did not move"


async def test_other_meta_keys_do_not_count_as_a_credential(env: Env) -> None:
    """An unpaid call whose ``_meta`` carries something else (a progress token, a trace id) is asked to pay
    (-32042), not told its credential failed (-32043)."""
    async with http_session(env.ours_url) as session:
        with pytest.raises(McpError) as raised:
            await session.call_tool("quote", {"symbol": "ACME"}, meta={"trace/id": "abc"})
    assert raised.value.error.code == -32042, f"an unpaid call with other _meta got {raised.value.error.code}"


async def test_pympp_mcp_client_pays_the_example_server_over_stdio(env: Env, tmp_path: Path) -> None:
    """examples/mcp_server.py with an MPP secret, run as a subprocess over stdio: pympp's client pays ``quote``."""
    from mpp.extensions.mcp import McpClient

    root = Path(__file__).resolve().parent.parent
    state = env.net.write_state(tmp_path / "devnet.json")
    params = StdioServerParameters(command=sys.executable, args=[str(root / "examples" / "mcp_server.py")],
                                   env={**os.environ, "PAYWIRE_DEVNET": str(state), "PAYWIRE_FACILITATOR": env.fac,
                                        "PAYWIRE_STORE": f"sqlite:///{tmp_path / 'sales.db'}",
                                        "PAYWIRE_MPP_SECRET": os.urandom(32).hex(), "PYTHONPATH": str(root / "src")})
    before = await env.balances()
    async with stdio_client(params) as (read, write), ClientSession(read, write) as session:
        await session.initialize()
        result = await McpClient(session, methods=[env.pympp_method()]).call_tool("quote", {"symbol": "ACME"})
    assert not result.result.isError, f"the paid stdio call failed: {result.result.content}"
    assert result.result.content[0].text == "ACME: 42.00", "wrong tool output over stdio"
    assert result.receipt is not None and result.receipt.reference.startswith("0x"), "no receipt over stdio"
    assert await env.moved(before) == (PRICE, PRICE), "the stdio tool's price did not move"


async def test_our_client_pays_a_pympp_mcp_tool_over_stdio(env: Env, tmp_path: Path) -> None:
    """tests/mcp_pympp_server.py run as a subprocess over stdio."""
    root = Path(__file__).resolve().parent.parent
    state = env.net.write_state(tmp_path / "devnet.json")
    params = StdioServerParameters(command=sys.executable, args=[str(root / "tests" / "mcp_pympp_server.py")],
                                   env={**os.environ, "PAYWIRE_DEVNET": str(state), "PAYWIRE_FACILITATOR": env.fac,
                                        "PYTHONPATH": os.pathsep.join([str(root / "src"), str(root)])})
    before = await env.balances()
    async with stdio_client(params) as (read, write), ClientSession(read, write) as session:
        await session.initialize()
        paying = PayingSession(session, Wallet.from_key(env.net.info.payer_key),
                               Policy(max_per_payment="$0.10", assets=[env.net.asset]), server="pympp-stdio",
                               store=f"sqlite:///{tmp_path / 'buyer.db'}")
        try:
            call = await paying.pay_tool("forecast", {"city": "Lagos"})
        finally:
            await paying.aclose()
    assert not call.result.isError, f"the paid stdio call failed: {call.result.content}"
    assert call.result.content[0].text == "rain in Lagos", "wrong tool output over stdio"
    assert call.receipt is not None and call.receipt.protocol == "mpp", f"receipt: {call.receipt}"
    assert await env.moved(before) == (PRICE, PRICE), "the stdio tool's price did not move"


async def test_a_tool_taking_both_can_ask_the_x402_way_and_take_either(env: Env) -> None:
    """``mpp=True, signal="x402"``: an unpaid call gets the x402 ``PaymentRequired`` result (not ``-32042``), and
    the official x402 MCP client pays it."""
    from x402 import x402Client
    from x402.mcp.client import x402MCPSession
    from x402.mechanisms.evm.exact import ExactEvmScheme

    client = x402Client()
    client.register(env.net.info.network, ExactEvmScheme(Account.from_key(env.net.info.payer_key)))
    client.set_spend_controls({"allowed_assets": [{"network": env.net.info.network, "asset": env.net.info.token}]})
    before, runs = await env.balances(), env.runs["dual"]
    async with http_session(env.ours_url) as session:
        unpaid = await session.call_tool("dual", {"symbol": "ACME"})
        result = await x402MCPSession(session, client).call_tool("dual", {"symbol": "ACME"})
    assert unpaid.isError and unpaid.structuredContent and unpaid.structuredContent.get("x402Version") == 2, \
        "an unpaid call of a signal='x402' tool did not get the x402 PaymentRequired"
    assert not result.is_error and result.content[0].text == "ACME: 43.00", f"x402 payment failed: {result.content}"
    assert env.runs["dual"] - runs == 1, "the tool did not run exactly once"
    assert await env.moved(before) == (PRICE, PRICE), "the price did not move"
