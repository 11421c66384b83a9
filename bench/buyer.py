"""Buyer latency: time from a 402 arriving to the signed retry leaving, paywire vs the official x402 client.

    python bench/buyer.py [--n 300] [--json]

Both clients are ``httpx.AsyncClient``s over an in-process transport that plays the server: it answers the
first request with a v2 402 (one ``exact`` offer in a $1 token on ``eip155:31337``) and the retry with 200 and
a ``PAYMENT-RESPONSE``. The clock starts when the 402 response is handed to the client and stops when the
retry carrying ``PAYMENT-SIGNATURE`` reaches the transport, so only client-side work is timed: parsing the
challenge, choosing the option, policy and budget work, EIP-712 signing, encoding the header. No network,
no chain. Same run, same offer, same key; the clients take turns in blocks of 20 requests.

* ``paywire (policy + SQLite ledger)`` — ``x402_client(wallet, Policy(max_per_payment, daily), store=SQLite)``:
  what an agent normally runs; includes the budget reservation transaction and the receipt row.
* ``paywire (no store)``               — the same client with receipts in memory and no budgets.
* ``official``                         — ``x402HttpxClient`` (``x402Client`` + ``ExactEvmScheme``, spend controls
  allowing the token), as installed here; its signer is eth-account (eth_keys backend printed).

Prints medians, p90 and ``ratio official/paywire`` (> 1: paywire is faster) for both paywire lines.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import statistics
import tempfile
import time
from collections.abc import Callable
from typing import Any

import httpx

TOKEN = "0x5FbDB2315678afecb367f032d93F642f64180aa3"
PAY_TO = "0x70997970C51812dc3A010C7d01b50e0d17dc79C8"
NETWORK = "eip155:31337"
KEY = "0xac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80"


def challenge_header() -> str:
    from paywire.x402.codec import encode_header

    return encode_header({
        "x402Version": 2, "error": "Payment required",
        "resource": {"url": "http://bench.local/paid", "description": "bench", "mimeType": "application/json"},
        "accepts": [{"scheme": "exact", "network": NETWORK, "amount": "10000", "asset": TOKEN, "payTo": PAY_TO,
                     "maxTimeoutSeconds": 60, "extra": {"name": "USD Coin", "version": "2"}}],
    })


SETTLED = None


class Stage(httpx.AsyncBaseTransport):
    """Plays the server; records 402-handed-out → signed-retry-arrived per request."""

    def __init__(self) -> None:
        from paywire.x402.codec import encode_header

        self.challenge = challenge_header()
        self.settled = encode_header({"success": True, "transaction": "0x" + "ab" * 32, "network": NETWORK})
        self.samples: list[float] = []
        self._t0 = 0.0

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if "payment-signature" in request.headers:
            self.samples.append(time.perf_counter() - self._t0)
            return httpx.Response(200, headers={"PAYMENT-RESPONSE": self.settled}, content=b"{}")
        response = httpx.Response(402, headers={"PAYMENT-REQUIRED": self.challenge, "content-type": "application/json"},
                                  content=b"{}")
        self._t0 = time.perf_counter()
        return response


def paywire_client(stage: Stage, store: str | None) -> httpx.AsyncClient:
    from paywire.client import Buyer, PaymentTransport, Policy
    from paywire.evm.assets import Asset
    from paywire.wallet import Wallet

    asset = Asset(NETWORK, TOKEN, "USD Coin", "2")
    if store:
        policy = Policy(max_per_payment="$0.10", daily="$1000", assets=[asset])
    else:
        policy = Policy(assets=[asset])
    buyer = Buyer(Wallet.from_key(KEY), policy, store=store)
    return httpx.AsyncClient(transport=PaymentTransport(buyer, stage))


def official_client(stage: Stage) -> httpx.AsyncClient:
    from eth_account import Account
    from x402 import x402Client
    from x402.http.clients.httpx import x402AsyncTransport
    from x402.mechanisms.evm.exact import ExactEvmScheme
    from x402.mechanisms.evm.signers import EthAccountSigner

    client = x402Client()
    client.register(NETWORK, ExactEvmScheme(EthAccountSigner(Account.from_key(KEY))))
    client.set_spend_controls({"allowed_assets": [{"network": NETWORK, "asset": TOKEN}]})
    return httpx.AsyncClient(transport=x402AsyncTransport(client, transport=stage))


async def run(n: int, block: int = 20) -> dict[str, Any]:
    tmp = tempfile.mkdtemp(prefix="paywire-bench-")
    stages = {"paywire (policy + SQLite ledger)": Stage(), "paywire (no store)": Stage(), "official": Stage()}
    makers: dict[str, Callable[[Stage], httpx.AsyncClient]] = {
        "paywire (policy + SQLite ledger)": lambda s: paywire_client(s, f"sqlite:///{tmp}/bench.db"),
        "paywire (no store)": lambda s: paywire_client(s, None),
        "official": official_client,
    }
    clients = {name: makers[name](stage) for name, stage in stages.items()}
    for name, c in clients.items():  # warm-up
        for _ in range(10):
            assert (await c.get("http://bench.local/paid")).status_code == 200, name
        stages[name].samples.clear()
    start = time.perf_counter()
    done = 0
    while done < n:
        for c in clients.values():
            for _ in range(min(block, n - done)):
                r = await c.get("http://bench.local/paid")
                assert r.status_code == 200
        done += block
    elapsed = time.perf_counter() - start
    for c in clients.values():
        await c.aclose()
    result: dict[str, Any] = {"n": n, "elapsed_s": round(elapsed, 2), "lines": {}}
    for name, stage in stages.items():
        s = sorted(stage.samples)
        result["lines"][name] = {"median_ms": statistics.median(s) * 1e3, "p90_ms": s[int(len(s) * 0.9)] * 1e3,
                                 "mean_ms": statistics.fmean(s) * 1e3, "samples": len(s)}
    off = result["lines"]["official"]["median_ms"]
    for name in ("paywire (policy + SQLite ledger)", "paywire (no store)"):
        result["lines"][name]["ratio_official_over_paywire"] = off / result["lines"][name]["median_ms"]
    return result


def backend() -> str:
    from eth_keys.backends import get_backend

    return type(get_backend()).__name__


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=300, help="paid requests per client (default 300)")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    import x402

    result = asyncio.run(run(args.n))
    result.update(machine=f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}",
                  x402=getattr(x402, "__version__", "2.25.0"), official_ecc_backend=backend(),
                  load_1min=os.getloadavg()[0])
    if args.json:
        print(json.dumps(result, indent=2))
        return
    print(f"402 → signed retry, client side only — {args.n} paid requests per client, same run; "
          f"{result['machine']}; x402 {result['x402']} (eth_keys {result['official_ecc_backend']})")
    print(f"{'client':36} {'median ms':>10} {'p90 ms':>8} {'mean ms':>8}")
    for name, line in result["lines"].items():
        print(f"{name:36} {line['median_ms']:10.3f} {line['p90_ms']:8.3f} {line['mean_ms']:8.3f}")
    for name in ("paywire (policy + SQLite ledger)", "paywire (no store)"):
        print(f"ratio official/paywire, {name}: {result['lines'][name]['ratio_official_over_paywire']:.2f}")
    print(f"elapsed: {result['elapsed_s']} s; load average (1 min): {result['load_1min']:.2f}")
    ledger = result["lines"]["paywire (policy + SQLite ledger)"]["ratio_official_over_paywire"]
    print(f"aim ledger_ratio_official_over_paywire: {ledger:.2f} (target >= 1.0)")


if __name__ == "__main__":
    main()
