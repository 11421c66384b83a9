"""A remote facilitator (ours or any x402 facilitator) over HTTP, on the lean keep-alive JSON client.

Same wire contract as ``paywire.facilitator.client.HttpFacilitatorClient`` (digest §4: ``POST /verify``,
``POST /settle``, ``GET /supported``; anything but a 200 with a well-formed body is ``FacilitatorUnavailable``,
which for ``/settle`` means "outcome unknown"), with a fraction of the per-call client overhead.
"""

from __future__ import annotations

import json
from typing import Any

from paywire.facilitator.client import FacilitatorUnavailable, parse_answer
from paywire.facilitator.core import AnyPayload, AnyRequirements
from paywire.server.jsonhttp import HttpError, JsonHttpClient
from paywire.x402.models import SettleResponse, SupportedResponse, VerifyResponse


class RemoteFacilitator:
    """``FacilitatorClient`` for a facilitator at ``url`` (optionally with a bearer token)."""

    def __init__(self, url: str, *, bearer_token: str | None = None, timeout: float = 30.0) -> None:
        self.url = url.rstrip("/")
        headers = {"Authorization": f"Bearer {bearer_token}"} if bearer_token else {}
        self._http = JsonHttpClient(self.url, timeout=timeout, headers=headers)
        # /verify then /settle send the same body: encode it once (keyed by the very objects, held here)
        self._bodies: dict[tuple[int, int], tuple[AnyPayload, AnyRequirements, bytes]] = {}

    async def _call(self, method: str, path: str, body: Any = None) -> dict[str, Any]:
        try:
            status, data = await self._http.request(method, path, body)
        except HttpError as exc:
            raise FacilitatorUnavailable(f"{path}: {exc}") from exc
        if status != 200 or not isinstance(data, dict):
            raise FacilitatorUnavailable(f"{path}: HTTP {status}: {str(data)[:200]}")
        return data

    @staticmethod
    def _body(payload: AnyPayload, requirements: AnyRequirements) -> dict[str, Any]:
        return {"x402Version": payload.x402_version, "paymentPayload": payload.to_wire(),
                "paymentRequirements": requirements.to_wire()}

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
            data = json.dumps(self._body(payload, requirements), separators=(",", ":")).encode()
        if keep:
            if len(self._bodies) >= 256:
                self._bodies.clear()
            self._bodies[key] = (payload, requirements, data)
        return data

    async def verify(self, payload: AnyPayload, requirements: AnyRequirements) -> VerifyResponse:
        data = await self._call("POST", "/verify", self._encoded(payload, requirements, True))
        return parse_answer("/verify", VerifyResponse.from_wire, data)

    async def settle(self, payload: AnyPayload, requirements: AnyRequirements) -> SettleResponse:
        data = await self._call("POST", "/settle", self._encoded(payload, requirements, False))
        return parse_answer("/settle", SettleResponse.from_wire, data)

    async def supported(self) -> SupportedResponse:
        return parse_answer("/supported", SupportedResponse.from_wire, await self._call("GET", "/supported"))

    async def aclose(self) -> None:
        await self._http.aclose()
