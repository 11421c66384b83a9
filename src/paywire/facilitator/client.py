"""How a resource server talks to a facilitator: in-process or over HTTP, one interface."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any, Protocol, TypeVar

from paywire.errors import PaywireError, WireError
from paywire.facilitator.core import AnyPayload, AnyRequirements, Facilitator
from paywire.transport.keepalive import HttpError, KeepAliveClient
from paywire.transport.rpc_http import RpcHttpClient
from paywire.x402.models import SettleResponse, SupportedResponse, VerifyResponse


class FacilitatorClient(Protocol):
    """What a resource server needs from a facilitator. (``LocalFacilitatorClient`` and
    ``HttpFacilitatorClient`` also offer ``settlement(id)`` for paywire facilitators that keep records.)"""

    async def verify(self, payload: AnyPayload, requirements: AnyRequirements) -> VerifyResponse: ...
    async def settle(self, payload: AnyPayload, requirements: AnyRequirements) -> SettleResponse: ...
    async def supported(self) -> SupportedResponse: ...


class FacilitatorUnavailable(PaywireError):
    """The facilitator did not answer usefully; for settle this means the outcome is unknown."""


_Answer = TypeVar("_Answer")


def parse_answer(path: str, parse: Callable[[Any], _Answer], data: Any) -> _Answer:
    """A facilitator's 200 body as a model; a malformed one is ``FacilitatorUnavailable`` (outcome unknown)."""
    try:
        return parse(data)
    except WireError as exc:
        raise FacilitatorUnavailable(f"{path} answered garbage: {exc}") from exc


class LocalFacilitatorClient:
    """A ``Facilitator`` in this process (self-facilitating servers, the demo)."""

    def __init__(self, facilitator: Facilitator) -> None:
        self.facilitator = facilitator

    async def verify(self, payload: AnyPayload, requirements: AnyRequirements) -> VerifyResponse:
        return await self.facilitator.verify(payload, requirements)

    async def settle(self, payload: AnyPayload, requirements: AnyRequirements) -> SettleResponse:
        return await self.facilitator.settle(payload, requirements)

    async def supported(self) -> SupportedResponse:
        return self.facilitator.supported()

    async def settlement(self, settlement_id: str) -> dict[str, Any] | None:
        """The settlement record (``GET /settlements/{id}`` shape), or None when unknown."""
        row = await self.facilitator.settlement(settlement_id)
        return row.to_json() if row is not None else None


def prefer_wait(timeout: float) -> str:
    """The ``Prefer: wait=N`` value (RFC 7240 §4.3) a client with ``timeout`` sends: a paywire facilitator then
    answers ``/settle`` within N seconds (``settlement_pending`` with the record's transaction if it must), so
    the answer arrives before the client gives up. N leaves room for the answer to travel."""
    return f"wait={max(1, int(timeout - min(3.0, timeout * 0.2)))}"


class HttpFacilitatorClient:
    """A remote facilitator (ours or any x402 facilitator) over HTTP.

    ``POST /verify`` and ``POST /settle`` (two per paid request) go over the lean asyncio.Protocol client
    (:class:`~paywire.transport.rpc_http.RpcHttpClient`) for ``http://`` URLs, the rest (``GET``, ``https://``)
    over the h11 keep-alive client. Neither sends a ``/settle`` twice: once written, a lost connection is an error.

    Digest §4: ``POST /verify``, ``POST /settle``, ``GET /supported``; anything but a 200 with a well-formed body
    is ``FacilitatorUnavailable``, which for ``/settle`` means "outcome unknown". ``timeout``: seconds per call
    (30, as the official clients); requests carry ``Prefer: wait=N`` (:func:`prefer_wait`) so a paywire
    facilitator answers a slow settlement with ``settlement_pending`` in time instead of running into it.
    """

    def __init__(self, url: str, *, bearer_token: str | None = None, timeout: float = 30.0) -> None:
        self.url = url.rstrip("/")
        headers = {"Prefer": prefer_wait(timeout)}
        if bearer_token:
            headers["Authorization"] = f"Bearer {bearer_token}"
        self._http = KeepAliveClient(self.url, timeout=timeout, headers=headers)
        self._post = RpcHttpClient(self.url, timeout=timeout, headers=headers) if self.url.startswith("http://") \
            else None
        # /verify then /settle send the same body: encode it once (keyed by the very objects, held here)
        self._bodies: dict[tuple[int, int], tuple[AnyPayload, AnyRequirements, bytes]] = {}

    async def _call(self, method: str, path: str, body: bytes | None = None,
                    missing: bool = False) -> dict[str, Any] | None:
        try:
            if self._post is not None and method == "POST" and body is not None:
                # /verify is a read: it may be asked again if a kept-alive connection closed under it
                status, raw = await self._post.post(body, path=path, idempotent=path == "/verify")
                try:
                    data: Any = json.loads(raw) if raw else None
                except ValueError:
                    data = None
            else:
                status, data = await self._http.request(method, path, body)
        except HttpError as exc:
            raise FacilitatorUnavailable(f"{path}: {exc}") from exc
        if missing and status == 404:
            return None
        if status != 200 or not isinstance(data, dict):
            raise FacilitatorUnavailable(f"{path}: HTTP {status}: {str(data)[:200]}")
        return data

    async def _answer(self, method: str, path: str, body: bytes | None = None) -> dict[str, Any]:
        data = await self._call(method, path, body)
        assert data is not None
        return data

    def prime(self, payload: AnyPayload, requirements: AnyRequirements, payload_json: str,
              requirements_json: str) -> None:
        """Remember the request body for these two objects, built from their JSON texts (the seller has them)."""
        data = (f'{{"x402Version":{payload.x402_version},"paymentPayload":{payload_json},'
                f'"paymentRequirements":{requirements_json}}}').encode()
        if len(self._bodies) >= 256:
            self._bodies.clear()
        self._bodies[(id(payload), id(requirements))] = (payload, requirements, data)

    def _encoded(self, payload: AnyPayload, requirements: AnyRequirements, keep: bool) -> bytes:
        key = (id(payload), id(requirements))
        hit = self._bodies.pop(key, None)
        if hit is not None and hit[0] is payload and hit[1] is requirements:
            data = hit[2]
        else:
            body = {"x402Version": payload.x402_version, "paymentPayload": payload.to_wire(),
                    "paymentRequirements": requirements.to_wire()}
            data = json.dumps(body, separators=(",", ":")).encode()
        if keep:
            if len(self._bodies) >= 256:
                self._bodies.clear()
            self._bodies[key] = (payload, requirements, data)
        return data

    async def verify(self, payload: AnyPayload, requirements: AnyRequirements) -> VerifyResponse:
        data = await self._answer("POST", "/verify", self._encoded(payload, requirements, True))
        return parse_answer("/verify", VerifyResponse.from_wire, data)

    async def settle(self, payload: AnyPayload, requirements: AnyRequirements) -> SettleResponse:
        data = await self._answer("POST", "/settle", self._encoded(payload, requirements, False))
        return parse_answer("/settle", SettleResponse.from_wire, data)

    async def supported(self) -> SupportedResponse:
        return parse_answer("/supported", SupportedResponse.from_wire, await self._answer("GET", "/supported"))

    async def settlement(self, settlement_id: str) -> dict[str, Any] | None:
        """``GET /settlements/{id}`` of a paywire facilitator: the record, or None when unknown.

        The id is ``X-Paywire-Settlement-Id`` of the ``/settle`` answer, or
        ``paywire.store.settlements.settlement_id(network, asset, payer, nonce)``.
        """
        return await self._call("GET", f"/settlements/{settlement_id}", missing=True)

    async def aclose(self) -> None:
        await self._http.aclose()
        if self._post is not None:
            await self._post.aclose()
