"""The seller's ledger changes are audited: every change of a ``seller_payments`` row queues exactly one event in
the same transaction, the sequenced log verifies, and ``paywire audit verify`` names a ledger row edited or deleted
without its event (issue 12, "Done means": edit a ledger row without its event). Real parts: our ASGI middleware
over real HTTP, our facilitator settling on the embedded chain, SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass

import httpx
import pytest
import pytest_asyncio
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from paywire.audit.events import entry_event
from paywire.audit.note import Signer
from paywire.audit.ops import verify_store
from paywire.audit.queue import queued_events
from paywire.audit.sequencer import Sequencer
from paywire.audit.store import LOG, AuditStore
from paywire.devnet import Devnet
from paywire.evm.assets import AssetRegistry
from paywire.evm.signer import LocalSigner
from paywire.facilitator.client import LocalFacilitatorClient
from paywire.server.asgi import PaymentMiddleware
from paywire.server.core import PaidRoute
from paywire.server.pricing import Offer
from paywire.serving import serve_asgi
from paywire.store.db import open_database
from paywire.x402.codec import decode_payment_required, encode_payment_payload
from tests.audit_support import verify_cli
from tests.helpers import close_devnet, full_facilitator, new_devnet, payer_of, sign

pytestmark = pytest.mark.asyncio(loop_scope="module")

PRICE = 10_000
ORIGIN = "paywire.example/seller-test"


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def net() -> AsyncIterator[Devnet]:
    n = await new_devnet("embedded")
    yield n
    await close_devnet(n)


@dataclass
class Shop:
    net: Devnet
    url: str
    store_url: str
    http: httpx.AsyncClient
    mw: PaymentMiddleware

    async def header(self, path: str, signer: LocalSigner | None = None) -> str:
        r = await self.http.get(self.url + path)
        assert r.status_code == 402, f"an unpaid {path} is refused with 402, got {r.status_code}"
        req = decode_payment_required(r.headers["payment-required"]).accepts[0]
        return encode_payment_payload(await sign(req, signer or payer_of(self.net)))

    async def pay(self, path: str, header: str) -> httpx.Response:
        return await self.http.get(self.url + path, headers={"PAYMENT-SIGNATURE": header})


def _app() -> Starlette:
    async def ok(request: Request) -> Response:
        return JSONResponse({"paid": True})

    async def broken(request: Request) -> Response:
        return JSONResponse({"error": "broken"}, status_code=500)

    return Starlette(routes=[Route("/after", ok), Route("/before", ok), Route("/fail", broken)])


@pytest_asyncio.fixture(loop_scope="module")
async def shop(net: Devnet, store_url: str) -> AsyncIterator[Shop]:
    a = net.asset
    routes = [PaidRoute("GET /after", offers=(Offer(price=PRICE, asset=a),)),
              PaidRoute("GET /before", offers=(Offer(price=PRICE, asset=a),), settle="before"),
              PaidRoute("GET /fail", offers=(Offer(price=PRICE, asset=a),))]
    mw = PaymentMiddleware(_app(), routes, LocalFacilitatorClient(full_facilitator(net)), store=store_url,
                           assets=AssetRegistry((a,)), pay_to=net.payee.address, audit="seller-test-1")
    async with serve_asgi(mw) as url, httpx.AsyncClient(timeout=60) as http:
        yield Shop(net, url, store_url, http, mw)
    await mw.flow.aclose()


async def _queued(store: AuditStore) -> list[dict]:
    return [json.loads(e) for e in await queued_events(store.db)]


def _kinds(events: list[dict], record: int) -> list[str]:
    return [e["kind"] for e in events if e["subject"].get("record") == record]


async def _rows(store: AuditStore) -> dict[str, int]:
    """Ledger row id by route path."""
    rows = await store.db.fetchall("SELECT id, path FROM seller_payments ORDER BY id")
    return {str(r["path"]): int(r["id"]) for r in rows}


async def _sequence(store: AuditStore) -> Signer:
    signer = Signer.generate(ORIGIN)
    seq = Sequencer(store, signer)
    await seq.drain()
    await seq.integrate(force_checkpoint=True)
    return signer


async def _last_seq(store: AuditStore, record: int) -> int:
    last = -1
    async for row in store.entries():
        if entry_event(row.entry)["subject"].get("record") == record:
            last = row.seq
    return last


async def test_every_ledger_change_queues_one_event_in_its_transaction(shop: Shop) -> None:
    paid = await shop.header("/after")
    assert (await shop.pay("/after", paid)).status_code == 200, "a paid request is served"
    assert (await shop.pay("/after", paid)).status_code == 200, "its replay gets the recorded response"
    assert (await shop.pay("/before", await shop.header("/before"))).status_code == 200, "settle-before is served"
    assert (await shop.pay("/fail", await shop.header("/fail"))).status_code == 500, "a failing handler is a 500"
    broke = LocalSigner(b"\x11" * 32)  # holds no tokens: verification refuses it
    refused = await shop.pay("/after", await shop.header("/after", broke))
    assert refused.status_code == 402, f"an unfunded payment is refused with 402, got {refused.status_code}"

    store = AuditStore(shop.mw.flow.payments.db)
    events = await _queued(store)
    rows = await _rows(store)
    # a payment is claimed once the facilitator verified it: the claim's insert is its first event
    assert _kinds(events, rows["/after"]) == ["payment.claimed", "payment.settling", "payment.served"], \
        "settle-after: the claim, then one event per state, none for replay"
    assert _kinds(events, rows["/before"]) == ["payment.claimed", "payment.settled", "payment.served"], \
        "settle-before: the claim, then one event per state"
    assert _kinds(events, rows["/fail"]) == ["payment.claimed", "payment.failed"], \
        "a handler error: claimed, failed (not charged)"
    claims = {e["subject"]["record"]: e for e in events if e["kind"] == "payment.claimed"}
    assert claims[rows["/after"]]["data"]["state"] == "claimed" and claims[rows["/after"]]["previous"] is None, \
        "the claim says the row was created verified, its handler allowed to run"
    assert claims[rows["/before"]]["data"]["state"] == "settling", "a settle-before claim goes in settling"
    assert [e for e in events if e["kind"] == "payment.refused"] == [], \
        "the refused payment was never claimed: no event"
    count = await store.db.fetchone("SELECT count(*) AS n FROM seller_payments")
    assert count is not None and int(count["n"]) == 3, f"and no ledger row: {count}"
    config = [e for e in events if e["component"] == "config"]
    assert len(config) == 1 and config[0]["kind"] == "config.seller_started", "one configuration event at start"
    assert [r["route"] for r in config[0]["data"]["routes"]] == ["GET /after", "GET /before", "GET /fail"], \
        "it records the routes in force"
    assert config[0]["data"]["routes"][0]["offers"][0]["amount"] == str(PRICE), "and their prices"
    assert len(events) == 1 + 3 + 3 + 2, "no other events"
    served = next(e for e in events if e["kind"] == "payment.served" and e["subject"]["record"] == rows["/after"])
    assert served["subject"]["amount"] == str(PRICE), "the event carries the amount"
    assert served["subject"]["tx_hash"], "the settled event carries the transaction hash"
    assert served["subject"]["payer"].lower() == shop.net.payer.address.lower(), "and the payer"
    assert "auth_key" not in json.dumps(served), "the authorization itself is stored as a digest only"

    signer = await _sequence(store)
    report = await verify_store(store, [signer.verifier])
    assert report.ok, f"the sequenced log agrees with the ledger: {[str(f) for f in report.findings]}"
    assert report.size == len(events), "every queued event is logged"


async def test_verify_names_a_ledger_row_changed_without_its_event(shop: Shop) -> None:
    assert (await shop.pay("/after", await shop.header("/after"))).status_code == 200
    assert (await shop.pay("/before", await shop.header("/before"))).status_code == 200
    store = AuditStore(shop.mw.flow.payments.db)
    signer = await _sequence(store)
    rows = await _rows(store)
    db = open_database(shop.store_url)  # the attacker's own connection: the seller's would log the change

    await db.execute("UPDATE seller_payments SET amount = '1' WHERE id = ?", (rows["/after"],))
    code, out = await asyncio.to_thread(verify_cli, "--store", shop.store_url, "--key", signer.verifier.vkey)
    want = await _last_seq(store, rows["/after"])
    assert code == 1, f"verify fails on an edited ledger row:\n{out}"
    assert f"first bad seq {want}" in out, f"and names the seq of the row's latest event ({want}):\n{out}"
    assert "seller_payments row" in out, f"and the ledger row:\n{out}"
    await db.execute("UPDATE seller_payments SET amount = ? WHERE id = ?", (str(PRICE), rows["/after"]))
    assert (await verify_store(store, [signer.verifier])).ok, "restoring the row makes the log agree again"

    await db.execute("DELETE FROM seller_payments WHERE id = ?", (rows["/before"],))
    report = await verify_store(store, [signer.verifier])
    first = report.first()
    assert first is not None and first.seq == await _last_seq(store, rows["/before"]), \
        f"a row deleted without its event is named at its latest event: {first}"
    assert "deleted without its event" in first.why, f"and says so: {first}"

    await db.execute("INSERT INTO seller_payments (auth_key, payload_hash, state, route, method, path, settle_mode, "
                     "x402_version, scheme, network, asset, pay_to, amount, decimals, payload, requirements, "
                     "created_at, updated_at) SELECT 'forged', payload_hash, 'served', route, method, path, "
                     "settle_mode, x402_version, scheme, network, asset, pay_to, amount, decimals, payload, "
                     "requirements, created_at, updated_at FROM seller_payments WHERE id = ?", (rows["/after"],))
    report = await verify_store(store, [signer.verifier])
    assert any("has no audit event" in f.why for f in report.findings), \
        f"a row inserted without an event is named: {[str(f) for f in report.findings]}"
    size = await store.size()
    assert any(f.seq == size for f in report.findings if "no audit event" in f.why), \
        "at the log's end (no event names it)"
    await db.aclose()


async def test_a_log_that_is_edited_with_its_row_still_fails_on_the_tree(shop: Shop) -> None:
    """Editing the row *and* its event moves the disagreement into the log, where the checkpoint catches it."""
    assert (await shop.pay("/after", await shop.header("/after"))).status_code == 200
    store = AuditStore(shop.mw.flow.payments.db)
    signer = await _sequence(store)
    rid = (await _rows(store))["/after"]
    seq = await _last_seq(store, rid)
    row = await store.entry(seq)
    assert row is not None
    await store.db.execute(f"UPDATE {LOG} SET entry = ? WHERE seq = ?",
                           (row.entry.decode().replace(f'"amount":"{PRICE}"', '"amount":"1"'), seq))
    attacker = open_database(shop.store_url)
    await attacker.execute("UPDATE seller_payments SET amount = '1' WHERE id = ?", (rid,))
    await attacker.aclose()
    report = await verify_store(store, [signer.verifier])
    assert report.first_bad_seq == seq, f"the edited event is named: {[str(f) for f in report.findings]}"


async def test_audit_off_writes_no_audit_tables(net: Devnet, sqlite_url: str) -> None:
    a = net.asset
    mw = PaymentMiddleware(_app(), [PaidRoute("GET /after", offers=(Offer(price=PRICE, asset=a),))],
                           LocalFacilitatorClient(full_facilitator(net)), store=sqlite_url,
                           assets=AssetRegistry((a,)), pay_to=net.payee.address)
    async with serve_asgi(mw) as url, httpx.AsyncClient(timeout=60) as http:
        shop = Shop(net, url, sqlite_url, http, mw)
        assert (await shop.pay("/after", await shop.header("/after"))).status_code == 200
        store = mw.flow.payments
        assert store.audit is None, "auditing is off by default"
        tables = await store.db.fetchall("SELECT name FROM sqlite_master WHERE name LIKE 'audit%'")
        assert tables == [], f"and creates no audit tables: {tables}"
    await mw.flow.aclose()


async def test_unpaid_402s_are_tallied_not_logged_one_by_one(shop: Shop) -> None:
    """Bounded by design: 25 unpaid requests (402s with their challenges) add no event each; the seller queues
    one ``seller.challenges_summary`` per interval (here: flushed as at shutdown)."""
    assert (await shop.http.get(shop.url + "/after")).status_code == 402  # the seller starts
    tally = shop.mw.flow._challenge_tally
    assert tally is not None
    await tally.flush()
    store = AuditStore(shop.mw.flow.payments.db)
    before = len(await _queued(store))
    for _ in range(25):
        assert (await shop.http.get(shop.url + "/after")).status_code == 402
    assert len(await _queued(store)) == before, "unpaid requests write no events"
    await tally.flush()
    events = await _queued(store)
    assert len(events) == before + 1, "one summary"
    summary = events[-1]
    assert summary["kind"] == "seller.challenges_summary" and summary["data"]["total"] == 25, summary
    assert next(c for c in summary["data"]["challenges"] if c[0] == "GET /after")[2] == 25, \
        f"counted per route (and the protocols offered): {summary['data']}"
