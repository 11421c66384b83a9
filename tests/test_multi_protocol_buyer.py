"""Our buyer pays MPP ``evm/charge``: against our own multi-protocol seller and against the official pympp 0.16.0
server on anvil (whose nonce derivation differs: our client retries once with the other one and remembers it).
Real settlement asserted by token balances."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator

import httpx
import pytest
import pytest_asyncio
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from paywire.client.engine import Buyer
from paywire.client.httpx_transport import PaymentTransport
from paywire.client.policy import Policy
from paywire.devnet import Devnet
from paywire.evm.assets import AssetRegistry
from paywire.facilitator.app import create_app
from paywire.facilitator.client import LocalFacilitatorClient
from paywire.server.asgi import PaymentMiddleware
from paywire.server.core import PaidRoute
from paywire.server.pricing import Offer
from paywire.serving import serve_asgi
from tests.helpers import close_devnet, full_facilitator, new_devnet

pytestmark = pytest.mark.asyncio(loop_scope="module")
PRICE = 10_000


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def net() -> AsyncIterator[Devnet]:
    n = await new_devnet("anvil")
    yield n
    await close_devnet(n)


def buyer(net: Devnet, tmp_path, **kw) -> Buyer:
    from paywire.wallet import Wallet

    policy = Policy(max_per_payment="$0.05", total="$1", assets=(net.asset,), **kw)
    return Buyer(Wallet.from_key(net.payer.private_key), policy, store=f"sqlite:///{tmp_path / 'b.db'}")


async def balances(net: Devnet) -> tuple[int, int]:
    return await net.token_balance(net.payer.address), await net.token_balance(net.payee.address)


async def test_buyer_prefers_x402_then_pays_mpp_when_told(net: Devnet, tmp_path) -> None:
    """One route offers x402 and MPP: by default x402 pays; with protocols=("mpp",) MPP pays; receipts in one
    ledger with their protocol and reference."""
    calls = {"n": 0}

    async def thing(request: Request) -> Response:
        calls["n"] += 1
        return JSONResponse({"protocol": request.state.payment.protocol})

    mw = PaymentMiddleware(Starlette(routes=[Route("/both", thing)]),
                           [PaidRoute("GET /both", offers=(Offer(price=PRICE, asset=net.asset),), mpp=("evm",))],
                           LocalFacilitatorClient(full_facilitator(net)), store=f"sqlite:///{tmp_path / 's.db'}",
                           assets=AssetRegistry((net.asset,)), pay_to=net.payee.address, mpp_realm="shop.test",
                           mpp_secret=os.urandom(32))
    async with serve_asgi(mw) as url:
        for protocols, expect in ((("x402", "mpp", "l402"), "x402"), (("mpp",), "mpp")):
            b = buyer(net, tmp_path, protocols=protocols)
            before = await balances(net)
            async with httpx.AsyncClient(transport=PaymentTransport(b), timeout=60) as c:
                r = await c.get(url + "/both")
            assert r.status_code == 200, r.text
            assert r.json()["protocol"] == expect
            assert await balances(net) == (before[0] - PRICE, before[1] + PRICE)
            (rc, *_) = await b.history()
            assert rc.outcome == "paid" and rc.protocol == expect and rc.tx and rc.tx.startswith("0x")
            await b.aclose()
    await mw.flow.aclose()


async def test_buyer_pays_pympp_server(net: Devnet, tmp_path) -> None:
    """Interop: our client → pympp's evm/charge server (settling through our facilitator over HTTP). We try
    the spec's keccak(id‖realm) nonce first; pympp wants its JSON-array form and says "challenge hash
    mismatch"; we re-sign once with the other derivation, pay, and use it directly next time."""
    pytest.importorskip("mpp", reason="pympp not installed")
    from mpp.methods.evm import server as evm_server
    from mpp.server import Mpp
    from mpp.server.decorator import pay

    a = net.asset
    async with serve_asgi(create_app(full_facilitator(net))) as fac_url:
        method = evm_server.charge(currency=a.address, recipient=net.payee.address, chain_id=31337,
                                   decimals=a.decimals, authorization={"name": a.name, "version": a.version},
                                   facilitator=fac_url)
        mpp = Mpp(methods=[method], realm="pympp.test", secret_key=os.urandom(32).hex())

        @pay(mpp.charge(amount="0.01"))
        async def paid(request: Request, credential, receipt) -> Response:
            return JSONResponse({"ok": True})

        app = Starlette(routes=[Route("/paid", paid)])
        b = buyer(net, tmp_path, protocols=("mpp",))
        async with serve_asgi(app) as url, httpx.AsyncClient(transport=PaymentTransport(b), timeout=60) as c:
            for _ in range(2):
                before = await balances(net)
                r = await c.get(url + "/paid")
                assert r.status_code == 200, r.text
                assert "payment-receipt" in r.headers
                assert await balances(net) == (before[0] - PRICE, before[1] + PRICE)
        host = next(iter(b._variants))
        assert b._variants[host] == "json"
        paid_rows = [h for h in await b.history() if h.outcome == "paid"]
        assert len(paid_rows) == 2 and all(h.protocol == "mpp" for h in paid_rows)
        await b.aclose()
