"""httpx transports that answer 402 by paying (async; the sync one runs the same async core on a private
loop thread). Use them through :func:`paywire.client.x402_client` or mount them yourself."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Iterator, Mapping
from typing import Any, Unpack

import httpx

from paywire.client.config import BuyerConfig, BuyerOptions
from paywire.client.core import Payer, Receipt, Sent, already_paying
from paywire.client.engine import Buyer, as_buyer
from paywire.client.policy import Policy
from paywire.client.sse import Ended, ReceiptScanner, SyncReceiptTail
from paywire.transport.loop_thread import run_sync
from paywire.x402.models import SettleResponse

log = logging.getLogger("paywire.client")
SETTLEMENT_KEY = "paywire.settlement"
RECEIPT_KEY = "paywire.receipt"
PAYMENT_KEY = RECEIPT_KEY  # older name


def classify_httpx_error(exc: BaseException) -> Sent | None:
    """Did a failed httpx send reach the server? (connect failures: no; resets and read timeouts: maybe)."""
    if isinstance(exc, httpx.ConnectError | httpx.ConnectTimeout | httpx.PoolTimeout | httpx.UnsupportedProtocol):
        return Sent.NOT_SENT
    if isinstance(exc, httpx.TransportError):
        return Sent.MAYBE_SENT
    return None


def _retry_request(request: httpx.Request, extra: Mapping[str, str] | None) -> httpx.Request:
    if extra is None:
        return request
    headers = httpx.Headers(request.headers)
    for k, v in extra.items():
        headers[k] = v
    return httpx.Request(request.method, request.url, headers=headers, content=request.content,
                         extensions=request.extensions)


class _HttpxExchangeBase:
    def __init__(self, request: httpx.Request) -> None:
        self.request = request
        self.url = str(request.url)
        self.method = request.method
        self.paying = already_paying(request.headers)

    def status(self, response: httpx.Response) -> int:
        return response.status_code

    def headers(self, response: httpx.Response) -> Mapping[str, str]:
        return response.headers

    def classify(self, exc: BaseException) -> Sent | None:
        return classify_httpx_error(exc)

    def attach(self, response: httpx.Response, receipt: Receipt, settlement: SettleResponse | None) -> None:
        response.extensions = {**response.extensions, RECEIPT_KEY: receipt, SETTLEMENT_KEY: settlement}


class _TailAsync(httpx.AsyncByteStream):
    """The body as it arrives, watched for the seller's closing ``payment-response`` event; ``ended`` gets its
    value (None without one) once, when the body ends or is closed."""

    def __init__(self, inner: httpx.AsyncByteStream, ended: Ended) -> None:
        self._inner, self._ended, self._scan = inner, ended, ReceiptScanner()
        self._done = False

    async def _end(self) -> None:
        if not self._done:
            self._done = True
            try:
                await self._ended(self._scan.end())
            except Exception:  # the body the caller reads stays intact; the ledger row stays as it was
                log.exception("paywire: could not record the receipt at the end of a streamed response")

    async def __aiter__(self) -> AsyncIterator[bytes]:
        async for chunk in self._inner:
            self._scan.feed(chunk)
            yield chunk
        await self._end()

    async def aclose(self) -> None:
        try:
            await self._inner.aclose()
        finally:
            await self._end()


class _TailSync(httpx.SyncByteStream):
    """:class:`_TailAsync` for the sync transport (``ended`` runs on the buyer's private loop)."""

    def __init__(self, inner: httpx.SyncByteStream, ended: Ended) -> None:
        self._inner, self._tail = inner, SyncReceiptTail(ended)

    def __iter__(self) -> Iterator[bytes]:
        for chunk in self._inner:
            self._tail.feed(chunk)
            yield chunk
        self._tail.end()

    def close(self) -> None:
        try:
            self._inner.close()
        finally:
            self._tail.end()


class _AsyncHttpxExchange(_HttpxExchangeBase):
    def __init__(self, inner: httpx.AsyncBaseTransport, request: httpx.Request) -> None:
        super().__init__(request)
        self.inner = inner

    async def send(self, extra_headers: Mapping[str, str] | None) -> httpx.Response:
        return await self.inner.handle_async_request(_retry_request(self.request, extra_headers))

    async def read(self, response: httpx.Response) -> bytes:
        return await response.aread()

    async def discard(self, response: httpx.Response) -> None:
        await response.aclose()

    def tail(self, response: httpx.Response, ended: Ended) -> bool:
        """Watch the body for the seller's closing receipt event (see :class:`_TailAsync`); False: cannot."""
        if not isinstance(response.stream, httpx.AsyncByteStream):
            return False
        response.stream = _TailAsync(response.stream, ended)
        return True


class _SyncHttpxExchange(_HttpxExchangeBase):
    def __init__(self, inner: httpx.BaseTransport, request: httpx.Request) -> None:
        super().__init__(request)
        self.inner = inner

    async def send(self, extra_headers: Mapping[str, str] | None) -> httpx.Response:
        return await asyncio.to_thread(self.inner.handle_request, _retry_request(self.request, extra_headers))

    async def read(self, response: httpx.Response) -> bytes:
        return await asyncio.to_thread(response.read)

    async def discard(self, response: httpx.Response) -> None:
        await asyncio.to_thread(response.close)

    def tail(self, response: httpx.Response, ended: Ended) -> bool:
        """Watch the body for the seller's closing receipt event (see :class:`_TailSync`); False: cannot."""
        if not isinstance(response.stream, httpx.SyncByteStream):
            return False
        response.stream = _TailSync(response.stream, ended)
        return True


class PaymentTransport(httpx.AsyncBaseTransport):
    """Async httpx transport: a 402 is paid (within the buyer's policy) and the request resent once with
    the payment; the same signed payment is resent on timeouts/resets/5xx (checklist 30).

    ``buyer``: a :class:`Buyer`, or a wallet to make one from with ``policy``, ``config`` (a
    :class:`~paywire.client.config.BuyerConfig`) and the buyer's options as keywords (which win over
    ``config``). ``close_buyer``: close the buyer with the transport (default: only a buyer made here)."""

    def __init__(self, buyer: Buyer | Payer | Any, inner: httpx.AsyncBaseTransport | None = None, *,
                 close_buyer: bool | None = None, policy: Policy | None = None, config: BuyerConfig | None = None,
                 **options: Unpack[BuyerOptions]) -> None:
        self.buyer, made = as_buyer(buyer, policy, config, options, where="PaymentTransport")
        self.close_buyer = made if close_buyer is None else close_buyer
        self.inner = inner or httpx.AsyncHTTPTransport()

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        await request.aread()
        return await self.buyer.handle(_AsyncHttpxExchange(self.inner, request))

    async def aclose(self) -> None:
        await self.inner.aclose()
        if self.close_buyer:
            await self.buyer.aclose()


class SyncPaymentTransport(httpx.BaseTransport):
    """Sync httpx transport over the same async core (run on a private loop thread); the same arguments as
    :class:`PaymentTransport`."""

    def __init__(self, buyer: Buyer | Payer | Any, inner: httpx.BaseTransport | None = None, *,
                 close_buyer: bool | None = None, policy: Policy | None = None, config: BuyerConfig | None = None,
                 **options: Unpack[BuyerOptions]) -> None:
        self.buyer, made = as_buyer(buyer, policy, config, options, where="SyncPaymentTransport")
        self.close_buyer = made if close_buyer is None else close_buyer
        self.inner = inner or httpx.HTTPTransport()

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        request.read()
        return run_sync(self.buyer.handle(_SyncHttpxExchange(self.inner, request)))

    def close(self) -> None:
        self.inner.close()
        if self.close_buyer:
            run_sync(self.buyer.aclose())


def settlement_of(response: Any) -> SettleResponse | None:
    """The parsed ``PAYMENT-RESPONSE`` of a paid response (httpx or requests), or None."""
    ext = getattr(response, "extensions", None)
    if isinstance(ext, Mapping) and SETTLEMENT_KEY in ext:
        value = ext[SETTLEMENT_KEY]
        return value if isinstance(value, SettleResponse) else None
    value = getattr(response, "paywire_settlement", None)
    return value if isinstance(value, SettleResponse) else None


def receipt_of(response: Any) -> Receipt | None:
    """The ledger receipt of a paid response (httpx or requests), or None when nothing was paid."""
    ext = getattr(response, "extensions", None)
    if isinstance(ext, Mapping) and RECEIPT_KEY in ext:
        value = ext[RECEIPT_KEY]
        return value if isinstance(value, Receipt) else None
    value = getattr(response, "paywire_receipt", None)
    return value if isinstance(value, Receipt) else None
