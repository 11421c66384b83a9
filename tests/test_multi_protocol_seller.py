"""One route, x402 and MPP ``evm/charge`` in the same 402, through our ASGI middleware over real HTTP, settled on
the embedded chain by our facilitator; the official pympp client pays it too (checklist 1, 104–112)."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass

import httpx
import pytest
import pytest_asyncio
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from paywire.devnet import Devnet
from paywire.evm.assets import AssetRegistry
from paywire.facilitator.client import LocalFacilitatorClient
from paywire.mpp import problems as P
from paywire.mpp.b64 import b64url_encode
from paywire.mpp.challenge import Challenge, parse_www_authenticate
from paywire.mpp.credential import ChallengeEcho, Credential
from paywire.mpp.methods.evm_charge import CONCAT, JSON_ARRAY, sign_evm_charge
from paywire.mpp.receipt import Receipt
from paywire.server.asgi import PaymentMiddleware
from paywire.server.core import PaidRoute
from paywire.server.pricing import Offer
from paywire.serving import serve_asgi
from paywire.x402.codec import decode_payment_required, encode_payment_payload
from tests.helpers import close_devnet, full_facilitator, new_devnet, payer_of, sign

pytestmark = pytest.mark.asyncio(loop_scope="module")

PRICE = 10_000
REALM = "shop.test"
SECRET = os.urandom(32)


@dataclass
class World:
    net: Devnet
    url: str
    http: httpx.AsyncClient
    calls: dict[str, int]
    mw: PaymentMiddleware

    async def balances(self) -> tuple[int, int]:
        return (await self.net.token_balance(self.net.payer.address),
                await self.net.token_balance(self.net.payee.address))

    async def challenge(self, path: str, **headers: str) -> tuple[httpx.Response, list[Challenge]]:
        r = await self.http.get(self.url + path, headers=headers)
        assert r.status_code == 402, r.text
        return r, parse_www_authenticate(r.headers.get_list("www-authenticate"))

    async def credential(self, path: str, variant: str = CONCAT) -> tuple[Credential, Challenge]:
        _, chs = await self.challenge(path)
        ch = next(c for c in chs if c.method == "evm")
        return await sign_evm_charge(ch, payer_of(self.net), self.net.asset, variant=variant), ch

    async def pay(self, path: str, cred: Credential) -> httpx.Response:
        return await self.http.get(self.url + path, headers={"Authorization": cred.to_authorization()})


def app(calls: dict[str, int]) -> Starlette:
    async def thing(request: Request) -> Response:
        calls[request.url.path] = calls.get(request.url.path, 0) + 1
        pay = request.state.payment
        return JSONResponse({"run": calls[request.url.path], "protocol": pay.protocol, "payer": pay.payer},
                            headers={"cache-control": "public"})

    async def fail(request: Request) -> Response:
        calls["/fail"] = calls.get("/fail", 0) + 1
        return JSONResponse({"error": "broken"}, status_code=500)

    async def order(request: Request) -> Response:
        calls["/order"] = calls.get("/order", 0) + 1
        return JSONResponse({"run": calls["/order"], "got": (await request.body()).decode()})

    return Starlette(routes=[Route("/both", thing), Route("/before", thing), Route("/x402", thing),
                             Route("/fail", fail), Route("/order", order, methods=["POST"])])


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def world(tmp_path_factory) -> AsyncIterator[World]:
    net = await new_devnet("embedded")
    calls: dict[str, int] = {}
    a = net.asset
    routes = [
        PaidRoute("GET /both", offers=(Offer(price=PRICE, asset=a),), mpp=("evm",), description="both"),
        PaidRoute("GET /before", offers=(Offer(price=PRICE, asset=a),), mpp=("evm",), settle="before"),
        PaidRoute("GET /x402", offers=(Offer(price=PRICE, asset=a),)),
        PaidRoute("GET /fail", offers=(Offer(price=PRICE, asset=a),), mpp=("evm",)),
        PaidRoute("POST /order", offers=(Offer(price=PRICE, asset=a),), mpp=("evm",)),
    ]
    mw = PaymentMiddleware(app(calls), routes, LocalFacilitatorClient(full_facilitator(net)),
                           store=f"sqlite:///{tmp_path_factory.mktemp('mp') / 's.db'}", assets=AssetRegistry((a,)),
                           pay_to=net.payee.address,
                           mpp_realm=REALM, mpp_secret=SECRET)
    async with serve_asgi(mw) as url, httpx.AsyncClient(timeout=60) as http:
        yield World(net, url, http, calls, mw)
    await mw.flow.aclose()
    await close_devnet(net)


def problem(r: httpx.Response) -> dict:
    assert r.headers["content-type"].startswith("application/problem+json"), r.headers
    return r.json()


async def test_one_402_carries_x402_and_mpp(world: World) -> None:
    """Checklist 1, 104, 105, 109: PAYMENT-REQUIRED and a Payment challenge, no-store, problem+json that keeps
    the x402 fields; the request is JCS/base64url; ``evm/charge`` mirrors the x402 offer."""
    r, chs = await world.challenge("/both")
    assert r.headers["cache-control"] == "no-store"
    pr = decode_payment_required(r.headers["payment-required"])
    assert pr.accepts[0].amount == PRICE
    (ch,) = chs
    assert (ch.method, ch.intent, ch.realm) == ("evm", "charge", REALM) and ch.id and ch.expires
    assert ch.request["amount"] == str(PRICE) and ch.request["currency"].lower() == world.net.asset.address.lower()
    assert ch.request["recipient"] == world.net.payee.address
    assert ch.request["methodDetails"] == {"chainId": 31337, "credentialTypes": ["authorization"], "decimals": 6}
    assert "=" not in ch.request_b64 and "+" not in ch.request_b64
    body = problem(r)
    assert body["type"] == P.PAYMENT_REQUIRED.uri and body["status"] == 402 and body["challengeId"] == ch.id
    assert body["x402Version"] == 1 and body["accepts"][0]["maxAmountRequired"] == str(PRICE)
    plain = await world.http.get(world.url + "/x402")  # routes without MPP keep the x402-only 402
    assert plain.headers["content-type"] == "application/json" and "www-authenticate" not in plain.headers


@pytest.mark.parametrize("variant", [CONCAT, JSON_ARRAY])
async def test_mpp_evm_pays_once_with_receipt(world: World, variant: str) -> None:
    """Checklist 106, 110, 111: both nonce derivations settle on chain; Payment-Receipt (reference = tx hash),
    Cache-Control private; a replay gets 402 invalid-challenge and never runs the handler again."""
    cred, ch = await world.credential("/both", variant)
    before, runs = await world.balances(), world.calls.get("/both", 0)
    r = await world.pay("/both", cred)
    assert r.status_code == 200, r.text
    assert r.json()["protocol"] == "mpp" and r.json()["payer"] == world.net.payer.address
    assert r.headers["cache-control"] == "private" and "payment-response" not in r.headers
    rc = Receipt.from_header(r.headers["payment-receipt"])
    assert rc.method == "evm" and rc.challenge_id == ch.id and rc.extra["chainId"] == 31337
    tx = await world.net.chain.get_transaction_receipt(rc.reference)
    assert tx is not None and tx.status == 1
    assert await world.balances() == (before[0] - PRICE, before[1] + PRICE)
    again = await world.pay("/both", cred)
    assert again.status_code == 402 and "payment-receipt" not in again.headers
    assert problem(again)["type"] == P.INVALID_CHALLENGE.uri
    assert parse_www_authenticate(again.headers.get_list("www-authenticate"))  # fresh challenge
    assert world.calls["/both"] == runs + 1 and await world.balances() == (before[0] - PRICE, before[1] + PRICE)
    rows = [s for s in await world.mw.flow.payments.sales(limit=100) if s.payment_id == f"mpp:{ch.id}"]
    assert len(rows) == 1 and rows[0].state == "served" and rows[0].tx == rc.reference


async def test_concurrent_presentations_settle_and_deliver_once(world: World) -> None:
    """Checklist 110: 6 concurrent copies of one credential → one 200, one transfer, one handler run."""
    cred, _ = await world.credential("/both")
    before, runs = await world.balances(), world.calls.get("/both", 0)
    rs = await asyncio.gather(*(world.pay("/both", cred) for _ in range(6)))
    codes = sorted(r.status_code for r in rs)
    assert codes.count(200) == 1, [(r.status_code, r.text[:120]) for r in rs]
    assert all(c in (200, 402, 503) for c in codes)
    assert world.calls["/both"] == runs + 1
    assert await world.balances() == (before[0] - PRICE, before[1] + PRICE)


async def test_settle_before_streams_with_receipt(world: World) -> None:
    cred, ch = await world.credential("/before")
    r = await world.pay("/before", cred)
    assert r.status_code == 200 and Receipt.from_header(r.headers["payment-receipt"]).challenge_id == ch.id


async def test_handler_failure_is_not_charged(world: World) -> None:
    """A handler 500 under settle="after": no transfer, no receipt (checklist 19, 111)."""
    cred, _ = await world.credential("/fail")
    before = await world.balances()
    r = await world.pay("/fail", cred)
    assert r.status_code == 500 and "payment-receipt" not in r.headers
    assert await world.balances() == before


async def test_x402_still_pays_on_the_same_route(world: World) -> None:
    r0 = await world.http.get(world.url + "/both")
    req = decode_payment_required(r0.headers["payment-required"]).accepts[0]
    p = await sign(req, payer_of(world.net))
    r = await world.http.get(world.url + "/both", headers={"PAYMENT-SIGNATURE": encode_payment_payload(p)})
    assert r.status_code == 200 and "payment-response" in r.headers and r.json()["protocol"] == "x402"


def _tamper(cred: Credential, **changes: object) -> str:
    echo = dataclasses.replace(cred.challenge, **changes)
    return Credential(echo, cred.payload, cred.source).to_authorization()


async def test_negative_cases_statuses_and_problem_types(world: World) -> None:
    """Checklist 107, 108: tampered request/opaque/id, wrong realm, expired, malformed, unsupported method,
    wrong payer signature, underpayment — each with its status and problem type; nothing moves."""
    cred, ch = await world.credential("/both")
    before, runs = await world.balances(), world.calls.get("/both", 0)
    other_req = dict(ch.request, amount="1")
    forged_opaque = b64url_encode(json.dumps({"_mpp_nonce": "00"}).encode())
    cases = {
        "request": (_tamper(cred, request=b64url_encode(json.dumps(other_req).encode())), 402, P.INVALID_CHALLENGE),
        "opaque": (_tamper(cred, opaque=forged_opaque), 402, P.INVALID_CHALLENGE),
        "id": (_tamper(cred, id=ch.id[:-2] + ("AA" if not ch.id.endswith("AA") else "BB")), 402,
               P.INVALID_CHALLENGE),
        "realm": (_tamper(cred, realm="evil.test"), 402, P.INVALID_CHALLENGE),
        "malformed": ("Payment " + b64url_encode(b'{"challenge": 1}'), 402, P.MALFORMED_CREDENTIAL),
        "not-b64": ("Payment !!!", 402, P.MALFORMED_CREDENTIAL),
        "method": (_tamper(cred, method="lightning"), 402, P.INVALID_CHALLENGE),  # HMAC breaks first
        "signature": (Credential(cred.challenge, {**cred.payload, "signature": "0x" + "11" * 65},
                                 cred.source).to_authorization(), 402, P.VERIFICATION_FAILED),
        "amount": (Credential(cred.challenge, {**cred.payload, "value": "1"}, cred.source).to_authorization(), 402,
                   P.PAYMENT_INSUFFICIENT),
    }
    for name, (auth, status, ptype) in cases.items():
        r = await world.http.get(world.url + "/both", headers={"Authorization": auth})
        assert r.status_code == status, (name, r.text)
        assert problem(r)["type"] == ptype.uri, (name, r.text)
        if status == 402:
            assert parse_www_authenticate(r.headers.get_list("www-authenticate")), name
    assert world.calls.get("/both", 0) == runs and await world.balances() == before
    # the untouched credential still pays afterwards (nothing was consumed by the failures)
    assert (await world.pay("/both", cred)).status_code == 200


async def test_expired_challenge_and_unsupported_method(world: World) -> None:
    """An expired challenge → 402 payment-expired; a challenge for a method this route does not take → 400."""
    mpp = world.mw.flow.seller.mpp
    from paywire.mpp.methods.lightning_charge import lightning_offer_template
    from paywire.server.protocols.mpp import mpp_templates

    offers, dec = world.mw.flow.seller.offers_for(world.mw.flow.seller.routes[0], None)  # type: ignore[arg-type]
    (tmpl,) = mpp_templates(("evm",), None, offers, dec)
    old = mpp.issue(tmpl, now=time.time() - 3600)
    cred = await sign_evm_charge(old, payer_of(world.net), world.net.asset, now=time.time() - 3600)
    r = await world.pay("/both", cred)
    assert r.status_code == 402 and problem(r)["type"] == P.PAYMENT_EXPIRED.uri
    ln = mpp.issue(lightning_offer_template(21))
    bad = Credential(ChallengeEcho.of(ln), {"preimage": "00" * 32})
    r = await world.pay("/both", bad)
    assert r.status_code == 400 and problem(r)["type"] == P.METHOD_UNSUPPORTED.uri
    assert "www-authenticate" not in r.headers


async def test_two_credentials_is_400(world: World) -> None:
    cred, _ = await world.credential("/both")
    auth = cred.to_authorization()
    r = await world.http.get(world.url + "/both", headers={"Authorization": f"{auth}, {auth}"})
    assert r.status_code == 400 and problem(r)["type"] == P.MALFORMED_CREDENTIAL.uri


async def test_pympp_client_pays_our_server(world: World) -> None:
    """Interop: the official pympp 0.16.0 client (its evm/charge, JSON-array nonce) pays our route; tokens move."""
    pytest.importorskip("mpp", reason="pympp not installed")
    from eth_account import Account
    from mpp.client import Mpp
    from mpp.methods.evm import client as evm_client

    a = world.net.asset
    method = evm_client.charge(currency=a.address, account=Account.from_key(world.net.payer.private_key),
                               chain_id=31337, decimals=a.decimals,
                               authorization={"name": a.name, "version": a.version})
    before, runs = await world.balances(), world.calls.get("/both", 0)
    body = b'{"sku": "B-2"}'
    async with Mpp(methods=[method]) as client:
        r = await client.fetch(world.url + "/both", timeout=60)
        posted = await client.fetch(world.url + "/order", method="POST", content=body, timeout=60)  # digest-bound challenge
    assert r.status_code == 200, r.text
    rc = Receipt.from_header(r.headers["payment-receipt"])
    assert rc.reference.startswith("0x")
    assert posted.status_code == 200 and posted.json()["got"] == body.decode(), posted.text
    assert await world.balances() == (before[0] - 2 * PRICE, before[1] + 2 * PRICE)
    assert world.calls["/both"] == runs + 1


async def test_request_body_is_bound_through_the_challenge_digest(world: World) -> None:
    """Checklist 112: a POST's body is bound into the challenge (``digest`` = RFC 9530 sha-256 of it, inside the
    HMAC id); the paid retry must carry the same body (the app still receives it whole), and a credential
    presented with another body is refused (402 invalid-challenge) before anything runs or moves."""
    from paywire.mpp.digest import content_digest

    body = json.dumps({"sku": "A-1", "qty": 3}).encode()
    r = await world.http.post(world.url + "/order", content=body, headers={"content-type": "application/json"})
    assert r.status_code == 402
    (ch,) = [c for c in parse_www_authenticate(r.headers.get_list("www-authenticate")) if c.method == "evm"]
    assert ch.digest == content_digest(body)
    cred = await sign_evm_charge(ch, payer_of(world.net), world.net.asset)
    before, runs = await world.balances(), world.calls.get("/order", 0)
    other = await world.http.post(world.url + "/order", content=b'{"sku": "A-1", "qty": 300}',
                                  headers={"Authorization": cred.to_authorization()})
    assert other.status_code == 402 and problem(other)["type"] == P.INVALID_CHALLENGE.uri
    assert "digest" in problem(other)["detail"]
    assert world.calls.get("/order", 0) == runs and await world.balances() == before
    ok = await world.http.post(world.url + "/order", content=body,
                               headers={"Authorization": cred.to_authorization(), "content-type": "application/json"})
    assert ok.status_code == 200, ok.text
    assert ok.json() == {"run": runs + 1, "got": body.decode()}
    assert await world.balances() == (before[0] - PRICE, before[1] + PRICE)
    big = b"x" * (world.mw.flow.seller.mpp_max_body + 1)  # past the limit: not bound, still delivered whole
    r2 = await world.http.post(world.url + "/order", content=big)
    (ch2,) = [c for c in parse_www_authenticate(r2.headers.get_list("www-authenticate")) if c.method == "evm"]
    assert ch2.digest is None
    cred2 = await sign_evm_charge(ch2, payer_of(world.net), world.net.asset)
    ok2 = await world.http.post(world.url + "/order", content=big, headers={"Authorization": cred2.to_authorization()})
    assert ok2.status_code == 200 and len(ok2.json()["got"]) == len(big)


async def test_accept_payment_q0_refuses_our_mpp_method(world: World) -> None:
    """Digest §11.1: ``Accept-Payment: evm/*;q=0`` means the client will not pay evm: the 402 keeps x402 and
    drops our ``Payment`` challenge; a preference for evm keeps it."""
    r = await world.http.get(world.url + "/both", headers={"Accept-Payment": "evm/*;q=0"})
    assert r.status_code == 402 and "payment-required" in r.headers
    assert not [c for c in parse_www_authenticate(r.headers.get_list("www-authenticate")) if c.method == "evm"]
    _, chs = await world.challenge("/both", **{"Accept-Payment": "evm/charge, */*;q=0.1"})
    assert [c.method for c in chs] == ["evm"]


async def test_accept_payment_without_our_method_gets_no_payment_challenge(world: World) -> None:
    """Digest §11.1 (issue 11 item 12): ``Accept-Payment`` that lists only methods we do not offer drops our
    ``Payment`` challenge (not only a ``q=0`` refusal does); the 402 still carries x402."""
    r = await world.http.get(world.url + "/both", headers={"Accept-Payment": "tempo/charge, lightning/*;q=0.5"})
    assert r.status_code == 402, r.text
    assert "payment-required" in r.headers, "the x402 challenge is gone"
    mpp = parse_www_authenticate(r.headers.get_list("www-authenticate"))
    assert [c.method for c in mpp] == [], "a method the client did not list was offered"


async def test_mpp_source_lands_in_the_ledger_as_the_payers_did(world: World) -> None:
    """An ``evm/charge`` credential's ``source`` (checked against the payer) is recorded as the sale's identity."""
    cred, ch = await world.credential("/both")
    did = f"did:pkh:eip155:31337:{world.net.payer.address}"
    r = await world.pay("/both", dataclasses.replace(cred, source=did.replace(world.net.payer.address,
                                                                               world.net.payer.address.lower())))
    assert r.status_code == 200, r.text
    rows = [s for s in await world.mw.flow.payments.sales(limit=100) if s.payment_id == f"mpp:{ch.id}"]
    assert rows and rows[0].identity == did, f"the ledger row's identity is {rows[0].identity if rows else None}"
