"""A seller process killed (SIGKILL) mid-payment and started again on the same store, ``settle="after"``.

The seller is this file run as a script (a real subprocess: Starlette behind our ASGI middleware, its store on
SQLite or PostgreSQL), settling through our facilitator served by the test on the embedded chain. The test's
facilitator can hold ``/verify`` until the seller is dead; the seller tells the test when it has claimed a payment
(a test hook wrapping ``PaymentStore.claim`` in the subprocess) and when a handler starts; handlers append a line
per run to a file, so run counts are exact across processes.

* killed before its handler started (during verify, before anything is claimed): the payer's retry of the same
  payment is served once, settled once, the handler runs once — no new signature needed (issue 11 item 6);
* killed while its handler ran: the retry is refused (409 ``payment_abandoned``), nothing settles, the handler
  does not run again.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
from typing import Any

import httpx
import pytest
import pytest_asyncio

from paywire.facilitator.app import create_app
from paywire.serving import serve_asgi
from paywire.x402.codec import decode_payment_required, encode_payment_payload
from tests.helpers import close_devnet, full_facilitator, new_devnet, payer_of, sign
from tests.script_servers import script_server, serve_until_killed

pytestmark = pytest.mark.asyncio(loop_scope="module")
AMOUNT = 20_000
LEASE = 1.0  # a dead seller's claim lapses after this; the retry waits for it inside the seller


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def net():
    n = await new_devnet("embedded")
    yield n
    await close_devnet(n)


class Gate:
    """ASGI wrapper around the facilitator: while ``hold_verify`` is set, ``/verify`` waits for ``release``;
    the seller's ``POST /claimed`` and ``POST /handler-started`` (test hooks) set the events of those names."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.hold_verify = False
        self.verify_arrived = asyncio.Event()
        self.release = asyncio.Event()
        self.handler_started = asyncio.Event()
        self.claimed = asyncio.Event()

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        path = scope.get("path") if scope["type"] == "http" else None
        if path in ("/handler-started", "/claimed"):
            (self.handler_started if path == "/handler-started" else self.claimed).set()
            await send({"type": "http.response.start", "status": 204, "headers": []})
            await send({"type": "http.response.body", "body": b""})
            return
        if path == "/verify" and self.hold_verify:
            self.verify_arrived.set()
            await self.release.wait()
        await self.app(scope, receive, send)


def seller(config: dict[str, object]) -> contextlib.AbstractAsyncContextManager[
        tuple[str, asyncio.subprocess.Process]]:
    """One seller process (this file as a script); yields (its URL, the process) once it serves."""
    return script_server(__file__, config)


async def kill(proc: asyncio.subprocess.Process) -> None:
    proc.kill()  # SIGKILL: no cleanup, the claim stays as it was
    await proc.wait()


@pytest_asyncio.fixture(loop_scope="module")
async def shop(net, store_url, tmp_path):
    """The gated facilitator and a seller config on ``store_url`` (SQLite file or PostgreSQL schema)."""
    gate = Gate(create_app(full_facilitator(net)))
    async with serve_asgi(gate) as fac_url:
        runs = tmp_path / "runs.txt"
        runs.touch()
        config = {"store": store_url, "facilitator": fac_url, "pay_to": net.payee.address, "lease": LEASE,
                  "runs": str(runs), "notify": fac_url,
                  "asset": [net.info.network, net.info.token, net.info.token_name, net.info.token_version]}
        yield gate, config, runs


async def balances(net) -> tuple[int, int]:
    return await net.token_balance(net.payer.address), await net.token_balance(net.payee.address)


async def paid_header(net, http: httpx.AsyncClient, url: str) -> str:
    r = await http.get(url)
    req = decode_payment_required(r.headers["payment-required"]).accepts[0]
    return encode_payment_payload(await sign(req, payer_of(net)))


@pytest.mark.parametrize("path", ["/report", "/report-before"])
async def test_seller_killed_during_verify_serves_the_retry_once(net, shop, path) -> None:
    """SIGKILL while the facilitator still verifies (the handler never started): after a restart the payer's
    retry with the same payment gets 200, the handler runs once, the tokens move once (settle="after", and
    "before" alike)."""
    gate, config, runs = shop
    gate.hold_verify = True
    async with httpx.AsyncClient(timeout=60) as http:
        async with seller(config) as (url, proc):
            header = await paid_header(net, http, url + path)
            before = await balances(net)
            doomed = asyncio.ensure_future(http.get(url + path, headers={"PAYMENT-SIGNATURE": header}))
            await gate.verify_arrived.wait()
            await kill(proc)
            # a payment is claimed once verified: the crash leaves nothing behind (older versions left a
            # ``verifying`` claim, which a retry takes over once its lease lapses)
            assert not gate.claimed.is_set(), "nothing may be claimed before the facilitator verified the payment"
            with pytest.raises(httpx.HTTPError):
                await doomed
        gate.hold_verify = False
        gate.release.set()
        async with seller(config) as (url, _):
            retry = await http.get(url + path, headers={"PAYMENT-SIGNATURE": header})
            again = await http.get(url + path, headers={"PAYMENT-SIGNATURE": header})
    assert retry.status_code == 200, f"the retry after a crash during verify was not served: {retry.text}"
    assert retry.json()["report"] == "quarterly", retry.text
    assert again.status_code == 200 and again.content == retry.content, "a later copy is not the recorded replay"
    assert runs.read_text().splitlines().count(path) == 1, "the handler did not run exactly once"
    assert await balances(net) == (before[0] - AMOUNT, before[1] + AMOUNT), "the payment did not settle once"


async def test_seller_killed_in_the_handler_retires_the_payment(net, shop) -> None:
    """SIGKILL while the paid handler runs: after a restart the retry gets 409 ``payment_abandoned``, the
    handler does not run again and nothing settles."""
    gate, config, runs = shop
    async with httpx.AsyncClient(timeout=60) as http:
        async with seller(config) as (url, proc):
            header = await paid_header(net, http, url + "/hang")
            before = await balances(net)
            doomed = asyncio.ensure_future(http.get(url + "/hang", headers={"PAYMENT-SIGNATURE": header}))
            await gate.handler_started.wait()
            await kill(proc)
            with pytest.raises(httpx.HTTPError):
                await doomed
        async with seller(config) as (url, _):
            retry = await http.get(url + "/hang", headers={"PAYMENT-SIGNATURE": header})
    assert retry.status_code == 409, f"a payment whose handler had started was not retired: {retry.text}"
    assert retry.json()["error"] == "payment_abandoned", retry.text
    assert runs.read_text().splitlines().count("/hang") == 1, "the handler ran again"
    assert await balances(net) == before, "an abandoned payment moved tokens"


# -------------------------------------------------------------------------------------------- the seller


def _serve(config: dict[str, Any]) -> None:  # pragma: no cover - runs in the subprocess
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import JSONResponse
    from starlette.routing import Route

    from paywire.evm.assets import Asset
    from paywire.server.asgi import PaymentMiddleware
    from paywire.server.core import PaidRoute
    from paywire.server.pricing import Offer
    from paywire.store.payments import PaymentStore

    real_claim = PaymentStore.claim

    def record_run(path: str) -> None:
        with open(config["runs"], "a") as f:
            f.write(path + "\n")

    async def main() -> None:
        async with httpx.AsyncClient(timeout=60) as notify:
            async def claim(self: PaymentStore, *args: Any, **kwargs: Any) -> Any:  # test hook: tell the test
                rec = await real_claim(self, *args, **kwargs)
                if rec is not None:
                    await notify.post(config["notify"] + "/claimed")
                return rec

            PaymentStore.claim = claim  # type: ignore[method-assign]

            async def report(request: Request) -> JSONResponse:
                record_run(request.url.path)
                return JSONResponse({"report": "quarterly", "payer": request.state.payment.payer})

            async def hang(request: Request) -> JSONResponse:
                record_run("/hang")
                await notify.post(config["notify"] + "/handler-started")
                await asyncio.Event().wait()  # the test kills this process meanwhile
                return JSONResponse({"report": "never"})

            network, token, name, version = config["asset"]
            offers = (Offer(price=AMOUNT, asset=Asset(network, token, name, version)),)
            app = PaymentMiddleware(Starlette(routes=[Route("/report", report), Route("/report-before", report),
                                                      Route("/hang", hang)]),
                                    [PaidRoute("GET /report", offers=offers), PaidRoute("GET /hang", offers=offers),
                                     PaidRoute("GET /report-before", offers=offers, settle="before")],
                                    config["facilitator"], pay_to=config["pay_to"], store=config["store"],
                                    lease=float(config["lease"]))
            await app.startup()
            await serve_until_killed(app)

    asyncio.run(main())


if __name__ == "__main__":  # pragma: no cover
    _serve(json.loads(sys.argv[1]))
