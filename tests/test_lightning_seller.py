"""Lightning on our seller with a local signing node (real signed BOLT11s, no network): the preimage's hex case
means the same in L402 and MPP ``lightning/charge`` and cannot get a payment served twice, and an L402
credential may carry several macaroons (issue 11 item 10; checklist 99, 113)."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from dataclasses import dataclass

import httpx
import pytest
import pytest_asyncio
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

pytest.importorskip("pymacaroons", reason="pymacaroons (the l402 extra) is not installed")

from paywire.l402 import macaroons as M
from paywire.l402.header import parse_challenges_l402
from paywire.l402.identifier import Identifier
from paywire.lightning.base import Invoice, LightningError
from paywire.mpp import problems as P
from paywire.mpp.challenge import parse_www_authenticate
from paywire.mpp.credential import ChallengeEcho, Credential
from paywire.server.asgi import PaymentMiddleware
from paywire.server.core import PaidRoute
from paywire.store.db import open_database
from tests.lightning_fixtures import SigningNode

SATS = 21


@dataclass
class Seller:
    client: httpx.AsyncClient
    node: SigningNode
    runs: dict[str, int]
    store: str


@pytest_asyncio.fixture
async def seller(tmp_path) -> AsyncIterator[Seller]:
    node = SigningNode()
    runs: dict[str, int] = {}

    async def thing(request: Request) -> JSONResponse:
        runs[request.url.path] = runs.get(request.url.path, 0) + 1
        return JSONResponse({"protocol": request.state.payment.protocol})

    app = Starlette(routes=[Route("/l402", thing), Route("/mpp", thing)])
    store = f"sqlite:///{tmp_path / 'seller.db'}"
    mw = PaymentMiddleware(app, [PaidRoute("GET /l402", l402="weather", sats=SATS),
                                 PaidRoute("GET /mpp", mpp=("lightning",), sats=SATS)],
                           "http://127.0.0.1:9", store=store, lightning=node, mpp_realm="ln.test",
                           mpp_secret=os.urandom(32))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=mw), base_url="http://seller") as c:
        yield Seller(c, node, runs, store)
    await mw.flow.aclose()


async def _ledger_rows(store: str) -> int:
    db = open_database(store)
    try:
        row = await db.fetchone("SELECT COUNT(*) AS n FROM seller_payments")
        return int(row["n"]) if row else 0
    finally:
        await db.aclose()


async def test_mpp_lightning_reads_the_preimage_in_either_case_and_serves_once(seller: Seller) -> None:
    """An uppercase preimage pays (as L402 accepts it); the same proof again in lowercase is a used proof,
    not a second payment."""
    r = await seller.client.get("/mpp")
    (ch,) = parse_www_authenticate(r.headers.get_list("www-authenticate"))
    pre = seller.node.pay(ch.request["methodDetails"]["paymentHash"])

    def auth(preimage: str) -> str:
        return Credential(ChallengeEcho.of(ch), {"preimage": preimage}).to_authorization()

    ok = await seller.client.get("/mpp", headers={"Authorization": auth(pre.upper())})
    assert ok.status_code == 200, f"an uppercase preimage got {ok.status_code}: {ok.text}"
    for variant in (pre, pre.upper(), pre[:32].upper() + pre[32:]):
        again = await seller.client.get("/mpp", headers={"Authorization": auth(variant)})
        assert again.status_code == 402, f"the used proof in another case got {again.status_code}"
        assert again.json()["type"] == P.INVALID_CHALLENGE.uri, f"the used proof got {again.json()['type']}"
    assert seller.runs == {"/mpp": 1}, f"one payment ran the handler {seller.runs}"
    assert await _ledger_rows(seller.store) == 1, "one payment left several ledger rows"


async def test_l402_reads_the_preimage_in_either_case_as_one_token(seller: Seller) -> None:
    """L402 tokens are reusable: upper-, lower- and mixed-case preimages are the same token, one ledger row."""
    r = await seller.client.get("/l402")
    ch = parse_challenges_l402(r.headers.get_list("www-authenticate"))[0]
    payment_hash = M.identifier_of(M.decode(ch.macaroon)).payment_hash.hex()
    pre = seller.node.pay(payment_hash)
    for variant in (pre.upper(), pre, pre[:32].upper() + pre[32:]):
        ok = await seller.client.get("/l402", headers={"Authorization": f"L402 {ch.macaroon}:{variant}"})
        assert ok.status_code == 200, f"preimage {variant[:6]}… got {ok.status_code}: {ok.text}"
    assert seller.runs == {"/l402": 3}, f"three requests with a paid token ran the handler {seller.runs}"
    assert await _ledger_rows(seller.store) == 1, "one token, its preimage in three cases, made several rows"


async def test_l402_credential_with_several_macaroons(seller: Seller) -> None:
    """``Authorization: L402 <m1>,<m2>:<preimage>`` (the spec's grammar) is served when one macaroon is valid;
    when none is, the 401 says why for each."""
    r = await seller.client.get("/l402")
    ch = parse_challenges_l402(r.headers.get_list("www-authenticate"))[0]
    pre = seller.node.pay(M.identifier_of(M.decode(ch.macaroon)).payment_hash.hex())
    foreign = M.encode(M.mint(Identifier.new(os.urandom(32)), os.urandom(32), ["services=weather:0"]))
    ok = await seller.client.get("/l402", headers={"Authorization": f"L402 {foreign},{ch.macaroon}:{pre}"})
    assert ok.status_code == 200, f"two macaroons, the second valid, got {ok.status_code}: {ok.text}"
    bad = await seller.client.get("/l402", headers={"Authorization": f"L402 {foreign},{foreign}:{pre}"})
    assert bad.status_code == 401, f"two foreign macaroons got {bad.status_code}"
    assert any(v.startswith("L402") for v in bad.headers.get_list("www-authenticate")), "401 without a challenge"


class RendezvousNode(SigningNode):
    """Makes an invoice only once a second invoice request is in flight (an L402 and an MPP one for the same 402),
    or gives up after a few seconds: a seller that asks its node one invoice at a time gets only one challenge."""

    def __init__(self) -> None:
        super().__init__()
        self.asked = 0
        self.both = asyncio.Event()

    async def create_invoice(self, amount_sat: int, memo: str = "", expiry: int = 600) -> Invoice:
        self.asked += 1
        if self.asked >= 2:
            self.both.set()
        try:
            await asyncio.wait_for(self.both.wait(), 5)
        except TimeoutError:
            raise LightningError("the other invoice was never asked for while this one waited") from None
        return await super().create_invoice(amount_sat, memo, expiry)


async def test_a_mixed_route_asks_for_its_invoices_at_once(tmp_path) -> None:
    """A route with L402 and MPP lightning needs two invoices for one 402: both are asked for concurrently, so a
    slow node costs one round trip, not one per protocol; both challenges are in the reply, L402 first."""
    node = RendezvousNode()
    app = Starlette(routes=[Route("/both", lambda r: JSONResponse({}))])
    mw = PaymentMiddleware(app, [PaidRoute("GET /both", mpp=("lightning",), l402="weather", sats=SATS)],
                           "http://127.0.0.1:9", store=f"sqlite:///{tmp_path / 's.db'}", lightning=node,
                           mpp_realm="ln.test", mpp_secret=os.urandom(32))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=mw), base_url="http://seller") as c:
        r = await c.get("/both")
    await mw.flow.aclose()
    assert r.status_code == 402
    schemes = [v.split(" ", 1)[0] for v in r.headers.get_list("www-authenticate")]
    assert schemes == ["L402", "L402", "Payment"], schemes
    assert node.asked == 2 and len(node.preimages) == 2
