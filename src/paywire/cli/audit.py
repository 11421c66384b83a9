"""``paywire audit …``: keys, the sequencer, verification, proofs, exports and the witness."""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    from paywire.audit.note import Verifier
    from paywire.audit.store import AuditStore, LogRow

console = Console()
err = Console(stderr=True)
ANCHOR_KEY_ENV = "PAYWIRE_AUDIT_ANCHOR_KEY"
"""``paywire audit serve --anchor-rpc``: the private key (0x…) that sends the anchor transactions (needs gas)."""
audit_app = typer.Typer(add_completion=False, no_args_is_help=True,
                        help="The tamper-evident audit log: verify it, prove entries, export, witness.")

StoreOpt = Annotated[str, typer.Option(help="Audit store URL (sqlite:///paywire.db or postgresql://…); "
                                            "env PAYWIRE_STORE.")]
KeysOpt = Annotated[list[str] | None, typer.Option(
    "--key", help="Trusted log public key (vkey text or a file holding it); repeat for rotated keys.")]
WitnessOpt = Annotated[list[str] | None, typer.Option(
    "--witness", help="Trusted witness public key (vkey or file); repeat for several.")]


def register(app: typer.Typer) -> None:
    """Add this area's commands to the ``paywire`` app."""
    app.add_typer(audit_app, name="audit",
                  help="The tamper-evident audit log: verify it, prove entries, export, witness.")


def _url(store: str) -> str:
    from paywire.store import store_url

    return store_url(store or None)


def _verifiers(texts: list[str] | None) -> list[Verifier]:
    from paywire.audit.keys import load_verifier
    from paywire.errors import ConfigError

    try:
        return [load_verifier(t) for t in texts or []]
    except ConfigError as exc:
        err.print(f"[red]{exc}[/]")
        raise typer.Exit(2) from None


async def _open(url: str) -> AuditStore:
    from paywire.audit.store import AuditStore

    return await AuditStore.open(url)


@audit_app.command()
def keygen(
    name: Annotated[str, typer.Argument(help="Key name: the log's origin (e.g. paywire.example/seller-eu1) or "
                                             "the witness's name.")],
    out: Annotated[Path, typer.Option(help="Where to write the private key (mode 0600; never overwritten).")],
    witness: Annotated[bool, typer.Option("--witness", help="A witness (cosigner) key instead of a log key.")]
    = False,
) -> None:
    """Create an Ed25519 signing key; prints the public key (vkey) to give verifiers."""
    from paywire.audit.keys import generate, write_key
    from paywire.errors import ConfigError

    signer = generate(name, witness=witness)
    try:
        write_key(out, signer)
    except ConfigError as exc:
        err.print(f"[red]{exc}[/]")
        raise typer.Exit(1) from None
    typer.echo(signer.verifier.vkey)


@audit_app.command()
def verify(
    store: StoreOpt = "",
    export_file: Annotated[Path | None, typer.Option("--export", help="Verify an exported JSONL file instead.")]
    = None,
    key: KeysOpt = None,
    witness: WitnessOpt = None,
    cosignatures: Annotated[int, typer.Option(help="Cosignatures each checkpoint needs (from --witness keys).")]
    = 0,
    checkpoint: Annotated[list[Path] | None, typer.Option(
        help="An extra signed checkpoint to hold the log to (a witness's state, one a payer kept).")] = None,
    origin: Annotated[str | None, typer.Option(help="The log's origin line (default: from its checkpoints).")]
    = None,
    ledgers: Annotated[bool, typer.Option(help="Also check each ledger row against its latest event (--store).")]
    = True,
    anchor_rpc: Annotated[str | None, typer.Option(help="Also read the checkpoints' on-chain anchors back from "
                                                        "this EVM node (--store; paywire.audit.anchor).")] = None,
) -> None:
    """Recompute the tree, check every checkpoint's signatures and consistency and every ledger row against its
    latest event (and the on-chain anchors); exit 1 at the first bad seq."""
    from paywire.audit.export import verify_export
    from paywire.audit.ops import verify_store

    log_keys, witness_keys = _verifiers(key), _verifiers(witness)
    if not log_keys:
        err.print("[red]give the log's public key with --key (vkey text or file)[/]")
        raise typer.Exit(2)
    extra = [(_checkpoint_text(p), str(p)) for p in checkpoint or []]
    anchors: list[str] = []  # [number checked, problems...]

    async def run() -> object:
        if export_file is not None:
            with open(export_file, encoding="utf-8") as f:
                return verify_export(f, log_keys, witness_keys=witness_keys, cosignatures_required=cosignatures,
                                     origin=origin, extra_checkpoints=extra)
        s = await _open(_url(store))
        try:
            if anchor_rpc:
                from paywire.audit.anchor import check_anchors
                from paywire.chain.rpc import HttpTransport, RpcChain

                async with RpcChain(HttpTransport(anchor_rpc)) as chain:
                    checked, problems = await check_anchors(s, chain)
                anchors.extend([str(checked), *problems])
            return await verify_store(s, log_keys, witness_keys=witness_keys, cosignatures_required=cosignatures,
                                      check_ledgers=ledgers,
                                      origin=origin, extra_checkpoints=extra)
        finally:
            await s.aclose()

    try:
        report = asyncio.run(run())
    except ValueError as exc:
        err.print(f"[red]{exc}[/]")
        raise typer.Exit(2) from None
    from paywire.audit.verifier import Report

    assert isinstance(report, Report)
    if anchors[1:]:
        for problem in anchors[1:]:
            typer.echo(f"FAIL anchor: {problem}")
        raise typer.Exit(1)
    if anchors:
        typer.echo(f"anchors: {anchors[0]} on-chain anchors agree with the stored checkpoints")
    if report.ok:
        typer.echo(f"OK: {report.size} entries, {report.checkpoints} checkpoints verified, entries "
                   f"[0, {report.verified_size}) bound to a signed checkpoint")
        if witness_keys:
            typer.echo(f"witnessed: entries [0, {report.witnessed_size}) are in a checkpoint cosigned by "
                       f"{max(cosignatures, 1)} witness(es); {report.size - report.witnessed_size} not yet")
        return
    first = report.first()
    typer.echo(f"FAIL first bad seq {report.first_bad_seq}: {first}")
    for finding in report.findings[1:20]:
        typer.echo(f"  also {finding}")
    raise typer.Exit(1)


def _checkpoint_text(path: Path) -> str:
    text = path.read_text()
    if text.lstrip().startswith("{"):  # a witness state file
        from paywire.audit.witness_core import WitnessState

        return WitnessState.from_json(text).note
    return text


@audit_app.command()
def prove(
    subject: Annotated[str | None, typer.Argument(help="A payment, settlement, challenge or transaction id.")]
    = None,
    seq: Annotated[int | None, typer.Option(help="Prove this sequence number instead.")] = None,
    store: StoreOpt = "",
    out: Annotated[Path | None, typer.Option(help="Write the proof here (default: stdout).")] = None,
) -> None:
    """Print the c2sp.org/tlog-proof of an entry (the entry itself rides in its extra line)."""
    from paywire.audit.checkpoint import TlogProof
    from paywire.audit.ops import NotYetCheckpointed, Proof, prove_subject
    from paywire.audit.ops import prove as prove_one

    if (subject is None) == (seq is None):
        err.print("[red]name an id or give --seq[/]")
        raise typer.Exit(2)

    async def run() -> list[Proof]:
        s = await _open(_url(store))
        try:
            return [await prove_one(s, seq)] if seq is not None else await prove_subject(s, subject or "")
        finally:
            await s.aclose()

    try:
        proofs = asyncio.run(run())
    except NotYetCheckpointed as exc:
        err.print(f"[yellow]{exc}[/]")
        raise typer.Exit(3) from None
    except LookupError as exc:
        err.print(f"[red]{exc}[/]")
        raise typer.Exit(1) from None
    if not proofs:
        err.print(f"[red]no audit entry names {subject!r}[/]")
        raise typer.Exit(1)
    texts = [TlogProof(p.seq, p.proof.proof, p.proof.checkpoint, p.entry).format() for p in proofs]
    if out is not None:
        out.write_text("".join(texts))
    else:
        sys.stdout.write("".join(texts))


@audit_app.command("verify-proof")
def verify_proof_cmd(
    proof: Annotated[Path | None, typer.Argument(help="A .tlog-proof file from `paywire audit prove`.")] = None,
    key: KeysOpt = None,
    witness: WitnessOpt = None,
    cosignatures: Annotated[int, typer.Option(help="Witness cosignatures required.")] = 0,
    entry: Annotated[Path | None, typer.Option(help="The entry's bytes (default: the proof's extra line).")]
    = None,
    log: Annotated[str | None, typer.Option("--log", help="Instead of a file: ask this log (its base URL) for "
                                                         "the proofs of --subject.")] = None,
    subject: Annotated[str | None, typer.Option(help="With --log: the id to prove (a receipt's audit "
                                                     "reference subject, e.g. the transaction hash).")] = None,
) -> None:
    """Check a proof offline against the log's public key (and witnesses): exit 1 if it does not hold. With
    ``--log URL --subject ID``: fetch the proofs of the entries naming ID (a payer checking its own payment)."""
    from paywire.audit.checkpoint import parse_tlog_proof
    from paywire.audit.events import entry_event
    from paywire.audit.proofs import ProofRejected, verify_proof

    if (proof is None) == (log is None) or (log is not None and not subject):
        err.print("[red]give a proof file, or --log URL --subject ID[/]")
        raise typer.Exit(2)
    if log is not None:
        _verify_remote(log, subject or "", _verifiers(key), _verifiers(witness), cosignatures)
        return
    assert proof is not None
    log_keys = _verifiers(key)
    if not log_keys:
        err.print("[red]give the log's public key with --key[/]")
        raise typer.Exit(2)
    text = proof.read_text()
    try:
        parsed = parse_tlog_proof(text)
    except ValueError as exc:
        typer.echo(f"REJECTED: malformed proof: {exc}")
        raise typer.Exit(1) from None
    data = entry.read_bytes() if entry is not None else parsed.extra
    if data is None:
        err.print("[red]the proof has no extra line: give the entry with --entry[/]")
        raise typer.Exit(2)
    try:
        ok = verify_proof(text, data, log_keys, witness_keys=_verifiers(witness),
                          cosignatures_required=cosignatures)
    except ProofRejected as exc:
        typer.echo(f"REJECTED: {exc}")
        raise typer.Exit(1) from None
    event = entry_event(data)
    typer.echo(f"OK: entry {ok.index} ({event.get('component')} {event.get('kind')}) is in {ok.checkpoint.origin} "
               f"at size {ok.checkpoint.size}" + (f", cosigned by {', '.join(ok.witnesses)}" if ok.witnesses else ""))


def _verify_remote(log: str, subject: str, log_keys: list[Verifier], witness_keys: list[Verifier],
                   cosignatures: int) -> None:
    from paywire.audit.proofs import ProofRejected
    from paywire.audit.remote import ProofUnavailable, fetch_proofs

    if not log_keys:
        err.print("[red]give the log's public key with --key[/]")
        raise typer.Exit(2)
    try:
        proven = asyncio.run(fetch_proofs(log, subject, log_keys, witness_keys=witness_keys,
                                          cosignatures_required=cosignatures))
    except ProofRejected as exc:
        typer.echo(f"REJECTED: {exc}")
        raise typer.Exit(1) from None
    except ProofUnavailable as exc:
        err.print(f"[yellow]{exc}[/]")
        raise typer.Exit(3) from None
    for p in proven:
        cp = p.proven.checkpoint
        typer.echo(f"OK: seq {p.seq} ({p.event.get('component')} {p.event.get('kind')}) is in {cp.origin} at size "
                   f"{cp.size}" + (f", cosigned by {', '.join(p.proven.witnesses)}" if p.proven.witnesses else ""))


@audit_app.command()
def export(
    store: StoreOpt = "",
    start: Annotated[int, typer.Option("--from", help="Resume from this sequence number.")] = 0,
    out: Annotated[Path | None, typer.Option(help="Write here (default: stdout).")] = None,
) -> None:
    """Stream the log as JSON Lines: a header, the checkpoints, then the entries in order."""
    from paywire.audit.ops import export as export_log

    async def run() -> int:
        s = await _open(_url(store))
        try:
            if out is None:
                return await export_log(s, sys.stdout, start=start)
            with open(out, "w", encoding="utf-8") as f:
                return await export_log(s, f, start=start)
        finally:
            await s.aclose()

    n = asyncio.run(run())
    err.print(f"exported {n} entries")


@audit_app.command()
def show(
    store: StoreOpt = "",
    payment: Annotated[str | None, typer.Option(help="Only entries naming this id (payment, tx, challenge).")]
    = None,
    payer: Annotated[str | None, typer.Option(help="Only entries naming this payer.")] = None,
    since: Annotated[str | None, typer.Option(help="Only events at or after this UTC time (2026-12-03T10:00).")]
    = None,
    limit: Annotated[int, typer.Option(help="At most N rows.")] = 50,
) -> None:
    """Show audit events as a table: seq, time, component, kind, subject."""
    from rich.table import Table

    from paywire.audit.events import entry_event

    async def run() -> list[tuple[int, dict[str, object]]]:
        from collections import deque

        s = await _open(_url(store))
        try:
            out: deque[tuple[int, dict[str, object]]] = deque(maxlen=limit)
            needle = payment or payer
            rows = await s.find(needle, limit=1_000_000) if needle else None
            source = rows if rows is not None else s.entries()
            async for r in _aiter(source):
                event = entry_event(r.entry)
                if payer and payer not in str(event.get("subject", {})):
                    continue
                if since and str(event.get("time", "")) < since:
                    continue
                out.append((r.seq, event))
            return list(out)
        finally:
            await s.aclose()

    table = Table("seq", "time", "component", "kind", "subject", "previous")
    for seq_no, event in asyncio.run(run()):
        subject = event.get("subject") or {}
        text = " ".join(f"{k}={v}" for k, v in subject.items()) if isinstance(subject, dict) else str(subject)
        table.add_row(str(seq_no), str(event.get("time")), str(event.get("component")), str(event.get("kind")),
                      text, str(event.get("previous") or ""))
    console.print(table)


async def _aiter(source: object) -> AsyncIterator[LogRow]:
    if isinstance(source, list):
        for row in source:
            yield row
    else:
        async for row in source:  # type: ignore[attr-defined]
            yield row


@audit_app.command()
def serve(
    store: StoreOpt = "",
    key_file: Annotated[Path | None, typer.Option(help="The log's signing key (default: env PAYWIRE_AUDIT_KEY "
                                                       "or PAYWIRE_AUDIT_KEY_FILE).")] = None,
    origin: Annotated[str | None, typer.Option(help="Origin line (default: the key's name).")] = None,
    witness: WitnessOpt = None,
    host: Annotated[str, typer.Option(help="Listen address.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Listen port (0: any free port; printed).")] = 0,
    batch: Annotated[int, typer.Option(help="Entries per sequencer batch.")] = 2000,
    every_entries: Annotated[int, typer.Option(help="Sign a checkpoint after this many new entries.")] = 1000,
    every_seconds: Annotated[float, typer.Option(help="…or this many seconds after the last one.")] = 10.0,
    no_http: Annotated[bool, typer.Option("--no-http", help="Run only the sequencer.")] = False,
    anchor_rpc: Annotated[str | None, typer.Option(help="Anchor checkpoints on this EVM node (JSON-RPC URL), sent "
                                                        f"by the key in env {ANCHOR_KEY_ENV} "
                                                        "(paywire.audit.anchor).")] = None,
    anchor_every: Annotated[int, typer.Option(help="With --anchor-rpc: anchor every K checkpoints.")] = 10,
) -> None:
    """Run the sequencer (queue → log, signed checkpoints) and serve /audit/checkpoint, proofs and cosignatures;
    with --anchor-rpc it also anchors every K-th checkpoint on chain."""
    from paywire.audit import keys
    from paywire.audit.sequencer import CheckpointPolicy, Sequencer
    from paywire.errors import ConfigError

    try:
        signer = keys.load_key(key_file) if key_file else keys.from_env()
    except ConfigError as exc:
        err.print(f"[red]{exc}[/]")
        raise typer.Exit(2) from None
    witness_keys = _verifiers(witness)
    anchor_key = os.environ.get(ANCHOR_KEY_ENV, "")
    if anchor_rpc and not anchor_key:
        err.print(f"[red]--anchor-rpc needs the anchoring key (0x… private key) in env {ANCHOR_KEY_ENV}[/]")
        raise typer.Exit(2)

    async def run() -> None:
        from paywire.cli.main import _wait_forever

        s = await _open(_url(store))
        stack = contextlib.AsyncExitStack()
        anchorer = None
        if anchor_rpc:
            from paywire.audit.anchor import Anchorer
            from paywire.chain.rpc import HttpTransport, RpcChain
            from paywire.chain.tx import TxSender

            chain = await stack.enter_async_context(RpcChain(HttpTransport(anchor_rpc)))
            anchorer = Anchorer(s, TxSender(chain, anchor_key), f"eip155:{await chain.chain_id()}",
                                every=anchor_every)
        seqr = Sequencer(s, signer, origin=origin, batch=batch, anchorer=anchorer,
                         policy=CheckpointPolicy(every_entries=every_entries, every_seconds=every_seconds))
        stop = asyncio.Event()
        task = asyncio.create_task(seqr.run(stop))
        try:
            if no_http:
                typer.echo("sequencing", err=True)
                await _wait_forever()
                return
            from paywire.audit.http import audit_app as make_app
            from paywire.serving import serve_asgi

            async with serve_asgi(make_app(s, witness_keys=witness_keys), host=host, port=port) as url:
                typer.echo(f"serving {url}/audit/checkpoint", err=True)
                await _wait_forever()
        finally:
            stop.set()
            await task
            await stack.aclose()
            await s.aclose()

    asyncio.run(run())


@audit_app.command("witness")
def witness_cmd(
    log_url: Annotated[str, typer.Option("--log", help="The log's base URL (serving /audit/checkpoint).")],
    log_key: Annotated[list[str], typer.Option(help="The log's public key (vkey or file); repeatable.")],
    state: Annotated[Path, typer.Option(help="The witness's state file (the last checkpoint it cosigned).")],
    key_file: Annotated[Path | None, typer.Option(help="The witness's signing key (default: env "
                                                       "PAYWIRE_WITNESS_KEY or PAYWIRE_WITNESS_KEY_FILE).")] = None,
    origin: Annotated[str | None, typer.Option(help="The log's origin (default: the log key's name).")] = None,
    interval: Annotated[float, typer.Option(help="Seconds between rounds.")] = 5.0,
    once: Annotated[bool, typer.Option("--once", help="One round, then exit.")] = False,
    metrics_port: Annotated[int | None, typer.Option(help="Serve Prometheus /metrics on 127.0.0.1:PORT "
                                                          "(0: any free port, printed).")] = None,
) -> None:
    """Follow a log: cosign each checkpoint consistent with the last; exit 3 on a fork or rewrite."""
    import logging

    from paywire.audit import keys
    from paywire.audit.witness import LogUnavailable, Witness
    from paywire.audit.witness_core import WitnessRefusal
    from paywire.errors import ConfigError

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    try:
        signer = keys.load_key(key_file) if key_file else keys.from_env(witness=True)
    except ConfigError as exc:
        err.print(f"[red]{exc}[/]")
        raise typer.Exit(2) from None
    log_keys = _verifiers(log_key)
    w = Witness(log_url, origin=origin or log_keys[0].name, log_keys=log_keys, signer=signer, state_path=state)

    async def run() -> None:
        try:
            if once:
                result = await w.step()
                typer.echo(f"cosigned size {result.checkpoint.size}" if result else "no new checkpoint")
            elif metrics_port is None:
                await w.run(asyncio.Event(), interval=interval)
            else:
                from starlette.applications import Starlette
                from starlette.responses import PlainTextResponse
                from starlette.routing import Route

                from paywire.serving import serve_asgi

                async def metrics(_: object) -> PlainTextResponse:
                    return PlainTextResponse(w.metrics.render(), media_type="text/plain; version=0.0.4")

                app = Starlette(routes=[Route("/metrics", metrics)])
                async with serve_asgi(app, port=metrics_port) as url:
                    typer.echo(f"metrics on {url}/metrics", err=True)
                    await w.run(asyncio.Event(), interval=interval)
        finally:
            await w.aclose()

    try:
        asyncio.run(run())
    except WitnessRefusal as exc:
        logging.getLogger("paywire.audit.witness").error("audit witness REFUSED %s: %s", w.origin, exc)
        typer.echo(f"REFUSED: {exc}", err=True)
        raise typer.Exit(3) from None
    except LogUnavailable as exc:
        typer.echo(f"log unavailable: {exc}", err=True)
        raise typer.Exit(4) from None


@audit_app.command("push-witness")
def push_witness_cmd(
    witness_url: Annotated[str, typer.Option("--witness", help="The witness's base URL (serving "
                                                                "/add-checkpoint, c2sp.org/tlog-witness).")],
    witness_key: Annotated[str, typer.Option(help="The witness's public key (vkey or file).")],
    store: StoreOpt = "",
    interval: Annotated[float, typer.Option(help="Seconds between rounds.")] = 5.0,
    once: Annotated[bool, typer.Option("--once", help="Submit the latest checkpoint once, then exit.")] = False,
) -> None:
    """Push each new checkpoint of the log with its consistency proof to a tlog-witness and keep its cosignature;
    exit 3 when the witness refuses the log (a fork or a rewrite: loud, as the witness itself is)."""
    import logging

    from paywire.audit.witness_http import WitnessRejected, submit_checkpoint
    from paywire.transport.keepalive import KeepAliveClient

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    keys = _verifiers([witness_key])
    if len(keys) != 1:
        err.print("[red]give the witness's public key with --witness-key[/]")
        raise typer.Exit(2)

    async def run() -> None:
        s = await _open(_url(store))
        client = KeepAliveClient(witness_url.rstrip("/"), timeout=30)
        old, sent = 0, -1
        try:
            while True:
                head = await s.head()
                if head.checkpoint_size > sent:
                    try:
                        old, sigs = await submit_checkpoint(s, client, keys[0], old=old)
                        sent = old
                        typer.echo(f"cosigned size {old} by {', '.join(sorted({x.name for x in sigs}))}")
                    except LookupError as exc:  # no checkpoint yet
                        typer.echo(f"{exc}", err=True)
                    except WitnessRejected as exc:
                        if exc.status in (400, 403, 404, 422):
                            raise
                        logging.getLogger("paywire.audit").warning("witness unavailable: %s", exc)
                if once:
                    return
                await asyncio.sleep(interval)
        finally:
            await client.aclose()
            await s.aclose()

    from paywire.audit.witness_http import WitnessRejected as Rejected

    try:
        asyncio.run(run())
    except Rejected as exc:
        logging.getLogger("paywire.audit").error("audit witness REFUSED the log: %s", exc)
        typer.echo(f"REFUSED: {exc}", err=True)
        raise typer.Exit(3) from None


@audit_app.command("witness-serve")
def witness_serve_cmd(
    log_key: Annotated[list[str], typer.Option(help="The log's public key (vkey or file); repeatable.")],
    state: Annotated[Path, typer.Option(help="The witness's state file (the last checkpoint it cosigned).")],
    key_file: Annotated[Path | None, typer.Option(help="The witness's signing key (default: env "
                                                       "PAYWIRE_WITNESS_KEY or PAYWIRE_WITNESS_KEY_FILE).")] = None,
    origin: Annotated[str | None, typer.Option(help="The log's origin (default: the log key's name).")] = None,
    host: Annotated[str, typer.Option(help="Listen address.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Listen port (0: any free port; printed).")] = 0,
) -> None:
    """A push-mode witness: serve c2sp.org/tlog-witness ``POST /add-checkpoint`` (the log brings each checkpoint
    with its consistency proof, ``paywire audit push-witness``); refusals answer with the spec's status codes."""
    import os

    from paywire.audit import keys
    from paywire.audit.witness_core import WitnessState
    from paywire.audit.witness_http import add_checkpoint_route
    from paywire.errors import ConfigError

    try:
        signer = keys.load_key(key_file) if key_file else keys.from_env(witness=True)
    except ConfigError as exc:
        err.print(f"[red]{exc}[/]")
        raise typer.Exit(2) from None
    log_keys = _verifiers(log_key)

    def load() -> WitnessState | None:
        try:
            return WitnessState.from_json(state.read_text())
        except FileNotFoundError:
            return None

    def save(st: WitnessState) -> None:  # durable before the cosignature is answered
        tmp = state.with_suffix(".tmp")
        state.parent.mkdir(parents=True, exist_ok=True)
        with open(tmp, "w") as f:
            f.write(st.to_json())
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, state)

    route = add_checkpoint_route(origin=origin or log_keys[0].name, log_keys=log_keys, signer=signer, load=load,
                                 save=save)

    async def run() -> None:
        from starlette.applications import Starlette

        from paywire.cli.main import _wait_forever
        from paywire.serving import serve_asgi

        async with serve_asgi(Starlette(routes=[route]), host=host, port=port) as url:
            typer.echo(f"witnessing on {url}/add-checkpoint", err=True)
            await _wait_forever()

    asyncio.run(run())
