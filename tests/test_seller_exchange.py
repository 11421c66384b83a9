"""The seller's x402 exchange through our ASGI middleware, over real HTTP, settled on the embedded chain.

Checklist numbers refer to spec-digest §12.
"""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import json
import subprocess
import sys

import pytest
import pytest_asyncio

from paywire.x402.codec import (
    decode_payment_required,
    decode_payment_response,
    encode_header,
    encode_payment_payload,
)
from paywire.x402.models import PaymentPayload, PaymentPayloadV1, PaymentRequirementsV1, requirements_v1_to_v2
from tests.helpers import close_devnet, new_devnet, payer_of, sign
from tests.test_seller_common import CHEAP, Shop, open_shop

pytestmark = pytest.mark.asyncio(loop_scope="module")


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def net():
    n = await new_devnet("embedded")
    yield n
    await close_devnet(n)


@pytest.fixture(scope="module")
def store_path(tmp_path_factory):
    return tmp_path_factory.mktemp("seller") / "seller.db"


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def shop(net, store_path):
    async with open_shop(net, f"sqlite:///{store_path}") as s:
        yield s


async def ledger(shop: Shop, path: str):
    return [r for r in await shop.middleware.flow.payments.sales(limit=1000) if r.path == path]


# ------------------------------------------------------------------------------------------ the challenge


async def test_unpaid_request_gets_402_for_both_generations(shop: Shop) -> None:
    """Checklist 1-5, 92-93: 402 + PAYMENT-REQUIRED (v2) and a v1 JSON body; EIP-712 domain in extra."""
    r = await shop.http.get(shop.url + "/cheap")
    assert r.status_code == 402
    pr = decode_payment_required(r.headers["payment-required"])
    assert pr.x402_version == 2 and pr.resource is not None and pr.resource.url == shop.url + "/cheap"
    (offer,) = pr.accepts
    assert (offer.scheme, offer.network, offer.amount) == ("exact", shop.net.info.network, CHEAP)
    assert offer.pay_to == shop.net.payee.address and offer.asset == shop.net.info.token
    assert offer.extra == {"name": shop.net.info.token_name, "version": shop.net.info.token_version}
    body = r.json()
    assert body["x402Version"] == 1 and body["accepts"][0]["maxAmountRequired"] == str(CHEAP)
    assert body["accepts"][0]["resource"] == shop.url + "/cheap"
    assert r.headers["content-type"] == "application/json" and r.headers["cache-control"] == "no-store"
    assert "PAYMENT-RESPONSE" in r.headers["access-control-expose-headers"]
    assert shop.counter["cheap"] == 0


async def test_money_price_is_converted_with_the_token_decimals(shop: Shop) -> None:
    """A "$0.05" price becomes 50000 units of a 6-decimals token."""
    assert (await shop.challenge("/dear")).amount == 50_000


async def test_head_options_and_free_routes(shop: Shop) -> None:
    """HEAD gets the challenge without a body and is never charged; a CORS preflight is answered with the
    payment headers allowed (checklist 21); free routes pass through with Expose-Headers."""
    h = await shop.http.head(shop.url + "/cheap")
    assert h.status_code == 402 and "payment-required" in h.headers and h.content == b""
    h2 = await shop.http.head(shop.url + "/cheap", headers={"PAYMENT-SIGNATURE": await shop.payment("/cheap")})
    assert h2.status_code == 402 and shop.counter["cheap"] == 0
    o = await shop.http.options(shop.url + "/cheap", headers={
        "Origin": "https://app.example", "Access-Control-Request-Method": "GET",
        "Access-Control-Request-Headers": "payment-signature"})
    assert o.status_code == 204
    allowed = o.headers["access-control-allow-headers"].upper()
    for name in ("PAYMENT-SIGNATURE", "X-PAYMENT", "SIGN-IN-WITH-X"):
        assert name in allowed
    assert o.headers["access-control-allow-origin"] == "*"
    assert "PAYMENT-REQUIRED" in o.headers["access-control-expose-headers"]
    f = await shop.http.get(shop.url + "/free")
    assert f.status_code == 200 and f.json() == {"free": True}
    assert "PAYMENT-RESPONSE" in f.headers["access-control-expose-headers"]


async def test_browser_gets_the_paywall(shop: Shop) -> None:
    """Checklist 20: Accept text/html + a Mozilla UA → our self-contained HTML paywall, status 402."""
    r = await shop.http.get(shop.url + "/cheap", headers={
        "Accept": "text/html,application/xhtml+xml", "User-Agent": "Mozilla/5.0 (X11; Linux x86_64)"})
    assert r.status_code == 402 and r.headers["content-type"].startswith("text/html")
    html = r.text
    assert "window.x402 = " in html and "eth_signTypedData_v4" in html and "PAYMENT-SIGNATURE" in html
    assert "<script src" not in html and "https://" not in html.split("<script id")[0].split("</style>")[1]
    config = json.loads(html.split("window.x402 = ", 1)[1].split(";</script>", 1)[0])
    assert config["paymentRequired"]["accepts"][0]["amount"] == str(CHEAP)
    assert config["displayAmount"] == "0.01" and config["currentUrl"] == shop.url + "/cheap"


@pytest.mark.parametrize("value", [
    "%%% not base64 %%%",
    base64.b64encode(b"not json").decode(),
    base64.b64encode(b'{"x402Version": 2, "accepted": 5, "payload": {}}').decode(),
    encode_header({"x402Version": 7, "payload": {}}),
    "A" * 20_000,
])
async def test_malformed_payment_header_is_402_with_a_reason(shop: Shop, value: str) -> None:
    """Checklist 10: never verified, never settled, never a 5xx; the reason is in the challenge."""
    r = await shop.http.get(shop.url + "/cheap", headers={"PAYMENT-SIGNATURE": value})
    assert r.status_code == 402
    assert decode_payment_required(r.headers["payment-required"]).error.startswith("invalid payment header")
    assert shop.counter["cheap"] == 0


# ------------------------------------------------------------------------------------------ paying


async def test_paid_request_settles_and_is_private(shop: Shop) -> None:
    """Checklist 13, 16, 17: verify → handler → settle → 200 with PAYMENT-RESPONSE; Cache-Control private."""
    before = await shop.balances()
    runs = shop.counter["cheap"]
    r = await shop.http.get(shop.url + "/cheap", headers={"PAYMENT-SIGNATURE": await shop.payment("/cheap")})
    assert r.status_code == 200, r.text
    assert r.json()["payer"] == shop.net.payer.address
    s = decode_payment_response(r.headers["payment-response"])
    assert s.success and s.transaction.startswith("0x") and s.network == shop.net.info.network
    assert s.payer == shop.net.payer.address
    assert r.headers["cache-control"] == "private"  # the handler said "public"
    after = await shop.balances()
    assert (before[0] - after[0], after[1] - before[1]) == (CHEAP, CHEAP)
    assert shop.counter["cheap"] == runs + 1
    rows = [x for x in await ledger(shop, "/cheap") if x.tx == s.transaction]
    assert len(rows) == 1 and rows[0].state == "served" and rows[0].amount == CHEAP
    assert rows[0].payer == shop.net.payer.address and rows[0].route == "GET /cheap"


async def test_ledger_names_the_payer_the_facilitator_verified(shop: Shop) -> None:
    """The payload may spell its signer in lower case (the signature still holds): the ledger row, written with the
    payload's spelling when claimed, ends up naming the payer as the facilitator verified it (checksummed)."""
    def lower_from(p: PaymentPayload) -> PaymentPayload:
        auth = {**p.payload["authorization"], "from": p.payload["authorization"]["from"].lower()}
        return dataclasses.replace(p, payload={**p.payload, "authorization": auth})

    header = await shop.payment("/cheap", change=lower_from)
    r = await shop.http.get(shop.url + "/cheap", headers={"PAYMENT-SIGNATURE": header})
    assert r.status_code == 200, r.text
    tx = decode_payment_response(r.headers["payment-response"]).transaction
    [row] = [x for x in await ledger(shop, "/cheap") if x.tx == tx]
    assert row.payer == shop.net.payer.address, f"the ledger names {row.payer}, not the verified payer"
    again = await shop.http.get(shop.url + "/cheap", headers={"PAYMENT-SIGNATURE": header})
    assert again.status_code == 200 and again.content == r.content, "its replay gets the recorded response"


async def test_eight_concurrent_copies_of_one_payment_run_the_handler_once(shop: Shop) -> None:
    """Eight simultaneous requests carrying one payment: one handler run, one settlement, eight identical
    200 answers (the official Python middleware runs the handler eight times)."""
    header = await shop.payment("/cheap")
    before = await shop.balances()
    runs = shop.counter["cheap"]
    rs = await asyncio.gather(*[shop.http.get(shop.url + "/cheap", headers={"PAYMENT-SIGNATURE": header})
                                for _ in range(8)])
    assert [r.status_code for r in rs] == [200] * 8, [r.text for r in rs]
    assert shop.counter["cheap"] == runs + 1
    assert len({r.content for r in rs}) == 1
    assert len({decode_payment_response(r.headers["payment-response"]).transaction for r in rs}) == 1
    after = await shop.balances()
    assert (before[0] - after[0], after[1] - before[1]) == (CHEAP, CHEAP)
    # a later replay gets the recorded response, still without running the handler or paying again
    again = await shop.http.get(shop.url + "/cheap", headers={"PAYMENT-SIGNATURE": header})
    assert again.status_code == 200 and again.content == rs[0].content
    assert shop.counter["cheap"] == runs + 1 and await shop.balances() == after


async def test_cheap_payment_is_refused_on_the_dear_route(shop: Shop) -> None:
    """Checklist 11: a payment for another offer is never verified or settled; a used payment cannot buy a
    second resource with the same price."""
    header = await shop.payment("/cheap")
    before = await shop.balances()
    r = await shop.http.get(shop.url + "/dear", headers={"PAYMENT-SIGNATURE": header})
    assert r.status_code == 402
    assert decode_payment_required(r.headers["payment-required"]).error == "No matching payment requirements"
    assert shop.counter["dear"] == 0 and await shop.balances() == before
    ok = await shop.http.get(shop.url + "/cheap", headers={"PAYMENT-SIGNATURE": header})
    assert ok.status_code == 200
    other = await shop.http.get(shop.url + "/cheap2", headers={"PAYMENT-SIGNATURE": header})
    assert other.status_code == 409 and other.json()["error"] == "payment_already_used"


async def test_handler_that_raises_or_fails_is_not_charged(shop: Shop) -> None:
    """Checklist 19: a handler exception or a status >= 400 means no settlement; a retry of the same payment
    gets the recorded answer without running the handler again."""
    before = await shop.balances()
    hb, hf = await shop.payment("/boom"), await shop.payment("/fail")
    boom, fail = await asyncio.gather(shop.http.get(shop.url + "/boom", headers={"PAYMENT-SIGNATURE": hb}),
                                      shop.http.get(shop.url + "/fail", headers={"PAYMENT-SIGNATURE": hf}))
    assert boom.status_code == 500 and boom.json()["error"] == "handler_failed"
    assert "not charged" in boom.json()["message"] and "payment-response" not in boom.headers
    assert fail.status_code == 500 and fail.json() == {"error": "upstream broke"}
    assert await shop.balances() == before
    again = await shop.http.get(shop.url + "/boom", headers={"PAYMENT-SIGNATURE": hb})
    assert again.status_code == 500 and shop.counter["boom"] == 1 and shop.counter["fail"] == 1
    rows = await ledger(shop, "/boom") + await ledger(shop, "/fail")
    assert sorted(r.state for r in rows) == ["failed", "failed"] and all(r.tx is None for r in rows)


async def test_response_over_the_hold_limit_is_not_charged(net, tmp_path) -> None:
    """settle="after" holds the whole response until payment settles (and records it for replays): a handler
    answering more than max_record_bytes gets a clear 500, nothing settles, a retry does not rerun it."""
    async with open_shop(net, f"sqlite:///{tmp_path / 'small.db'}", max_record_bytes=64 * 1024) as small:
        before = await small.balances()
        header = await small.payment("/big")
        r = await small.http.get(small.url + "/big", headers={"PAYMENT-SIGNATURE": header})
        assert r.status_code == 500 and r.json()["error"] == "response_too_large", r.text
        assert "payment-response" not in r.headers and "not charged" in r.json()["message"]
        again = await small.http.get(small.url + "/big", headers={"PAYMENT-SIGNATURE": header})
        assert again.status_code == 500 and small.counter["big"] == 1
        assert await small.balances() == before
        [row] = await ledger(small, "/big")
        assert row.state == "failed" and row.tx is None


async def test_a_live_owner_keeps_its_claim_past_the_lease(net, tmp_path) -> None:
    """The lease only outlives a dead owner: a handler running longer than the lease renews its claim, so a copy
    of the payment sent meanwhile waits for the outcome and replays it (no takeover, one run, one transfer)."""
    async with open_shop(net, f"sqlite:///{tmp_path / 'lease.db'}", lease=1.5) as short:
        before = await short.balances()
        header = await short.payment("/slow")
        first = asyncio.ensure_future(short.http.get(short.url + "/slow", headers={"PAYMENT-SIGNATURE": header}))
        await asyncio.sleep(2.0)  # past the lease: only the owner's renewals (every 0.5 s) keep the claim
        second = await short.http.get(short.url + "/slow", headers={"PAYMENT-SIGNATURE": header})
        r = await first
        assert r.status_code == 200 and second.status_code == 200, (r.text, second.text)
        assert second.content == r.content and short.counter["slow"] == 1
        assert await short.balances() == (before[0] - CHEAP, before[1] + CHEAP)


async def test_invalid_payment_is_refused_and_not_recorded(shop: Shop) -> None:
    """Checklist 14: the facilitator's reason comes back in a fresh challenge; nothing ran, nothing recorded."""
    req = await shop.challenge("/cheap")
    cheaper = dataclasses.replace(req, amount=req.amount - 1)
    p = await sign(cheaper, payer_of(shop.net), accepted=req)  # signs 9999 but claims the 10000 offer
    runs = shop.counter["cheap"]
    r = await shop.http.get(shop.url + "/cheap", headers={"PAYMENT-SIGNATURE": encode_payment_payload(p)})
    assert r.status_code == 402
    assert decode_payment_required(r.headers["payment-required"]).error == (
        "invalid_exact_evm_payload_authorization_value_mismatch")
    assert shop.counter["cheap"] == runs
    assert all(row.state in ("served", "failed") for row in await ledger(shop, "/cheap"))


async def test_settle_before_streams_after_payment(shop: Shop) -> None:
    """settle='before': paid first, then the handler streams; the stream carries PAYMENT-RESPONSE and the
    recorded stream is replayed to a retry."""
    before = await shop.balances()
    header = await shop.payment("/stream")
    async with shop.http.stream("GET", shop.url + "/stream", headers={"PAYMENT-SIGNATURE": header}) as r:
        assert r.status_code == 200
        s = decode_payment_response(r.headers["payment-response"])
        body = b"".join([c async for c in r.aiter_bytes()])
    assert s.success and body.startswith(b"chunk 0\n") and f"paid by tx {s.transaction}".encode() in body
    assert r.headers["cache-control"] == "private"
    after = await shop.balances()
    assert (before[0] - after[0], after[1] - before[1]) == (CHEAP, CHEAP)
    again = await shop.http.get(shop.url + "/stream", headers={"PAYMENT-SIGNATURE": header})
    assert again.status_code == 200 and again.content == body and shop.counter["stream"] == 1
    (row,) = [x for x in await ledger(shop, "/stream") if x.tx == s.transaction]
    assert row.state == "served" and row.settle_mode == "before"


async def test_payment_identifier_rules(shop: Shop) -> None:
    """Checklist 23: required:true advertised; no id → 400; same id + same payment → cached response;
    same id + different payment → 409."""
    r = await shop.http.get(shop.url + "/idem")
    ext = decode_payment_required(r.headers["payment-required"]).extensions
    assert ext is not None and ext["payment-identifier"]["info"] == {"required": True}
    no_id = await shop.http.get(shop.url + "/idem", headers={"PAYMENT-SIGNATURE": await shop.payment("/idem")})
    assert no_id.status_code == 400 and no_id.json()["error"] == "payment_identifier_required"
    bad_id = await shop.http.get(shop.url + "/idem",
                                 headers={"PAYMENT-SIGNATURE": await shop.payment("/idem", pid="short")})
    assert bad_id.status_code == 400
    pid = "pay_" + "a1" * 16
    first_header = await shop.payment("/idem", pid=pid)
    first = await shop.http.get(shop.url + "/idem", headers={"PAYMENT-SIGNATURE": first_header})
    assert first.status_code == 200
    cached = await shop.http.get(shop.url + "/idem", headers={"PAYMENT-SIGNATURE": first_header})
    assert cached.status_code == 200 and cached.content == first.content and shop.counter["idem"] == 1
    other = await shop.http.get(shop.url + "/idem", headers={"PAYMENT-SIGNATURE": await shop.payment("/idem",
                                                                                                     pid=pid)})
    assert other.status_code == 409 and other.json()["error"] == "payment_identifier_conflict"
    assert shop.counter["idem"] == 1


async def test_dynamic_price_and_path_parameters(shop: Shop) -> None:
    """A price computed from the request: /items/{id} costs CHEAP per character of the id."""
    req = await shop.challenge("/items/abc")
    assert req.amount == 3 * CHEAP
    p = await sign(req, payer_of(shop.net))
    r = await shop.http.get(shop.url + "/items/abc", headers={"PAYMENT-SIGNATURE": encode_payment_payload(p)})
    assert r.status_code == 200 and r.json()["item"] == "abc"


async def test_v1_client_pays_with_x_payment(shop: Shop) -> None:
    """Checklist 92-94: a v1 client reads the JSON body, pays with X-PAYMENT, gets X-PAYMENT-RESPONSE."""
    r = await shop.http.get(shop.url + "/dear")
    r1 = PaymentRequirementsV1.from_wire(r.json()["accepts"][0])
    req, _ = requirements_v1_to_v2(r1)
    inner = (await sign(req, payer_of(shop.net))).payload
    p1 = PaymentPayloadV1(x402_version=1, scheme=r1.scheme, network=r1.network, payload=inner)
    before = await shop.balances()
    paid = await shop.http.get(shop.url + "/dear", headers={"X-PAYMENT": encode_payment_payload(p1)})
    assert paid.status_code == 200, paid.text
    assert "payment-response" not in paid.headers
    s = decode_payment_response(paid.headers["x-payment-response"])
    assert s.success
    after = await shop.balances()
    assert (before[0] - after[0], after[1] - before[1]) == (50_000, 50_000)
    (row,) = [x for x in await ledger(shop, "/dear") if x.tx == s.transaction]
    assert row.x402_version == 1


async def test_ledger_lists_paid_requests(shop: Shop) -> None:
    """The seller's revenue record: Python API and ``paywire sales``."""
    rows = await shop.middleware.flow.payments.sales(limit=1000)
    served = [r for r in rows if r.state == "served"]
    assert served and all(r.tx and r.payer and r.amount > 0 for r in served)
    revenue = await shop.middleware.flow.payments.revenue()
    n, total = revenue[(shop.net.info.network, shop.net.info.token.lower())]
    assert n == len(served) and total == sum(r.amount for r in served)


async def test_sales_cli(store_path) -> None:
    """``paywire sales`` prints the ledger as a table (and JSON)."""
    await asyncio.to_thread(_sales_cli, store_path)


def _sales_cli(store_path) -> None:
    out = subprocess.run([sys.executable, "-m", "paywire.cli.main", "sales", "--store", f"sqlite:///{store_path}",
                          "--json"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    data = json.loads(out.stdout)
    assert any(r["state"] == "served" and r["route"] == "GET /cheap" for r in data["sales"])
    table = subprocess.run([sys.executable, "-m", "paywire.cli.main", "sales", "--store",
                            f"sqlite:///{store_path}"], capture_output=True, text=True, timeout=60,
                           env={"COLUMNS": "200", "PATH": "/usr/bin:/bin"})
    assert table.returncode == 0, table.stderr
    assert "GET /cheap" in table.stdout and "served" in table.stdout and "failed" in table.stdout
