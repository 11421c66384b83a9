"""Facilitator throughput over HTTP on anvil: paywire's `paywire facilitator` vs the official x402 Python SDK's
facilitator (``x402FacilitatorSync`` + ``FacilitatorWeb3Signer``, wrapped in a minimal FastAPI app because the
SDK ships no HTTP server), same chain, same payloads, one run.

    python bench/facilitator.py [--verify-seconds 5] [--settlements 300] [--concurrency 32] [--rounds 5] [--json]

* ``/verify`` requests per second: every server gets the same distinct, valid payloads, sent by an in-process
  HTTP/1.1 keep-alive load generator (``--concurrency`` connections) for ``--verify-seconds``. The official
  facilitator is measured as installed (``pip install x402[evm]`` brings no coincurve, so eth_keys verifies in
  pure Python) and with eth_keys' coincurve backend (what it uses when coincurve happens to be installed).
* settlements per second: ``--settlements`` distinct payments POSTed to ``/settle`` with ``--concurrency``
  in flight, wall time until every answer is back (each must be ``success: true``), for paywire with 1 and
  with 4 gas keys (one SQLite settlement store each), and the official facilitator with 1 key (same
  concurrency unless ``--official-concurrency``) for at most ``--official-settle-seconds``. Every settlement
  measurement runs on a fresh anvil: anvil slows down as blocks pile up (automine mines one block per
  transaction), which would otherwise punish whoever runs last. For scale, the "chain ceiling" is what anvil alone
  sustains for the node calls of one settlement (simulate, send, receipt) driven by a lean loop in the bench
  process with the same keys and concurrency — no verification, no store, no HTTP. paywire and the ceiling take
  turns in ``--rounds`` rounds; the ratios are medians of the per-round ratios. Each line also shows the CPU
  milliseconds per settlement of the server process, anvil and the bench process (``/proc``): where the time goes.
* keys on a node that can use them: the same through a proxy that delays every node call by
  ``--remote-latency-ms`` (default 20; 0 skips it), with 32 node connections, ``--remote-settlements`` each.
  There one key is bound by its own sequence of transactions, so keys add up; the proxy counts the node calls
  per settlement.

Every server runs in its own process; anvil automines (one block per transaction). Prints the numbers,
``verify ratio`` / ``settle ratio`` (paywire ÷ official) and one ``aim`` line per target. About 2 minutes.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from paywire.chain import Anvil
from paywire.chain.devkeys import dev_keys
from paywire.devnet import setup_devnet
from paywire.evm.signer import LocalSigner
from paywire.schemes.evm_exact import ExactEvmClient, exact_evm_offer
from paywire.x402.models import FacilitatorRequest, PaymentPayload, PaymentRequirements

KEYS = ["0x" + k.hex() for k in dev_keys(10)]
OURS_1, OURS_4, THEIRS_KEY = [KEYS[1]], KEYS[6:10], KEYS[5]
PRICE = 100  # atomic units (0.0001 USDC) per payment

OFFICIAL_APP = r'''
import os, socket, sys
import uvicorn
from fastapi import FastAPI, HTTPException
from x402 import x402FacilitatorSync
from x402.schemas.helpers import parse_payment_payload, parse_payment_requirements
from x402.mechanisms.evm.exact import ExactEvmFacilitatorScheme
from x402.mechanisms.evm.signers import FacilitatorWeb3Signer

signer = FacilitatorWeb3Signer(private_key=os.environ["PK"], rpc_url=os.environ["RPC_URL"])
fac = x402FacilitatorSync()
fac.register([os.environ["NETWORK"]], ExactEvmFacilitatorScheme(signer))
app = FastAPI()

def parse(body):
    try:
        p = parse_payment_payload(body["paymentPayload"])
        return p, parse_payment_requirements(p.x402_version, body["paymentRequirements"])
    except Exception as e:
        raise HTTPException(400, str(e))

@app.get("/supported")
def supported():
    return fac.get_supported().model_dump(by_alias=True, exclude_none=True)

@app.post("/verify")
def verify(body: dict):
    return fac.verify(*parse(body)).model_dump(by_alias=True, exclude_none=True)

@app.post("/settle")
def settle(body: dict):
    return fac.settle(*parse(body)).model_dump(by_alias=True, exclude_none=True)

sock = socket.socket(); sock.bind(("127.0.0.1", 0)); sock.listen(1024)
from eth_keys.backends import get_backend
print("BACKEND", type(get_backend()).__name__, flush=True)
print("LISTENING", sock.getsockname()[1], flush=True)
uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False)).run(sockets=[sock])
'''


# A node "far away": every JSON-RPC request waits DELAY_MS before it is forwarded to anvil (one proxy process;
# keep-alive HTTP/1.1 with Content-Length, which is what both sides speak). It counts the methods it forwards
# (GET /__counts), which is how the bench knows how many node calls a settlement makes.
LATENCY_PROXY = r'''
import asyncio, collections, json, os
UP_HOST, UP_PORT = os.environ["UPSTREAM"].rsplit(":", 1)
DELAY = float(os.environ["DELAY_MS"]) / 1000
counts = collections.Counter()

async def read_msg(reader):
    head = await reader.readuntil(b"\r\n\r\n")
    n = 0
    for line in head.split(b"\r\n")[1:]:
        k, _, v = line.partition(b":")
        if k.strip().lower() == b"content-length":
            n = int(v)
    return head, (await reader.readexactly(n) if n else b"")

async def handle(cr, cw):
    ur = uw = None
    try:
        while True:
            try:
                head, body = await read_msg(cr)
            except (asyncio.IncompleteReadError, ConnectionError):
                break
            if head.startswith(b"GET /__counts"):
                out = json.dumps(counts).encode()
                cw.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(out) + out)
                await cw.drain()
                continue
            try:
                req = json.loads(body)
                for r in req if isinstance(req, list) else [req]:
                    counts[r.get("method", "?")] += 1
            except ValueError:
                pass
            await asyncio.sleep(DELAY)
            if uw is None:
                ur, uw = await asyncio.open_connection(UP_HOST, int(UP_PORT))
            uw.write(head + body)
            await uw.drain()
            rhead, rbody = await read_msg(ur)
            cw.write(rhead + rbody)
            await cw.drain()
    finally:
        cw.close()
        if uw is not None:
            uw.close()

async def main():
    srv = await asyncio.start_server(handle, "127.0.0.1", 0, backlog=1024)
    print("LISTENING", srv.sockets[0].getsockname()[1], flush=True)
    await srv.serve_forever()

asyncio.run(main())
'''


# --------------------------------------------------------------------------------------------------------------
# servers
# --------------------------------------------------------------------------------------------------------------


class Server:
    """A server subprocess that prints a line containing its URL or port when ready."""

    def __init__(self, name: str, cmd: Sequence[str], env: dict[str, str]) -> None:
        self.name = name
        self.proc = subprocess.Popen(list(cmd), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT, text=True, env={**os.environ, **env})
        self.url: str | None = None
        self.info: dict[str, str] = {}
        self.lines: list[str] = []
        self._ready = threading.Event()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line.rstrip())
            if line.startswith("BACKEND "):
                self.info["backend"] = line.split()[1]
            if "listening on " in line:
                self.url = line.split("listening on ", 1)[1].strip()
                self._ready.set()
            elif line.startswith("LISTENING "):
                self.url = f"http://127.0.0.1:{line.split()[1]}"
                self._ready.set()

    def wait(self, timeout: float = 60.0) -> str:
        if not self._ready.wait(timeout) or self.url is None:
            self.stop()
            raise RuntimeError(f"{self.name} did not start:\n" + "\n".join(self.lines[-30:]))
        return self.url

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()


def ours(name: str, tmp: Path, rpc: str, keys: Sequence[str], connections: int | None = None) -> Server:
    cfg = tmp / f"{name}.toml"
    (tmp / f"{name}.db").unlink(missing_ok=True)
    extra = f"rpc_connections = {connections}\n" if connections else ""
    cfg.write_text(
        f'store = "sqlite:///{tmp / (name + ".db")}"\nreceipt_timeout = 60\n'
        f'[networks."eip155:31337"]\nrpc = "{rpc}"\nkeys = {json.dumps(list(keys))}\n{extra}'
    )
    return Server(name, [sys.executable, "-m", "paywire.cli.main", "facilitator", "--config", str(cfg), "--port", "0"],
                  {"COLUMNS": "200"})


def theirs(name: str, rpc: str, key: str, backend: str | None) -> Server:
    env = {"PK": key, "RPC_URL": rpc, "NETWORK": "eip155:31337"}
    if backend:
        env["ECC_BACKEND_CLASS"] = backend
    return Server(name, [sys.executable, "-c", OFFICIAL_APP], env)


# --------------------------------------------------------------------------------------------------------------
# a small HTTP/1.1 keep-alive load generator (cheaper per request than any Python HTTP client library)
# --------------------------------------------------------------------------------------------------------------


class Conn:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, host: str) -> None:
        self.reader, self.writer, self.host = reader, writer, host

    @classmethod
    async def open(cls, url: str) -> Conn:
        hostport = url.removeprefix("http://").rstrip("/")
        host, port = hostport.rsplit(":", 1)
        reader, writer = await asyncio.open_connection(host, int(port))
        return cls(reader, writer, hostport)

    async def post(self, path: str, body: bytes) -> tuple[int, bytes]:
        self.writer.write(
            f"POST {path} HTTP/1.1\r\nHost: {self.host}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n\r\n".encode() + body
        )
        head = await self.reader.readuntil(b"\r\n\r\n")
        status = int(head.split(b" ", 2)[1])
        length = 0
        for line in head.split(b"\r\n")[1:]:
            k, _, v = line.partition(b":")
            if k.strip().lower() == b"content-length":
                length = int(v)
        return status, await self.reader.readexactly(length)

    def close(self) -> None:
        self.writer.close()


async def verify_rps(url: str, bodies: Sequence[bytes], seconds: float, concurrency: int) -> dict[str, Any]:
    """Requests per second of POST /verify over ``seconds`` (after a short warm-up); every answer checked."""
    conns = [await Conn.open(url) for _ in range(concurrency)]
    counter = {"next": 0, "ok": 0, "bad": 0}
    stop_at = 0.0

    async def worker(c: Conn, until: float, count: bool) -> None:
        while time.perf_counter() < until:
            i = counter["next"]
            counter["next"] += 1
            status, raw = await c.post("/verify", bodies[i % len(bodies)])
            if not count:
                continue
            if status == 200 and b'"isValid":true' in raw.replace(b" ", b""):
                counter["ok"] += 1
            else:
                counter["bad"] += 1

    try:
        warm = time.perf_counter() + min(1.0, seconds / 4)
        await asyncio.gather(*(worker(c, warm, False) for c in conns))
        start = time.perf_counter()
        stop_at = start + seconds
        await asyncio.gather(*(worker(c, stop_at, True) for c in conns))
        elapsed = time.perf_counter() - start
    finally:
        for c in conns:
            c.close()
    return {"rps": counter["ok"] / elapsed, "ok": counter["ok"], "invalid_or_error": counter["bad"],
            "seconds": round(elapsed, 2)}


async def settle_rate(url: str, bodies: Sequence[bytes], concurrency: int, *, max_seconds: float | None = None,
                      ) -> dict[str, Any]:
    """Settlements per second: POST /settle of every body (distinct payments), ``concurrency`` in flight."""
    conns = [await Conn.open(url) for _ in range(concurrency)]
    queue = list(reversed(bodies))
    results = {"ok": 0, "failed": 0, "reasons": {}}
    start = time.perf_counter()
    deadline = start + max_seconds if max_seconds else None

    async def worker(c: Conn) -> None:
        while queue and (deadline is None or time.perf_counter() < deadline):
            status, raw = await c.post("/settle", queue.pop())
            data = json.loads(raw) if status == 200 else {"errorReason": f"HTTP {status}"}
            if data.get("success"):
                results["ok"] += 1
            else:
                results["failed"] += 1
                reason = str(data.get("errorReason"))
                results["reasons"][reason] = results["reasons"].get(reason, 0) + 1

    try:
        await asyncio.gather(*(worker(c) for c in conns))
    finally:
        for c in conns:
            c.close()
    elapsed = time.perf_counter() - start
    return {"per_second": results["ok"] / elapsed, "settled": results["ok"], "failed": results["failed"],
            "failure_reasons": results["reasons"], "seconds": round(elapsed, 2), "concurrency": concurrency}


async def chain_ceiling(rpc: str, bodies: Sequence[bytes], keys: Sequence[str], concurrency: int, *,
                        connections: int = 4, raw: bool = True, node_pid: int | None = None) -> dict[str, Any]:
    """What the node alone sustains for the calls one settlement needs — simulate (``eth_estimateGas``), send
    (``eth_sendRawTransaction``), confirm (``eth_getTransactionReceipt``) — with no facilitator logic, no
    verification, no store: a lean loop over half of ``bodies``, ``keys`` round-robin, same concurrency and
    node connections as the service. The other half measures the raw mining rate: pre-signed transactions
    sent back to back per key, then confirmed (no simulation)."""
    from paywire.chain import RpcChain
    from paywire.chain.keepalive import KeepAliveTransport
    from paywire.chain.tx import TxSender
    from paywire.evm import token
    from paywire.schemes.evm_exact.payload import ExactEvmPayload

    chain = RpcChain(KeepAliveTransport(rpc, max_connections=connections))  # as the service (4: a local node)
    senders = [TxSender(chain, k) for k in keys]
    asset = json.loads(bodies[0])["paymentRequirements"]["asset"]
    calls = []
    half = len(bodies) // 2 if raw else len(bodies)
    raw_bodies, bodies = bodies[half:], bodies[:half]
    for b in [*bodies, *raw_bodies]:
        a = ExactEvmPayload.from_wire(json.loads(b)["paymentPayload"]["payload"])
        x = a.authorization
        calls.append(token.transfer_with_authorization(x.from_, x.to, x.value, x.valid_after, x.valid_before,
                                                       x.nonce, a.signature))
    calls, raw_calls = calls[:half], calls[half:]
    queue = list(reversed(calls))
    done = {"n": 0, "next": 0}

    async def confirm(tx_hash: str) -> None:
        delay = 0.02
        while await chain.get_transaction_receipt(tx_hash) is None:
            await asyncio.sleep(delay)
            delay = min(delay * 1.5, 0.5)

    async def worker() -> None:
        while queue:
            data = queue.pop()
            sender = senders[done["next"] % len(senders)]
            done["next"] += 1
            tx, _ = await sender.send_recorded(asset, data)
            await confirm(tx.hash)
            done["n"] += 1

    start = time.perf_counter()
    loop_cpu: dict[str, Any] = {"settled": len(calls)}
    try:
        async with cpu_meter(loop_cpu, None, node_pid):  # the loop only, not the raw mining part below
            await asyncio.gather(*(worker() for _ in range(concurrency)))
        elapsed = time.perf_counter() - start
        del loop_cpu["settled"]
        if not raw:
            return {"per_second": done["n"] / elapsed, "settled": done["n"], "failed": 0, "failure_reasons": {},
                    "seconds": round(elapsed, 2), "concurrency": concurrency, **loop_cpu}
        # raw mining rate: pre-signed transactions, sent back to back per key, then confirmed
        fees = await senders[0].fees()
        chain_id = await chain.chain_id()
        nonces = [await chain.get_transaction_count(s.address, "pending") for s in senders]
        signed = [senders[i % len(senders)].sign_with(
            to=asset, data=data, value=0, gas=150_000, nonce=nonces[i % len(senders)] + i // len(senders),
            max_fee=fees[0], tip=fees[1], chain_id=chain_id) for i, data in enumerate(raw_calls)]
        t0 = time.perf_counter()

        async def lane(k: int) -> None:
            for tx in signed[k::len(senders)]:
                await chain.send_raw_transaction(tx.raw)

        await asyncio.gather(*(lane(k) for k in range(len(senders))))
        await asyncio.gather(*(confirm(tx.hash) for tx in signed))
        raw_elapsed = time.perf_counter() - t0
    finally:
        await chain.aclose()
    return {"per_second": done["n"] / elapsed, "settled": done["n"], "failed": 0, "failure_reasons": {},
            "seconds": round(elapsed, 2), "concurrency": concurrency,
            "raw_mining_per_second": len(signed) / raw_elapsed, **loop_cpu}


# --------------------------------------------------------------------------------------------------------------
# payloads
# --------------------------------------------------------------------------------------------------------------


@dataclass
class Payloads:
    offer: PaymentRequirements
    verify: list[bytes]
    ours_1: list[bytes]
    ours_4: list[bytes]
    theirs: list[bytes]
    ceiling_1: list[bytes]
    ceiling_4: list[bytes]


async def make_payloads(asset: Any, pay_to: str, payer_key: bytes, n_verify: int, n_settle: int,
                        n_official: int) -> Payloads:
    offer = exact_evm_offer(asset, pay_to, amount=PRICE, max_timeout_seconds=3600)
    client = ExactEvmClient(LocalSigner(payer_key))

    async def one() -> bytes:
        p = PaymentPayload(x402_version=2, accepted=offer, payload=await client.create_payload(offer))
        return json.dumps(FacilitatorRequest(x402_version=2, payment_payload=p,
                                             payment_requirements=offer).to_wire()).encode()

    async def many(n: int) -> list[bytes]:
        return [await one() for _ in range(n)]

    return Payloads(offer, await many(n_verify), await many(n_settle), await many(n_settle), await many(n_official),
                    await many(2 * n_settle), await many(2 * n_settle))


# --------------------------------------------------------------------------------------------------------------


@contextlib.asynccontextmanager
async def fresh_chain(expected_token: str | None = None) -> AsyncIterator[tuple[Any, str, int | None]]:
    """A new anvil with the devnet token (always at the same address, so payloads sign for every one):
    ``(devnet, rpc url, anvil's pid)``."""
    async with Anvil(chain_id=31337) as anvil:
        net = await setup_devnet(anvil.chain(), rpc_url=anvil.url, payer_funds=10**12)
        if expected_token is not None and net.info.token != expected_token:
            raise RuntimeError("the token was deployed at another address")
        yield net, anvil.url, anvil.pid


def cpu_seconds(pid: int | None) -> float:
    """User + system CPU seconds a process has used so far (Linux ``/proc``; 0 elsewhere)."""
    if pid is None:
        return 0.0
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@contextlib.asynccontextmanager
async def cpu_meter(result: dict[str, Any], server_pid: int | None, node_pid: int | None) -> AsyncIterator[None]:
    """Adds to ``result`` the CPU milliseconds per settlement the server, the node and this process (load
    generator or ceiling loop) used while the block ran: where the time goes on a machine they share."""
    before = (cpu_seconds(server_pid), cpu_seconds(node_pid), sum(os.times()[:2]))
    yield
    after = (cpu_seconds(server_pid), cpu_seconds(node_pid), sum(os.times()[:2]))
    n = max(result.get("settled", 0), 1)
    result["cpu_ms_per_settlement"] = {k: round((a - b) * 1e3 / n, 2) for k, a, b in
                                       zip(("server", "node", "bench"), after, before, strict=True)}


@contextlib.asynccontextmanager
async def latency_proxy(rpc: str, delay_ms: float) -> AsyncIterator[str]:
    """A JSON-RPC proxy in its own process that delays every request by ``delay_ms`` (a remote node)."""
    srv = Server("latency proxy", [sys.executable, "-c", LATENCY_PROXY],
                 {"UPSTREAM": rpc.removeprefix("http://").rstrip("/"), "DELAY_MS": str(delay_ms)})
    try:
        yield await asyncio.to_thread(srv.wait)
    finally:
        srv.stop()


async def node_calls(proxy: str) -> dict[str, int]:
    conn = await Conn.open(proxy)
    try:
        conn.writer.write(f"GET /__counts HTTP/1.1\r\nHost: {conn.host}\r\nContent-Length: 0\r\n\r\n".encode())
        head = await conn.reader.readuntil(b"\r\n\r\n")
        length = int(head.lower().split(b"content-length:")[1].split(b"\r\n")[0])
        return dict(json.loads(await conn.reader.readexactly(length)))
    finally:
        conn.close()


def median(xs: Sequence[float]) -> float:
    ys = sorted(xs)
    return ys[len(ys) // 2] if len(ys) % 2 else (ys[len(ys) // 2 - 1] + ys[len(ys) // 2]) / 2


async def measure_settle(name: str, kind: str, tmp: Path, token: str, keys: Sequence[str], bodies: Sequence[bytes],
                         concurrency: int, *, rpc_of: Any = None, connections: int | None = None,
                         ) -> dict[str, Any]:
    """One settlement measurement on a fresh anvil: paywire's service (``kind="ours"``) or the chain ceiling loop.
    ``rpc_of``: an async context manager turning the node URL into the URL to use (the latency proxy)."""
    async with fresh_chain(token) as (_, rpc, node_pid), \
            (rpc_of(rpc) if rpc_of else contextlib.nullcontext(rpc)) as url:
        calls_before = await node_calls(url) if rpc_of else {}
        res: dict[str, Any] = {}
        if kind == "ours":
            srv = ours(name, tmp, url, keys, connections)
            try:
                service = await asyncio.to_thread(srv.wait)
                calls_before = await node_calls(url) if rpc_of else {}  # after the service's start-up calls
                async with cpu_meter(res, srv.proc.pid, node_pid):
                    res.update(await settle_rate(service, bodies, concurrency))
            finally:
                srv.stop()
        else:
            res.update(await chain_ceiling(url, bodies, keys, concurrency, connections=connections or 4,
                                           raw=rpc_of is None, node_pid=node_pid))
        if rpc_of:
            after = await node_calls(url)
            n = max(res["settled"], 1)
            res["node_calls_per_settlement"] = {m: round((after.get(m, 0) - calls_before.get(m, 0)) / n, 2)
                                                for m in sorted(after) if after.get(m, 0) > calls_before.get(m, 0)}
    return res


async def remote_node(args: argparse.Namespace, tmp: Path, token: str, payloads: Payloads) -> dict[str, Any]:
    """Keys on a node that can use them: every node call takes ``--remote-latency-ms`` longer (a proxy), so one
    key is bound by its own sequence (sign → record → broadcast of one transaction at a time) and keys add up.
    paywire 1 and 4 keys and the chain ceiling 1 and 4 keys, with 32 node connections (a remote node's default)."""
    n = args.remote_settlements

    @contextlib.asynccontextmanager
    async def proxied(rpc: str) -> AsyncIterator[str]:
        async with latency_proxy(rpc, args.remote_latency_ms) as url:
            yield url

    out: dict[str, Any] = {"latency_ms": args.remote_latency_ms}
    for name, keys, bodies, kind in (("ours_1_key", OURS_1, payloads.ours_1[:n], "ours"),
                                     ("chain_ceiling_1_key", [KEYS[4]], payloads.ceiling_1[:n], "ceiling"),
                                     ("ours_4_keys", OURS_4, payloads.ours_4[:n], "ours"),
                                     ("chain_ceiling_4_keys", KEYS[6:10], payloads.ceiling_4[:n], "ceiling")):
        out[name] = await measure_settle(name, kind, tmp, token, keys, bodies, args.concurrency, rpc_of=proxied,
                                         connections=32)
    return out


async def run(args: argparse.Namespace) -> dict[str, Any]:
    t0 = time.perf_counter()
    tmp = Path(tempfile.mkdtemp(prefix="paywire-bench-"))
    out: dict[str, Any] = {"verify": {}, "settle": {}}
    async with fresh_chain() as (net, rpc, _):
        token = net.info.token
        servers = {
            "ours_1": ours("ours_1", tmp, rpc, OURS_1),
            "official": theirs("official", rpc, THEIRS_KEY, "eth_keys.backends.NativeECCBackend"),
            "official_coincurve": theirs("official_coincurve", rpc, THEIRS_KEY, "eth_keys.backends.CoinCurveECCBackend"),
        }
        try:
            payloads = await make_payloads(net.asset, net.payee.address, net.payer.private_key, args.verify_payloads,
                                           args.settlements, args.official_settlements)
            urls = {name: await asyncio.to_thread(s.wait) for name, s in servers.items()}
            for name in ("ours_1", "official", "official_coincurve"):
                out["verify"][name] = await verify_rps(urls[name], payloads.verify, args.verify_seconds, args.concurrency)
                out["verify"][name]["ecc_backend"] = servers[name].info.get("backend", "libsecp256k1 (coincurve)")
        finally:
            for srv in servers.values():
                srv.stop()
    # anvil slows down as it accumulates blocks (automine = one block per transaction), so every settlement
    # measurement gets a fresh chain. paywire and the chain ceiling take turns, in rounds, so that a change of
    # load on a shared machine hits both sides of a ratio alike; each ratio is the median over the rounds.
    plan = [("ours_1_key", OURS_1, payloads.ours_1, "ours"), ("chain_ceiling_1_key", [KEYS[4]], payloads.ceiling_1, "ceiling"),
            ("ours_4_keys", OURS_4, payloads.ours_4, "ours"), ("chain_ceiling_4_keys", KEYS[6:10], payloads.ceiling_4, "ceiling")]
    rounds: dict[str, list[dict[str, Any]]] = {name: [] for name, *_ in plan}
    for r in range(args.rounds):
        order = plan if r % 2 == 0 else [plan[1], plan[0], plan[3], plan[2]]
        for name, keys, bodies, kind in order:
            rounds[name].append(await measure_settle(name, kind, tmp, token, keys, bodies, args.concurrency))
    async with fresh_chain(token) as (net, rpc, node_pid):
        srv = theirs("official_settle", rpc, THEIRS_KEY, None)
        try:
            url = await asyncio.to_thread(srv.wait)
            res = out["settle"]["official_1_key"] = {}
            async with cpu_meter(res, srv.proc.pid, node_pid):
                res.update(await settle_rate(url, payloads.theirs, args.official_concurrency,
                                             max_seconds=args.official_settle_seconds))
        finally:
            srv.stop()
    for name, results in rounds.items():
        by_rate = sorted(results, key=lambda x: x["per_second"])
        out["settle"][name] = {**by_rate[len(by_rate) // 2], "rounds": [round(x["per_second"], 1) for x in results]}
    if args.remote_latency_ms > 0:
        out["remote"] = await remote_node(args, tmp, token, payloads)
    v, s = out["verify"], out["settle"]

    def per_round(a: str, b: str) -> float:
        return median([x["per_second"] / max(y["per_second"], 1e-9) for x, y in zip(rounds[a], rounds[b], strict=True)])

    out["ratios"] = {
        "verify_vs_official": v["ours_1"]["rps"] / max(v["official"]["rps"], 1e-9),
        "verify_vs_official_coincurve": v["ours_1"]["rps"] / max(v["official_coincurve"]["rps"], 1e-9),
        "settle_1_key_vs_official": s["ours_1_key"]["per_second"] / max(s["official_1_key"]["per_second"], 1e-9),
        "settle_4_keys_vs_1_key": per_round("ours_4_keys", "ours_1_key"),
        "settle_1_key_of_chain_ceiling": per_round("ours_1_key", "chain_ceiling_1_key"),
        "settle_4_keys_of_chain_ceiling": per_round("ours_4_keys", "chain_ceiling_4_keys"),
    }
    if "remote" in out:
        rs = out["remote"]
        out["ratios"]["remote_4_keys_vs_1_key"] = rs["ours_4_keys"]["per_second"] / max(rs["ours_1_key"]["per_second"], 1e-9)
        out["ratios"]["remote_keys_scaling_of_ceiling"] = out["ratios"]["remote_4_keys_vs_1_key"] / max(
            rs["chain_ceiling_4_keys"]["per_second"] / max(rs["chain_ceiling_1_key"]["per_second"], 1e-9), 1e-9)
        out["ratios"]["remote_1_key_of_chain_ceiling"] = (
            rs["ours_1_key"]["per_second"] / max(rs["chain_ceiling_1_key"]["per_second"], 1e-9))
        out["ratios"]["remote_4_keys_of_chain_ceiling"] = (
            rs["ours_4_keys"]["per_second"] / max(rs["chain_ceiling_4_keys"]["per_second"], 1e-9))
    out["machine"] = {"python": platform.python_version(), "cpus": os.cpu_count(), "platform": platform.platform(),
                      "load_avg": os.getloadavg()}
    out["params"] = vars(args)
    out["total_seconds"] = round(time.perf_counter() - t0, 1)
    return out


def _cpu(x: dict[str, Any]) -> str:
    c = x.get("cpu_ms_per_settlement")
    return f"{c['server']:>8.2f}{c['node']:>7.2f}{c['bench']:>7.2f}" if c else ""


def report(out: dict[str, Any]) -> str:
    v, s, r = out["verify"], out["settle"], out["ratios"]
    lines = ["/verify over HTTP (anvil, same payloads)", f"{'server':<44}{'req/s':>10}{'ok':>8}{'bad':>6}"]
    labels = {"ours_1": "paywire facilitator",
              "official": "official SDK facilitator (as installed: pure-Python ECC)",
              "official_coincurve": "official SDK facilitator (coincurve ECC)"}
    for k, label in labels.items():
        lines.append(f"{label:<44.44}{v[k]['rps']:>10.1f}{v[k]['ok']:>8}{v[k]['invalid_or_error']:>6}")
    rows = (("ours_1_key", "paywire, 1 gas key"), ("ours_4_keys", "paywire, 4 gas keys"),
            ("official_1_key", "official SDK, 1 gas key"),
            ("chain_ceiling_1_key", "chain ceiling, 1 key (node calls only)"),
            ("chain_ceiling_4_keys", "chain ceiling, 4 keys (node calls only)"))
    head = f"{'server':<44}{'settled/s':>10}{'ok':>6}{'failed':>7}{'conc':>5}  CPU ms/settlement: server  node  bench"
    lines += ["", f"settlements on anvil (automine); median of {out['params']['rounds']} rounds, paywire and the "
              "ceiling taking turns", head]
    for k, label in rows:
        x = s[k]
        extra = f"  rounds: {', '.join(f'{q:.0f}' for q in x['rounds'])}" if "rounds" in x else ""
        lines.append(f"{label:<44}{x['per_second']:>10.1f}{x['settled']:>6}{x['failed']:>7}{x['concurrency']:>5}"
                     f"  {_cpu(x)}{extra}")
        if x["failure_reasons"]:
            lines.append(f"    failures: {x['failure_reasons']}")
    if "remote" in out:
        rs = out["remote"]
        lines += ["", f"settlements through a node {rs['latency_ms']:g} ms away (latency proxy, 32 node connections)",
                  head.replace("CPU ms", "node calls per settlement; CPU ms")]
        for k, label in rows:
            if k not in rs:
                continue
            x = rs[k]
            calls = ", ".join(f"{m.removeprefix('eth_')} {c:g}" for m, c in x.get("node_calls_per_settlement", {}).items())
            lines.append(f"{label:<44}{x['per_second']:>10.1f}{x['settled']:>6}{x['failed']:>7}{x['concurrency']:>5}"
                         f"  {_cpu(x)}   [{calls}]")
    lines += ["",
              f"verify ratio (paywire / official as installed): {r['verify_vs_official']:.1f}x",
              f"verify ratio (paywire / official with coincurve): {r['verify_vs_official_coincurve']:.1f}x",
              f"settle ratio (paywire 1 key / official 1 key): {r['settle_1_key_vs_official']:.1f}x",
              f"settle scaling (paywire 4 keys / 1 key) on anvil: {r['settle_4_keys_vs_1_key']:.2f}x",
              f"paywire / chain ceiling: {r['settle_1_key_of_chain_ceiling']:.0%} (1 key), "
              f"{r['settle_4_keys_of_chain_ceiling']:.0%} (4 keys)",
              f"anvil raw mining rate (pre-signed transfers, send + receipt only): "
              f"{s['chain_ceiling_1_key']['raw_mining_per_second']:.0f} tx/s (1 key), "
              f"{s['chain_ceiling_4_keys']['raw_mining_per_second']:.0f} tx/s (4 keys)"]
    if "remote" in out:
        ceil = r["remote_4_keys_vs_1_key"] / max(r["remote_keys_scaling_of_ceiling"], 1e-9)
        lines += [f"remote node: settle scaling (4 keys / 1 key): paywire {r['remote_4_keys_vs_1_key']:.2f}x, "
                  f"chain ceiling {ceil:.2f}x; "
                  f"paywire / chain ceiling: {r['remote_1_key_of_chain_ceiling']:.0%} (1 key), "
                  f"{r['remote_4_keys_of_chain_ceiling']:.0%} (4 keys)"]
    cpu1, cpu4 = (s[k].get("cpu_ms_per_settlement", {}).get("server", 0.0) for k in ("ours_1_key", "ours_4_keys"))
    lines += [f"facilitator CPU per settlement (the paywire process, /proc): {cpu1:.2f} ms (1 key), {cpu4:.2f} ms "
              f"(4 keys); chain ceiling loop {s['chain_ceiling_1_key'].get('cpu_ms_per_settlement', {}).get('bench', 0):.2f} ms"]
    lines += [f"total {out['total_seconds']} s on {out['machine']['cpus']} CPUs, load {out['machine']['load_avg']}",
              f"aim verify_vs_official: {r['verify_vs_official']:.1f} (target >= 5)",
              f"aim settle_1_key_of_chain_ceiling: {r['settle_1_key_of_chain_ceiling']:.2f} (target >= 0.90)",
              f"aim settle_4_keys_of_chain_ceiling: {r['settle_4_keys_of_chain_ceiling']:.2f} (target >= 0.90)"]
    if "remote" in out:
        lines.append(f"aim keys_scaling_of_chain_ceiling_remote_node: {r['remote_keys_scaling_of_ceiling']:.2f} "
                     "(target >= 0.90)")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--verify-seconds", type=float, default=5.0)
    ap.add_argument("--verify-payloads", type=int, default=300)
    ap.add_argument("--settlements", type=int, default=300)
    ap.add_argument("--official-settlements", type=int, default=200)
    ap.add_argument("--official-settle-seconds", type=float, default=8.0)
    ap.add_argument("--official-concurrency", type=int, default=None)
    ap.add_argument("--concurrency", type=int, default=32)
    ap.add_argument("--rounds", type=int, default=5, help="settlement rounds (paywire and ceiling take turns)")
    ap.add_argument("--remote-latency-ms", type=float, default=20.0,
                    help="latency of the simulated remote node for the keys-scaling part (0: skip it)")
    ap.add_argument("--remote-settlements", type=int, default=150)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    if args.official_concurrency is None:
        args.official_concurrency = args.concurrency
    out = asyncio.run(run(args))
    print(json.dumps(out, indent=2) if args.json else report(out))


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        main()
