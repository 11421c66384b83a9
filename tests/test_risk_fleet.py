"""Risk across a fleet: two seller replicas in separate processes (this file run as a script: a real HTTP server
on 127.0.0.1, port chosen by the OS, each with its own store and engine) share their counters through real
Redis and enforce one velocity limit together; a replica whose Redis (a private redis-server, killed with
SIGKILL) goes away mid-run applies its fail mode — closed: 403 risk_unavailable, nothing moves; open: served —
and says so on its ``/metrics``."""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
import tempfile
import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
import pytest_asyncio

from paywire.facilitator.app import create_app
from paywire.serving import serve_asgi
from paywire.x402.codec import decode_payment_required, encode_payment_payload
from tests.helpers import close_devnet, full_facilitator, new_devnet, payer_of, sign
from tests.script_servers import script_servers, serve_until_killed
from tests.test_risk_core import REDIS_URL, private_redis
from tests.test_risk_seller import CountingApp

pytestmark = pytest.mark.asyncio(loop_scope="module")
PRICE = 10_000
TOKEN = "fleet-metrics-token"
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
async def replicas(n: int, config: dict[str, Any]) -> AsyncIterator[list[str]]:
    """``n`` replica processes (this file as a script), each with its own SQLite store; yields their URLs."""
    tmp = tempfile.mkdtemp(prefix="pw-risk-fleet-")
    async with script_servers(__file__, [{**config, "store": f"sqlite:///{tmp}/r{i}.db"} for i in range(n)]) as (
            urls, _):
        yield urls


async def pay(http: httpx.AsyncClient, net: Any, url: str) -> httpx.Response:
    r = await http.get(url + "/thing")
    req = decode_payment_required(r.headers["payment-required"]).accepts[0]
    return await http.get(url + "/thing", headers={"PAYMENT-SIGNATURE": encode_payment_payload(
        await sign(req, payer_of(net)))})


async def balances(net: Any) -> tuple[int, int]:
    return await net.token_balance(net.payer.address), await net.token_balance(net.payee.address)


def base_config(net: Any, fac_url: str, **more: Any) -> dict[str, Any]:
    return {"facilitator": fac_url, "pay_to": net.payee.address, "token": TOKEN,
            "asset": [net.info.network, net.info.token, net.info.token_name, net.info.token_version], **more}


async def test_two_replica_processes_sharing_redis_enforce_one_velocity_limit(net) -> None:
    """Payments alternate between two replica processes: three are served in all (not three per replica), the
    rest of the minute's payments are 403 velocity on either replica and never reach the facilitator."""
    redis = pytest.importorskip("redis")
    try:
        redis.Redis.from_url(REDIS_URL, socket_connect_timeout=1).ping()
    except Exception as exc:
        pytest.skip(f"Redis not reachable at {REDIS_URL}: {exc}")
    prefix = f"pw:test:{uuid.uuid4().hex}:"
    fac = CountingApp(create_app(full_facilitator(net)))
    before = await balances(net)
    async with serve_asgi(fac) as fac_url:
        config = base_config(net, fac_url, redis=REDIS_URL, prefix=prefix, rules=VELOCITY)
        async with replicas(2, config) as urls, httpx.AsyncClient(timeout=60) as http:
            replies = [await pay(http, net, urls[i % 2]) for i in range(8)]
            metrics = [await http.get(u + "/metrics", headers={"Authorization": f"Bearer {TOKEN}"}) for u in urls]
    statuses = [r.status_code for r in replies]
    assert statuses == [200] * 3 + [403] * 5, f"the replicas did not share one limit: {statuses}"
    assert {r.json()["reason"] for r in replies[3:]} == {"velocity"}, [r.text for r in replies[3:]]
    assert fac["/verify"] == 3, "denied payments reached the facilitator"
    assert await balances(net) == (before[0] - 3 * PRICE, before[1] + 3 * PRICE), "denied payments moved money"
    denied = [int(line.rsplit(" ", 1)[1]) for m in metrics for line in m.text.splitlines()
              if line.startswith('paywire_risk_decisions_total{checkpoint="payment",rule="payer_velocity"')]
    assert sum(denied) == 5 and len(denied) == 2, f"each replica's /metrics counts its own denials: {denied}"


@pytest.mark.parametrize("mode", ["closed", "open"])
async def test_replica_losing_its_redis_mid_run_applies_its_fail_mode(net, mode: str) -> None:
    with private_redis() as (redis_url, redis_proc):
        async with serve_asgi(create_app(full_facilitator(net))) as fac_url:
            config = base_config(net, fac_url, redis=redis_url, prefix="pw:fleet:", fail=mode)
            async with replicas(1, config) as (url,), httpx.AsyncClient(timeout=60) as http:
                before = await balances(net)
                first = await pay(http, net, url)
                redis_proc.kill()
                redis_proc.wait()
                unpaid = await http.get(url + "/thing")
                second = await pay(http, net, url) if mode == "open" else unpaid
                after = await balances(net)
                metrics = await http.get(url + "/metrics", headers={"Authorization": f"Bearer {TOKEN}"})
    assert first.status_code == 200, first.text
    assert "paywire_risk_backend_up 0" in metrics.text, f"the outage is not on /metrics: {metrics.text}"
    assert 'paywire_risk_degraded_total{checkpoint="request"}' in metrics.text, metrics.text
    if mode == "closed":
        assert (second.status_code, second.json()["reason"]) == (403, "risk_unavailable"), second.text
        assert after == (before[0] - PRICE, before[1] + PRICE)
    else:
        assert second.status_code == 200, f"fail-open refused: {second.text}"
        assert after == (before[0] - 2 * PRICE, before[1] + 2 * PRICE)


# ------------------------------------------------------------------------------------------ the replica


def _serve(config: dict[str, Any]) -> None:  # pragma: no cover - runs in the subprocesses
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import JSONResponse
    from starlette.routing import Route

    from paywire.evm.assets import Asset, AssetRegistry
    from paywire.risk.engine import RiskEngine
    from paywire.risk.redis_state import RedisState
    from paywire.risk.rules import parse_rules
    from paywire.risk.seller import SellerRisk
    from paywire.server.asgi import PaymentMiddleware
    from paywire.server.core import PaidRoute
    from paywire.server.pricing import Offer

    async def main() -> None:
        async def thing(request: Request) -> JSONResponse:
            return JSONResponse({"ok": True})

        asset = Asset(*config["asset"])
        rules = parse_rules(config["rules"]) if config.get("rules") else None
        fail = config.get("fail", "open")
        engine = RiskEngine(rules, state=RedisState(config["redis"], prefix=config["prefix"], timeout=10.0),
                            fail={"request": fail, "payment": fail})
        app = PaymentMiddleware(Starlette(routes=[Route("/thing", thing)]),
                                [PaidRoute("GET /thing", offers=(Offer(price=PRICE, asset=asset),))],
                                config["facilitator"], pay_to=config["pay_to"], store=config["store"],
                                assets=AssetRegistry((asset,)),
                                risk=SellerRisk(engine, metrics_token=config["token"]))
        await app.startup()
        await serve_until_killed(app)

    asyncio.run(main())


if __name__ == "__main__":  # pragma: no cover
    _serve(json.loads(sys.argv[1]))
