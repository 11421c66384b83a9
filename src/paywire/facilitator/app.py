"""``POST /verify``, ``POST /settle``, ``GET /supported`` over HTTP (ASGI, digest §4)."""

from __future__ import annotations

import hmac
import json
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from paywire.errors import WireError
from paywire.facilitator.core import Facilitator
from paywire.x402.models import FacilitatorRequest

MAX_BODY_BYTES = 64 * 1024


def _error(status: int, message: str, reason: str | None = None) -> JSONResponse:
    body: dict[str, Any] = {"error": message}
    if reason:
        body["reason"] = reason
    return JSONResponse(body, status_code=status)


async def _parse(request: Request) -> FacilitatorRequest | JSONResponse:
    raw = await request.body()
    if len(raw) > MAX_BODY_BYTES:
        return _error(413, "request body too large")
    try:
        obj = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        return _error(400, "body is not JSON", "invalid_json")
    if not isinstance(obj, dict) or "paymentPayload" not in obj or "paymentRequirements" not in obj:
        return _error(400, "Missing paymentPayload or paymentRequirements", "invalid_payload")
    try:
        return FacilitatorRequest.from_wire(obj)
    except WireError as exc:
        return _error(400, str(exc), exc.reason)


def create_app(facilitator: Facilitator, *, bearer_token: str | None = None) -> Starlette:
    """The facilitator as an ASGI app. Payment failures are 200 with isValid/success false (checklist 39)."""

    def authorized(request: Request) -> bool:
        if bearer_token is None:
            return True
        got = request.headers.get("authorization", "")
        return hmac.compare_digest(got.encode(), f"Bearer {bearer_token}".encode())

    async def verify(request: Request) -> Response:
        if not authorized(request):
            return _error(401, "unauthorized")
        parsed = await _parse(request)
        if isinstance(parsed, JSONResponse):
            return parsed
        res = await facilitator.verify(parsed.payment_payload, parsed.payment_requirements)
        return JSONResponse(res.to_wire())

    async def settle(request: Request) -> Response:
        if not authorized(request):
            return _error(401, "unauthorized")
        parsed = await _parse(request)
        if isinstance(parsed, JSONResponse):
            return parsed
        res = await facilitator.settle(parsed.payment_payload, parsed.payment_requirements)
        return JSONResponse(res.to_wire())

    async def supported(request: Request) -> Response:
        return JSONResponse(facilitator.supported().to_wire())

    async def health(request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    return Starlette(routes=[
        Route("/verify", verify, methods=["POST"]),
        Route("/settle", settle, methods=["POST"]),
        Route("/supported", supported, methods=["GET"]),
        Route("/health", health, methods=["GET"]),
    ])
