"""x402 v1 next to v2 at the facilitator boundary (issue 11 items 8 and 9), on an embedded chain with Base
Sepolia's chain id (84532, v1 name ``base-sepolia``; digest §1.7):

* our facilitator answers a v1 request's ``network`` in v1 naming and a v2 request's in CAIP-2;
* a seller whose routes take only v1 starts behind a legacy facilitator whose ``/supported`` lists only v1
  kinds (``x402Version: 1``, ``network: "base-sepolia"``), and a v1 buyer pays it end to end.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import pytest_asyncio
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from paywire.devnet import Devnet
from paywire.errors import ConfigError
from paywire.evm.assets import AssetRegistry
from paywire.facilitator.app import create_app
from paywire.facilitator.core import Facilitator
from paywire.server.asgi import PaymentMiddleware
from paywire.server.core import PaidRoute
from paywire.server.pricing import Offer
from paywire.serving import serve_asgi
from paywire.store.settlements import SettlementStore
from paywire.x402.codec import decode_payment_response, encode_payment_payload
from paywire.x402.models import (
    PaymentPayloadV1,
    PaymentRequirements,
    PaymentRequirementsV1,
    ResourceInfo,
    requirements_v1_to_v2,
    requirements_v2_to_v1,
)
from tests.helpers import close_devnet, new_devnet, offer, payer_of, sign
from tests.test_facilitator_helpers import facilitator_with_store
from tests.test_facilitator_settle import body

pytestmark = pytest.mark.asyncio(loop_scope="module")
BASE_SEPOLIA = 84532
V1_NAME = "base-sepolia"
CAIP2 = f"eip155:{BASE_SEPOLIA}"
PRICE = 7_000


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def net() -> AsyncIterator[Devnet]:
    n = await new_devnet("embedded", chain_id=BASE_SEPOLIA)
    yield n
    await close_devnet(n)


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def facilitator(net: Devnet, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Facilitator]:
    store = await SettlementStore.open(f"sqlite:///{tmp_path_factory.mktemp('v1') / 'fac.db'}")
    yield Facilitator([facilitator_with_store(net, store)], store=store)
    await store.aclose()


async def v1_pair(net: Devnet, amount: int = PRICE) -> tuple[PaymentPayloadV1, PaymentRequirementsV1]:
    """A v1 requirement (``network: "base-sepolia"``) and a payload a v1 client signs for it."""
    r1 = requirements_v2_to_v1(offer(net, amount), ResourceInfo("http://127.0.0.1/thing"))
    req, _ = requirements_v1_to_v2(r1)
    inner = (await sign(req, payer_of(net))).payload
    return PaymentPayloadV1(x402_version=1, scheme=r1.scheme, network=r1.network, payload=inner), r1


def v1_body(p: PaymentPayloadV1, r1: PaymentRequirementsV1) -> dict[str, Any]:
    return {"x402Version": 1, "paymentPayload": p.to_wire(), "paymentRequirements": r1.to_wire()}


# ------------------------------------------------------------------------------------------------ item 9


async def test_v1_requests_get_v1_network_names(net: Devnet, facilitator: Facilitator) -> None:
    """A v1 /verify and /settle are answered with no CAIP-2 id in them; the settle answer says
    ``network: "base-sepolia"`` (as official v1 facilitators do), success or failure."""
    p1, r1 = await v1_pair(net)
    assert r1.network == V1_NAME, "the chain id has a v1 name"
    async with serve_asgi(create_app(facilitator)) as url, httpx.AsyncClient(timeout=60) as http:
        verified = await http.post(url + "/verify", json=v1_body(p1, r1))
        settled = await http.post(url + "/settle", json=v1_body(p1, r1))
        underpaid, _ = await v1_pair(net, amount=1)
        refused = await http.post(url + "/settle", json=v1_body(underpaid, r1))
    assert verified.json()["isValid"] is True, verified.text
    assert "eip155:" not in verified.text, f"a v1 verify answer names a CAIP-2 network: {verified.text}"
    assert settled.json()["success"] is True, settled.text
    assert settled.json()["network"] == V1_NAME, f"v1 settle answered network {settled.json()['network']!r}"
    assert refused.json()["success"] is False, refused.text
    assert refused.json().get("network", V1_NAME) == V1_NAME, f"v1 failure answered {refused.text}"


async def test_v2_requests_keep_caip2(net: Devnet, facilitator: Facilitator) -> None:
    req: PaymentRequirements = offer(net, PRICE + 1)
    p = await sign(req, payer_of(net))
    async with serve_asgi(create_app(facilitator)) as url, httpx.AsyncClient(timeout=60) as http:
        verified = await http.post(url + "/verify", json=body(p, req))
        settled = await http.post(url + "/settle", json=body(p, req))
    assert verified.json()["isValid"] is True, verified.text
    assert settled.json()["success"] is True, settled.text
    assert settled.json()["network"] == CAIP2, f"v2 settle answered network {settled.json()['network']!r}"


# ------------------------------------------------------------------------------------------------ item 8

V1_ONLY_SUPPORTED = {"kinds": [{"x402Version": 1, "scheme": "exact", "network": V1_NAME}]}


def legacy_v1_facilitator(facilitator: Facilitator) -> Any:
    """A facilitator as legacy ``x402@1`` peers serve it: ``/supported`` lists only v1 kinds in v1 naming;
    ``/verify`` and ``/settle`` are ours (they take v1 requests)."""
    ours = create_app(facilitator)

    async def supported(request: Request) -> Response:
        return JSONResponse(V1_ONLY_SUPPORTED)

    legacy = Starlette(routes=[Route("/supported", supported)])

    async def app(scope: Any, receive: Any, send: Any) -> None:
        target = legacy if scope["type"] == "http" and scope["path"] == "/supported" else ours
        await target(scope, receive, send)

    return app


def shop(net: Devnet, facilitator_url: str, store: Path, versions: tuple[int, ...]) -> PaymentMiddleware:
    async def thing(request: Request) -> Response:
        return JSONResponse({"ok": True})

    return PaymentMiddleware(Starlette(routes=[Route("/thing", thing)]),
                             [PaidRoute("GET /thing", offers=(Offer(price=PRICE, asset=net.asset),),
                                        x402_versions=versions)],
                             facilitator_url, pay_to=net.payee.address, store=f"sqlite:///{store}",
                             assets=AssetRegistry((net.asset,)))


async def test_v1_only_seller_starts_and_is_paid_behind_a_v1_only_facilitator(
        net: Devnet, facilitator: Facilitator, tmp_path: Path) -> None:
    """The startup check reads the v1 kind ``exact on base-sepolia`` as CAIP-2 ``eip155:84532`` for a route that
    takes only v1; a v1 buyer then pays with ``X-PAYMENT`` and the money moves once."""
    async with serve_asgi(legacy_v1_facilitator(facilitator)) as fac_url:
        mw = shop(net, fac_url, tmp_path / "s.db", (1,))
        try:
            await mw.startup()  # raised ConfigError before: only v2 kinds were read
            async with serve_asgi(mw) as url, httpx.AsyncClient(timeout=60) as http:
                challenge = await http.get(url + "/thing")
                r1 = PaymentRequirementsV1.from_wire(challenge.json()["accepts"][0])
                req, _ = requirements_v1_to_v2(r1)
                inner = (await sign(req, payer_of(net))).payload
                p1 = PaymentPayloadV1(x402_version=1, scheme=r1.scheme, network=r1.network, payload=inner)
                before = await net.token_balance(net.payee.address)
                paid = await http.get(url + "/thing", headers={"X-PAYMENT": encode_payment_payload(p1)})
                after = await net.token_balance(net.payee.address)
        finally:
            await mw.flow.aclose()
    assert challenge.status_code == 402 and r1.network == V1_NAME, challenge.text
    assert paid.status_code == 200, paid.text
    assert after - before == PRICE, f"the payee got {after - before}, expected {PRICE}"
    receipt = decode_payment_response(paid.headers["x-payment-response"])
    assert receipt.network == V1_NAME, f"the v1 buyer's receipt names {receipt.network!r}"


async def test_v2_route_is_still_refused_behind_a_v1_only_facilitator(
        net: Devnet, facilitator: Facilitator, tmp_path: Path) -> None:
    """v1 kinds count only for routes that take v1: a v2-only route behind the same facilitator is refused at
    startup, and the message lists what the facilitator offers."""
    async with serve_asgi(legacy_v1_facilitator(facilitator)) as fac_url:
        mw = shop(net, fac_url, tmp_path / "s.db", (2,))
        try:
            with pytest.raises(ConfigError) as err:
                await mw.startup()
        finally:
            await mw.flow.aclose()
    assert f"offers exact on {CAIP2}" in str(err.value), str(err.value)
    assert f"supports only: exact on {V1_NAME} (x402 v1)" in str(err.value), str(err.value)
