"""Risk at the seller, over real HTTP with a real facilitator on the embedded chain: the ``request`` and
``payment`` checkpoints deny before the facilitator hears of a payment (no /verify, no money moves), x402 gets a
403 JSON without ``PAYMENT-RESPONSE``, MPP a 403 problem+json; challenge, review and shadow behave as
documented; the sanctions list reloads without a restart; a forged-signature storm stops after five failures."""

from __future__ import annotations

import base64
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import pytest_asyncio
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from paywire.devnet import Devnet
from paywire.evm.assets import AssetRegistry
from paywire.facilitator.app import create_app
from paywire.facilitator.client import HttpFacilitatorClient
from paywire.mpp import problems as P
from paywire.mpp.challenge import parse_www_authenticate
from paywire.mpp.methods.evm_charge import sign_evm_charge
from paywire.risk.engine import RiskEngine
from paywire.risk.lists import RiskLists
from paywire.risk.rules import load_rules, parse_rules
from paywire.risk.seller import SellerRisk
from paywire.server.asgi import PaymentMiddleware
from paywire.server.core import PaidRoute
from paywire.server.pricing import Offer
from paywire.serving import serve_asgi
from paywire.store.risk import RiskRecords
from paywire.x402.codec import decode_payment_required, encode_payment_payload
from tests.helpers import close_devnet, full_facilitator, new_devnet, payer_of, sign

pytestmark = pytest.mark.asyncio(loop_scope="module")
PRICE = 10_000
REALM, SECRET = "risk.test", b"r" * 32


class CountingApp:
    """The facilitator app, counting the requests each path gets (``/verify``, ``/settle``)."""

    def __init__(self, app: Any) -> None:
        self.app, self.calls = app, {}

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            self.calls[scope["path"]] = self.calls.get(scope["path"], 0) + 1
        await self.app(scope, receive, send)

    def __getitem__(self, path: str) -> int:
        return self.calls.get(path, 0)


@dataclass
class World:
    net: Devnet
    url: str
    http: httpx.AsyncClient
    mw: PaymentMiddleware
    facilitator: CountingApp
    sanctions: Path
    records: RiskRecords
    facilitator_url: str
    runs: dict[str, int] = field(default_factory=dict)

    def use(self, engine: RiskEngine, **kw: Any) -> RiskEngine:
        risk = SellerRisk(engine, trust_forwarded=True, **kw)
        risk.bind(self.mw.flow.payments.db, self.mw.flow)
        self.mw.flow.risk = risk
        return engine

    def engine(self, rules: str | None = None, **kw: Any) -> RiskEngine:
        ruleset = parse_rules(rules, source="test.toml") if rules is not None else load_rules()
        return self.use(RiskEngine(ruleset, lists=RiskLists(sanctions=self.sanctions, check_every=0),
                                   recorder=self.records, sample_allows=0, **kw))

    async def balances(self) -> tuple[int, int]:
        return (await self.net.token_balance(self.net.payer.address),
                await self.net.token_balance(self.net.payee.address))

    async def x402(self, path: str = "/thing") -> str:
        r = await self.http.get(self.url + path)
        req = decode_payment_required(r.headers["payment-required"]).accepts[0]
        return encode_payment_payload(await sign(req, payer_of(self.net)))

    async def get(self, path: str, payment: str | None = None, ip: str = "198.51.100.1",
                  **headers: str) -> httpx.Response:
        h = {"X-Forwarded-For": ip, **headers}
        if payment is not None:
            h["PAYMENT-SIGNATURE"] = payment
        return await self.http.get(self.url + path, headers=h)

    def sanction(self, *addresses: str) -> None:
        self.sanctions.write_text("address\n" + "".join(a + "\n" for a in addresses))


def shop(runs: dict[str, int]) -> Starlette:
    async def thing(request: Request) -> Response:
        runs[request.url.path] = runs.get(request.url.path, 0) + 1
        return JSONResponse({"ok": True, "protocol": request.state.payment.protocol})

    return Starlette(routes=[Route("/thing", thing), Route("/both", thing)])


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def world(tmp_path_factory) -> AsyncIterator[World]:
    net = await new_devnet("embedded")
    tmp = tmp_path_factory.mktemp("risk")
    sanctions = tmp / "sanctions.csv"
    sanctions.write_text("address\n")
    runs: dict[str, int] = {}
    a = net.asset
    routes = [PaidRoute("GET /thing", offers=(Offer(price=PRICE, asset=a),)),
              PaidRoute("GET /both", offers=(Offer(price=PRICE, asset=a),), mpp=("evm",))]
    fac = CountingApp(create_app(full_facilitator(net)))
    records = await RiskRecords.open(f"sqlite:///{tmp / 'risk.db'}")
    async with serve_asgi(fac) as fac_url:
        mw = PaymentMiddleware(shop(runs), routes, HttpFacilitatorClient(fac_url), store=f"sqlite:///{tmp / 's.db'}",
                               assets=AssetRegistry((a,)), pay_to=net.payee.address, mpp_realm=REALM,
                               mpp_secret=SECRET)
        async with serve_asgi(mw) as url, httpx.AsyncClient(timeout=60) as http:
            await mw.flow.startup()
            yield World(net, url, http, mw, fac, sanctions, records, fac_url, runs)
        await mw.flow.aclose()
    await records.aclose()
    await close_devnet(net)


async def test_sanctioned_payer_x402_gets_403_and_nothing_moves(world: World) -> None:
    """x402 deny: 403 with reason and rule, no PAYMENT-RESPONSE, no /verify, no handler run, balances unchanged."""
    world.engine()
    world.sanction(world.net.payer.address)
    payment = await world.x402()
    before, verifies = await world.balances(), world.facilitator["/verify"]
    r = await world.get("/thing", payment)
    assert r.status_code == 403, r.text
    assert r.json() == {"error": "risk_denied", "reason": "sanctioned", "rule": "sanctioned"}, "body names the rule"
    assert "payment-response" not in r.headers, "a denial carries no payment receipt"
    assert world.facilitator["/verify"] == verifies, "the facilitator was asked to verify a denied payment"
    assert world.runs.get("/thing", 0) == 0, "the handler ran for a denied payment"
    assert await world.balances() == before, "money moved after a deny"


async def test_sanctions_list_reload_without_restart(world: World) -> None:
    """Rewriting the sanctions file takes effect on the next request; each decision records the list version."""
    engine = world.engine()
    world.sanction(world.net.payer.address)
    denied = await world.get("/thing", await world.x402())
    old_version = engine.lists.version
    world.sanction("0x000000000000000000000000000000000000dead")
    served = await world.get("/thing", await world.x402())
    assert denied.status_code == 403, denied.text
    assert served.status_code == 200, f"the reloaded list still denies: {served.text}"
    assert engine.lists.version != old_version, "the list version did not change with the file"
    rows = await world.records.decisions(limit=1, rule="sanctioned")
    assert rows[0].list_version == old_version, "the decision does not record the list version it used"


async def test_sanctioned_payer_mpp_gets_403_problem(world: World) -> None:
    """MPP deny: 403 application/problem+json (verification-failed) naming reason and rule; nothing moves."""
    world.engine()
    world.sanction(world.net.payer.address)
    r = await world.http.get(world.url + "/both")
    ch = next(c for c in parse_www_authenticate(r.headers.get_list("www-authenticate")) if c.method == "evm")
    cred = await sign_evm_charge(ch, payer_of(world.net), world.net.asset)
    before, verifies = await world.balances(), world.facilitator["/verify"]
    r = await world.http.get(world.url + "/both", headers={"Authorization": cred.to_authorization()})
    assert r.status_code == 403, r.text
    assert r.headers["content-type"].startswith(P.CONTENT_TYPE), r.headers
    body = r.json()
    assert (body["type"], body["status"], body["reason"], body["rule"]) == (
        P.VERIFICATION_FAILED.uri, 403, "sanctioned", "sanctioned"), body
    assert "payment-receipt" not in r.headers, "a denial carries no receipt"
    assert world.facilitator["/verify"] == verifies, "the facilitator was asked to verify a denied payment"
    assert await world.balances() == before, "money moved after a deny"


async def test_forged_signature_storm_stops_before_the_facilitator(world: World) -> None:
    """An IP sending forged signatures (each claiming another payer): the first five reach the facilitator
    (402 invalid), the rest get 403 too_many_failures without a facilitator call."""
    world.engine()
    world.sanction()
    verifies = world.facilitator["/verify"]
    replies = []
    for i in range(12):
        forged = json.loads(base64.b64decode(await world.x402()))
        forged["payload"]["authorization"]["from"] = "0x" + f"{i + 1:040x}"
        replies.append(await world.get("/thing", base64.b64encode(json.dumps(forged).encode()).decode(),
                                       ip="203.0.113.9"))
    statuses = [r.status_code for r in replies]
    assert statuses[:5] == [402] * 5, statuses
    assert statuses[5:] == [403] * 7, f"the storm was not stopped: {statuses}"
    assert replies[-1].json()["reason"] == "too_many_failures", replies[-1].text
    assert world.facilitator["/verify"] == verifies + 5, "denied forgeries still reached the facilitator"
    other = await world.get("/thing", await world.x402(), ip="198.51.100.77")
    assert other.status_code == 200, f"another IP was caught by the storm: {other.text}"


CUSTOM = """
[[rule]]
id = "big_spender"
checkpoint = "payment"
when = "amount >= 0.01"
action = "{action}"
reason = "needs_{action}"
shadow = {shadow}
"""


async def test_challenge_asks_for_a_fresh_payment_without_a_facilitator_call(world: World) -> None:
    world.engine(CUSTOM.format(action="challenge", shadow="false"))
    verifies, before = world.facilitator["/verify"], await world.balances()
    r = await world.get("/thing", await world.x402())
    assert r.status_code == 402, r.text
    assert r.json()["error"].startswith("risk_challenge:needs_challenge; bring an identity proof"), r.json()
    assert decode_payment_required(r.headers["payment-required"]).accepts, "no fresh challenge offered"
    assert world.facilitator["/verify"] == verifies, "a challenged payment reached the facilitator"
    assert await world.balances() == before


async def test_review_serves_and_records(world: World) -> None:
    world.engine(CUSTOM.format(action="review", shadow="false"))
    before = await world.balances()
    r = await world.get("/thing", await world.x402())
    assert r.status_code == 200, r.text
    assert await world.balances() == (before[0] - PRICE, before[1] + PRICE), "a reviewed payment was not settled"
    (row,) = await world.records.decisions(limit=1)
    assert (row.action, row.rule, row.reason) == ("review", "big_spender", "needs_review"), row


@pytest.mark.parametrize("how", ["engine", "rule"])
async def test_shadow_mode_changes_nothing_but_records(world: World, how: str) -> None:
    """Shadow (global or per rule): a deny rule matches, the payment is served and settled, the record says
    which rule would have denied it."""
    if how == "engine":
        world.engine(CUSTOM.format(action="deny", shadow="false"), shadow=True)
    else:
        world.engine(CUSTOM.format(action="deny", shadow="true"))
    before = await world.balances()
    r = await world.get("/thing", await world.x402())
    assert r.status_code == 200, f"shadow mode enforced: {r.text}"
    assert await world.balances() == (before[0] - PRICE, before[1] + PRICE)
    (row,) = await world.records.decisions(limit=1, checkpoint="payment")
    assert (row.action, row.rule, row.shadow, row.reason) == ("allow", "big_spender", True, "needs_deny"), row


async def test_request_checkpoint_denies_listed_ip_before_parsing(world: World) -> None:
    """The request checkpoint: a deny-listed IP gets 403 even with a valid payment; another IP is served."""
    world.use(RiskEngine(lists=RiskLists(deny=["192.0.2.66"]), sample_allows=0))
    verifies = world.facilitator["/verify"]
    r = await world.get("/thing", await world.x402(), ip="192.0.2.66")
    assert r.status_code == 403 and r.json()["rule"] == "denylisted", r.text
    assert world.facilitator["/verify"] == verifies
    ok = await world.get("/thing", await world.x402(), ip="192.0.2.67")
    assert ok.status_code == 200, ok.text


async def test_risk_rules_option_turns_risk_on_and_records_into_the_seller_store(world: World, tmp_path) -> None:
    """``risk_rules="rules.toml"`` (a plain option, as in TOML): the rules apply from the first request and
    the decisions land in the seller's own store, where ``paywire risk decisions`` reads them."""
    rules = tmp_path / "rules.toml"
    rules.write_text('[[rule]]\nid = "closed_route"\ncheckpoint = "request"\nwhen = \'route == "GET /thing"\'\n'
                     'action = "deny"\nreason = "closed"\n')
    mw = PaymentMiddleware(shop({}), [PaidRoute("GET /thing", offers=(Offer(price=PRICE, asset=world.net.asset),))],
                           HttpFacilitatorClient(world.facilitator_url), store=f"sqlite:///{tmp_path / 's.db'}",
                           assets=AssetRegistry((world.net.asset,)), pay_to=world.net.payee.address,
                           risk_rules=str(rules))
    async with serve_asgi(mw) as url:
        r = await world.http.get(url + "/thing")
        rows = await RiskRecords(mw.flow.payments.db).decisions()
    await mw.flow.aclose()
    assert (r.status_code, r.json()["reason"]) == (403, "closed"), r.text
    assert [(x.rule, x.action) for x in rows] == [("closed_route", "deny")], rows


@pytest.fixture(autouse=True)
def _reset(world: World) -> None:
    world.runs.clear()



async def test_seller_reads_the_allow_and_deny_lists_of_its_own_store(world: World, tmp_path) -> None:
    """``risk=True``: an entry added to the seller's store (as ``paywire risk lists add`` does) denies the next
    payment from that payer without a restart; nothing reaches the facilitator or moves."""
    from paywire.store.risk import RiskListStore

    mw = PaymentMiddleware(shop({}), [PaidRoute("GET /thing", offers=(Offer(price=PRICE, asset=world.net.asset),))],
                           HttpFacilitatorClient(world.facilitator_url), store=f"sqlite:///{tmp_path / 's.db'}",
                           assets=AssetRegistry((world.net.asset,)), pay_to=world.net.payee.address, risk=True)
    async with serve_asgi(mw) as url:
        payment = await world.x402()
        await mw.flow.startup()
        lists = RiskListStore(mw.flow.payments.db)
        await lists.add("deny", world.net.payer.address, note="test")
        before, verifies = await world.balances(), world.facilitator["/verify"]
        r = await world.http.get(url + "/thing", headers={"PAYMENT-SIGNATURE": payment})
    await mw.flow.aclose()
    assert (r.status_code, r.json()["rule"]) == (403, "denylisted_payer"), r.text
    assert (await world.balances(), world.facilitator["/verify"]) == (before, verifies)


async def test_seller_feeds_failures_by_kind_and_verified_amounts(world: World) -> None:
    """An expired authorization through the seller counts as ``expired`` against the payer and IP; a verified
    payment's amount joins the route's statistics."""
    from paywire.risk.model import Event

    engine = world.engine(count_all=True)
    world.sanction()
    r = await world.http.get(world.url + "/thing")
    req = decode_payment_required(r.headers["payment-required"]).accepts[0]
    expired = encode_payment_payload(await sign(req, payer_of(world.net), clock=lambda: 1_000_000.0))
    refused = await world.get("/thing", expired, ip="198.51.100.44")
    served = await world.get("/thing", await world.x402(), ip="198.51.100.45")
    assert (refused.status_code, served.status_code) == (402, 200), (refused.text, served.text)
    assert engine.metrics.failures == {("payment", "expired"): 1}, engine.metrics.failures
    d = await engine.check(Event("payment", ip="198.51.100.44", route=world.mw.flow.seller.routes[0].key,
                                 payer=world.net.payer.address, amount=PRICE, payment_key="k"))
    assert (d.features["ip_expired_1m"], d.features["payer_expired_1h"], d.features["payer_failures_1h"]) == \
        (1, 1, 1), d.features
    assert (d.features["route_amount_samples"], d.features["route_amount_mean"]) == (1, pytest.approx(0.01))


async def test_junk_payments_refused_before_verify_count_toward_the_failure_storm(world: World) -> None:
    """Payments the seller refuses on its own (unreadable headers) are failures of the IP: after five, the IP's
    next payment — even a valid one — is 403 too_many_failures; no request reached the facilitator."""
    engine = world.engine()
    world.sanction()
    verifies = world.facilitator["/verify"]
    junk = [await world.get("/thing", "bm90IGEgcGF5bWVudA==", ip="203.0.113.77") for _ in range(5)]
    valid = await world.get("/thing", await world.x402(), ip="203.0.113.77")
    assert {r.status_code for r in junk} == {402}, [r.text for r in junk]
    assert (valid.status_code, valid.json()["reason"]) == (403, "too_many_failures"), valid.text
    assert world.facilitator["/verify"] == verifies
    assert engine.metrics.failures == {("request", "invalid"): 5}, engine.metrics.failures
