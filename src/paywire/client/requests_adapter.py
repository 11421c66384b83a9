"""A ``requests`` adapter that pays 402s through the same async core (run on a private loop thread).

A paid streamed response (``text/event-stream``, a variable price) has its receipt as the stream's closing
``event: payment-response``: the adapter watches the body as it is read (``response.content``, ``iter_content``,
``iter_lines``, ``raw.read``) and finishes the ledger row with that receipt when the body ends or is closed."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator, Mapping
from typing import Any, Unpack

import requests
from requests.adapters import HTTPAdapter

from paywire.client.config import BuyerConfig, BuyerOptions
from paywire.client.core import Payer, Receipt, Sent, already_paying
from paywire.client.engine import Buyer, as_buyer
from paywire.client.policy import Policy
from paywire.client.sse import Ended, SyncReceiptTail
from paywire.transport.loop_thread import run_sync
from paywire.x402.models import SettleResponse

log = logging.getLogger("paywire.client")


def classify_requests_error(exc: BaseException) -> Sent | None:
    """Did a failed ``requests`` send reach the server?"""
    from urllib3.exceptions import MaxRetryError, NewConnectionError

    if isinstance(exc, requests.exceptions.ConnectTimeout):
        return Sent.NOT_SENT
    if isinstance(exc, requests.exceptions.ConnectionError):
        reason: Any = exc.args[0] if exc.args else None
        if isinstance(reason, MaxRetryError):
            reason = reason.reason
        if isinstance(reason, NewConnectionError):
            return Sent.NOT_SENT
        return Sent.MAYBE_SENT
    if isinstance(exc, requests.exceptions.Timeout | requests.exceptions.ChunkedEncodingError):
        return Sent.MAYBE_SENT
    return None


class _TailRaw:
    """A response's ``raw`` (urllib3) body, watched for the seller's closing ``payment-response`` event as the
    caller reads it; ``ended`` gets its value (None without one) once, on the buyer's private loop, when the body
    ends or is closed. Everything else is the inner body's."""

    def __init__(self, inner: Any, ended: Ended) -> None:
        self._inner, self._tail = inner, SyncReceiptTail(ended)

    def stream(self, amt: int | None = 2 ** 16, decode_content: bool | None = None) -> Iterator[bytes]:
        for chunk in self._inner.stream(amt, decode_content=decode_content):
            self._tail.feed(chunk)
            yield chunk
        self._tail.end()

    def read(self, amt: int | None = None, *args: Any, **kwargs: Any) -> bytes:
        data: bytes = self._inner.read(amt, *args, **kwargs)
        self._tail.feed(data)
        if amt is None or not data:
            self._tail.end()
        return data

    def close(self) -> None:
        try:
            self._inner.close()
        finally:
            self._tail.end()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


class _RequestsExchange:
    def __init__(self, adapter: PaymentAdapter, request: requests.PreparedRequest, kwargs: dict[str, Any]) -> None:
        self.adapter = adapter
        self.request = request
        self.kwargs = kwargs
        self.url = request.url or ""
        self.method = request.method or "GET"
        self.paying = already_paying({str(k): "" for k in request.headers})

    async def send(self, extra_headers: Mapping[str, str] | None) -> requests.Response:
        req = self.request
        if extra_headers is not None:
            req = self.request.copy()
            req.headers.update(extra_headers)
        return await asyncio.to_thread(HTTPAdapter.send, self.adapter, req, **self.kwargs)

    def status(self, response: requests.Response) -> int:
        return int(response.status_code)

    def headers(self, response: requests.Response) -> Mapping[str, str]:
        return response.headers

    async def read(self, response: requests.Response) -> bytes:
        return await asyncio.to_thread(lambda: response.content)

    async def discard(self, response: requests.Response) -> None:
        await asyncio.to_thread(response.close)

    def classify(self, exc: BaseException) -> Sent | None:
        return classify_requests_error(exc)

    def tail(self, response: requests.Response, ended: Ended) -> bool:
        """Watch the body for the seller's closing receipt event (see :class:`_TailRaw`); False: cannot."""
        if response.raw is None or not hasattr(response.raw, "stream"):
            return False
        response.raw = _TailRaw(response.raw, ended)
        return True

    def attach(self, response: requests.Response, receipt: Receipt, settlement: SettleResponse | None) -> None:
        response.paywire_receipt = receipt  # type: ignore[attr-defined]
        response.paywire_settlement = settlement  # type: ignore[attr-defined]


class PaymentAdapter(HTTPAdapter):
    """Mount on a ``requests.Session``: 402s are paid within the buyer's policy; the parsed settlement is
    ``settlement_of(response)`` (also ``response.paywire_settlement``).

    ``buyer``: a :class:`Buyer`, or a wallet to make one from with ``policy``, ``config`` (a
    :class:`~paywire.client.config.BuyerConfig`) and the buyer's options as keywords (which win over ``config``).
    ``adapter_kw``: ``HTTPAdapter``'s own arguments (pool sizes, retries)."""

    def __init__(self, buyer: Buyer | Payer | Any, *, adapter_kw: Mapping[str, Any] | None = None,
                 policy: Policy | None = None, config: BuyerConfig | None = None,
                 **options: Unpack[BuyerOptions]) -> None:
        super().__init__(**dict(adapter_kw or {}))
        self.buyer, _ = as_buyer(buyer, policy, config, options, where="PaymentAdapter")

    def send(self, request: requests.PreparedRequest, stream: bool = False, timeout: Any = None,
             verify: Any = True, cert: Any = None, proxies: Any = None) -> requests.Response:
        kwargs = {"stream": stream, "timeout": timeout, "verify": verify, "cert": cert, "proxies": proxies}
        return run_sync(self.buyer.handle(_RequestsExchange(self, request, kwargs)))


def x402_session(wallet: Buyer | Payer | Any, policy: Policy | None = None, *,
                 session: requests.Session | None = None, config: BuyerConfig | None = None,
                 **options: Unpack[BuyerOptions]) -> requests.Session:
    """A ``requests.Session`` that pays 402s (http and https) with ``wallet`` (a :class:`Buyer`, or a wallet to
    make one from with ``policy``, ``config`` and the buyer's options as keywords, which win over ``config``)."""
    buyer, _ = as_buyer(wallet, policy, config, options, where="x402_session")
    s = session or requests.Session()
    adapter = PaymentAdapter(buyer)
    s.mount("http://", adapter)
    s.mount("https://", adapter)
    return s
