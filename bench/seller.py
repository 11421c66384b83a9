"""Paid-request round trip: paywire's seller middleware vs the official x402 Python middleware, same run.

    python bench/seller.py [--n-e2e 20] [--n-double 150] [--chain anvil|embedded] [--json]

One round trip = what a paying client does: ``GET`` → 402 → read ``PAYMENT-REQUIRED`` → sign an EIP-3009
authorization → ``GET`` with ``PAYMENT-SIGNATURE`` → 200 with ``PAYMENT-RESPONSE``. The same client code (paywire's
signer, httpx) pays three FastAPI apps serving the same ``GET /paid``:

* ``paywire``  — ``paywire.server.asgi.PaymentMiddleware`` (claims every payment in its SQLite store: exactly-once);
* ``official`` — ``x402.http.middleware.fastapi.PaymentMiddlewareASGI`` + ``x402ResourceServer`` (x402 2.25.0);
* ``baseline`` — no payment middleware: the same FastAPI app behind a canned 402 (any request with a payment
  header goes straight to the app: no verify, no settle). ``overhead = round trip − baseline``, so signing, HTTP
  and the app's own work are not counted as middleware work.

Two setups, each with its own facilitator, on one chain; every server runs in its own process:

(a) end to end: one real facilitator (paywire's, over HTTP) settling on one chain (anvil, automine; or the
    embedded chain, ~1 block/s, with ``--chain embedded``), so verify/settle/confirmations are included;
(b) an instant facilitator double over HTTP (raw asyncio HTTP/1.1 answering ``isValid: true`` / ``success: true``
    from prebuilt bytes), which isolates the middlewares' own overhead (each one's facilitator calls still count).

Targets are interleaved request by request (warm-up first); medians are reported. Prints
``overhead ratio (a)`` and ``overhead ratio (b)`` = paywire overhead ÷ official overhead (aim: ≤ 0.33).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import json
import multiprocessing
import os
import platform
import random
import statistics
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import httpx

from paywire.chain import Anvil, EmbeddedChain, HttpTransport, JsonRpcServer, RpcChain
from paywire.chain.tx import TxSender
from paywire.devnet import setup_devnet
from paywire.evm.signer import LocalSigner
from paywire.facilitator.app import create_app
from paywire.facilitator.core import Facilitator
from paywire.schemes.evm_exact import EvmNetwork, ExactEvmClient, ExactEvmFacilitator
from paywire.serving import serve_asgi
from paywire.x402.codec import decode_payment_required, encode_header, encode_payment_payload
from paywire.x402.models import PaymentPayload, PaymentRequired, PaymentRequirements, ResourceInfo

PRICE = 10_000


class ProcessServer:
    """Serve one role's ASGI app from its own process (as in production: client, seller and facilitator never
    share an interpreter, so no GIL hand-offs between them end up in anyone's numbers)."""

    def __init__(self, role: str, args: dict[str, Any], name: str) -> None:
        ctx = multiprocessing.get_context("spawn")
        self._conn, child = ctx.Pipe()
        self._proc = ctx.Process(target=_serve_role, args=(role, args, child), name=name, daemon=True)
        self._proc.start()
        if not self._conn.poll(120):
            self._proc.kill()
            raise RuntimeError(f"{name} did not start")
        status, value = self._conn.recv()
        if status != "ok":
            raise RuntimeError(f"{name} failed to start: {value}")
        self.url: str = value

    def stop(self) -> None:
        with contextlib.suppress(Exception):
            self._conn.send("stop")
        self._proc.join(15)
        if self._proc.is_alive():
            self._proc.kill()


def _serve_role(role: str, args: dict[str, Any], conn: Any) -> None:
    async def main() -> None:
        try:
            serving = (serve_instant_facilitator(**args) if role == "instant-facilitator"
                       else serve_asgi(await ROLES[role](**args)()))
            async with serving as url:
                conn.send(("ok", url))
                await asyncio.to_thread(conn.recv)  # until the parent says stop (or dies)
        except EOFError:
            return
        except BaseException as exc:
            with contextlib.suppress(Exception):
                conn.send(("error", repr(exc)))
            raise

    asyncio.run(main())


# ------------------------------------------------------------------------------------------ the apps


def fastapi_app() -> Any:
    from fastapi import FastAPI

    app = FastAPI()

    @app.get("/paid")
    async def paid() -> dict[str, Any]:
        return {"ok": True, "data": "the paid resource"}

    return app


def offer_of(net: Any) -> PaymentRequirements:
    return PaymentRequirements(scheme="exact", network=net.network, amount=PRICE, asset=net.token, pay_to=net.payee,
                               max_timeout_seconds=60, extra={"name": net.token_name, "version": net.token_version})


def ours(net: dict[str, Any], facilitator_url: str, store: str) -> Callable[[], Awaitable[Any]]:
    async def build() -> Any:
        from paywire.server.asgi import PaymentMiddleware
        from paywire.server.core import PaidRoute

        route = PaidRoute("GET /paid", offers=(offer_of(NetInfo(**net)),))
        mw = PaymentMiddleware(fastapi_app(), [route], facilitator_url, store=store)
        await mw.startup()
        return mw

    return build


def official(net: dict[str, Any], facilitator_url: str) -> Callable[[], Awaitable[Any]]:
    async def build() -> Any:
        from x402 import x402ResourceServer
        from x402.http import FacilitatorConfig, HTTPFacilitatorClient, PaymentOption
        from x402.http.middleware.fastapi import PaymentMiddlewareASGI
        from x402.http.types import RouteConfig
        from x402.mechanisms.evm.exact import ExactEvmServerScheme

        info = NetInfo(**net)
        server = x402ResourceServer(HTTPFacilitatorClient(FacilitatorConfig(url=facilitator_url)))
        server.register(info.network, ExactEvmServerScheme())
        price = {"amount": str(PRICE), "asset": info.token,
                 "extra": {"name": info.token_name, "version": info.token_version}}
        routes = {"GET /paid": RouteConfig(accepts=PaymentOption(scheme="exact", network=info.network,
                                                                 pay_to=info.payee, price=price,
                                                                 max_timeout_seconds=60),
                                           mime_type="application/json")}
        app = fastapi_app()
        app.add_middleware(PaymentMiddlewareASGI, routes=routes, server=server)
        return app

    return build


def baseline(net: dict[str, Any]) -> Callable[[], Awaitable[Any]]:
    """The same FastAPI app behind a do-nothing payment gate: a canned 402, then the app for any request that
    carries a payment header (no verify, no settle, no payment-response). What a middleware adds on top of this
    is its overhead; the app's own work is in both sides of the subtraction."""

    async def build() -> Any:
        inner = fastapi_app()
        pr = PaymentRequired(accepts=(offer_of(NetInfo(**net)),), resource=ResourceInfo(url="http://x/paid"))
        header = encode_header(pr.to_wire()).encode()

        async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
            if scope["type"] != "http":
                return await inner(scope, receive, send)
            if any(k == b"payment-signature" for k, _ in scope["headers"]):
                return await inner(scope, receive, send)
            await send({"type": "http.response.start", "status": 402,
                        "headers": [(b"payment-required", header), (b"content-length", b"2")]})
            await send({"type": "http.response.body", "body": b"{}"})

        return app

    return build


class InstantFacilitator(asyncio.Protocol):
    """An instant facilitator double: raw HTTP/1.1 keep-alive on asyncio, answering every ``/verify`` with
    ``isValid: true`` and every ``/settle`` with ``success: true`` from prebuilt bytes (no chain, no framework),
    so that the facilitator's own service time is as close to zero as Python gets, for either middleware."""

    def __init__(self, network: str, payer: str) -> None:
        supported = json.dumps({"kinds": [{"x402Version": 2, "scheme": "exact", "network": network}],
                                "extensions": [], "signers": {}}).encode()
        self._supported = self._response(supported)
        self._valid = self._response(json.dumps({"isValid": True, "payer": payer}).encode())
        self._settled_head = json.dumps({"success": True, "network": network, "payer": payer})[:-1].encode()
        self._buf = b""
        self._transport: Any = None

    @staticmethod
    def _response(body: bytes) -> bytes:
        return (b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: "
                + str(len(body)).encode() + b"\r\n\r\n" + body)

    def connection_made(self, transport: Any) -> None:
        self._transport = transport

    def data_received(self, data: bytes) -> None:
        self._buf += data
        while True:
            end = self._buf.find(b"\r\n\r\n")
            if end < 0:
                return
            head = self._buf[:end].decode("latin-1")
            length = 0
            for line in head.split("\r\n")[1:]:
                name, _, value = line.partition(":")
                if name.strip().lower() == "content-length":
                    length = int(value)
            if len(self._buf) < end + 4 + length:
                return
            self._buf = self._buf[end + 4 + length:]
            path = head.split(" ", 2)[1]
            if path.endswith("/verify"):
                out = self._valid
            elif path.endswith("/settle"):
                out = self._response(self._settled_head + b',"transaction":"0x' + os.urandom(32).hex().encode()
                                     + b'"}')
            else:
                out = self._supported
            self._transport.write(out)


@contextlib.asynccontextmanager
async def serve_instant_facilitator(net: dict[str, Any]) -> AsyncIterator[str]:
    info = NetInfo(**net)
    payer = LocalSigner(info.payer_key).address
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: InstantFacilitator(info.network, payer), "127.0.0.1", 0)
    try:
        yield f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"
    finally:
        server.close()


# ------------------------------------------------------------------------------------------ the client


@dataclass
class Target:
    name: str
    url: str
    times: list[float] = field(default_factory=list)


async def round_trip(http: httpx.AsyncClient, url: str, signer: ExactEvmClient, paid_header: bool) -> float:
    t0 = time.perf_counter()
    r = await http.get(url)
    if r.status_code != 402:
        raise RuntimeError(f"{url}: expected 402, got {r.status_code} {r.text[:200]}")
    pr = decode_payment_required(r.headers["payment-required"])
    inner = await signer.create_payload(pr.accepts[0])
    header = encode_payment_payload(PaymentPayload(accepted=pr.accepts[0], payload=inner, resource=pr.resource))
    r2 = await http.get(url, headers={"PAYMENT-SIGNATURE": header})
    dt = time.perf_counter() - t0
    if r2.status_code != 200 or (paid_header and "payment-response" not in r2.headers):
        raise RuntimeError(f"{url}: paid request failed: {r2.status_code} {r2.text[:300]}")
    return dt


async def measure(targets: list[Target], signer: ExactEvmClient, n: int, warmup: int) -> None:
    async with httpx.AsyncClient(timeout=120) as http:
        for i in range(warmup + n):
            order = targets[:]
            random.shuffle(order)
            for t in order:
                dt = await round_trip(http, t.url + "/paid", signer, t.name != "baseline")
                if i >= warmup:
                    t.times.append(dt)


def summary(targets: list[Target]) -> dict[str, Any]:
    med = {t.name: statistics.median(t.times) * 1000 for t in targets}
    base = med["baseline"]
    over = {k: med[k] - base for k in ("paywire", "official")}
    return {"median_ms": med, "overhead_ms": over, "n": len(targets[0].times),
            "overhead_ratio": over["paywire"] / over["official"] if over["official"] > 0 else float("nan"),
            "round_trip_ratio": med["paywire"] / med["official"]}


# ------------------------------------------------------------------------------------------ setups


@dataclass(frozen=True)
class NetInfo:
    network: str
    token: str
    token_name: str
    token_version: str
    payee: str
    payer_key: str
    facilitator_key: str
    rpc_url: str


async def start_chain(kind: str) -> tuple[NetInfo, Callable[[], Awaitable[None]], Callable[[str], Awaitable[int]]]:
    """A devnet reachable over JSON-RPC; returns (info, close, balance_of)."""
    if kind == "anvil":
        anvil = Anvil(chain_id=31337)
        await anvil.start()
        chain, url = anvil.chain(), anvil.url

        async def close() -> None:
            await chain.aclose()
            await anvil.stop()
    else:
        backend = EmbeddedChain(chain_id=31337)
        server = JsonRpcServer(backend)
        url = await asyncio.to_thread(server.start)
        chain = RpcChain(backend)

        async def close() -> None:
            await asyncio.to_thread(server.stop)
            await chain.aclose()
    net = await setup_devnet(chain, rpc_url=url)
    info = NetInfo(net.info.network, net.info.token, net.info.token_name, net.info.token_version, net.payee.address,
                   net.info.payer_key, net.info.facilitator_key, url)
    return info, close, net.token_balance


def real_facilitator(net: dict[str, Any]) -> Callable[[], Awaitable[Any]]:
    async def build() -> Any:
        info = NetInfo(**net)
        chain = RpcChain(HttpTransport(info.rpc_url))
        scheme = ExactEvmFacilitator([EvmNetwork(info.network, chain, [TxSender(chain, info.facilitator_key)])])
        return create_app(Facilitator([scheme]))

    return build


ROLES: dict[str, Callable[..., Callable[[], Awaitable[Any]]]] = {
    "real-facilitator": real_facilitator, "paywire": ours,
    "official": official, "baseline": baseline,
}


async def run_setup(label: str, info: NetInfo, facilitator_role: str, n: int, tmp: str) -> dict[str, Any]:
    net = dataclasses.asdict(info)
    servers = [ProcessServer(facilitator_role, {"net": net}, f"{label}-facilitator")]
    try:
        fac = servers[0].url
        for name, args in (("paywire", {"net": net, "facilitator_url": fac,
                                        "store": f"sqlite:///{tmp}/{label}-seller.db"}),
                           ("official", {"net": net, "facilitator_url": fac}), ("baseline", {"net": net})):
            servers.append(ProcessServer(name, args, f"{label}-{name}"))
        targets = [Target(name, s.url) for name, s in zip(("paywire", "official", "baseline"), servers[1:],
                                                           strict=True)]
        await measure(targets, ExactEvmClient(LocalSigner(info.payer_key)), n, warmup=3)
        return summary(targets)
    finally:
        for s in servers:
            s.stop()


def pick_chain(requested: str) -> str:
    if requested != "auto":
        return requested
    try:
        from paywire.chain.anvil import ensure_anvil

        ensure_anvil()
        return "anvil"
    except Exception:
        return "embedded"


async def main(args: argparse.Namespace) -> dict[str, Any]:
    started = time.perf_counter()
    kind = pick_chain(args.chain)
    n_e2e = args.n_e2e if args.n_e2e is not None else (20 if kind == "anvil" else 4)
    with tempfile.TemporaryDirectory() as tmp:
        info, close, balance_of = await start_chain(kind)
        try:
            payee0 = await balance_of(info.payee)
            e2e = await run_setup("e2e", info, "real-facilitator", n_e2e, tmp)
            settled = (await balance_of(info.payee) - payee0) // PRICE
            dbl = await run_setup("double", info, "instant-facilitator", args.n_double, tmp)
        finally:
            await close()
    return {"chain": kind, "e2e": e2e, "double": dbl, "settled_on_chain": settled,
            "expected_settlements": 2 * (n_e2e + 3), "elapsed_s": time.perf_counter() - started,
            "python": platform.python_version(), "machine": f"{platform.machine()}, {os.cpu_count()} cores",
            "load_1min": os.getloadavg()[0]}


def report(res: dict[str, Any]) -> None:
    import importlib.metadata as md

    print(f"seller paid round trip (402 → sign → pay → 200), median over interleaved requests; "
          f"x402 {md.version('x402')}; {res['machine']}, Python {res['python']}")
    chain_note = "anvil (automine)" if res["chain"] == "anvil" else "embedded chain (~1 block/s)"
    for key, title in (("e2e", f"(a) end to end: real facilitator, {chain_note}"),
                       ("double", "(b) instant facilitator double")):
        s = res[key]
        m, o = s["median_ms"], s["overhead_ms"]
        print(f"{title}; n={s['n']} per target")
        print(f"    baseline (no middleware) {m['baseline']:9.2f} ms")
        print(f"    paywire                  {m['paywire']:9.2f} ms   overhead {o['paywire']:8.2f} ms")
        print(f"    official                 {m['official']:9.2f} ms   overhead {o['official']:8.2f} ms")
        print(f"    round trip ratio paywire/official: {s['round_trip_ratio']:.2f}")
    print(f"on-chain settlements in (a): {res['settled_on_chain']} (expected {res['expected_settlements']})")
    print(f"load average (1 min): {res['load_1min']:.2f}; elapsed: {res['elapsed_s']:.1f} s")
    print(f"overhead ratio (a): {res['e2e']['overhead_ratio']:.2f}")
    print(f"overhead ratio (b): {res['double']['overhead_ratio']:.2f}")
    print(f"aim overhead_ratio_a: {res['e2e']['overhead_ratio']:.2f} (target <= 0.33)")
    print(f"aim overhead_ratio_b: {res['double']['overhead_ratio']:.2f} (target <= 0.33)")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n-e2e", type=int, default=None, help="timed round trips per target in (a)")
    parser.add_argument("--n-double", type=int, default=150, help="timed round trips per target in (b)")
    parser.add_argument("--chain", choices=["auto", "anvil", "embedded"], default="auto")
    parser.add_argument("--json", action="store_true")
    a = parser.parse_args()
    result = asyncio.run(main(a))
    if a.json:
        json.dump(result, sys.stdout, indent=2)
        print()
    else:
        report(result)
    with contextlib.suppress(Exception):
        sys.stdout.flush()
