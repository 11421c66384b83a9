"""A fleet on one PostgreSQL: two audited seller replicas and two audited facilitator instances, each replica
running its own sequencer (one integrates at a time: advisory lock), a witness cosigning every checkpoint, and
paid traffic with replays (one payment sent to both replicas at once) and failures (handler errors, unfunded
payers). Afterwards every ledger row's events form one unbroken chain of states ending in the row's state (a
change without its event, or an event twice, breaks it), sequence numbers have no gaps, every checkpoint is
cosigned, and ``verify`` passes (issue 12, "Done means": concurrency).

The replicas are in-process (own servers, own connection pools, own sequencers) to keep CI lean; the requests
default to 120 (``PAYWIRE_FLEET_REQUESTS=500`` runs the issue's full count)."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import os
import random
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import httpx
import pytest
import pytest_asyncio
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from paywire.audit.note import COSIGNATURE_V1, Signer
from paywire.audit.ops import verify_store
from paywire.audit.sequencer import CheckpointPolicy, Sequencer
from paywire.audit.store import COSIGNATURES, LOG, QUEUE, AuditStore, signed_checkpoint_size
from paywire.audit.wiring import enable_audit
from paywire.audit.witness_core import WitnessState, check_and_cosign
from paywire.devnet import Devnet
from paywire.evm.assets import AssetRegistry
from paywire.evm.signer import LocalSigner
from paywire.facilitator.app import create_app
from paywire.facilitator.client import HttpFacilitatorClient
from paywire.facilitator.core import Facilitator
from paywire.server.asgi import PaymentMiddleware
from paywire.server.core import PaidRoute
from paywire.server.pricing import Offer
from paywire.serving import serve_asgi
from paywire.store.settlements import SettlementStore
from paywire.x402.codec import decode_payment_required, encode_payment_payload
from tests.helpers import close_devnet, new_devnet, payer_of, sign
from tests.test_facilitator_helpers import facilitator_with_store
from tests.test_facilitator_settle import KEYS

pytestmark = [pytest.mark.postgres, pytest.mark.asyncio(loop_scope="module")]

PRICE = 1_000
ORIGIN = "paywire.example/fleet"
REQUESTS = int(os.environ.get("PAYWIRE_FLEET_REQUESTS", "120"))


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def net() -> AsyncIterator[Devnet]:
    n = await new_devnet("embedded")
    yield n
    await close_devnet(n)


@dataclass
class Witness:
    """Cosigns every stored checkpoint, in order, after checking its consistency with the last one."""

    store: AuditStore
    log_key: Signer
    key: Signer = field(default_factory=lambda: Signer.generate("witness.example/w1", sig_type=COSIGNATURE_V1))
    state: WitnessState | None = None
    cosigned: int = 0

    async def catch_up(self) -> None:
        for note in await self.store.checkpoints():
            size = signed_checkpoint_size(note)
            old = self.state.size if self.state else 0
            if size <= old and self.state is not None:
                continue
            proof = await self.store.consistency_proof(old, size) if 0 < old < size else []
            done = await check_and_cosign(note, proof, state=self.state, log_keys=[self.log_key.verifier],
                                          signer=self.key, origin=ORIGIN, now=int(time.time()))
            self.state = done.state
            self.cosigned += await self.store.add_cosignatures(size, [done.signature])

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            await self.catch_up()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), 0.1)


def _app(runs: dict[str, int]) -> Starlette:
    async def ok(request: Request) -> Response:
        runs["ok"] += 1
        return JSONResponse({"paid": True})

    async def broken(request: Request) -> Response:
        runs["fail"] += 1
        return JSONResponse({"error": "broken"}, status_code=500)

    return Starlette(routes=[Route("/ok", ok), Route("/fail", broken)])


async def _chains(db: AuditStore, component: str, key: str) -> dict[str, list[tuple[str | None, str]]]:
    """(previous, state) of every logged event of ``component``, per row, in log order."""
    out: dict[str, list[tuple[str | None, str]]] = {}
    async for row in db.entries():
        event = json.loads(row.entry)["event"]
        if event["component"] == component and key in event["subject"]:  # not the per-interval tallies
            out.setdefault(str(event["subject"][key]), []).append((event["previous"], event["data"]["state"]))
    return out


def _unbroken(chain: list[tuple[str | None, str]]) -> bool:
    """Each event leaves the state the one before it reached; the first one starts from nothing."""
    return chain[0][0] is None and all(prev == before[1] for before, (prev, _) in itertools.pairwise(chain))


async def test_two_sellers_two_facilitators_one_log(net: Devnet, pg_url: str) -> None:
    log_key = Signer.generate(ORIGIN)
    runs = {"ok": 0, "fail": 0}
    fac_stores = [await SettlementStore.open(pg_url, instance_id=f"fac-{n}") for n in "ab"]
    audit_stores = [await AuditStore.open(pg_url) for _ in range(2)]
    for st in fac_stores:
        await enable_audit(st, "facilitator", st.instance_id)
    a = net.asset
    routes = [PaidRoute("GET /ok", offers=(Offer(price=PRICE, asset=a),)),
              PaidRoute("GET /fail", offers=(Offer(price=PRICE, asset=a),))]
    stop = asyncio.Event()
    witness = Witness(audit_stores[0], log_key)
    policy = CheckpointPolicy(every_entries=64, every_seconds=0.3)
    background = [asyncio.ensure_future(Sequencer(s, log_key, policy=policy, batch=50).run(stop, idle=0.05))
                  for s in audit_stores]
    background.append(asyncio.ensure_future(witness.run(stop)))
    sellers: list[PaymentMiddleware] = []
    status: dict[str, int] = {}
    try:
        async with contextlib.AsyncExitStack() as stack:
            fac_urls = [await stack.enter_async_context(serve_asgi(create_app(Facilitator(
                [facilitator_with_store(net, st, keys=[KEYS[6 + i]])], store=st))))
                for i, st in enumerate(fac_stores)]
            for i, fac_url in enumerate(fac_urls):
                sellers.append(PaymentMiddleware(_app(runs), routes, HttpFacilitatorClient(fac_url), store=pg_url,
                                                 assets=AssetRegistry((a,)), pay_to=net.payee.address,
                                                 audit=f"seller-{'ab'[i]}"))
            urls = [await stack.enter_async_context(serve_asgi(s)) for s in sellers]
            http = await stack.enter_async_context(httpx.AsyncClient(timeout=120))
            offer = None

            async def header(signer: LocalSigner) -> str:
                nonlocal offer
                if offer is None:
                    r = await http.get(urls[0] + "/ok")
                    offer = decode_payment_required(r.headers["payment-required"]).accepts[0]
                return encode_payment_payload(await sign(offer, signer))

            rng = random.Random(12)
            plan = []  # (kind, path) per payment; replays count two requests
            sent = 0
            while sent < REQUESTS:
                kind = rng.choices(["pay", "replay", "fail", "unfunded"], [6, 2, 1, 1])[0]
                plan.append(kind)
                sent += 2 if kind == "replay" else 1

            async def one(i: int, kind: str) -> None:
                if kind == "unfunded":
                    signer = LocalSigner(bytes([1 + i % 200]) * 32)
                    r = await http.get(urls[i % 2] + "/ok", headers={"PAYMENT-SIGNATURE": await header(signer)})
                    status[f"{i}"] = r.status_code
                    return
                h = await header(payer_of(net))
                path = "/fail" if kind == "fail" else "/ok"
                if kind == "replay":
                    got = await asyncio.gather(*(http.get(u + path, headers={"PAYMENT-SIGNATURE": h}) for u in urls))
                    status[f"{i}"], status[f"{i}r"] = (g.status_code for g in got)
                else:
                    status[f"{i}"] = (await http.get(urls[i % 2] + path, headers={"PAYMENT-SIGNATURE": h})).status_code

            for lo in range(0, len(plan), 8):
                await asyncio.gather(*(one(i, plan[i]) for i in range(lo, min(lo + 8, len(plan)))))
    finally:
        stop.set()
        await asyncio.gather(*background)
        for s in sellers:
            await s.flow.aclose()
    store = audit_stores[0]
    try:
        final = Sequencer(store, log_key, policy=policy)
        await final.drain()
        await final.integrate(force_checkpoint=True)
        await witness.catch_up()

        pays, replays = plan.count("pay"), plan.count("replay")
        fails, unfunded = plan.count("fail"), plan.count("unfunded")
        assert sum(1 for k, v in status.items() if v == 200) == pays + 2 * replays, \
            f"every good payment and both copies of each replay were answered 200: {status}"
        assert runs["ok"] == pays + replays, f"one handler run per paid payment, replays included: {runs}"
        assert runs["fail"] == fails, f"the failing handler ran once per payment: {runs}"
        assert await store.queued() == 0, "the sequencers drained the queue"

        n = await store.db.fetchone(f"SELECT COUNT(*) AS n, MIN(seq) AS lo, MAX(seq) AS hi FROM {LOG}")
        assert n is not None and n["lo"] == 0 and n["hi"] == n["n"] - 1, f"sequence numbers have no gaps: {n}"

        seller = await _chains(store, "seller", "record")
        broken = {k: c for k, c in seller.items() if not _unbroken(c)}
        assert not broken, f"every seller row's events form one chain of states: {broken}"
        rows = {str(r["id"]): str(r["state"]) for r in
                await store.db.fetchall("SELECT id, state FROM seller_payments")}
        assert all(seller[k][-1][1] == st for k, st in rows.items()), "each row ends in its latest event's state"
        ends = [c[-1][1] for c in seller.values()]
        assert ends.count("served") == pays + replays, f"one served chain per paid payment: {ends}"
        assert ends.count("failed") == fails, "one failed chain per handler error"
        assert unfunded > 0 and ends.count("deleted") == 0 and len(seller) == pays + replays + fails, \
            f"an unfunded payment is refused at /verify before any claim: no row, no event ({unfunded} sent)"
        assert all(len(c) == 3 for c in seller.values() if c[-1][1] == "served"), \
            "a served payment has exactly 3 events (claimed, settling, served)"

        settlements = await _chains(store, "facilitator", "settlement_id")
        assert all(_unbroken(c) for c in settlements.values()), "every settlement's events form one chain"
        assert sorted(len(c) for c in settlements.values()) == [3] * (pays + replays), \
            "one settlement per paid payment, each with exactly 3 events (claimed, tx recorded, settled)"

        checkpoints = len(await store.checkpoints())
        cosigs = await store.db.fetchone(f"SELECT COUNT(*) AS n FROM {COSIGNATURES}")
        assert checkpoints > 2, f"the sequencers signed checkpoints as the log grew: {checkpoints}"
        assert cosigs is not None and cosigs["n"] == checkpoints, "the witness cosigned every checkpoint"
        report = await verify_store(store, [log_key.verifier], witness_keys=[witness.key.verifier],
                                    cosignatures_required=1)
        assert report.ok, f"verify passes: {[str(f) for f in report.findings[:3]]}"
        assert report.witnessed_size == report.size, "every entry is under a cosigned checkpoint"
        queued = await store.db.fetchone(f"SELECT COUNT(*) AS n FROM {QUEUE}")
        assert queued is not None and queued["n"] == 0
    finally:
        for s in audit_stores:
            await s.aclose()
        for st in fac_stores:
            await st.aclose()
