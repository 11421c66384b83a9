"""How a resource server talks to a facilitator: in-process or over HTTP, one interface."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol, TypeVar

import httpx

from paywire.errors import PaywireError, WireError
from paywire.facilitator.core import AnyPayload, AnyRequirements, Facilitator
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


class HttpFacilitatorClient:
    """A remote facilitator (ours or any x402 facilitator) over HTTP."""

    def __init__(self, url: str, *, bearer_token: str | None = None, timeout: float = 90.0) -> None:
        self.url = url.rstrip("/")
        headers = {"Authorization": f"Bearer {bearer_token}"} if bearer_token else {}
        self._http = httpx.AsyncClient(timeout=timeout, headers=headers)

    async def _post(self, path: str, payload: AnyPayload, requirements: AnyRequirements) -> dict[str, Any]:
        body = {
            "x402Version": payload.x402_version,
            "paymentPayload": payload.to_wire(),
            "paymentRequirements": requirements.to_wire(),
        }
        try:
            r = await self._http.post(self.url + path, json=body)
            data = r.json()
        except (httpx.HTTPError, ValueError) as exc:
            raise FacilitatorUnavailable(f"{path}: {type(exc).__name__}: {exc}") from exc
        if r.status_code != 200 or not isinstance(data, dict):
            raise FacilitatorUnavailable(f"{path}: HTTP {r.status_code}: {str(data)[:200]}")
        return data

    async def verify(self, payload: AnyPayload, requirements: AnyRequirements) -> VerifyResponse:
        return parse_answer("/verify", VerifyResponse.from_wire, await self._post("/verify", payload, requirements))

    async def settle(self, payload: AnyPayload, requirements: AnyRequirements) -> SettleResponse:
        return parse_answer("/settle", SettleResponse.from_wire, await self._post("/settle", payload, requirements))

    async def supported(self) -> SupportedResponse:
        try:
            r = await self._http.get(self.url + "/supported")
            return SupportedResponse.from_wire(r.json())
        except (httpx.HTTPError, ValueError, WireError) as exc:
            raise FacilitatorUnavailable(f"/supported: {exc}") from exc

    async def settlement(self, settlement_id: str) -> dict[str, Any] | None:
        """``GET /settlements/{id}`` of a paywire facilitator: the record, or None when unknown.

        The id is ``X-Paywire-Settlement-Id`` of the ``/settle`` answer, or
        ``paywire.store.settlements.settlement_id(network, asset, payer, nonce)``.
        """
        try:
            r = await self._http.get(f"{self.url}/settlements/{settlement_id}")
            data = r.json()
        except (httpx.HTTPError, ValueError) as exc:
            raise FacilitatorUnavailable(f"/settlements: {type(exc).__name__}: {exc}") from exc
        if r.status_code == 404:
            return None
        if r.status_code != 200 or not isinstance(data, dict):
            raise FacilitatorUnavailable(f"/settlements: HTTP {r.status_code}: {str(data)[:200]}")
        return data

    async def aclose(self) -> None:
        await self._http.aclose()
