"""Replicas: two seller processes (real subprocesses) sharing one PostgreSQL run one handler per payment.

Each replica is this file run as a script: a Starlette app behind our ASGI middleware, store on Postgres,
settling through one HTTP facilitator served by the test on the embedded chain. Its handler records every
run in a Postgres table, so the count is exact across processes.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import sys

import httpx
import pytest
import pytest_asyncio

from paywire.facilitator.app import create_app
from paywire.serving import serve_asgi
from paywire.x402.codec import decode_payment_required, decode_payment_response, encode_payment_payload
from tests.helpers import close_devnet, full_facilitator, new_devnet, payer_of, sign
from tests.script_servers import script_servers, serve_until_killed

pytestmark = [pytest.mark.postgres, pytest.mark.asyncio(loop_scope="module")]
AMOUNT = 20_000


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def net():
    n = await new_devnet("embedded")
    yield n
    await close_devnet(n)


def replicas(n: int, config: dict[str, object]) -> contextlib.AbstractAsyncContextManager[
        tuple[list[str], list[asyncio.subprocess.Process]]]:
    """Start ``n`` replica processes; yields their URLs and processes (the facilitator they need runs on our loop)."""
    return script_servers(__file__, [config] * n)


async def test_two_replicas_on_one_postgres_run_one_handler_per_payment(net, pg_url) -> None:
    """Each of 3 payments is sent 4× to each replica at once: 8 identical 200s, one handler run and one
    on-chain transfer per payment."""
    from paywire.store.db import open_database

    db = open_database(pg_url)
    await db.execute("CREATE TABLE handler_runs (id BIGSERIAL PRIMARY KEY, replica INTEGER, path TEXT)")
    async with serve_asgi(create_app(full_facilitator(net))) as fac_url:
        config = {"store": pg_url, "facilitator": fac_url, "pay_to": net.payee.address,
                  "asset": [net.info.network, net.info.token, net.info.token_name, net.info.token_version]}
        async with replicas(2, config) as (urls, _), httpx.AsyncClient(timeout=60) as http:
            r = await http.get(urls[0] + "/report")
            req = decode_payment_required(r.headers["payment-required"]).accepts[0]
            assert req.amount == AMOUNT
            headers = [encode_payment_payload(await sign(req, payer_of(net))) for _ in range(3)]
            before = await net.token_balance(net.payee.address)
            results = await asyncio.gather(*[
                http.get(url + "/report", headers={"PAYMENT-SIGNATURE": h})
                for h in headers for url in urls for _ in range(4)])
    runs = await db.fetchall("SELECT replica, path FROM handler_runs")
    await db.aclose()
    assert [r.status_code for r in results] == [200] * 24, [r.text for r in results if r.status_code != 200]
    by_payment = [results[i * 8:(i + 1) * 8] for i in range(3)]
    for group in by_payment:
        assert len({r.content for r in group}) == 1
        assert len({decode_payment_response(r.headers["payment-response"]).transaction for r in group}) == 1
    assert len(runs) == 3  # one handler run per payment, whichever replica won
    assert await net.token_balance(net.payee.address) == before + 3 * AMOUNT


async def test_replica_killed_mid_handler_never_reruns_it(net, pg_url) -> None:
    """A replica dies (SIGKILL) while a paid handler runs: once its lease lapses, the same payment sent to the
    other replica does not run the handler again and settles nothing (409 payment_abandoned, row failed); the
    payer keeps their tokens and signs a new payment, which is served normally."""
    from paywire.store.db import open_database

    db = open_database(pg_url)
    await db.execute("CREATE TABLE handler_runs (id BIGSERIAL PRIMARY KEY, replica INTEGER, path TEXT)")
    async with serve_asgi(create_app(full_facilitator(net))) as fac_url:
        config = {"store": pg_url, "facilitator": fac_url, "pay_to": net.payee.address, "lease": 1.0,
                  "asset": [net.info.network, net.info.token, net.info.token_name, net.info.token_version]}
        async with replicas(2, config) as (urls, procs), httpx.AsyncClient(timeout=60) as http:
            r = await http.get(urls[0] + "/hang")
            req = decode_payment_required(r.headers["payment-required"]).accepts[0]
            header = encode_payment_payload(await sign(req, payer_of(net)))
            payer_before = await net.token_balance(net.payer.address)
            doomed = asyncio.ensure_future(http.get(urls[0] + "/hang", headers={"PAYMENT-SIGNATURE": header}))
            for _ in range(600):  # the handler has started (and recorded its run) on replica 0
                if await db.fetchall("SELECT id FROM handler_runs WHERE path = '/hang'"):
                    break
                await asyncio.sleep(0.05)
            procs[0].kill()
            with pytest.raises(httpx.HTTPError):
                await doomed
            await asyncio.sleep(1.5)  # the dead replica's lease runs out
            again = await http.get(urls[1] + "/hang", headers={"PAYMENT-SIGNATURE": header})
            later = await http.get(urls[1] + "/hang", headers={"PAYMENT-SIGNATURE": header})
            runs = await db.fetchall("SELECT replica FROM handler_runs WHERE path = '/hang'")
            fresh = encode_payment_payload(await sign(req, payer_of(net)))
            served = await http.get(urls[1] + "/report", headers={"PAYMENT-SIGNATURE": fresh})
            rows = await db.fetchall("SELECT state, error, tx FROM seller_payments WHERE path = '/hang'")
    await db.aclose()
    assert again.status_code == 409 and again.json()["error"] == "payment_abandoned", again.text
    assert later.status_code == 409 and later.json()["error"] == "payment_abandoned"
    assert len(runs) == 1  # the handler never ran a second time
    assert [(r["state"], r["tx"]) for r in rows] == [("failed", None)] and "abandoned" in rows[0]["error"]
    assert served.status_code == 200, served.text
    assert await net.token_balance(net.payer.address) == payer_before - AMOUNT  # only the fresh payment


# ------------------------------------------------------------------------------------------ the replica


def _serve(config: dict[str, object]) -> None:  # pragma: no cover - runs in the subprocesses
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import JSONResponse
    from starlette.routing import Route

    from paywire.evm.assets import Asset
    from paywire.server.asgi import PaymentMiddleware
    from paywire.server.core import PaidRoute
    from paywire.server.pricing import Offer
    from paywire.store.db import open_database

    async def main() -> None:
        db = open_database(str(config["store"]))

        async def report(request: Request) -> JSONResponse:
            await asyncio.sleep(0.3)  # a slow handler widens the race window
            await db.execute("INSERT INTO handler_runs (replica, path) VALUES (?, ?)", (os.getpid(), "/report"))
            return JSONResponse({"report": "quarterly", "payer": request.state.payment.payer})

        async def hang(request: Request) -> JSONResponse:
            await db.execute("INSERT INTO handler_runs (replica, path) VALUES (?, ?)", (os.getpid(), "/hang"))
            await asyncio.sleep(120)  # the test kills this replica meanwhile
            return JSONResponse({"report": "never"})

        network, token, name, version = config["asset"]  # type: ignore[misc]
        asset = Asset(network, token, name, version)
        offers = (Offer(price=AMOUNT, asset=asset),)
        app = PaymentMiddleware(Starlette(routes=[Route("/report", report), Route("/hang", hang)]),
                                [PaidRoute("GET /report", offers=offers), PaidRoute("GET /hang", offers=offers)],
                                str(config["facilitator"]), pay_to=str(config["pay_to"]), store=str(config["store"]),
                                lease=float(config.get("lease", 30.0)))  # type: ignore[arg-type]
        await app.startup()
        await serve_until_killed(app)

    asyncio.run(main())


if __name__ == "__main__":  # pragma: no cover
    _serve(json.loads(sys.argv[1]))
