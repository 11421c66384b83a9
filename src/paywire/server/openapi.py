"""The MPP discovery document (``draft-payment-discovery-00``): an OpenAPI 3.1 document, served at
``GET /openapi.json``, whose operations carry ``x-payment-info`` offers. Built from a seller's routes, no I/O.

Only routes payable through the ``Payment`` scheme (``mpp=...``) are listed, each with one offer per MPP method it
offers (``evm/charge`` mirroring its EIP-3009 x402 offers; ``lightning/charge`` in sats); x402 buyers discover
through the 402 itself and the facilitator's bazaar listing (:mod:`paywire.x402.bazaar`). A route priced per
request (a callable) is listed with ``amount: null``, as the draft says. A glob route (``/api/*``) cannot be
written as an OpenAPI path and is left out; ``/files/{p:path}`` becomes ``/files/{p}``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from paywire.server.core import PaidRoute, Seller
from paywire.server.protocols.mpp import mpp_templates

__all__ = ["CACHE_CONTROL", "openapi_document"]

CACHE_CONTROL = "max-age=300"
_METHODS = ("get", "post", "put", "patch", "delete")
_PATH_PARAM = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)(?::path)?\}")


def _offers(seller: Seller, route: PaidRoute) -> list[dict[str, Any]]:
    static = seller.static_priced(route)
    if static is None:  # priced per request
        return [{"intent": "charge", "method": m, "amount": None} for m in route.mpp]
    offers, decimals = static
    out = []
    for offer in mpp_templates(route.mpp, route.sats, offers, decimals, route.description):
        request: Mapping[str, Any] = offer.request
        entry: dict[str, Any] = {"intent": offer.intent, "method": offer.method,
                                 "amount": str(request.get("amount")) if request.get("amount") is not None else None}
        if request.get("currency"):
            entry["currency"] = str(request["currency"])
        out.append(entry)
    return out


def openapi_document(seller: Seller, *, title: str = "paid API", version: str = "1.0.0",
                     service_info: Mapping[str, Any] | None = None) -> dict[str, Any] | None:
    """The discovery document for ``seller``'s MPP routes, or None when it has none."""
    paths: dict[str, dict[str, Any]] = {}
    for route in seller.routes:
        if not route.mpp or "*" in route.pattern:
            continue
        offers = _offers(seller, route)
        if not offers:
            continue
        path = _PATH_PARAM.sub(lambda m: "{" + m.group(1) + "}", route.pattern)
        methods = [m.lower() for m in sorted(route.methods) if m.lower() in _METHODS] or ["get"]
        for method in methods:
            operation: dict[str, Any] = {
                "x-payment-info": {"offers": offers},
                "responses": {"200": {"description": "Successful response"},
                              "402": {"description": "Payment Required"}},
            }
            if route.description:
                operation["summary"] = route.description
            params = _PATH_PARAM.findall(route.pattern)
            if params:
                operation["parameters"] = [{"name": p, "in": "path", "required": True, "schema": {"type": "string"}}
                                           for p in params]
            paths.setdefault(path, {})[method] = operation
    if not paths:
        return None
    doc: dict[str, Any] = {"openapi": "3.1.0", "info": {"title": title, "version": version}, "paths": paths}
    if service_info:
        doc["x-service-info"] = dict(service_info)
    return doc
