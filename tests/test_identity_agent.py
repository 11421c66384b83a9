"""Agent request signatures (RFC 9421, Web Bot Auth profile): vectors, interop with the PyPI
``http-message-signatures`` package (both directions), the key directory fetcher against real servers on
127.0.0.1, and the seller end to end on the embedded chain (signed payments carry the agent's DID into the
ledger; unsigned ones are refused before money moves).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import datetime
import json
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import pytest_asyncio
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from paywire.client import BuyerConfig, PaymentRejected, Policy, x402_client
from paywire.facilitator.client import LocalFacilitatorClient
from paywire.facilitator.core import Facilitator
from paywire.identity.agent import (
    DIRECTORY_PATH,
    TAG,
    AgentFailure,
    AgentKey,
    AgentProof,
    directory,
    jwk_thumbprint,
    parse_signature,
    parse_signature_input,
    serialize_params,
    signature_base,
    verify,
    verify_signature,
)
from paywire.server.agents import AgentDirectories, DirectoryError
from paywire.server.asgi import PaymentMiddleware
from paywire.server.core import PaidRoute
from paywire.serving import serve_asgi
from paywire.store import open_database
from paywire.store.payments import PaymentStore
from paywire.wallet import Wallet
from paywire.x402.codec import decode_header
from tests.helpers import close_devnet, facilitator_for, new_devnet
from tests.test_buyer_support import CENT, balance, offer

in_module_loop = pytest.mark.asyncio(loop_scope="module")

# RFC 9421 B.1.4 (test-key-ed25519) and B.2.6
B14_SEED = "n4Ni-HpISpVObnQMW0wOhCKROaIKqKtW_2ZYb2p9KcU"
B14_PUBLIC = "JrQLj5P_89iXES9-vFgrIy29clF9CC_oPPsw3c5D0bs"
B26_INPUT = ('sig-b26=("date" "@method" "@path" "@authority" "content-type" "content-length");created=1618884473;'
             'keyid="test-key-ed25519"')
B26_SIGNATURE = "sig-b26=:wqcAqbmYJ2ji2glfAMaRy4gruYYnx2nEFN2HN6jrnDnQCK1u02Gb04v9EDgwUPiu4A0w6vuQv5lIp5WPpBKRCw==:"
B2_URL = "https://example.com/foo?param=Value&Pet=dog"
B2_HEADERS = {"date": "Tue, 20 Apr 2021 02:07:55 GMT", "content-type": "application/json", "content-length": "18"}
URL, NOW = "https://api.example.com/report?x=1", 1_800_000_000.0


def _b64u(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def lower(h: dict[str, str]) -> dict[str, str]:
    return {k.lower(): v for k, v in h.items()}


# ------------------------------------------------------------------------------------------------ RFC 9421 vectors


def test_rfc9421_b26_verifies_with_our_verifier() -> None:
    chosen = parse_signature_input(B26_INPUT)[0]
    sig = parse_signature(B26_SIGNATURE)["sig-b26"]
    assert verify_signature("POST", B2_URL, B2_HEADERS, _b64u(B14_PUBLIC), chosen, sig), "B.2.6 did not verify"


def test_rfc9421_b26_signing_reproduces_the_published_signature() -> None:
    chosen = parse_signature_input(B26_INPUT)[0]
    base = signature_base("POST", B2_URL, B2_HEADERS, chosen.covered, serialize_params(chosen.covered, chosen.params))
    produced = Ed25519PrivateKey.from_private_bytes(_b64u(B14_SEED)).sign(base.encode())
    assert produced == parse_signature(B26_SIGNATURE)["sig-b26"], "our signature base differs from RFC 9421's"


def test_rfc9421_b26_with_a_changed_header_does_not_verify() -> None:
    chosen = parse_signature_input(B26_INPUT)[0]
    sig = parse_signature(B26_SIGNATURE)["sig-b26"]
    changed = {**B2_HEADERS, "content-length": "19"}
    assert not verify_signature("POST", B2_URL, changed, _b64u(B14_PUBLIC), chosen, sig), "a tampered field verified"


# ------------------------------------------------------------------------------------------------ the profile


def test_signed_request_verifies_and_names_the_agent() -> None:
    key = AgentKey.generate("https://bot.example")
    h = lower(key.sign("GET", URL, {"payment-signature": "abc"}, NOW)) | {"payment-signature": "abc"}
    got = verify("GET", URL, h, key.public_key, NOW + 1)
    assert isinstance(got, AgentProof), f"a good signature failed: {got}"
    assert (got.agent, got.keyid) == ("https://bot.example", key.keyid), "wrong agent or key"
    assert got.identity.did == key.did, "the proof's DID is not the key's did:key"


@pytest.mark.parametrize("change, code", [
    (lambda h: ("GET", "https://api.example.com/other", h), "invalid_agent_signature"),  # tampered path
    (lambda h: ("POST", URL, h), "invalid_agent_signature"),  # tampered method
    (lambda h: ("GET", URL, {**h, "payment-signature": "abd"}), "invalid_agent_signature"),  # another payment
    (lambda h: ("GET", URL.replace("api.", "www."), h), "invalid_agent_signature"),  # another authority
])
def test_tampered_request_is_refused(change: Any, code: str) -> None:
    key = AgentKey.generate("https://bot.example")
    h = lower(key.sign("GET", URL, {"payment-signature": "abc"}, NOW)) | {"payment-signature": "abc"}
    method, url, headers = change(h)
    got = verify(method, url, headers, key.public_key, NOW + 1)
    assert isinstance(got, AgentFailure) and got.code == code, f"a tampered request: {got}"


def test_stale_and_future_signatures_are_refused() -> None:
    key = AgentKey.generate("https://bot.example")
    h = lower(key.sign("GET", URL, {}, NOW, ttl=60))
    late = verify("GET", URL, h, key.public_key, NOW + 120)
    early = verify("GET", URL, h, key.public_key, NOW - 120)
    assert isinstance(late, AgentFailure) and late.code == "agent_signature_stale", f"stale: {late}"
    assert isinstance(early, AgentFailure) and early.code == "agent_signature_stale", f"future: {early}"


def test_long_lived_signature_is_refused() -> None:
    key = AgentKey.generate("https://bot.example")
    got = verify("GET", URL, lower(key.sign("GET", URL, {}, NOW, ttl=86_400)), key.public_key, NOW)
    assert isinstance(got, AgentFailure) and got.code == "agent_signature_stale", f"a day-long signature: {got}"


def test_payment_added_after_signing_is_refused() -> None:
    """A payment header the signature does not cover: someone else's payment riding on the agent's identity."""
    key = AgentKey.generate("https://bot.example")
    h = lower(key.sign("GET", URL, {}, NOW)) | {"payment-signature": "abc"}
    got = verify("GET", URL, h, key.public_key, NOW)
    assert isinstance(got, AgentFailure) and "payment-signature" in got.message, f"{got}"


def test_other_key_is_refused() -> None:
    key, other = AgentKey.generate("https://bot.example"), AgentKey.generate("https://bot.example")
    got = verify("GET", URL, lower(key.sign("GET", URL, {}, NOW)), other.public_key, NOW)
    assert isinstance(got, AgentFailure) and got.code == "invalid_agent_signature", f"{got}"


@pytest.mark.parametrize("field", ['sig1=("@method";req);created=1', "sig1=(", "x" * 5000, 'sig1=("a");p=1.5'])
def test_odd_signature_input_is_refused_not_crashed(field: str) -> None:
    key = AgentKey.generate("https://bot.example")
    h = lower(key.sign("GET", URL, {}, NOW)) | {"signature-input": field}
    assert isinstance(verify("GET", URL, h, key.public_key, NOW), AgentFailure), "odd Signature-Input accepted"


def test_directory_keys_carry_their_thumbprint() -> None:
    key = AgentKey.generate("https://bot.example")
    doc = directory([key])
    assert doc["keys"][0]["kid"] == jwk_thumbprint(key.public_key) == key.keyid, "kid is not the JWK thumbprint"


# ------------------------------------------------------------------------------------------------ interop


@pytest.mark.interop
def test_our_signature_verifies_with_http_message_signatures() -> None:
    """The PyPI http-message-signatures package (3.0.0) verifies what AgentKey signs, tag and components too."""
    from http_message_signatures import HTTPMessageVerifier, MappingKeyResolver, algorithms

    key = AgentKey.generate("https://bot.example")
    now = time.time()
    headers = key.sign("GET", URL, {"payment-signature": "abc"}, now) | {"payment-signature": "abc"}
    request = httpx.Request("GET", URL, headers=headers)
    verifier = HTTPMessageVerifier(signature_algorithm=algorithms.ED25519, key_resolver=MappingKeyResolver(
        public_keys={key.keyid: Ed25519PublicKey.from_public_bytes(key.public_key)}, private_keys={}))
    results = verifier.verify(request, expect_tag=TAG, require_components=(
        "@authority", "@method", "@path", "signature-agent", "payment-signature"))
    assert results[0].parameters["keyid"] == key.keyid, "the library read another key id"


@pytest.mark.interop
def test_http_message_signatures_signature_verifies_with_ours() -> None:
    from http_message_signatures import HTTPMessageSigner, MappingKeyResolver, algorithms

    private = Ed25519PrivateKey.generate()
    public = Ed25519PublicKey.from_public_bytes(private.public_key().public_bytes_raw())
    kid = jwk_thumbprint(public.public_bytes_raw())
    request = httpx.Request("GET", URL, headers={"Signature-Agent": '"https://bot.example"'})
    now = datetime.datetime.now(datetime.UTC)
    HTTPMessageSigner(signature_algorithm=algorithms.ED25519, key_resolver=MappingKeyResolver(
        public_keys={}, private_keys={kid: private})).sign(
        request, key_id=kid, label="sig2", tag=TAG, nonce="n" * 32, created=now,
        expires=now + datetime.timedelta(seconds=60),
        covered_component_ids=("@authority", "@method", "@path", "signature-agent"))
    got = verify("GET", URL, lower(dict(request.headers)), public.public_bytes_raw(), now.timestamp())
    assert isinstance(got, AgentProof), f"we refused the library's Web Bot Auth signature: {got}"


def _web_bot_auth(command: str, **args: Any) -> dict[str, Any]:
    import subprocess

    from tests.node_peers import NODE_DIR, _installed

    node = _installed(NODE_DIR / "identity", ("web-bot-auth",), "Cloudflare's web-bot-auth")
    out = subprocess.run([node, str(NODE_DIR / "identity" / "web_bot_auth_peer.mjs"), command], input=json.dumps(args),
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    result: dict[str, Any] = json.loads(out.stdout)
    return result


@pytest.mark.interop
@pytest.mark.node
def test_our_signature_verifies_with_cloudflare_web_bot_auth() -> None:
    key = AgentKey.generate("https://bot.example")
    headers = key.sign("GET", URL, {}, time.time())
    got = _web_bot_auth("verify", jwk=key.jwk(), url=URL, method="GET", headers=headers)
    assert got["ok"] is True, f"web-bot-auth refused our signature: {got.get('error')}"
    tampered = _web_bot_auth("verify", jwk=key.jwk(), url=URL.replace("report", "other"), method="GET",
                             headers=headers)
    assert tampered["ok"] is False, "web-bot-auth accepted our signature on another path"


@pytest.mark.interop
@pytest.mark.node
def test_cloudflare_web_bot_auth_signature_verifies_with_ours() -> None:
    key = AgentKey.generate("https://bot.example")
    signed = _web_bot_auth("sign", jwk={**key.private_jwk(), "kid": key.keyid}, url=URL, method="GET",
                           agent="https://bot.example")["headers"]
    got = verify("GET", URL, lower(signed), key.public_key, time.time())
    assert isinstance(got, AgentProof), f"we refused web-bot-auth's signature: {got}"
    assert got.keyid == key.keyid, "web-bot-auth's keyid is not the JWK thumbprint we use"


# ------------------------------------------------------------------------------------------------ directories


@contextlib.asynccontextmanager
async def directory_server(handler: Any) -> AsyncIterator[str]:
    app = Starlette(routes=[Route("/{p:path}", handler)])
    async with serve_asgi(app) as url:
        yield url


@in_module_loop
async def test_loopback_directory_is_refused_unless_dev() -> None:
    key = AgentKey.generate("http://x")

    async def serve(_: Request) -> Response:
        return JSONResponse(directory([key]))

    async with directory_server(serve) as url:
        with pytest.raises(DirectoryError) as info:
            await AgentDirectories().key(url, key.keyid)
        assert info.value.code == "agent_directory_refused", f"loopback was fetched: {info.value}"
        localhost = url.replace("127.0.0.1", "localhost")
        with pytest.raises(DirectoryError):
            await AgentDirectories().key(localhost.replace("http:", "https:"), key.keyid)
        assert await AgentDirectories(allow_private=True).key(url, key.keyid) == key.public_key, "dev mode failed"


@in_module_loop
async def test_huge_directory_is_refused() -> None:
    async def serve(_: Request) -> Response:
        return Response(b'{"keys": [' + b" " * 200_000 + b"]}", media_type="application/json")

    async with directory_server(serve) as url:
        with pytest.raises(DirectoryError) as info:
            await AgentDirectories(allow_private=True).key(url, "k")
    assert info.value.code == "agent_directory_too_large", f"wrong reason: {info.value.code}"


@in_module_loop
async def test_redirect_is_not_followed() -> None:
    async def serve(_: Request) -> Response:
        return Response(status_code=302, headers={"location": "http://127.0.0.1:9/"})

    async with directory_server(serve) as url:
        with pytest.raises(DirectoryError) as info:
            await AgentDirectories(allow_private=True).key(url, "k")
    assert info.value.code == "agent_directory_refused" and "302" in str(info.value), f"{info.value}"


@in_module_loop
async def test_slow_directory_times_out_and_is_not_asked_again_at_once() -> None:
    release = asyncio.Event()
    hits = 0

    async def serve(_: Request) -> Response:
        nonlocal hits
        hits += 1
        await release.wait()
        return JSONResponse({"keys": []})

    async with directory_server(serve) as url:
        dirs = AgentDirectories(allow_private=True, timeout=1.0)  # long enough for the request to reach the server
        for _ in range(3):
            with pytest.raises(DirectoryError) as info:
                await dirs.key(url, "k")
            assert info.value.code == "agent_directory_unreachable", f"wrong reason: {info.value.code}"
        release.set()
    assert hits == 1, f"a failing directory was fetched {hits} times instead of once (negative cache)"


@in_module_loop
async def test_directory_is_cached_and_bad_kid_refused() -> None:
    key = AgentKey.generate("http://x")
    hits = 0

    async def serve(_: Request) -> Response:
        nonlocal hits
        hits += 1
        return JSONResponse(directory([key]))

    async with directory_server(serve) as url:
        dirs = AgentDirectories(allow_private=True)
        for _ in range(3):
            assert await dirs.key(url, key.keyid) == key.public_key
        with pytest.raises(DirectoryError) as info:
            await dirs.key(url, "unknown")
    assert hits == 1, f"the directory was fetched {hits} times"
    assert info.value.code == "agent_key_unknown", f"wrong reason: {info.value.code}"

    async def lying(_: Request) -> Response:
        doc = directory([key])
        doc["keys"][0]["kid"] = "not-its-thumbprint"
        return JSONResponse(doc)

    async with directory_server(lying) as url:
        with pytest.raises(DirectoryError) as info:
            await AgentDirectories(allow_private=True).key(url, key.keyid)
    assert info.value.code == "agent_directory_invalid", f"a key with a wrong kid was accepted: {info.value.code}"


# ------------------------------------------------------------------------------------------------ seller e2e


class Env:
    def __init__(self, net: Any, url: str, agent: AgentKey, db: Path, hits: dict[str, int]) -> None:
        self.net, self.url, self.agent, self.db, self.hits = net, url, agent, db, hits

    def wallet(self) -> Wallet:
        return Wallet.from_key(self.net.info.payer_key, chains={self.net.info.network: self.net.chain})


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def env(tmp_path_factory: pytest.TempPathFactory):
    net = await new_devnet("embedded")
    fac = Facilitator([facilitator_for(net)])
    db = tmp_path_factory.mktemp("agent") / "seller.db"
    hits: dict[str, int] = {}

    async def content(request: Request) -> JSONResponse:
        hits[request.url.path] = hits.get(request.url.path, 0) + 1
        p = request.scope.get("paywire.payment")
        return JSONResponse({"identity": getattr(p, "identity", None)})

    holder: dict[str, AgentKey] = {}

    async def serve_directory(_: Request) -> Response:
        return JSONResponse(directory([holder["key"]]), media_type="application/http-message-signatures-directory+json")

    agent_app = Starlette(routes=[Route(DIRECTORY_PATH, serve_directory)])
    async with serve_asgi(agent_app) as agent_url:
        holder["key"] = key = AgentKey.generate(agent_url)
        routes = [PaidRoute("/agents-only", (offer(net, CENT),), identity="agent-sig"),
                  PaidRoute("/anyone", (offer(net, CENT),), identity="required")]
        mw = PaymentMiddleware(Starlette(routes=[Route("/{p:path}", content)]), routes, LocalFacilitatorClient(fac),
                               store=f"sqlite:///{db}", agent_directories_private=True)
        async with serve_asgi(mw) as url:
            yield Env(net, url, key, db, hits)
    await close_devnet(net)


def reason(r: httpx.Response) -> str:
    return str(decode_header(r.headers["payment-required"]).get("error"))


@in_module_loop
async def test_signed_agent_pays_and_its_did_is_in_the_ledger(env: Env) -> None:
    before = await balance(env.net, env.net.payee.address)
    async with x402_client(env.wallet(), Policy(assets=[env.net.asset]),
                           config=BuyerConfig(agent_key=env.agent)) as client:
        r = await client.get(env.url + "/agents-only")
    assert r.status_code == 200, f"a signed agent's payment failed: {r.status_code} {r.text}"
    assert r.json()["identity"] == env.agent.did, "the handler did not see the agent's did:key"
    assert await balance(env.net, env.net.payee.address) == before + CENT, "the payment did not move once"
    store = PaymentStore(open_database(f"sqlite:///{env.db}"))
    try:
        rows = [x for x in await store.sales() if x.route == "* /agents-only" and x.state == "served"]
    finally:
        await store.aclose()
    assert rows and rows[0].identity == env.agent.did, "the ledger row does not carry the agent's DID"


@in_module_loop
async def test_unsigned_payment_is_refused_before_money_moves(env: Env) -> None:
    before, hits = await balance(env.net, env.net.payee.address), env.hits.get("/agents-only", 0)
    async with x402_client(env.wallet(), Policy(assets=[env.net.asset])) as client:
        with pytest.raises(PaymentRejected) as info:
            await client.get(env.url + "/agents-only")
    assert "identity_required" in str(info.value), f"the refusal does not say why: {info.value}"
    assert await balance(env.net, env.net.payee.address) == before, "money moved for an unsigned payment"
    assert env.hits.get("/agents-only", 0) == hits, "the handler ran"


@in_module_loop
async def test_required_route_takes_an_agent_signature_instead_of_a_sign_in(env: Env) -> None:
    async with x402_client(env.wallet(), Policy(assets=[env.net.asset]),
                           config=BuyerConfig(agent_key=env.agent, sign_in=False)) as client:
        r = await client.get(env.url + "/anyone")
    assert r.status_code == 200 and r.json()["identity"] == env.agent.did, f"{r.status_code} {r.text}"


@in_module_loop
async def test_replayed_signature_is_refused(env: Env) -> None:
    headers = env.agent.sign("GET", env.url + "/agents-only", {}, time.time())
    async with httpx.AsyncClient(timeout=60) as c:
        first = await c.get(env.url + "/agents-only", headers=headers)
        again = await c.get(env.url + "/agents-only", headers=headers)
    assert first.status_code == 402 and reason(first) == "Payment required", f"first use: {reason(first)}"
    assert again.status_code == 402 and reason(again).startswith("agent_signature_replayed"), reason(again)


@in_module_loop
async def test_signature_for_another_path_is_refused(env: Env) -> None:
    headers = env.agent.sign("GET", env.url + "/anyone", {}, time.time())
    async with httpx.AsyncClient(timeout=60) as c:
        r = await c.get(env.url + "/agents-only", headers=headers)
    assert r.status_code == 402 and reason(r).startswith("invalid_agent_signature"), reason(r)


@in_module_loop
async def test_unknown_key_is_refused(env: Env) -> None:
    stranger = AgentKey.generate(env.agent.agent)  # claims the agent's directory, signs with another key
    headers = stranger.sign("GET", env.url + "/agents-only", {}, time.time())
    async with httpx.AsyncClient(timeout=60) as c:
        r = await c.get(env.url + "/agents-only", headers=headers)
    assert r.status_code == 402 and reason(r).startswith("agent_key_unknown"), reason(r)


@in_module_loop
async def test_directory_on_loopback_is_refused_without_dev_mode(env: Env, tmp_path: Path) -> None:
    """The same agent against a seller in production mode: its directory on 127.0.0.1 is never fetched."""
    fac = Facilitator([facilitator_for(env.net)])
    mw = PaymentMiddleware(Starlette(routes=[Route("/{p:path}", lambda r: JSONResponse({}))]),
                           [PaidRoute("/x", (offer(env.net, CENT),), identity="agent-sig")],
                           LocalFacilitatorClient(fac), store=f"sqlite:///{tmp_path / 's.db'}")
    async with serve_asgi(mw) as url:
        headers = env.agent.sign("GET", url + "/x", {}, time.time())
        async with httpx.AsyncClient(timeout=60) as c:
            r = await c.get(url + "/x", headers=headers)
    assert r.status_code == 402 and reason(r).startswith("agent_directory_refused"), reason(r)


def test_cli_writes_the_directory_and_a_private_key(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from paywire.cli.main import app

    out = CliRunner().invoke(app, ["agent", "keys", "--agent", "https://bot.example", "--out", str(tmp_path)])
    assert out.exit_code == 0, out.output
    doc = json.loads((tmp_path / DIRECTORY_PATH.lstrip("/")).read_text())
    key = AgentKey.from_private_jwk(json.loads((tmp_path / "agent-key.json").read_text()))
    assert doc == directory([key]), "the directory does not hold the written key"
    assert (tmp_path / "agent-key.json").stat().st_mode & 0o077 == 0, "the private key is readable by others"
