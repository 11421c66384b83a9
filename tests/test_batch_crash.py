"""A ``batch-settlement`` seller process killed (SIGKILL) between its handler's success and the commit of the
charge — or just after the commit, before the answer left — then started again on the same SQLite store.

The seller is this file run as a script (Starlette behind our ASGI middleware), settling through our facilitator
served by the test on the embedded chain with our escrow. A test hook around ``ChannelStore.commit`` tells the
test when a commit is about to run (or has run) and then hangs while a crash file exists, so the kill lands
exactly there. Handlers append a line per run to a file, so run counts are exact across processes.

* killed before the commit: the payer's retry of the same voucher is served after the dead request's lease
  lapses, and the channel is charged once (the handler ran twice: the first answer never left);
* killed after the commit: the retry gets the corrective 402 with our own voucher as proof — the charge is
  neither lost nor counted twice, and the handler does not run again.

Either way the channel's final charge equals the sum of the committed requests in the seller's sales ledger.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import pytest_asyncio

from paywire.chain import EmbeddedChain, RpcChain
from paywire.chain.permit2 import permit2_code
from paywire.chain.rail import EvmNetwork
from paywire.chain.tx import TxSender
from paywire.devnet import Devnet, setup_devnet
from paywire.facilitator.app import create_app
from paywire.facilitator.core import Facilitator
from paywire.schemes.evm_batch import payload as pl
from paywire.schemes.evm_batch.client import BatchEvmClient
from paywire.schemes.registry import default_registry
from paywire.serving import serve_asgi
from paywire.store.channels import ChannelStore
from paywire.store.db import open_database
from paywire.x402.codec import decode_payment_required, decode_payment_response, encode_payment_payload
from paywire.x402.models import PaymentPayload
from tests.helpers import close_devnet
from tests.script_servers import script_server, serve_until_killed

pytestmark = pytest.mark.asyncio(loop_scope="module")
PRICE = 1_000
LEASE = 1.0


class Hooks:
    """ASGI wrapper around the facilitator app: the seller's ``POST /committing`` sets ``committing``."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.committing = asyncio.Event()

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http" and scope.get("path") == "/committing":
            self.committing.set()
            await send({"type": "http.response.start", "status": 204, "headers": []})
            await send({"type": "http.response.body", "body": b""})
            return
        await self.app(scope, receive, send)


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def net() -> AsyncIterator[Devnet]:
    n = await setup_devnet(RpcChain(EmbeddedChain(chain_id=31337, code=permit2_code())))
    yield n
    await close_devnet(n)


def seller(config: dict[str, object]) -> contextlib.AbstractAsyncContextManager[
        tuple[str, asyncio.subprocess.Process]]:
    """One seller process (this file as a script); yields (its URL, the process) once it serves."""
    return script_server(__file__, config)


async def charged(store: str, channel_id: str) -> int:
    db = open_database(store)
    try:
        row = await ChannelStore(db).get(channel_id)
        return row.charged if row else -1
    finally:
        await db.aclose()


@pytest.mark.parametrize("when", ["before", "after"])
async def test_seller_killed_around_the_commit_neither_loses_nor_doubles_a_charge(net: Devnet, tmp_path: Path,
                                                                                  when: str) -> None:
    rails = [EvmNetwork(net.info.network, net.chain, [TxSender(net.chain, net.facilitator.private_key)])]
    hooks = Hooks(create_app(Facilitator(default_registry.facilitators_for(rails))))
    runs, crash = tmp_path / "runs.txt", tmp_path / "crash"
    runs.touch()
    store = f"sqlite:///{tmp_path / 'seller.db'}"
    async with serve_asgi(hooks) as fac_url, httpx.AsyncClient(timeout=60) as http:
        config = {"store": store, "facilitator": fac_url, "pay_to": net.payee.address, "lease": LEASE,
                  "runs": str(runs), "crash": str(crash), "when": when,
                  "asset": [net.info.network, net.info.token, net.info.token_name, net.info.token_version]}
        client = BatchEvmClient(net.payer, salt=900 + (when == "after"))
        async with seller(config) as (url, proc):
            req = decode_payment_required((await http.get(url + "/metered")).headers["payment-required"]).accepts[0]
            first = await http.get(url + "/metered", headers=header(req, await client.create_payload(req)))
            assert first.status_code == 200, first.text
            await client.settled(req, decode_payment_response(first.headers["payment-response"]))
            voucher = header(req, await client.create_payload(req))  # charged + PRICE
            crash.touch()
            doomed = asyncio.ensure_future(http.get(url + "/metered", headers=voucher))
            await hooks.committing.wait()
            proc.kill()  # SIGKILL: the request's lease and (before) its uncommitted charge stay as they were
            await proc.wait()
            with pytest.raises(httpx.HTTPError):
                await doomed
        crash.unlink()
        cid = client.channel_id(req)
        assert await charged(store, cid) == (PRICE if when == "before" else 2 * PRICE)
        async with seller(config) as (url, _):
            retry = await http.get(url + "/metered", headers=voucher)
    ran = runs.read_text().splitlines().count("/metered")
    if when == "before":
        assert retry.status_code == 200, f"the retry of an uncommitted voucher was not served: {retry.text}"
        assert ran == 3, "the handler should have run for the deposit, the killed request and the retry"
    else:
        pr = decode_payment_required(retry.headers["payment-required"])
        assert (retry.status_code, pr.error) == (402, pl.CUMULATIVE_MISMATCH), retry.text
        assert pr.accepts[0].extra["channelState"]["chargedCumulativeAmount"] == str(2 * PRICE)
        assert await client.recover(pr.error or "", req, pr.accepts[0].extra), "our own voucher is not proof"
        assert ran == 2, "a committed request ran again"
    assert await charged(store, cid) == 2 * PRICE, "the charge was lost or counted twice"
    # the channel's charge is the sum of the requests whose charge was committed — the deposit's and, killed
    # before the commit, the retry's; killed after it, the killed request's (the retry ran nothing)
    assert await sold(store, cid) == [PRICE, PRICE], "the sales ledger and the channel disagree"


async def sold(store: str, channel_id: str) -> list[int]:
    """The seller's sales ledger rows of the channel (written in the commit's transaction): one per charge."""
    from paywire.store.payments import PaymentStore

    payments = await PaymentStore.open(store)
    try:
        return [r.amount for r in await payments.sales() if r.auth_key.startswith(f"channel:{channel_id}:")
                and r.state == "served"]
    finally:
        await payments.aclose()


def header(req: Any, inner: Any) -> dict[str, str]:
    return {"PAYMENT-SIGNATURE": encode_payment_payload(PaymentPayload(accepted=req, payload=dict(inner)))}


# -------------------------------------------------------------------------------------------- the seller


def _serve(config: dict[str, Any]) -> None:  # pragma: no cover - runs in the subprocess
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import JSONResponse
    from starlette.routing import Route

    from paywire.evm.assets import Asset, AssetRegistry
    from paywire.facilitator.client import HttpFacilitatorClient
    from paywire.server.asgi import PaymentMiddleware
    from paywire.server.core import PaidRoute
    from paywire.server.pricing import Offer

    real_commit = ChannelStore.commit

    async def main() -> None:
        async with httpx.AsyncClient(timeout=60) as notify:
            async def commit(self: ChannelStore, *args: Any, **kwargs: Any) -> Any:  # test hook
                hang = os.path.exists(config["crash"])
                if hang and config["when"] == "before":
                    await notify.post(config["facilitator"] + "/committing")
                    await asyncio.Event().wait()
                done = await real_commit(self, *args, **kwargs)
                if hang:
                    await notify.post(config["facilitator"] + "/committing")
                    await asyncio.Event().wait()
                return done

            ChannelStore.commit = commit  # type: ignore[method-assign]

            async def metered(request: Request) -> JSONResponse:
                with open(config["runs"], "a") as f:
                    f.write("/metered\n")
                return JSONResponse({"ok": True})

            network, token, name, version = config["asset"]
            asset = Asset(network, token, name, version)
            routes = [PaidRoute("GET /metered", offers=(Offer(PRICE, asset=asset, scheme="batch-settlement"),))]
            mw = PaymentMiddleware(Starlette(routes=[Route("/metered", metered)]), routes,
                                   HttpFacilitatorClient(config["facilitator"]), pay_to=config["pay_to"],
                                   network=network, store=config["store"], lease=config["lease"], channel_claims=False,
                                   assets=AssetRegistry((asset,)))
            await serve_until_killed(mw)

    asyncio.run(main())


if __name__ == "__main__":  # pragma: no cover
    _serve(json.loads(sys.argv[1]))
