"""``paywire proxy`` end to end: a Starlette upstream (started here, on port 0) sold through a real
``paywire proxy`` subprocess, paid by our buyer and by the official x402 Python client, on the embedded chain.

Promises checked: tokens move once per paid request (balance deltas); the upstream never sees a payment
credential and gets a verified, signed payer; eight concurrent copies of one payment reach the upstream once;
a 100 MB upload and a 10,000-event SSE stream pass through while they are produced (the upstream gets the first
upload bytes before the client has sent the rest; the client gets the first event before the upstream may send
the rest) with the proxy's peak memory bounded far below the body size; SIGHUP reloads under load lose no request;
an unsafe config is refused at startup.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import os
import signal
import sys
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import pytest_asyncio
from eth_account import Account
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, StreamingResponse
from starlette.routing import Route
from x402 import x402Client
from x402.http.clients.httpx import x402HttpxClient
from x402.mechanisms.evm.exact import ExactEvmScheme

from paywire.client import Policy, x402_client
from paywire.facilitator.app import create_app
from paywire.proxy.identity import verify_identity
from paywire.serving import serve_asgi
from paywire.wallet import Wallet
from paywire.x402.codec import PAYMENT_REQUIRED, decode_payment_required, encode_payment_payload
from tests.helpers import close_devnet, full_facilitator, new_devnet, payer_of, sign
from tests.node_peers import MPP_DIR, NODE_DIR, ensure_mpp_peers, ensure_node_peers

pytestmark = [pytest.mark.asyncio(loop_scope="module")]
ROOT = Path(__file__).resolve().parent.parent
CHAIN_ID = 84532
PRICE = 10_000
SECRET = "proxy-test-identity-secret-0123456789abcdef"
UPLOAD_CHUNK, UPLOAD_CHUNKS = 1024 * 1024, 100
EVENTS = 10_000
MPP_SECRET = "mpp-secret-for-the-proxy-test-0123456789"


class Upstream:
    """The API being sold; it knows nothing about payments, only the signed identity headers."""

    def __init__(self) -> None:
        self.hits: Counter[str] = Counter()
        self.saw_credentials: list[str] = []
        self.upload_started = asyncio.Event()
        self.sse_release = asyncio.Event()
        self.weather_gate = asyncio.Event()  # cleared: /weather holds its answers until it is set again
        self.weather_gate.set()
        self.held = 0
        self.hold_target = 0
        self.all_held = asyncio.Event()
        self.quote_headers: list[dict[str, str]] = []

    def _identity(self, request: Request) -> dict[str, str] | None:
        for name in ("payment-signature", "x-payment", "authorization"):
            if name in request.headers:
                self.saw_credentials.append(name)
        target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        return verify_identity(request.headers, SECRET.encode(), method=request.method, target=target)

    async def weather(self, request: Request) -> JSONResponse:
        self.hits["weather"] += 1
        ident = self._identity(request)
        if not self.weather_gate.is_set():
            self.held += 1
            if self.held >= self.hold_target:
                self.all_held.set()
            await self.weather_gate.wait()
        return JSONResponse({"temp": 21, "payer": ident and ident.get("payer"),
                             "amount": ident and ident.get("amount")})

    async def sized(self, request: Request) -> JSONResponse:
        self.hits["sized"] += 1
        return JSONResponse({"size": int(request.query_params.get("size", "1"))})

    async def price(self, request: Request) -> JSONResponse:
        """The pricing endpoint: PRICE per unit of ``size`` in the query."""
        asked = await request.json()
        size = int(dict(p.split("=") for p in asked["query"].split("&") if p).get("size", "1"))
        return JSONResponse({"price": PRICE * size})

    async def quoted(self, request: Request) -> JSONResponse:
        """Prices itself: ``HEAD`` answers ``X-Price`` (PRICE atomic units per unit of ``size``; none for size 0)."""
        size = int(request.query_params.get("size", "1"))
        if request.method == "HEAD":
            self.hits["quote"] += 1
            self.quote_headers.append(dict(request.headers))
            return JSONResponse(None, headers={"X-Price": str(PRICE * size)} if size else {})
        self.hits["quoted"] += 1
        return JSONResponse({"size": size})

    async def ping(self, request: Request) -> JSONResponse:
        self.hits["ping"] += 1
        return JSONResponse({"pong": True})

    async def upload(self, request: Request) -> JSONResponse:
        self.hits["upload"] += 1
        ident = self._identity(request)
        digest, size = hashlib.sha256(), 0
        async for chunk in request.stream():
            if chunk and not self.upload_started.is_set():
                self.upload_started.set()
            digest.update(chunk)
            size += len(chunk)
        return JSONResponse({"bytes": size, "sha256": digest.hexdigest(), "payer": ident and ident.get("payer"),
                             "protocol": ident and ident.get("protocol")})

    async def events(self, request: Request) -> StreamingResponse:
        self.hits["events"] += 1

        async def stream() -> AsyncIterator[bytes]:
            yield b"id: 0\ndata: first\n\n"
            await self.sse_release.wait()
            for i in range(1, EVENTS):
                yield f"id: {i}\ndata: event {i}\n\n".encode()

        return StreamingResponse(stream(), media_type="text/event-stream")

    def app(self) -> Starlette:
        return Starlette(routes=[Route("/weather", self.weather), Route("/ping", self.ping),
                                 Route("/upload", self.upload, methods=["POST"]), Route("/events", self.events),
                                 Route("/mpp-upload", self.upload, methods=["POST"]),
                                 Route("/sized", self.sized), Route("/price", self.price, methods=["POST"]),
                                 Route("/quoted", self.quoted)])


def write_config(path: Path, upstream: str, facilitator: str, net: Any, store: str, *, events_price: int = PRICE,
                 client: str = "h11") -> None:
    token, asset = net.info.token, net.asset
    route = (f'asset = "{token}"\nextra = {{ name = "{asset.name}", version = "{asset.version}" }}\n')
    path.write_text(f"""
[proxy]
upstream = "{upstream}"
listen = "127.0.0.1:0"
identity_secret = "{SECRET}"
unpriced = "forward"
upstream_client = "{client}"

[[proxy.routes]]
path = "GET /weather"
price = {PRICE}
{route}
[[proxy.routes]]
path = "POST /upload"
price = {PRICE}
settle = "before"
{route}
[[proxy.routes]]
path = "GET /events"
price = {events_price}
settle = "before"
mime_type = "text/event-stream"
{route}
[[proxy.routes]]
path = "GET /sized"
price_url = "{upstream}/price"
{route}
[[proxy.routes]]
path = "GET /quoted"
price_header = "X-Price"
{route}
[[proxy.routes]]
path = "POST /mpp-upload"
price = {PRICE}
mpp = ["evm"]
{route}
[seller]
facilitator = "{facilitator}"
pay_to = "{net.payee.address}"
network = "{net.info.network}"
store = "{store}"
mpp_realm = "proxy.test"
mpp_secret = "{MPP_SECRET}"
""")


class Proxy:
    """A running ``paywire proxy`` subprocess."""

    def __init__(self, proc: asyncio.subprocess.Process, url: str) -> None:
        self.proc, self.url = proc, url
        self.log: list[str] = []

    async def wait_log(self, text: str) -> str:
        """The next stderr line containing ``text`` (the proxy logs each reload)."""
        assert self.proc.stderr is not None
        while True:
            line = (await self.proc.stderr.readline()).decode()
            assert line, f"the proxy exited before logging {text!r}: {''.join(self.log)}"
            self.log.append(line)
            if text in line:
                return line

    def peak_rss_kb(self) -> int:
        status = Path(f"/proc/{self.proc.pid}/status").read_text()
        return int(next(x for x in status.splitlines() if x.startswith("VmHWM:")).split()[1])

    def rss_kb(self) -> int:
        status = Path(f"/proc/{self.proc.pid}/status").read_text()
        return int(next(x for x in status.splitlines() if x.startswith("VmRSS:")).split()[1])


@contextlib.asynccontextmanager
async def run_proxy(config: Path) -> AsyncIterator[Proxy]:
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", "from paywire.cli.main import main; main()", "proxy", "--config", str(config),
        "--verbose", stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=env)
    try:
        assert proc.stdout is not None
        line = (await proc.stdout.readline()).decode()
        if "listening on" not in line:
            err = (await proc.stderr.read()).decode() if proc.stderr else ""
            raise AssertionError(f"paywire proxy did not start: {line!r} {err}")
        yield Proxy(proc, line.split("listening on ")[1].split()[0])
    finally:
        if proc.returncode is None:
            proc.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(proc.wait(), 30)
            except TimeoutError:
                proc.kill()
                await proc.wait()


class Env:
    def __init__(self, net: Any, upstream: Upstream, proxy: Proxy, config: Path, fac: str, up_url: str,
                 store: str, client: str) -> None:
        self.net, self.upstream, self.proxy, self.config = net, upstream, proxy, config
        self.fac, self.up_url, self.store, self.client = fac, up_url, store, client

    def rewrite(self, **kw: Any) -> None:
        write_config(self.config, self.up_url, self.fac, self.net, self.store, client=self.client, **kw)

    async def balances(self) -> tuple[int, int]:
        return (await self.net.token_balance(self.net.payer.address),
                await self.net.token_balance(self.net.payee.address))

    async def paid(self, before: tuple[int, int]) -> tuple[int, int]:
        after = await self.balances()
        return before[0] - after[0], after[1] - before[1]

    async def signed_header(self, method: str, path: str) -> str:
        """A fresh payment for ``path``, signed from the 402 the proxy answers."""
        async with httpx.AsyncClient(timeout=60) as http:
            first = await http.request(method, self.proxy.url + path)
        assert first.status_code == 402, first.text
        required = decode_payment_required(first.headers[PAYMENT_REQUIRED])
        offer = required.accepts[0]
        payload = await sign(offer, payer_of(self.net))
        return encode_payment_payload(payload)


@pytest_asyncio.fixture(loop_scope="module", scope="module", params=["h11", "httpx"])
async def env(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Env]:
    """The proxy with each of its upstream clients (``upstream_client``)."""
    net = await new_devnet("embedded", chain_id=CHAIN_ID)
    tmp = tmp_path_factory.mktemp("proxy")
    upstream = Upstream()
    try:
        async with contextlib.AsyncExitStack() as stack:
            fac = await stack.enter_async_context(serve_asgi(create_app(full_facilitator(net))))
            up_url = await stack.enter_async_context(serve_asgi(upstream.app()))
            config, store = tmp / "paywire.toml", f"sqlite:///{tmp / 'proxy.db'}"
            write_config(config, up_url, fac, net, store, client=request.param)
            proxy = await stack.enter_async_context(run_proxy(config))
            yield Env(net, upstream, proxy, config, fac, up_url, store, request.param)
    finally:
        await close_devnet(net)


def sdk_client(net: Any) -> x402Client:
    client = x402Client()
    client.register(net.info.network, ExactEvmScheme(Account.from_key(net.info.payer_key)))
    client.set_spend_controls({"allowed_assets": [{"network": net.info.network, "asset": net.info.token}]})
    return client


# ------------------------------------------------------------------------------------------------ paying


async def test_unpaid_request_gets_402_and_never_reaches_the_upstream(env: Env) -> None:
    before = env.upstream.hits["weather"]
    async with httpx.AsyncClient(timeout=60) as http:
        r = await http.get(env.proxy.url + "/weather")
    assert r.status_code == 402, "an unpaid request to a priced route must be answered 402 by the proxy"
    assert env.upstream.hits["weather"] == before, "the upstream ran for an unpaid request"


async def test_our_buyer_pays_through_the_proxy(env: Env, tmp_path: Path) -> None:
    """Checklist 26-29: 402 → sign → retry → 200; tokens moved once; the upstream saw the payer, signed."""
    before, hits = await env.balances(), env.upstream.hits["weather"]
    wallet = Wallet.from_key(env.net.info.payer_key, chains={env.net.info.network: env.net.chain})
    async with x402_client(wallet, Policy(assets=[env.net.asset]), store=f"sqlite:///{tmp_path / 'b.db'}") as c:
        r = await c.get(env.proxy.url + "/weather", headers={"Paywire-Payer": "0xforged"})
    assert r.status_code == 200, r.text
    assert "payment-response" in r.headers, "the paid answer must carry PAYMENT-RESPONSE"
    assert await env.paid(before) == (PRICE, PRICE), "payer and payee balances must move by the price, once"
    assert env.upstream.hits["weather"] == hits + 1, "the upstream must run once for one payment"
    assert r.json()["payer"].lower() == env.net.payer.address.lower(), \
        "the upstream must get the verified payer in signed headers (not the client's forged Paywire-Payer)"
    assert env.upstream.saw_credentials == [], "payment credentials must be stripped before forwarding"


async def test_official_x402_client_pays_through_the_proxy(env: Env) -> None:
    """The official x402 Python client (httpx, v2) pays a route sold by the proxy."""
    before = await env.balances()
    async with x402HttpxClient(sdk_client(env.net), timeout=60) as http:
        r = await http.get(env.proxy.url + "/weather")
    assert r.status_code == 200, r.text
    assert r.json()["temp"] == 21, "the upstream's answer must come back unchanged"
    assert await env.paid(before) == (PRICE, PRICE), "the SDK's payment must move the price once"


async def test_eight_concurrent_replays_reach_the_upstream_once(env: Env) -> None:
    """Exactly-once through the proxy: one payment, 8 concurrent copies → the upstream runs once, one charge."""
    header = await env.signed_header("GET", "/weather")
    before, hits = await env.balances(), env.upstream.hits["weather"]
    async with httpx.AsyncClient(timeout=60) as http:
        answers = await asyncio.gather(*(http.get(env.proxy.url + "/weather",
                                                  headers={"PAYMENT-SIGNATURE": header}) for _ in range(8)))
    assert [a.status_code for a in answers] == [200] * 8, [a.text for a in answers]
    assert len({a.content for a in answers}) == 1, "every copy must get the same recorded answer"
    assert env.upstream.hits["weather"] == hits + 1, "the upstream must see one request per payment"
    assert await env.paid(before) == (PRICE, PRICE), "one payment must be charged once"


async def _ledger_state(store: str) -> tuple[int, int]:
    """(rows in the proxy's payment ledger, the ledger's AUTOINCREMENT counter): durable state a request left."""
    import sqlite3

    path = store.removeprefix("sqlite:///")

    def read() -> tuple[int, int]:
        conn = sqlite3.connect(path)
        try:
            rows = conn.execute("SELECT count(*) FROM seller_payments").fetchone()[0]
            seq = conn.execute("SELECT seq FROM sqlite_sequence WHERE name = 'seller_payments'").fetchone()
            return int(rows), int(seq[0]) if seq else 0
        finally:
            conn.close()

    return await asyncio.to_thread(read)


async def test_a_refused_payment_writes_nothing_to_the_ledger(env: Env) -> None:
    """An unpaid request must not grow durable state: a payment the facilitator refuses (a payer with no tokens)
    gets 402, never reaches the upstream, and leaves no ledger row, not even a claim that was written and removed."""
    from paywire.evm.signer import LocalSigner

    async with httpx.AsyncClient(timeout=60) as http:
        first = await http.get(env.proxy.url + "/weather")
    offer = decode_payment_required(first.headers[PAYMENT_REQUIRED]).accepts[0]
    header = encode_payment_payload(await sign(offer, LocalSigner.generate()))  # holds no tokens
    ledger, hits = await _ledger_state(env.store), env.upstream.hits["weather"]
    async with httpx.AsyncClient(timeout=60) as http:
        r = await http.get(env.proxy.url + "/weather", headers={"PAYMENT-SIGNATURE": header})
    assert r.status_code == 402, f"a refused payment must get 402, got {r.status_code}: {r.text}"
    assert env.upstream.hits["weather"] == hits, "the upstream must not run for a refused payment"
    assert await _ledger_state(env.store) == ledger, "a refused payment must leave nothing in the ledger"


async def test_a_replay_after_settlement_gets_the_recorded_answer(env: Env) -> None:
    """A copy of a payment that was already settled (the facilitator now calls its nonce used) gets the recorded
    200 again, not a 402, and the upstream does not run again."""
    header = await env.signed_header("GET", "/weather")
    async with httpx.AsyncClient(timeout=60) as http:
        first = await http.get(env.proxy.url + "/weather", headers={"PAYMENT-SIGNATURE": header})
        assert first.status_code == 200, first.text
        before, hits = await env.balances(), env.upstream.hits["weather"]
        again = await http.get(env.proxy.url + "/weather", headers={"PAYMENT-SIGNATURE": header})
    assert again.status_code == 200, f"the replay must get the recorded answer: {again.status_code} {again.text}"
    assert again.content == first.content, "the same recorded body"
    assert again.headers.get("payment-response") == first.headers.get("payment-response"), "and the same receipt"
    assert env.upstream.hits["weather"] == hits, "the upstream must not run for a replay"
    assert await env.paid(before) == (0, 0), "a replay must not be charged"


async def test_our_buyer_pays_an_mpp_route_with_a_body(env: Env, tmp_path: Path) -> None:
    """MPP through the proxy: the body is bound into the challenge digest (read up to mpp_max_body), then
    forwarded whole; ``Authorization: Payment`` never reaches the upstream; it sees protocol "mpp"."""
    body = os.urandom(64 * 1024)
    before, hits = await env.balances(), env.upstream.hits["upload"]
    wallet = Wallet.from_key(env.net.info.payer_key, chains={env.net.info.network: env.net.chain})
    policy = Policy(assets=[env.net.asset], protocols=["mpp"])
    async with x402_client(wallet, policy, store=f"sqlite:///{tmp_path / 'b.db'}") as c:
        r = await c.post(env.proxy.url + "/mpp-upload", content=body)
    assert r.status_code == 200, r.text
    assert "payment-receipt" in r.headers, "an MPP payment must be answered with Payment-Receipt"
    assert r.json()["sha256"] == hashlib.sha256(body).hexdigest(), "the upstream must get the body unchanged"
    assert env.upstream.hits["upload"] == hits + 1, "the upstream must run once"
    assert await env.paid(before) == (PRICE, PRICE), "the MPP payment must move the price once"
    assert env.upstream.saw_credentials == [], "Authorization: Payment must be stripped before forwarding"
    assert r.json()["protocol"] == "mpp", "the signed identity must say which protocol paid"


async def run_node(node: str, folder: Path, script: str, *args: str) -> dict[str, Any]:
    """A one-shot Node peer; its last stdout line is a JSON report."""
    proc = await asyncio.create_subprocess_exec(node, str(folder / script), *args, cwd=folder,
                                                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(proc.communicate(), 120)
    lines = out.decode().strip().splitlines()
    assert lines, f"{script} printed nothing: {err.decode()[-3000:]}"
    report: dict[str, Any] = json.loads(lines[-1])
    assert "error" not in report, report["error"]
    return report


async def test_pympp_client_pays_an_mpp_route_through_the_proxy(env: Env) -> None:
    """pympp (the official Python MPP SDK, ``mpp.client.Mpp`` + ``evm.charge``) pays the proxy's MPP route with a
    digest-bound JSON body."""
    from mpp.client import Mpp
    from mpp.methods.evm import client as mpp_evm

    a = env.net.asset
    method = mpp_evm.charge(currency=a.address, account=Account.from_key(env.net.info.payer_key),
                            chain_id=env.net.info.chain_id, decimals=a.decimals,
                            authorization={"name": a.name, "version": a.version})
    body = json.dumps({"q": "pympp through the proxy"}).encode()
    before, hits = await env.balances(), env.upstream.hits["upload"]
    async with Mpp(methods=[method]) as client:
        r = await client.fetch(env.proxy.url + "/mpp-upload", method="POST", content=body,
                               headers={"content-type": "application/json"}, timeout=60)
    assert r.status_code == 200, r.text
    assert r.json()["sha256"] == hashlib.sha256(body).hexdigest(), "the upstream must get the body unchanged"
    assert r.json()["protocol"] == "mpp", "the upstream must see an MPP payer"
    assert env.upstream.hits["upload"] == hits + 1, "the upstream must run once"
    assert await env.paid(before) == (PRICE, PRICE), "the pympp payment must move the price once"


@pytest.mark.node
async def test_official_typescript_x402_client_pays_through_the_proxy(env: Env) -> None:
    """@x402/fetch (pinned in tests/node) pays a route sold by the proxy."""
    node = ensure_node_peers()
    before, hits = await env.balances(), env.upstream.hits["weather"]
    out = await run_node(node, NODE_DIR, "seller_fetch_client.mjs", env.proxy.url + "/weather",
                         env.net.info.payer_key, env.net.info.network, env.net.info.token)
    assert out["status"] == 200, out
    assert out["paymentResponse"]["success"] is True, out
    assert json.loads(out["body"])["payer"].lower() == env.net.payer.address.lower(), "upstream must see the payer"
    assert env.upstream.hits["weather"] == hits + 1, "the upstream must run once"
    assert await env.paid(before) == (PRICE, PRICE), "the TS client's payment must move the price once"


@pytest.mark.node
async def test_mppx_client_pays_an_mpp_route_through_the_proxy(env: Env) -> None:
    """mppx (pinned in tests/node/mpp) pays the proxy's MPP route with a JSON body (digest-bound)."""
    node = ensure_mpp_peers()
    a = env.net.asset
    cfg = {"url": env.proxy.url + "/mpp-upload", "payerKey": env.net.info.payer_key, "tokenName": a.name,
           "tokenVersion": a.version, "chainId": env.net.info.chain_id, "token": a.address, "method": "POST",
           "body": json.dumps({"q": "through the proxy"})}
    before, hits = await env.balances(), env.upstream.hits["upload"]
    out = await run_node(node, MPP_DIR, "mppx_client.mjs", json.dumps(cfg))
    assert out["status"] == 200, out
    assert out["receipt"]["status"] == "success", "mppx must parse our Payment-Receipt"
    assert json.loads(out["body"])["protocol"] == "mpp", "the upstream must see an MPP payer"
    assert env.upstream.hits["upload"] == hits + 1, "the upstream must run once"
    assert await env.paid(before) == (PRICE, PRICE), "the mppx payment must move the price once"


async def test_price_from_the_pricing_endpoint_and_never_from_the_client(env: Env, tmp_path: Path) -> None:
    """A ``price_url`` route: the proxy asks the pricing endpoint per request (3 units → 3x the price); a client's
    own ``Paywire-Price`` header changes nothing."""
    async with httpx.AsyncClient(timeout=60) as http:
        first = await http.get(env.proxy.url + "/sized?size=3", headers={"Paywire-Price": "1"})
    asked = decode_payment_required(first.headers[PAYMENT_REQUIRED]).accepts[0].amount
    assert int(asked) == 3 * PRICE, "the 402 must ask the pricing endpoint's price, not the client's"
    before, hits = await env.balances(), env.upstream.hits["sized"]
    wallet = Wallet.from_key(env.net.info.payer_key, chains={env.net.info.network: env.net.chain})
    async with x402_client(wallet, Policy(assets=[env.net.asset]), store=f"sqlite:///{tmp_path / 'b.db'}") as c:
        r = await c.get(env.proxy.url + "/sized?size=3", headers={"Paywire-Price": "1"})
    assert r.status_code == 200, r.text
    assert await env.paid(before) == (3 * PRICE, 3 * PRICE), "the payment must be the endpoint's price, once"
    assert env.upstream.hits["sized"] == hits + 1, "the upstream must run once"


async def test_price_from_an_upstream_header(env: Env, tmp_path: Path) -> None:
    """A ``price_header`` route: the proxy asks the upstream ``HEAD`` of the same target (credentials stripped,
    ``Paywire-Quote: 1``) and charges its ``X-Price``; an upstream that states no price is a 502 with nothing
    charged and the GET never forwarded."""
    async with httpx.AsyncClient(timeout=60) as http:
        first = await http.get(env.proxy.url + "/quoted?size=3", headers={"Paywire-Price": "1"})
        unpriced = await http.get(env.proxy.url + "/quoted?size=0")
    assert first.status_code == 402, first.text
    assert int(decode_payment_required(first.headers[PAYMENT_REQUIRED]).accepts[0].amount) == 3 * PRICE, \
        "the 402 must ask the upstream's price"
    assert unpriced.status_code == 502 and unpriced.json()["error"] == "pricing_unavailable", unpriced.text
    before, hits = await env.balances(), env.upstream.hits["quoted"]
    wallet = Wallet.from_key(env.net.info.payer_key, chains={env.net.info.network: env.net.chain})
    async with x402_client(wallet, Policy(assets=[env.net.asset]), store=f"sqlite:///{tmp_path / 'b.db'}") as c:
        r = await c.get(env.proxy.url + "/quoted?size=3")
    assert r.status_code == 200 and r.json() == {"size": 3}, r.text
    assert await env.paid(before) == (3 * PRICE, 3 * PRICE), "the payment must be the upstream's price, once"
    assert env.upstream.hits["quoted"] == hits + 1, "the upstream must run the paid request once"
    quotes = env.upstream.quote_headers
    assert quotes and all(q.get("paywire-quote") == "1" for q in quotes), "quotes must be marked"
    assert not any("payment-signature" in q or "paywire-price" in q for q in quotes), \
        "a quote carried the client's credential or price"


# ------------------------------------------------------------------------------------------------ streaming


async def test_100mb_upload_streams_through_with_bounded_memory(env: Env) -> None:
    """The upstream gets the first bytes before the client sends the rest; the proxy holds a small bound."""
    header = await env.signed_header("POST", "/upload")
    env.upstream.upload_started.clear()
    expected = hashlib.sha256()
    chunk = bytes(range(256)) * (UPLOAD_CHUNK // 256)
    for _ in range(UPLOAD_CHUNKS):
        expected.update(chunk)
    base = env.proxy.rss_kb()

    async def body() -> AsyncIterator[bytes]:
        yield chunk
        try:  # the rest only once the first megabyte reached the upstream
            await asyncio.wait_for(env.upstream.upload_started.wait(), 60)
        except TimeoutError:
            raise AssertionError("the upstream got nothing while the client held back the rest of the body: "
                                 "the proxy buffers uploads") from None
        for _ in range(UPLOAD_CHUNKS - 1):
            yield chunk

    before = await env.balances()
    async with httpx.AsyncClient(timeout=120) as http:
        r = await http.post(env.proxy.url + "/upload", content=body(),
                            headers={"PAYMENT-SIGNATURE": header,
                                     "content-length": str(UPLOAD_CHUNK * UPLOAD_CHUNKS)})
    assert r.status_code == 200, r.text
    assert r.json()["bytes"] == UPLOAD_CHUNK * UPLOAD_CHUNKS, "the upstream must get every byte"
    assert r.json()["sha256"] == expected.hexdigest(), "the upstream must get the bytes unchanged"
    assert await env.paid(before) == (PRICE, PRICE), "the upload must be charged once"
    grew_mb = (env.proxy.peak_rss_kb() - base) / 1024
    print(f"proxy peak RSS grew {grew_mb:.1f} MB for a {UPLOAD_CHUNKS} MB upload")
    assert grew_mb < 40, f"the proxy's peak memory grew {grew_mb:.1f} MB for a 100 MB upload: it buffers"


async def test_sse_stream_of_10000_events_streams_through(env: Env) -> None:
    """The client reads the first event while the upstream still holds the rest back; all 10,000 arrive."""
    header = await env.signed_header("GET", "/events")
    env.upstream.sse_release.clear()
    base = env.proxy.rss_kb()
    ids: list[str] = []
    async with httpx.AsyncClient(timeout=60) as http, http.stream(
            "GET", env.proxy.url + "/events", headers={"PAYMENT-SIGNATURE": header}) as r:
        assert r.status_code == 200, await r.aread()
        assert r.headers["content-type"].startswith("text/event-stream"), "the SSE media type must pass through"
        async for line in r.aiter_lines():
            if line.startswith("id: "):
                ids.append(line[4:])
                if len(ids) == 1:
                    env.upstream.sse_release.set()  # only now may the upstream send the other events
    assert len(ids) == EVENTS, f"expected {EVENTS} events, got {len(ids)}"
    assert ids[-1] == str(EVENTS - 1), "events must arrive in order, the last one included"
    grew_mb = (env.proxy.peak_rss_kb() - base) / 1024
    assert grew_mb < 40, f"the proxy's peak memory grew {grew_mb:.1f} MB during the SSE stream"


# ------------------------------------------------------------------------------------------------ operations


async def test_healthz_and_metrics(env: Env) -> None:
    """/metrics without a token: loopback clients only — a client relayed by a front proxy on this host
    (X-Forwarded-For, which uvicorn trusts from loopback) is refused."""
    async with httpx.AsyncClient(timeout=60) as http:
        health = await http.get(env.proxy.url + "/healthz")
        metrics = await http.get(env.proxy.url + "/metrics")
        relayed = await http.get(env.proxy.url + "/metrics", headers={"X-Forwarded-For": "203.0.113.7"})
    assert health.status_code == 200 and health.json()["status"] == "ok", health.text
    assert metrics.status_code == 200, metrics.text
    assert "paywire_proxy_paid_requests_total" in metrics.text, "metrics must count paid requests"
    assert relayed.status_code == 403, f"/metrics served to a remote client: {relayed.status_code}"
    assert "paywire_proxy" not in relayed.text, "the refusal leaked metrics"
    assert env.upstream.hits["healthz"] == 0, "/healthz is the proxy's own, never forwarded"


async def test_metrics_token_is_required_from_everyone(env: Env, tmp_path: Path) -> None:
    """With metrics_token set, /metrics needs ``Authorization: Bearer <token>``, from loopback too."""
    from paywire.proxy.app import ProxyServer

    config = tmp_path / "metrics.toml"
    write_config(config, env.up_url, env.fac, env.net, f"sqlite:///{tmp_path / 'm.db'}")
    token = "metrics-token-0123456789abcdef"
    config.write_text(config.read_text().replace("[proxy]\n", f'[proxy]\nmetrics_token = "{token}"\n', 1))
    server = ProxyServer(config)
    await server.start()
    try:
        answers = {}
        for who in ("127.0.0.1", "203.0.113.7"):
            transport = httpx.ASGITransport(app=server, client=(who, 40000))
            async with httpx.AsyncClient(transport=transport, base_url="http://proxy") as http:
                answers[who] = [await http.get("/metrics", headers=h) for h in (
                    {}, {"Authorization": "Bearer wrong-token-0123456789abc"}, {"Authorization": f"Bearer {token}"})]
    finally:
        await server.aclose()
    for who, (bare, wrong, right) in answers.items():
        assert (bare.status_code, wrong.status_code) == (401, 401), f"{who}: {bare.status_code} {wrong.status_code}"
        assert right.status_code == 200 and "paywire_proxy_responses_total" in right.text, f"{who}: {right.text}"


async def test_sighup_reload_under_load_loses_no_request(env: Env) -> None:
    """8 clients keep calling while 8 paid requests are held inside the upstream, and the config is rewritten (a
    new price for /events) and reloaded three times: every request is answered 200, each held payment is charged
    once and reaches the upstream once, and the new price is in force afterwards."""
    headers = [await env.signed_header("GET", "/weather") for _ in range(8)]
    before, hits = await env.balances(), env.upstream.hits["weather"]
    statuses: Counter[int] = Counter()
    stop, reached = asyncio.Event(), asyncio.Event()
    target = 40

    async def worker(http: httpx.AsyncClient) -> None:
        while not stop.is_set():
            r = await http.get(env.proxy.url + "/ping")
            statuses[r.status_code] += 1
            if sum(statuses.values()) >= target:
                reached.set()

    async with httpx.AsyncClient(timeout=120) as http:
        workers = [asyncio.create_task(worker(http)) for _ in range(8)]
        await reached.wait()
        env.upstream.weather_gate.clear()
        env.upstream.held, env.upstream.hold_target = 0, len(headers)
        env.upstream.all_held.clear()
        paid = [asyncio.create_task(http.get(env.proxy.url + "/weather", headers={"PAYMENT-SIGNATURE": h}))
                for h in headers]
        await env.upstream.all_held.wait()  # every paid request is inside the upstream, on the old configuration
        for n in range(3):
            env.rewrite(events_price=PRICE * (n + 2))
            env.proxy.proc.send_signal(signal.SIGHUP)
            await env.proxy.wait_log("loaded")
        env.upstream.weather_gate.set()
        answers = await asyncio.gather(*paid)
        reached.clear()
        target = sum(statuses.values()) + 40  # keep the load on for 40 more answers from the new configuration
        await reached.wait()
        stop.set()
        await asyncio.gather(*workers)
        events = await http.get(env.proxy.url + "/events")
        health = await http.get(env.proxy.url + "/healthz")
    assert set(statuses) == {200}, f"requests during reloads must all succeed, got {dict(statuses)}"
    assert [a.status_code for a in answers] == [200] * 8, [a.text for a in answers]
    assert env.upstream.hits["weather"] == hits + 8, "each held payment must reach the upstream once"
    assert await env.paid(before) == (8 * PRICE, 8 * PRICE), "each held payment must be charged once"
    assert health.json()["generation"] >= 4, "three reloads must have swapped in three new configurations"
    price = decode_payment_required(events.headers[PAYMENT_REQUIRED]).accepts[0].amount
    assert int(price) == PRICE * 4, "the reloaded price must be in force"
    env.rewrite()
    env.proxy.proc.send_signal(signal.SIGHUP)
    await env.proxy.wait_log("loaded")


async def test_a_broken_config_on_sighup_keeps_the_running_one(env: Env) -> None:
    env.config.write_text(env.config.read_text().replace('upstream = "', 'upstreem = "'))
    try:
        env.proxy.proc.send_signal(signal.SIGHUP)
        line = await env.proxy.wait_log("reload failed")
        assert "upstreem" in line, "the error must name the bad key"
        async with httpx.AsyncClient(timeout=60) as http:
            r = await http.get(env.proxy.url + "/ping")
        assert r.status_code == 200, "the proxy must keep serving on its running configuration"
    finally:
        env.rewrite()


# ------------------------------------------------------------------------------------------------ failures


def _closed_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def test_upstream_down_is_502_not_charged_and_limits_apply_before_payment(env: Env, tmp_path: Path) -> None:
    """A proxy whose upstream is down: a paid settle="after" request gets 502 and moves no money; a body over
    max_body is refused with 413 before any payment; an unpriced path is 404 (unpriced = "deny")."""
    config = tmp_path / "down.toml"
    write_config(config, f"http://127.0.0.1:{_closed_port()}", env.fac, env.net, f"sqlite:///{tmp_path / 'd.db'}",
                 client=env.client)
    text = config.read_text().replace('unpriced = "forward"', 'unpriced = "deny"\nmax_body = 1000')
    config.write_text(text)
    async with run_proxy(config) as proxy:
        down = Env(env.net, env.upstream, proxy, config, env.fac, "", "", env.client)
        header = await down.signed_header("GET", "/weather")
        before = await env.balances()
        async with httpx.AsyncClient(timeout=60) as http:
            r = await http.get(proxy.url + "/weather", headers={"PAYMENT-SIGNATURE": header})
            big = await http.post(proxy.url + "/upload", content=b"x" * 2000)
            unpriced = await http.get(proxy.url + "/sized?size=2")
            free = await http.get(proxy.url + "/ping")
        assert r.status_code == 502, r.text
        assert await env.paid(before) == (0, 0), "an unreachable upstream must not be charged (settle='after')"
        assert big.status_code == 413, "a body over max_body must be refused before payment"
        assert free.status_code == 404, "unpriced paths must be refused by default"
        assert unpriced.status_code == 502, "a pricing endpoint that does not answer must be a clear 502"
        assert unpriced.json()["error"] == "pricing_unavailable", unpriced.text


async def test_mpp_discovery_document_lists_the_mpp_route(env: Env) -> None:
    """draft-payment-discovery-00: /openapi.json lists the MPP route with its evm/charge offer; x402-only routes
    are discovered through their 402 and the facilitator's bazaar listing instead."""
    async with httpx.AsyncClient(timeout=60) as http:
        r = await http.get(env.proxy.url + "/openapi.json")
    assert r.status_code == 200, r.text
    assert r.headers["cache-control"] == "max-age=300", "the draft recommends a 5-minute cache"
    doc = r.json()
    assert doc["openapi"].startswith("3.") and doc["info"]["title"], doc
    assert list(doc["paths"]) == ["/mpp-upload"], "only routes payable with the Payment scheme are listed"
    op = doc["paths"]["/mpp-upload"]["post"]
    assert op["responses"]["402"]["description"] == "Payment Required", op
    (offer,) = op["x-payment-info"]["offers"]
    assert {k: offer[k] for k in ("intent", "method", "amount")} == {
        "intent": "charge", "method": "evm", "amount": str(PRICE)}, offer
    assert offer["currency"].lower() == env.net.info.token.lower(), "the offer's currency is the token address"


async def test_paywire_discover_reads_the_proxy(env: Env) -> None:
    """``paywire discover`` on a priced URL lists its x402 and MPP offers; on the service, its discovery document."""
    async def discover(*args: str) -> dict[str, Any]:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-c", "from paywire.cli.main import main; main()", "discover", *args, "--json",
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
            env={**os.environ, "PYTHONPATH": str(ROOT / "src")})
        out, err = await proc.communicate()
        assert proc.returncode == 0, err.decode()
        result: dict[str, Any] = json.loads(out)
        return result

    offers = (await discover(env.proxy.url + "/mpp-upload", "-X", "POST"))["offers"]
    assert sorted(o["protocol"] for o in offers) == ["mpp", "x402"], offers
    assert {o["amount"] for o in offers} == {str(PRICE)}, offers
    doc = await discover(env.proxy.url)
    assert doc["source"] == "MPP discovery document", doc
    assert [o["resource"] for o in doc["offers"]] == [env.proxy.url + "/mpp-upload"], doc


async def test_config_check_passes_a_good_file(env: Env) -> None:
    """``paywire proxy --config F --check`` loads the file, checks it against the facilitator, lists the routes
    and exits 0 without serving (what to run before ``systemctl reload``)."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", "from paywire.cli.main import main; main()", "proxy", "--config", str(env.config),
        "--check", stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        env={**os.environ, "PYTHONPATH": str(ROOT / "src"), "COLUMNS": "200"})
    out, err = await asyncio.wait_for(proc.communicate(), 120)
    assert proc.returncode == 0, err.decode()
    assert "GET /weather" in err.decode() and "configuration OK" in err.decode(), err.decode()
    assert "listening" not in out.decode(), "--check must not serve"


async def test_the_proxy_settles_again_a_reply_whose_served_write_was_lost(env: Env, tmp_path: Path) -> None:
    """A proxy stopped after sending a paid reply and before recording ``served`` leaves the row ``settling``,
    and the payer, who has the content, does not retry. The proxy's own reconcile pass (``reconcile_interval``)
    takes the row once its lease is over, settles it again (the facilitator answers from its record: no second
    transfer) and records ``served`` with the transaction the payer was given."""
    import time

    from paywire.proxy.app import ProxyServer
    from paywire.store.settlements import SettlementStore
    from paywire.x402.codec import decode_payment_response

    # ``paywire facilitator`` as it runs: with its settlement store, so a second /settle of one payment is
    # answered from the record (without one, the chain says "nonce already used" and the row stays unresolved)
    settlements = await SettlementStore.open(f"sqlite:///{tmp_path / 'facilitator.db'}")
    stack = contextlib.AsyncExitStack()
    fac = await stack.enter_async_context(serve_asgi(create_app(full_facilitator(env.net, store=settlements))))
    config = tmp_path / "reconcile.toml"
    write_config(config, env.up_url, fac, env.net, f"sqlite:///{tmp_path / 'r.db'}", client=env.client)
    config.write_text(config.read_text().replace("[proxy]\n", '[proxy]\nreconcile_interval = "100ms"\n', 1))
    server = ProxyServer(config)
    await server.start()
    try:
        store = server.current.middleware.flow.payments
        original, lost = store.update, asyncio.Event()

        async def update(*args: Any, **changes: Any) -> bool:
            if changes.get("state") == "served" and not lost.is_set():
                lost.set()
                raise RuntimeError("the process stopped here")
            return await original(*args, **changes)

        store.update = update  # type: ignore[method-assign]
        before, hits = await env.balances(), env.upstream.hits["weather"]
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=server), base_url="http://proxy",
                                     timeout=60) as http:
            first = await http.get("/weather")
            offer = decode_payment_required(first.headers[PAYMENT_REQUIRED]).accepts[0]
            r = await http.get("/weather", headers={
                "PAYMENT-SIGNATURE": encode_payment_payload(await sign(offer, payer_of(env.net)))})
        assert r.status_code == 200 and lost.is_set(), r.text
        paid = decode_payment_response(r.headers["payment-response"])
        row = (await store.sales(limit=1))[0]
        assert row.state == "settling" and row.tx is None, "the served write was lost"
        await store.db.execute("UPDATE seller_payments SET lease_until = ? WHERE id = ?", (time.time() - 1, row.id))
        deadline = time.monotonic() + 60
        while (now := await store.get(row.id)) is not None and now.state == "settling" \
                and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        assert now is not None and now.state == "served" and now.tx == paid.transaction, now
        assert await env.paid(before) == (PRICE, PRICE), "settled again from the record, not charged twice"
        assert env.upstream.hits["weather"] == hits + 1, "the upstream saw the paid request once"
    finally:
        await server.aclose()
        await stack.aclose()
        await settlements.aclose()
