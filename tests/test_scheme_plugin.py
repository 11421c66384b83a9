"""Adding a scheme is one folder: a tiny ``tally`` scheme, defined and registered in this file (not in the
package), is offered by a paywire seller, paid by a paywire buyer and verified and settled by paywire's
facilitator over HTTP, with nothing in paywire changed for it.

``tally`` × ``tally:*``: the payer signs (secp256k1, ``paywire.evm.crypto``) the offer plus a random nonce; the
facilitator recovers the signer and moves the amount between balances in a SQLite table, once per
(payer, nonce).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import sqlite3
from collections.abc import AsyncIterator, Mapping
from pathlib import Path
from typing import Any

import httpx
import pytest
import pytest_asyncio
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from paywire.client import Policy, receipt_of, x402_client
from paywire.evm.assets import Asset
from paywire.evm.crypto import address_bytes, keccak256, recover_address, to_checksum
from paywire.evm.signer import EvmSigner, LocalSigner
from paywire.facilitator.app import create_app
from paywire.facilitator.client import HttpFacilitatorClient
from paywire.facilitator.core import Facilitator
from paywire.money import amount_of
from paywire.schemes.registry import OfferSpec, SchemeRegistry, default_registry
from paywire.server.asgi import PaymentMiddleware
from paywire.server.core import PaidRoute
from paywire.server.pricing import Offer
from paywire.serving import serve_asgi
from paywire.x402.codec import decode_payment_required, decode_payment_signature, encode_payment_payload
from paywire.x402.models import PaymentPayload, PaymentRequirements, SettleResponse, VerifyResponse
from paywire.x402.networks import matches_pattern

SCHEME = "tally"
PATTERN = "tally:*"
NETWORK = "tally:test"
TOKEN = "tally-usd"  # counted in cents
DECIMALS = 2
PRICE = 5  # "$0.05" in cents
FUNDS = 100

# ------------------------------------------------------------------------------------- the scheme "folder"


def tally_digest(req: PaymentRequirements, payer: str, nonce: str) -> bytes:
    """What the payer signs: the offer's terms, who pays, and a single-use nonce."""
    terms = {"scheme": req.scheme, "network": req.network, "asset": req.asset, "payTo": req.pay_to.lower(),
             "amount": str(req.amount), "from": payer.lower(), "nonce": nonce}
    return keccak256(b"tally:" + json.dumps(terms, sort_keys=True, separators=(",", ":")).encode())


def parse_tally(payload: Mapping[str, Any]) -> tuple[str, str, bytes] | None:
    """(from, nonce, signature) of a tally payload, or None."""
    payer, nonce, sig = payload.get("from"), payload.get("nonce"), payload.get("signature")
    if not (isinstance(payer, str) and isinstance(nonce, str) and isinstance(sig, str) and sig.startswith("0x")):
        return None
    try:
        address_bytes(payer)
        return payer, nonce, bytes.fromhex(sig[2:])
    except ValueError:
        return None


class TallyClient:
    scheme = SCHEME
    network_pattern = PATTERN

    def __init__(self, signer: EvmSigner) -> None:
        self.signer = signer

    def can_pay(self, requirements: PaymentRequirements) -> bool:
        return requirements.scheme == SCHEME and matches_pattern(requirements.network, PATTERN)

    async def create_payload(self, requirements: PaymentRequirements) -> Mapping[str, Any]:
        nonce = "0x" + os.urandom(16).hex()
        sig = await self.signer.sign_digest(tally_digest(requirements, self.signer.address, nonce))
        return {"from": self.signer.address, "nonce": nonce, "signature": "0x" + sig.hex()}

    def ledger_fields(self, payload: Mapping[str, Any]) -> tuple[str | None, int | None]:
        nonce = payload.get("nonce")
        return (nonce if isinstance(nonce, str) else None), None


class TallyServer:
    scheme = SCHEME
    network_pattern = PATTERN

    def offer(self, spec: OfferSpec) -> tuple[PaymentRequirements, int]:
        req = PaymentRequirements(scheme=spec.scheme, network=spec.network, amount=amount_of(spec.price, DECIMALS),
                                  asset=str(spec.asset or TOKEN), pay_to=spec.pay_to,
                                  max_timeout_seconds=spec.max_timeout_seconds, extra=dict(spec.extra))
        return req, DECIMALS

    def decimals(self, requirements: PaymentRequirements, assets: Any) -> int:
        return DECIMALS

    def claim(self, requirements: PaymentRequirements, payload: Mapping[str, Any]) -> tuple[str, str | None] | None:
        p = parse_tally(payload)
        return None if p is None else (f"{SCHEME}:{requirements.network}:{p[0].lower()}:{p[1]}", p[0])

    def payer(self, payload: Mapping[str, Any]) -> str | None:
        p = parse_tally(payload)
        return None if p is None else p[0]


class TallyFacilitator:
    """Balances in SQLite; a settlement moves ``amount`` from the payer to ``payTo`` once per (payer, nonce)."""

    scheme = SCHEME
    network_pattern = PATTERN

    def __init__(self, path: str) -> None:
        self.path = path
        with contextlib.closing(sqlite3.connect(path)) as db, db:
            db.execute("CREATE TABLE IF NOT EXISTS balances (account TEXT PRIMARY KEY, cents INTEGER NOT NULL)")
            db.execute("CREATE TABLE IF NOT EXISTS spent (payer TEXT, nonce TEXT, PRIMARY KEY (payer, nonce))")

    def networks(self) -> list[str]:
        return [NETWORK]

    def signer_addresses(self) -> list[str]:
        return []

    def kind_extra(self, network: str) -> Mapping[str, Any] | None:
        return None

    def _check(self, payload: PaymentPayload, req: PaymentRequirements) -> VerifyResponse:
        if payload.accepted.scheme != SCHEME or payload.accepted.network != req.network:
            return VerifyResponse(False, "unsupported_scheme")
        p = parse_tally(payload.payload)
        if p is None:
            return VerifyResponse(False, "invalid_payload")
        payer, nonce, sig = p
        if recover_address(tally_digest(req, payer, nonce), sig) != address_bytes(payer):
            return VerifyResponse(False, "invalid_tally_signature", payer=payer)
        with contextlib.closing(sqlite3.connect(self.path)) as db:
            if db.execute("SELECT 1 FROM spent WHERE payer = ? AND nonce = ?", (payer.lower(), nonce)).fetchone():
                return VerifyResponse(False, "invalid_tally_nonce_used", payer=payer)
            row = db.execute("SELECT cents FROM balances WHERE account = ?", (payer.lower(),)).fetchone()
        if row is None or row[0] < req.amount:
            return VerifyResponse(False, "insufficient_funds", payer=payer)
        return VerifyResponse(True, payer=payer)

    async def verify(self, payload: PaymentPayload, requirements: PaymentRequirements, *,
                     v1: bool = False) -> VerifyResponse:
        return self._check(payload, requirements)

    async def settle(self, payload: PaymentPayload, requirements: PaymentRequirements, *,
                     v1: bool = False) -> SettleResponse:
        checked = self._check(payload, requirements)
        if not checked.is_valid:
            return SettleResponse(False, "", requirements.network, checked.payer, checked.invalid_reason)
        payer, nonce, _ = parse_tally(payload.payload) or ("", "", b"")
        with contextlib.closing(sqlite3.connect(self.path, isolation_level=None)) as db:
            db.execute("BEGIN IMMEDIATE")
            try:
                db.execute("INSERT INTO spent VALUES (?, ?)", (payer.lower(), nonce))
                moved = db.execute("UPDATE balances SET cents = cents - ? WHERE account = ? AND cents >= ?",
                                   (requirements.amount, payer.lower(), requirements.amount)).rowcount
                if moved != 1:
                    raise sqlite3.IntegrityError("insufficient funds")
                db.execute("INSERT INTO balances VALUES (?, ?) ON CONFLICT(account) DO UPDATE SET cents = cents + ?",
                           (requirements.pay_to.lower(), requirements.amount, requirements.amount))
                db.execute("COMMIT")
            except sqlite3.IntegrityError as exc:
                db.execute("ROLLBACK")
                return SettleResponse(False, "", requirements.network, payer, "invalid_tally_nonce_used", str(exc))
        return SettleResponse(True, f"tally:{nonce}", requirements.network, payer, amount=requirements.amount)


def register(registry: SchemeRegistry) -> None:
    """The scheme's one registration line would call this."""
    registry.register_server(TallyServer())
    registry.register_client(SCHEME, PATTERN, lambda s: TallyClient(s) if isinstance(s, EvmSigner) else None)
    registry.register_facilitator(SCHEME, PATTERN, TallyFacilitator)
    registry.register_assets([Asset(NETWORK, TOKEN, "", "", decimals=DECIMALS, symbol="USD")])


# ------------------------------------------------------------------------------------------------ the test

pytestmark = pytest.mark.asyncio(loop_scope="module")


@dataclasses.dataclass
class World:
    db: str
    payer: LocalSigner
    payee: str
    shop: str
    facilitator: str
    runs: list[str]

    def balance(self, account: str) -> int:
        with contextlib.closing(sqlite3.connect(self.db)) as db:
            row = db.execute("SELECT cents FROM balances WHERE account = ?", (account.lower(),)).fetchone()
        return int(row[0]) if row else 0


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def world(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[World]:
    tmp: Path = tmp_path_factory.mktemp("tally")
    register(default_registry)
    payer, payee = LocalSigner.generate(), to_checksum(LocalSigner.generate().address)
    try:
        factory = default_registry.facilitator_factory(SCHEME, NETWORK)
        assert factory is not None, "the facilitator side was not found by (scheme, network)"
        plugin = factory(str(tmp / "ledger.db"))
        with contextlib.closing(sqlite3.connect(plugin.path)) as db, db:
            db.execute("INSERT INTO balances VALUES (?, ?)", (payer.address.lower(), FUNDS))
        runs: list[str] = []

        async def report(request: Request) -> Response:
            runs.append(request.headers.get("payment-signature", ""))
            return JSONResponse({"report": "paid content"})

        routes = [PaidRoute("GET /report", offers=(Offer(price="$0.05", scheme=SCHEME, network=NETWORK, asset=TOKEN),),
                            description="a tally-paid report")]
        async with contextlib.AsyncExitStack() as stack:
            fac_url = await stack.enter_async_context(serve_asgi(create_app(Facilitator([plugin]))))
            mw = PaymentMiddleware(Starlette(routes=[Route("/report", report)]), routes,
                                   HttpFacilitatorClient(fac_url), pay_to=payee,
                                   store=f"sqlite:///{tmp / 'seller.db'}")
            shop = await stack.enter_async_context(serve_asgi(mw))
            yield World(plugin.path, payer, payee, shop, fac_url, runs)
            await mw.flow.aclose()
    finally:
        default_registry.unregister(SCHEME, PATTERN)


async def test_seller_offers_the_plugin_scheme_priced_by_its_server_side(world: World) -> None:
    async with httpx.AsyncClient(timeout=60) as http:
        r = await http.get(world.shop + "/report")
    assert r.status_code == 402
    (offer,) = decode_payment_required(r.headers["payment-required"]).accepts
    assert (offer.scheme, offer.network, offer.asset, offer.amount) == (SCHEME, NETWORK, TOKEN, PRICE)


async def test_buyer_pays_and_facilitator_settles_exactly_the_price_once(world: World, tmp_path: Path) -> None:
    before_payer, before_payee, runs = world.balance(world.payer.address), world.balance(world.payee), len(world.runs)
    policy = Policy(max_per_payment="$1")  # values the tally token: register() added it to the family's assets
    async with x402_client(world.payer, policy, store=f"sqlite:///{tmp_path / 'buyer.db'}") as client:
        r = await client.get(world.shop + "/report")
    assert r.status_code == 200, r.text
    assert r.json() == {"report": "paid content"}
    assert len(world.runs) == runs + 1, "the paid handler runs once"
    assert world.balance(world.payer.address) == before_payer - PRICE
    assert world.balance(world.payee) == before_payee + PRICE
    receipt = receipt_of(r)
    assert receipt is not None and receipt.outcome == "paid"
    sent = decode_payment_signature(world.runs[-1])
    assert receipt.nonce == sent.payload["nonce"], "the buyer's ledger keeps the nonce the scheme named"

    # the same payment again, to the seller and straight to the facilitator: nothing moves a second time
    async with httpx.AsyncClient(timeout=60) as http:
        replay = await http.get(world.shop + "/report", headers={"payment-signature": world.runs[-1]})
    assert replay.status_code == 200 and replay.json() == r.json(), "the seller answers a replay from its record"
    assert isinstance(sent, PaymentPayload)
    again = await HttpFacilitatorClient(world.facilitator).settle(sent, sent.accepted)
    assert not again.success and again.error_reason == "invalid_tally_nonce_used"
    assert len(world.runs) == runs + 1, "a replayed payment does not run the handler again"
    assert world.balance(world.payer.address) == before_payer - PRICE
    assert world.balance(world.payee) == before_payee + PRICE


async def test_tampered_signature_is_refused_with_402(world: World) -> None:
    before, runs = world.balance(world.payer.address), len(world.runs)
    async with httpx.AsyncClient(timeout=60) as http:
        r = await http.get(world.shop + "/report")
        (offer,) = decode_payment_required(r.headers["payment-required"]).accepts
        inner = dict(await TallyClient(world.payer).create_payload(offer))
        sig = bytearray.fromhex(inner["signature"][2:])
        sig[5] ^= 0x01
        inner["signature"] = "0x" + sig.hex()
        header = encode_payment_payload(PaymentPayload(accepted=offer, payload=inner))
        r = await http.get(world.shop + "/report", headers={"payment-signature": header})
    assert r.status_code == 402
    assert len(world.runs) == runs, "the handler does not run for a forged payment"
    assert world.balance(world.payer.address) == before


async def test_registry_picks_the_most_specific_pattern_and_loads_builtins_on_first_lookup() -> None:
    import subprocess
    import sys

    probe = ("import sys, paywire.schemes.registry as r; before = 'paywire.schemes.evm_exact' in sys.modules; "
             "s = r.default_registry.server('exact', 'eip155:8453'); "
             "print(before, type(s).__name__, 'paywire.schemes.evm_exact.facilitator' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60)
    assert out.stdout.split() == ["False", "ExactEvmServer", "False"], out.stdout + out.stderr

    reg = SchemeRegistry()
    family, one = TallyServer(), TallyServer()
    one.network_pattern = NETWORK
    reg.register_server(one)
    reg.register_server(family)
    assert reg.server(SCHEME, NETWORK) is one, "an exact network beats its family pattern"
    assert reg.server(SCHEME, "tally:other") is family
    assert reg.server("exact", NETWORK) is None
    reg.unregister(SCHEME, NETWORK)
    assert reg.server(SCHEME, NETWORK) is family
