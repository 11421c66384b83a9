"""Lightning through ``paywire proxy``: a real LNbits (FakeWallet funding source) named in the config file's
``[proxy.lightning]`` table issues the invoices of an L402 route and an MPP ``lightning/charge`` route of a
Starlette upstream sold by a real ``paywire proxy`` subprocess. Paid by our buyer (LNbits wallet) and by the
third-party L402 client ``l402-requests`` (pinned 0.9.0); money movement asserted by LNbits wallet balances.

Promises checked: the invoice is paid once and the L402 token then reused (the upstream sees every request, the
wallet pays once); the upstream never sees the ``Authorization: L402`` credential but gets a signed identity with
``protocol = l402``; a config with a Lightning route and no node is refused at startup.
"""

from __future__ import annotations

import contextlib
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import pytest_asyncio
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

pytest.importorskip("pymacaroons", reason="pymacaroons (the l402 extra) is not installed")

from paywire.client.engine import Buyer
from paywire.client.httpx_transport import PaymentTransport
from paywire.client.policy import Policy
from paywire.errors import ConfigError
from paywire.facilitator.app import create_app
from paywire.lightning.lnbits import LnbitsBackend
from paywire.lightning.lnbits_dev import LnbitsDev
from paywire.proxy.config import load_proxy
from paywire.proxy.identity import verify_identity
from paywire.serving import serve_asgi
from tests.helpers import close_devnet, full_facilitator, new_devnet
from tests.lightning_fixtures import lnbits_node
from tests.test_proxy import run_proxy

pytestmark = pytest.mark.asyncio(loop_scope="module")
SATS = 21
SECRET = "proxy-lightning-identity-secret-0123456789"


class Upstream:
    def __init__(self) -> None:
        self.hits: Counter[str] = Counter()
        self.protocols: list[str | None] = []
        self.saw_credentials = 0

    async def thing(self, request: Request) -> JSONResponse:
        self.hits[request.url.path] += 1
        if "authorization" in request.headers:
            self.saw_credentials += 1
        who = verify_identity(request.headers, SECRET.encode(), method=request.method, target=request.url.path)
        self.protocols.append(who and who.get("protocol"))
        return JSONResponse({"path": request.url.path, "protocol": who and who.get("protocol")})

    def app(self) -> Starlette:
        return Starlette(routes=[Route(p, self.thing) for p in ("/l402", "/mpp-ln", "/free")])


def write_config(path: Path, upstream: str, fac: str, ln: LnbitsDev, net: Any) -> None:
    assert ln.payee is not None
    (path.parent / "invoice.key").write_text(ln.payee.invoice_key + "\n")
    lightning = f'[proxy.lightning]\nbackend = "lnbits"\nurl = "{ln.url}"\ninvoice_key_file = "invoice.key"\n'
    path.write_text(f"""
[proxy]
upstream = "{upstream}"
listen = "127.0.0.1:0"
identity_secret = "{SECRET}"

[[proxy.routes]]
path = "GET /l402"
l402 = true
sats = {SATS}
description = "an L402 resource"

[[proxy.routes]]
path = "GET /mpp-ln"
mpp = ["lightning"]
sats = {SATS}

{lightning}
[seller]
facilitator = "{fac}"
pay_to = "{net.payee.address}"
network = "{net.info.network}"
store = "sqlite:///{path.parent / 'proxy.db'}"
mpp_realm = "proxy-ln.test"
mpp_secret = "mpp-secret-for-the-proxy-ln-test-0123456789"
""")


class World:
    def __init__(self, ln: LnbitsDev, payer: LnbitsBackend, upstream: Upstream, url: str, config: Path) -> None:
        self.ln, self.payer, self.upstream, self.url, self.config = ln, payer, upstream, url, config


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def world(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[World]:
    async with lnbits_node() as ln:
        assert ln.payer is not None
        payer = LnbitsBackend(ln.url, admin_key=ln.payer.admin_key)
        net = await new_devnet("embedded")
        upstream = Upstream()
        tmp = tmp_path_factory.mktemp("proxy-ln")
        try:
            async with contextlib.AsyncExitStack() as stack:
                fac = await stack.enter_async_context(serve_asgi(create_app(full_facilitator(net))))
                up = await stack.enter_async_context(serve_asgi(upstream.app()))
                config = tmp / "paywire.toml"
                write_config(config, up, fac, ln, net)
                proxy = await stack.enter_async_context(run_proxy(config))
                yield World(ln, payer, upstream, proxy.url, config)
        finally:
            await payer.aclose()
            await close_devnet(net)


async def test_our_buyer_pays_l402_once_and_reuses_the_token(world: World, tmp_path: Path) -> None:
    policy = Policy(max_per_payment="$0.10", total="$1", btc_usd="$100000", protocols=("l402",))
    buyer = Buyer([], policy, store=f"sqlite:///{tmp_path / 'b.db'}", account="0x" + "11" * 20,
                  lightning=world.payer)
    before, hits = await world.ln.balance_msat(world.ln.payer), world.upstream.hits["/l402"]
    seen = len(world.upstream.protocols)
    try:
        async with httpx.AsyncClient(transport=PaymentTransport(buyer), timeout=60) as http:
            answers = [await http.get(world.url + "/l402") for _ in range(3)]
        paid = [h for h in await buyer.history() if h.outcome == "paid"]
    finally:
        await buyer.aclose()
    assert [a.status_code for a in answers] == [200] * 3, [a.text for a in answers]
    assert before - await world.ln.balance_msat(world.ln.payer) == SATS * 1000, "not paid exactly once"
    assert len(paid) == 1 and paid[0].protocol == "l402", f"buyer ledger: {paid}"
    assert world.upstream.hits["/l402"] - hits == 3, "the upstream did not see each request once"
    assert world.upstream.protocols[seen:] == ["l402"] * 3, "the upstream got no signed l402 identity"
    assert world.upstream.saw_credentials == 0, "the L402 credential was forwarded to the upstream"


async def test_l402_requests_pays_l402_and_mpp_lightning_through_the_proxy(world: World) -> None:
    """Interop: l402-requests 0.9.0 (a third-party L402 client) pays both Lightning routes of the proxy."""
    l402r = pytest.importorskip("l402_requests", reason="l402-requests not installed")
    from l402_requests.wallets import WalletBase

    from tests.test_multi_protocol_lightning import LnbitsWallet

    wallet_cls = type("LnbitsWalletAdapter", (LnbitsWallet, WalletBase), {})
    for path, protocol in (("/l402", "l402"), ("/mpp-ln", "mpp")):
        assert world.ln.payee is not None
        before, hits = await world.ln.balance_msat(world.ln.payee), world.upstream.hits[path]
        async with l402r.AsyncL402Client(wallet=wallet_cls(world.payer),
                                         budget=l402r.BudgetController(max_sats_per_request=100), timeout=60) as http:
            answer = await http.get(world.url + path)
        assert answer.status_code == 200, (path, answer.status_code, answer.text)
        assert answer.json()["protocol"] == protocol, answer.text
        assert await world.ln.balance_msat(world.ln.payee) - before == SATS * 1000, f"{path}: not paid once"
        assert world.upstream.hits[path] - hits == 1, f"{path}: the upstream did not see one request"


async def test_unpaid_l402_request_never_reaches_the_upstream(world: World) -> None:
    from paywire.l402.header import parse_challenges_l402

    hits = world.upstream.hits["/l402"]
    async with httpx.AsyncClient(timeout=60) as http:
        answer = await http.get(world.url + "/l402")
        forged = await http.get(world.url + "/l402", headers={"Authorization": "L402 garbage"})
    (challenge, *_) = parse_challenges_l402(answer.headers.get_list("www-authenticate"))
    assert answer.status_code == 402 and challenge.invoice.startswith("lnbc"), answer.headers
    assert forged.status_code == 402, forged.status_code
    assert world.upstream.hits["/l402"] == hits, "an unpaid request reached the upstream"


async def test_a_lightning_route_without_a_node_is_refused(world: World, tmp_path: Path) -> None:
    config = tmp_path / "no-node.toml"
    config.write_text(world.config.read_text().split("[proxy.lightning]")[0]
                      + "[seller]" + world.config.read_text().split("[seller]")[1])
    with pytest.raises(ConfigError, match=r"\[proxy.lightning\]"):
        load_proxy(config)
