"""Sign-In-With-X (x402 ``sign-in-with-x``) end to end: our seller, our buyer, the embedded chain, real SQLite.

What a user sees: a payer who paid a route with ``access_for`` gets it again by signing in (no second transfer,
balances asserted); a forged, stale, replayed or misdirected sign-in gets a 402 that says why; a route with
``identity="siwx"`` refuses a paid request without a sign-in before any money moves; the payment's ledger row
names the identity (``did:pkh``); unpaid requests write no sign-in state.
"""

from __future__ import annotations

import asyncio
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

from paywire.client import Buyer, BuyerConfig, PaymentRefused, PaymentRejected, Policy, x402_client
from paywire.evm.signer import LocalSigner
from paywire.facilitator.client import LocalFacilitatorClient
from paywire.facilitator.core import Facilitator
from paywire.identity.siwe import personal_sign_digest
from paywire.identity.siwx import SIGN_IN_WITH_X, answer_challenge, encode_proof
from paywire.server.asgi import PaymentMiddleware
from paywire.server.core import PaidRoute
from paywire.serving import serve_asgi
from paywire.store import open_database
from paywire.store.identity import IdentityStore
from paywire.store.payments import PaymentStore
from paywire.wallet import Wallet
from paywire.x402.codec import decode_header
from tests.helpers import close_devnet, facilitator_for, new_devnet
from tests.test_buyer_support import CENT, balance, offer, transfers_to

pytestmark = pytest.mark.asyncio(loop_scope="module")


class Env:
    def __init__(self, net: Any, url: str, db_path: Path, hits: dict[str, int]) -> None:
        self.net, self.url, self.db_path, self.hits = net, url, db_path, hits
        self.fac: Any = None

    def wallet(self, key: str | bytes | None = None) -> Wallet:
        return Wallet.from_key(key or self.net.info.payer_key, chains={self.net.info.network: self.net.chain})

    def policy(self) -> Policy:
        return Policy(assets=[self.net.asset])

    async def rows(self) -> Any:
        store = PaymentStore(open_database(f"sqlite:///{self.db_path}"))
        try:
            return await store.sales(limit=100)
        finally:
            await store.aclose()

    async def nonce_rows(self) -> int:
        store = IdentityStore(open_database(f"sqlite:///{self.db_path}"))
        try:
            return await store.count()
        finally:
            await store.aclose()


def app(hits: dict[str, int]) -> Starlette:
    async def handler(request: Request) -> JSONResponse:
        hits[request.url.path] = hits.get(request.url.path, 0) + 1
        p = request.scope.get("paywire.payment")
        return JSONResponse({"content": "report", "reaccess": getattr(p, "reaccess", None),
                             "identity": getattr(p, "identity", None), "record": getattr(p, "record_id", None)})

    return Starlette(routes=[Route("/{path:path}", handler)])


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def env(tmp_path_factory: pytest.TempPathFactory):
    net = await new_devnet("embedded")
    db_path = tmp_path_factory.mktemp("siwx") / "seller.db"
    fac = Facilitator([facilitator_for(net, store=f"sqlite:///{db_path.parent / 'settlements.db'}")])
    routes = [
        PaidRoute("/report", (offer(net, CENT),), access_for=3600),
        PaidRoute("/items/{id}", (offer(net, CENT),), access_for=3600),
        PaidRoute("/signed", (offer(net, CENT),), identity="siwx"),
        PaidRoute("/plain", (offer(net, CENT),)),
        PaidRoute("/free", (offer(net, CENT),), free_quota=(100, 3600)),
    ]
    hits: dict[str, int] = {}
    mw = PaymentMiddleware(app(hits), routes, LocalFacilitatorClient(fac), store=f"sqlite:///{db_path}",
                           siwx_secret=b"s" * 32, siwx_chains={net.info.network: net.chain})
    async with serve_asgi(mw) as url:
        e = Env(net, url, db_path, hits)
        e.fac = fac
        yield e
    await close_devnet(net)


def extension_of(r: httpx.Response) -> dict[str, Any]:
    ext = decode_header(r.headers["payment-required"]).get("extensions") or {}
    assert SIGN_IN_WITH_X in ext, "the 402 does not advertise sign-in-with-x"
    return dict(ext[SIGN_IN_WITH_X])


async def proof_for(url: str, signer: LocalSigner, *, tamper: dict[str, Any] | None = None,
                    network: str | None = None) -> str:
    """Ask ``url`` for a 402 and answer its sign-in challenge as ``signer`` (fields in ``tamper`` changed
    before signing)."""
    async with httpx.AsyncClient(timeout=60) as c:
        r = await c.get(url)
    assert r.status_code == 402, f"expected a 402 challenge, got {r.status_code}"
    ext = extension_of(r)
    chain = network or ext["supportedChains"][0]["chainId"]
    payload, text = answer_challenge(ext, url, signer.address, chain)
    if tamper:
        from paywire.identity.siwx import _message_of

        payload.update(tamper)
        text = _message_of(payload).text()
    return encode_proof(payload, await signer.sign_digest(personal_sign_digest(text)))


async def get(url: str, headers: dict[str, str]) -> httpx.Response:
    async with httpx.AsyncClient(timeout=60) as c:
        return await c.get(url, headers=headers)


def error_of(r: httpx.Response) -> str:
    return str(decode_header(r.headers["payment-required"]).get("error"))


# ------------------------------------------------------------------------------------------------ advertising


async def test_402_advertises_sign_in_with_a_fresh_nonce(env: Env) -> None:
    async with httpx.AsyncClient(timeout=60) as c:
        a, b = await c.get(env.url + "/report"), await c.get(env.url + "/report")
    ea, eb = extension_of(a), extension_of(b)
    assert ea["info"]["domain"] == env.url.split("://")[1], "the challenge names another domain"
    assert ea["info"]["uri"] == env.url + "/report", "the challenge names another resource"
    assert ea["supportedChains"] == [{"chainId": env.net.info.network, "type": "eip191"}], "wrong chains"
    assert len(ea["info"]["nonce"]) == 32, "the nonce is not 32 hex characters"
    assert ea["info"]["nonce"] != eb["info"]["nonce"], "two 402s carried the same nonce"


async def test_unpaid_requests_write_no_sign_in_state(env: Env) -> None:
    before = await env.nonce_rows()
    async with httpx.AsyncClient(timeout=60) as c:
        for _ in range(20):
            r = await c.get(env.url + "/report")
            assert r.status_code == 402
    assert await env.nonce_rows() == before, "unpaid requests grew the nonce table"


# ------------------------------------------------------------------------------------------------ re-access


async def test_payer_who_lost_the_response_signs_in_and_is_not_charged_again(env: Env) -> None:
    """An agent pays once, loses the response; a new buyer process with the same wallet signs in and gets it."""
    payee = env.net.payee.address
    before, transfers = await balance(env.net, payee), await transfers_to(env.net, payee)
    async with x402_client(env.wallet(), env.policy()) as client:
        first = await client.get(env.url + "/report")
    assert first.status_code == 200, f"the first, paid request failed: {first.status_code} {first.text}"
    assert await balance(env.net, payee) == before + CENT, "the first request did not pay exactly once"
    async with x402_client(env.wallet(), env.policy()) as client:  # no memory of the first one
        again = await client.get(env.url + "/report")
    assert again.status_code == 200, f"re-access failed: {again.status_code} {again.text}"
    assert again.json()["reaccess"] is True, "the handler was not told this is a re-access"
    assert again.json()["record"] == first.json()["record"], "re-access is not tied to the first payment"
    assert "payment-response" not in again.headers, "a re-access carried a settlement receipt"
    assert await balance(env.net, payee) == before + CENT, "the re-access moved money"
    assert await transfers_to(env.net, payee) == transfers + 1, "a second transfer happened"
    assert env.hits["/report"] >= 2, "the handler did not run for the re-access"


async def test_sign_in_without_a_payment_gets_402_saying_so(env: Env) -> None:
    stranger = LocalSigner.generate()
    r = await get(env.url + "/report", {"SIGN-IN-WITH-X": await proof_for(env.url + "/report", stranger)})
    assert r.status_code == 402, "a stranger's sign-in was served"
    assert error_of(r).startswith("siwx_not_paid"), f"wrong reason: {error_of(r)}"


async def test_payment_for_one_item_does_not_open_another(env: Env) -> None:
    async with x402_client(env.wallet(), env.policy()) as client:
        assert (await client.get(env.url + "/items/1")).status_code == 200
    signer = LocalSigner(env.net.info.payer_key)
    r = await get(env.url + "/items/2", {"SIGN-IN-WITH-X": await proof_for(env.url + "/items/2", signer)})
    assert r.status_code == 402, "a payment for /items/1 opened /items/2"


# ------------------------------------------------------------------------------------------------ refusals


async def _paid_payer_proof(env: Env, **kw: Any) -> str:
    async with x402_client(env.wallet(), env.policy(), config=BuyerConfig(sign_in=False)) as client:
        assert (await client.get(env.url + "/report")).status_code == 200
    return await proof_for(env.url + "/report", LocalSigner(env.net.info.payer_key), **kw)


async def test_reused_nonce_is_refused(env: Env) -> None:
    proof = await _paid_payer_proof(env)
    ok = await get(env.url + "/report", {"SIGN-IN-WITH-X": proof})
    assert ok.status_code == 200, f"the first use of the sign-in failed: {ok.status_code}"
    again = await get(env.url + "/report", {"SIGN-IN-WITH-X": proof})
    assert again.status_code == 402, "a replayed sign-in was served"
    assert error_of(again).startswith("invalid_siwx_nonce_used"), f"wrong reason: {error_of(again)}"


async def test_wrong_domain_is_refused(env: Env) -> None:
    proof = await _paid_payer_proof(env, tamper={"domain": "evil.example"})
    r = await get(env.url + "/report", {"SIGN-IN-WITH-X": proof})
    assert r.status_code == 402, "a sign-in for another domain was served"
    assert error_of(r).startswith("invalid_siwx_domain_mismatch"), f"wrong reason: {error_of(r)}"


async def test_wrong_chain_is_refused(env: Env) -> None:
    proof = await _paid_payer_proof(env, tamper={"chainId": "eip155:1"})
    r = await get(env.url + "/report", {"SIGN-IN-WITH-X": proof})
    assert r.status_code == 402, "a sign-in on another chain was served"
    assert error_of(r).startswith("invalid_siwx_unsupported_chain"), f"wrong reason: {error_of(r)}"


async def test_someone_elses_signature_is_refused(env: Env) -> None:
    """The payer's address in the message, a stranger's signature."""
    await _paid_payer_proof(env)
    stranger = LocalSigner.generate()
    forged = await proof_for(env.url + "/report", stranger, tamper={"address": env.net.payer.address})
    r = await get(env.url + "/report", {"SIGN-IN-WITH-X": forged})
    assert r.status_code == 402, "a forged sign-in was served"
    assert error_of(r).startswith("invalid_siwx_signature"), f"wrong reason: {error_of(r)}"


async def test_self_made_nonce_is_refused(env: Env) -> None:
    proof = await _paid_payer_proof(env, tamper={"nonce": "a" * 32})
    r = await get(env.url + "/report", {"SIGN-IN-WITH-X": proof})
    assert r.status_code == 402, "a sign-in with a nonce we never issued was served"
    assert error_of(r).startswith("invalid_siwx_nonce"), f"wrong reason: {error_of(r)}"


@pytest.mark.parametrize("header", ["%%%", base64.b64encode(b"[1,2]").decode(), "x" * 9000,
                                    base64.b64encode(json.dumps({"domain": 5}).encode()).decode()])
async def test_garbage_header_is_a_402_not_a_500(env: Env, header: str) -> None:
    r = await get(env.url + "/report", {"SIGN-IN-WITH-X": header})
    assert r.status_code == 402, f"a garbage sign-in header got {r.status_code}"


# ------------------------------------------------------------------------------------------------ contract wallets


class WalletSigner:
    """Signs for a TestSmartWallet (EIP-1271) with its owner's key."""

    def __init__(self, wallet: str, owner: LocalSigner) -> None:
        self.address, self.owner = wallet, owner

    async def sign_digest(self, digest: bytes) -> bytes:
        return await self.owner.sign_digest(digest)


async def _smart_wallet(env: Env, owner: LocalSigner) -> str:
    from eth_abi import encode

    from paywire.chain.tx import TxSender
    from paywire.evm.artifacts import load_artifact

    art = load_artifact("TestSmartWallet")
    wallet = await TxSender(env.net.chain, env.net.deployer.private_key).deploy(
        art.bytecode, encode(["address"], [owner.address]))
    await env.net.mint(wallet, 10 * CENT)
    return wallet


async def test_contract_wallet_that_paid_signs_in_through_eip1271(env: Env) -> None:
    owner = LocalSigner.generate()
    wallet = await _smart_wallet(env, owner)
    async with x402_client(WalletSigner(wallet, owner), env.policy()) as client:
        assert (await client.get(env.url + "/report")).status_code == 200, "the contract wallet could not pay"
    assert await balance(env.net, wallet) == 9 * CENT, "the contract wallet did not pay exactly once"
    proof = await proof_for(env.url + "/report", WalletSigner(wallet, owner))  # type: ignore[arg-type]
    r = await get(env.url + "/report", {"SIGN-IN-WITH-X": proof})
    assert r.status_code == 200 and r.json()["reaccess"] is True, f"EIP-1271 sign-in failed: {r.status_code}"
    assert await balance(env.net, wallet) == 9 * CENT, "the re-access moved money"


async def test_contract_wallet_whose_eip1271_says_no_is_refused(env: Env) -> None:
    owner = LocalSigner.generate()
    wallet = await _smart_wallet(env, owner)
    proof = await proof_for(env.url + "/report", WalletSigner(wallet, LocalSigner.generate()))  # type: ignore[arg-type]
    r = await get(env.url + "/report", {"SIGN-IN-WITH-X": proof})
    assert r.status_code == 402, "a signature the wallet refuses was accepted"
    assert error_of(r).startswith("invalid_siwx_signature") and "isValidSignature" in error_of(r), error_of(r)


def _factory_code(wallet_code: bytes) -> bytes:
    """Creation code of a minimal CREATE2 factory: called with an owner (one word), it deploys ``wallet_code``
    with that owner as constructor argument, the owner word as salt, and returns the wallet's address."""
    from paywire.identity.erc6492 import assemble

    n = len(wallet_code)
    runtime = assemble((
        ("push2", n), ("push2", "end"), ("push1", 0), "CODECOPY",  # memory: the wallet's creation code
        ("push1", 0), "CALLDATALOAD", "DUP1", ("push2", n), "MSTORE",  # + the owner word (constructor argument)
        ("push2", n + 32), ("push1", 0), ("push1", 0), "CREATE2",  # create2(0, 0, n + 32, salt = owner word)
        ("push1", 0), "MSTORE", ("push1", 0x20), ("push1", 0), "RETURN", ("@", "end"))) + wallet_code
    m = len(runtime)
    init = assemble((("push2", m), ("push2", "end"), ("push1", 0), "CODECOPY", ("push2", m), ("push1", 0),
                     "RETURN", ("@", "end")))
    return init + runtime


class CounterfactualSigner:
    """Signs for a TestSmartWallet that is not deployed yet (ERC-6492), with its owner's key."""

    def __init__(self, factory: str, wallet_code: bytes, owner: LocalSigner, key: LocalSigner | None = None) -> None:
        from paywire.evm.crypto import address_bytes, keccak256, to_checksum

        self.factory, self.owner, self.key = factory, owner, key or owner
        self.salt = bytes(12) + address_bytes(owner.address)
        code_hash = keccak256(wallet_code + self.salt)
        self.address = to_checksum(keccak256(b"\xff" + address_bytes(factory) + self.salt + code_hash)[12:])

    async def sign_digest(self, digest: bytes) -> bytes:
        from paywire.identity.erc6492 import wrap

        return wrap(self.factory, self.salt, await self.key.sign_digest(digest))


async def test_undeployed_wallet_signs_in_through_erc6492_and_stays_undeployed(env: Env) -> None:
    """The universal-validator eth_call deploys the wallet inside the call only: the sign-in is accepted (a free
    request here), the wallet still has no code, no money moved; the owner's wrong key is refused."""
    from paywire.chain.tx import TxSender
    from paywire.evm.artifacts import load_artifact

    wallet_code = load_artifact("TestSmartWallet").bytecode
    factory = await TxSender(env.net.chain, env.net.deployer.private_key).deploy(_factory_code(wallet_code))
    owner = LocalSigner.generate()
    signer = CounterfactualSigner(factory, wallet_code, owner)
    assert await env.net.chain.get_code(signer.address) == b""
    before = await balance(env.net, env.net.payee.address)
    r = await get(env.url + "/free", {"SIGN-IN-WITH-X": await proof_for(env.url + "/free", signer)})  # type: ignore[arg-type]
    assert r.status_code == 200, f"the ERC-6492 sign-in was refused: {r.status_code} {error_of(r)}"
    assert r.json()["identity"].endswith(signer.address), r.json()
    assert await env.net.chain.get_code(signer.address) == b"", "the check deployed the wallet for real"
    assert await balance(env.net, env.net.payee.address) == before
    forged = CounterfactualSigner(factory, wallet_code, owner, key=LocalSigner.generate())
    r = await get(env.url + "/free", {"SIGN-IN-WITH-X": await proof_for(env.url + "/free", forged)})  # type: ignore[arg-type]
    assert r.status_code == 402 and error_of(r).startswith("invalid_siwx_signature"), error_of(r)
    assert "ERC-6492" in error_of(r)


# ------------------------------------------------------------------------------------------------ identity="siwx"


async def test_identity_route_refuses_an_unsigned_payment_before_money_moves(env: Env) -> None:
    payee = env.net.payee.address
    before, hits = await balance(env.net, payee), env.hits.get("/signed", 0)
    async with x402_client(env.wallet(), env.policy(), config=BuyerConfig(sign_in=False)) as client:
        with pytest.raises(PaymentRejected) as info:
            await client.get(env.url + "/signed")
    assert "identity_required" in str(info.value), f"the refusal does not say why: {info.value}"
    assert await balance(env.net, payee) == before, "money moved for a refused request"
    assert env.hits.get("/signed", 0) == hits, "the handler ran for a refused request"


async def test_identity_route_records_the_payers_did_in_all_three_ledgers(env: Env, tmp_path: Path) -> None:
    """Seller row, facilitator settlement row (named in the settle request) and buyer row carry the DID."""
    from paywire.store.settlements import settlement_id
    from paywire.store.spend import SpendLedger

    store = f"sqlite:///{tmp_path / 'buyer.db'}"
    async with x402_client(env.wallet(), env.policy(), store=store) as client:
        r = await client.get(env.url + "/signed")
    assert r.status_code == 200, f"a signed-in payment failed: {r.status_code} {r.text}"
    chain = env.net.info.network.split(":")[1]
    did = f"did:pkh:eip155:{chain}:{env.net.payer.address}"
    assert r.json()["identity"] == did, "the handler did not see the payer's DID"
    rows = [x for x in await env.rows() if x.route == "* /signed" and x.state == "served"]
    assert rows and rows[0].identity == did, "the seller's ledger row does not name the identity"
    ledger = SpendLedger(open_database(store), env.net.payer.address)
    try:
        mine = (await ledger.history())[0]
    finally:
        await ledger.db.aclose()
    assert mine.outcome == "paid" and mine.identity == did, "the buyer's ledger row does not name the identity"
    assert mine.nonce is not None
    settled = await env.fac.schemes[0].store.get(settlement_id(env.net.info.network, env.net.info.token,
                                                     env.net.payer.address, mine.nonce))
    assert settled is not None and settled.identity == did, "the facilitator's settlement row has no identity"


async def _pay_with_header(env: Env, payer: LocalSigner, url: str, extra: dict[str, str]) -> httpx.Response:
    """One x402 v2 payment by ``payer`` for ``url``, sent with ``extra`` headers (e.g. someone else's sign-in)."""
    from paywire.schemes.evm_exact import ExactEvmClient
    from paywire.x402.codec import decode_payment_required, encode_payment_payload
    from paywire.x402.models import PaymentPayload

    async with httpx.AsyncClient(timeout=60) as c:
        pr = decode_payment_required((await c.get(url)).headers["payment-required"])
        inner = await ExactEvmClient(payer).create_payload(pr.accepts[0])
        header = encode_payment_payload(PaymentPayload(accepted=pr.accepts[0], payload=inner, resource=pr.resource))
        return await c.get(url, headers={"PAYMENT-SIGNATURE": header, **extra})


async def test_payers_own_sign_in_writes_no_nonce_and_anothers_is_spent_once(env: Env) -> None:
    """A sign-in by the paying address needs no nonce row (a replay needs that address's payment); a sign-in by
    another address rides on a payment once: a second payment with it is refused before money moves."""
    async with httpx.AsyncClient(timeout=60) as c:
        assert (await c.get(env.url + "/signed")).status_code == 402  # the seller is up (its tables exist)
    other, payer = LocalSigner.generate(), LocalSigner.generate()
    await env.net.mint(payer.address, 10 * CENT)
    rows = await env.nonce_rows()
    own = await _pay_with_header(env, payer, env.url + "/signed",
                                 {"SIGN-IN-WITH-X": await proof_for(env.url + "/signed", payer)})
    assert own.status_code == 200 and own.json()["identity"].endswith(payer.address), own.text
    assert await env.nonce_rows() == rows, "the payer's own sign-in wrote a nonce row"
    proof = await proof_for(env.url + "/signed", other)
    first = await _pay_with_header(env, payer, env.url + "/signed", {"SIGN-IN-WITH-X": proof})
    assert first.status_code == 200 and first.json()["identity"].endswith(other.address), first.text
    assert await env.nonce_rows() == rows + 1, "another address's sign-in was not spent"
    second = await _pay_with_header(env, payer, env.url + "/signed", {"SIGN-IN-WITH-X": proof})
    assert second.status_code == 402 and error_of(second).startswith("invalid_siwx_nonce_used"), error_of(second)
    assert await balance(env.net, payer.address) == 8 * CENT, "the refused second payment moved money"


async def test_plain_route_is_unchanged(env: Env) -> None:
    async with httpx.AsyncClient(timeout=60) as c:
        r = await c.get(env.url + "/plain")
    assert SIGN_IN_WITH_X not in (decode_header(r.headers["payment-required"]).get("extensions") or {}), \
        "a route without sign-in advertises it"


async def test_buyer_that_may_not_use_the_chain_does_not_sign_in(env: Env) -> None:
    """Policy: a key is never used for a sign-in on a network the policy does not allow."""
    buyer = Buyer(env.wallet(), Policy(assets=[env.net.asset], allowed_networks=["eip155:1"]))
    seen: list[str] = []

    class Spy(httpx.AsyncBaseTransport):
        def __init__(self) -> None:
            self.inner = httpx.AsyncHTTPTransport()

        async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
            seen.extend(k for k in request.headers if k.lower() == "sign-in-with-x")
            return await self.inner.handle_async_request(request)

    from paywire.client.httpx_transport import PaymentTransport

    async with httpx.AsyncClient(transport=PaymentTransport(buyer, Spy()), timeout=60) as c:
        with pytest.raises(PaymentRefused):  # the policy refuses the payment too
            await c.get(env.url + "/report")
    assert seen == [], "the buyer signed in on a network its policy does not allow"


# ------------------------------------------------------------------------------------------------ interop


@pytest.mark.interop
async def test_official_sdk_client_signs_in_to_our_seller(env: Env) -> None:
    """x402 2.25.0's sign_in_with_x client (create_siwx_payload + encode_siwx_header) answers our 402; our seller
    serves the payer again with no second transfer."""
    from tests.python_peers import siwx_peer

    async with x402_client(env.wallet(), env.policy(), config=BuyerConfig(sign_in=False)) as client:
        assert (await client.get(env.url + "/report")).status_code == 200
    payee = env.net.payee.address
    before = await balance(env.net, payee)
    async with httpx.AsyncClient(timeout=60) as c:
        challenge = await c.get(env.url + "/report")
    header = siwx_peer("sign", extension=extension_of(challenge), url=env.url + "/report",
                       key=env.net.info.payer_key)["header"]
    r = await get(env.url + "/report", {"SIGN-IN-WITH-X": header})
    assert r.status_code == 200, f"our seller refused the official client's sign-in: {r.status_code} {error_of(r)}"
    assert r.json()["reaccess"] is True, "the official client's sign-in was not a re-access"
    assert await balance(env.net, payee) == before, "money moved for a sign-in"


@pytest.mark.interop
async def test_our_buyers_sign_in_verifies_with_the_official_sdk(env: Env) -> None:
    """The header our Buyer sends passes x402 2.25.0's validate_siwx_message and verify_siwx_signature."""
    from paywire.client.httpx_transport import PaymentTransport
    from tests.python_peers import siwx_peer

    sent: list[str] = []

    class Spy(httpx.AsyncBaseTransport):
        def __init__(self) -> None:
            self.inner = httpx.AsyncHTTPTransport()

        async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
            if "sign-in-with-x" in request.headers:
                sent.append(request.headers["sign-in-with-x"])
            return await self.inner.handle_async_request(request)

    buyer = Buyer(env.wallet(), env.policy())
    async with httpx.AsyncClient(transport=PaymentTransport(buyer, Spy()), timeout=60) as c:
        assert (await c.get(env.url + "/report")).status_code == 200
    assert sent, "our buyer sent no sign-in"
    verdict = siwx_peer("verify", header=sent[0], origin=env.url)
    assert verdict["valid"] is True, f"the official SDK refused our sign-in: {verdict['reason']}"
    assert verdict["payer"].lower() == env.net.payer.address.lower(), "the official SDK read another payer"


async def test_identity_example_runs() -> None:
    """examples/identity_agent.py, as its docstring says: one transfer for a paid and re-accessed report."""
    import os
    import subprocess
    import sys

    root = Path(__file__).resolve().parent.parent
    env = {**os.environ, "PYTHONPATH": str(root / "src")}
    out = await asyncio.to_thread(subprocess.run, [sys.executable, str(root / "examples" / "identity_agent.py")],
                                  capture_output=True, text=True, timeout=300, env=env)
    assert out.returncode == 0, out.stderr[-2000:]
    lines = out.stdout.splitlines()
    assert lines[1].startswith("again") and "'reaccess': True" in lines[1], f"no re-access: {lines}"
    assert lines[1].endswith("payee +$0.05"), f"the re-access paid again: {lines[1]}"
    assert "did:key:z6Mk" in lines[2], f"the signed order has no agent DID: {lines[2]}"
    assert lines[3].startswith("unsigned refused") and lines[3].endswith("payee +$0.10"), f"{lines[3]}"
    words = lines[4].split()
    assert lines[4].startswith("receipt signed by 0x") and words[-1].startswith("0x") and words[3] != words[-1], \
        f"no signed receipt naming the payer: {lines[4]}"


def _ts_peer(command: str, **args: Any) -> dict[str, Any]:
    import subprocess

    from tests.node_peers import NODE_DIR, _installed

    node = _installed(NODE_DIR / "identity", ("@x402/extensions", "viem"), "@x402/extensions")
    out = subprocess.run([node, str(NODE_DIR / "identity" / "x402_siwx_peer.mjs"), command], input=json.dumps(args),
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, f"the @x402/extensions peer failed: {out.stderr[-2000:]}"
    result: dict[str, Any] = json.loads(out.stdout)
    return result


@pytest.mark.interop
@pytest.mark.node
async def test_x402_extensions_ts_client_signs_in_to_our_seller(env: Env) -> None:
    """@x402/extensions 2.27.0's createSIWxPayload (viem account) answers our 402; our seller re-admits the payer."""
    async with x402_client(env.wallet(), env.policy(), config=BuyerConfig(sign_in=False)) as client:
        assert (await client.get(env.url + "/report")).status_code == 200
    before = await balance(env.net, env.net.payee.address)
    async with httpx.AsyncClient(timeout=60) as c:
        challenge = await c.get(env.url + "/report")
    header = (await asyncio.to_thread(_ts_peer, "sign", extension=extension_of(challenge), url=env.url + "/report",
                                      key=env.net.info.payer_key))["header"]
    r = await get(env.url + "/report", {"SIGN-IN-WITH-X": header})
    assert r.status_code == 200, f"our seller refused the TypeScript client's sign-in: {r.status_code} {error_of(r)}"
    assert r.json()["reaccess"] is True, "the TypeScript client's sign-in was not a re-access"
    assert await balance(env.net, env.net.payee.address) == before, "money moved for a sign-in"


@pytest.mark.interop
@pytest.mark.node
async def test_our_sign_in_verifies_with_x402_extensions_ts(env: Env) -> None:
    proof = await proof_for(env.url + "/report", LocalSigner(env.net.info.payer_key))
    verdict = await asyncio.to_thread(_ts_peer, "verify", header=proof, origin=env.url)
    assert verdict["valid"] is True, f"@x402/extensions refused our sign-in: {verdict['reason']}"
    assert verdict["payer"].lower() == env.net.payer.address.lower(), "@x402/extensions read another payer"
    other = await asyncio.to_thread(_ts_peer, "verify", header=proof, origin="http://127.0.0.2:1")
    assert other["valid"] is False, "@x402/extensions accepted our sign-in for another origin"


@pytest.mark.interop
async def test_our_buyer_signs_in_to_the_official_python_server() -> None:
    """x402 2.25.0's FastAPI middleware with its SIWX server extension, auth-only route: our buyer answers its
    402 challenge from the wallet and is let in (no payment involved)."""
    import subprocess

    from tests.python_peers import PEERS, siwx_python

    python = await asyncio.to_thread(siwx_python)
    proc = subprocess.Popen([python, str(PEERS / "x402_siwx_server.py")], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        line = await asyncio.to_thread(proc.stdout.readline)
        url = json.loads(line)["url"] + "/profile"
        async with x402_client(LocalSigner.generate(), Policy(), store=None) as client:
            r = await client.get(url)
        assert r.status_code == 200, f"the official server refused our sign-in: {r.status_code} {r.text[:200]}"
        assert r.json() == {"profile": "yours"}, "the official server answered something else"
        async with httpx.AsyncClient(timeout=60) as plain:
            unsigned = await plain.get(url)
        assert unsigned.status_code == 402, "the official server let an unsigned request in"
    finally:
        proc.terminate()
        await asyncio.to_thread(proc.wait, 30)
