"""BOLT11 decoding (cross-checked with the ``bolt11`` package) and the LND REST client against recorded
response shapes (no LND node can run here)."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import time

import httpx
import pytest

from paywire.errors import WireError
from paywire.lightning.base import LightningBackend, LightningError
from paywire.lightning.bolt11 import decode_bolt11
from paywire.lightning.lnbits import LnbitsBackend
from paywire.lightning.lnd import LndRestBackend

bolt11 = pytest.importorskip("bolt11", reason="the bolt11 package (test dependency) is not installed")


def make_invoice(amount_msat: int | None, currency: str = "bcrt", expiry: int | None = 600,
                 description: str = "paywire") -> tuple[str, str, str]:
    """A real signed BOLT11 (random node key) → (invoice, payment_hash hex, preimage hex)."""
    pre = os.urandom(32)
    h = hashlib.sha256(pre).hexdigest()
    tags = {"payment_hash": h, "payment_secret": os.urandom(32).hex(), "description": description}
    if expiry is not None:
        tags["expire_time"] = expiry
    inv = bolt11.Bolt11(currency=currency, amount_msat=bolt11.MilliSatoshi(amount_msat) if amount_msat else None,
                        date=int(time.time()), tags=bolt11.Tags.from_dict(tags))
    return bolt11.encode(inv, os.urandom(32).hex()), h, pre.hex()


@pytest.mark.parametrize(("amount", "currency", "network"), [
    (21_000, "bcrt", "regtest"), (1, "bc", "mainnet"), (150_000_000_000, "tb", "testnet"),
    (2_500_000, "tbs", "signet"), (None, "bc", "mainnet"), (10, "bcrt", "regtest"),
])
def test_decoder_matches_bolt11_package(amount, currency, network):
    inv, h, _ = make_invoice(amount, currency)
    ours, ref = decode_bolt11(inv), bolt11.decode(inv)
    assert ours.network == network and ours.payment_hash == h == ref.payment_hash
    assert ours.amount_msat == (ref.amount_msat if amount else None)
    assert ours.timestamp == ref.date and ours.expiry == ref.expiry == 600
    assert ours.description == "paywire"
    assert decode_bolt11("lightning:" + inv.upper()) == ours


def test_decoder_defaults_and_rejects_garbage():
    inv, _, _ = make_invoice(1000, expiry=None)
    assert decode_bolt11(inv).expiry == 3600
    bad_checksum = inv[:-1] + ("q" if inv[-1] != "q" else "p")
    for bad in ("", "lnbc1", "not an invoice", bad_checksum, inv[:60]):
        with pytest.raises(WireError):
            decode_bolt11(bad)


# ------------------------------------------------------------------------------------------------ LND REST

MACAROON = "0201036c6e64"  # hex, as lnd writes admin.macaroon


def _b64(hexstr: str) -> str:
    return base64.b64encode(bytes.fromhex(hexstr)).decode()


class FakeLnd:
    """Answers with the JSON shapes of lnd's REST gateway (lnrpc.AddInvoiceResponse, lnrpc.Invoice,
    routerrpc.SendPaymentV2 NDJSON stream of ``{"result": lnrpc.Payment}``)."""

    def __init__(self) -> None:
        self.invoices: dict[str, dict] = {}
        self.requests: list[httpx.Request] = []
        self.pay_outcome = "SUCCEEDED"

    def handler(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        if request.headers.get("Grpc-Metadata-macaroon") != MACAROON:
            return httpx.Response(500, json={"code": 2, "message": "verification failed: signature mismatch"})
        path = request.url.path
        if request.method == "POST" and path == "/v1/invoices":
            body = json.loads(request.content)
            inv, h, pre = make_invoice(int(body["value"]) * 1000, expiry=int(body["expiry"]),
                                       description=body["memo"])
            self.invoices[h] = {"inv": inv, "pre": pre, "settled": False, "value": body["value"]}
            return httpx.Response(200, json={"r_hash": _b64(h), "payment_request": inv, "add_index": "7",
                                             "payment_addr": _b64(os.urandom(32).hex())})
        if request.method == "GET" and path.startswith("/v1/invoice/"):
            h = path.rsplit("/", 1)[1]
            i = self.invoices.get(h)
            if i is None:
                return httpx.Response(404, json={"code": 5, "message": "unable to locate invoice"})
            state = "SETTLED" if i["settled"] else "OPEN"
            return httpx.Response(200, json={
                "memo": "", "r_preimage": _b64(i["pre"]), "r_hash": _b64(h), "value": i["value"],
                "value_msat": str(int(i["value"]) * 1000), "settled": i["settled"], "creation_date": "1700000000",
                "settle_date": "1700000001" if i["settled"] else "0", "payment_request": i["inv"], "expiry": "600",
                "state": state, "amt_paid_sat": i["value"] if i["settled"] else "0", "htlcs": [],
                "is_keysend": False, "payment_addr": _b64("00" * 32)})
        if request.method == "POST" and path == "/v2/router/send":
            body = json.loads(request.content)
            d = decode_bolt11(body["payment_request"])
            pre = next((i["pre"] for i in self.invoices.values() if i["inv"] == body["payment_request"]), "00" * 32)
            base = {"payment_hash": d.payment_hash, "value": "21", "creation_date": "1700000000", "fee": "0",
                    "payment_preimage": "0" * 64, "value_sat": "21", "value_msat": "21000",
                    "payment_request": body["payment_request"], "status": "IN_FLIGHT", "fee_sat": "0",
                    "fee_msat": "0", "creation_time_ns": "1700000000000000000", "htlcs": [], "payment_index": "3",
                    "failure_reason": "FAILURE_REASON_NONE"}
            final = dict(base, status=self.pay_outcome, payment_preimage=pre if self.pay_outcome == "SUCCEEDED"
                         else "0" * 64, fee_msat="1000",
                         failure_reason="FAILURE_REASON_NONE" if self.pay_outcome == "SUCCEEDED"
                         else "FAILURE_REASON_NO_ROUTE")
            lines = json.dumps({"result": base}) + "\n" + json.dumps({"result": final}) + "\n"
            return httpx.Response(200, content=lines.encode(), headers={"Content-Type": "application/json"})
        return httpx.Response(404, json={"code": 5, "message": "Not Found"})


async def test_lnd_rest_invoice_lookup_and_pay():
    fake = FakeLnd()
    lnd = LndRestBackend("https://lnd.local:8080", MACAROON, transport=httpx.MockTransport(fake.handler))
    assert isinstance(lnd, LightningBackend)
    try:
        inv = await lnd.create_invoice(21, "coffee", 600)
        assert inv.amount_sat == 21 and decode_bolt11(inv.bolt11).payment_hash == inv.payment_hash
        assert json.loads(fake.requests[0].content) == {"value": "21", "memo": "coffee", "expiry": "600"}
        st = await lnd.lookup_invoice(inv.payment_hash)
        assert not st.paid and st.preimage is None
        paid = await lnd.pay_invoice(inv.bolt11, max_fee_sat=3)
        assert hashlib.sha256(bytes.fromhex(paid.preimage)).hexdigest() == inv.payment_hash
        assert paid.fee_msat == 1000 and json.loads(fake.requests[-1].content)["fee_limit_sat"] == "3"
        fake.invoices[inv.payment_hash]["settled"] = True
        st = await lnd.lookup_invoice(inv.payment_hash)
        assert st.paid and st.preimage == paid.preimage
        fake.pay_outcome = "FAILED"
        with pytest.raises(LightningError, match="NO_ROUTE"):
            await lnd.pay_invoice(inv.bolt11)
        with pytest.raises(LightningError):
            await lnd.lookup_invoice("ab" * 32)
    finally:
        await lnd.aclose()
    bad = LndRestBackend("https://lnd.local:8080", "00", transport=httpx.MockTransport(fake.handler))
    with pytest.raises(LightningError) as exc:
        await bad.create_invoice(1)
    assert exc.value.retryable
    await bad.aclose()


async def test_lnbits_client_refuses_inconsistent_answers():
    """An LNbits answer whose invoice does not match the request is an error, not an invoice."""
    other, h, _ = make_invoice(5_000)

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(201, json={"payment_hash": h, "bolt11": other})

    ln = LnbitsBackend("http://lnbits", invoice_key="k", transport=httpx.MockTransport(handler))
    with pytest.raises(LightningError, match="does not match"):
        await ln.create_invoice(21)
    with pytest.raises(LightningError, match="admin key"):
        await ln.pay_invoice(other)
    await ln.aclose()
