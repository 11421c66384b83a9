"""LND over its REST gateway: ``POST /v1/invoices``, ``GET /v1/invoice/{r_hash}``, ``POST /v2/router/send``.

Authentication is the hex macaroon in ``Grpc-Metadata-macaroon``; TLS uses the node's ``tls.cert``. LND REST
encodes ``bytes`` fields as base64 and ``Payment.payment_preimage`` (routerrpc) as hex; the router stream is
newline-delimited ``{"result": Payment}`` objects.
"""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import httpx

from paywire.errors import WireError
from paywire.lightning.base import Invoice, InvoiceStatus, LightningError, PaymentResult
from paywire.lightning.bolt11 import decode_bolt11


def _b64_to_hex(value: Any) -> str:
    if not isinstance(value, str) or not value:
        return ""
    return base64.b64decode(value.replace("-", "+").replace("_", "/") + "=" * (-len(value) % 4)).hex()


class LndRestBackend:
    """``LightningBackend`` for an LND node (invoice macaroon to receive, admin macaroon to pay)."""

    def __init__(self, url: str, macaroon_hex: str, *, tls_cert: str | Path | None = None,
                 timeout: float = 60.0, transport: httpx.AsyncBaseTransport | None = None) -> None:
        verify: Any = str(tls_cert) if tls_cert else True
        self._client = httpx.AsyncClient(base_url=url.rstrip("/"), timeout=timeout, verify=verify,
                                         transport=transport, headers={"Grpc-Metadata-macaroon": macaroon_hex})

    async def aclose(self) -> None:
        await self._client.aclose()

    async def _json(self, method: str, path: str, **kw: Any) -> dict[str, Any]:
        try:
            r = await self._client.request(method, path, **kw)
        except httpx.HTTPError as exc:
            raise LightningError(f"LND unreachable: {exc}", retryable=True) from exc
        if r.status_code >= 400:
            raise LightningError(f"LND {method} {path} → {r.status_code}: {r.text[:200]}",
                                 retryable=r.status_code >= 500)
        try:
            d = r.json()
        except ValueError:
            raise LightningError("LND answered with non-JSON", retryable=True) from None
        if not isinstance(d, dict):
            raise LightningError("LND answered with a non-object")
        return d

    async def create_invoice(self, amount_sat: int, memo: str = "", expiry: int = 600) -> Invoice:
        d = await self._json("POST", "/v1/invoices", json={"value": str(amount_sat), "memo": memo,
                                                           "expiry": str(expiry)})
        bolt11, r_hash = d.get("payment_request"), _b64_to_hex(d.get("r_hash"))
        if not isinstance(bolt11, str) or len(r_hash) != 64:
            raise LightningError("LND AddInvoice answer lacks payment_request/r_hash")
        try:
            inv = decode_bolt11(bolt11)
        except WireError as exc:
            raise LightningError(f"LND returned an undecodable invoice: {exc}") from None
        if inv.payment_hash != r_hash:
            raise LightningError("LND invoice hash does not match r_hash")
        return Invoice(bolt11, r_hash, amount_sat, float(inv.expires_at))

    async def lookup_invoice(self, payment_hash: str) -> InvoiceStatus:
        d = await self._json("GET", f"/v1/invoice/{payment_hash}")
        state = d.get("state")
        paid = state == "SETTLED" or (state is None and d.get("settled") is True)
        preimage = _b64_to_hex(d.get("r_preimage")) if paid else ""
        return InvoiceStatus(payment_hash, paid, preimage or None, failed=state == "CANCELED")

    async def pay_invoice(self, bolt11: str, *, max_fee_sat: int = 10) -> PaymentResult:
        body = {"payment_request": bolt11, "timeout_seconds": 60, "fee_limit_sat": str(max_fee_sat),
                "no_inflight_updates": True}
        last: dict[str, Any] = {}
        try:
            async with self._client.stream("POST", "/v2/router/send", json=body) as r:
                if r.status_code >= 400:
                    raise LightningError(f"LND SendPaymentV2 → {r.status_code}: {(await r.aread())[:200]!r}")
                async for line in r.aiter_lines():
                    if not line.strip():
                        continue
                    msg = json.loads(line)
                    if "error" in msg:
                        raise LightningError(f"LND SendPaymentV2 error: {msg['error']}")
                    last = msg.get("result", msg)
                    if last.get("status") in ("SUCCEEDED", "FAILED"):
                        break
        except httpx.HTTPError as exc:
            raise LightningError(f"LND unreachable while paying: {exc}", retryable=True) from exc
        except ValueError as exc:
            raise LightningError(f"LND router stream is not JSON: {exc}", retryable=True) from exc
        status = last.get("status")
        if status == "FAILED":
            raise LightningError(f"payment failed: {last.get('failure_reason', 'unknown')}")
        if status != "SUCCEEDED":
            raise LightningError(f"payment not final ({status})", retryable=True)
        preimage = str(last.get("payment_preimage", ""))
        if len(preimage) != 64:
            raise LightningError("LND reported success without a 32-byte preimage")
        fee = last.get("fee_msat", "0")
        return PaymentResult(str(last.get("payment_hash", "")), preimage.lower(), int(fee) if str(fee).isdigit() else 0)
