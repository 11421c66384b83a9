"""Interop with the official TypeScript MPP SDK, mppx 0.11.0 (tests/node/mpp), both ways, on anvil, offline.

* mppx's client (``mppx/client`` + ``mppx/evm/client``, a viem account for the payer key) pays our seller
  middleware's MPP ``evm/charge`` route; our facilitator settles the EIP-3009 authorization on chain.
* our buyer pays mppx's server (``mppx/server`` + ``mppx/evm/server``), whose ``settle`` hook sends
  ``transferWithAuthorization`` with viem from a separate dev key: nothing of paywire runs on that side.

Every payment is asserted by token balances on chain, handler run counts and the receipts each side keeps
(checklist 104–111; EIP-3009 challenge-hash nonce, mpp-l402.md §2.8.1).
"""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import pytest_asyncio
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from paywire.chain.devkeys import dev_keys
from paywire.client.core import PaymentRejected
from paywire.client.engine import Buyer
from paywire.client.httpx_transport import PaymentTransport
from paywire.client.policy import Policy
from paywire.devnet import Devnet
from paywire.evm.assets import AssetRegistry
from paywire.facilitator.client import LocalFacilitatorClient
from paywire.mpp import problems as P
from paywire.mpp.challenge import parse_www_authenticate
from paywire.mpp.credential import parse_authorization
from paywire.mpp.digest import content_digest
from paywire.mpp.methods.evm_charge import CONCAT, JSON_ARRAY, challenge_hash, sign_evm_charge
from paywire.mpp.receipt import Receipt
from paywire.server.asgi import PaymentMiddleware
from paywire.server.core import PaidRoute
from paywire.server.pricing import Offer
from paywire.serving import serve_asgi
from paywire.wallet import Wallet
from tests.helpers import close_devnet, full_facilitator, new_devnet, payer_of
from tests.node_peers import MPP_DIR, ensure_mpp_peers

pytestmark = pytest.mark.asyncio(loop_scope="module")

PRICE = 10_000  # 0.01 of a 6-decimals token
REALM = "shop.test"
MPPX_REALM = "mppx.test"
NODE_TIMEOUT = 180.0


@pytest.fixture(scope="module")
def node() -> str:
    return ensure_mpp_peers()


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def net() -> AsyncIterator[Devnet]:
    n = await new_devnet("anvil")
    yield n
    await close_devnet(n)


async def balances(net: Devnet) -> tuple[int, int]:
    return await net.token_balance(net.payer.address), await net.token_balance(net.payee.address)


async def run_node(node: str, script: str, cfg: dict[str, Any]) -> dict[str, Any]:
    """Run a one-shot Node peer; its last stdout line is a JSON report."""
    proc = await asyncio.create_subprocess_exec(node, str(MPP_DIR / script), json.dumps(cfg), cwd=MPP_DIR,
                                                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    try:
        out, err = await asyncio.wait_for(proc.communicate(), NODE_TIMEOUT)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise
    assert proc.returncode == 0, err.decode()[-3000:]
    lines = out.decode().strip().splitlines()
    assert lines, err.decode()[-3000:]
    report: dict[str, Any] = json.loads(lines[-1])
    return report


@asynccontextmanager
async def node_server(node: str, script: str, cfg: dict[str, Any]) -> AsyncIterator[str]:
    """Start a Node server peer that prints ``{"port": N}`` once listening; yield its base URL."""
    proc = await asyncio.create_subprocess_exec(node, str(MPP_DIR / script), json.dumps(cfg), cwd=MPP_DIR,
                                                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    try:
        assert proc.stdout is not None and proc.stderr is not None
        line = await asyncio.wait_for(proc.stdout.readline(), NODE_TIMEOUT)
        if not line:
            err = await proc.stderr.read()
            raise AssertionError(f"{script} exited: {err.decode()[-3000:]}")
        yield f"http://127.0.0.1:{json.loads(line)['port']}"
    finally:
        if proc.returncode is None:
            proc.terminate()
            try:
                await asyncio.wait_for(proc.wait(), 30)
            except TimeoutError:
                proc.kill()
                await proc.wait()


def problem(r: httpx.Response) -> dict[str, Any]:
    assert r.headers["content-type"].startswith("application/problem+json"), r.headers
    body: dict[str, Any] = r.json()
    return body


# ------------------------------------------------------------------------------------------------------------
# 1. mppx client -> our seller
# ------------------------------------------------------------------------------------------------------------


@dataclass
class Seller:
    url: str
    calls: dict[str, int]
    mw: PaymentMiddleware


class InvoiceNode:
    """Issues real signed regtest BOLT11 invoices for the L402 challenges (nobody pays them here)."""

    def __init__(self) -> None:
        self.key = os.urandom(32).hex()

    async def create_invoice(self, amount_sat: int, memo: str = "", expiry: int = 600) -> Any:
        import hashlib
        import time

        import bolt11

        from paywire.lightning.base import Invoice

        h, now = hashlib.sha256(os.urandom(32)).hexdigest(), int(time.time())
        inv = bolt11.Bolt11(currency="bcrt", amount_msat=bolt11.MilliSatoshi(amount_sat * 1000), date=now,
                            tags=bolt11.Tags.from_dict({"payment_hash": h, "payment_secret": os.urandom(32).hex(),
                                                        "description": memo, "expire_time": expiry}))
        return Invoice(bolt11.encode(inv, self.key), h, amount_sat, float(now + expiry))

    async def lookup_invoice(self, payment_hash: str) -> Any:
        from paywire.lightning.base import InvoiceStatus

        return InvoiceStatus(payment_hash, False)

    async def pay_invoice(self, bolt11_str: str, *, max_fee_sat: int = 10) -> Any:
        raise NotImplementedError("this node only issues invoices")


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def seller(net: Devnet, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Seller]:
    calls: dict[str, int] = {}

    async def thing(request: Request) -> Response:
        calls[request.url.path] = calls.get(request.url.path, 0) + 1
        pay = request.state.payment
        return JSONResponse({"run": calls[request.url.path], "protocol": pay.protocol, "payer": pay.payer})

    a = net.asset
    async def order(request: Request) -> Response:
        calls["/order"] = calls.get("/order", 0) + 1
        return JSONResponse({"run": calls["/order"], "got": (await request.body()).decode()})

    routes = [PaidRoute("GET /paid", offers=(Offer(price=PRICE, asset=a),), mpp=("evm",), description="mppx"),
              PaidRoute("GET /x402", offers=(Offer(price=PRICE, asset=a),)),
              PaidRoute("POST /order", offers=(Offer(price=PRICE, asset=a),), mpp=("evm",)),
              PaidRoute("GET /with-l402", offers=(Offer(price=PRICE, asset=a),), mpp=("evm",), l402=True, sats=21)]
    mw = PaymentMiddleware(Starlette(routes=[Route("/paid", thing), Route("/x402", thing), Route("/with-l402", thing),
                                             Route("/order", order, methods=["POST"])]), routes,
                           LocalFacilitatorClient(full_facilitator(net)),
                           store=f"sqlite:///{tmp_path_factory.mktemp('mppx') / 's.db'}",
                           assets=AssetRegistry((a,)), pay_to=net.payee.address, mpp_realm=REALM,
                           mpp_secret=os.urandom(32), lightning=InvoiceNode())
    async with serve_asgi(mw) as url:
        yield Seller(url, calls, mw)
    await mw.flow.aclose()


def client_cfg(net: Devnet, url: str) -> dict[str, Any]:
    a = net.asset
    return {"url": url, "payerKey": net.info.payer_key, "tokenName": a.name, "tokenVersion": a.version,
            "chainId": net.info.chain_id, "token": a.address}


async def test_mppx_client_pays_our_seller(net: Devnet, seller: Seller, node: str) -> None:
    """mppx's client answers our 402 (x402 + ``Payment`` challenge) with an ``evm/charge`` ``authorization``
    credential whose nonce is keccak256(id ‖ realm); our route serves once with a ``Payment-Receipt`` mppx
    parses; the tokens move once; a replay of the captured credential is refused and moves nothing
    (checklist 104–106, 110, 111)."""
    before, runs = await balances(net), seller.calls.get("/paid", 0)
    out = await run_node(node, "mppx_client.mjs", client_cfg(net, seller.url + "/paid"))
    assert out["status"] == 200, out
    body = json.loads(out["body"])
    assert body["protocol"] == "mpp" and body["payer"] == net.payer.address and body["run"] == runs + 1
    assert out["headers"]["cache-control"] == "private"
    # mppx parsed our receipt (its zod schema) and so do we; reference is the settling transaction
    assert out["receipt"]["status"] == "success" and out["receipt"]["method"] == "evm"
    ours = Receipt.from_header(out["headers"]["payment-receipt"])
    ch = out["challenge"]
    assert ours.reference == out["receipt"]["reference"] and ours.challenge_id == ch["id"]
    tx = await net.chain.get_transaction_receipt(ours.reference)
    assert tx is not None and tx.status == 1
    assert await balances(net) == (before[0] - PRICE, before[1] + PRICE)
    assert seller.calls["/paid"] == runs + 1

    # what mppx sent: the spec's nonce derivation, a did:pkh source, our challenge echoed as issued
    cred = parse_authorization(out["credential"])
    assert (ch["realm"], ch["method"], ch["intent"]) == (REALM, "evm", "charge")
    assert cred.challenge.id == ch["id"] and cred.challenge.realm == REALM
    nonce = bytes.fromhex(cred.payload["nonce"][2:])
    assert nonce == challenge_hash(ch["id"], REALM, CONCAT) != challenge_hash(ch["id"], REALM, JSON_ARRAY)
    assert cred.payload["validAfter"] == "0" and cred.payload["value"] == str(PRICE)
    assert cred.source == f"did:pkh:eip155:{net.info.chain_id}:{net.payer.address}"
    rows = [s for s in await seller.mw.flow.payments.sales(limit=100) if s.payment_id == f"mpp:{ch['id']}"]
    assert len(rows) == 1 and rows[0].state == "served" and rows[0].tx == ours.reference

    # replaying mppx's exact Authorization value: refused, fresh challenge, no second transfer or run
    async with httpx.AsyncClient(timeout=60) as http:
        again = await http.get(seller.url + "/paid", headers={"Authorization": out["credential"]})
    assert again.status_code == 402 and "payment-receipt" not in again.headers
    assert problem(again)["type"] == P.INVALID_CHALLENGE.uri
    assert parse_www_authenticate(again.headers.get_list("www-authenticate"))
    assert await balances(net) == (before[0] - PRICE, before[1] + PRICE)
    assert seller.calls["/paid"] == runs + 1


async def test_mppx_client_pays_a_body_bound_post(net: Devnet, seller: Seller, node: str) -> None:
    """Checklist 112: our challenge for a POST binds its body (``digest``); mppx echoes the digest and resends
    the same body, which verifies; the handler gets the body whole; tokens move once."""
    body = '{"sku":"M-1","qty":2}'
    before, runs = await balances(net), seller.calls.get("/order", 0)
    out = await run_node(node, "mppx_client.mjs",
                         {**client_cfg(net, seller.url + "/order"), "method": "POST", "body": body})
    assert out["status"] == 200, out
    assert json.loads(out["body"]) == {"run": runs + 1, "got": body}
    assert out["challenge"]["digest"] == content_digest(body.encode())
    assert await balances(net) == (before[0] - PRICE, before[1] + PRICE)


async def test_mppx_clients_pay_concurrently(net: Devnet, seller: Seller, node: str) -> None:
    """Two mppx clients at once: two challenges, two settlements, two handler runs, no mix-up."""
    before, runs = await balances(net), seller.calls.get("/paid", 0)
    outs = await asyncio.gather(*(run_node(node, "mppx_client.mjs", client_cfg(net, seller.url + "/paid"))
                                  for _ in range(2)))
    assert [o["status"] for o in outs] == [200, 200], outs
    refs = {o["receipt"]["reference"] for o in outs}
    assert len(refs) == 2 and len({o["challenge"]["id"] for o in outs}) == 2
    assert await balances(net) == (before[0] - 2 * PRICE, before[1] + 2 * PRICE)
    assert seller.calls["/paid"] == runs + 2


async def test_mppx_client_pays_our_x402_only_route(net: Devnet, seller: Seller, node: str) -> None:
    """mppx's evm client also speaks x402: on a route of ours that offers only x402 v2 it signs the ``exact``
    payload itself, and our facilitator settles it (checklist 1)."""
    before, runs = await balances(net), seller.calls.get("/x402", 0)
    out = await run_node(node, "mppx_client.mjs", client_cfg(net, seller.url + "/x402"))
    assert out["status"] == 200, out
    assert json.loads(out["body"])["protocol"] == "x402" and "payment-response" in out["headers"]
    assert "payment-receipt" not in out["headers"]
    assert await balances(net) == (before[0] - PRICE, before[1] + PRICE)
    assert seller.calls["/x402"] == runs + 1


async def test_mppx_client_pays_a_route_whose_first_challenge_is_l402(net: Devnet, seller: Seller,
                                                                       node: str) -> None:
    """Issue 11 item 11: with x402, L402 (first, the default order) and MPP on one route, mppx still finds its
    ``Payment`` challenge and pays ``evm/charge`` once."""
    pytest.importorskip("pymacaroons", reason="pymacaroons (the l402 extra) is not installed")
    pytest.importorskip("bolt11", reason="the bolt11 package (test dependency) is not installed")
    async with httpx.AsyncClient(timeout=30) as http:
        values = (await http.get(seller.url + "/with-l402")).headers.get_list("www-authenticate")
    assert values[0].startswith("L402 macaroon="), f"L402 is not the first challenge: {values[0][:40]}"
    before, runs = await balances(net), seller.calls.get("/with-l402", 0)
    out = await run_node(node, "mppx_client.mjs", client_cfg(net, seller.url + "/with-l402"))
    assert out["status"] == 200, out
    assert json.loads(out["body"])["protocol"] == "mpp", out["body"]
    assert await balances(net) == (before[0] - PRICE, before[1] + PRICE), "the payment did not settle once"
    assert seller.calls["/with-l402"] == runs + 1, "the handler did not run once"


# ------------------------------------------------------------------------------------------------------------
# 2. our client -> mppx server
# ------------------------------------------------------------------------------------------------------------

SETTLER_KEY = dev_keys(5)[4]
"""mppx's fee payer: a funded dev key nobody else sends from, so its account nonce is mppx's alone."""


MPPX_DESCRIPTION = "paid by paywire \u2014 caf\u00e9"
"""Non-ASCII on purpose: mppx writes characters above Latin-1 as ``\\uXXXX`` inside the quoted-string."""


def mppx_cfg(net: Devnet, **extra: Any) -> dict[str, Any]:
    a = net.asset
    return {"rpcUrl": net.info.rpc_url, "chainId": net.info.chain_id, "token": a.address, "tokenName": a.name,
            "tokenVersion": a.version, "decimals": a.decimals, "recipient": net.payee.address,
            "settlerKey": "0x" + SETTLER_KEY.hex(), "secretKey": os.urandom(32).hex(), "realm": MPPX_REALM,
            "amount": "0.01", "description": MPPX_DESCRIPTION, **extra}


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def mppx_url(net: Devnet, node: str) -> AsyncIterator[str]:
    async with node_server(node, "mppx_server.mjs", mppx_cfg(net)) as url:
        yield url


async def mppx_stats(url: str) -> dict[str, Any]:
    async with httpx.AsyncClient(timeout=30) as http:
        data: dict[str, Any] = (await http.get(url + "/stats")).json()
        return data


def buyer(net: Devnet, tmp_path: Path, name: str, protocols: tuple[str, ...] = ("mpp",), **kw: Any) -> Buyer:
    policy = Policy(max_per_payment="$0.05", total="$1", assets=(net.asset,), protocols=protocols)
    return Buyer(Wallet.from_key(net.payer.private_key), policy, store=f"sqlite:///{tmp_path / name}", **kw)


async def test_our_buyer_pays_mppx_server(net: Devnet, mppx_url: str, tmp_path: Path) -> None:
    """Our buyer reads mppx's challenge (x402 v2 ``PAYMENT-REQUIRED`` beside it), signs ``evm/charge``
    with the spec nonce (first try: no retry needed), and gets 200 with a receipt; the tokens move once, the
    mppx handler ran once, and our ledger holds one committed MPP payment (checklist 104–111)."""
    b = buyer(net, tmp_path, "b.db")
    before, stats0 = await balances(net), await mppx_stats(mppx_url)
    async with httpx.AsyncClient(transport=PaymentTransport(b), timeout=60) as c:
        r = await c.get(mppx_url + "/paid")
    assert r.status_code == 200, r.text
    assert r.json()["server"] == "mppx"
    assert "private" in r.headers["cache-control"]
    rc = Receipt.from_header(r.headers["payment-receipt"])
    assert rc.method == "evm" and rc.status == "success" and rc.challenge_id is None  # mppx omits it
    tx = await net.chain.get_transaction_receipt(rc.reference)
    assert tx is not None and tx.status == 1
    assert await balances(net) == (before[0] - PRICE, before[1] + PRICE)
    stats = await mppx_stats(mppx_url)
    assert stats["runs"] == stats0["runs"] + 1 and stats["settlements"][-1] == rc.reference
    (row,) = await b.history()
    assert row.outcome == "paid" and row.protocol == "mpp" and row.tx == rc.reference
    assert row.budget == "committed" and row.usd_micros == PRICE and row.amount == PRICE
    assert (await (await b.ledger()).spent()).total == PRICE
    assert b._variants == {}  # concat was right the first time: nothing learnt
    await b.aclose()


async def test_buyer_starting_with_pympp_nonce_learns_mppx(net: Devnet, mppx_url: str, tmp_path: Path) -> None:
    """A buyer set to try pympp's JSON-array nonce first: mppx answers 402 verification-failed "challenge hash
    mismatch", the buyer re-signs once with keccak(id ‖ realm), pays once, and remembers it for this host."""
    b = buyer(net, tmp_path, "j.db", nonce_variant=JSON_ARRAY)
    before, stats0 = await balances(net), await mppx_stats(mppx_url)
    async with httpx.AsyncClient(transport=PaymentTransport(b), timeout=60) as c:
        for _ in range(2):
            r = await c.get(mppx_url + "/paid")
            assert r.status_code == 200, r.text
    assert await balances(net) == (before[0] - 2 * PRICE, before[1] + 2 * PRICE)
    assert (await mppx_stats(mppx_url))["runs"] == stats0["runs"] + 2
    assert list(b._variants.values()) == [CONCAT]
    paid = [h for h in await b.history() if h.outcome == "paid"]
    assert len(paid) == 2 and all(h.protocol == "mpp" for h in paid)
    await b.aclose()


async def test_mppx_server_refuses_replay_and_json_nonce(net: Devnet, mppx_url: str) -> None:
    """Hand-made credentials from our signer against mppx: the JSON-array nonce is refused with 402
    verification-failed "…challenge hash mismatch" (the text our buyer keys its retry on); the spec nonce
    pays; replaying that credential is refused (the token's authorization state) and moves nothing."""
    async with httpx.AsyncClient(timeout=60) as http:
        async def fresh() -> Any:
            r0 = await http.get(mppx_url + "/paid")
            assert r0.status_code == 402 and r0.headers["cache-control"] == "no-store"
            (ch,) = parse_www_authenticate(r0.headers.get_list("www-authenticate"))
            assert (ch.method, ch.intent, ch.realm) == ("evm", "charge", MPPX_REALM) and ch.expires
            assert ch.description == MPPX_DESCRIPTION and ch.header is None and ch.opaque is None
            return ch

        before = await balances(net)
        ch = await fresh()
        bad = await sign_evm_charge(ch, payer_of(net), net.asset, variant=JSON_ARRAY)
        r = await http.get(mppx_url + "/paid", headers={"Authorization": bad.to_authorization()})
        assert r.status_code == 402
        p = problem(r)
        assert p["type"] == P.VERIFICATION_FAILED.uri and "challenge hash mismatch" in p["detail"]
        assert await balances(net) == before

        ch = await fresh()
        good = (await sign_evm_charge(ch, payer_of(net), net.asset, variant=CONCAT)).to_authorization()
        r = await http.get(mppx_url + "/paid", headers={"Authorization": good})
        assert r.status_code == 200, r.text
        runs = (await mppx_stats(mppx_url))["runs"]
        again = await http.get(mppx_url + "/paid", headers={"Authorization": good})
        assert again.status_code == 402 and "payment-receipt" not in again.headers
        assert parse_www_authenticate(again.headers.get_list("www-authenticate"))
    assert await balances(net) == (before[0] - PRICE, before[1] + PRICE)
    assert (await mppx_stats(mppx_url))["runs"] == runs


async def test_credential_header_param(net: Devnet, node: str, tmp_path: Path) -> None:
    """The ``header`` auth-param (``requires_auth`` in both SDKs): the challenge says
    ``header="Payment-Authorization"`` (bound into the id) so ``Authorization`` stays the application's.
    Our buyer sends the credential in the field the challenge names: pympp 0.16 reads it there and is paid.
    mppx 0.11.0 advertises the field but its ``evm/charge`` transport reads only ``Authorization`` (the method
    brings its own ``Transport.http()`` without ``requiresAuth``), so its own client is refused too: a peer bug,
    recorded here; nothing moves and the handler never runs."""
    from paywire.facilitator.app import create_app

    pytest.importorskip("mpp", reason="pympp not installed")
    from mpp.methods.evm import server as evm_server
    from mpp.server import Mpp
    from mpp.server.decorator import pay

    a = net.asset
    async with serve_asgi(create_app(full_facilitator(net))) as fac_url:
        method = evm_server.charge(currency=a.address, recipient=net.payee.address, chain_id=net.info.chain_id,
                                   decimals=a.decimals, authorization={"name": a.name, "version": a.version},
                                   facilitator=fac_url)
        mpp = Mpp(methods=[method], realm="pympp.test", secret_key=os.urandom(32).hex(), requires_auth=True)
        seen: list[str | None] = []

        @pay(mpp.charge(amount="0.01"))
        async def paid(request: Request, credential: Any, receipt: Any) -> Response:
            seen.append(request.headers.get("authorization"))
            return JSONResponse({"ok": True})

        b = buyer(net, tmp_path, "h.db", nonce_variant=JSON_ARRAY)
        before = await balances(net)
        async with serve_asgi(Starlette(routes=[Route("/paid", paid)])) as url, \
                httpx.AsyncClient(transport=PaymentTransport(b), timeout=60) as c:
            r = await c.get(url + "/paid", headers={"Authorization": "Bearer app-token"})
        assert r.status_code == 200, r.text
        assert seen == ["Bearer app-token"]  # the application's own Authorization came through untouched
        assert await balances(net) == (before[0] - PRICE, before[1] + PRICE)
        await b.aclose()

    async with node_server(node, "mppx_server.mjs", mppx_cfg(net, requiresAuth=True)) as url:
        async with httpx.AsyncClient(timeout=60) as http:
            r0 = await http.get(url + "/paid")
        (ch,) = parse_www_authenticate(r0.headers.get_list("www-authenticate"))
        assert ch.header == "Payment-Authorization"
        before = await balances(net)
        own = await run_node(node, "mppx_client.mjs", client_cfg(net, url + "/paid"))
        assert own["status"] == 402 and own["credential"]  # mppx's client signed and sent it, mppx ignored it
        b = buyer(net, tmp_path, "m.db")
        async with httpx.AsyncClient(transport=PaymentTransport(b), timeout=60) as c:
            with pytest.raises(PaymentRejected):
                await c.get(url + "/paid")
        assert await balances(net) == before and (await mppx_stats(url))["runs"] == 0
        await b.aclose()


async def test_buyer_default_order_pays_mppx_over_x402(net: Devnet, mppx_url: str, tmp_path: Path) -> None:
    """mppx's evm/charge route also offers x402 v2 (``PAYMENT-REQUIRED``, same token and price). With the
    default protocol order our buyer pays it over x402; mppx settles through the same hook and answers with
    both ``PAYMENT-RESPONSE`` and ``Payment-Receipt`` for the same transaction."""
    b = buyer(net, tmp_path, "x.db", protocols=("x402", "mpp", "l402"))
    before, stats0 = await balances(net), await mppx_stats(mppx_url)
    async with httpx.AsyncClient(transport=PaymentTransport(b), timeout=60) as c:
        r = await c.get(mppx_url + "/paid")
    assert r.status_code == 200, r.text
    (row,) = await b.history()
    assert row.outcome == "paid" and row.protocol == "x402"
    assert Receipt.from_header(r.headers["payment-receipt"]).reference == row.tx
    assert await balances(net) == (before[0] - PRICE, before[1] + PRICE)
    assert (await mppx_stats(mppx_url))["runs"] == stats0["runs"] + 1
    await b.aclose()


async def test_mppx_server_on_the_embedded_chain(node: str, tmp_path: Path) -> None:
    """mppx's server (viem) settles on our embedded py-evm chain served over JSON-RPC/HTTP; our buyer pays it."""
    from paywire.chain import JsonRpcServer

    emb = await new_devnet("embedded")
    rpc = JsonRpcServer(emb.chain.transport)  # type: ignore[attr-defined]
    try:
        rpc_url = await asyncio.to_thread(rpc.start)
        cfg = {**mppx_cfg(emb), "rpcUrl": rpc_url}
        async with node_server(node, "mppx_server.mjs", cfg) as url:
            b = buyer(emb, tmp_path, "e.db")
            before = await balances(emb)
            async with httpx.AsyncClient(transport=PaymentTransport(b), timeout=120) as c:
                r = await c.get(url + "/paid")
            assert r.status_code == 200, r.text
            rc = Receipt.from_header(r.headers["payment-receipt"])
            tx = await emb.chain.get_transaction_receipt(rc.reference)
            assert tx is not None and tx.status == 1
            assert await balances(emb) == (before[0] - PRICE, before[1] + PRICE)
            assert (await mppx_stats(url))["settlements"] == [rc.reference]
            await b.aclose()
    finally:
        await asyncio.to_thread(rpc.stop)
        await close_devnet(emb)


async def test_buyer_skips_evm_offers_with_splits() -> None:
    """mppx (and the evm spec) may put ``splits`` in ``methodDetails``; one EIP-3009 authorization cannot pay
    them and both SDK servers refuse such credentials, so our buyer does not offer to pay that challenge."""
    from paywire.client.protocols import mpp_offers
    from paywire.evm.assets import Asset
    from paywire.mpp.challenge import Challenge, ChallengeBinder

    asset = Asset("eip155:31337", "0x5FbDB2315678afecb367f032d93F642f64180aa3", "USD Coin", "2", 6)
    binder = ChallengeBinder([os.urandom(32)])
    details = {"chainId": 31337, "credentialTypes": ["authorization"], "decimals": 6}
    base = {"amount": "10000", "currency": asset.address,
            "recipient": "0x90F79bf6EB2c4f870365E785982E1f101E93b906"}

    def offers(request: dict[str, Any]) -> list[Any]:
        ch = Challenge.create(binder, realm=MPPX_REALM, method="evm", intent="charge", request=request,
                              expires="2999-01-01T00:00:00.000Z")
        return mpp_offers({"www-authenticate": ch.to_header()}, lambda n, t: asset)

    assert len(offers({**base, "methodDetails": details})) == 1
    split = [{"amount": "1000", "recipient": "0x70997970C51812dc3A010C7d01b50e0d17dc79C8"}]
    assert offers({**base, "methodDetails": {**details, "splits": split}}) == []
