"""Paid-request round trip: paywire's seller middleware vs the official x402 Python middleware, same run.

    python bench/seller.py [--n-e2e 20] [--n-double 150] [--chain anvil|embedded] [--json]

One round trip = what a paying client does: ``GET`` → 402 → read ``PAYMENT-REQUIRED`` → sign an EIP-3009
authorization → ``GET`` with ``PAYMENT-SIGNATURE`` → 200 with ``PAYMENT-RESPONSE``. The same client code (paywire's
signer, httpx) pays three FastAPI apps serving the same ``GET /paid``:

* ``paywire``  — ``paywire.server.asgi.PaymentMiddleware`` (claims every payment in its SQLite store: exactly-once);
* ``official`` — ``x402.http.middleware.fastapi.PaymentMiddlewareASGI`` + ``x402ResourceServer`` (x402 2.25.0);
* ``baseline`` — no middleware: a canned 402, then 200 for any request with a payment header (no verify, no
  settle). ``overhead = round trip − baseline``, so signing and HTTP are not counted as middleware work.

Two setups, each its own facilitator and chain, every server in its own thread and event loop:

(a) end to end: one real facilitator (paywire's, over HTTP) settling on one chain (anvil, automine; or the
    embedded chain, ~1 block/s, with ``--chain embedded``), so verify/settle/confirmations are included;
(b) an instant facilitator double over HTTP (``isValid: true`` / ``success: true`` at once), which isolates the
    middlewares' own overhead.

Targets are interleaved request by request (warm-up first); medians are reported. Prints
``overhead ratio (a)`` and ``overhead ratio (b)`` = paywire overhead ÷ official overhead (aim: ≤ 0.33).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import random
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Awaitable, Callable
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


class ThreadServer:
    """Serve the ASGI app an async factory builds, in its own thread with its own event loop."""

    def __init__(self, factory: Callable[[], Awaitable[Any]], name: str) -> None:
        self._factory, self.url = factory, ""
        self._ready, self._stop = threading.Event(), threading.Event()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=lambda: asyncio.run(self._main()), name=name, daemon=True)
        self._thread.start()
        self._ready.wait(120)
        if self._error is not None:
            raise RuntimeError(f"{name} failed to start") from self._error

    async def _main(self) -> None:
        try:
            app = await self._factory()
            async with serve_asgi(app) as url:
                self.url = url
                self._ready.set()
                while not self._stop.is_set():
                    await asyncio.sleep(0.05)
        except BaseException as exc:
            self._error = exc
            self._ready.set()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(10)


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


def ours(net: Any, facilitator_url: str, store: str) -> Callable[[], Awaitable[Any]]:
    async def build() -> Any:
        from paywire.server.asgi import PaymentMiddleware
        from paywire.server.core import PaidRoute

        mw = PaymentMiddleware(fastapi_app(), [PaidRoute("GET /paid", offers=(offer_of(net),))], facilitator_url,
                               store=store)
        await mw.startup()
        return mw

    return build


def official(net: Any, facilitator_url: str) -> Callable[[], Awaitable[Any]]:
    async def build() -> Any:
        from x402 import x402ResourceServer
        from x402.http import FacilitatorConfig, HTTPFacilitatorClient, PaymentOption
        from x402.http.middleware.fastapi import PaymentMiddlewareASGI
        from x402.http.types import RouteConfig
        from x402.mechanisms.evm.exact import ExactEvmServerScheme

        server = x402ResourceServer(HTTPFacilitatorClient(FacilitatorConfig(url=facilitator_url)))
        server.register(net.network, ExactEvmServerScheme())
        price = {"amount": str(PRICE), "asset": net.token,
                 "extra": {"name": net.token_name, "version": net.token_version}}
        routes = {"GET /paid": RouteConfig(accepts=PaymentOption(scheme="exact", network=net.network,
                                                                 pay_to=net.payee, price=price, max_timeout_seconds=60),
                                           mime_type="application/json")}
        app = fastapi_app()
        app.add_middleware(PaymentMiddlewareASGI, routes=routes, server=server)
        return app

    return build


def baseline(net: Any) -> Callable[[], Awaitable[Any]]:
    async def build() -> Any:
        header = None

        async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
            nonlocal header
            if scope["type"] != "http":
                return
            has_payment = any(k == b"payment-signature" for k, _ in scope["headers"])
            if has_payment:
                status, headers, body = 200, [(b"content-type", b"application/json")], b'{"ok":true}'
            else:
                if header is None:
                    pr = PaymentRequired(accepts=(offer_of(net),), resource=ResourceInfo(url="http://x/paid"))
                    header = encode_header(pr.to_wire()).encode()
                status, headers, body = 402, [(b"payment-required", header)], b"{}"
            await send({"type": "http.response.start", "status": status,
                        "headers": [*headers, (b"content-length", str(len(body)).encode())]})
            await send({"type": "http.response.body", "body": body})

        return app

    return build


def double(network: str, payer: str) -> Callable[[], Awaitable[Any]]:
    """An instant facilitator: every payment valid, every settlement successful, no chain."""

    async def build() -> Any:
        from starlette.applications import Starlette
        from starlette.requests import Request
        from starlette.responses import JSONResponse
        from starlette.routing import Route

        async def supported(request: Request) -> JSONResponse:
            return JSONResponse({"kinds": [{"x402Version": 2, "scheme": "exact", "network": network}],
                                 "extensions": [], "signers": {}})

        async def verify(request: Request) -> JSONResponse:
            await request.body()
            return JSONResponse({"isValid": True, "payer": payer})

        async def settle(request: Request) -> JSONResponse:
            await request.body()
            return JSONResponse({"success": True, "transaction": "0x" + os.urandom(32).hex(), "network": network,
                                 "payer": payer})

        return Starlette(routes=[Route("/supported", supported), Route("/verify", verify, methods=["POST"]),
                                 Route("/settle", settle, methods=["POST"])])

    return build


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


def real_facilitator(info: NetInfo) -> Callable[[], Awaitable[Any]]:
    async def build() -> Any:
        chain = RpcChain(HttpTransport(info.rpc_url))
        scheme = ExactEvmFacilitator([EvmNetwork(info.network, chain, [TxSender(chain, info.facilitator_key)])])
        return create_app(Facilitator([scheme]))

    return build


async def run_setup(label: str, info: NetInfo, facilitator: Callable[[], Awaitable[Any]], n: int,
                    tmp: str) -> dict[str, Any]:
    servers = [ThreadServer(facilitator, f"{label}-facilitator")]
    try:
        fac = servers[0].url
        for name, factory in (("paywire", ours(info, fac, f"sqlite:///{tmp}/{label}-seller.db")),
                              ("official", official(info, fac)), ("baseline", baseline(info))):
            servers.append(ThreadServer(factory, f"{label}-{name}"))
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
            e2e = await run_setup("e2e", info, real_facilitator(info), n_e2e, tmp)
            settled = (await balance_of(info.payee) - payee0) // PRICE
            payer = LocalSigner(info.payer_key).address
            dbl = await run_setup("double", info, double(info.network, payer), args.n_double, tmp)
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
