"""A facilitator that times out on ``/settle`` never yields content without payment, nor a lost payment.

A small misbehaving facilitator sits in front of the real one (our facilitator service, exactly-once on its
store, settling on the embedded chain): it either forwards ``/settle`` and then never answers (the money
moves, the seller does not learn it), or never forwards it (no money moves). The seller records
``unresolved`` and serves nothing; the payer's retry with the same payment reconciles through the
facilitator and gets the response once it is settled — one handler run, one transfer.
"""

from __future__ import annotations

import asyncio
import contextlib
import time

import httpx
import pytest
import pytest_asyncio
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from paywire.facilitator.app import create_app
from paywire.serving import serve_asgi
from paywire.store.settlements import SettlementStore
from paywire.x402.codec import decode_payment_response
from tests.helpers import close_devnet, full_facilitator, new_devnet
from tests.test_seller_common import CHEAP, Shop, open_shop

pytestmark = pytest.mark.asyncio(loop_scope="module")


class Flaky:
    """Proxy to a real facilitator. ``mode``: pass, forward_then_hang, hang or refuse."""

    def __init__(self, real: str) -> None:
        self.real, self.mode = real, "pass"
        self.release = asyncio.Event()
        self.settles: list[str] = []
        self.forwarded: list[asyncio.Task[httpx.Response]] = []
        self.http = httpx.AsyncClient(timeout=120)

    async def _forward(self, request: Request) -> Response:
        r = await self.http.request(request.method, self.real + request.url.path, content=await request.body(),
                                    headers={"content-type": "application/json"})
        return Response(r.content, r.status_code, media_type="application/json")

    async def settle(self, request: Request) -> Response:
        mode = self.mode
        self.settles.append(mode)
        if mode == "pass":
            return await self._forward(request)
        if mode == "refuse":  # a definitive failure, as when the payer's balance is gone by settle time
            await request.body()
            return Response(b'{"success":false,"errorReason":"invalid_exact_evm_insufficient_balance",'
                            b'"transaction":"","network":"eip155:31337"}', 200, media_type="application/json")
        if mode == "forward_then_hang":  # the settlement happens; its answer never reaches the seller
            self.forwarded.append(asyncio.ensure_future(self._forward(request)))
        await self.release.wait()
        return Response(b'{"error":"too late"}', 504)

    def app(self) -> Starlette:
        return Starlette(routes=[Route("/settle", self.settle, methods=["POST"]),
                                 Route("/verify", self._forward, methods=["POST"]),
                                 Route("/supported", self._forward)])


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def env(tmp_path_factory):
    net = await new_devnet("embedded")
    tmp = tmp_path_factory.mktemp("faults")
    settlements = await SettlementStore.open(f"sqlite:///{tmp / 'facilitator.db'}")
    async with contextlib.AsyncExitStack() as stack:
        # the seller gives up on /settle after 8 s (a real settlement in "pass" mode must fit in that on a busy
        # machine); its HTTP client raises, which means "outcome unknown"
        real = await stack.enter_async_context(serve_asgi(create_app(full_facilitator(net, store=settlements))))
        flaky = Flaky(real)
        flaky_url = await stack.enter_async_context(serve_asgi(flaky.app()))
        shop = await stack.enter_async_context(open_shop(net, f"sqlite:///{tmp / 'seller.db'}",
                                                         facilitator_url=flaky_url, facilitator_timeout=8.0))
        try:
            yield shop, flaky
        finally:
            flaky.release.set()
            await asyncio.gather(*flaky.forwarded, return_exceptions=True)
            await flaky.http.aclose()
    await settlements.aclose()
    await close_devnet(net)


async def wait_for_balance(shop: Shop, address: str, want: int) -> int:
    """The chain settles asynchronously behind the proxy: poll (bounded) until the balance arrives."""
    deadline = time.monotonic() + 60
    while True:
        have = await shop.net.token_balance(address)
        if have == want or time.monotonic() > deadline:
            return have
        await asyncio.sleep(0.2)


async def record(shop: Shop, path: str):
    rows = [r for r in await shop.middleware.flow.payments.sales(limit=100) if r.path == path]
    return rows[0]


async def test_settlement_sent_but_answer_lost(env) -> None:
    """The transfer happens but the seller never hears back: 503 without content, row ``unresolved``; the
    retry with the same payment reconciles (the facilitator answers from its record) and gets the content."""
    shop, flaky = env
    payer0, payee0 = await shop.balances()
    header = await shop.payment("/cheap")
    flaky.mode = "forward_then_hang"
    r = await shop.http.get(shop.url + "/cheap", headers={"PAYMENT-SIGNATURE": header})
    assert r.status_code == 503 and r.json()["error"] == "settlement_pending"
    assert b"cheap" not in r.content and "payment-response" not in r.headers  # no content without payment
    assert (await record(shop, "/cheap")).state == "unresolved"
    assert await wait_for_balance(shop, shop.net.payee.address, payee0 + CHEAP) == payee0 + CHEAP
    flaky.mode = "pass"
    ok = await shop.http.get(shop.url + "/cheap", headers={"PAYMENT-SIGNATURE": header})
    assert ok.status_code == 200, ok.text
    assert ok.json()["item"] == "cheap" and ok.json()["run"] == 1
    s = decode_payment_response(ok.headers["payment-response"])
    assert s.success and s.transaction
    assert await shop.balances() == (payer0 - CHEAP, payee0 + CHEAP)  # paid once
    assert shop.counter["cheap"] == 1
    row = await record(shop, "/cheap")
    assert row.state == "served" and row.tx == s.transaction


async def test_settlement_never_sent(env) -> None:
    """The facilitator swallows /settle without settling: nothing is served and nothing is charged; the retry
    settles for real and gets the recorded response (the handler ran once)."""
    shop, flaky = env
    payer0, payee0 = await shop.balances()
    header = await shop.payment("/dear")
    flaky.mode = "hang"
    r = await shop.http.get(shop.url + "/dear", headers={"PAYMENT-SIGNATURE": header})
    assert r.status_code == 503 and b"dear" not in r.content
    assert await shop.balances() == (payer0, payee0)
    flaky.mode = "pass"
    ok = await shop.http.get(shop.url + "/dear", headers={"PAYMENT-SIGNATURE": header})
    assert ok.status_code == 200 and ok.json() == {"item": "dear", "run": 1}
    assert await shop.balances() == (payer0 - 50_000, payee0 + 50_000)
    assert shop.counter["dear"] == 1


async def test_settle_before_mode_runs_the_handler_only_once_paid(env) -> None:
    """settle='before' with a facilitator that hangs: the handler does not run until the settlement is
    known; the retry settles and then streams."""
    shop, flaky = env
    payer0, payee0 = await shop.balances()
    header = await shop.payment("/stream")
    flaky.mode = "hang"
    r = await shop.http.get(shop.url + "/stream", headers={"PAYMENT-SIGNATURE": header})
    assert r.status_code == 503 and shop.counter["stream"] == 0
    flaky.mode = "pass"
    ok = await shop.http.get(shop.url + "/stream", headers={"PAYMENT-SIGNATURE": header})
    assert ok.status_code == 200 and ok.text.startswith("chunk 0")
    assert shop.counter["stream"] == 1
    assert await shop.balances() == (payer0 - CHEAP, payee0 + CHEAP)


async def test_background_reconcile_records_the_outcome(env) -> None:
    """``reconcile_pending`` resolves unresolved rows without a retry; the payer's later retry is served from
    the record."""
    shop, flaky = env
    payer0, payee0 = await shop.balances()
    header = await shop.payment("/cheap2")
    flaky.mode = "forward_then_hang"
    r = await shop.http.get(shop.url + "/cheap2", headers={"PAYMENT-SIGNATURE": header})
    assert r.status_code == 503
    assert await wait_for_balance(shop, shop.net.payee.address, payee0 + CHEAP) == payee0 + CHEAP
    flaky.mode = "pass"
    counts = await shop.middleware.flow.reconcile_pending()
    assert counts.get("served") == 1
    settles = len(flaky.settles)
    ok = await shop.http.get(shop.url + "/cheap2", headers={"PAYMENT-SIGNATURE": header})
    assert ok.status_code == 200 and len(flaky.settles) == settles  # answered from the record
    assert await shop.balances() == (payer0 - CHEAP, payee0 + CHEAP)


async def test_refused_settlement_serves_nothing_and_is_recorded(env) -> None:
    """Checklist 18: settlement fails → 402 with a failed PAYMENT-RESPONSE, the handler's output discarded;
    the outcome is recorded and replayed to a retry (the handler does not run again)."""
    shop, flaky = env
    before = await shop.balances()
    runs = shop.counter["dear"]
    header = await shop.payment("/dear")
    flaky.mode = "refuse"
    try:
        r = await shop.http.get(shop.url + "/dear", headers={"PAYMENT-SIGNATURE": header})
        again = await shop.http.get(shop.url + "/dear", headers={"PAYMENT-SIGNATURE": header})
    finally:
        flaky.mode = "pass"
    assert r.status_code == 402 and b'"item"' not in r.content
    s = decode_payment_response(r.headers["payment-response"])
    assert not s.success and s.error_reason == "invalid_exact_evm_insufficient_balance" and s.transaction == ""
    assert again.status_code == 402 and again.content == r.content
    assert shop.counter["dear"] == runs + 1 and await shop.balances() == before
    row = await record(shop, "/dear")
    assert row.state == "failed" and row.error == "invalid_exact_evm_insufficient_balance"


class HeldServedWrite:
    """Wraps the ledger's ``update``: the first ``served`` write waits for ``release`` (or raises when ``fail``);
    later ones (a reconciler's) go through."""

    def __init__(self, shop: Shop, *, fail: bool = False) -> None:
        self.store = shop.middleware.flow.payments
        self.original = self.store.update
        self.release, self.reached, self.fail = asyncio.Event(), asyncio.Event(), fail

    async def update(self, *args, **changes):
        if changes.get("state") == "served" and not self.reached.is_set():  # the first one only
            self.reached.set()
            if self.fail:
                raise RuntimeError("the process stopped here")
            await self.release.wait()
        return await self.original(*args, **changes)

    def __enter__(self) -> HeldServedWrite:
        self.store.update = self.update  # type: ignore[method-assign]
        return self

    def __exit__(self, *exc) -> None:
        del self.store.update
        self.release.set()


async def test_the_payer_has_the_paid_answer_before_the_ledger_says_served(env) -> None:
    """settle="after": the reply goes out once the settlement is recorded as ``settling`` with its answer; the
    ``served`` write follows it (one commit off the paid request's path). The row is ``settling`` while the payer
    already reads the content, then ``served`` with the transaction the payer was given."""
    shop, _ = env
    payer0, payee0 = await shop.balances()
    runs = shop.counter["item"]
    header = await shop.payment("/items/a")
    with HeldServedWrite(shop) as held:
        r = await asyncio.wait_for(shop.http.get(shop.url + "/items/a", headers={"PAYMENT-SIGNATURE": header}), 60)
        assert r.status_code == 200 and r.json() == {"item": "a", "run": runs + 1}
        assert held.reached.is_set()
        assert (await record(shop, "/items/a")).state == "settling"
        held.release.set()
        deadline = time.monotonic() + 60
        while (row := await record(shop, "/items/a")).state != "served" and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
    s = decode_payment_response(r.headers["payment-response"])
    assert row.state == "served" and row.tx == s.transaction and row.owner is None
    assert await shop.balances() == (payer0 - CHEAP, payee0 + CHEAP)
    assert shop.counter["item"] == runs + 1


async def test_a_reply_whose_served_write_was_lost_is_settled_again_not_twice(env) -> None:
    """The process stops after sending the paid reply, before writing ``served``: the row stays ``settling``
    with the recorded response. Once its lease is over, ``reconcile_pending`` settles it again (the facilitator
    answers from its record: no second transfer) and records ``served``; a replay of the payment gets the same
    content from the record, and the handler ran once."""
    shop, flaky = env
    payer0, payee0 = await shop.balances()
    runs = shop.counter["item"]
    header = await shop.payment("/items/b")
    with HeldServedWrite(shop, fail=True) as held:
        r = await shop.http.get(shop.url + "/items/b", headers={"PAYMENT-SIGNATURE": header})
        assert held.reached.is_set()
    assert r.status_code == 200 and r.json() == {"item": "b", "run": runs + 1}
    paid = decode_payment_response(r.headers["payment-response"])
    row = await record(shop, "/items/b")
    assert row.state == "settling" and row.tx is None and row.response is not None
    assert await shop.balances() == (payer0 - CHEAP, payee0 + CHEAP)
    assert await shop.middleware.flow.reconcile_pending() == {}  # its owner's lease is still running
    await shop.middleware.flow.payments.db.execute(
        "UPDATE seller_payments SET lease_until = ? WHERE id = ?", (time.time() - 1, row.id))
    settles = len(flaky.settles)
    assert await shop.middleware.flow.reconcile_pending() == {"served": 1}
    assert len(flaky.settles) == settles + 1
    row = await record(shop, "/items/b")
    assert row.state == "served" and row.tx == paid.transaction and row.owner is None
    again = await shop.http.get(shop.url + "/items/b", headers={"PAYMENT-SIGNATURE": header})
    assert again.status_code == 200 and again.content == r.content
    assert decode_payment_response(again.headers["payment-response"]).transaction == paid.transaction
    assert len(flaky.settles) == settles + 1  # answered from the record
    assert await shop.balances() == (payer0 - CHEAP, payee0 + CHEAP)  # one transfer
    assert shop.counter["item"] == runs + 1


async def test_the_claim_stays_held_while_the_reply_goes_out(env, tmp_path) -> None:
    """The ``served`` write waits for the reply to be sent; however long that takes (here: held past the
    1.5 s lease), the claim's lease is renewed until the write is done, so no reconciler takes the row over
    and settles it a second time; the owner then records ``served``."""
    shop, _ = env
    async with open_shop(shop.net, f"sqlite:///{tmp_path / 'held.db'}", facilitator_url=shop.facilitator_url,
                         lease=1.5) as short:
        payer0, payee0 = await short.balances()
        header = await short.payment("/items/c")
        with HeldServedWrite(short) as held:
            r = await short.http.get(short.url + "/items/c", headers={"PAYMENT-SIGNATURE": header})
            assert r.status_code == 200 and held.reached.is_set()
            await asyncio.sleep(2.5)  # past the lease: only its renewal keeps the row ours
            assert await short.middleware.flow.reconcile_pending() == {}
            held.release.set()
            deadline = time.monotonic() + 60
            while (row := await record(short, "/items/c")).state != "served" and time.monotonic() < deadline:
                await asyncio.sleep(0.01)
        assert row.state == "served" and row.tx == decode_payment_response(r.headers["payment-response"]).transaction
        assert await short.balances() == (payer0 - CHEAP, payee0 + CHEAP)
        assert short.counter["item"] == 1
