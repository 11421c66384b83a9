"""Sign-In With Solana (x402 ``sign-in-with-x`` on ``solana:`` chains): our seller, our buyer, the official SDK.

What a user sees: a route configured with ``sign_in_chains=(solana:…,)`` advertises an ``ed25519`` chain in its
402; a Solana account that signs in (with our buyer or the official x402 2.25.0 client) is served within its
free quota as ``did:pkh:solana:<genesis ref>:<address>`` and no money moves; a replayed, misdirected, stale,
wrong-chain or forged sign-in gets a 402 that says why. Signatures are real Ed25519 (``cryptography`` on our
side, PyNaCl on the SDK's).
"""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import httpx
import pytest
import pytest_asyncio
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from paywire.client import BuyerConfig, Policy, x402_client
from paywire.errors import ConfigError
from paywire.facilitator.client import LocalFacilitatorClient
from paywire.facilitator.core import Facilitator
from paywire.identity.siwe import SiweError
from paywire.identity.siws import SolanaKey, parse_siws_message, siws_of
from paywire.identity.siwx import (
    SIGN_IN_WITH_X,
    SiwxFailure,
    SiwxIssuer,
    SiwxProof,
    answer_challenge,
    encode_proof,
)
from paywire.server.asgi import PaymentMiddleware
from paywire.server.core import PaidRoute
from paywire.serving import serve_asgi
from paywire.wallet import Wallet
from paywire.x402.codec import decode_header
from paywire.x402.networks import SOLANA_DEVNET, SOLANA_MAINNET
from tests.helpers import close_devnet, facilitator_for, new_devnet
from tests.test_buyer_support import CENT, balance, offer

pytestmark = pytest.mark.asyncio(loop_scope="module")
DEVNET_REF = SOLANA_DEVNET.split(":")[1]


class Env:
    def __init__(self, net: Any, url: str, hits: dict[str, int]) -> None:
        self.net, self.url, self.hits = net, url, hits

    def wallet(self, solana: SolanaKey | None = None) -> Wallet:
        return Wallet.from_key(self.net.info.payer_key, chains={self.net.info.network: self.net.chain}, solana=solana)


def app(hits: dict[str, int]) -> Starlette:
    async def handler(request: Request) -> JSONResponse:
        hits[request.url.path] = hits.get(request.url.path, 0) + 1
        p = request.scope.get("paywire.payment")
        return JSONResponse({"identity": getattr(p, "identity", None)})

    return Starlette(routes=[Route("/{path:path}", handler)])


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def env(tmp_path_factory: pytest.TempPathFactory):
    net = await new_devnet("embedded")
    db_path: Path = tmp_path_factory.mktemp("siws") / "seller.db"
    fac = Facilitator([facilitator_for(net, store=f"sqlite:///{db_path.parent / 'settlements.db'}")])
    routes = [
        PaidRoute("/sol", (offer(net, CENT),), free_quota=(100, 3600), sign_in_chains=(SOLANA_DEVNET,)),
        PaidRoute("/both", (offer(net, CENT),), free_quota=(100, 3600),
                  sign_in_chains=(net.info.network, SOLANA_DEVNET)),
        PaidRoute("/evm", (offer(net, CENT),), free_quota=(100, 3600)),
    ]
    hits: dict[str, int] = {}
    mw = PaymentMiddleware(app(hits), routes, LocalFacilitatorClient(fac), store=f"sqlite:///{db_path}",
                           siwx_secret=b"s" * 32)
    async with serve_asgi(mw) as url:
        yield Env(net, url, hits)
    await close_devnet(net)


async def challenge(url: str) -> dict[str, Any]:
    async with httpx.AsyncClient(timeout=60) as c:
        r = await c.get(url)
    assert r.status_code == 402, f"expected a 402 challenge, got {r.status_code}"
    ext = decode_header(r.headers["payment-required"]).get("extensions") or {}
    assert SIGN_IN_WITH_X in ext, "the 402 does not advertise sign-in-with-x"
    return dict(ext[SIGN_IN_WITH_X])


async def solana_proof(url: str, key: SolanaKey, *, tamper: dict[str, Any] | None = None,
                       signer: SolanaKey | None = None) -> str:
    """Answer ``url``'s sign-in challenge as ``key`` on its Solana chain (``tamper``: fields changed before
    signing; ``signer``: another key signs)."""
    ext = await challenge(url)
    payload, text = answer_challenge(ext, url, key.address, SOLANA_DEVNET)
    if tamper:
        payload.update(tamper)
        text = siws_of(payload).text()
    return encode_proof(payload, (signer or key).sign_message(text.encode()))


async def get(url: str, header: str) -> httpx.Response:
    async with httpx.AsyncClient(timeout=60) as c:
        return await c.get(url, headers={"SIGN-IN-WITH-X": header})


def error_of(r: httpx.Response) -> str:
    return str(decode_header(r.headers["payment-required"]).get("error"))


def did_of(key: SolanaKey) -> str:
    return f"did:pkh:solana:{DEVNET_REF}:{key.address}"


# ------------------------------------------------------------------------------------------------ seller


async def test_402_advertises_the_routes_solana_chain(env: Env) -> None:
    sol, both, evm = [await challenge(env.url + p) for p in ("/sol", "/both", "/evm")]
    assert sol["supportedChains"] == [{"chainId": SOLANA_DEVNET, "type": "ed25519"}], sol["supportedChains"]
    assert both["supportedChains"] == [{"chainId": env.net.info.network, "type": "eip191"},
                                       {"chainId": SOLANA_DEVNET, "type": "ed25519"}], both["supportedChains"]
    assert evm["supportedChains"] == [{"chainId": env.net.info.network, "type": "eip191"}], "a plain route changed"


async def test_solana_sign_in_is_served_as_its_did_without_money_moving(env: Env) -> None:
    key = SolanaKey.generate()
    payee, hits = env.net.payee.address, env.hits.get("/sol", 0)
    before = await balance(env.net, payee)
    r = await get(env.url + "/sol", await solana_proof(env.url + "/sol", key))
    assert r.status_code == 200, f"a valid Solana sign-in was refused: {r.status_code} {error_of(r)}"
    assert r.json()["identity"] == did_of(key), f"wrong identity: {r.json()}"
    assert env.hits["/sol"] == hits + 1, "the handler did not run once"
    assert await balance(env.net, payee) == before, "money moved for a free sign-in"


async def test_reused_solana_nonce_is_refused(env: Env) -> None:
    proof = await solana_proof(env.url + "/sol", SolanaKey.generate())
    assert (await get(env.url + "/sol", proof)).status_code == 200, "the first use failed"
    again = await get(env.url + "/sol", proof)
    assert again.status_code == 402, "a replayed Solana sign-in was served"
    assert error_of(again).startswith("invalid_siwx_nonce_used"), f"wrong reason: {error_of(again)}"


async def test_solana_sign_in_for_another_domain_is_refused(env: Env) -> None:
    proof = await solana_proof(env.url + "/sol", SolanaKey.generate(), tamper={"domain": "evil.example"})
    r = await get(env.url + "/sol", proof)
    assert r.status_code == 402, "a sign-in for another domain was served"
    assert error_of(r).startswith("invalid_siwx_domain_mismatch"), f"wrong reason: {error_of(r)}"


@pytest.mark.parametrize("tamper", [{"chainId": SOLANA_MAINNET}, {"type": "eip191"}])
async def test_solana_sign_in_on_another_chain_is_refused(env: Env, tamper: dict[str, str]) -> None:
    key = SolanaKey.generate()
    ext = await challenge(env.url + "/sol")
    payload, _ = answer_challenge(ext, env.url + "/sol", key.address, SOLANA_DEVNET)
    payload.update(tamper)
    r = await get(env.url + "/sol", encode_proof(payload, key.sign_message(siws_of(payload).text().encode())))
    assert r.status_code == 402, f"a sign-in with {tamper} was served"
    assert error_of(r).startswith("invalid_siwx_unsupported_chain"), f"wrong reason: {error_of(r)}"


async def test_evm_only_route_refuses_a_solana_sign_in(env: Env) -> None:
    key = SolanaKey.generate()
    ext = await challenge(env.url + "/evm")
    payload = {**ext["info"], "address": key.address, "chainId": SOLANA_DEVNET, "type": "ed25519"}
    text = siws_of(payload).text()
    r = await get(env.url + "/evm", encode_proof(payload, key.sign_message(text.encode())))
    assert r.status_code == 402 and error_of(r).startswith("invalid_siwx_unsupported_chain"), error_of(r)


async def test_someone_elses_solana_signature_is_refused(env: Env) -> None:
    victim = SolanaKey.generate()
    r = await get(env.url + "/sol", await solana_proof(env.url + "/sol", victim, signer=SolanaKey.generate()))
    assert r.status_code == 402, "a forged Solana sign-in was served"
    assert error_of(r).startswith("invalid_siwx_signature"), f"wrong reason: {error_of(r)}"


async def test_signature_over_another_text_is_refused(env: Env) -> None:
    """The statement changed after signing: the seller rebuilds the text and the signature no longer fits."""
    key = SolanaKey.generate()
    ext = await challenge(env.url + "/sol")
    payload, text = answer_challenge(ext, env.url + "/sol", key.address, SOLANA_DEVNET)
    header = encode_proof({**payload, "statement": "Pay me twice"}, key.sign_message(text.encode()))
    r = await get(env.url + "/sol", header)
    assert r.status_code == 402 and error_of(r).startswith("invalid_siwx_signature"), error_of(r)


@pytest.mark.parametrize("signature", ["0x" + "11" * 64, "1" * 10, "0OIl" * 22, 5])
async def test_malformed_solana_signature_is_a_402(env: Env, signature: object) -> None:
    key = SolanaKey.generate()
    ext = await challenge(env.url + "/sol")
    payload, _ = answer_challenge(ext, env.url + "/sol", key.address, SOLANA_DEVNET)
    header = base64.b64encode(json.dumps({**payload, "signature": signature}).encode()).decode()
    r = await get(env.url + "/sol", header)
    assert r.status_code == 402, f"a malformed signature got {r.status_code}"
    assert error_of(r).startswith("invalid_siwx_malformed_signature"), f"wrong reason: {error_of(r)}"


@pytest.mark.parametrize("address", ["0x" + "ab" * 20, "z" * 44, "1" * 31 + "0"])
async def test_non_solana_address_is_a_402(env: Env, address: str) -> None:
    key = SolanaKey.generate()
    ext = await challenge(env.url + "/sol")
    payload, _ = answer_challenge(ext, env.url + "/sol", key.address, SOLANA_DEVNET)
    header = encode_proof({**payload, "address": address}, key.sign_message(b"x"))
    r = await get(env.url + "/sol", header)
    assert r.status_code == 402 and error_of(r).startswith("invalid_siwx_payload"), error_of(r)


async def test_expired_solana_sign_in_is_refused_and_fresh_one_accepted() -> None:
    issuer, url, now = SiwxIssuer(b"k" * 32), "https://api.example.com/r", 1_800_000_000.0
    key = SolanaKey.generate()
    ext = issuer.declaration(url, [SOLANA_DEVNET], now)
    payload, text = answer_challenge(ext, url, key.address, SOLANA_DEVNET)
    header = encode_proof(payload, key.sign_message(text.encode()))
    fresh = issuer.check(header, url, [SOLANA_DEVNET], now + 10)
    assert isinstance(fresh, SiwxProof) and fresh.identity.did == did_of(key), f"a fresh sign-in: {fresh}"
    late = issuer.check(header, url, [SOLANA_DEVNET], now + issuer.ttl + issuer.skew + 1)
    assert isinstance(late, SiwxFailure) and late.code == "invalid_siwx_expired", f"an expired sign-in: {late}"
    early = issuer.check(header, url, [SOLANA_DEVNET], now - issuer.skew - 60)
    assert isinstance(early, SiwxFailure) and early.code == "invalid_siwx_issued_at_in_future", early


@pytest.mark.parametrize("chains", [("solana:not-base58!",), ("solana:",), "solana:" + DEVNET_REF, (),
                                    ("eip155:base",)])
async def test_bad_sign_in_chains_are_a_config_error(chains: Any) -> None:
    with pytest.raises(ConfigError, match="sign_in_chains"):
        PaidRoute("/x", price="$0.01", sign_in_chains=chains)


# ------------------------------------------------------------------------------------------------ message grammar


async def test_siws_message_parses_back_strictly() -> None:
    key = SolanaKey.generate()
    ext = SiwxIssuer(b"k" * 32).declaration("https://api.example.com/r", [SOLANA_DEVNET], 1_800_000_000.0)
    _, text = answer_challenge(ext, "https://api.example.com/r", key.address, SOLANA_DEVNET)
    msg = parse_siws_message(text)
    assert (msg.address, msg.chain_ref, msg.domain) == (key.address, DEVNET_REF, "api.example.com")
    assert msg.text() == text
    lines = text.split("\n")
    for bad in (text + "\nExtra: 1", text.replace("Version: 1", "Version: 2"),
                "\n".join([lines[0].replace("Solana", "Ethereum"), *lines[1:]]),
                "\n".join([lines[0], "0x" + "ab" * 20, *lines[2:]]), text.replace("\n", "\r\n")):
        with pytest.raises(SiweError):
            parse_siws_message(bad)


# ------------------------------------------------------------------------------------------------ our buyer


async def test_buyer_with_a_solana_key_answers_a_solana_only_challenge(env: Env) -> None:
    key = SolanaKey.generate()
    payee = env.net.payee.address
    before = await balance(env.net, payee)
    async with x402_client(env.wallet(solana=key), Policy(assets=[env.net.asset])) as client:
        r = await client.get(env.url + "/sol")
    assert r.status_code == 200, f"our buyer did not sign in with Solana: {r.status_code}"
    assert r.json()["identity"] == did_of(key), f"served as {r.json()['identity']}"
    assert await balance(env.net, payee) == before, "the buyer paid instead of signing in"


async def test_buyer_without_a_solana_key_pays_instead(env: Env) -> None:
    payee = env.net.payee.address
    before = await balance(env.net, payee)
    async with x402_client(env.wallet(), Policy(assets=[env.net.asset])) as client:
        r = await client.get(env.url + "/sol")
    assert r.status_code == 200, f"the payment failed: {r.status_code}"
    assert await balance(env.net, payee) == before + CENT, "no payment was made without a sign-in"


# ------------------------------------------------------------------------------------------------ interop


@pytest.mark.interop
async def test_official_sdk_solana_client_signs_in_to_our_seller(env: Env) -> None:
    """x402 2.25.0's create_siwx_payload + encode_siwx_header, with a PyNaCl Ed25519 key, answer our 402."""
    from nacl.signing import SigningKey
    from x402.extensions.sign_in_with_x import create_siwx_payload, encode_siwx_header
    from x402.extensions.sign_in_with_x.solana import encode_base58

    class NaclSigner:
        def __init__(self) -> None:
            self.key = SigningKey.generate()
            self.address = encode_base58(bytes(self.key.verify_key))

        def sign_message(self, message: bytes) -> bytes:
            return bytes(self.key.sign(message).signature)

    signer = NaclSigner()
    ext = await challenge(env.url + "/sol")
    chain = ext["supportedChains"][0]
    payload = await create_siwx_payload({**ext["info"], "chainId": chain["chainId"], "type": chain["type"]},
                                        signer, env.url + "/sol")
    r = await get(env.url + "/sol", encode_siwx_header(payload))
    assert r.status_code == 200, f"our seller refused the official client's Solana sign-in: {error_of(r)}"
    assert r.json()["identity"] == f"did:pkh:solana:{DEVNET_REF}:{signer.address}", r.json()
    again = await get(env.url + "/sol", encode_siwx_header(payload))
    assert again.status_code == 402 and error_of(again).startswith("invalid_siwx_nonce_used"), error_of(again)


@pytest.mark.interop
async def test_our_buyers_solana_sign_in_verifies_with_the_official_sdk(env: Env) -> None:
    """The header our Buyer sends passes x402 2.25.0's validate_siwx_message and verify_siwx_signature; a header
    whose signature is another key's does not."""
    from x402.extensions.sign_in_with_x import parse_siwx_header, validate_siwx_message, verify_siwx_signature

    from paywire.client import Buyer
    from paywire.client.httpx_transport import PaymentTransport

    sent: list[str] = []

    class Spy(httpx.AsyncBaseTransport):
        def __init__(self) -> None:
            self.inner = httpx.AsyncHTTPTransport()

        async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
            if "sign-in-with-x" in request.headers:
                sent.append(request.headers["sign-in-with-x"])
            return await self.inner.handle_async_request(request)

    key = SolanaKey.generate()
    buyer = Buyer(env.wallet(solana=key), Policy(assets=[env.net.asset]), config=BuyerConfig())
    async with httpx.AsyncClient(transport=PaymentTransport(buyer, Spy()), timeout=60) as c:
        assert (await c.get(env.url + "/sol")).status_code == 200
    assert sent, "our buyer sent no sign-in"
    payload = parse_siwx_header(sent[0])
    checked = await validate_siwx_message(payload, env.url)
    assert checked.is_valid, f"the official SDK refused our message: {checked.invalid_reason}"
    verdict = await verify_siwx_signature(payload)
    assert verdict.is_valid, f"the official SDK refused our signature: {verdict.invalid_reason}"
    assert verdict.payer == key.address, "the official SDK read another payer"
    forged = await solana_proof(env.url + "/sol", key, signer=SolanaKey.generate())
    bad = await verify_siwx_signature(parse_siwx_header(forged))
    assert not bad.is_valid and bad.invalid_reason == "invalid_siwx_signature", "the SDK accepted a forged one"
