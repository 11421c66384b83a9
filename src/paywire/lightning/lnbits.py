"""LNbits wallet over its REST API (``/api/v1/payments``): invoices with the invoice key, payments with the
admin key. The payee needs only ``invoice_key``; a payer needs ``admin_key``."""

from __future__ import annotations

import time
from typing import Any

import httpx

from paywire.errors import WireError
from paywire.lightning.base import Invoice, InvoiceStatus, LightningError, PaymentResult
from paywire.lightning.bolt11 import decode_bolt11


class LnbitsBackend:
    """``LightningBackend`` for one LNbits wallet."""

    def __init__(self, url: str, *, invoice_key: str | None = None, admin_key: str | None = None,
                 timeout: float = 30.0, transport: httpx.AsyncBaseTransport | None = None) -> None:
        if not invoice_key and not admin_key:
            raise ValueError("give the wallet's invoice key (receive) and/or admin key (pay)")
        self.url = url.rstrip("/")
        self._invoice_key = invoice_key or admin_key
        self._admin_key = admin_key
        self._client = httpx.AsyncClient(base_url=self.url, timeout=timeout, transport=transport)

    async def aclose(self) -> None:
        await self._client.aclose()

    async def _call(self, method: str, path: str, key: str | None, **kw: Any) -> Any:
        try:
            r = await self._client.request(method, path, headers={"X-Api-Key": key or ""}, **kw)
        except httpx.HTTPError as exc:
            raise LightningError(f"LNbits unreachable: {exc}", retryable=True) from exc
        if r.status_code >= 400:
            try:
                detail = r.json().get("detail", r.text)
            except ValueError:
                detail = r.text
            raise LightningError(f"LNbits {method} {path} → {r.status_code}: {str(detail)[:200]}",
                                 retryable=r.status_code >= 500)
        try:
            return r.json()
        except ValueError:
            raise LightningError("LNbits answered with non-JSON", retryable=True) from None

    async def create_invoice(self, amount_sat: int, memo: str = "", expiry: int = 600) -> Invoice:
        if amount_sat <= 0:
            raise ValueError("amount_sat must be positive")
        d = await self._call("POST", "/api/v1/payments", self._invoice_key,
                             json={"out": False, "amount": amount_sat, "unit": "sat", "memo": memo,
                                   "expiry": expiry})
        bolt11 = d.get("bolt11") or d.get("payment_request")
        payment_hash = d.get("payment_hash")
        if not isinstance(bolt11, str) or not isinstance(payment_hash, str):
            raise LightningError("LNbits invoice answer lacks bolt11/payment_hash")
        try:
            inv = decode_bolt11(bolt11)
        except WireError as exc:
            raise LightningError(f"LNbits returned an undecodable invoice: {exc}") from None
        if inv.payment_hash != payment_hash.lower() or inv.amount_msat != amount_sat * 1000:
            raise LightningError("LNbits invoice does not match the requested amount/hash")
        return Invoice(bolt11, inv.payment_hash, amount_sat, float(inv.expires_at))

    async def lookup_invoice(self, payment_hash: str) -> InvoiceStatus:
        d = await self._call("GET", f"/api/v1/payments/{payment_hash}", self._invoice_key)
        paid = d.get("paid") is True
        preimage = d.get("preimage") if paid else None
        return InvoiceStatus(payment_hash, paid, preimage if isinstance(preimage, str) else None,
                             failed=d.get("status") == "failed")

    async def pay_invoice(self, bolt11: str, *, max_fee_sat: int = 10) -> PaymentResult:
        if not self._admin_key:
            raise LightningError("paying needs the wallet's admin key")
        started = time.monotonic()
        d = await self._call("POST", "/api/v1/payments", self._admin_key, json={"out": True, "bolt11": bolt11})
        payment_hash = str(d.get("payment_hash", ""))
        preimage = d.get("preimage")
        status = d.get("status")
        if status not in (None, "success") or not isinstance(preimage, str) or len(preimage) != 64:
            # pending payments: poll a little (FakeWallet and internal payments settle at once)
            while time.monotonic() - started < 30:
                st = await self._call("GET", f"/api/v1/payments/{payment_hash}", self._admin_key)
                if st.get("paid") is True and isinstance(st.get("preimage"), str):
                    preimage = st["preimage"]
                    break
                if st.get("status") == "failed":
                    raise LightningError("payment failed")
            else:
                raise LightningError("payment still pending", retryable=True)
        fee = d.get("fee")
        return PaymentResult(payment_hash, str(preimage), abs(int(fee)) if isinstance(fee, int) else 0)
