"""httpx transport that answers 402 by paying once and retrying (async; sync wraps it)."""

from __future__ import annotations

from typing import Any

import httpx

from paywire.client.core import Payer, PaymentError, challenge_error, parse_challenge, parse_settlement
from paywire.errors import WireError
from paywire.x402.codec import PAYMENT_SIGNATURE, X_PAYMENT

SETTLEMENT_KEY = "paywire.settlement"
PAYMENT_KEY = "paywire.payment"


class PaymentTransport(httpx.AsyncBaseTransport):
    """Wraps another transport; a 402 is paid once, never twice (checklist 30)."""

    def __init__(self, payer: Payer, inner: httpx.AsyncBaseTransport | None = None) -> None:
        self.payer = payer
        self.inner = inner or httpx.AsyncHTTPTransport()

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        await request.aread()
        response = await self.inner.handle_async_request(request)
        if response.status_code != 402 or PAYMENT_SIGNATURE in request.headers or X_PAYMENT in request.headers:
            return response
        body = await response.aread()
        await response.aclose()
        try:
            challenge = parse_challenge(response.headers, body)
        except WireError as exc:
            raise PaymentError(f"unreadable 402 from {request.url}: {exc}") from exc
        attempt = await self.payer.pay(challenge)
        headers = dict(request.headers)
        headers[attempt.header] = attempt.value
        retry = httpx.Request(request.method, request.url, headers=headers, content=request.content,
                              extensions=request.extensions)
        paid = await self.inner.handle_async_request(retry)
        paid.extensions = {**paid.extensions, PAYMENT_KEY: attempt}
        if paid.status_code == 402:
            await paid.aread()
            reason = challenge_error(paid.headers) or "payment refused"
            raise PaymentError(f"{request.url} refused the payment: {reason}")
        settlement = parse_settlement(paid.headers)
        if settlement is not None:
            paid.extensions = {**paid.extensions, SETTLEMENT_KEY: settlement}
        return paid

    async def aclose(self) -> None:
        await self.inner.aclose()


def settlement_of(response: httpx.Response) -> Any:
    """The ``SettleResponse`` of a paid response, or None."""
    return response.extensions.get(SETTLEMENT_KEY)
