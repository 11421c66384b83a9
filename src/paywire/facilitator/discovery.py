"""``GET /discovery/resources`` (x402 bazaar, digest §4.4): the resources this facilitator has settled payments
for, when the payment carried the seller's ``bazaar`` extension (the client echoes it from the 402).

The catalogue lives next to the settlements (same database) when the facilitator has a store, else in memory
(:class:`MemoryCatalog`).
Query: ``type``, ``payTo``, ``network``, ``scheme``, ``limit`` (1–100, default 20), ``offset``.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping
from typing import Any

from paywire.store.db import Database
from paywire.store.discovery import DiscoveryCatalog
from paywire.x402.bazaar import BAZAAR, check_discovery, listing, listing_item
from paywire.x402.models import PaymentPayload, PaymentPayloadV1, PaymentRequirements, PaymentRequirementsV1

__all__ = ["Discovery"]

log = logging.getLogger("paywire.facilitator")
MAX_LIMIT = 100


class MemoryCatalog:
    """The catalogue of a facilitator without a store (lost on restart; at most ``cap`` resources, oldest
    dropped first). Same interface as :class:`~paywire.store.discovery.DiscoveryCatalog`."""

    def __init__(self, cap: int = 10_000) -> None:
        self.cap = cap
        self._rows: dict[tuple[str, str], dict[str, Any]] = {}

    async def upsert(self, *, resource: str, tool: str, kind: str, x402_version: int, accepts: Any,
                     description: str | None, mime_type: str | None, extensions: Any, pay_to: str, network: str,
                     scheme: str) -> None:
        key = (resource, tool)
        self._rows.pop(key, None)
        self._rows[key] = {"resource": resource, "tool": tool, "type": kind, "x402_version": x402_version,
                           "accepts": list(accepts), "description": description, "mime_type": mime_type,
                           "extensions": extensions, "pay_to": pay_to, "network": network, "scheme": scheme,
                           "updated_at": time.time()}
        while len(self._rows) > self.cap:
            self._rows.pop(next(iter(self._rows)))

    async def page(self, *, kind: str | None = None, pay_to: str | None = None, network: str | None = None,
                   scheme: str | None = None, limit: int = 20, offset: int = 0) -> tuple[list[dict[str, Any]], int]:
        rows = [r for r in reversed(self._rows.values())
                if (kind is None or r["type"] == kind) and (network is None or r["network"] == network)
                and (scheme is None or r["scheme"] == scheme)
                and (pay_to is None or r["pay_to"].lower() == pay_to.lower())]
        return rows[offset:offset + limit], len(rows)


class Discovery:
    """Records settled resources and answers the listing."""

    def __init__(self, db: Database | None = None) -> None:
        self._db = db
        self._catalog: DiscoveryCatalog | MemoryCatalog | None = None
        self._lock = asyncio.Lock()

    async def catalog(self) -> DiscoveryCatalog | MemoryCatalog:
        if self._catalog is None:
            async with self._lock:
                if self._catalog is None:
                    if self._db is None:
                        self._catalog = MemoryCatalog()
                    else:
                        catalog = DiscoveryCatalog(self._db)
                        await catalog.migrate()
                        self._catalog = catalog
        return self._catalog

    async def record(self, payload: PaymentPayload | PaymentPayloadV1,
                     requirements: PaymentRequirements | PaymentRequirementsV1) -> str | None:
        """Catalogue a settled payment's resource when it carries a valid ``bazaar`` extension; returns why not
        (None when listed or when there is nothing to list)."""
        if not isinstance(payload, PaymentPayload) or not payload.extensions:
            return None
        ext = payload.extensions.get(BAZAAR)
        if ext is None:
            return None
        problem = check_discovery(ext)
        if problem is not None:
            return problem
        resource = payload.resource
        if resource is None or not resource.url.startswith(("http://", "https://")):
            return "the payment names no resource URL"
        inp = ext["info"]["input"]
        tool = str(inp.get("toolName", inp.get("tool", ""))) if inp.get("type") == "mcp" else ""
        accepted = payload.accepted
        catalog = await self.catalog()
        await catalog.upsert(resource=resource.url, tool=tool, kind=str(inp.get("type")), x402_version=2,
                             accepts=[accepted.to_wire()], description=resource.description or None,
                             mime_type=resource.mime_type or None, extensions={BAZAAR: ext},
                             pay_to=accepted.pay_to, network=accepted.network, scheme=accepted.scheme)
        return None

    async def listing(self, query: Mapping[str, str]) -> tuple[int, dict[str, Any]]:
        """(status, JSON body) for ``GET /discovery/resources?…``."""
        try:
            limit = int(query.get("limit", "20"))
            offset = int(query.get("offset", "0"))
        except ValueError:
            return 400, {"error": "limit and offset must be integers"}
        if not 1 <= limit <= MAX_LIMIT or offset < 0:
            return 400, {"error": f"limit must be 1..{MAX_LIMIT} and offset >= 0"}
        catalog = await self.catalog()
        rows, total = await catalog.page(kind=query.get("type"), pay_to=query.get("payTo"),
                                         network=query.get("network"), scheme=query.get("scheme"),
                                         limit=limit, offset=offset)
        items = [listing_item(r["resource"], r["type"], r["x402_version"], r["accepts"], r["updated_at"],
                              description=r["description"], mime_type=r["mime_type"], extensions=r["extensions"])
                 for r in rows]
        return 200, listing(items, limit, offset, total)
