"""Stress: settle N payments through a JSON-RPC proxy that stalls and drops calls (not a benchmark: a fault
run). Prints each outcome state, reasons, transactions per (signer, nonce), and the reconciler's actions.

    PYTHONPATH=src:. python bench/stall.py --n 150 --validity 90 --stall 3 --drop 0.1
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import json
import random
import tempfile
import time
from typing import Any

from starlette.responses import PlainTextResponse, Response

from paywire.chain import EmbeddedChain, HttpTransport, RpcChain
from paywire.devnet import setup_devnet
from paywire.serving import serve_asgi
from paywire.store.settlements import TABLE, SettlementStore
from tests.helpers import close_devnet, new_devnet, offer, payer_of, sign
from tests.test_facilitator_helpers import RpcProxy, authorization_uses, facilitator_with_store

SLOW = {"eth_sendRawTransaction", "eth_getTransactionReceipt", "eth_getTransactionByHash"}


class StallingProxy(RpcProxy):
    def __init__(self, upstream: Any, *, stall: float, p_stall: float, p_drop: float, rng: random.Random) -> None:
        super().__init__(upstream)
        self.stall, self.p_stall, self.p_drop, self.rng = stall, p_stall, p_drop, rng
        self.on = True

    async def _one_response(self, call: Any) -> Response:
        method = str(call.get("method"))
        self.calls[method] += 1
        if self.on and method in SLOW:
            r = self.rng.random()
            if r < self.p_drop:  # forward, then the answer is lost after a stall
                await self._one(call, allow_faults=True)
                await asyncio.sleep(self.stall)
                return PlainTextResponse("late", status_code=504)
            if r < self.p_drop + self.p_stall:  # stall, then answer
                await asyncio.sleep(self.rng.uniform(0, self.stall))
        return await super()._one_response(call)


async def main(a: argparse.Namespace) -> None:
    if a.anvil:
        net = await new_devnet("anvil")
        node: Any = HttpTransport(net.extra["anvil"].url, timeout=30)
    else:
        node = EmbeddedChain()
        net = await setup_devnet(RpcChain(node))
    proxy = StallingProxy(node, stall=a.stall, p_stall=a.p_stall, p_drop=a.drop, rng=random.Random(a.seed))
    tmp = tempfile.mkdtemp()
    store = await SettlementStore.open(f"sqlite:///{tmp}/s.db")
    async with serve_asgi(proxy.app()) as url:
        flaky = RpcChain(HttpTransport(url, timeout=a.rpc_timeout))
        fac = facilitator_with_store(net, store, chain=flaky, receipt_timeout=a.receipt_timeout)
        req = offer(net, 1_000, max_timeout_seconds=a.validity)
        payloads = [await sign(req, payer_of(net)) for _ in range(a.n)]
        before = await net.token_balance(net.payee.address)
        t0 = time.monotonic()
        sem = asyncio.Semaphore(a.concurrency)

        async def one(p: Any) -> Any:
            async with sem:
                return await fac.settle(p, req)

        answers = await asyncio.gather(*(one(p) for p in payloads))
        first = collections.Counter((r.success, r.error_reason, (r.error_message or "")[:80]) for r in answers)
        actions: collections.Counter[str] = collections.Counter()
        deadline = time.monotonic() + a.validity + 30
        while time.monotonic() < deadline:
            stats = await fac.reconcile_once()
            actions.update({k: v for k, v in stats.items() if v and k != "checked"})
            if not await store.open_rows(limit=1000):
                break
            await asyncio.sleep(1.0)
        proxy.on = False
        rows = [await store.get(s) for s in [r.id for r in await store.open_rows(limit=1000)]]
        finals = collections.Counter()
        reasons = collections.Counter()
        per_nonce = collections.Counter()
        examples: list[dict[str, Any]] = []
        import sqlite3
        db = sqlite3.connect(f"{tmp}/s.db")
        cols = [c[1] for c in db.execute(f"PRAGMA table_info({TABLE})")]
        for row in db.execute(f"SELECT * FROM {TABLE}"):
            d = dict(zip(cols, row, strict=True))
            finals[d["state"]] += 1
            if d["state"] != "settled":
                reasons[(d["state"], d.get("error_reason"), (d.get("error_message") or "")[:90])] += 1
            if d["error_reason"] == "transaction_failed" and len(examples) < 6:
                examples.append(d)
            per_nonce[len([h for h in (d["tx_hashes"] or "").split(",") if h])] += 1
        uses = collections.Counter()
        for p in payloads:
            uses[len(await authorization_uses(net, p))] += 1
        paid = await net.token_balance(net.payee.address) - before
        print(json.dumps({
            "n": a.n, "seconds": round(time.monotonic() - t0, 1), "first_answers": {str(k): v for k, v in first.items()},
            "final_states": finals, "reasons": {str(k): v for k, v in reasons.items()},
            "reconciler": actions, "uses_per_authorization": uses, "paid_units": paid // 1_000,
            "txs_per_settlement": per_nonce, "rpc_calls": proxy.calls, "left_open": len(rows),
        }, indent=1, default=str))
        for d in examples:
            for h in d["tx_hashes"].split(","):
                rc = await net.chain.request("eth_getTransactionReceipt", [h])
                tx = await net.chain.request("eth_getTransactionByHash", [h])
                blk = rc and await net.chain.request("eth_getBlockByNumber", [rc["blockNumber"], False])
                vb = int(json.dumps(json.loads(d["request"])).split('"validBefore": "')[1].split('"')[0])
                if blk:
                    print("mined_minus_validBefore_s", int(blk["timestamp"], 16) - vb)
                print("mined_after_s", blk and int(blk["timestamp"], 16) - d["created_at"], d["id"], d["created_at"], d["updated_at"], h, "nonce", tx and int(tx["nonce"], 16), "gas", tx and int(tx["gas"], 16),
                      "status", rc and rc["status"], "used", rc and int(rc["gasUsed"], 16), "block", rc and int(rc["blockNumber"], 16))
        await flaky.aclose()
    await store.aclose()
    await close_devnet(net)


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=150)
    ap.add_argument("--validity", type=int, default=90)
    ap.add_argument("--stall", type=float, default=3.0)
    ap.add_argument("--p-stall", type=float, default=0.3)
    ap.add_argument("--drop", type=float, default=0.1)
    ap.add_argument("--rpc-timeout", type=float, default=2.0)
    ap.add_argument("--receipt-timeout", type=float, default=10.0)
    ap.add_argument("--concurrency", type=int, default=50)
    ap.add_argument("--anvil", action="store_true")
    ap.add_argument("--seed", type=int, default=1)
    asyncio.run(main(ap.parse_args()))
