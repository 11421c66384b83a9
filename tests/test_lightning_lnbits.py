"""Against a real LNbits (FakeWallet funding source, started by this module in its own virtualenv):
the LNbits backend, an L402 purchase and an MPP ``lightning/charge`` purchase with real BOLT11 invoices and
preimages (checklist 99, 113)."""

from __future__ import annotations

import hashlib
import os

import pytest
import pytest_asyncio

pytest.importorskip("pymacaroons", reason="pymacaroons (the l402 extra) is not installed")

from paywire.l402.header import parse_challenges_l402
from paywire.l402.server import L402Denied, L402Ok, L402Server
from paywire.lightning.bolt11 import decode_bolt11
from paywire.lightning.lnbits import LnbitsBackend
from paywire.mpp import problems as P
from paywire.mpp.challenge import ChallengeBinder, parse_www_authenticate
from paywire.mpp.methods.lightning_charge import (
    LightningChargeMethod,
    lightning_credential,
    lightning_offer,
    lightning_offer_template,
)
from paywire.mpp.redeem import Paid, Rejected, redeem
from paywire.mpp.server import MppServer
from paywire.mpp.timefmt import parse_rfc3339
from paywire.store.l402 import L402Store
from paywire.store.mpp import MppStore
from tests.lightning_fixtures import lnbits_node

pytestmark = pytest.mark.asyncio(loop_scope="module")


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def ln():
    async with lnbits_node() as node:
        yield node


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def wallets(ln):
    assert ln.payer is not None and ln.payee is not None
    payee = LnbitsBackend(ln.url, invoice_key=ln.payee.invoice_key)
    payer = LnbitsBackend(ln.url, admin_key=ln.payer.admin_key)
    yield payer, payee
    await payer.aclose()
    await payee.aclose()


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def stores(tmp_path_factory):
    d = tmp_path_factory.mktemp("ln")
    l402, mpp = await L402Store.open(f"sqlite:///{d / 's.db'}"), await MppStore.open(f"sqlite:///{d / 's.db'}")
    yield l402, mpp
    await l402.aclose()
    await mpp.aclose()


async def test_lnbits_invoice_pay_lookup(ln, wallets):
    """Real BOLT11 from LNbits; paying reveals the preimage; balances move by the amount."""
    payer, payee = wallets
    before = (await ln.balance_msat(ln.payer), await ln.balance_msat(ln.payee))
    inv = await payee.create_invoice(21, "paywire test", 600)
    d = decode_bolt11(inv.bolt11)
    assert d.amount_msat == 21_000 and d.payment_hash == inv.payment_hash and d.expiry == 600
    bolt11 = pytest.importorskip("bolt11")
    assert bolt11.decode(inv.bolt11).payment_hash == inv.payment_hash
    assert not (await payee.lookup_invoice(inv.payment_hash)).paid
    res = await payer.pay_invoice(inv.bolt11)
    assert hashlib.sha256(bytes.fromhex(res.preimage)).hexdigest() == inv.payment_hash
    st = await payee.lookup_invoice(inv.payment_hash)
    assert st.paid and st.preimage == res.preimage
    after = (await ln.balance_msat(ln.payer), await ln.balance_msat(ln.payee))
    assert after[1] == before[1] + 21_000 and after[0] <= before[0] - 21_000


async def test_l402_purchase_against_lnbits(wallets, stores):
    """Issue an L402 challenge with an LNbits invoice, pay it from the payer wallet, present
    macaroon:preimage → accepted (and again: reusable); a wrong preimage → 401."""
    payer, payee = wallets
    server = L402Server(stores[0], payee, service="weather", token_ttl=600)
    ch = await server.challenge(13, memo="weather")
    [first, *_] = parse_challenges_l402(ch.headers)
    assert first.invoice == ch.invoice and decode_bolt11(first.invoice).amount_sat == 13
    assert not await server.invoice_paid(ch.payment_hash)
    paid = await payer.pay_invoice(first.invoice)
    assert await server.invoice_paid(ch.payment_hash)
    ok = await server.verify(f"L402 {first.macaroon}:{paid.preimage}")
    assert isinstance(ok, L402Ok) and ok.payment_hash == ch.payment_hash
    assert isinstance(await server.verify(f"LSAT {first.macaroon}:{paid.preimage}"), L402Ok)
    bad = await server.verify(f"L402 {first.macaroon}:{os.urandom(32).hex()}")
    assert isinstance(bad, L402Denied) and bad.status == 401


async def test_mpp_lightning_charge_against_lnbits(wallets, stores):
    """lightning/charge: real invoice in methodDetails, preimage credential, receipt reference = payment
    hash (never the preimage); replay and wrong preimage refused with the specified problem types."""
    payer, payee = wallets
    server = MppServer("shop.example", ChallengeBinder([os.urandom(32)]))
    method = LightningChargeMethod(payee, confirm_with_node=True)
    offer = await lightning_offer(payee, 34, description="weather")
    template = [lightning_offer_template(34, description="weather")]
    ch = server.issue(offer)
    [parsed] = parse_www_authenticate(ch.to_header())
    details = parsed.request["methodDetails"]
    inv = decode_bolt11(details["invoice"])
    assert parsed.request["amount"] == "34" and parsed.request["currency"] == "sat"
    assert details["paymentHash"] == inv.payment_hash and details["network"] == "mainnet"  # FakeWallet: lnbc
    assert parse_rfc3339(str(parsed.expires)) <= inv.expires_at  # never outlives the invoice
    assert server.check(lightning_credential(parsed, "00" * 32).to_authorization(), template) is not None

    wrong = await redeem(server, stores[1], [method], lightning_credential(parsed, "00" * 32).to_authorization(),
                         template)
    assert isinstance(wrong, Rejected) and wrong.problem.type is P.LN_INVALID_PREIMAGE
    assert wrong.problem.status == 402
    bad = await redeem(server, stores[1], [method], lightning_credential(parsed, "XYZ").to_authorization(),
                       template)
    assert isinstance(bad, Rejected) and bad.problem.type is P.LN_MALFORMED_CREDENTIAL

    paid = await payer.pay_invoice(details["invoice"])
    auth = lightning_credential(parsed, paid.preimage).to_authorization()
    out = await redeem(server, stores[1], [method], auth, template)
    assert isinstance(out, Paid), out
    assert out.receipt.method == "lightning" and out.receipt.reference == inv.payment_hash
    assert out.receipt.challenge_id == parsed.id and paid.preimage not in out.receipt.to_header()
    replay = await redeem(server, stores[1], [method], auth, template)
    assert isinstance(replay, Rejected) and replay.problem.type is P.INVALID_CHALLENGE


async def test_mpp_lightning_expired_invoice(wallets):
    """An invoice past its BOLT11 expiry → 402 lightning/expired-invoice (the method check, pure)."""
    _, payee = wallets
    server = MppServer("shop.example", ChallengeBinder([os.urandom(32)]))
    offer = await lightning_offer(payee, 8, expiry=120)
    ch = server.issue(offer)
    assert ch.expires is not None
    accepted = server.check(lightning_credential(ch, "ab" * 32).to_authorization(), [lightning_offer_template(8)])
    assert not isinstance(accepted, (Rejected, type(None), P.Problem))
    got = LightningChargeMethod().verify(accepted, now=decode_bolt11(offer.request["methodDetails"]["invoice"])
                                         .expires_at + 1)
    assert isinstance(got, P.Problem) and got.type is P.LN_EXPIRED_INVOICE and got.status == 402
