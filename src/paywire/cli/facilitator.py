"""``paywire facilitator``: verify and settle over HTTP, exactly once, on a durable store."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

console = Console()


def register(app: typer.Typer) -> None:
    app.command()(facilitator)


def facilitator(
    config: Annotated[Path | None, typer.Option("--config", "-c", envvar="PAYWIRE_FACILITATOR_CONFIG",
                                                help="TOML config file (see docs/facilitator.md).")] = None,
    use_devnet: Annotated[bool, typer.Option("--devnet", help="Run against a fresh embedded devnet.")] = False,
    network: Annotated[list[str] | None, typer.Option(
        "--network", "-n", help="CAIP2=RPC, e.g. eip155:8453=https://… or eip155:31337=anvil (repeatable).")] = None,
    rpc: Annotated[str, typer.Option(help="RPC URL of one chain (its network is read from the node).")] = "",
    key: Annotated[list[str] | None, typer.Option(
        "--key", "-k", help="Gas-paying signer key (repeatable; several keys are used round-robin). "
                            "Env: PAYWIRE_FACILITATOR_KEYS (comma-separated).")] = None,
    store: Annotated[str | None, typer.Option(help="sqlite:///file.db or postgresql://… (env PAYWIRE_STORE).")] = None,
    token: Annotated[str | None, typer.Option(help="Require 'Authorization: Bearer TOKEN' "
                                                   "(env PAYWIRE_FACILITATOR_TOKEN).")] = None,
    confirmations: Annotated[int | None, typer.Option(help="Blocks before a settlement counts.")] = None,
    receipt_timeout: Annotated[float | None, typer.Option(help="Seconds /settle waits for its tx.")] = None,
    reconcile_interval: Annotated[float | None, typer.Option(help="Seconds between reconciler passes.")] = None,
    rpc_timeout: Annotated[float | None, typer.Option(help="Seconds before an RPC call counts as lost.")] = None,
    expiry_margin: Annotated[float | None, typer.Option(
        help="Never broadcast a settlement less than this many seconds before its authorization's validBefore "
             "(default 3; 0..3600).")] = None,
    instance_id: Annotated[str | None, typer.Option(help="Name of this instance in fleet mode.")] = None,
    host: Annotated[str | None, typer.Option(help="Bind address (default 127.0.0.1).")] = None,
    port: Annotated[int | None, typer.Option(help="Port (default 4020; 0 picks a free one).")] = None,
    devnet_state: Annotated[Path | None, typer.Option(
        help="With --devnet: write the devnet's state file (keys, token, RPC URL) here.")] = None,
    allow_unauthenticated_public: Annotated[bool, typer.Option(
        "--allow-unauthenticated-public",
        help="Serve a non-loopback --host without --token (anyone who reaches it can settle and read "
             "settlement records). Without it such a start is refused.")] = False,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Log reconciler activity.")] = False,
) -> None:
    """Serve /verify, /settle, /supported, /settlements/{id}, /metrics and /health over HTTP."""
    from rich.markup import escape

    from paywire.errors import ConfigError
    from paywire.facilitator.config import is_loopback, load_config
    from paywire.facilitator.service import FacilitatorService

    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    keys = list(key or [])

    async def run() -> None:
        specs = list(network or [])
        if rpc:
            from paywire.chain import HttpTransport, RpcChain

            probe = RpcChain(HttpTransport(rpc))
            try:
                specs.append(f"eip155:{await probe.chain_id()}={rpc}")
            finally:
                await probe.aclose()
        cfg = load_config(config, networks=specs, keys=keys, overrides={
            "store": store, "bearer_token": token, "confirmations": confirmations, "host": host, "port": port,
            "receipt_timeout": receipt_timeout, "reconcile_interval": reconcile_interval,
            "rpc_timeout": rpc_timeout, "expiry_margin": expiry_margin, "instance_id": instance_id,
            "devnet": use_devnet or None,
            "allow_unauthenticated_public": allow_unauthenticated_public or None,
        })
        service = await FacilitatorService.start(cfg)
        try:
            if service.devnet is not None:
                info = service.devnet.info
                console.print(_table({"network": info.network, "rpc_url": info.rpc_url, "token": info.token,
                                      "payer": info.addresses["payer"], "payee": info.addresses["payee"]}))
                if devnet_state is not None:
                    service.devnet.write_state(devnet_state)
            if not cfg.bearer_token and not is_loopback(cfg.host):
                console.print(f"[yellow]warning:[/] serving {escape(cfg.host)} without authentication "
                              "(--allow-unauthenticated-public)", highlight=False)
            nets = ", ".join(f"{n}" for n in service.rpc_urls)
            console.print(f"settling on {nets}; store {service.store.db.url.split('@')[-1]}; "
                          f"instance {service.store.instance_id}", highlight=False)

            def ready(url: str) -> None:
                print(f"paywire facilitator listening on {url}", flush=True)

            await service.serve(on_ready=ready)
        finally:
            await service.aclose()

    from paywire.cli.output import loop_factory

    try:
        with asyncio.Runner(loop_factory=loop_factory()) as runner:  # uvloop when installed, as uvicorn does
            runner.run(run())
    except ConfigError as exc:
        console.print(f"[red]configuration error:[/] {escape(str(exc))}", soft_wrap=True)
        raise typer.Exit(2) from None
    except KeyboardInterrupt:
        pass
    except OSError as exc:  # busy port, no permission: one line, not a traceback
        from paywire.cli.output import port_error

        line = port_error(exc, f"{host or '127.0.0.1'}:{port}" if port is not None else "the configured port")
        if line is None:
            raise
        typer.echo(f"paywire facilitator: {line}", err=True)
        raise typer.Exit(1) from None


def _table(info: dict[str, object]) -> object:
    from paywire.cli.output import info_table

    return info_table(info)
