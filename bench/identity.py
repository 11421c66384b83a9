"""Identity verification cost: Sign-In-With-X (EOA) and RFC 9421 Ed25519 agent signatures, ours vs the
reference implementations in the same run, and what a sign-in adds to a seller's paid round trip.

    python bench/identity.py [--n 300] [--n-rt 60] [--n-real 20] [--json]

* SIWX-EOA — ``SiwxIssuer.check`` (decode, EIP-4361 checks, nonce MAC, time window, personal_sign recovery)
  on ``--n`` fresh sign-ins, vs the official x402 SDK 2.25.0 ``sign_in_with_x`` server check
  (``parse_siwx_header`` + ``validate_siwx_message`` + ``verify_siwx_signature``) on the same headers, run in
  the SDK's own venv (``tests/peers``; it pins eth-account < 0.14, web3 < 8), built on first use.
* RFC 9421 — ``paywire.identity.agent.verify`` vs ``http-message-signatures`` 3.0.0's ``HTTPMessageVerifier``
  on the same Web Bot Auth requests, interleaved.
* Round trip — one seller (our ASGI middleware over real HTTP on 127.0.0.1, SQLite store): ``GET`` → 402 → sign
  → paid ``GET``, on a plain route and on a route with ``identity="siwx"`` (the client also signs in; the seller
  checks the sign-in), interleaved; medians of wall time, of CPU time (client, seller and facilitator share one
  process, so process CPU time is what the round trip costs, little affected by other load on the machine) and
  of the seller's own CPU time (measured around the middleware; it includes the facilitator's work, which runs
  meanwhile). Two lines:
  - strict: an instant facilitator double from bench/seller.py (``--n-rt`` per route), so the seller's and
    client's own work is the whole round trip and the sign-in's share is as large as it can be;
  - real: our facilitator (over HTTP) verifying and settling every payment on the embedded chain (``--n-real``
    per route; blocks are one second apart, so each round trip takes about a second), the payee's balance
    checked afterwards — the seller's real paid round trip.

Ends with ``aim`` lines: SIWX-EOA ours/official speed ratio (target >= 10); the whole sign-in's share of the
paid round trip in one-process CPU time (target <= 0.10: client signing and headers included); and the seller's
identity check alone (the seller's added CPU) as a share of the same round trip (target <= 0.10, the issue's
wording), each for both round-trip lines.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import gc
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "bench")]

import httpx  # noqa: E402

from paywire.evm.signer import LocalSigner  # noqa: E402
from paywire.identity.agent import TAG, AgentKey, verify  # noqa: E402
from paywire.identity.siwe import personal_sign_digest  # noqa: E402
from paywire.identity.siwx import SiwxIssuer, answer_challenge, encode_proof  # noqa: E402

URL, NET = "http://127.0.0.1:8080/report", "eip155:8453"


def siwx_headers(n: int) -> tuple[SiwxIssuer, list[str]]:
    issuer = SiwxIssuer(b"bench" * 8)
    out = []
    for _ in range(n):
        signer = LocalSigner.generate()
        ext = issuer.declaration(URL, [NET], time.time())
        payload, text = answer_challenge(ext, URL, signer.address, NET)
        out.append(encode_proof(payload, signer.sign_digest_sync(personal_sign_digest(text))))
    return issuer, out


def bench_siwx(n: int) -> dict[str, Any]:
    from tests.python_peers import SIWX_SCRIPT, siwx_python

    issuer, headers = siwx_headers(n)
    ours: list[float] = []
    gc.disable()
    for h in headers:
        t0 = time.perf_counter()
        issuer.check(h, URL, [NET], time.time())
        ours.append(time.perf_counter() - t0)
    gc.enable()
    out = subprocess.run([siwx_python(), str(SIWX_SCRIPT), "bench"], capture_output=True, text=True, timeout=600,
                         input=json.dumps({"headers": headers, "origin": "http://127.0.0.1:8080"}))
    if out.returncode != 0:
        raise RuntimeError(out.stderr[-2000:])
    theirs = json.loads(out.stdout)
    if theirs["valid"] != n:
        raise RuntimeError(f"the official SDK accepted {theirs['valid']} of {n} valid sign-ins")
    o, t = statistics.median(ours) * 1e6, statistics.median(theirs["seconds"]) * 1e6
    return {"ours_us": o, "official_us": t, "ratio": t / o, "n": n}


def bench_rfc9421(n: int) -> dict[str, Any]:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
    from http_message_signatures import HTTPMessageVerifier, MappingKeyResolver, algorithms

    key = AgentKey.generate("https://bot.example")
    reqs = [key.sign("GET", "https://api.example.com/report", {"payment-signature": "x" * 400}, time.time())
            | {"payment-signature": "x" * 400} for _ in range(n)]
    lowered = [{k.lower(): v for k, v in r.items()} for r in reqs]
    lib = HTTPMessageVerifier(signature_algorithm=algorithms.ED25519, key_resolver=MappingKeyResolver(
        public_keys={key.keyid: Ed25519PublicKey.from_public_bytes(key.public_key)}, private_keys={}))
    ours, theirs = [], []
    gc.disable()
    for r, low in zip(reqs, lowered, strict=True):
        t0 = time.perf_counter()
        ok = verify("GET", "https://api.example.com/report", low, key.public_key, time.time())
        t1 = time.perf_counter()
        lib.verify(httpx.Request("GET", "https://api.example.com/report", headers=r), expect_tag=TAG,
                   max_age=datetime.timedelta(seconds=300),
                   require_components=("@authority", "@method", "@path", "signature-agent", "payment-signature"))
        t2 = time.perf_counter()
        if not hasattr(ok, "keyid"):
            raise RuntimeError(f"our verifier refused a good signature: {ok}")
        ours.append(t1 - t0)
        theirs.append(t2 - t1)
    gc.enable()
    o, t = statistics.median(ours) * 1e6, statistics.median(theirs) * 1e6
    return {"ours_us": o, "http_message_signatures_us": t, "ratio": t / o, "n": n}


async def _round_trips(n: int, warmup: int, net: dict[str, Any], fac_url: str, store: str) -> dict[str, Any]:
    """``n`` interleaved pairs of paid round trips (plain route, ``identity="siwx"`` route) against one seller
    that uses the facilitator at ``fac_url``; medians of wall, one-process CPU and seller CPU time."""
    from seller import NetInfo, offer_of  # bench/seller.py

    from paywire.schemes.evm_exact import ExactEvmClient
    from paywire.server.asgi import PaymentMiddleware
    from paywire.server.core import PaidRoute
    from paywire.serving import serve_asgi
    from paywire.x402.codec import decode_payment_required, encode_payment_payload
    from paywire.x402.models import PaymentPayload

    payer = LocalSigner(net["payer_key"])
    offer = offer_of(NetInfo(**net))
    client = ExactEvmClient(payer)

    async def app(scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
        await send({"type": "http.response.body", "body": b"ok"})

    times: dict[str, list[float]] = {"plain": [], "siwx": []}
    cpus: dict[str, list[float]] = {"plain": [], "siwx": []}
    sellers: dict[str, list[float]] = {"plain": [], "siwx": []}
    mw = PaymentMiddleware(app, [PaidRoute("GET /plain", (offer,)), PaidRoute("GET /siwx", (offer,), identity="siwx")],
                           fac_url, store=store, siwx_secret=b"b" * 32)
    seller_cpu = [0.0]

    async def metered(scope: Any, receive: Any, send: Any) -> None:
        """The seller's own CPU time (the client waits on its socket meanwhile)."""
        c0 = time.process_time()
        try:
            await mw(scope, receive, send)
        finally:
            seller_cpu[0] += time.process_time() - c0

    async with serve_asgi(metered) as url, httpx.AsyncClient(timeout=60) as http:
        async def one(path: str) -> tuple[float, float, float]:
            t0, c0, s0 = time.perf_counter(), time.process_time(), seller_cpu[0]
            r = await http.get(url + path)
            pr = decode_payment_required(r.headers["payment-required"])
            inner = await client.create_payload(pr.accepts[0])
            headers = {"PAYMENT-SIGNATURE": encode_payment_payload(
                PaymentPayload(accepted=pr.accepts[0], payload=inner, resource=pr.resource))}
            if path == "/siwx":
                ext = (pr.extensions or {})["sign-in-with-x"]  # already decoded with the 402
                payload, text = answer_challenge(ext, url + path, payer.address, net["network"])
                headers["SIGN-IN-WITH-X"] = encode_proof(payload, await payer.sign_digest(personal_sign_digest(text)))
            r2 = await http.get(url + path, headers=headers)
            if r2.status_code != 200:
                raise RuntimeError(f"{path}: {r2.status_code} {r2.text[:200]}")
            return time.perf_counter() - t0, time.process_time() - c0, seller_cpu[0] - s0

        for i in range(n + warmup):
            for path in ("/plain", "/siwx") if i % 2 else ("/siwx", "/plain"):
                dt, cpu, seller = await one(path)
                if i >= warmup:
                    times[path[1:]].append(dt)
                    cpus[path[1:]].append(cpu)
                    sellers[path[1:]].append(seller)
    plain, signed = (statistics.median(times[k]) * 1000 for k in ("plain", "siwx"))
    plain_cpu, signed_cpu = (statistics.median(cpus[k]) * 1000 for k in ("plain", "siwx"))
    plain_seller, signed_seller = (statistics.median(sellers[k]) * 1000 for k in ("plain", "siwx"))
    return {"plain_ms": plain, "siwx_ms": signed, "added": (signed - plain) / plain, "plain_cpu_ms": plain_cpu,
            "siwx_cpu_ms": signed_cpu, "added_cpu": (signed_cpu - plain_cpu) / plain_cpu,
            "plain_seller_cpu_ms": plain_seller, "siwx_seller_cpu_ms": signed_seller,
            "added_seller_cpu": (signed_seller - plain_seller) / plain_seller,
            "check_share": (signed_seller - plain_seller) / plain_cpu, "n": n}


async def bench_round_trip(n: int) -> dict[str, Any]:
    """The strict line: an instant facilitator double (no chain), so the seller's and client's own work is all
    there is to the round trip and the sign-in's share is as large as it gets."""
    from seller import serve_instant_facilitator  # bench/seller.py

    payer = LocalSigner.generate()
    net = dict(network="eip155:31337", token="0x5FbDB2315678afecb367f032d93F642f64180aa3", token_name="USD Coin",
               token_version="2", payee=LocalSigner.generate().address, payer_key="0x" + payer.private_key.hex(),
               facilitator_key="0x" + LocalSigner.generate().private_key.hex(), rpc_url="http://127.0.0.1:9")
    with tempfile.TemporaryDirectory() as tmp:
        async with serve_instant_facilitator(net) as fac_url:
            return await _round_trips(n, 10, net, fac_url, f"sqlite:///{tmp}/seller.db")


async def bench_round_trip_real(n: int) -> dict[str, Any]:
    """The seller's real paid round trip: our facilitator (over HTTP) verifying and settling every payment on
    the embedded chain (py-evm, wall-clock blocks about one second apart), in this process; the payee's token
    balance is checked to have moved by every payment."""
    from seller import PRICE  # bench/seller.py

    from paywire.chain import EmbeddedChain, RpcChain
    from paywire.chain.tx import TxSender
    from paywire.devnet import setup_devnet
    from paywire.facilitator.app import create_app
    from paywire.facilitator.core import Facilitator
    from paywire.schemes.evm_exact import EvmNetwork, ExactEvmFacilitator
    from paywire.serving import serve_asgi

    backend = EmbeddedChain(chain_id=31337)
    chain = RpcChain(backend)
    try:
        dev = await setup_devnet(chain)
        i = dev.info
        net = dict(network=i.network, token=i.token, token_name=i.token_name, token_version=i.token_version,
                   payee=dev.payee.address, payer_key=i.payer_key, facilitator_key=i.facilitator_key,
                   rpc_url="http://127.0.0.1:9")
        fac = create_app(Facilitator([ExactEvmFacilitator([EvmNetwork(i.network, chain,
                                                                      [TxSender(chain, i.facilitator_key)])])]))
        before = await dev.token_balance(dev.payee.address)
        warmup = 2
        with tempfile.TemporaryDirectory() as tmp:
            async with serve_asgi(fac) as fac_url:
                res = await _round_trips(n, warmup, net, fac_url, f"sqlite:///{tmp}/seller.db")
        moved = await dev.token_balance(dev.payee.address) - before
        if moved != 2 * (n + warmup) * PRICE:
            raise RuntimeError(f"the payee received {moved}, not {2 * (n + warmup) * PRICE}")
        return res
    finally:
        await chain.aclose()
        backend.close()


def _rt_lines(title: str, rt: dict[str, Any]) -> None:
    print(f"paid round trip, {title}  (n={rt['n']} per route)")
    print(f"  wall                plain {rt['plain_ms']:8.2f} ms   with SIWX {rt['siwx_ms']:8.2f} ms   "
          f"(+{rt['added'] * 100:.1f} %)")
    print(f"  CPU (one process)   plain {rt['plain_cpu_ms']:8.2f} ms   with SIWX {rt['siwx_cpu_ms']:8.2f} ms   "
          f"(+{rt['added_cpu'] * 100:.1f} %)")
    print(f"  seller CPU only     plain {rt['plain_seller_cpu_ms']:8.2f} ms   with SIWX "
          f"{rt['siwx_seller_cpu_ms']:8.2f} ms   (+{rt['added_seller_cpu'] * 100:.1f} %)")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=300)
    ap.add_argument("--n-rt", type=int, default=60)
    ap.add_argument("--n-real", type=int, default=20, help="round trips per route settled on the embedded chain "
                    "(about one second each: blocks are one second apart)")
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args()
    res = {"siwx": bench_siwx(a.n), "rfc9421": bench_rfc9421(a.n), "round_trip": asyncio.run(bench_round_trip(a.n_rt)),
           "round_trip_real": asyncio.run(bench_round_trip_real(a.n_real))}
    if a.json:
        print(json.dumps(res, indent=2))
    s, r, rt, real = res["siwx"], res["rfc9421"], res["round_trip"], res["round_trip_real"]
    print(f"SIWX-EOA verify       ours {s['ours_us']:8.1f} us   official x402 2.25.0 {s['official_us']:8.1f} us   "
          f"x{s['ratio']:.1f}")
    print(f"RFC 9421 Ed25519      ours {r['ours_us']:8.1f} us   http-message-signatures {r['http_message_signatures_us']:8.1f}"
          f" us   x{r['ratio']:.1f}")
    _rt_lines("strict: instant facilitator double (no chain)", rt)
    _rt_lines("real: our facilitator settling on the embedded chain", real)
    print(f"aim siwx_eoa_speedup_vs_official: {s['ratio']:.1f} (target >= 10)")
    print("the sign-in's share (one-process CPU): _strict = against the instant facilitator double, "
          "_real = against our facilitator settling on the embedded chain")
    print(f"aim siwx_share_of_paid_round_trip_strict: {rt['added_cpu']:.3f} (target <= 0.10)")
    print(f"aim siwx_share_of_paid_round_trip_real: {real['added_cpu']:.3f} (target <= 0.10)")
    print("the seller's identity check alone (its added CPU: the sign-in 402, the check, naming the identity) as a "
          "share of the whole paid round trip's CPU; the lines above also count the client's signing and headers")
    print(f"aim identity_check_share_of_paid_round_trip_strict: {rt['check_share']:.3f} (target <= 0.10)")
    print(f"aim identity_check_share_of_paid_round_trip_real: {real['check_share']:.3f} (target <= 0.10)")


if __name__ == "__main__":
    main()
