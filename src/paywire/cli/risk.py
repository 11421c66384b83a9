"""``paywire risk``: the risk decision log (``decisions``) and rule files tested on recorded traffic (``test``)."""

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
err = Console(stderr=True)
risk_app = typer.Typer(no_args_is_help=True, add_completion=False,
                       help="Risk decisions: show the decision log, test a rule file on recorded traffic.")

ACTION_STYLE = {"deny": "red", "challenge": "yellow", "review": "cyan", "allow": "green"}


def register(app: typer.Typer) -> None:
    """Add ``risk`` to the ``paywire`` app."""
    app.add_typer(risk_app, name="risk")


def _fail(message: str) -> typer.Exit:
    err.print(f"[red]error:[/] {message}", highlight=False, soft_wrap=True)
    return typer.Exit(1)


async def _decisions(url: str, limit: int, action: str | None, rule: str | None, hours: float | None) -> list[Any]:
    from paywire.store.risk import RiskRecords

    records = await RiskRecords.open(url)
    try:
        return await records.decisions(limit=limit, action=action, rule=rule,
                                        since=time.time() - hours * 3600 if hours else None)
    finally:
        await records.aclose()


@risk_app.command("decisions")
def decisions(
    store: Annotated[str | None, typer.Option(help="Store URL (default $PAYWIRE_STORE or sqlite:///paywire.db).")] = None,
    limit: Annotated[int, typer.Option(help="How many, newest first.")] = 50,
    action: Annotated[str | None, typer.Option(help="Only this action (deny, challenge, review, allow).")] = None,
    rule: Annotated[str | None, typer.Option(help="Only decisions this rule made.")] = None,
    hours: Annotated[float | None, typer.Option(help="Only the last N hours.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object a line (the --replay format).")] = False,
) -> None:
    """Show recorded risk decisions: every non-allow one and a sample of allows, with the rule and features."""
    from paywire.store import store_url

    try:
        rows = asyncio.run(_decisions(store_url(store), limit, action, rule, hours))
    except Exception as exc:
        raise _fail(f"cannot read the decision log at {store_url(store)}: {exc}") from None
    if as_json:
        for r in rows:
            typer.echo(json.dumps({"at": r.at, "checkpoint": r.checkpoint, "action": r.action, "rule": r.rule,
                                   "reason": r.reason, "shadow": r.shadow, "degraded": r.degraded,
                                   "list_version": r.list_version, "event": r.event, "features": r.features},
                                  separators=(",", ":")))
        return
    table = Table(title=f"risk decisions ({len(rows)})")
    for col in ("when (UTC)", "checkpoint", "action", "rule", "reason", "who"):
        table.add_column(col)
    for r in rows:
        who = r.event.get("payer") or r.event.get("ip") or r.event.get("host") or ""
        style = ACTION_STYLE.get(r.action, "")
        act = r.action + (" (shadow)" if r.shadow else "") + (" (degraded)" if r.degraded else "")
        table.add_row(datetime.fromtimestamp(r.at, UTC).strftime("%Y-%m-%d %H:%M:%S"), r.checkpoint,
                      f"[{style}]{act}[/]" if style else act, r.rule or "", r.reason or "", str(who))
    console.print(table)


@risk_app.command("test")
def test(
    rules: Annotated[Path, typer.Argument(help="The rule file (TOML) to check.")],
    replay_file: Annotated[Path | None, typer.Option("--replay", help="Recorded traffic: JSON lines as "
                                                     "`paywire risk decisions --json` writes them.")] = None,
) -> None:
    """Check a rule file (it compiles, names only known features) and, with --replay, what it would have
    decided on recorded traffic: matches per rule and the actions that would change."""
    from paywire.risk.model import RiskConfigError
    from paywire.risk.replay import read_records, replay
    from paywire.risk.rules import load_rules

    try:
        ruleset = load_rules(rules)
        records = read_records(replay_file) if replay_file is not None else []
    except RiskConfigError as exc:
        raise _fail(str(exc)) from None
    console.print(f"{rules}: {len(ruleset.rules)} rules OK" + (f" (version {ruleset.version})"
                                                               if ruleset.version else ""))
    if replay_file is None:
        return
    report = replay(ruleset, records)
    table = Table(title=f"replay of {report.records} records from {replay_file}")
    for col in ("rule", "action", "matched", "decided"):
        table.add_column(col)
    for r in ruleset.rules:
        table.add_row(r.id, r.action + (" (shadow)" if r.shadow else ""), str(report.matched[r.id]),
                      str(report.decided[r.id]))
    console.print(table)
    changes = Table(title="recorded action → new action")
    for col in ("recorded", "new", "requests"):
        changes.add_column(col)
    for (old, new), n in sorted(report.changes.items()):
        changes.add_row(old, f"[bold]{new}[/]" if old != new else new, str(n))
    console.print(changes)
    if report.labels:
        labels = Table(title="by label")
        for col in ("label", "new action", "requests"):
            labels.add_column(col)
        for (label, new), n in sorted(report.labels.items()):
            labels.add_row(label, new, str(n))
        console.print(labels)
    console.print(f"{report.changed()} of {report.records} decisions would change")
    if report.unrecorded:
        names = ", ".join(f"{n} ({c})" for n, c in sorted(report.unrecorded.items()))
        console.print(f"[yellow]not in the records, replayed at their defaults: {names}; record with "
                      "count_all=True (every feature measured) to replay rules that read them[/]")


lists_app = typer.Typer(no_args_is_help=True, add_completion=False,
                        help="The allow and deny lists in the SQL store (read by every engine given the store).")
risk_app.add_typer(lists_app, name="lists")


async def _lists(url: str, op: str, name: str = "", value: str = "", note: str = "") -> Any:
    from paywire.store.risk import RiskListStore

    store = await RiskListStore.open(url)
    try:
        if op == "add":
            return await store.add(name, value, note)
        if op == "remove":
            return await store.remove(name, value)
        return await store.entries(name or None)
    finally:
        await store.aclose()


StoreOption = Annotated[str | None, typer.Option(help="Store URL (default $PAYWIRE_STORE or sqlite:///paywire.db).")]


@lists_app.command("add")
def lists_add(name: Annotated[str, typer.Argument(help="allow or deny")],
              value: Annotated[str, typer.Argument(help="An address, IP or host.")],
              note: Annotated[str, typer.Option(help="Why (kept with the entry).")] = "",
              store: StoreOption = None) -> None:
    """Put VALUE on list NAME."""
    from paywire.store import store_url

    try:
        added = asyncio.run(_lists(store_url(store), "add", name, value, note))
    except ValueError as exc:
        raise _fail(str(exc)) from None
    typer.echo(f"{'added to' if added else 'already on'} {name}: {value}")


@lists_app.command("remove")
def lists_remove(name: Annotated[str, typer.Argument(help="allow or deny")],
                 value: Annotated[str, typer.Argument(help="An address, IP or host.")],
                 store: StoreOption = None) -> None:
    """Take VALUE off list NAME."""
    from paywire.store import store_url

    gone = asyncio.run(_lists(store_url(store), "remove", name, value))
    typer.echo(f"{'removed from' if gone else 'not on'} {name}: {value}")
    if not gone:
        raise typer.Exit(1)


@lists_app.command("show")
def lists_show(name: Annotated[str | None, typer.Argument(help="allow or deny (default both)")] = None,
               store: StoreOption = None) -> None:
    """The entries, one a line: list, value, note."""
    from paywire.store import store_url

    for e in asyncio.run(_lists(store_url(store), "show", name or "")):
        typer.echo(f"{e.list}\t{e.value}\t{e.note}")
