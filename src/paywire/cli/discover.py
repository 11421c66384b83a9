"""``paywire discover URL|FACILITATOR``: what can be bought, at what price, by which protocols.

Sources, in order: a facilitator's x402 bazaar listing (``URL/discovery/resources``), the URL's own 402 (every
protocol the buyer speaks), the service's MPP discovery document (``/openapi.json`` with ``x-payment-info``)."""

from __future__ import annotations

import asyncio
import json
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

console = Console()


def register(app: typer.Typer) -> None:
    """Add this area's commands to the ``paywire`` app."""
    app.command()(discover)


async def facilitator_listing(http: Any, url: str, limit: int) -> list[dict[str, Any]] | None:
    """The facilitator's bazaar listing (every page up to ``limit`` items), or None when ``url`` has none."""
    items: list[dict[str, Any]] = []
    offset = 0
    while len(items) < limit:
        r = await http.get(url.rstrip("/") + "/discovery/resources",
                           params={"limit": min(100, limit - len(items)), "offset": offset})
        if r.status_code != 200:
            return None if offset == 0 else items
        try:
            data = r.json()
        except ValueError:
            return None if offset == 0 else items
        page = data.get("items") if isinstance(data, dict) else None
        if not isinstance(page, list):
            return None if offset == 0 else items
        items += [i for i in page if isinstance(i, dict)]
        total = int((data.get("pagination") or {}).get("total", 0))
        offset += len(page)
        if not page or offset >= total:
            break
    return items


def listing_rows(items: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per (resource, offer) of a facilitator listing."""
    rows = []
    for item in items:
        ext = (item.get("extensions") or {}).get("bazaar") or {}
        method = ((ext.get("info") or {}).get("input") or {}).get("method", "")
        for offer in item.get("accepts") or [{}]:
            rows.append({"resource": item.get("resource", ""), "method": method, "protocol": "x402",
                         "scheme": offer.get("scheme", ""), "network": offer.get("network", ""),
                         "amount": str(offer.get("amount") or offer.get("maxAmountRequired") or ""),
                         "asset": offer.get("asset", ""), "pay_to": offer.get("payTo", ""),
                         "description": item.get("description", ""), "updated": item.get("lastUpdated", "")})
    return rows


def challenge_rows(url: str, method: str, headers: Any, body: bytes) -> list[dict[str, Any]]:
    """One row per payable option of a 402, in every protocol the buyer speaks."""
    from paywire.client.protocols import builtin_protocols
    from paywire.errors import WireError

    rows = []
    for proto in builtin_protocols():
        try:
            challenge = proto.read(headers, body, lambda network, asset: None)
        except WireError:
            continue
        if challenge is None:
            continue
        description = getattr(getattr(challenge, "resource", None), "description", "") or ""
        for opt in challenge.options:
            req = opt.requirements
            rows.append({"resource": url, "method": method, "protocol": opt.protocol, "scheme": req.scheme,
                         "network": req.network, "amount": str(req.amount), "asset": req.asset,
                         "pay_to": req.pay_to, "description": description, "updated": ""})
    return rows


def openapi_rows(origin: str, doc: Any) -> list[dict[str, Any]] | None:
    """One row per (operation, offer) of an MPP discovery document (OpenAPI with ``x-payment-info``)."""
    if not isinstance(doc, dict) or "openapi" not in doc or not isinstance(doc.get("paths"), dict):
        return None
    rows = []
    for path, ops in doc["paths"].items():
        for verb, op in (ops or {}).items():
            info = op.get("x-payment-info") if isinstance(op, dict) else None
            if not isinstance(info, dict):
                continue
            for offer in info.get("offers", [info]):  # the multi-offer form, or the single-offer shorthand
                rows.append({"resource": origin + path, "method": verb.upper(),
                             "protocol": f"mpp {offer.get('method', '')}/{offer.get('intent', '')}",
                             "scheme": "", "network": "", "asset": offer.get("currency", ""), "pay_to": "",
                             "amount": "dynamic" if offer.get("amount") is None else str(offer["amount"]),
                             "description": op.get("summary", ""), "updated": ""})
    return rows


async def _discover(target: str, method: str, limit: int) -> tuple[str, list[dict[str, Any]]]:
    from urllib.parse import urlsplit

    import httpx

    async with httpx.AsyncClient(timeout=30, follow_redirects=True) as http:
        items = await facilitator_listing(http, target, limit)
        if items is not None:
            return "facilitator", listing_rows(items)
        r = await http.request(method, target)
        if r.status_code == 402:
            return "resource", challenge_rows(target, method, r.headers, r.content)
        parts = urlsplit(target)
        origin = f"{parts.scheme}://{parts.netloc}"
        doc_url = target if parts.path.endswith("/openapi.json") else origin + "/openapi.json"
        d = r if doc_url == target else await http.get(doc_url)
        if d.status_code == 200:
            try:
                rows = openapi_rows(origin, d.json())
            except ValueError:
                rows = None
            if rows is not None:
                return "MPP discovery document", rows
        return f"HTTP {r.status_code}", []


def resources(rows: list[dict[str, Any]]) -> list[tuple[str, str]]:
    """The distinct (method, resource URL) pairs of a listing, in its order: what ``--pick N`` numbers from 1."""
    seen: dict[tuple[str, str], None] = {}
    for row in rows:
        seen.setdefault((row["method"] or "GET", row["resource"]), None)
    return list(seen)


def pick(target: str, n: int) -> tuple[str, str]:
    """(method, URL) of the ``n``-th resource (from 1) a facilitator lists, or ``ValueError`` saying why not."""
    import httpx

    try:
        kind, rows = asyncio.run(_discover(target, "GET", 100))
    except httpx.HTTPError as exc:
        raise ValueError(f"cannot reach {target}: {exc or type(exc).__name__}") from None
    if kind != "facilitator":
        raise ValueError(f"{target} has no /discovery/resources listing to pick from")
    listed = resources(rows)
    if not 1 <= n <= len(listed):
        raise ValueError(f"--pick {n}: {target} lists {len(listed)} resource(s) (see `paywire discover {target}`)")
    return listed[n - 1]


def discover(
    target: Annotated[str, typer.Argument(help="A paid URL (its 402 is read), a service (its /openapi.json MPP "
                                               "discovery document is read) or a facilitator's base URL (its "
                                               "/discovery/resources listing is read).")],
    method: Annotated[str, typer.Option("--method", "-X", help="HTTP method for a paid URL.")] = "GET",
    limit: Annotated[int, typer.Option(help="At most this many resources from a facilitator.")] = 100,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False,
) -> None:
    """List what can be bought at a URL or through a facilitator: resource, price, network, protocols."""
    import httpx

    try:
        kind, rows = asyncio.run(_discover(target, method.upper(), limit))
    except httpx.HTTPError as exc:
        typer.echo(f"paywire discover: cannot reach {target}: {exc or type(exc).__name__}", err=True)
        raise typer.Exit(1) from None
    if as_json:
        typer.echo(json.dumps({"source": kind, "offers": rows,
                               "resources": [{"method": m, "url": u} for m, u in resources(rows)]}, indent=2))
    else:
        table = Table(title=f"paywire discover {target} ({kind})")
        for col in ("resource", "protocol", "price (atomic)", "asset", "network", "pay to", "description"):
            table.add_column(col, overflow="fold")
        for row in rows:
            table.add_row(f"{row['method']} {row['resource']}".strip(), f"{row['protocol']} {row['scheme']}",
                          row["amount"], row["asset"], row["network"], row["pay_to"], row["description"])
        console.print(table)
    if not rows:
        typer.echo(f"paywire discover: nothing to buy at {target} ({kind})", err=True)
        raise typer.Exit(1)
