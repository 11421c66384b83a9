"""Helpers for the facilitator tests (and tests of the helpers themselves): a misbehaving JSON-RPC proxy in
front of a real chain, facilitator subprocesses, and on-chain counting of settlements."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from paywire.chain import EmbeddedChain, HttpTransport, JsonRpcServer, RpcChain, Transport
from paywire.chain.permit2 import approve_permit2, permit2_code
from paywire.chain.rail import AUTHORIZATION_USED_TOPIC
from paywire.chain.tx import TxSender
from paywire.devnet import Devnet, setup_devnet
from paywire.evm.crypto import address_bytes
from paywire.schemes.evm_exact import EvmNetwork, ExactEvmFacilitator
from paywire.schemes.evm_exact.payload import ExactEvmPayload
from paywire.serving import serve_asgi
from paywire.store.settlements import SettlementStore
from paywire.x402.models import PaymentPayload

PAYWIRE = [sys.executable, "-m", "paywire.cli.main"]


@contextlib.asynccontextmanager
async def permit2_devnet_served() -> AsyncIterator[tuple[Devnet, str]]:
    """(devnet with Permit2 and the proxies, JSON-RPC URL every process can use); the payer approved Permit2."""
    node = EmbeddedChain(code=permit2_code())
    server = JsonRpcServer(node)
    url = server.start()
    net = await setup_devnet(RpcChain(node), rpc_url=url)
    await approve_permit2(net.chain, net.payer.private_key, net.info.token)
    try:
        yield net, url
    finally:
        server.stop()
        await net.chain.aclose()


# ------------------------------------------------------------------------------------------------------------
# a JSON-RPC proxy that misbehaves on demand
# ------------------------------------------------------------------------------------------------------------


@dataclass
class RpcProxy:
    """Forwards JSON-RPC to ``upstream``; ``modes[method]`` (or ``modes["*"]``) makes it misbehave:

    * ``"timeout"`` — never answer (sleeps ``hang`` seconds) and do not forward;
    * ``"garbage"`` — do not forward; answer HTML;
    * ``"forward_garbage"`` — forward (the chain executes it) but answer garbage;
    * ``"forward_timeout"`` — forward, then hang instead of answering.
    """

    upstream: Transport
    modes: dict[str, str] = field(default_factory=dict)
    hang: float = 1.5
    then: dict[str, str] | None = None  # replaces ``modes`` once an eth_sendRawTransaction was handled
    calls: collections.Counter[str] = field(default_factory=collections.Counter)

    def mode(self, method: str) -> str:
        return self.modes.get(method, self.modes.get("*", "ok"))

    def app(self) -> Starlette:
        async def rpc(request: Request) -> Response:
            body = json.loads(await request.body())
            if isinstance(body, list):  # batches: answer each the same way, no misbehaviour
                out = [await self._one(c, allow_faults=False) for c in body]
                return JSONResponse(out)
            return await self._one_response(body)

        return Starlette(routes=[Route("/", rpc, methods=["POST"])])

    async def _one_response(self, call: Mapping[str, Any]) -> Response:
        method = str(call.get("method"))
        self.calls[method] += 1
        mode = self.mode(method)
        if method == "eth_sendRawTransaction" and self.then is not None:
            self.modes, self.then = dict(self.then), None
        if mode == "timeout":
            await asyncio.sleep(self.hang)
            return PlainTextResponse("late", status_code=504)
        if mode == "garbage":
            return PlainTextResponse("<html>502 Bad Gateway</html>", status_code=200)
        answer = await self._one(call, allow_faults=True)
        if mode == "forward_garbage":
            return JSONResponse({"jsonrpc": "2.0", "id": 999999, "result": "0xdeadbeef"})
        if mode == "forward_timeout":
            await asyncio.sleep(self.hang)
            return PlainTextResponse("late", status_code=504)
        return JSONResponse(answer)

    async def _one(self, call: Mapping[str, Any], *, allow_faults: bool) -> dict[str, Any]:
        from paywire.chain.server import error_object

        try:
            result = await self.upstream.request(str(call["method"]), list(call.get("params") or []))
        except Exception as exc:
            return {"jsonrpc": "2.0", "id": call.get("id"), "error": error_object(exc)}
        return {"jsonrpc": "2.0", "id": call.get("id"), "result": result}


# ------------------------------------------------------------------------------------------------------------
# facilitator subprocesses
# ------------------------------------------------------------------------------------------------------------


class FacilitatorProcess:
    """``paywire facilitator …`` as a real subprocess; ``url`` once it listens. ``command``: what runs the
    ``paywire`` CLI (default ``python -m paywire.cli.main``; a test may run it under a fault injector)."""

    def __init__(self, args: Sequence[str], *, env: Mapping[str, str] | None = None, cwd: Path | None = None,
                 command: Sequence[str] = PAYWIRE) -> None:
        self.args = [*command, "facilitator", "--port", "0", *args]
        self.env = {**os.environ, "COLUMNS": "200", **(env or {})}
        self.cwd = cwd
        self.proc: subprocess.Popen[str] | None = None
        self.url: str | None = None
        self.output: collections.deque[str] = collections.deque(maxlen=400)
        self._ready = threading.Event()

    def start(self, timeout: float = 60.0) -> str:
        self.proc = subprocess.Popen(self.args, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT, text=True, env=self.env, cwd=self.cwd)
        threading.Thread(target=self._read, args=(self.proc,), daemon=True).start()
        deadline = time.monotonic() + timeout
        while not self._ready.wait(0.05):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise AssertionError("facilitator did not start:\n" + "\n".join(self.output))
        assert self.url is not None
        return self.url

    def _read(self, proc: subprocess.Popen[str]) -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            self.output.append(line.rstrip())
            if "listening on " in line and not self._ready.is_set():
                self.url = line.split("listening on ", 1)[1].strip()
                self._ready.set()

    def wait_exit(self, timeout: float = 30.0) -> int:
        assert self.proc is not None
        return self.proc.wait(timeout)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)


def write_config(path: Path, *, network: str, rpc: str, keys: Sequence[str], store: str,
                 receipt_timeout: float = 30, reconcile_interval: float = 1, **extra: Any) -> Path:
    lines = [f'store = "{store}"', f"receipt_timeout = {receipt_timeout}",
             f"reconcile_interval = {reconcile_interval}"]
    lines += [f"{k} = {json.dumps(v)}" for k, v in extra.items()]
    lines += [f'[networks."{network}"]', f'rpc = "{rpc}"', f"keys = {json.dumps(list(keys))}"]
    path.write_text("\n".join(lines) + "\n")
    return path


# ------------------------------------------------------------------------------------------------------------
# chain facts
# ------------------------------------------------------------------------------------------------------------


async def authorization_uses(net: Devnet, payload: PaymentPayload) -> list[str]:
    """Transaction hashes of every ``AuthorizationUsed`` event for the payload's (payer, nonce)."""
    a = ExactEvmPayload.from_wire(payload.payload).authorization
    logs = await net.chain.get_logs(address=net.info.token, topics=[
        AUTHORIZATION_USED_TOPIC, bytes(12) + address_bytes(a.from_), a.nonce])
    return [entry.transaction_hash for entry in logs]


def facilitator_with_store(net: Devnet, store: SettlementStore | None, *, chain: Any = None,
                           keys: Sequence[bytes] | None = None, **kw: Any) -> ExactEvmFacilitator:
    c = chain or net.chain
    senders = [TxSender(c, k) for k in (keys or [net.facilitator.private_key])]
    return ExactEvmFacilitator([EvmNetwork(net.info.network, c, senders)], store=store, **kw)


# ------------------------------------------------------------------------------------------------------------
# the helpers work
# ------------------------------------------------------------------------------------------------------------


async def test_rpc_proxy_forwards_and_misbehaves_on_demand() -> None:
    """The proxy is transparent by default and fails exactly the way a test asks for."""
    from paywire.chain import EmbeddedChain

    node = EmbeddedChain()
    proxy = RpcProxy(node, hang=3.0)
    try:
        async with serve_asgi(proxy.app()) as url:
            chain = RpcChain(HttpTransport(url, timeout=1.5))
            assert await chain.chain_id() == 31337
            proxy.modes["eth_blockNumber"] = "garbage"
            with pytest.raises(Exception, match="non-JSON"):
                await chain.block_number()
            proxy.modes["eth_blockNumber"] = "timeout"
            with pytest.raises(Exception, match="no answer"):
                await chain.block_number()
            proxy.modes.clear()
            assert await chain.block_number() >= 0
            await chain.aclose()
    finally:
        await node.aclose()


def iter_lines(text: str) -> Iterator[str]:
    yield from (line for line in text.splitlines() if line.strip())


async def wait_until(predicate: Any, timeout: float = 30.0, interval: float = 0.1) -> Any:
    """Await ``predicate()`` (sync or async) until truthy; returns its value."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if asyncio.iscoroutine(value):
            value = await value
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(interval)


async def get_json(url: str, **kw: Any) -> Any:
    async with httpx.AsyncClient(timeout=30) as http:
        r = await http.get(url, **kw)
        return r.status_code, r.json()
