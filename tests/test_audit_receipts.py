"""Receipts carry proof (issue 12, "Receipts carry proof"): an audited seller's paid response carries an audit
reference; the buyer keeps it with its receipt; later the payer asks the seller's log for the proofs of its own
payment and checks them offline against the log's key (Python API and ``paywire audit verify-proof --log``).
Real parts: our middleware and client over real HTTP, the facilitator settling on the embedded chain, SQLite."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator

import pytest
import pytest_asyncio
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from typer.testing import CliRunner

from paywire.audit.http import audit_app
from paywire.audit.note import Signer
from paywire.audit.proofs import ProofRejected
from paywire.audit.queue import queued_events
from paywire.audit.remote import ProofUnavailable, fetch_proofs
from paywire.audit.sequencer import Sequencer
from paywire.audit.store import AuditStore
from paywire.cli.main import app as cli
from paywire.client import x402_client
from paywire.client.policy import Policy
from paywire.devnet import Devnet
from paywire.evm.assets import AssetRegistry
from paywire.facilitator.client import LocalFacilitatorClient
from paywire.server.asgi import PaymentMiddleware
from paywire.server.core import PaidRoute
from paywire.server.pricing import Offer
from paywire.serving import serve_asgi
from paywire.store import open_database
from paywire.store.spend import SpendLedger
from paywire.wallet import Wallet
from paywire.x402.codec import decode_payment_response
from tests.helpers import close_devnet, full_facilitator, new_devnet

pytestmark = pytest.mark.asyncio(loop_scope="module")

ORIGIN = "paywire.example/seller-receipts"


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def net() -> AsyncIterator[Devnet]:
    n = await new_devnet("embedded")
    yield n
    await close_devnet(n)


def _app() -> Starlette:
    async def ok(request: Request) -> Response:
        return JSONResponse({"paid": True})

    return Starlette(routes=[Route("/item", ok)])


async def test_a_payer_proves_its_own_payment_from_its_receipt(net: Devnet, sqlite_url: str, tmp_path) -> None:
    a = net.asset
    mw = PaymentMiddleware(_app(), [PaidRoute("GET /item", offers=(Offer(price=10_000, asset=a),))],
                           LocalFacilitatorClient(full_facilitator(net)), store=sqlite_url,
                           assets=AssetRegistry((a,)), pay_to=net.payee.address, audit="seller-eu1-1")
    buyer_db = open_database(f"sqlite:///{tmp_path / 'buyer.db'}")
    ledger = SpendLedger(buyer_db, net.payer.address)
    wallet = Wallet.from_key(net.info.payer_key, chains={net.info.network: net.chain})
    try:
        async with serve_asgi(mw) as url, x402_client(wallet, Policy(assets=[a], daily="$5"), store=ledger) as c:
            r = await c.get(url + "/item")
            assert r.status_code == 200, "the buyer paid"
            settled = decode_payment_response(r.headers["payment-response"])
            ref = (settled.extensions or {}).get("audit")
            assert ref and ref["instance"] == "seller-eu1-1" and ref["subject"] == settled.transaction, \
                f"the PAYMENT-RESPONSE carries the audit reference naming the transaction: {settled.extensions}"
            receipt = (await ledger.history())[0]
            assert receipt.audit is not None and json.loads(receipt.audit) == ref, \
                f"the buyer keeps the reference with its receipt: {receipt.audit}"

            store = AuditStore(mw.flow.payments.db)
            log_key = Signer.generate(ORIGIN)
            async with serve_asgi(audit_app(store)) as log_url:
                with pytest.raises(ProofUnavailable):  # queued, not yet in the log
                    await fetch_proofs(log_url, ref["subject"], [log_key.verifier])
                seq = Sequencer(store, log_key)
                await seq.drain()
                await seq.integrate(force_checkpoint=True)
                proven = await fetch_proofs(log_url, ref["subject"], [log_key.verifier])
                kinds = [p.event["kind"] for p in proven]
                assert "payment.served" in kinds, f"the payer's served payment is proven: {kinds}"
                served = next(p for p in proven if p.event["kind"] == "payment.served")
                assert served.event["subject"]["record"] == ref["record"], "the event of the receipt's ledger row"
                assert served.proven.checkpoint.size > served.seq >= 0, "with its seq and the checkpoint holding it"

                with pytest.raises(ProofRejected):  # another log's key: refused
                    await fetch_proofs(log_url, ref["subject"], [Signer.generate(ORIGIN).verifier])

                result = await asyncio.to_thread(
                    CliRunner().invoke, cli, ["audit", "verify-proof", "--log", log_url, "--subject", ref["subject"],
                                              "--key", log_key.verifier.vkey])
                assert result.exit_code == 0 and "payment.served" in result.output, \
                    f"paywire audit verify-proof --log checks it too:\n{result.output}"
    finally:
        await mw.flow.aclose()
        await ledger.aclose()
        await buyer_db.aclose()


async def test_an_mpp_redemption_is_audited_and_its_receipt_carries_the_reference(net: Devnet, sqlite_url: str) -> None:
    """MPP credentials are redeemed through the seller ledger: the row's events say ``protocol: mpp``, and the
    ``Payment-Receipt`` carries the same audit reference an x402 ``PAYMENT-RESPONSE`` does."""
    import httpx

    from paywire.mpp.challenge import parse_www_authenticate
    from paywire.mpp.methods.evm_charge import sign_evm_charge
    from paywire.mpp.receipt import Receipt
    from paywire.store.db import open_database as _open
    from tests.helpers import payer_of

    a = net.asset
    mw = PaymentMiddleware(_app(), [PaidRoute("GET /item", offers=(Offer(price=10_000, asset=a),), mpp=("evm",))],
                           LocalFacilitatorClient(full_facilitator(net)), store=sqlite_url,
                           assets=AssetRegistry((a,)), pay_to=net.payee.address, mpp_realm="shop.test",
                           mpp_secret=b"\x07" * 32, audit="seller-mpp-1")
    try:
        async with serve_asgi(mw) as url, httpx.AsyncClient(timeout=60) as http:
            r = await http.get(url + "/item")
            ch = next(c for c in parse_www_authenticate(r.headers.get_list("www-authenticate")) if c.method == "evm")
            cred = await sign_evm_charge(ch, payer_of(net), a)
            paid = await http.get(url + "/item", headers={"Authorization": cred.to_authorization()})
            assert paid.status_code == 200, paid.text
            receipt = Receipt.from_header(paid.headers["payment-receipt"])
            ref = receipt.extra.get("audit")
            assert ref and ref["instance"] == "seller-mpp-1" and ref["subject"] == receipt.reference, \
                f"the MPP receipt carries the audit reference: {receipt.extra}"
        db = _open(sqlite_url)
        try:
            rows = await queued_events(db)
        finally:
            await db.aclose()
        events = [e for e in map(json.loads, rows) if "record" in e["subject"]]
        assert [e["kind"] for e in events] == ["payment.claimed", "payment.settling", "payment.served"], \
            f"the claim (once verified), then one event per state: {[e['kind'] for e in events]}"
        assert {e["subject"]["protocol"] for e in events} == {"mpp"}, "each names the protocol that carried it"
        assert events[-1]["subject"]["payment_id"] == f"mpp:{ch.id}", "and the challenge it redeemed"
    finally:
        await mw.flow.aclose()
