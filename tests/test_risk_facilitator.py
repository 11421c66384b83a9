"""The facilitator's ``settle`` checkpoint, over HTTP on the embedded chain: a denied payment is answered
``risk_denied`` before anything is signed (no transfer, the seller answers 402), an allowed one settles, and
verification failures feed the payer's failure counter."""

from __future__ import annotations

import pytest
import pytest_asyncio

from paywire.facilitator.core import Facilitator
from paywire.risk.engine import RiskEngine
from paywire.risk.lists import RiskLists
from paywire.store.settlements import SettlementStore
from paywire.x402.models import PaymentPayload
from tests.helpers import close_devnet, facilitator_for, new_devnet, offer, payer_of, sign

pytestmark = pytest.mark.asyncio(loop_scope="module")


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def net():
    n = await new_devnet("embedded")
    yield n
    await close_devnet(n)


async def balances(net) -> tuple[int, int]:
    return await net.token_balance(net.payer.address), await net.token_balance(net.payee.address)


async def test_denied_payer_is_not_settled(net) -> None:
    engine = RiskEngine(lists=RiskLists(deny=[net.payer.address]), sample_allows=0)
    fac = Facilitator([facilitator_for(net)], risk=engine)
    req = offer(net)
    payload = await sign(req, payer_of(net))
    before = await balances(net)
    verdict = await fac.verify(payload, req)
    res = await fac.settle(payload, req)
    assert verdict.is_valid, "verify is not the risk checkpoint"
    assert (res.success, res.error_reason) == (False, "risk_denied"), res
    assert "denylisted_payer" in (res.error_message or ""), res.error_message
    assert await balances(net) == before, "a denied payment moved money"


async def test_allowed_payment_settles_and_a_retry_is_not_rejudged(net, tmp_path) -> None:
    """A settled payment's retry returns the same settlement even if the rules would now deny it."""
    engine = RiskEngine(sample_allows=0)
    store = await SettlementStore.open(f"sqlite:///{tmp_path / 'settle.db'}")
    fac = Facilitator([facilitator_for(net, store=store)], store=store, risk=engine)
    req = offer(net)
    payload = await sign(req, payer_of(net))
    before = await balances(net)
    first = await fac.settle(payload, req)
    assert first.success, first
    engine.lists = RiskLists(deny=[net.payer.address])
    again = await fac.settle(payload, req)
    assert again.error_reason != "risk_denied", "a retry of a settled payment was judged again"
    await store.aclose()
    assert (again.success, again.transaction) == (True, first.transaction), again
    assert await balances(net) == (before[0] - req.amount, before[1] + req.amount)


async def test_failed_verifications_count_against_the_payer(net) -> None:
    engine = RiskEngine(sample_allows=0)
    fac = Facilitator([facilitator_for(net)], risk=engine)
    req = offer(net)
    for _ in range(3):
        good = await sign(req, payer_of(net))
        bad = PaymentPayload(accepted=good.accepted, payload={**good.payload, "signature": "0x" + "22" * 65})
        assert not (await fac.verify(bad, req)).is_valid
    res = await fac.settle(await sign(req, payer_of(net)), req)
    assert (res.success, res.error_reason) == (False, "risk_denied"), res
    assert "failing_payer" in (res.error_message or ""), res.error_message


async def test_facilitator_metrics_include_risk_counters(net) -> None:
    """/metrics of a facilitator with a risk engine shows the decisions per rule and action."""
    import httpx

    from paywire.facilitator.app import create_app
    from paywire.serving import serve_asgi

    engine = RiskEngine(lists=RiskLists(deny=[net.payer.address]), sample_allows=0)
    fac = Facilitator([facilitator_for(net)], risk=engine)
    req = offer(net)
    await fac.settle(await sign(req, payer_of(net)), req)
    good = await sign(req, payer_of(net))
    await fac.verify(PaymentPayload(accepted=good.accepted, payload={**good.payload, "signature": "0x" + "22" * 65}),
                     req)
    async with serve_asgi(create_app(fac)) as url, httpx.AsyncClient(timeout=60) as http:
        text = (await http.get(url + "/metrics")).text
    line = ('paywire_risk_decisions_total{checkpoint="settle",rule="denylisted_payer",action="deny",'
            'shadow="false"} 1')
    assert line in text, text
    assert "paywire_risk_backend_up 1" in text, text
    assert 'paywire_risk_failures_total{checkpoint="settle",kind="invalid"} 1' in text, text
    assert "# TYPE paywire_risk_challenges_total counter" in text, text


async def test_facilitator_config_turns_risk_on() -> None:
    from paywire.facilitator.config import FacilitatorConfig
    from paywire.facilitator.service import _risk

    assert _risk(FacilitatorConfig()) is None, "risk must stay off unless configured"
    engine = _risk(FacilitatorConfig(risk_rules="default"))
    assert engine is not None and engine.rules.version.startswith("default"), engine


async def test_requester_velocity_over_http(net) -> None:
    """Over HTTP the caller's address is the ``requester``: a third settle a minute from it is refused."""
    from paywire.facilitator.app import create_app
    from paywire.facilitator.client import HttpFacilitatorClient
    from paywire.risk.rules import parse_rules
    from paywire.serving import serve_asgi

    rules = parse_rules('[[rule]]\nid = "busy_seller"\ncheckpoint = "settle"\nwhen = "requester_count_1m > 2"\n'
                        'action = "deny"\n')
    engine = RiskEngine(rules, sample_allows=0)
    req = offer(net)
    async with serve_asgi(create_app(Facilitator([facilitator_for(net)], risk=engine))) as url:
        client = HttpFacilitatorClient(url)
        results = [await client.settle(await sign(req, payer_of(net)), req) for _ in range(3)]
        await client.aclose()
    assert [r.success for r in results] == [True, True, False], results
    assert results[2].error_reason == "risk_denied", results[2]
    assert engine.metrics.decisions[("settle", "busy_seller", "deny", "false")] == 1


def one_rule(action: str, *, shadow: bool = False, when: str = "true") -> str:
    return (f'[[rule]]\nid = "r1"\ncheckpoint = "settle"\nwhen = "{when}"\naction = "{action}"\nreason = "because"\n'
            f'shadow = {"true" if shadow else "false"}\n')


@pytest.mark.parametrize("action", ["allow", "deny", "challenge", "review", "shadow"])
async def test_every_action_at_the_settle_checkpoint(net, action: str) -> None:
    """allow / review / shadow settle (the tokens move once); deny and challenge answer without a transfer,
    naming themselves in ``error_reason``; each decision is counted under its rule and action."""
    from paywire.risk.rules import parse_rules

    rules = parse_rules(one_rule("deny" if action == "shadow" else action, shadow=action == "shadow"))
    engine = RiskEngine(rules, sample_allows=0)
    fac = Facilitator([facilitator_for(net)], risk=engine)
    req = offer(net)
    before = await balances(net)
    res = await fac.settle(await sign(req, payer_of(net)), req)
    after = await balances(net)
    if action in ("allow", "review", "shadow"):
        assert res.success, res
        assert after == (before[0] - req.amount, before[1] + req.amount)
    else:
        assert (res.success, res.error_reason) == (False, f"risk_{'denied' if action == 'deny' else action}"), res
        assert after == before, "money moved after a refusal"
    enforced = "allow" if action == "shadow" else action
    assert engine.metrics.decisions[("settle", "r1", enforced, "true" if action == "shadow" else "false")] == 1


async def test_failures_are_counted_by_kind_from_real_verdicts(net) -> None:
    """Real facilitator verdicts feed the kind counters: an underpayment, an expired authorization, a replay
    of a settled one and a forged signature each count once under their kind, and all four in ``failures``."""
    import dataclasses

    from paywire.risk.model import Event

    engine = RiskEngine(sample_allows=0, count_all=True)
    fac = Facilitator([facilitator_for(net)], risk=engine)
    req = offer(net)
    under = await sign(dataclasses.replace(req, amount=req.amount - 1), payer_of(net), accepted=req)
    expired = await sign(req, payer_of(net), clock=lambda: 1_000_000.0)
    settled = await sign(req, payer_of(net))
    assert (await fac.settle(settled, req)).success
    good = await sign(req, payer_of(net))
    forged = PaymentPayload(accepted=good.accepted, payload={**good.payload, "signature": "0x" + "22" * 65})
    reasons = [(await fac.verify(p, req)).invalid_reason for p in (under, expired, settled, forged)]
    d = await engine.check(Event("settle", payer=net.payer.address, payee=net.payee.address, amount=req.amount))
    kinds = {k: d.features[f"payer_{k}_1h"] for k in ("underpaid", "expired", "replays", "invalid")}
    assert kinds == {"underpaid": 1, "expired": 1, "replays": 1, "invalid": 1}, (kinds, reasons)
    assert d.features["payer_failures_1h"] == 4, d.features["payer_failures_1h"]
    assert engine.metrics.failures == {("settle", k): 1 for k in kinds}, engine.metrics.failures


async def test_settled_amounts_feed_the_payees_amount_statistics(net) -> None:
    """Each settled payment's amount joins the payee's histogram: mean and p99 as features, and an anomaly rule
    over ``amount_vs_p99`` refuses a payment ten times larger than usual."""
    from paywire.risk.rules import parse_rules

    rules = parse_rules(one_rule("deny", when="payee_amount_samples >= 3 && amount_vs_p99 > 5.0"))
    engine = RiskEngine(rules, sample_allows=0)
    fac = Facilitator([facilitator_for(net)], risk=engine)
    small = offer(net, 10_000)
    for _ in range(3):
        assert (await fac.settle(await sign(small, payer_of(net)), small)).success
    big = offer(net, 100_000)
    before = await balances(net)
    res = await fac.settle(await sign(big, payer_of(net)), big)
    assert (res.success, res.error_reason) == (False, "risk_denied"), res
    assert await balances(net) == before
    assert "r1" in (res.error_message or ""), res.error_message
    from paywire.risk.model import Event

    d = await engine.check(Event("settle", payer=net.payer.address, payee=net.payee.address, amount=10_000))
    assert d.features["payee_amount_samples"] == 3, d.features
    assert d.features["payee_amount_mean"] == pytest.approx(0.01), d.features
    assert 0.01 <= d.features["payee_amount_p99"] <= 0.01 * 2 ** 0.25, d.features["payee_amount_p99"]
