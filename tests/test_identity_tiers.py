"""Per-identity routes on the embedded chain: free quotas, prices by identity, allowlists (balances asserted).

A signed-in payer gets a route's ``free_quota`` without paying (no transfer), then pays; ``price_for_identity``
quotes and charges a proven identity its own price; ``allow_identities`` serves only the listed identities and
refuses others before any money moves or the handler runs. Unpaid anonymous requests write no quota rows.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import httpx
import pytest
import pytest_asyncio

from paywire.client import PaymentError, Policy, x402_client
from paywire.evm.signer import LocalSigner
from paywire.facilitator.client import LocalFacilitatorClient
from paywire.facilitator.core import Facilitator
from paywire.server.asgi import PaymentMiddleware
from paywire.server.core import PaidRoute
from paywire.serving import serve_asgi
from paywire.store import open_database
from paywire.store.identity import FREE
from paywire.wallet import Wallet
from tests.helpers import close_devnet, facilitator_for, new_devnet
from tests.test_buyer_support import CENT, balance, offer, transfers_to
from tests.test_identity_siwx import app

pytestmark = pytest.mark.asyncio(loop_scope="module")


class Env:
    def __init__(self, net: Any, url: str, db_path: Path, hits: dict[str, int]) -> None:
        self.net, self.url, self.db_path, self.hits = net, url, db_path, hits

    def wallet(self, key: str | bytes | None = None) -> Wallet:
        return Wallet.from_key(key or self.net.info.payer_key, chains={self.net.info.network: self.net.chain})

    async def free_rows(self) -> int:
        db = open_database(f"sqlite:///{self.db_path}")
        try:
            row = await db.fetchone(f"SELECT COUNT(*) AS n FROM {FREE}")
            return int(row["n"]) if row else 0
        finally:
            await db.aclose()


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def env(tmp_path_factory: pytest.TempPathFactory):
    net = await new_devnet("embedded")
    fac = Facilitator([facilitator_for(net)])
    db_path = tmp_path_factory.mktemp("tiers") / "seller.db"
    payer = net.payer.address.lower()

    def half_for_the_payer(who: Any, o: Any) -> int | None:
        return o.amount // 2 if who.controls(payer) else None

    routes = [
        PaidRoute("/quota", (offer(net, CENT),), free_quota=(2, 3600)),
        PaidRoute("/vip", (offer(net, CENT),), price_for_identity=half_for_the_payer),
        PaidRoute("/members", (offer(net, CENT),), allow_identities=[net.payer.address]),
    ]
    hits: dict[str, int] = {}
    mw = PaymentMiddleware(app(hits), routes, LocalFacilitatorClient(fac), store=f"sqlite:///{db_path}",
                           siwx_secret=b"t" * 32)
    async with serve_asgi(mw) as url:
        yield Env(net, url, db_path, hits)
    await close_devnet(net)


async def test_free_quota_serves_n_requests_without_a_transfer_then_charges(env: Env) -> None:
    payee, policy = env.net.payee.address, Policy(assets=[env.net.asset])
    before, sent = await balance(env.net, payee), await transfers_to(env.net, payee)
    async with x402_client(env.wallet(), policy, store=None) as client:
        for _ in range(2):
            r = await client.get(env.url + "/quota")
            assert r.status_code == 200 and r.json()["identity"].endswith(env.net.payer.address)
        assert await balance(env.net, payee) == before, "a request inside the free quota was charged"
        assert await transfers_to(env.net, payee) == sent
        r = await client.get(env.url + "/quota")
    assert r.status_code == 200
    assert await balance(env.net, payee) == before + CENT, "the request past the quota was not charged once"
    assert env.hits["/quota"] == 3


async def test_anonymous_requests_take_no_quota_and_write_nothing(env: Env) -> None:
    rows = await env.free_rows()
    async with httpx.AsyncClient(timeout=60) as c:
        for _ in range(5):
            assert (await c.get(env.url + "/quota")).status_code == 402
    assert await env.free_rows() == rows, "unpaid anonymous requests wrote quota rows"


async def test_price_for_identity_charges_the_identity_its_own_price(env: Env) -> None:
    payee = env.net.payee.address
    async with httpx.AsyncClient(timeout=60) as c:
        r = await c.get(env.url + "/vip")
    from paywire.x402.codec import decode_header

    assert decode_header(r.headers["payment-required"])["accepts"][0]["amount"] == str(CENT), "anonymous price"
    before = await balance(env.net, payee)
    async with x402_client(env.wallet(), Policy(assets=[env.net.asset]), store=None) as client:
        r = await client.get(env.url + "/vip")
    assert r.status_code == 200, r.text
    assert await balance(env.net, payee) == before + CENT // 2, "the signed-in payer was not charged its price"


async def test_allowlist_serves_listed_identities_and_refuses_others_before_money_moves(env: Env) -> None:
    payee, policy = env.net.payee.address, Policy(assets=[env.net.asset])
    before = await balance(env.net, payee)
    async with x402_client(env.wallet(), policy, store=None) as client:
        assert (await client.get(env.url + "/members")).status_code == 200
    assert await balance(env.net, payee) == before + CENT
    hits = env.hits.get("/members", 0)
    stranger = LocalSigner(os.urandom(32))  # no balance lookup: it signs a payment the seller must refuse
    async with x402_client(stranger, policy, store=None) as client:
        with pytest.raises(PaymentError) as err:
            await client.get(env.url + "/members")
    assert "identity_not_allowed" in str(err.value), f"refused for another reason: {err.value}"
    assert await balance(env.net, payee) == before + CENT, "money moved for an identity not on the allowlist"
    assert env.hits.get("/members", 0) == hits, "the handler ran for an identity not on the allowlist"
