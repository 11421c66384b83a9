"""``paywire sales``: the seller's revenue ledger (every paid request: route, amount, payer, tx, outcome)."""

from __future__ import annotations

import asyncio
import json
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

console = Console()

STATE_STYLE = {"served": "green", "settled": "green", "failed": "red", "unresolved": "yellow",
               "claimed": "cyan", "settling": "cyan"}


def register(app: typer.Typer) -> None:
    """Add this area's commands to the ``paywire`` app."""
    app.command()(sales)


def _amount(atomic: int, decimals: int) -> str:
    from paywire.server.core import decimals_display

    return decimals_display(atomic, decimals)


def _since(hours: float | None) -> float | None:
    return time.time() - hours * 3600 if hours else None


async def _load(url: str, limit: int, route: str | None, state: list[str], hours: float | None) -> tuple[
        list[Any], dict[tuple[str, str], tuple[int, int]]]:
    from paywire.store.payments import PaymentStore

    store = await PaymentStore.open(url)
    try:
        rows = await store.sales(limit=limit, route=route, states=state or None, since=_since(hours))
        revenue = await store.revenue(since=_since(hours))
        return rows, revenue
    finally:
        await store.aclose()


def sales(
    store: Annotated[str, typer.Option(help="Seller store URL (default sqlite:///paywire.db in this directory, or "
                                            "postgresql://…); env PAYWIRE_SELLER_STORE or PAYWIRE_STORE. "
                                            "Never created here.")] = "",
    config: Annotated[Path | None, typer.Option(
        "--config", "-c", help="TOML file whose [seller] table names the store (env PAYWIRE_SELLER_CONFIG).")]
    = None,
    limit: Annotated[int, typer.Option(help="Newest N payments.")] = 50,
    route: Annotated[str | None, typer.Option(help="Only this route, e.g. 'GET /weather'.")] = None,
    state: Annotated[list[str] | None, typer.Option(help="Only these outcomes (served, failed, unresolved …).")]
    = None,
    hours: Annotated[float | None, typer.Option(help="Only the last N hours.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False,
) -> None:
    """Show paid requests: route, amount, payer, transaction and outcome, with revenue totals."""
    from paywire.cli.output import missing_store, store_label
    from paywire.errors import ConfigError
    from paywire.server.config import SellerConfig
    from paywire.store import store_url

    try:  # --store > $PAYWIRE_SELLER_STORE > the [seller] table > $PAYWIRE_STORE (below)
        cfg = SellerConfig.load(config, **({"store": store} if store else {}))
    except ConfigError as exc:
        console.print(f"[red]configuration error:[/] {exc}")
        raise typer.Exit(2) from None
    url = store_url(cfg.store if isinstance(cfg.store, str) else None)
    label = store_label(url)
    typer.echo(f"store: {label}", err=True)
    absent = missing_store(url)
    if absent is not None:  # a read-only command never creates a store: this is most likely the wrong directory
        typer.echo(f"paywire sales: no seller store at {absent}. A seller keeps its ledger in the directory it runs "
                   "in (./paywire.db): run this there, or give --store sqlite:///PATH (or $PAYWIRE_SELLER_STORE).",
                   err=True)
        raise typer.Exit(1)
    rows, revenue = asyncio.run(_load(url, limit, route, list(state or []), hours))
    if as_json:
        out = {
            "sales": [{"id": r.id, "time": r.created_at, "route": r.route, "path": r.path, "amount": str(r.amount),
                       "decimals": r.decimals, "asset": r.asset, "network": r.network, "payer": r.payer,
                       "pay_to": r.pay_to, "tx": r.tx, "state": r.state, "error": r.error,
                       "x402_version": r.x402_version, "payment_id": r.payment_id} for r in rows],
            "revenue": [{"network": n, "asset": a, "paid_requests": c, "amount": str(t)}
                        for (n, a), (c, t) in sorted(revenue.items())],
        }
        typer.echo(json.dumps(out, indent=2))
        return
    table = Table(title=f"paywire sales ({label})")
    for col in ("time (UTC)", "route", "amount", "payer", "tx", "outcome"):
        table.add_column(col, overflow="fold", no_wrap=col in ("time (UTC)", "payer"))
    for r in rows:
        when = datetime.fromtimestamp(r.created_at, tz=UTC).strftime("%Y-%m-%d %H:%M:%S")
        outcome = f"[{STATE_STYLE.get(r.state, 'white')}]{r.state}[/]" + (f" ({r.error})" if r.error else "")
        table.add_row(when, r.route, _amount(r.amount, r.decimals), r.payer or "-",
                      (r.tx[:18] + "…") if r.tx else ("voucher" if r.settle_mode == "channel" else "-"), outcome)
    console.print(table)
    if not rows:
        console.print("no paid requests yet")
    decimals = {(r.network, r.asset.lower()): r.decimals for r in rows}
    for (network, asset), (count, total) in sorted(revenue.items()):
        console.print(f"revenue on {network} in {asset}: [bold]{_amount(total, decimals.get((network, asset), 6))}"
                      f"[/] from {count} paid request(s)")
