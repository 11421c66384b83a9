"""Risk at the seller over real HTTP, the embedded chain settling: every action (allow, deny, challenge, review,
shadow) at both seller checkpoints with balances and facilitator calls asserted; the ``challenge`` answered with
an identity proof (Sign-In-With-X by paywire's buyer on its own, an RFC 9421 agent signature) or refused with a
402 naming the proofs; the seller's ``/metrics`` route, off by default and behind a token."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
import pytest_asyncio
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from paywire.client import BuyerConfig, PaymentRejected, Policy, x402_client
from paywire.devnet import Devnet
from paywire.evm.assets import AssetRegistry
from paywire.facilitator.app import create_app
from paywire.facilitator.client import HttpFacilitatorClient
from paywire.identity.agent import DIRECTORY_PATH, AgentKey, directory
from paywire.identity.siwx import SIGN_IN_WITH_X
from paywire.risk.engine import RiskEngine
from paywire.risk.rules import parse_rules
from paywire.risk.seller import SellerRisk
from paywire.server.asgi import PaymentMiddleware
from paywire.server.core import PaidRoute
from paywire.server.pricing import Offer
from paywire.serving import serve_asgi
from paywire.wallet import Wallet
from paywire.x402.codec import decode_header, decode_payment_required, encode_payment_payload
from tests.helpers import close_devnet, full_facilitator, new_devnet, payer_of, sign
from tests.test_risk_seller import CountingApp

pytestmark = pytest.mark.asyncio(loop_scope="module")
PRICE = 10_000
TOKEN = "metrics-token-for-tests"


@dataclass
class Shop:
    net: Devnet
    url: str
    http: httpx.AsyncClient
    mw: PaymentMiddleware
    facilitator: CountingApp
    agent: AgentKey
    runs: dict[str, int] = field(default_factory=dict)

    def risk(self, rules: str, **kw: Any) -> RiskEngine:
        engine = RiskEngine(parse_rules(rules, source="test.toml"), sample_allows=0, **kw)
        risk = SellerRisk(engine, metrics_token=TOKEN)
        risk.bind(self.mw.flow.payments.db, self.mw.flow)
        self.mw.flow.risk = risk
        return engine

    def wallet(self) -> Wallet:
        return Wallet.from_key(self.net.info.payer_key, chains={self.net.info.network: self.net.chain})

    def policy(self) -> Policy:
        return Policy(assets=[self.net.asset])

    async def balances(self) -> tuple[int, int]:
        return (await self.net.token_balance(self.net.payer.address),
                await self.net.token_balance(self.net.payee.address))

    async def paid_get(self, path: str = "/thing") -> httpx.Response:
        """A raw x402 payment (no identity proof), as any client would send it."""
        risk, self.mw.flow.risk = self.mw.flow.risk, None  # the offer, unjudged (a request rule may refuse it)
        try:
            r = await self.http.get(self.url + path)
        finally:
            self.mw.flow.risk = risk
        req = decode_payment_required(r.headers["payment-required"]).accepts[0]
        payment = encode_payment_payload(await sign(req, payer_of(self.net)))
        return await self.http.get(self.url + path, headers={"PAYMENT-SIGNATURE": payment})


def rule(checkpoint: str, action: str, *, shadow: bool = False) -> str:
    return (f'[[rule]]\nid = "who"\ncheckpoint = "{checkpoint}"\nwhen = "true"\naction = "{action}"\n'
            f'reason = "who_are_you"\nshadow = {"true" if shadow else "false"}\n')


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def shop() -> AsyncIterator[Shop]:
    net = await new_devnet("embedded")
    runs: dict[str, int] = {}

    async def thing(request: Request) -> Response:
        runs[request.url.path] = runs.get(request.url.path, 0) + 1
        return JSONResponse({"ok": True, "identity": getattr(request.state.payment, "identity", None)})

    holder: dict[str, AgentKey] = {}

    async def serve_directory(_: Request) -> Response:
        return JSONResponse(directory([holder["key"]]),
                            media_type="application/http-message-signatures-directory+json")

    fac = CountingApp(create_app(full_facilitator(net)))
    tmp = __import__("tempfile").mkdtemp(prefix="paywire-risk-challenge-")
    routes = [PaidRoute("GET /thing", offers=(Offer(price=PRICE, asset=net.asset),))]
    async with serve_asgi(Starlette(routes=[Route(DIRECTORY_PATH, serve_directory)])) as agent_url, \
            serve_asgi(fac) as fac_url:
        holder["key"] = AgentKey.generate(agent_url)
        mw = PaymentMiddleware(Starlette(routes=[Route("/thing", thing)]), routes, HttpFacilitatorClient(fac_url),
                               store=f"sqlite:///{tmp}/s.db", assets=AssetRegistry((net.asset,)),
                               pay_to=net.payee.address, agent_directories_private=True)
        async with serve_asgi(mw) as url, httpx.AsyncClient(timeout=60) as http:
            await mw.flow.startup()
            yield Shop(net, url, http, mw, fac, holder["key"], runs)
        await mw.flow.aclose()
    await close_devnet(net)


@pytest.fixture(autouse=True)
def _reset(shop: Shop) -> None:
    shop.runs.clear()


# ------------------------------------------------------------------------------------------------ every action


@pytest.mark.parametrize("checkpoint", ["request", "payment"])
@pytest.mark.parametrize("action", ["allow", "deny", "challenge", "review", "shadow"])
async def test_every_action_at_both_seller_checkpoints(shop: Shop, checkpoint: str, action: str) -> None:
    """A raw paid request (no identity proof) under one rule that always matches: allow, review and shadow serve
    and settle once; deny is a 403 naming the rule; challenge a 402 asking for a proof — neither reaches the
    facilitator nor moves money. The decision is counted per rule and action."""
    engine = shop.risk(rule(checkpoint, "deny" if action == "shadow" else action, shadow=action == "shadow"))
    before, verifies = await shop.balances(), shop.facilitator["/verify"]
    r = await shop.paid_get()
    after = await shop.balances()
    if action in ("allow", "review", "shadow"):
        assert r.status_code == 200, r.text
        assert after == (before[0] - PRICE, before[1] + PRICE), "the served payment did not settle once"
        assert shop.runs == {"/thing": 1}, shop.runs
    elif action == "deny":
        assert (r.status_code, r.json()["rule"], r.json()["reason"]) == (403, "who", "who_are_you"), r.text
    if action == "challenge" and checkpoint == "request":  # a payment answers a request-level challenge
        assert r.status_code == 200, r.text
        assert after == (before[0] - PRICE, before[1] + PRICE)
        assert engine.metrics.challenges == {("request", "payment"): 1}, engine.metrics.challenges
    elif action == "challenge":
        assert r.status_code == 402, r.text
        assert r.json()["error"].startswith("risk_challenge:who_are_you;"), r.json()
    if action in ("deny", "challenge") and r.status_code != 200:
        assert after == before, "money moved after a refusal"
        assert shop.facilitator["/verify"] == verifies, "a refused payment reached the facilitator"
        assert shop.runs == {}, "the handler ran"
        assert "payment-response" not in r.headers
    shown = "deny" if action == "shadow" else action
    enforced = "allow" if action == "shadow" else shown
    key = (checkpoint, "who", enforced, "true" if action == "shadow" else "false")
    if action != "allow":
        assert engine.metrics.decisions.get(key) == 1, (key, engine.metrics.decisions)


# ------------------------------------------------------------------------------------------------ challenge


async def test_unproven_challenge_is_a_402_naming_the_proofs_with_a_sign_in(shop: Shop) -> None:
    """No proof: 402 whose error names both proofs, with a fresh sign-in-with-x challenge; nothing moves."""
    shop.risk(rule("payment", "challenge"))
    before, verifies = await shop.balances(), shop.facilitator["/verify"]
    r = await shop.paid_get()
    assert r.status_code == 402, r.text
    error = r.json()["error"]
    assert "SIGN-IN-WITH-X" in error and "Signature-Agent" in error, error
    required = decode_header(r.headers["payment-required"])
    assert SIGN_IN_WITH_X in (required.get("extensions") or {}), "the challenge carries no sign-in to answer"
    assert (await shop.balances(), shop.facilitator["/verify"]) == (before, verifies)


async def test_our_buyer_answers_a_challenge_by_signing_in_and_pays_once(shop: Shop) -> None:
    """paywire's buyer (sign_in on by default) answers the challenge with a Sign-In-With-X proof and the same
    payment: served once, one payment's worth moved, the challenge counted as passed by identity."""
    engine = shop.risk(rule("payment", "challenge"))
    before = await shop.balances()
    async with x402_client(shop.wallet(), shop.policy()) as client:
        r = await client.get(shop.url + "/thing")
    assert r.status_code == 200, r.text
    assert await shop.balances() == (before[0] - PRICE, before[1] + PRICE), "not exactly one payment moved"
    assert shop.runs == {"/thing": 1}, shop.runs
    assert engine.metrics.challenges == {("payment", "issued"): 1, ("payment", "identity"): 1}, \
        engine.metrics.challenges


async def test_buyer_without_an_identity_is_refused_and_pays_nothing(shop: Shop) -> None:
    shop.risk(rule("payment", "challenge"))
    before = await shop.balances()
    async with x402_client(shop.wallet(), shop.policy(), config=BuyerConfig(sign_in=False)) as client:
        with pytest.raises(PaymentRejected) as info:
            await client.get(shop.url + "/thing")
    assert "risk_challenge" in str(info.value), info.value
    assert await shop.balances() == before, "money moved for a refused challenge"
    assert shop.runs == {}, shop.runs


async def test_agent_signature_passes_the_challenge_at_once(shop: Shop) -> None:
    """An agent signing its requests (RFC 9421, key in its directory) is not asked twice: one round trip."""
    engine = shop.risk(rule("payment", "challenge"))
    before = await shop.balances()
    async with x402_client(shop.wallet(), shop.policy(),
                           config=BuyerConfig(agent_key=shop.agent, sign_in=False)) as client:
        r = await client.get(shop.url + "/thing")
    assert r.status_code == 200, r.text
    assert await shop.balances() == (before[0] - PRICE, before[1] + PRICE)
    assert engine.metrics.challenges == {("payment", "identity"): 1}, engine.metrics.challenges


async def test_request_checkpoint_challenge_takes_a_sign_in_or_a_payment(shop: Shop) -> None:
    """Before anything else: an unpaid request gets the 402 with a sign-in; our buyer signs in (passes), then
    pays (a payment passes too); a sign-in proof used twice does not pass again."""
    engine = shop.risk(rule("request", "challenge"))
    unpaid = await shop.http.get(shop.url + "/thing")
    assert unpaid.status_code == 402 and unpaid.json()["error"].startswith("risk_challenge:who_are_you;"), \
        unpaid.text
    assert "or a fresh payment" in unpaid.json()["error"]
    before = await shop.balances()
    async with x402_client(shop.wallet(), shop.policy()) as client:
        r = await client.get(shop.url + "/thing")
    assert r.status_code == 200, r.text
    assert await shop.balances() == (before[0] - PRICE, before[1] + PRICE)
    assert engine.metrics.challenges.get(("request", "identity")) == 1, engine.metrics.challenges
    assert engine.metrics.challenges.get(("request", "payment")) == 1, engine.metrics.challenges


async def test_a_sign_in_proof_passes_a_challenge_once(shop: Shop) -> None:
    from paywire.identity.siwx import HEADER, answer_challenge, encode_proof, personal_sign_digest

    engine = shop.risk(rule("request", "challenge"))
    first = await shop.http.get(shop.url + "/thing")
    ext = decode_header(first.headers["payment-required"])["extensions"][SIGN_IN_WITH_X]
    signer = payer_of(shop.net)
    payload, text = answer_challenge(ext, shop.url + "/thing", signer.address, shop.net.info.network)
    proof = encode_proof(payload, await signer.sign_digest(personal_sign_digest(text)))
    once = await shop.http.get(shop.url + "/thing", headers={HEADER: proof})
    twice = await shop.http.get(shop.url + "/thing", headers={HEADER: proof})
    assert "risk_challenge" not in once.json().get("error", ""), once.text
    assert twice.status_code == 402 and "risk_challenge" in twice.json()["error"], twice.text
    assert "already used" in twice.json()["error"], twice.json()["error"]
    assert engine.metrics.challenges.get(("request", "failed")) == 1, engine.metrics.challenges


# ------------------------------------------------------------------------------------------------ /metrics


async def test_metrics_route_is_off_without_a_token_and_guarded_with_one(shop: Shop) -> None:
    engine = shop.risk(rule("payment", "deny"))
    await shop.paid_get()
    flow = shop.mw.flow
    assert flow.risk is not None
    flow.risk.metrics_token = None
    off = await shop.http.get(shop.url + "/metrics", headers={"Authorization": f"Bearer {TOKEN}"})
    flow.risk.metrics_token = TOKEN
    anonymous = await shop.http.get(shop.url + "/metrics")
    wrong = await shop.http.get(shop.url + "/metrics", headers={"Authorization": "Bearer nope"})
    ok = await shop.http.get(shop.url + "/metrics", headers={"Authorization": f"Bearer {TOKEN}"})
    assert off.status_code == 404, f"/metrics served without a token configured: {off.status_code}"
    assert (anonymous.status_code, wrong.status_code) == (401, 401), (anonymous.text, wrong.text)
    assert ok.status_code == 200 and ok.headers["content-type"].startswith("text/plain"), ok.text
    assert 'paywire_risk_decisions_total{checkpoint="payment",rule="who",action="deny",shadow="false"} 1' in ok.text
    assert "paywire_risk_backend_up 1" in ok.text, ok.text
    assert engine.metrics.render() == ok.text


async def test_someone_elses_sign_in_passes_one_paid_challenge_only(shop: Shop) -> None:
    """A sign-in by another address than the payer, sent with payments: its nonce is spent on the first, so a
    second payment carrying the same proof is challenged again (and moves nothing)."""
    from paywire.evm.signer import LocalSigner
    from paywire.identity.siwx import HEADER, answer_challenge, encode_proof, personal_sign_digest

    engine = shop.risk(rule("payment", "challenge"))
    first = await shop.paid_get()
    ext = decode_header(first.headers["payment-required"])["extensions"][SIGN_IN_WITH_X]
    other = LocalSigner.generate()
    payload, text = answer_challenge(ext, shop.url + "/thing", other.address, shop.net.info.network)
    proof = encode_proof(payload, await other.sign_digest(personal_sign_digest(text)))
    req = decode_payment_required(first.headers["payment-required"]).accepts[0]
    replies = []
    for _ in range(2):
        payment = encode_payment_payload(await sign(req, payer_of(shop.net)))
        replies.append(await shop.http.get(shop.url + "/thing", headers={"PAYMENT-SIGNATURE": payment,
                                                                          HEADER: proof}))
    assert replies[0].status_code == 200, replies[0].text
    assert replies[1].status_code == 402 and "already used" in replies[1].json()["error"], replies[1].text
    assert engine.metrics.challenges.get(("payment", "identity")) == 1, engine.metrics.challenges
