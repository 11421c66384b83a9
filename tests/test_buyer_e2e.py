"""Our buying client against real paid servers on 127.0.0.1, settling on the embedded chain.

Every test reads balances (or Transfer events) back from the token: what moved on chain is the assertion.
Checklist numbers (spec digest §12.2) are cited where they apply.
"""

from __future__ import annotations

import asyncio
import base64
import json
from pathlib import Path

import httpx
import pytest
import pytest_asyncio
import requests

from paywire.client import (
    Buyer,
    DryRunPayment,
    PaymentDeclined,
    PaymentError,
    PaymentRefused,
    PaymentRejected,
    Policy,
    receipt_of,
    settlement_of,
    x402_client,
    x402_requests,
    x402_sync_client,
)
from paywire.devnet import deploy_token
from paywire.evm.assets import Asset
from paywire.evm.signer import LocalSigner
from paywire.facilitator.core import Facilitator
from paywire.server.core import PaidRoute
from paywire.serving import serve_asgi
from paywire.store import open_database
from paywire.store.spend import SpendLedger
from paywire.wallet import Wallet
from tests.helpers import close_devnet, facilitator_for, new_devnet
from tests.test_buyer_support import (
    CENT,
    DropProxy,
    ScriptedSeller,
    balance,
    offer,
    paid_app,
    port_of,
    transfers_to,
)

pytestmark = pytest.mark.asyncio(loop_scope="module")


class Env:
    def __init__(self, net, fac, other: Asset, payee2: str, url: str, hits: dict[str, int]) -> None:
        self.net, self.fac, self.other, self.payee2, self.url, self.hits = net, fac, other, payee2, url, hits

    def wallet(self, key: str | bytes | None = None) -> Wallet:
        return Wallet.from_key(key or self.net.info.payer_key, chains={self.net.info.network: self.net.chain})

    def policy(self, **kw) -> Policy:
        return Policy(assets=[self.net.asset, self.other], **kw)

    async def payee_balance(self, who: str | None = None) -> int:
        return await balance(self.net, who or self.net.payee.address)


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def env():
    net = await new_devnet("embedded")
    fac = Facilitator([facilitator_for(net)])
    other_addr = await deploy_token(net.chain, net.deployer.private_key, name="Other Coin", version="1")
    other = Asset(net.info.network, other_addr, "Other Coin", "1")
    payee2 = LocalSigner.generate().address
    o_other = offer(net, CENT, asset=other_addr, extra={"name": "Other Coin", "version": "1"})
    routes = [
        PaidRoute("/cheap", (offer(net, CENT),)),
        PaidRoute("/dear", (offer(net, 50 * CENT),)),
        PaidRoute("/payee2", (offer(net, CENT, payee2),)),
        PaidRoute("/multi", (offer(net, 3 * CENT), offer(net, 2 * CENT))),
        PaidRoute("/unfunded", (o_other, offer(net, 2 * CENT))),
    ]
    hits: dict[str, int] = {}
    async with serve_asgi(paid_app(routes, fac, hits)) as url:
        yield Env(net, fac, other, payee2, url, hits)
    await close_devnet(net)


def store(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'buyer.db'}"


# ------------------------------------------------------------------------------------------------ paying


async def test_async_client_pays_our_server(env: Env, tmp_path: Path) -> None:
    """Checklist 26-29, 36: 402 → sign → retry → 200; PAYMENT-RESPONSE parsed; tokens moved once."""
    before = await env.payee_balance()
    async with x402_client(env.wallet(), env.policy(max_per_payment="$0.10", daily="$5"),
                           store=store(tmp_path)) as client:
        r = await client.get(env.url + "/cheap")
    assert r.status_code == 200 and r.json()["content"] == "paid content"
    s = settlement_of(r)
    assert s is not None and s.success and s.transaction.startswith("0x")
    rc = receipt_of(r)
    assert rc is not None and rc.outcome == "paid" and rc.budget == "committed" and rc.tx == s.transaction
    assert rc.amount == CENT and rc.usd_micros == 10_000 and rc.payload_hash and rc.challenge
    assert await env.payee_balance() == before + CENT
    receipt = await env.net.chain.get_transaction_receipt(s.transaction)
    assert receipt is not None and receipt.status == 1


async def test_sync_httpx_and_requests_pay_too(env: Env, tmp_path: Path) -> None:
    """The sync httpx client and the requests session run the same core: each pays exactly once."""
    before = await env.payee_balance()
    sync_client = x402_sync_client(env.wallet(), env.policy(), store=store(tmp_path))
    session = x402_requests(env.wallet(), env.policy(), store=store(tmp_path))

    def both() -> tuple[httpx.Response, requests.Response]:
        with sync_client:
            a = sync_client.get(env.url + "/cheap")
        b = session.get(env.url + "/cheap", timeout=30)
        return a, b

    a, b = await asyncio.to_thread(both)
    assert a.status_code == 200 and b.status_code == 200
    for r in (a, b):
        s = settlement_of(r)
        assert s is not None and s.success
        assert receipt_of(r).outcome == "paid"
    assert settlement_of(a).transaction != settlement_of(b).transaction
    assert await env.payee_balance() == before + 2 * CENT
    rows = await SpendLedger(open_database(store(tmp_path)), env.net.payer.address).history()
    assert [r.outcome for r in rows] == ["paid", "paid"]


async def test_cheapest_option_is_chosen(env: Env, tmp_path: Path) -> None:
    """Of $0.03 and $0.02 offers (server order), the client pays the cheaper one, echoed verbatim (ch. 27)."""
    before = await env.payee_balance()
    async with x402_client(env.wallet(), env.policy(), store=store(tmp_path)) as client:
        r = await client.get(env.url + "/multi")
    assert r.status_code == 200
    assert await env.payee_balance() == before + 2 * CENT
    assert json.loads(receipt_of(r).chosen)["amount"] == str(2 * CENT)


async def test_option_the_wallet_cannot_fund_is_skipped(env: Env, tmp_path: Path) -> None:
    """The cheapest option is in a token the wallet does not hold: the client pays the one it can fund."""
    before = await env.payee_balance()
    async with x402_client(env.wallet(), env.policy(), store=store(tmp_path)) as client:
        r = await client.get(env.url + "/unfunded")
    assert r.status_code == 200 and receipt_of(r).asset == env.net.info.token
    assert await env.payee_balance() == before + 2 * CENT
    assert await balance(env.net, env.net.payee.address, env.other.address) == 0


async def test_request_already_carrying_a_payment_is_not_paid_again(env: Env, tmp_path: Path) -> None:
    """Checklist 30: a request that already has PAYMENT-SIGNATURE gets its 402 back; nothing is signed."""
    before = await env.payee_balance()
    async with x402_client(env.wallet(), env.policy(), store=store(tmp_path)) as client:
        r = await client.get(env.url + "/cheap", headers={"PAYMENT-SIGNATURE": "e30="})
    assert r.status_code == 402
    assert await env.payee_balance() == before


async def test_a_402_that_is_not_x402_is_an_error(tmp_path: Path) -> None:
    """A bare 402 is never returned as success: PaymentError, and a 'failed' receipt."""

    async def app(scope, receive, send):
        await send({"type": "http.response.start", "status": 402, "headers": [(b"content-length", b"2")]})
        await send({"type": "http.response.body", "body": b"no"})

    async with serve_asgi(app) as url, x402_client(
            Buyer([], Policy(), store=store(tmp_path), account="0x" + "11" * 20)) as client:
        with pytest.raises(PaymentError, match="without a readable x402 challenge") as ei:
            await client.get(url + "/x")
    assert ei.value.receipt is not None and ei.value.receipt.outcome == "failed"


# ------------------------------------------------------------------------------------------------ policy rules


async def refused(env: Env, tmp_path: Path, path: str, rule: str, **policy) -> PaymentRefused:
    before = await env.payee_balance(), await env.payee_balance(env.payee2)
    async with x402_client(env.wallet(), env.policy(**policy), store=store(tmp_path)) as client:
        with pytest.raises(PaymentRefused) as ei:
            await client.get(env.url + path)
    assert ei.value.rule == rule, ei.value
    assert rule in str(ei.value)
    assert ei.value.receipt.outcome == "refused" and ei.value.receipt.rule == rule
    assert ei.value.receipt.budget == "none"
    assert (await env.payee_balance(), await env.payee_balance(env.payee2)) == before
    return ei.value


async def test_rule_max_per_payment(env: Env, tmp_path: Path) -> None:
    """max_per_payment refuses the $0.50 route and lets the $0.01 one through."""
    e = await refused(env, tmp_path, "/dear", "max_per_payment", max_per_payment="$0.10")
    assert "$0.50 is above max_per_payment $0.10" in str(e)
    async with x402_client(env.wallet(), env.policy(max_per_payment="$0.10"), store=store(tmp_path)) as client:
        assert (await client.get(env.url + "/cheap")).status_code == 200


async def test_rule_allowed_networks(env: Env, tmp_path: Path) -> None:
    await refused(env, tmp_path, "/cheap", "allowed_networks", allowed_networks=["eip155:8453"])


async def test_rule_allowed_assets(env: Env, tmp_path: Path) -> None:
    await refused(env, tmp_path, "/cheap", "allowed_assets", allowed_assets=[env.other.address])


async def test_rule_allowed_payees(env: Env, tmp_path: Path) -> None:
    """Only the listed payee is paid; the other route's payee is refused."""
    await refused(env, tmp_path, "/payee2", "allowed_payees", allowed_payees=[env.net.payee.address])
    async with x402_client(env.wallet(), env.policy(allowed_payees=[env.net.payee.address.lower()]),
                           store=store(tmp_path)) as client:
        assert (await client.get(env.url + "/cheap")).status_code == 200


async def test_rule_allowed_hosts(env: Env, tmp_path: Path) -> None:
    await refused(env, tmp_path, "/cheap", "allowed_hosts", allowed_hosts=["api.example.com", "*.example.com"])
    async with x402_client(env.wallet(), env.policy(allowed_hosts=["127.0.0.1:*"]), store=store(tmp_path)) as c:
        assert (await c.get(env.url + "/cheap")).status_code == 200


async def test_rule_unvalued_asset(env: Env, tmp_path: Path) -> None:
    """A dollar limit cannot be applied to a token the policy cannot value: refused, not guessed."""
    before = await env.payee_balance()
    async with x402_client(env.wallet(), Policy(max_per_payment="$1"), store=store(tmp_path)) as client:
        with pytest.raises(PaymentRefused) as ei:
            await client.get(env.url + "/cheap")
    assert ei.value.rule == "unvalued_asset" and await env.payee_balance() == before


async def test_rule_per_host_holds_under_concurrency(env: Env, tmp_path: Path) -> None:
    """per_host=$0.02 and five concurrent $0.01 requests: exactly two are paid, three refused by per_host."""
    before = await env.payee_balance()
    async with x402_client(env.wallet(), env.policy(per_host="$0.02"), store=store(tmp_path)) as client:
        results = await asyncio.gather(*(client.get(env.url + "/cheap") for _ in range(5)),
                                       return_exceptions=True)
    ok = [r for r in results if isinstance(r, httpx.Response) and r.status_code == 200]
    no = [r for r in results if isinstance(r, PaymentRefused)]
    assert len(ok) == 2 and len(no) == 3 and all(e.rule == "per_host" for e in no), results
    assert await env.payee_balance() == before + 2 * CENT


async def test_rule_per_payee(env: Env, tmp_path: Path) -> None:
    """per_payee=$0.01: one payment to each payee, the second to the same payee refused."""
    async with x402_client(env.wallet(), env.policy(per_payee="$0.01"), store=store(tmp_path)) as client:
        assert (await client.get(env.url + "/cheap")).status_code == 200
        assert (await client.get(env.url + "/payee2")).status_code == 200
    await refused(env, tmp_path, "/cheap", "per_payee", per_payee="$0.01")


async def test_rule_daily_budget_survives_a_restart(env: Env, tmp_path: Path) -> None:
    """daily=$0.02: two payments, then a new client on the same SQLite file (a restart) is refused."""
    before = await env.payee_balance()
    async with x402_client(env.wallet(), env.policy(daily="$0.02"), store=store(tmp_path)) as client:
        for _ in range(2):
            assert (await client.get(env.url + "/cheap")).status_code == 200
    e = await refused(env, tmp_path, "/cheap", "daily", daily="$0.02")
    assert "$0.02 already spent" in str(e)
    assert await env.payee_balance() == before + 2 * CENT


async def test_rule_total(env: Env, tmp_path: Path) -> None:
    async with x402_client(env.wallet(), env.policy(total="$0.01"), store=store(tmp_path)) as client:
        assert (await client.get(env.url + "/cheap")).status_code == 200
    await refused(env, tmp_path, "/payee2", "total", total="$0.01")


async def test_rule_funds(env: Env, tmp_path: Path) -> None:
    """A wallet that holds none of the token refuses before signing (rule 'funds')."""
    broke = LocalSigner.generate()
    async with x402_client(env.wallet(broke.private_key), env.policy(), store=store(tmp_path)) as client:
        with pytest.raises(PaymentRefused) as ei:
            await client.get(env.url + "/cheap")
    assert ei.value.rule == "funds"


async def test_rule_approval_threshold(env: Env, tmp_path: Path) -> None:
    """Above approval_threshold the hook decides: yes → paid; no → PaymentDeclined, nothing moves, and the
    reservation is released. Without a hook such payments are declined."""
    asked = []

    async def approve(req) -> bool:
        asked.append(req)
        return req.quote.payee == env.net.payee.address

    before = await env.payee_balance(), await env.payee_balance(env.payee2)
    async with x402_client(env.wallet(), env.policy(approval_threshold="$0.005", daily="$1"),
                           store=store(tmp_path), approve=approve) as client:
        assert (await client.get(env.url + "/cheap")).status_code == 200
        with pytest.raises(PaymentDeclined) as ei:
            await client.get(env.url + "/payee2")
    assert ei.value.receipt.outcome == "declined" and ei.value.receipt.budget == "released"
    assert len(asked) == 2 and "$0.01" in str(asked[0])
    assert (await env.payee_balance(), await env.payee_balance(env.payee2)) == (before[0] + CENT, before[1])
    async with x402_client(env.wallet(), env.policy(approval_threshold="$0"), store=store(tmp_path)) as client:
        with pytest.raises(PaymentDeclined):
            await client.get(env.url + "/cheap")
    ledger = SpendLedger(open_database(store(tmp_path)), env.net.payer.address)
    assert (await ledger.spent()).day == 10_000  # the declined ones hold no budget


async def test_dry_run_reports_and_signs_nothing(env: Env, tmp_path: Path) -> None:
    before = await env.payee_balance()
    async with x402_client(env.wallet(), env.policy(dry_run=True), store=store(tmp_path)) as client:
        with pytest.raises(DryRunPayment) as ei:
            await client.get(env.url + "/multi")
    assert ei.value.quote.amount == 2 * CENT and "would pay $0.02" in str(ei.value)
    assert ei.value.receipt.outcome == "dry_run" and ei.value.receipt.payload_hash is None
    assert await env.payee_balance() == before


# ------------------------------------------------------------------------------------------------ retry safety


async def test_dropped_connection_after_payment_does_not_pay_twice(env: Env, tmp_path: Path) -> None:
    """A proxy in front of our real seller lets the payment settle, then cuts the connection. The client
    resends the *same* signed payment (byte-identical); the chain shows exactly one transfer."""
    transfers = await transfers_to(env.net, env.net.payee.address)
    before = await env.payee_balance()
    proxy = DropProxy(port_of(env.url))
    url = await proxy.start()
    try:
        async with x402_client(env.wallet(), env.policy(daily="$1"), store=store(tmp_path)) as client:
            try:
                r = await client.get(url + "/cheap")
                rc = receipt_of(r)
            except PaymentRejected as exc:  # our seller cannot recognise the replay: it answers 402
                rc = exc.receipt
    finally:
        await proxy.stop()
    assert proxy.dropped == 1 and proxy.payments_forwarded == 2
    assert len(set(proxy.payment_values)) == 1  # the same signed payment, resent
    assert await env.payee_balance() == before + CENT
    assert await transfers_to(env.net, env.net.payee.address) == transfers + 1
    assert rc.outcome == "paid" and rc.budget == "committed"  # confirmed on chain: counted once


async def test_payment_identifier_is_sent_and_reused_after_a_5xx(env: Env, tmp_path: Path) -> None:
    """Checklist 37: the server advertises payment-identifier; the client adds an id and, after a 503,
    resends the same payment with the same id; the server's idempotency cache answers; one transfer."""
    seller = ScriptedSeller(env.fac, offer(env.net, CENT), "503_once", advertise_id=True)
    before = await env.payee_balance()
    async with serve_asgi(seller) as url, x402_client(env.wallet(), env.policy(), store=store(tmp_path)) as c:
        r = await c.get(url + "/thing")
    assert r.status_code == 200 and settlement_of(r).success
    assert len(seller.seen) == 2 and seller.seen[0] == seller.seen[1]
    sent = json.loads(base64.b64decode(seller.seen[0]))
    pid = sent["extensions"]["payment-identifier"]["info"]["id"]
    assert pid.startswith("pay_") and len(pid) >= 16
    assert sent["extensions"]["payment-identifier"]["info"]["required"] is False  # server's part kept (ch. 28)
    assert receipt_of(r).payment_id == pid
    assert await env.payee_balance() == before + CENT


async def test_dropped_connection_with_identifier_gets_the_cached_answer(env: Env, tmp_path: Path) -> None:
    seller = ScriptedSeller(env.fac, offer(env.net, CENT), "honest", advertise_id=True)
    before = await env.payee_balance()
    async with serve_asgi(seller) as upstream:
        proxy = DropProxy(port_of(upstream))
        url = await proxy.start()
        try:
            async with x402_client(env.wallet(), env.policy(), store=store(tmp_path)) as client:
                r = await client.get(url + "/thing")
        finally:
            await proxy.stop()
    assert r.status_code == 200 and receipt_of(r).outcome == "paid"
    assert len(set(proxy.payment_values)) == 1 and proxy.payments_forwarded == 2
    assert await env.payee_balance() == before + CENT


async def test_server_unreachable_before_paying_releases_the_budget(env: Env, tmp_path: Path) -> None:
    """The paid request never leaves the machine (connection refused): the reservation is released."""
    seller = ScriptedSeller(env.fac, offer(env.net, CENT))

    class Vanish(httpx.AsyncBaseTransport):
        def __init__(self) -> None:
            self.inner = httpx.AsyncHTTPTransport()

        async def handle_async_request(self, request):
            if "payment-signature" in request.headers:
                raise httpx.ConnectError("connection refused", request=request)
            return await self.inner.handle_async_request(request)

    from paywire.client import PaymentTransport

    buyer = Buyer(env.wallet(), env.policy(daily="$1"), store=store(tmp_path), retry_delay=0)
    async with serve_asgi(seller) as url, httpx.AsyncClient(transport=PaymentTransport(buyer, Vanish()), timeout=60) as c:
        with pytest.raises(PaymentError, match="could not reach") as ei:
            await c.get(url + "/thing")
    assert ei.value.receipt.outcome == "failed" and ei.value.receipt.budget == "released"
    assert seller.seen == []


# ------------------------------------------------------------------------------------------------ lying servers


async def test_server_that_keeps_answering_402_gets_no_more_than_the_budget(env: Env, tmp_path: Path) -> None:
    """The server settles every payment and still answers 402. With daily=$0.03 and six requests, it gets
    exactly $0.03: each 402 is reported with the server's reason, later requests are refused by 'daily'."""
    seller = ScriptedSeller(env.fac, offer(env.net, CENT), "402_after_settle")
    before = await env.payee_balance()
    async with serve_asgi(seller) as url, x402_client(env.wallet(), env.policy(daily="$0.03"),
                                                      store=store(tmp_path)) as client:
        results = await asyncio.gather(*(client.get(url + "/x") for _ in range(6)), return_exceptions=True)
    rejected = [e for e in results if isinstance(e, PaymentRejected)]
    refused_ = [e for e in results if isinstance(e, PaymentRefused)]
    assert len(rejected) == 3 and len(refused_) == 3, results
    assert all(e.reason == "payment required" and "took the payment" in str(e) for e in rejected)
    assert all(e.receipt.outcome == "paid" for e in rejected)  # the chain shows it settled
    assert all(e.rule == "daily" for e in refused_)
    assert await env.payee_balance() == before + 3 * CENT


async def test_server_that_asks_another_payee_after_payment(env: Env, tmp_path: Path) -> None:
    """After settling, the server asks for a different payee. The client never pays twice for one request,
    and the policy refuses the other payee on the next one."""
    seller = ScriptedSeller(env.fac, offer(env.net, CENT), "new_payee", alt_offer=offer(env.net, CENT, env.payee2))
    before = await env.payee_balance(), await env.payee_balance(env.payee2)
    pol = env.policy(allowed_payees=[env.net.payee.address])
    async with serve_asgi(seller) as url, x402_client(env.wallet(), pol, store=store(tmp_path)) as client:
        with pytest.raises(PaymentRejected, match="price changed"):
            await client.get(url + "/x")
        seller.offer = offer(env.net, CENT, env.payee2)
        with pytest.raises(PaymentRefused) as ei:
            await client.get(url + "/x")
    assert ei.value.rule == "allowed_payees"
    assert len(seller.seen) == 1
    assert (await env.payee_balance(), await env.payee_balance(env.payee2)) == (before[0] + CENT, before[1])


async def test_server_that_inflates_the_price_after_payment(env: Env, tmp_path: Path) -> None:
    seller = ScriptedSeller(env.fac, offer(env.net, CENT), "inflate", alt_offer=offer(env.net, 50 * CENT))
    before = await env.payee_balance()
    pol = env.policy(max_per_payment="$0.10")
    async with serve_asgi(seller) as url, x402_client(env.wallet(), pol, store=store(tmp_path)) as client:
        with pytest.raises(PaymentRejected):
            await client.get(url + "/x")
        seller.offer = offer(env.net, 50 * CENT)
        with pytest.raises(PaymentRefused) as ei:
            await client.get(url + "/x")
    assert ei.value.rule == "max_per_payment" and len(seller.seen) == 1
    assert await env.payee_balance() == before + CENT


async def test_refusal_without_settling_keeps_budget_held(env: Env, tmp_path: Path) -> None:
    """An honest 402 after verify (nothing settled): PaymentRejected with the reason; the budget is held
    (a liar could still settle the authorization) until reconciliation sees it expire unused."""
    seller = ScriptedSeller(env.fac, offer(env.net, CENT), "no_settle_402")
    before = await env.payee_balance()
    async with serve_asgi(seller) as url, x402_client(env.wallet(), env.policy(daily="$1"),
                                                      store=store(tmp_path)) as client:
        with pytest.raises(PaymentRejected, match="handler declined") as ei:
            await client.get(url + "/x")
    assert ei.value.receipt.outcome == "rejected" and ei.value.receipt.budget == "held"
    assert await env.payee_balance() == before


# ------------------------------------------------------------------------------------------------ v1


async def test_v1_server_is_paid_with_x_payment(env: Env, tmp_path: Path) -> None:
    """Checklist 26, 92-94: no PAYMENT-REQUIRED header, a v1 JSON body → X-PAYMENT; X-PAYMENT-RESPONSE read."""
    seller = ScriptedSeller(env.fac, offer(env.net, CENT), v1_only=True)
    before = await env.payee_balance()
    async with serve_asgi(seller) as url, x402_client(env.wallet(), env.policy(), store=store(tmp_path)) as c:
        r = await c.get(url + "/x")
    assert r.status_code == 200 and "x-payment-response" in r.headers
    assert settlement_of(r).success and receipt_of(r).x402_version == 1
    sent = json.loads(base64.b64decode(seller.seen[0]))
    assert sent["x402Version"] == 1 and sent["scheme"] == "exact" and "accepted" not in sent
    assert await env.payee_balance() == before + CENT


async def test_sync_clients_resend_the_same_payment_after_a_drop(env: Env, tmp_path: Path) -> None:
    """The sync httpx client and the requests adapter classify a reset after sending as 'maybe received' and
    resend the same signed payment: one transfer each."""
    seller = ScriptedSeller(env.fac, offer(env.net, CENT), "honest", advertise_id=True)
    before = await env.payee_balance()
    transfers = await transfers_to(env.net, env.net.payee.address)
    async with serve_asgi(seller) as upstream:
        proxies = [DropProxy(port_of(upstream)), DropProxy(port_of(upstream))]
        url_a, url_b = [await p.start() for p in proxies]
        sync_client = x402_sync_client(env.wallet(), env.policy(), store=store(tmp_path))
        session = x402_requests(env.wallet(), env.policy(), store=store(tmp_path))

        def both() -> tuple[httpx.Response, requests.Response]:
            with sync_client:
                a = sync_client.get(url_a + "/a")
            return a, session.get(url_b + "/b", timeout=30)

        try:
            a, b = await asyncio.to_thread(both)
        finally:
            for p in proxies:
                await p.stop()
    assert a.status_code == 200 and b.status_code == 200
    assert receipt_of(a).outcome == "paid" and receipt_of(b).outcome == "paid"
    for p in proxies:
        assert p.dropped == 1 and p.payments_forwarded == 2 and len(set(p.payment_values)) == 1
    assert await env.payee_balance() == before + 2 * CENT
    assert await transfers_to(env.net, env.net.payee.address) == transfers + 2


async def test_reconcile_releases_a_refused_payment_once_it_can_no_longer_settle(env: Env, tmp_path: Path) -> None:
    """A refused payment holds its budget; once the chain is past its validBefore and the authorization is
    unused, reconciliation releases it (and the budget is available again)."""
    short = offer(env.net, CENT, max_timeout_seconds=2)
    seller = ScriptedSeller(env.fac, short, "no_settle_402")
    buyer = Buyer(env.wallet(), env.policy(daily="$0.01"), store=store(tmp_path))
    async with serve_asgi(seller) as url, x402_client(buyer) as client:
        with pytest.raises(PaymentRejected) as ei:
            await client.get(url + "/x")
        assert ei.value.receipt.budget == "held"
        seller.offer = offer(env.net, CENT)
        with pytest.raises(PaymentRefused):  # the held cent still counts against the daily budget
            await client.get(url + "/x")
        await asyncio.sleep(3.5)  # let the 2-second authorization expire ...
        await env.net.mint(env.net.deployer.address, 1)  # ... and a block be mined after it
        assert await buyer.reconcile() == 1
        ledger = await buyer.ledger()
        assert (await ledger.spent()).day == 0
        assert (await ledger.get(ei.value.receipt.id)).budget == "released"
    await buyer.aclose()
