"""Risk across a fleet: two seller replicas (two middlewares on two ports, each with its own engine) share
their counters through the real Redis at 127.0.0.1:6379 and enforce one velocity limit together; a replica
whose Redis becomes unreachable mid-run applies its fail mode (closed: 403 risk_unavailable, nothing moves;
open: served)."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import AsyncIterator

import httpx
import pytest
import pytest_asyncio

from paywire.evm.assets import AssetRegistry
from paywire.facilitator.app import create_app
from paywire.facilitator.client import HttpFacilitatorClient
from paywire.risk.engine import FailMode, RiskEngine
from paywire.risk.rules import parse_rules
from paywire.risk.seller import SellerRisk
from paywire.server.asgi import PaymentMiddleware
from paywire.server.core import PaidRoute
from paywire.server.pricing import Offer
from paywire.serving import serve_asgi
from paywire.x402.codec import decode_payment_required, encode_payment_payload
from tests.helpers import close_devnet, full_facilitator, new_devnet, payer_of, sign
from tests.test_risk_core import kill, redis_proxy, redis_state
from tests.test_risk_seller import CountingApp, shop

pytestmark = pytest.mark.asyncio(loop_scope="module")
PRICE = 10_000
VELOCITY = """
[[rule]]
id = "payer_velocity"
checkpoint = "payment"
when = "payer_count_1m > 3"
action = "deny"
reason = "velocity"
"""


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def net():
    n = await new_devnet("embedded")
    yield n
    await close_devnet(n)


@contextlib.asynccontextmanager
async def fleet(net, tmp_path, engines: list[RiskEngine]) -> AsyncIterator[tuple[list[str], CountingApp]]:
    """One replica per engine, each its own middleware, store and port; one facilitator (counted)."""
    fac = CountingApp(create_app(full_facilitator(net)))
    routes = [PaidRoute("GET /thing", offers=(Offer(price=PRICE, asset=net.asset),))]
    async with contextlib.AsyncExitStack() as stack:
        fac_url = await stack.enter_async_context(serve_asgi(fac))
        urls = []
        for i, engine in enumerate(engines):
            mw = PaymentMiddleware(shop({}), routes, HttpFacilitatorClient(fac_url),
                                   store=f"sqlite:///{tmp_path / f'replica{i}.db'}", assets=AssetRegistry((net.asset,)),
                                   pay_to=net.payee.address, risk=SellerRisk(engine))
            urls.append(await stack.enter_async_context(serve_asgi(mw)))
            stack.push_async_callback(mw.flow.aclose)
        yield urls, fac


async def pay(http: httpx.AsyncClient, net, url: str) -> httpx.Response:
    r = await http.get(url + "/thing")
    req = decode_payment_required(r.headers["payment-required"]).accepts[0]
    return await http.get(url + "/thing", headers={"PAYMENT-SIGNATURE": encode_payment_payload(
        await sign(req, payer_of(net)))})


async def balances(net) -> tuple[int, int]:
    return await net.token_balance(net.payer.address), await net.token_balance(net.payee.address)


async def test_two_replicas_sharing_redis_enforce_one_velocity_limit(net, tmp_path) -> None:
    """Payments alternate between the replicas: three are served in all (not three per replica), the rest of
    the minute's payments are 403 velocity on either replica."""
    prefix = f"pw:test:{uuid.uuid4().hex}:"
    states = [redis_state(prefix), redis_state(prefix)]
    engines = [RiskEngine(parse_rules(VELOCITY), state=s) for s in states]
    before = await balances(net)
    try:
        async with fleet(net, tmp_path, engines) as (urls, _), httpx.AsyncClient(timeout=60) as http:
            replies = [await pay(http, net, urls[i % 2]) for i in range(8)]
    finally:
        for s in states:
            await s.aclose()
    statuses = [r.status_code for r in replies]
    assert statuses == [200] * 3 + [403] * 5, f"the replicas did not share one limit: {statuses}"
    assert {r.json()["reason"] for r in replies[3:]} == {"velocity"}, [r.text for r in replies[3:]]
    assert await balances(net) == (before[0] - 3 * PRICE, before[1] + 3 * PRICE), "denied payments moved money"


@pytest.mark.parametrize("mode", ["closed", "open"])
async def test_replica_losing_redis_mid_run_applies_its_fail_mode(net, tmp_path, mode: FailMode) -> None:
    async with redis_proxy() as (url, server, writers):
        state = redis_state(f"pw:test:{uuid.uuid4().hex}:", url)
        engine = RiskEngine(state=state, fail={"request": mode, "payment": mode})
        before = await balances(net)
        try:
            async with fleet(net, tmp_path, [engine]) as (urls, fac), httpx.AsyncClient(timeout=60) as http:
                first = await pay(http, net, urls[0])
                kill(server, writers)
                verifies = fac["/verify"]
                r = await http.get(urls[0] + "/thing")
                second = await pay(http, net, urls[0]) if mode == "open" else r
                verified_after = fac["/verify"] - verifies
        finally:
            await state.aclose()
    assert first.status_code == 200, first.text
    assert "paywire_risk_backend_up 0" in engine.metrics.render(), "the outage is not in the metrics"
    if mode == "closed":
        assert (second.status_code, second.json()["reason"]) == (403, "risk_unavailable"), second.text
        assert verified_after == 0, "fail-closed still asked the facilitator"
        assert await balances(net) == (before[0] - PRICE, before[1] + PRICE)
    else:
        assert second.status_code == 200, f"fail-open refused: {second.text}"
        assert await balances(net) == (before[0] - 2 * PRICE, before[1] + 2 * PRICE)
