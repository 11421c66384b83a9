"""The buyer's risk guard end to end: a real seller on 127.0.0.1 settling on the embedded chain; the guard
stops a seller that raises its price tenfold mid-session and an agent stuck paying in a loop, before signing.
Balances are read back from the token."""

from __future__ import annotations

import tempfile
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import pytest_asyncio

from paywire.client import x402_client
from paywire.client.config import BuyerConfig
from paywire.evm.assets import AssetRegistry
from paywire.facilitator.core import Facilitator
from paywire.risk.buyer import RiskRefused
from paywire.risk.engine import RiskEngine
from paywire.risk.rules import parse_rules
from paywire.server.asgi import PaymentMiddleware
from paywire.server.core import PaidRoute
from paywire.server.local import LocalFacilitatorClient
from paywire.serving import serve_asgi
from paywire.wallet import Wallet
from tests.helpers import close_devnet, facilitator_for, new_devnet
from tests.test_buyer_support import CENT, balance, content_app

pytestmark = pytest.mark.asyncio(loop_scope="module")


@dataclass
class Env:
    net: object
    url: str
    price: list[int]
    hits: dict[str, int]

    def wallet(self) -> Wallet:
        return Wallet.from_key(self.net.info.payer_key, chains={self.net.info.network: self.net.chain})  # type: ignore[attr-defined]

    async def balances(self) -> tuple[int, int]:
        net = self.net
        return (await balance(net, net.payer.address), await balance(net, net.payee.address))  # type: ignore[arg-type, attr-defined]


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def env() -> AsyncIterator[Env]:
    net = await new_devnet("embedded")
    price = [CENT]
    hits: dict[str, int] = {}
    routes = [PaidRoute("GET /data", price=lambda req: price[0]), PaidRoute("GET /loop", price=CENT)]
    store = f"sqlite:///{tempfile.mkdtemp(prefix='paywire-seller-')}/seller.db"
    app = PaymentMiddleware(content_app(hits), routes, LocalFacilitatorClient(Facilitator([facilitator_for(net)])),
                            store=store, pay_to=net.payee.address, network=net.info.network,
                            assets=AssetRegistry((net.asset,)))
    async with serve_asgi(app) as url:
        yield Env(net, url, price, hits)
    await app.flow.aclose()
    await close_devnet(net)


async def test_seller_raising_its_price_tenfold_is_refused_before_signing(env: Env, tmp_path: Path) -> None:
    """Three payments at one cent, then the seller asks ten cents: RiskRefused names price_jump, nothing is
    signed, only the three cents moved, and the ledger row says refused by risk:price_jump."""
    env.price[0] = CENT
    before = await env.balances()
    async with x402_client(env.wallet(), store=f"sqlite:///{tmp_path / 'b.db'}", config=BuyerConfig(risk=True)) as client:
        for _ in range(3):
            r = await client.get(env.url + "/data")
            assert r.status_code == 200, r.text
        env.price[0] = 10 * CENT
        with pytest.raises(RiskRefused) as err:
            await client.get(env.url + "/data")
    assert err.value.rule == "price_jump", err.value
    assert err.value.decision.features["price_ratio_route"] == pytest.approx(10.0)
    receipt = err.value.receipt
    assert receipt is not None and (receipt.outcome, receipt.rule) == ("refused", "risk:price_jump"), receipt
    assert await env.balances() == (before[0] - 3 * CENT, before[1] + 3 * CENT), "the jumped price was paid"
    assert env.hits.get("/data", 0) == 3, env.hits


LOOP = """
[[rule]]
id = "agent_loop"
checkpoint = "buyer"
when = "route_count_1m > 5"
action = "deny"
reason = "agent_loop"
"""


async def test_looping_agent_is_stopped_by_its_guard(env: Env, tmp_path: Path) -> None:
    """An agent paying the same route in a loop: five payments go through, the sixth raises RiskRefused
    naming agent_loop; exactly five cents moved."""
    before = await env.balances()
    guard = RiskEngine(parse_rules(LOOP))
    paid = 0
    async with x402_client(env.wallet(), store=f"sqlite:///{tmp_path / 'b.db'}",
                           config=BuyerConfig(risk=guard)) as client:
        with pytest.raises(RiskRefused) as err:
            for _ in range(50):
                r = await client.get(env.url + "/loop")
                assert r.status_code == 200, r.text
                paid += 1
    assert paid == 5, f"the loop ran {paid} paid requests before the guard stopped it"
    assert (err.value.rule, err.value.reason) == ("agent_loop", "agent_loop"), err.value
    assert await env.balances() == (before[0] - 5 * CENT, before[1] + 5 * CENT), "the loop kept paying"


@pytest.mark.parametrize("action", ["allow", "deny", "challenge", "review", "shadow"])
async def test_every_action_at_the_buyer_checkpoint(env: Env, tmp_path: Path, action: str) -> None:
    """allow / review / shadow pay (one cent moves, the handler runs); deny and challenge raise RiskRefused
    naming the rule before anything is signed (nothing moves, the ledger row says refused)."""
    rules = (f'[[rule]]\nid = "r1"\ncheckpoint = "buyer"\nwhen = "true"\nreason = "because"\n'
             f'action = "{"deny" if action == "shadow" else action}"\nshadow = {str(action == "shadow").lower()}\n')
    guard = RiskEngine(parse_rules(rules), sample_allows=0)
    env.price[0] = CENT
    before, hits = await env.balances(), env.hits.get("/data", 0)
    async with x402_client(env.wallet(), store=f"sqlite:///{tmp_path / 'b.db'}",
                           config=BuyerConfig(risk=guard)) as client:
        if action in ("deny", "challenge"):
            with pytest.raises(RiskRefused) as err:
                await client.get(env.url + "/data")
            assert (err.value.rule, err.value.decision.action) == ("r1", action), err.value
            assert err.value.receipt is not None and err.value.receipt.outcome == "refused"
        else:
            r = await client.get(env.url + "/data")
            assert r.status_code == 200, r.text
    moved = 0 if action in ("deny", "challenge") else CENT
    assert await env.balances() == (before[0] - moved, before[1] + moved)
    assert env.hits.get("/data", 0) == hits + (1 if moved else 0)
    enforced = "allow" if action == "shadow" else action
    assert guard.metrics.decisions[("buyer", "r1", enforced, str(action == "shadow").lower())] == 1
