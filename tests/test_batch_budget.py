"""The buyer's spend policy on ``batch-settlement`` channels (embedded chain, our seller and facilitator): the
deposit is what the budgets reserve, vouchers draw down inside it, a refund gives the unspent deposit back, and a
deposit above the remaining budget is refused before anything is signed."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import pytest
import pytest_asyncio

from paywire.client import Buyer, PaymentRefused, Policy, x402_client
from paywire.evm import batch as b
from paywire.schemes.evm_batch.client import BatchEvmClient
from tests.helpers import close_devnet
from tests.test_batch_interop import PRICE, Env, batch_devnet, env_offer, open_env

pytestmark = [pytest.mark.asyncio(loop_scope="module")]

DEPOSIT = 10 * PRICE  # the client's default deposit: ten requests at the offer's maximum ($0.01 of a $1 token)


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def env(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Env]:
    net = await batch_devnet("embedded")
    try:
        async with open_env(net, f"sqlite:///{tmp_path_factory.mktemp('budget') / 'seller.db'}") as e:
            yield e
    finally:
        await close_devnet(net)


def buyer_for(env: Env, tmp: Any, salt: int, **limits: Any) -> tuple[BatchEvmClient, Buyer]:
    scheme = BatchEvmClient(env.net.payer, salt=salt)
    policy = Policy(assets=[env.net.asset], max_per_payment="$0.10", **limits)
    return scheme, Buyer([scheme], policy, store=f"sqlite:///{tmp / f'buyer{salt}.db'}")


async def test_the_deposit_is_reserved_budget_vouchers_draw_it_down_a_refund_releases_the_rest(
        env: Env, tmp_path: Any) -> None:
    from typer.testing import CliRunner

    from paywire.cli.main import app

    net = env.net
    scheme, buyer = buyer_for(env, tmp_path, salt=31, total="$0.05")
    ledger = await buyer.ledger()
    payer0 = await env.balance(net.payer.address)
    async with x402_client(buyer) as http:
        r = await http.get(env.url + "/metered")  # opens the channel: the deposit is reserved whole
        assert r.status_code == 200, r.text
        assert (await ledger.spent()).total == DEPOSIT, "the deposit is not what the budget reserved"
        for cost in (10, None, None):  # vouchers inside the deposit reserve nothing more
            r = await http.get(env.url + "/metered" + ("" if cost is None else f"?cost={cost}"))
            assert r.status_code == 200, r.text
        assert (await ledger.spent()).total == DEPOSIT, "vouchers inside the deposit were counted again"
    ch = await scheme.channel(await env_offer(env))
    charged = 3 * PRICE + 10
    assert (ch.charged, ch.balance) == (charged, DEPOSIT), ch
    assert payer0 - await env.balance(net.payer.address) == DEPOSIT

    store = f"sqlite:///{tmp_path / 'buyer31.db'}"
    out = await asyncio.to_thread(CliRunner().invoke, app, ["wallet", "channels", "--store", store, "--all",
                                                            "--format", "json"], catch_exceptions=False)
    assert out.exit_code == 0, out.output
    listed = json.loads(out.stdout[out.stdout.index("["):])
    assert [(c["reserved"], c["spent"], c["withdrawable"]) for c in listed] == [
        (str(DEPOSIT), str(charged), str(DEPOSIT - charged))], listed

    res = await buyer.refund_channel(env.url + "/metered")
    assert res.success and res.amount == DEPOSIT - charged
    assert (await ledger.spent()).total == charged, "the unspent deposit did not come back to the budget"
    assert payer0 - await env.balance(net.payer.address) == charged
    state = await env.onchain(b.bytes32(ch.channel_id))
    assert (state.balance, state.total_claimed) == (charged, charged)
    paid = [r for r in await buyer.history() if r.outcome in ("paid", "refunded")]
    assert sum(r.usd_micros for r in paid) == charged, [(r.outcome, r.usd_micros) for r in paid]
    await buyer.aclose()


async def test_a_deposit_above_the_remaining_budget_is_refused_before_signing(env: Env, tmp_path: Any) -> None:
    net = env.net
    scheme, buyer = buyer_for(env, tmp_path, salt=32, total="$0.005")  # half a deposit, five requests' worth
    payer0 = await env.balance(net.payer.address)
    hits0 = env.hits.get("metered", 0)
    async with x402_client(buyer) as http:
        with pytest.raises(PaymentRefused) as refused:
            await http.get(env.url + "/metered")
    message = str(refused.value)
    assert "deposit of 10000" in message and "remaining budget" in message and "total" in message, message
    assert refused.value.refusals[0].rule == "total"
    assert await env.balance(net.payer.address) == payer0, "a refused deposit moved money"
    assert env.hits.get("metered", 0) == hits0
    assert (await (await buyer.ledger()).spent()).total == 0
    ch = await scheme.channel(await env_offer(env))
    assert (await env.onchain(b.bytes32(ch.channel_id))).balance == 0, "a refused deposit opened the channel"

    # a smaller deposit that fits the budget opens the channel
    scheme.max_deposit = 4 * PRICE
    async with x402_client(buyer) as http:
        r = await http.get(env.url + "/metered")
        assert r.status_code == 200, r.text
    assert (await (await buyer.ledger()).spent()).total == 4 * PRICE
    await buyer.aclose()


async def test_a_permit2_deposit_without_the_approval_tells_the_buyer_which_approval_to_make(
        env: Env, tmp_path: Any) -> None:
    """No ``erc20ApprovalGasSponsoring`` here: a payer without the one-time Permit2 approval is told which
    approval to make (Permit2's address, the token, the network); nothing moves and the handler does not run.
    After the approval the same buyer opens the channel."""
    from paywire.chain.devkeys import dev_keys
    from paywire.chain.permit2 import approve_permit2
    from paywire.client.core import PaymentRejected
    from paywire.evm.assets import KNOWN_ASSETS, AssetRegistry
    from paywire.evm.permit2 import PERMIT2_ADDRESS
    from paywire.evm.signer import LocalSigner
    from paywire.facilitator.client import HttpFacilitatorClient
    from paywire.schemes.evm_batch import payload as pl
    from paywire.server.asgi import PaymentMiddleware
    from paywire.server.core import PaidRoute
    from paywire.server.pricing import Offer
    from paywire.serving import serve_asgi
    from tests.test_batch_interop import metered_app

    net = env.net
    fresh = LocalSigner(dev_keys(8)[7])
    await net.mint(fresh.address, 1_000_000)
    hits: dict[str, int] = {}
    offer = Offer(price=PRICE, asset=net.asset, scheme="batch-settlement", extra={"assetTransferMethod": "permit2"})
    mw = PaymentMiddleware(metered_app(hits), [PaidRoute("GET /metered", offers=(offer,))],
                           HttpFacilitatorClient(env.facilitator_url), pay_to=net.payee.address,
                           network=net.info.network, store=f"sqlite:///{tmp_path / 'seller.db'}",
                           assets=AssetRegistry((*KNOWN_ASSETS, net.asset)))
    buyer = Buyer([BatchEvmClient(fresh, salt=33)], Policy(assets=[net.asset], total="$1"),
                  store=f"sqlite:///{tmp_path / 'buyer33.db'}")
    try:
        async with serve_asgi(mw) as url, x402_client(buyer) as http:
            before = await env.balance(fresh.address)
            with pytest.raises(PaymentRejected) as rejected:
                await http.get(url + "/metered")
            message = str(rejected.value)
            assert rejected.value.reason == pl.PERMIT2_ALLOWANCE_REQUIRED, message
            assert PERMIT2_ADDRESS in message and net.info.token.lower() in message.lower(), message
            assert net.info.network in message, message
            assert not hits and await env.balance(fresh.address) == before, "money moved or the handler ran"
            await approve_permit2(net.chain, fresh.private_key, net.info.token)
            r = await http.get(url + "/metered")
            assert r.status_code == 200, r.text
            assert before - await env.balance(fresh.address) == DEPOSIT and hits == {"metered": 1}
    finally:
        await buyer.aclose()
        await mw.flow.aclose()
