"""Money safety of the seller's ``batch-settlement`` channel accounting (our escrow on the embedded chain, our
facilitator over HTTP, our seller; SQLite and PostgreSQL stores):

* a replayed, stale or skipping voucher is refused with the spec's corrective 402 (``channelState`` and our own
  last voucher as proof), below-claimed / over-balance / forged vouchers with the spec's reason codes;
* a handler's charge above the authorized maximum is refused and charges nothing; a charge of 0 charges nothing;
* 50 concurrent requests on one channel — and the same vouchers spread over two replicas sharing one
  PostgreSQL — charge exactly the sum of the handlers that succeeded, each handler running once per charge.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import random
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
import pytest_asyncio
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from paywire.chain import EmbeddedChain, RpcChain
from paywire.chain.permit2 import permit2_code
from paywire.chain.rail import EvmNetwork
from paywire.chain.tx import TxSender
from paywire.devnet import Devnet, setup_devnet
from paywire.evm import batch as b
from paywire.evm.assets import KNOWN_ASSETS, AssetRegistry
from paywire.evm.crypto import address_bytes, recover_address
from paywire.facilitator.app import create_app
from paywire.facilitator.client import HttpFacilitatorClient
from paywire.facilitator.core import Facilitator
from paywire.schemes.evm_batch import payload as pl
from paywire.schemes.evm_batch.client import BatchEvmClient
from paywire.schemes.registry import default_registry
from paywire.server import bill
from paywire.server.asgi import PaymentMiddleware
from paywire.server.channel_claims import ClaimManager
from paywire.server.core import PaidRoute
from paywire.server.pricing import Offer
from paywire.serving import serve_asgi
from paywire.store.channels import ChannelStore
from paywire.x402.codec import decode_payment_required, decode_payment_response, encode_payment_payload
from paywire.x402.models import PaymentPayload, PaymentRequirements
from tests.helpers import close_devnet

pytestmark = pytest.mark.asyncio(loop_scope="module")

PRICE = 1_000


@dataclass
class Chain:
    net: Devnet
    facilitator_url: str
    facilitator: HttpFacilitatorClient


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def chain() -> AsyncIterator[Chain]:
    net = await setup_devnet(RpcChain(EmbeddedChain(chain_id=31337, code=permit2_code())))
    rails = [EvmNetwork(net.info.network, net.chain, [TxSender(net.chain, net.facilitator.private_key)])]
    try:
        async with serve_asgi(create_app(Facilitator(default_registry.facilitators_for(rails)))) as url:
            yield Chain(net, url, HttpFacilitatorClient(url))
    finally:
        await close_devnet(net)


@dataclass
class Seller:
    url: str
    hits: dict[str, int]
    middleware: PaymentMiddleware

    def store(self) -> ChannelStore:
        return ChannelStore(self.middleware.flow.payments.db)


def app(hits: dict[str, int]) -> Starlette:
    async def metered(request: Request) -> Response:
        cost = request.query_params.get("cost")
        if cost is not None:
            bill(request, int(cost))
        hits["metered"] = hits.get("metered", 0) + 1
        return JSONResponse({"ok": True})

    return Starlette(routes=[Route("/metered", metered)])


@contextlib.asynccontextmanager
async def seller(c: Chain, store: str) -> AsyncIterator[Seller]:
    hits: dict[str, int] = {}
    routes = [PaidRoute("GET /metered", offers=(Offer(price=PRICE, asset=c.net.asset, scheme="batch-settlement"),))]
    mw = PaymentMiddleware(app(hits), routes, HttpFacilitatorClient(c.facilitator_url), pay_to=c.net.payee.address,
                           network=c.net.info.network, store=store, assets=AssetRegistry((*KNOWN_ASSETS, c.net.asset)),
                           channel_claims=False)
    try:
        async with serve_asgi(mw) as url:
            yield Seller(url, hits, mw)
    finally:
        await mw.flow.aclose()


async def offer(http: httpx.AsyncClient, url: str) -> PaymentRequirements:
    r = await http.get(url + "/metered")
    assert r.status_code == 402
    return decode_payment_required(r.headers["payment-required"]).accepts[0]


def header(req: PaymentRequirements, inner: Any) -> dict[str, str]:
    return {"PAYMENT-SIGNATURE": encode_payment_payload(PaymentPayload(accepted=req, payload=dict(inner)))}


async def voucher_payload(client: BatchEvmClient, req: PaymentRequirements, ceiling: int,
                          signer: Any = None) -> dict[str, Any]:
    cfg = client.config_for(req)
    cid = cfg.channel_id(int(req.network.split(":")[1]))
    sig = await (signer or client.signer).sign_digest(b.voucher_digest(cid, ceiling, int(req.network.split(":")[1])))
    return {"type": "voucher", "channelConfig": cfg.to_wire(),
            "voucher": {"channelId": b.hex32(cid), "maxClaimableAmount": str(ceiling), "signature": "0x" + sig.hex()}}


async def opened(c: Chain, s: Seller, http: httpx.AsyncClient, salt: int, multiplier: int = 100,
                 ) -> tuple[BatchEvmClient, PaymentRequirements]:
    """A fresh channel (its own salt) with one paid request behind it."""
    client = BatchEvmClient(c.net.payer, salt=salt, deposit_multiplier=multiplier)
    req = await offer(http, s.url)
    r = await http.get(s.url + "/metered", headers=header(req, await client.create_payload(req)))
    assert r.status_code == 200, r.text
    await client.settled(req, decode_payment_response(r.headers["payment-response"]))
    return client, req


def error_of(r: httpx.Response) -> str | None:
    return decode_payment_required(r.headers["payment-required"]).error if "payment-required" in r.headers else None


@pytest.mark.parametrize("kind", ["sqlite", "postgres"])
async def test_replayed_stale_and_skipping_vouchers_get_a_corrective_402(chain: Chain, kind: str,
                                                                         request: pytest.FixtureRequest) -> None:
    store = request.getfixturevalue("pg_url") if kind == "postgres" else request.getfixturevalue("sqlite_url")
    async with seller(chain, store) as s, httpx.AsyncClient(timeout=60) as http:
        client, req = await opened(chain, s, http, salt=100 + (kind == "postgres"))
        paid = await client.create_payload(req)
        first = await http.get(s.url + "/metered", headers=header(req, paid))
        assert first.status_code == 200
        replay = await http.get(s.url + "/metered", headers=header(req, paid))
        assert (replay.status_code, error_of(replay)) == (402, pl.CUMULATIVE_MISMATCH), "a replay was served"
        assert s.hits["metered"] == 2, "the replayed voucher ran the handler"
        for ceiling in (PRICE, 2 * PRICE, 4 * PRICE):  # stale, already used, skipping ahead
            r = await http.get(s.url + "/metered", headers=header(req, await voucher_payload(client, req, ceiling)))
            assert (r.status_code, error_of(r)) == (402, pl.CUMULATIVE_MISMATCH), ceiling
        extra = decode_payment_required(replay.headers["payment-required"]).accepts[0].extra
        assert extra["channelState"]["chargedCumulativeAmount"] == str(2 * PRICE)
        proof = extra["voucherState"]
        cid = b.bytes32(extra["channelState"]["channelId"])
        digest = b.voucher_digest(cid, int(proof["signedMaxClaimable"]), chain.net.info.chain_id)
        assert recover_address(digest, b.hex_bytes(proof["signature"])) == address_bytes(chain.net.payer.address)
        row = await s.store().get(b.hex32(cid))
        assert row is not None and row.charged == 2 * PRICE and s.hits["metered"] == 2, "a refused voucher charged"


async def test_facilitator_refuses_below_claimed_over_balance_and_forged_vouchers(chain: Chain, sqlite_url: str,
                                                                                 ) -> None:
    async with seller(chain, sqlite_url) as s, httpx.AsyncClient(timeout=60) as http:
        client, req = await opened(chain, s, http, salt=200, multiplier=3)
        assert await ClaimManager(s.store(), chain.facilitator).claim() == 1  # on chain: totalClaimed = PRICE

        async def verdict(payload: dict[str, Any]) -> str | None:
            res = await chain.facilitator.verify(PaymentPayload(accepted=req, payload=payload), req)
            return None if res.is_valid else res.invalid_reason

        assert await verdict(await voucher_payload(client, req, PRICE)) == pl.CUMULATIVE_BELOW_CLAIMED
        assert await verdict(await voucher_payload(client, req, PRICE - 1)) == pl.CUMULATIVE_BELOW_CLAIMED
        assert await verdict(await voucher_payload(client, req, 3 * PRICE + 1)) == pl.CUMULATIVE_EXCEEDS_BALANCE
        forged = await voucher_payload(client, req, 2 * PRICE, signer=chain.net.payee)
        assert await verdict(forged) == pl.VOUCHER_SIGNATURE
        assert await verdict(await voucher_payload(client, req, 2 * PRICE)) is None

        # at the seller: the voucher the protocol asks for, but beyond the deposit, is refused and runs nothing
        r = await http.get(s.url + "/metered", headers=header(req, await voucher_payload(client, req, 2 * PRICE)))
        assert r.status_code == 200
        r = await http.get(s.url + "/metered", headers=header(req, await voucher_payload(client, req, 3 * PRICE)))
        assert r.status_code == 200
        hits = s.hits["metered"]
        r = await http.get(s.url + "/metered", headers=header(req, await voucher_payload(client, req, 4 * PRICE)))
        assert (r.status_code, error_of(r)) == (402, pl.CUMULATIVE_EXCEEDS_BALANCE)
        r = await http.get(s.url + "/metered", headers=header(req, forged))
        assert r.status_code == 402 and s.hits["metered"] == hits, "a refused voucher ran the handler"


async def test_a_charge_above_the_maximum_is_refused_and_zero_charges_nothing(chain: Chain, sqlite_url: str) -> None:
    async with seller(chain, sqlite_url) as s, httpx.AsyncClient(timeout=60) as http:
        client, req = await opened(chain, s, http, salt=300)
        cid = client.channel_id(req)
        paid = await client.create_payload(req)
        over = await http.get(s.url + f"/metered?cost={PRICE + 1}", headers=header(req, paid))
        assert over.status_code == 500, over.text
        assert (await s.store().get(cid)).charged == PRICE, "a charge above the maximum was committed"  # type: ignore[union-attr]
        again = await http.get(s.url + "/metered?cost=0", headers=header(req, paid))  # the same voucher, retried
        assert again.status_code == 200
        res = decode_payment_response(again.headers["payment-response"])
        assert res.extra and res.extra["chargedAmount"] == "0" and res.transaction == ""
        assert (await s.store().get(cid)).charged == PRICE, "a zero charge changed the total"  # type: ignore[union-attr]


async def concurrent_vouchers(c: Chain, urls: list[str], client: BatchEvmClient, req: PaymentRequirements,
                              base: int, n: int, http: httpx.AsyncClient) -> tuple[int, int]:
    """Send n pre-signed vouchers (base + k·PRICE) at once, resend the refused ones until all are served;
    returns (responses served, sum of their chargedAmount)."""
    pending = {k: await voucher_payload(client, req, base + k * PRICE) for k in range(1, n + 1)}
    served = charged = 0
    rounds = 0
    while pending and rounds < 4 * n:
        rounds += 1
        keys = list(pending)
        random.shuffle(keys)
        replies = await asyncio.gather(*(http.get(urls[i % len(urls)] + "/metered", headers=header(req, pending[k]))
                                         for i, k in enumerate(keys)))
        for k, r in zip(keys, replies, strict=True):
            if r.status_code == 200:
                served += 1
                res = decode_payment_response(r.headers["payment-response"])
                assert res.extra is not None
                charged += int(res.extra["chargedAmount"])
                del pending[k]
            else:
                assert r.status_code == 402 and error_of(r) in (pl.CUMULATIVE_MISMATCH, pl.CHANNEL_BUSY), r.text
    assert not pending, f"{len(pending)} vouchers were never served"
    return served, charged


async def assert_ledger(s: Seller, cid: str, rows: int, total: int) -> None:
    """The seller's sales ledger has one served row per charge on the channel, summing to what it charged."""
    sales = [r for r in await s.middleware.flow.payments.sales(limit=1_000) if r.auth_key.startswith(f"channel:{cid}:")]
    assert len(sales) == rows and sum(r.amount for r in sales) == total, "the ledger differs from the charges"
    assert {r.state for r in sales} == {"served"}


@pytest.mark.parametrize("kind", ["sqlite", "postgres"])
async def test_fifty_concurrent_requests_charge_exactly_the_successful_handlers(
        chain: Chain, kind: str, request: pytest.FixtureRequest) -> None:
    store = request.getfixturevalue("pg_url") if kind == "postgres" else request.getfixturevalue("sqlite_url")
    async with seller(chain, store) as s, httpx.AsyncClient(timeout=120, limits=httpx.Limits(
            max_connections=64)) as http:
        client, req = await opened(chain, s, http, salt=400 + (kind == "postgres"))
        served, charged = await concurrent_vouchers(chain, [s.url], client, req, PRICE, 50, http)
        row = await s.store().get(client.channel_id(req))
        assert row is not None
        assert served == 50 and s.hits["metered"] == 51, "a handler ran for a voucher that was not charged"
        assert row.charged == PRICE + charged == 51 * PRICE, "the charges differ from the served handlers"
        await assert_ledger(s, client.channel_id(req), 51, 51 * PRICE)


async def test_two_replicas_on_one_postgres_never_exceed_the_voucher(chain: Chain, pg_url: str) -> None:
    async with seller(chain, pg_url) as a, seller(chain, pg_url) as b2, httpx.AsyncClient(
            timeout=120, limits=httpx.Limits(max_connections=64)) as http:
        client, req = await opened(chain, a, http, salt=500)
        # one voucher to both replicas at once: one serves it, the other refuses
        same = await voucher_payload(client, req, 2 * PRICE)
        r1, r2 = await asyncio.gather(http.get(a.url + "/metered", headers=header(req, same)),
                                      http.get(b2.url + "/metered", headers=header(req, same)))
        assert sorted([r1.status_code, r2.status_code]) == [200, 402], (r1.text, r2.text)
        served, charged = await concurrent_vouchers(chain, [a.url, b2.url], client, req, 2 * PRICE, 20, http)
        assert served == 20
        row = await a.store().get(client.channel_id(req))
        assert row is not None and row.charged == 2 * PRICE + charged == 22 * PRICE
        assert a.hits.get("metered", 0) + b2.hits.get("metered", 0) == 22, "a handler ran without a charge"
        assert row.charged <= row.signed_max, "the charge exceeds the signed voucher"
        await assert_ledger(a, client.channel_id(req), 22, 22 * PRICE)


async def test_permit2_deposit_needs_the_approval_then_opens_the_channel(chain: Chain, sqlite_url: str) -> None:
    """An offer with ``assetTransferMethod: permit2``: without the payer's Permit2 approval the deposit is refused
    with 412 ``permit2_allowance_required`` and nothing runs; after it, the deposit lands through the Permit2
    collector and the request is served."""
    from paywire.chain.devkeys import dev_keys
    from paywire.chain.permit2 import approve_permit2
    from paywire.evm.signer import LocalSigner

    net = chain.net
    fresh = LocalSigner(dev_keys(8)[7])  # a funded dev key no other test approves Permit2 with
    await net.mint(fresh.address, 1_000_000)
    hits: dict[str, int] = {}
    offer_ = Offer(price=PRICE, asset=net.asset, scheme="batch-settlement", extra={"assetTransferMethod": "permit2"})
    mw = PaymentMiddleware(app(hits), [PaidRoute("GET /metered", offers=(offer_,))],
                           HttpFacilitatorClient(chain.facilitator_url), pay_to=net.payee.address,
                           network=net.info.network, store=sqlite_url, channel_claims=False,
                           assets=AssetRegistry((*KNOWN_ASSETS, net.asset)))
    try:
        async with serve_asgi(mw) as url, httpx.AsyncClient(timeout=60) as http:
            req = await offer(http, url)
            assert req.extra["assetTransferMethod"] == "permit2"
            client = BatchEvmClient(fresh, salt=600)
            r = await http.get(url + "/metered", headers=header(req, await client.create_payload(req)))
            assert (r.status_code, error_of(r)) == (412, pl.PERMIT2_ALLOWANCE_REQUIRED), r.text
            assert not hits, "the handler ran without a deposit"
            await approve_permit2(net.chain, fresh.private_key, net.info.token)
            escrow0 = await net.token_balance(b.BATCH_SETTLEMENT_ADDRESS)
            r = await http.get(url + "/metered", headers=header(req, await client.create_payload(req)))
            assert r.status_code == 200, r.text
            res = decode_payment_response(r.headers["payment-response"])
            assert res.transaction and res.amount == 10 * PRICE
            assert await net.token_balance(b.BATCH_SETTLEMENT_ADDRESS) - escrow0 == 10 * PRICE
            assert hits == {"metered": 1}
    finally:
        await mw.flow.aclose()


async def test_a_sellers_min_deposit_hint_cannot_inflate_the_deposit(chain: Chain) -> None:
    """``extra.minDeposit`` is a hint: the client deposits at most its own cap (10× the offer by default)."""
    net = chain.net
    req = PaymentRequirements(scheme="batch-settlement", network=net.info.network, amount=PRICE, asset=net.info.token,
                              pay_to=net.payee.address, max_timeout_seconds=300,
                              extra={"receiverAuthorizer": net.facilitator.address, "withdrawDelay": 900,
                                     "name": net.info.token_name, "version": net.info.token_version,
                                     "minDeposit": str(10**15)})
    payload = await BatchEvmClient(net.payer, salt=700).create_payload(req)
    assert payload["deposit"]["amount"] == str(10 * PRICE), payload["deposit"]
    small = await BatchEvmClient(net.payer, salt=701, max_deposit=3 * PRICE).create_payload(
        dataclasses.replace(req, extra={**req.extra, "minDeposit": str(5 * PRICE)}))
    assert small["deposit"]["amount"] == str(3 * PRICE)


async def test_a_retried_deposit_settle_is_answered_without_a_second_transaction(chain: Chain) -> None:
    """The facilitator asked twice to settle one deposit (a retry after a lost answer): the second answer is a
    success without a transaction, and the escrow holds the deposit once."""
    net = chain.net
    req = PaymentRequirements(scheme="batch-settlement", network=net.info.network, amount=PRICE, asset=net.info.token,
                              pay_to=net.payee.address, max_timeout_seconds=300,
                              extra={"receiverAuthorizer": net.facilitator.address, "withdrawDelay": 900,
                                     "name": net.info.token_name, "version": net.info.token_version})
    payload = PaymentPayload(accepted=req, payload=dict(await BatchEvmClient(net.payer, salt=800).create_payload(req)))
    escrow0 = await net.token_balance(b.BATCH_SETTLEMENT_ADDRESS)
    first = await chain.facilitator.settle(payload, req)
    assert first.success and first.transaction and first.amount == 10 * PRICE, first
    again = await chain.facilitator.settle(payload, req)
    assert again.success and again.transaction == "" and again.amount == 0, again
    assert await net.token_balance(b.BATCH_SETTLEMENT_ADDRESS) - escrow0 == 10 * PRICE, "deposited twice"


async def test_the_seller_never_reads_one_voucher_as_another() -> None:
    """The seller parses a request's payload once and reuses it for that payload object only: a different
    voucher, even on the same channel, is read as itself, and a mutated copy is read afresh."""
    config = {"payer": "0x" + "11" * 20, "payerAuthorizer": "0x" + "11" * 20, "receiver": "0x" + "22" * 20,
              "receiverAuthorizer": "0x" + "33" * 20, "token": "0x" + "44" * 20, "withdrawDelay": 900,
              "salt": "0x" + "00" * 32}

    def payload(ceiling: int) -> dict[str, Any]:
        return {"type": "voucher", "channelConfig": dict(config), "voucher": {
            "channelId": "0x" + "ab" * 32, "maxClaimableAmount": str(ceiling), "signature": "0x" + "cd" * 65}}

    first, second = payload(1_000), payload(2_000)
    for p, ceiling in [(first, 1_000), (second, 2_000), (first, 1_000), (first, 1_000), (second, 2_000)]:
        assert pl.parse_payment_once(p).voucher.max_claimable == ceiling, "a voucher was read as another one"
    copy = {**first, "voucher": {**first["voucher"], "maxClaimableAmount": "3000"}}
    assert pl.parse_payment_once(copy).voucher.max_claimable == 3_000
    with pytest.raises(pl.PayloadError):
        pl.parse_payment_once({**first, "type": "nonsense"})
