"""Signed offers and receipts (x402 ``offer-receipt``): our seller signs, our buyer checks and keeps them.

What a user sees: every 402 of a seller with an ``offer_signer`` carries one signed offer per ``accepts`` entry,
every paid response a signed receipt naming the payer; the buyer stores both with the payment's ledger row
(``paywire wallet history --proofs`` prints them) and, with ``Policy(offer_signers=[...])``, pays only offers
signed by a trusted key — an unsigned or wrongly signed 402 is refused before anything is signed (balances
asserted). @x402/extensions 2.27.0 (their offer-receipt module) verifies what we sign and we verify what it signs.
"""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import json
from typing import Any

import httpx
import pytest
import pytest_asyncio

from paywire.client import Buyer, PaymentRefused, Policy, x402_client
from paywire.facilitator.client import LocalFacilitatorClient
from paywire.facilitator.core import Facilitator
from paywire.identity.offers import (
    OFFER_RECEIPT,
    ArtifactSigner,
    ProofError,
    check_receipt,
    offer_payload,
    receipt_payload,
    signed_offers,
    verify_offer,
    verify_receipt,
)
from paywire.mpp.jcs import canonicalize
from paywire.server.asgi import PaymentMiddleware
from paywire.server.core import PaidRoute
from paywire.serving import serve_asgi
from paywire.store import open_database
from paywire.store.spend import SpendLedger
from paywire.x402.codec import decode_header
from tests.helpers import close_devnet, facilitator_for, new_devnet
from tests.test_buyer_support import CENT, balance, content_app, offer

aio = pytest.mark.asyncio(loop_scope="module")

SELLER_KEY = bytes.fromhex("4c0883a69102937d6231471b5dbb6204fe5129617082792ae468d01a3f362318")
ED_KEY = bytes(range(1, 33))
URL = "https://api.example.com/premium-data"
BASE_USDC = "0x833589fCD6eDb6E08f4c7C32D4f71b54bdA02913"
PAY_TO = "0x209693Bc6afc0C5328bA36FaF03C514EF312287C"
PAYER = "0x857b06519E91e3A54538791bDbb0E22373e36b66"


def signers() -> list[ArtifactSigner]:
    return [ArtifactSigner(SELLER_KEY), ArtifactSigner(SELLER_KEY, format="jws"),
            ArtifactSigner(ED_KEY, format="jws", key_type="Ed25519")]


# ------------------------------------------------------------------------------------------------ the core


@pytest.mark.parametrize("signer", signers(), ids=["eip712", "jws-es256k", "jws-eddsa"])
def test_offer_and_receipt_verify_and_tampering_fails(signer: ArtifactSigner) -> None:
    o = signer.sign_offer(offer_payload(URL, "exact", "eip155:8453", BASE_USDC, PAY_TO, 10000, 1703123516), 0)
    v = verify_offer(o)
    assert v.signer == signer.signer_id and v.payload["amount"] == "10000"
    if o["format"] == "eip712":  # a changed term recovers some other address
        bad = {**o, "payload": {**o["payload"], "amount": "1"}}
        assert verify_offer(bad).signer != signer.signer_id, "a tampered EIP-712 offer still names the seller"
    else:  # a changed term breaks the JWS signature
        h, p, sig = o["signature"].split(".")
        swapped = json.loads(base64.urlsafe_b64decode(p + "=" * (-len(p) % 4)))
        swapped["amount"] = "1"
        body = base64.urlsafe_b64encode(canonicalize(swapped)).rstrip(b"=").decode()
        with pytest.raises(ProofError, match="does not verify"):
            verify_offer({**o, "signature": f"{h}.{body}.{sig}"})
    r = signer.sign_receipt(receipt_payload(URL, PAYER, "eip155:8453", 1703123456, for_jws=o["format"] == "jws"))
    assert check_receipt(r, payer=PAYER, network="eip155:8453", request_url="https://api.example.com/x",
                         signer=signer.signer_id, trusted=None).payload["payer"] == PAYER
    with pytest.raises(ProofError, match="another payer"):
        check_receipt(r, payer=PAY_TO, network="eip155:8453", request_url=URL, signer=signer.signer_id, trusted=None)
    with pytest.raises(ProofError, match="another origin"):
        check_receipt(r, payer=PAYER, network="eip155:8453", request_url="https://evil.example/x",
                      signer=signer.signer_id, trusted=None)
    with pytest.raises(ProofError, match="not signed by the seller"):
        check_receipt(r, payer=PAYER, network="eip155:8453", request_url=URL, signer="0x" + "11" * 20, trusted=None)


def test_malformed_artifacts_are_refused_with_a_reason() -> None:
    for bad in (None, {}, {"format": "pgp", "signature": "x"}, {"format": "eip712", "payload": {}, "signature": "0x"},
                {"format": "jws", "signature": "a.b"}, {"format": "jws", "signature": "e30.e30.AA"},
                {"format": "eip712", "payload": {**offer_payload(URL, "exact", "eip155:1", BASE_USDC, PAY_TO, 1, 0),
                                                 "version": 2}, "signature": "0x" + "00" * 65}):
        with pytest.raises(ProofError):
            verify_offer(bad)


def test_buyer_keeps_only_offers_that_match_an_accepts_entry_and_are_trusted() -> None:
    s = ArtifactSigner(SELLER_KEY)
    accepts = [dataclasses.make_dataclass("A", ["scheme", "network", "asset", "pay_to", "amount"])(
        "exact", "eip155:8453", BASE_USDC, s.address, 10000)]
    exts = {OFFER_RECEIPT: s.offers_extension(URL, accepts, 1000.0, validity=60)}
    assert 0 in signed_offers(exts, accepts, URL, 1000.0, None), "payTo signs: trusted by the spec's simplest rule"
    assert not signed_offers(exts, accepts, URL, 1061.0, None), "an expired offer was kept"
    assert not signed_offers(exts, accepts, "https://other.example/x", 1000.0, None), "another origin's offer"
    assert not signed_offers(exts, accepts, URL, 1000.0, ["0x" + "22" * 20]), "an untrusted signer was kept"
    dearer = [dataclasses.replace(accepts[0], amount=20000)]
    assert not signed_offers(exts, dearer, URL, 1000.0, None), "signed terms differ from the entry"


# ------------------------------------------------------------------------------------------------ end to end


class Env:
    def __init__(self, net: Any, url: str, signer: ArtifactSigner) -> None:
        self.net, self.url, self.signer = net, url, signer


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def env(tmp_path_factory: pytest.TempPathFactory):
    net = await new_devnet("embedded")
    fac = Facilitator([facilitator_for(net)])
    signer = ArtifactSigner(SELLER_KEY)
    routes = [PaidRoute("/data", (offer(net, CENT),))]
    mw = PaymentMiddleware(content_app(), routes, LocalFacilitatorClient(fac), store=f"sqlite:///{tmp_path_factory.mktemp('offers') / 'seller.db'}",
                           offer_signer=signer, receipt_tx=True)
    async with serve_asgi(mw) as url:
        yield Env(net, url, signer)
    await close_devnet(net)


@aio
async def test_402_carries_one_signed_offer_per_accepts_entry(env: Env) -> None:
    async with httpx.AsyncClient(timeout=60) as c:
        r = await c.get(env.url + "/data")
    pr = decode_header(r.headers["payment-required"])
    offers = pr["extensions"][OFFER_RECEIPT]["info"]["offers"]
    assert len(offers) == len(pr["accepts"]) == 1
    v = verify_offer(offers[0])
    assert v.signer == env.signer.address and v.payload["resourceUrl"] == env.url + "/data"
    assert v.payload["amount"] == pr["accepts"][0]["amount"] and v.payload["payTo"] == pr["accepts"][0]["payTo"]


@aio
async def test_buyer_stores_the_signed_offer_and_receipt_with_its_payment(env: Env, tmp_path: Any) -> None:
    from paywire.wallet import Wallet

    wallet = Wallet.from_key(env.net.info.payer_key, chains={env.net.info.network: env.net.chain})
    before = await balance(env.net, env.net.payee.address)
    store = f"sqlite:///{tmp_path / 'buyer.db'}"
    policy = Policy(assets=[env.net.asset], offer_signers=[env.signer.address])
    async with x402_client(wallet, policy, store=store) as client:
        r = await client.get(env.url + "/data")
    assert r.status_code == 200
    assert await balance(env.net, env.net.payee.address) == before + CENT
    ledger = SpendLedger(open_database(store), wallet.address)
    try:
        row = (await ledger.history())[0]
    finally:
        await ledger.db.aclose()
    assert row.outcome == "paid" and row.proofs is not None, "the paid row keeps no proofs"
    proofs = json.loads(row.proofs)
    assert proofs["signer"] == env.signer.address
    assert verify_offer(proofs["offer"]).payload["amount"] == str(CENT)
    receipt = verify_receipt(proofs["receipt"]).payload
    assert receipt["payer"].lower() == wallet.address.lower() and receipt["transaction"] == row.tx


@aio
async def test_policy_refuses_offers_not_signed_by_a_trusted_key_before_signing(env: Env) -> None:
    from paywire.wallet import Wallet

    wallet = Wallet.from_key(env.net.info.payer_key, chains={env.net.info.network: env.net.chain})
    before = await balance(env.net, env.net.payee.address)
    policy = Policy(assets=[env.net.asset], offer_signers=["0x" + "33" * 20])
    async with x402_client(wallet, policy, store=None) as client:
        with pytest.raises(PaymentRefused) as err:
            await client.get(env.url + "/data")
    assert err.value.rule == "offer_signature"
    assert await balance(env.net, env.net.payee.address) == before, "money moved for an untrusted offer"


@aio
async def test_wallet_history_proofs_exports_the_signed_artifacts(env: Env, tmp_path: Any) -> None:
    from typer.testing import CliRunner

    from paywire.cli.main import app as cli
    from paywire.wallet import Wallet

    wallet = Wallet.from_key(env.net.info.payer_key, chains={env.net.info.network: env.net.chain})
    store = f"sqlite:///{tmp_path / 'cli.db'}"
    buyer = Buyer(wallet, Policy(assets=[env.net.asset]), store=store)
    async with x402_client(buyer) as client:
        assert (await client.get(env.url + "/data")).status_code == 200
    await buyer.aclose()
    out = tmp_path / "proofs.json"
    result = await asyncio.to_thread(CliRunner().invoke, cli, ["wallet", "history", "--store", store, "--all",
                                                               "--proofs", "-o", str(out)])
    assert result.exit_code == 0, result.output
    rows = json.loads(out.read_text())
    assert len(rows) == 1 and verify_receipt(rows[0]["proofs"]["receipt"]).signer == env.signer.address
    assert verify_offer(rows[0]["proofs"]["offer"]).payload["amount"] == rows[0]["amount"]


# ------------------------------------------------------------------------------------------------ interop


def _ts_peer(command: str, **args: Any) -> dict[str, Any]:
    import subprocess

    from tests.node_peers import NODE_DIR, _installed

    node = _installed(NODE_DIR / "identity", ("@x402/extensions", "viem", "jose"), "@x402/extensions")
    out = subprocess.run([node, str(NODE_DIR / "identity" / "offer_receipt_peer.mjs"), command],
                         input=json.dumps(args), capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, f"the @x402/extensions peer failed: {out.stderr[-2000:]}"
    result: dict[str, Any] = json.loads(out.stdout)
    return result


@aio
@pytest.mark.interop
@pytest.mark.node
async def test_x402_extensions_verifies_our_offers_and_receipts() -> None:
    ours = [ArtifactSigner(SELLER_KEY), ArtifactSigner(ED_KEY, format="jws", key_type="Ed25519")]
    offers = [s.sign_offer(offer_payload(URL, "exact", "eip155:8453", BASE_USDC, PAY_TO, 10000, 1703123516), 0)
              for s in ours]
    receipts = [s.sign_receipt(receipt_payload(URL, PAYER, "eip155:8453", 1703123456, for_jws=s.format == "jws"))
                for s in ours]
    out = await asyncio.to_thread(_ts_peer, "verify", offers=offers, receipts=receipts)
    assert out["offers"][0] == {"signer": ours[0].address}, out["offers"][0]
    assert out["offers"][1].get("payload", {}).get("amount") == "10000", out["offers"][1]
    assert out["receipts"][0] == {"signer": ours[0].address}, out["receipts"][0]
    assert out["receipts"][1].get("payload", {}).get("payer") == PAYER, out["receipts"][1]
    tampered = {**offers[0], "payload": {**offers[0]["payload"], "amount": "1"}}
    out = await asyncio.to_thread(_ts_peer, "verify", offers=[tampered], receipts=[])
    assert out["offers"][0].get("signer") != ours[0].address


@aio
@pytest.mark.interop
@pytest.mark.node
async def test_we_verify_offers_and_receipts_signed_by_x402_extensions() -> None:
    made = await asyncio.to_thread(
        _ts_peer, "make", key="0x" + SELLER_KEY.hex(), ed25519Key="0x" + ED_KEY.hex(), resourceUrl=URL,
        input={"acceptIndex": 0, "scheme": "exact", "network": "eip155:8453", "asset": BASE_USDC, "payTo": PAY_TO,
               "amount": "10000", "offerValiditySeconds": 60},
        payer=PAYER, network="eip155:8453", transaction="0x" + "ab" * 32)
    eip, jws = made["offers"]
    assert verify_offer(eip).signer == made["address"] == ArtifactSigner(SELLER_KEY).address
    v = verify_offer(jws)
    assert v.signer == made["did"] == ArtifactSigner(ED_KEY, format="jws", key_type="Ed25519").did
    assert v.payload["amount"] == "10000"
    for r in made["receipts"]:
        v = verify_receipt(r)
        assert v.payload["payer"] == PAYER and v.payload["transaction"] == "0x" + "ab" * 32


def test_hostile_offer_extensions_are_skipped_not_raised() -> None:
    """Whatever a seller puts in its 402's offer-receipt entry, the buyer skips what does not check out."""
    s = ArtifactSigner(SELLER_KEY)
    accepts = [dataclasses.make_dataclass("A", ["scheme", "network", "asset", "pay_to", "amount"])(
        "exact", "eip155:8453", BASE_USDC, s.address, 10000)]
    weird = s.sign_offer({**offer_payload("http://[::1", "exact", "eip155:8453", BASE_USDC, str(s.address), 10000,
                                          0)})
    for ext in (None, {}, {OFFER_RECEIPT: 1}, {OFFER_RECEIPT: {"info": {"offers": "x"}}},
                {OFFER_RECEIPT: {"info": {"offers": [1, None, {"format": "jws", "signature": 5}, weird]}}}):
        assert signed_offers(ext, accepts, URL, 1000.0, None) == {}
