"""Ask a seller for a cooperative refund of a ``batch-settlement`` channel over HTTP: probe the route's 402 for
its offer, send a refund payload (a zero-charge voucher, optionally an amount), and adopt the answer."""

from __future__ import annotations

from typing import Any

from paywire.schemes.evm_batch import payload as pl
from paywire.schemes.evm_batch.client import BatchEvmClient
from paywire.x402.codec import decode_payment_required, decode_payment_response, encode_payment_payload
from paywire.x402.models import PaymentPayload, PaymentRequirements, SettleResponse


class RefundFailed(RuntimeError):
    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


async def refund_channel(client: BatchEvmClient, url: str, amount: int | None = None, *,
                         http: Any = None, method: str = "GET") -> SettleResponse:
    """Refund (part of) the unclaimed deposit of the channel ``client`` pays ``url`` with; returns the seller's
    settlement (``amount``: what came back, ``transaction``: the refund). ``RefundFailed`` says why not."""
    return (await refund_offer(client, url, amount, http=http, method=method))[0]


async def refund_offer(client: BatchEvmClient, url: str, amount: int | None = None, *,
                       http: Any = None, method: str = "GET") -> tuple[SettleResponse, PaymentRequirements]:
    """:func:`refund_channel`, also returning the offer the refund was made under (its token and payee)."""
    import httpx

    own = http is None
    http = http or httpx.AsyncClient(timeout=60)
    try:
        probe = await http.request(method, url)
        header = probe.headers.get("payment-required")
        if probe.status_code != 402 or header is None:
            raise RefundFailed("not_a_paid_route", f"{url} answered {probe.status_code} without an x402 offer")
        offer = next((o for o in decode_payment_required(header).accepts if client.can_pay(o)), None)
        if offer is None:
            raise RefundFailed(pl.SCHEME_MISMATCH, f"{url} offers no batch-settlement this client can use")
        for _ in range(2):
            payload = PaymentPayload(accepted=offer, payload=await client.refund_payload(offer, amount))
            r = await http.request(method, url, headers={"PAYMENT-SIGNATURE": encode_payment_payload(payload)})
            paid = r.headers.get("payment-response")
            if r.status_code == 200 and paid is not None:
                res = decode_payment_response(paid)
                await client.settled(offer, res)
                return res, offer
            again = r.headers.get("payment-required")
            reason = decode_payment_required(again).error if again else None
            if again and reason and await client.recover(reason, offer, next(
                    (o.extra for o in decode_payment_required(again).accepts if o.scheme == pl.SCHEME), {})):
                continue
            raise RefundFailed(reason or f"http_{r.status_code}", f"{url} refused the refund: {reason or r.text}")
        raise RefundFailed(pl.CUMULATIVE_MISMATCH, "the seller's channel state did not settle down")
    finally:
        if own:
            await http.aclose()


__all__ = ["RefundFailed", "refund_channel", "refund_offer"]
