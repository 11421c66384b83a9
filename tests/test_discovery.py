"""Discovery (x402 bazaar, digest §4.4): a seller publishes a route in its 402 (``extensions["bazaar"]``), the
payer echoes it, and the facilitator that settled the payment lists the resource at ``/discovery/resources``.

Real parts: the embedded chain, our facilitator over HTTP, our seller middleware; the official x402 SDK's bazaar
code validates our 402's extension and its facilitator client (``x402.extensions.bazaar.with_bazaar``) reads our
listing; ``paywire discover`` reads both the listing and a 402.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import pytest_asyncio
from eth_account import Account
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route
from x402 import x402Client
from x402.extensions.bazaar import (
    ListDiscoveryResourcesParams,
    validate_discovery_extension,
    validate_discovery_extension_spec,
    with_bazaar,
)
from x402.http import FacilitatorConfig, HTTPFacilitatorClientSync
from x402.http.clients.httpx import x402HttpxClient
from x402.mechanisms.evm.exact import ExactEvmScheme

from paywire.client import Policy, x402_client
from paywire.facilitator.app import create_app
from paywire.facilitator.client import HttpFacilitatorClient
from paywire.server.asgi import PaymentMiddleware
from paywire.server.core import PaidRoute
from paywire.server.pricing import Offer
from paywire.serving import serve_asgi
from paywire.wallet import Wallet
from paywire.x402.codec import PAYMENT_REQUIRED, decode_payment_required
from tests.helpers import close_devnet, full_facilitator, new_devnet

pytestmark = [pytest.mark.interop, pytest.mark.asyncio(loop_scope="module")]
ROOT = Path(__file__).resolve().parent.parent
CHAIN_ID = 84532
PRICE = 10_000
WEATHER_DISCOVERY = {"query_params": {"city": "Paris"}, "output": {"city": "Paris", "temp": 21}}


class Env:
    def __init__(self, net: Any, fac: str, seller: str) -> None:
        self.net, self.fac, self.seller = net, fac, seller

    def listing(self, **params: Any) -> Any:
        """The official SDK's bazaar client reading our facilitator (sync: run it in a thread)."""
        client = with_bazaar(HTTPFacilitatorClientSync(FacilitatorConfig(url=self.fac)))
        return client.extensions.bazaar.list_resources(ListDiscoveryResourcesParams(**params))


def seller_app(net: Any, fac: str, store: str) -> PaymentMiddleware:
    async def weather(request: Request) -> JSONResponse:
        return JSONResponse({"city": request.query_params.get("city", "?"), "temp": 21})

    async def search(request: Request) -> JSONResponse:
        return JSONResponse({"results": []})

    async def hidden(request: Request) -> JSONResponse:
        return JSONResponse({"secret": True})

    offers = (Offer(price=PRICE, asset=net.asset),)
    return PaymentMiddleware(
        Starlette(routes=[Route("/weather", weather), Route("/search", search, methods=["POST"]),
                          Route("/hidden", hidden)]),
        [PaidRoute("GET /weather", offers=offers, description="Weather by city", discovery=WEATHER_DISCOVERY),
         PaidRoute("POST /search", offers=offers, description="Search", discovery={"body": {"q": "rust"}}),
         PaidRoute("GET /hidden", offers=offers, description="Not published")],
        HttpFacilitatorClient(fac), pay_to=net.payee.address, store=store)


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def env(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Env]:
    net = await new_devnet("embedded", chain_id=CHAIN_ID)
    tmp = tmp_path_factory.mktemp("discovery")
    try:
        async with contextlib.AsyncExitStack() as stack:
            fac = await stack.enter_async_context(serve_asgi(create_app(full_facilitator(net))))
            seller = await stack.enter_async_context(
                serve_asgi(seller_app(net, fac, f"sqlite:///{tmp / 'seller.db'}")))
            yield Env(net, fac, seller)
    finally:
        await close_devnet(net)


def wallet(net: Any) -> Wallet:
    return Wallet.from_key(net.info.payer_key, chains={net.info.network: net.chain})


async def test_402_carries_a_bazaar_extension_the_official_sdk_accepts(env: Env) -> None:
    async with httpx.AsyncClient(timeout=60) as http:
        r = await http.get(env.seller + "/weather")
    ext = decode_payment_required(r.headers[PAYMENT_REQUIRED]).extensions["bazaar"]
    assert ext["info"]["input"] == {"type": "http", "method": "GET", "queryParams": {"city": "Paris"}}, ext
    assert validate_discovery_extension(ext).valid, validate_discovery_extension(ext).errors
    assert validate_discovery_extension_spec(ext).valid, validate_discovery_extension_spec(ext).errors


async def test_body_route_declares_its_body(env: Env) -> None:
    async with httpx.AsyncClient(timeout=60) as http:
        r = await http.post(env.seller + "/search")
    ext = decode_payment_required(r.headers[PAYMENT_REQUIRED]).extensions["bazaar"]
    assert ext["info"]["input"]["bodyType"] == "json", ext
    assert validate_discovery_extension(ext).valid, validate_discovery_extension(ext).errors


async def test_official_bazaar_client_reads_what_our_facilitator_settled(env: Env, tmp_path: Path) -> None:
    """Our buyer pays /weather, the official SDK client pays /search (both echo the extension); /hidden is paid
    but never published. The official bazaar client lists exactly the two published resources."""
    async with x402_client(wallet(env.net), Policy(assets=[env.net.asset]),
                           store=f"sqlite:///{tmp_path / 'b.db'}") as ours:
        assert (await ours.get(env.seller + "/weather?city=Paris")).status_code == 200
        assert (await ours.get(env.seller + "/hidden")).status_code == 200
    sdk = x402Client()
    sdk.register(env.net.info.network, ExactEvmScheme(Account.from_key(env.net.info.payer_key)))
    sdk.set_spend_controls({"allowed_assets": [{"network": env.net.info.network, "asset": env.net.info.token}]})
    async with x402HttpxClient(sdk, timeout=60) as http:
        assert (await http.post(env.seller + "/search", json={"q": "rust"})).status_code == 200

    listed = await asyncio.to_thread(env.listing, type="http")
    by_url = {item.resource: item for item in listed.items}
    assert set(by_url) == {env.seller + "/weather?city=Paris", env.seller + "/search"}, \
        f"the listing must hold the two published, settled resources, got {sorted(by_url)}"
    weather = by_url[env.seller + "/weather?city=Paris"]
    assert weather.accepts[0]["amount"] == str(PRICE), "the listing must say the price"
    assert weather.accepts[0]["payTo"].lower() == env.net.payee.address.lower(), "the listing must say the payee"
    assert weather.description == "Weather by city", "the listing must carry the route's description"
    assert weather.extensions["bazaar"]["info"]["output"]["example"] == {"city": "Paris", "temp": 21}, \
        "the listing must carry the seller's bazaar declaration"
    assert listed.pagination.total == 2, "pagination.total must count the listed resources"
    page = await asyncio.to_thread(env.listing, type="http", limit=1, offset=1)
    assert len(page.items) == 1 and page.pagination.offset == 1, "limit/offset must page the listing"
    none = await asyncio.to_thread(env.listing, type="mcp")
    assert none.items == [], "a type filter must filter"


async def test_listing_refuses_a_bad_limit(env: Env) -> None:
    async with httpx.AsyncClient(timeout=60) as http:
        r = await http.get(env.fac + "/discovery/resources", params={"limit": "1000"})
    assert r.status_code == 400, "limit over 100 must be a 400, not a 5xx or a silent clamp"


async def _paywire(*args: str, extra: dict[str, str] | None = None) -> tuple[int, str, str]:
    environ = {k: v for k, v in os.environ.items() if not k.startswith("PAYWIRE_")}
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", "from paywire.cli.main import main; main()", *args,
        stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        env={**environ, "PYTHONPATH": str(ROOT / "src"), "COLUMNS": "200", **(extra or {})})
    out, err = await proc.communicate()
    return proc.returncode or 0, out.decode(), err.decode()


async def test_paywire_discover_reads_a_facilitator_and_a_402(env: Env) -> None:
    code, out, err = await _paywire("discover", env.fac, "--json")
    assert code == 0, err
    listed = json.loads(out)
    assert listed["source"] == "facilitator", "a facilitator URL must be read as a listing"
    assert {o["resource"] for o in listed["offers"]} >= {env.seller + "/search"}, out
    code, out, err = await _paywire("discover", env.seller + "/weather", "--json")
    assert code == 0, err
    offers = json.loads(out)["offers"]
    assert [(o["protocol"], o["amount"]) for o in offers] == [("x402", str(PRICE))], out


async def test_paywire_pay_picks_a_resource_from_the_listing(env: Env, tmp_path: Path) -> None:
    """``paywire pay FACILITATOR --pick N`` pays the Nth resource ``paywire discover`` lists (after the listing
    test above has filled the catalogue)."""
    code, out, err = await _paywire("discover", env.fac, "--json")
    assert code == 0, err
    listed = json.loads(out)["resources"]
    n = next(i for i, r in enumerate(listed, 1) if r["url"] == env.seller + "/weather?city=Paris")
    before = await env.net.token_balance(env.net.payee.address)
    code, out, err = await _paywire(
        "pay", env.fac, "--pick", str(n), "--yes", "--asset", f"{env.net.info.network}/{env.net.info.token}",
        extra={"HOME": str(tmp_path), "PAYWIRE_STORE": f"sqlite:///{tmp_path / 'buyer.db'}",
               "PAYWIRE_WALLET_KEY": env.net.info.payer_key})
    assert code == 0, err
    assert json.loads(out)["city"] == "Paris", "the picked resource's answer must be printed"
    assert await env.net.token_balance(env.net.payee.address) - before == PRICE, "the pick must be paid once"
    code, _, err = await _paywire("pay", env.fac, "--pick", "99", "--yes",
                                  extra={"HOME": str(tmp_path), "PAYWIRE_WALLET_KEY": env.net.info.payer_key})
    assert code != 0 and "lists" in err, f"an out-of-range pick must say how many there are: {err}"


# ------------------------------------------------------------------------------------------------ the catalogue


async def test_durable_catalogue_upserts_filters_and_pages(store_url: str) -> None:
    """The facilitator's store keeps one row per resource (a later payment refreshes it), on SQLite and Postgres."""
    from paywire.store.discovery import DiscoveryCatalog

    catalog = await DiscoveryCatalog.open(store_url)
    try:
        offer = {"scheme": "exact", "network": "eip155:8453", "amount": "10", "payTo": "0xAB"}
        common = {"tool": "", "kind": "http", "x402_version": 2, "description": "d", "mime_type": None,
                  "extensions": {"bazaar": {"info": {}}}, "pay_to": "0xAB", "scheme": "exact"}
        await catalog.upsert(resource="https://a/x", accepts=[offer], network="eip155:8453", **common)
        await catalog.upsert(resource="https://a/y", accepts=[offer], network="eip155:1", **common)
        await catalog.upsert(resource="https://a/x", accepts=[{**offer, "amount": "20"}], network="eip155:8453",
                             **common)
        rows, total = await catalog.page()
        assert total == 2, "a resource paid twice must be listed once"
        assert next(r for r in rows if r["resource"] == "https://a/x")["accepts"][0]["amount"] == "20", \
            "a later payment must refresh the listed price"
        rows, total = await catalog.page(network="eip155:1", pay_to="0xab")
        assert [r["resource"] for r in rows] == ["https://a/y"] and total == 1, "filters must apply"
        rows, total = await catalog.page(limit=1, offset=1)
        assert len(rows) == 1 and total == 2, "limit/offset must page"
    finally:
        await catalog.aclose()


async def test_a_route_with_two_methods_declares_the_method_asked() -> None:
    """The 402 of ``GET,POST /both`` declares GET to a GET and POST to a POST (the challenge cache keeps them
    apart)."""
    from paywire.server.core import Seller
    from paywire.server.request import RequestInfo

    offer = Offer(price=PRICE, asset="0x" + "ab" * 20, network="eip155:8453", pay_to="0x" + "cd" * 20,
                  extra={"name": "T", "version": "1"})
    seller = Seller([PaidRoute("GET,POST /both", offers=(offer,), discovery=True)])
    methods = []
    for verb in ("GET", "POST", "GET"):
        req = RequestInfo(verb, "/both", "http://shop.example/both")
        reply = seller.decide(req)
        ext = decode_payment_required(reply.header(PAYMENT_REQUIRED)).extensions["bazaar"]
        methods.append(ext["info"]["input"]["method"])
    assert methods == ["GET", "POST", "GET"], f"each 402 must declare the method asked, got {methods}"
