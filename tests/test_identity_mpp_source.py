"""An MPP credential's ``source`` as an identity (issue 13 item 3), through our ASGI middleware over real HTTP:
``evm/charge`` proves it (the method checks it names the signer, settled on the embedded chain), a
``lightning/charge`` only claims it (a preimage says nothing about who paid; real signed invoices from a local
node). A claim is recorded (ledger row, audit event) and shown to the handler labelled as one, and never counts
as proof."""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import AsyncIterator
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any

import httpx
import pytest
import pytest_asyncio
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from paywire.audit.queue import queued_events
from paywire.devnet import Devnet
from paywire.evm.assets import AssetRegistry
from paywire.facilitator.client import LocalFacilitatorClient
from paywire.identity.did import DidError, Identity, did_key
from paywire.lightning.bolt11 import decode_bolt11
from paywire.mpp.challenge import Challenge, parse_www_authenticate
from paywire.mpp.methods.evm_charge import sign_evm_charge
from paywire.mpp.methods.lightning_charge import lightning_credential
from paywire.server.asgi import PaymentMiddleware
from paywire.server.core import PaidRoute
from paywire.server.identity import IdentityGate, _listed
from paywire.server.pricing import Offer
from paywire.serving import serve_asgi
from paywire.x402.models import PaymentRequirements
from tests.helpers import close_devnet, full_facilitator, new_devnet, payer_of
from tests.lightning_fixtures import SigningNode

pytestmark = pytest.mark.asyncio(loop_scope="module")

SATS = 21
PRICE = 10_000
ALICE = did_key("Ed25519", bytes(range(32)))


@dataclass
class World:
    net: Devnet
    node: SigningNode
    url: str
    http: httpx.AsyncClient
    seen: list[dict[str, Any]]
    mw: PaymentMiddleware

    async def challenge(self, path: str, method: str) -> Challenge:
        r = await self.http.get(self.url + path)
        assert r.status_code == 402, r.text
        return next(c for c in parse_www_authenticate(r.headers.get_list("www-authenticate")) if c.method == method)

    async def pay_lightning(self, path: str, source: str | None) -> tuple[httpx.Response, Challenge]:
        ch = await self.challenge(path, "lightning")
        invoice = ch.request["methodDetails"]["invoice"]
        preimage = self.node.pay(decode_bolt11(invoice).payment_hash)
        auth = lightning_credential(ch, preimage, source=source).to_authorization()
        return await self.http.get(self.url + path, headers={"Authorization": auth}), ch

    async def row(self, ch: Challenge) -> Any:
        rows = [s for s in await self.mw.flow.payments.sales(limit=100) if s.payment_id == f"mpp:{ch.id}"]
        return rows[0] if rows else None


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def world(tmp_path_factory) -> AsyncIterator[World]:
    net = await new_devnet("embedded")
    node = SigningNode()
    seen: list[dict[str, Any]] = []

    async def thing(request: Request) -> Response:
        pay = request.state.payment
        seen.append({"path": request.url.path, "identity": pay.identity, "claimed": pay.claimed_identity})
        return JSONResponse({"identity": pay.identity, "claimed": pay.claimed_identity})

    routes = [
        PaidRoute("GET /ln", mpp=("lightning",), sats=SATS),
        PaidRoute("GET /ln-required", mpp=("lightning",), sats=SATS, identity="required"),
        PaidRoute("GET /evm", offers=(Offer(price=PRICE, asset=net.asset),), mpp=("evm",)),
    ]
    app = Starlette(routes=[Route(p, thing) for p in ("/ln", "/ln-required", "/evm")])
    mw = PaymentMiddleware(app, routes, LocalFacilitatorClient(full_facilitator(net)),
                           store=f"sqlite:///{tmp_path_factory.mktemp('src') / 's.db'}",
                           assets=AssetRegistry((net.asset,)), pay_to=net.payee.address, mpp_realm="src.test",
                           mpp_secret=os.urandom(32), lightning=node, audit="ident-source-1")
    async with serve_asgi(mw) as url, httpx.AsyncClient(timeout=60) as http:
        yield World(net, node, url, http, seen, mw)
    await mw.flow.aclose()
    await close_devnet(net)


@pytest.mark.parametrize("source", [ALICE, "did:pkh:eip155:1:0x" + "ab" * 20])
async def test_lightning_source_is_recorded_as_a_claim(world: World, source: str) -> None:
    """The ledger row says ``claimed:<did>``; the handler sees it as ``claimed_identity``, never as ``identity``."""
    r, ch = await world.pay_lightning("/ln", source)
    assert r.status_code == 200, r.text
    row = await world.row(ch)
    assert row is not None and row.state == "served", "the paid request left no served ledger row"
    assert row.identity == "claimed:" + source, f"the ledger row's identity is {row.identity!r}"
    assert r.json() == {"identity": None, "claimed": source}, f"the handler saw {r.json()}"
    events = [json.loads(e) for e in await queued_events(world.mw.flow.payments.db)]
    mine = [e["subject"]["identity"] for e in events if e["subject"].get("record") == row.id]
    assert mine and set(mine) == {"claimed:" + source}, f"the audit events name {mine}"


async def test_lightning_without_source_records_no_identity(world: World) -> None:
    r, ch = await world.pay_lightning("/ln", None)
    assert r.status_code == 200, r.text
    row = await world.row(ch)
    assert row is not None and row.identity is None, f"the ledger row's identity is {row.identity!r}"
    assert r.json() == {"identity": None, "claimed": None}


async def test_lightning_source_that_is_no_did_is_dropped_not_refused(world: World) -> None:
    """The source is only a claim: one we cannot read loses the claim, not the paid request."""
    r, ch = await world.pay_lightning("/ln", "did:pkh:eip155:1:not-an-address")
    assert r.status_code == 200, r.text
    row = await world.row(ch)
    assert row is not None and row.identity is None, f"the ledger row's identity is {row.identity!r}"


async def test_unpaid_request_to_a_lightning_only_sign_in_route_gets_a_402(world: World) -> None:
    """Regression: a sign-in route without x402 offers answered its unpaid request with a 500 (the sign-in
    template looked for a PAYMENT-REQUIRED header to splice into)."""
    r = await world.http.get(world.url + "/ln-required")
    assert r.status_code == 402, f"{r.status_code} {r.text}"
    methods = [c.method for c in parse_www_authenticate(r.headers.get_list("www-authenticate"))]
    assert methods == ["lightning"], f"the 402 offers {methods}"


async def test_required_identity_route_does_not_take_a_lightning_claim_as_proof(world: World) -> None:
    """``identity="required"``: a paid Lightning credential naming a DID is refused (402 identity_required),
    the handler does not run and no sale is recorded."""
    before = len(world.seen)
    r, ch = await world.pay_lightning("/ln-required", ALICE)
    assert r.status_code == 402, f"a claimed identity was accepted as proof: {r.status_code} {r.text}"
    assert "identity_required" in r.text, r.text
    assert len(world.seen) == before, "the handler ran for a claim"
    assert await world.row(ch) is None, "a refused request left a ledger row"


async def test_evm_source_matching_the_signer_is_proven(world: World) -> None:
    """An ``evm/charge`` source naming the signer is a proven identity: the ledger and handler show the did:pkh."""
    ch = await world.challenge("/evm", "evm")
    cred = await sign_evm_charge(ch, payer_of(world.net), world.net.asset)
    did = f"did:pkh:eip155:31337:{world.net.payer.address}"
    r = await world.http.get(world.url + "/evm",
                             headers={"Authorization": dataclasses.replace(cred, source=did).to_authorization()})
    assert r.status_code == 200, r.text
    row = await world.row(ch)
    assert row is not None and row.identity == did, f"the ledger row's identity is {row.identity if row else None}"
    assert r.json() == {"identity": did, "claimed": None}, f"the handler saw {r.json()}"


async def test_a_claim_is_never_listed_nor_repriced() -> None:
    """Allowlists and per-identity prices read proven identities only."""
    claim = Identity.claim("did:pkh:eip155:1:0x" + "ab" * 20)
    proven = Identity.from_did(claim.did, "siwx")
    assert not claim.proven and claim.addresses == () and claim.recorded == "claimed:" + claim.did
    allowed = frozenset({claim.did.lower()})
    assert _listed(proven, allowed) and not _listed(claim, allowed)
    route = SimpleNamespace(price_for_identity=lambda who, offer: 0)  # what repriced reads of a route
    req = PaymentRequirements(scheme="exact", network="eip155:1", amount=PRICE, asset="0x" + "11" * 20,
                              pay_to="0x" + "22" * 20, max_timeout_seconds=60, extra={})
    priced = ((req,), (6,))
    assert IdentityGate.repriced(route, priced, proven)[0][0].amount == 0
    assert IdentityGate.repriced(route, priced, claim) == priced, "a claim got the identity's price"
    with pytest.raises(DidError):
        Identity.claim("did:example:123")
