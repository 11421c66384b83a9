"""The buyer's ledger knows a signed payment before it leaves: when the signed retry reaches the wire, its row in
the SQLite ledger (read through another connection, as a restarted process would) already counts against the
budget and names the payment's nonce and payload digest, so ``reconcile`` can settle it after a crash. Both
ways: a plain x402 ``exact`` payment (signed, then reserved and recorded in one transaction) and one that needs
approval (reserved, approved, signed, recorded). The in-process transport plays the server; signatures are real."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import httpx
import pytest

from paywire.client import Buyer, PaymentTransport, Policy
from paywire.client.core import payload_hash
from paywire.evm.assets import Asset
from paywire.wallet import Wallet
from paywire.x402.codec import decode_header, encode_header

TOKEN = "0x5FbDB2315678afecb367f032d93F642f64180aa3"
PAY_TO = "0x70997970C51812dc3A010C7d01b50e0d17dc79C8"
NETWORK = "eip155:31337"
KEY = "0xac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80"


class Seller(httpx.AsyncBaseTransport):
    """402 first; on the signed retry, reads the buyer's ledger from its own connection before answering."""

    def __init__(self, db: Path) -> None:
        self.db = db
        self.seen: list[dict[str, Any]] = []

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        sig = request.headers.get("payment-signature")
        if sig is None:
            return httpx.Response(402, headers={"PAYMENT-REQUIRED": encode_header({
                "x402Version": 2, "error": "Payment required",
                "resource": {"url": str(request.url), "description": "t", "mimeType": "application/json"},
                "accepts": [{"scheme": "exact", "network": NETWORK, "amount": "10000", "asset": TOKEN,
                             "payTo": PAY_TO, "maxTimeoutSeconds": 60,
                             "extra": {"name": "USD Coin", "version": "2"}}]})}, content=b"{}")
        with sqlite3.connect(self.db) as conn:  # what survives if the buyer's process dies now
            conn.row_factory = sqlite3.Row
            rows = [dict(r) for r in conn.execute("SELECT * FROM buyer_payments")]
        nonce = decode_header(sig)["payload"]["authorization"]["nonce"]
        self.seen.append({"rows": rows, "nonce": nonce, "hash": payload_hash(sig)})
        return httpx.Response(200, headers={"PAYMENT-RESPONSE": encode_header(
            {"success": True, "transaction": "0x" + "ab" * 32, "network": NETWORK})}, content=b"{}")


@pytest.mark.parametrize("approval", [False, True], ids=["plain", "approved"])
async def test_signed_payment_is_durable_before_it_leaves(tmp_path: Path, approval: bool) -> None:
    db = tmp_path / "buyer.db"
    asset = Asset(NETWORK, TOKEN, "USD Coin", "2")
    policy = Policy(max_per_payment="$0.10", daily="$5", assets=[asset],
                    approval_threshold="$0" if approval else None)
    asked: list[Any] = []

    def approve(request: Any) -> bool:
        asked.append(request)
        return True

    seller = Seller(db)
    buyer = Buyer(Wallet.from_key(KEY), policy, store=f"sqlite:///{db}", approve=approve)
    async with httpx.AsyncClient(transport=PaymentTransport(buyer, seller, close_buyer=True), timeout=60) as client:
        for _ in range(2):
            assert (await client.get("http://seller.local/paid")).status_code == 200, "paid"
    assert len(asked) == (2 if approval else 0), "the approval hook is asked when the policy says so"
    assert len(seller.seen) == 2, "each payment reached the seller once"
    for seen in seller.seen:
        row = seen["rows"][-1]
        assert row["budget"] == "reserved" and row["usd_micros"] == 10_000, \
            f"the budget is taken before the payment leaves: {row}"
        assert row["outcome"] == "signed" and row["nonce"] == seen["nonce"] and row["payload_hash"] == seen["hash"], \
            f"and the payment's nonce and digest are on disk: {row}"
        assert row["valid_before"], "with its expiry (reconcile reads it)"
    with sqlite3.connect(db) as conn:
        final = conn.execute("SELECT outcome, budget FROM buyer_payments ORDER BY id").fetchall()
    assert final == [("paid", "committed")] * 2, f"then committed once paid: {final}"
