"""Added latency and streamed throughput of ``paywire proxy``, against the upstream called directly and against a
minimal plain reverse proxy (httpx streaming, no payments), all in the same run.

    python bench/proxy.py [--n 300] [--mb 64] [--runs 3] [--rounds 5] [--json]

Processes (each in its own interpreter, all on 127.0.0.1):

* ``upstream``       — a raw ASGI app on uvicorn: ``GET /small`` and ``GET /paid`` (a 40-byte JSON answer) and
  ``GET /stream`` (``--mb`` MB in 64 KB chunks, streamed);
* ``plain proxy``    — a 40-line httpx streaming reverse proxy on uvicorn (the anchor; Aperture cannot be built
  offline here);
* ``paywire proxy``  — the real ``paywire proxy --config`` subprocess: ``/paid`` priced (x402, settle="after",
  SQLite ledger), everything else forwarded free (``unpriced = "forward"``);
* ``facilitator``    — an instant facilitator double (raw HTTP answering ``isValid``/``success`` from prebuilt
  bytes), so a paid request costs the proxy's own work plus two near-empty round trips, which are measured
  separately and subtracted.

Each latency aim is reported twice: wall clock (medians; moves with the machine's load) and CPU (the proxy
process's user+system time per request from ``/proc``, minus, for paid requests, this process's CPU for the same
two facilitator round trips on the same client: contention-proof). The ledger's three commits per payment are
also measured on their own, to show how the paid route's cost splits.

Latency: requests are interleaved target by target (warm-up first); medians reported. The paid request carries a
fresh payment signed before timing. Throughput: ``GET /stream`` through each target, interleaved, best of
``--runs``. All of it is done ``--rounds`` times (default 5), each round with fresh processes: the wall-clock
medians of one run move by ±0.3 ms from run to run on a 2-core machine (which core each of the four processes
lands on), far more than within a run, so each aim is the median of the rounds' values, all of which are printed.
Ends with one ``aim`` line per aim of issue 16.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import multiprocessing
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parent.parent
SECRET = "bench-identity-secret-0123456789abcdef0123"
NETWORK = "eip155:31337"
TOKEN = "0x" + "ab" * 20
PAY_TO = "0x" + "cd" * 20
PRICE = 10_000
CHUNK = 64 * 1024
SMALL = json.dumps({"ok": True, "data": "the resource"}).encode()


# ------------------------------------------------------------------------------------------ servers


def upstream_app(mb: int) -> Any:
    chunk = b"x" * CHUNK
    count = mb * 1024 * 1024 // CHUNK

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        if scope["path"] == "/stream":
            await send({"type": "http.response.start", "status": 200,
                        "headers": [(b"content-type", b"application/octet-stream")]})
            for _ in range(count):
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
            await send({"type": "http.response.body", "body": b""})
            return
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(SMALL)).encode())]})
        await send({"type": "http.response.body", "body": SMALL})

    return app


def plain_proxy_app(upstream: str) -> Any:
    """The anchor: stream the request and the answer through httpx, drop hop-by-hop headers, nothing else."""
    client = httpx.AsyncClient(base_url=upstream, timeout=60, limits=httpx.Limits(max_keepalive_connections=64))
    hop = {b"connection", b"keep-alive", b"transfer-encoding", b"te", b"upgrade", b"host"}

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        headers = [(k, v) for k, v in scope["headers"] if k.lower() not in hop]
        qs = scope.get("query_string", b"").decode()
        req = client.build_request(scope["method"], scope["path"] + (f"?{qs}" if qs else ""), headers=headers)
        resp = await client.send(req, stream=True)
        try:
            await send({"type": "http.response.start", "status": resp.status_code,
                        "headers": [(k, v) for k, v in resp.headers.raw if k.lower() not in hop]})
            async for part in resp.aiter_raw():
                await send({"type": "http.response.body", "body": part, "more_body": True})
            await send({"type": "http.response.body", "body": b""})
        finally:
            await resp.aclose()

    return app


def _serve(role: str, args: dict[str, Any], conn: Any) -> None:
    from paywire.serving import serve_asgi

    async def main() -> None:
        if role == "facilitator":
            sys.path.insert(0, str(ROOT / "bench"))
            from seller import serve_instant_facilitator

            serving = serve_instant_facilitator(args["net"])
        else:
            serving = serve_asgi(upstream_app(args["mb"]) if role == "upstream" else plain_proxy_app(args["url"]))
        async with serving as url:
            conn.send(url)
            await asyncio.to_thread(conn.recv)

    with contextlib.suppress(EOFError, KeyboardInterrupt):
        asyncio.run(main())


class Child:
    def __init__(self, role: str, **args: Any) -> None:
        ctx = multiprocessing.get_context("spawn")
        self._conn, child = ctx.Pipe()
        self._proc = ctx.Process(target=_serve, args=(role, args, child), daemon=True)
        self._proc.start()
        if not self._conn.poll(120):
            raise RuntimeError(f"{role} did not start")
        self.url: str = self._conn.recv()
        self.pid = self._proc.pid

    def stop(self) -> None:
        with contextlib.suppress(Exception):
            self._conn.send("stop")
        self._proc.join(10)
        if self._proc.is_alive():
            self._proc.kill()


@contextlib.contextmanager
def paywire_proxy(upstream: str, facilitator: str, tmp: str, client: str) -> Any:
    config = Path(tmp) / f"paywire-{client}.toml"
    config.write_text(f"""
[proxy]
upstream = "{upstream}"
listen = "127.0.0.1:0"
identity_secret = "{SECRET}"
unpriced = "forward"
upstream_client = "{client}"

[[proxy.routes]]
path = "GET /paid"
price = {PRICE}
asset = "{TOKEN}"
extra = {{ name = "Bench Coin", version = "1" }}

[seller]
facilitator = "{facilitator}"
pay_to = "{PAY_TO}"
network = "{NETWORK}"
store = "sqlite:///{Path(tmp) / f'proxy-{client}.db'}"
""")
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src") + os.pathsep + os.environ.get("PYTHONPATH", "")}
    proc = subprocess.Popen([sys.executable, "-c", "from paywire.cli.main import main; main()", "proxy",
                             "--config", str(config)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env,
                            text=True)
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        if "listening on" not in line:
            raise RuntimeError(f"paywire proxy did not start: {line} {proc.stderr.read() if proc.stderr else ''}")
        yield line.split("listening on ")[1].split()[0], proc.pid
    finally:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()


# ------------------------------------------------------------------------------------------ measuring


async def signed_headers(n: int, payer_key: str) -> list[str]:
    from paywire.evm.signer import LocalSigner
    from paywire.schemes.evm_exact import ExactEvmClient
    from paywire.x402.codec import encode_payment_payload
    from paywire.x402.models import PaymentPayload, PaymentRequirements

    offer = PaymentRequirements(scheme="exact", network=NETWORK, amount=PRICE, asset=TOKEN, pay_to=PAY_TO,
                                max_timeout_seconds=60, extra={"name": "Bench Coin", "version": "1"})
    client = ExactEvmClient(LocalSigner(payer_key))
    out = []
    for _ in range(n):
        inner = await client.create_payload(offer)
        out.append(encode_payment_payload(PaymentPayload(x402_version=2, accepted=offer, payload=inner)))
    return out


async def timed(http: httpx.AsyncClient, url: str, headers: dict[str, str] | None = None) -> float:
    t0 = time.perf_counter()
    r = await http.get(url, headers=headers)
    dt = time.perf_counter() - t0
    if r.status_code != 200:
        raise RuntimeError(f"GET {url}: {r.status_code} {r.text[:200]}")
    return dt


_FAC_CLIENTS: dict[str, Any] = {}


def payment_objects(header: str) -> tuple[Any, Any, str, str]:
    """The decoded payment of a ``PAYMENT-SIGNATURE`` header as the seller flow holds it when it calls the
    facilitator: the payload and requirements models and their compact JSON texts (the ledger's columns)."""
    from paywire.x402.codec import decode_payment_signature

    payload = decode_payment_signature(header)
    requirements = payload.accepted
    compact = {"separators": (",", ":")}
    return payload, requirements, json.dumps(payload.to_wire(), **compact), json.dumps(requirements.to_wire(),
                                                                                       **compact)


async def facilitator_round_trips(url: str, payment: tuple[Any, Any, str, str]) -> float:
    """What the paid request's two facilitator calls cost on their own, client side included: the seller's own
    facilitator client (``HttpFacilitatorClient``) from the decoded payment to the parsed answers — the request
    body's JSON, the HTTP exchanges, the answers' JSON and models. Decoding the payment header and the ledger's
    JSON are the seller flow's work and stay in the paid figure."""
    from paywire.facilitator.client import HttpFacilitatorClient

    client = _FAC_CLIENTS.get(url)
    if client is None:
        client = _FAC_CLIENTS[url] = HttpFacilitatorClient(url)
    payload, requirements, payload_json, requirements_json = payment
    t0 = time.perf_counter()
    client.prime(payload, requirements, payload_json, requirements_json)
    verdict = await client.verify(payload, requirements)
    settled = await client.settle(payload, requirements)
    dt = time.perf_counter() - t0
    if not verdict.is_valid or not settled.success:
        raise RuntimeError(f"facilitator double refused: {verdict} {settled}")
    return dt


async def round_trips_cpu(url: str, headers: list[str]) -> float:
    """CPU milliseconds this process (on the proxy's event loop kind) spends per pair of facilitator round trips,
    the seller's client from decoded payment to parsed answers: "the payment's own verify/settle round trips"."""
    payments = [payment_objects(h) for h in headers]
    t0 = time.process_time()
    for payment in payments:
        await facilitator_round_trips(url, payment)
    return (time.process_time() - t0) / len(headers) * 1000


async def ledger_cpu(tmp: str, n: int) -> float:
    """CPU milliseconds per payment of the seller ledger's own writes, as the flow makes them for a settle="after"
    request (the claim once /verify passed, settling with the response, served: three autocommits), on a SQLite file like
    the proxy's: the part of the paid route's cost that is the ledger's durability."""
    from paywire.store.payments import NewPayment, PaymentStore, StoredResponse, response_fields

    store = await PaymentStore.open(f"sqlite:///{Path(tmp) / 'ledger-bench.db'}")
    response = response_fields(StoredResponse(200, (("content-type", "application/json"),), SMALL))
    payload = json.dumps({"x402Version": 2, "payload": {"signature": "0x" + "ab" * 65}})
    try:
        await store.migrate()
        t0 = time.process_time()
        for i in range(n):
            new = NewPayment(f"auth-{i}", None, f"hash-{i}", "GET /paid", "GET", "/paid", "after", 2, "exact",
                             NETWORK, TOKEN, PAY_TO, PRICE, 6, "0x" + "ef" * 20, payload, payload)
            rec = await store.claim(new, "bench", 30.0, "claimed")
            assert rec is not None
            await store.update(rec.id, "bench", ["claimed"], state="settling", **response)
            await store.update(rec.id, "bench", ["settling"], state="served", owner=None, tx="0x" + "12" * 32)
        return (time.process_time() - t0) / n * 1000
    finally:
        await store.aclose()


async def stream_rate(http: httpx.AsyncClient, url: str) -> float:
    t0 = time.perf_counter()
    size = 0
    async with http.stream("GET", url) as r:
        async for part in r.aiter_raw():
            size += len(part)
    return size / (time.perf_counter() - t0) / 1e6


def cpu_seconds(pid: int | None) -> float:
    """User + system CPU time a process has used so far (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def cpu_per_request(http: httpx.AsyncClient, pid: int | None, url: str, n: int,
                          headers: list[str] | None = None) -> float:
    """CPU milliseconds the process ``pid`` spends per request to ``url`` (a contention-proof cost)."""
    t0 = cpu_seconds(pid)
    for i in range(n):
        await timed(http, url, {"PAYMENT-SIGNATURE": headers[i]} if headers else None)
    return (cpu_seconds(pid) - t0) / n * 1000


def peak_rss_mb(pid: int) -> float:
    with contextlib.suppress(OSError):
        status = Path(f"/proc/{pid}/status").read_text()
        return int(next(x for x in status.splitlines() if x.startswith("VmHWM:")).split()[1]) / 1024
    return float("nan")


async def run(args: argparse.Namespace) -> dict[str, Any]:
    from paywire.evm.signer import LocalSigner

    payer = LocalSigner.generate()
    payer_key = "0x" + payer.private_key.hex() if isinstance(payer.private_key, bytes) else str(payer.private_key)
    net = {"network": NETWORK, "token": TOKEN, "payee": PAY_TO, "payer_key": payer_key,
           "token_name": "Bench Coin", "token_version": "1", "rpc_url": "", "facilitator_key": payer_key}
    children = [Child("upstream", mb=args.mb)]
    try:
        upstream = children[0].url
        children.append(Child("plain", url=upstream))
        children.append(Child("facilitator", net=net))
        plain, fac = children[1].url, children[2].url
        with tempfile.TemporaryDirectory() as tmp, paywire_proxy(upstream, fac, tmp, "h11") as (proxy, pid), \
                paywire_proxy(upstream, fac, tmp, "httpx") as (proxy_httpx, _):
            headers = await signed_headers(2 * (args.n + args.warmup) + args.cpu_n, payer_key)
            payments = [payment_objects(h) for h in headers[:args.n + args.warmup]]
            lat: dict[str, list[float]] = {k: [] for k in (
                "direct", "plain proxy (httpx)", "paywire proxy, free route", "paywire proxy, free route (httpx)",
                "paywire proxy, paid route", "paywire proxy, paid route (httpx)", "facilitator round trips")}
            async with httpx.AsyncClient(timeout=60) as http:
                for i in range(args.n + args.warmup):
                    sample = [
                        await timed(http, upstream + "/small"),
                        await timed(http, plain + "/small"),
                        await timed(http, proxy + "/small"),
                        await timed(http, proxy_httpx + "/small"),
                        await timed(http, proxy + "/paid", {"PAYMENT-SIGNATURE": headers[2 * i]}),
                        await timed(http, proxy_httpx + "/paid", {"PAYMENT-SIGNATURE": headers[2 * i + 1]}),
                        await facilitator_round_trips(fac, payments[i]),
                    ]
                    if i >= args.warmup:
                        for key, value in zip(lat, sample, strict=True):
                            lat[key].append(value)
                rates: dict[str, list[float]] = {"direct": [], "plain proxy (httpx)": [], "paywire proxy": [],
                                                 "paywire proxy (httpx)": []}
                await stream_rate(http, proxy + "/stream")  # warm-up
                await stream_rate(http, proxy_httpx + "/stream")
                for _ in range(args.runs):
                    rates["direct"].append(await stream_rate(http, upstream + "/stream"))
                    rates["plain proxy (httpx)"].append(await stream_rate(http, plain + "/stream"))
                    rates["paywire proxy"].append(await stream_rate(http, proxy + "/stream"))
                    rates["paywire proxy (httpx)"].append(await stream_rate(http, proxy_httpx + "/stream"))
                cpu = {
                    "plain proxy (httpx), free route": await cpu_per_request(http, children[1].pid, plain + "/small",
                                                                              args.cpu_n),
                    "paywire proxy, free route": await cpu_per_request(http, pid, proxy + "/small", args.cpu_n),
                    "paywire proxy, paid route": await cpu_per_request(http, pid, proxy + "/paid", args.cpu_n,
                                                                       headers[-args.cpu_n:]),
                    "facilitator round trips (client side)": await round_trips_cpu(fac, headers[:args.cpu_n]),
                    "ledger writes of one payment (3 commits)": await ledger_cpu(tmp, args.cpu_n),
                }
                stream_cpu = {}
                for name, target, who in (("plain proxy (httpx)", plain, children[1].pid),
                                          ("paywire proxy", proxy, pid)):
                    t0 = cpu_seconds(who)
                    await stream_rate(http, target + "/stream")
                    stream_cpu[name] = (cpu_seconds(who) - t0) / args.mb
            peak = peak_rss_mb(pid)
    finally:
        for child in children:
            child.stop()
    med = {k: statistics.median(v) * 1000 for k, v in lat.items()}
    best = {k: max(v) for k, v in rates.items()}
    return {
        "n": args.n, "mb": args.mb, "runs": args.runs, "median_ms": med, "stream_mb_s": best, "cpu_ms": cpu,
        "stream_cpu_ms_per_mb": {k: v * 1000 for k, v in stream_cpu.items()},
        "added_free_cpu_ms": cpu["paywire proxy, free route"],
        "added_paid_cpu_ms": cpu["paywire proxy, paid route"] - cpu["facilitator round trips (client side)"],
        "paid_cpu_beyond_free_and_ledger_ms": cpu["paywire proxy, paid route"] - cpu["paywire proxy, free route"]
        - cpu["facilitator round trips (client side)"] - cpu["ledger writes of one payment (3 commits)"],
        "added_free_ms": med["paywire proxy, free route"] - med["direct"],
        "added_free_httpx_ms": med["paywire proxy, free route (httpx)"] - med["direct"],
        "added_plain_ms": med["plain proxy (httpx)"] - med["direct"],
        "added_paid_ms": med["paywire proxy, paid route"] - med["direct"] - med["facilitator round trips"],
        "throughput_ratio": best["paywire proxy"] / best["direct"],
        "throughput_ratio_httpx": best["paywire proxy (httpx)"] / best["direct"],
        "throughput_ratio_plain": best["plain proxy (httpx)"] / best["direct"],
        "proxy_peak_rss_mb": peak,
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}",
        "load": os.getloadavg()[0],
    }


AIMS = (
    ("added_free_ms", "added latency per request, free route, wall clock (ms)"),
    ("added_free_cpu_ms", "added latency per request, free route, CPU (ms)"),
    ("added_paid_ms", "added latency per paid request apart from verify/settle round trips, wall clock (ms)"),
    ("added_paid_cpu_ms", "added latency per paid request apart from verify/settle round trips, CPU (ms)"),
    ("throughput_ratio", "streamed throughput vs direct"),
)
HIGHER = {"throughput_ratio"}


async def rounds(args: argparse.Namespace) -> dict[str, Any]:
    """``--rounds`` whole runs, each with fresh processes; every aim is the median of its per-round values (the
    last round's tables are printed)."""
    done = [await run(args) for _ in range(args.rounds)]
    res = dict(done[-1])
    for key, _ in AIMS:
        res[key] = statistics.median(r[key] for r in done)
    res["rounds"] = [{key: r[key] for key, _ in AIMS} for r in done]
    return res


def report(res: dict[str, Any]) -> None:
    print(f"paywire proxy vs direct vs a plain httpx reverse proxy — {res['n']} interleaved requests per target "
          f"(medians), {res['mb']} MB streamed best of {res['runs']}; {res['machine']}; load {res['load']:.2f}")
    print(f"{'target':<38}{'median ms':>12}")
    for k, v in res["median_ms"].items():
        print(f"{k:<38}{v:>12.3f}")
    print(f"{'streamed GET':<38}{'MB/s':>12}")
    for k, v in res["stream_mb_s"].items():
        print(f"{k:<38}{v:>12.1f}")
    print(f"added by the plain httpx proxy (ms): {res['added_plain_ms']:.3f}; by paywire proxy on httpx: "
          f"{res['added_free_httpx_ms']:.3f}")
    print(f"throughput vs direct: plain httpx proxy {res['throughput_ratio_plain']:.2f}, paywire proxy on httpx "
          f"{res['throughput_ratio_httpx']:.2f}")
    print(f"{'proxy CPU per request':<38}{'ms':>12}")
    for k, v in res["cpu_ms"].items():
        print(f"{k:<38}{v:>12.3f}")
    print(f"{'proxy CPU per streamed MB':<38}{'ms':>12}")
    for k, v in res["stream_cpu_ms_per_mb"].items():
        print(f"{k:<38}{v:>12.3f}")
    print(f"paid route CPU beyond the free route, the round trips and the ledger (the seller flow's own work, ms): "
          f"{res['paid_cpu_beyond_free_and_ledger_ms']:.3f}")
    print(f"paywire proxy peak RSS (MB): {res['proxy_peak_rss_mb']:.1f}")
    print("wall clock = medians of interleaved requests (moves with the machine's load); CPU = the proxy process's "
          "user+system time per request, minus (paid) this process's CPU for the same two facilitator round trips "
          "(contention-proof: what the proxy adds on an idle machine, plus one loopback hop)")
    print()
    rounds = res["rounds"]
    print(f"each aim is the median of {len(rounds)} rounds, each with fresh processes (wall clock moves more between "
          "runs than within one); per round:")
    for key, name in AIMS:
        print(f"  {name}: " + ", ".join(f"{r[key]:.3f}" for r in rounds))
    for key, name in AIMS:
        sign = ">=" if key in HIGHER else "<="
        target = 0.8 if key in HIGHER else 1
        print(f"aim {name}: {res[key]:.{2 if key in HIGHER else 3}f} (target {sign} {target})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=300)
    parser.add_argument("--warmup", type=int, default=30)
    parser.add_argument("--mb", type=int, default=64)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--cpu-n", type=int, default=300, help="requests per CPU-cost measurement")
    parser.add_argument("--rounds", type=int, default=5, help="whole runs with fresh processes; aims are medians")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    from paywire.cli.output import loop_factory

    with asyncio.Runner(loop_factory=loop_factory()) as runner:  # the proxy's event loop (uvloop when installed)
        res = runner.run(rounds(args))
    if args.json:
        print(json.dumps(res, indent=2))
    else:
        report(res)


if __name__ == "__main__":
    main()
