"""``paywire proxy``: sell an HTTP API you did not write, from a config file (no code change)."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

console = Console(stderr=True)


def register(app: typer.Typer) -> None:
    """Add this area's commands to the ``paywire`` app."""
    app.command()(proxy)


def proxy(
    config: Annotated[Path | None, typer.Option("--config", "-c", envvar="PAYWIRE_PROXY_CONFIG",
                                                help="TOML file: \\[proxy] upstream and routes, \\[seller] "
                                                     "facilitator and pay_to (see docs/proxy.md).")] = None,
    listen: Annotated[str | None, typer.Option(help="HOST:PORT to serve on (overrides \\[proxy] listen; "
                                                    "port 0 picks a free one).")] = None,
    check: Annotated[bool, typer.Option("--check", help="Load and check the config (and the facilitator), "
                                                         "then exit.")] = False,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Log each reload and upstream error.")] = False,
) -> None:
    """Sell an HTTP API through a paying reverse proxy: routes and prices from a config file; SIGHUP reloads it."""
    from rich.markup import escape

    from paywire.errors import ConfigError

    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if config is None:
        console.print("[red]configuration error:[/] give --config paywire.toml (see docs/proxy.md)")
        raise typer.Exit(2)
    from paywire.cli.output import loop_factory

    try:
        with asyncio.Runner(loop_factory=loop_factory()) as runner:
            runner.run(_run(config, listen, check))
    except ConfigError as exc:
        console.print(f"[red]configuration error:[/] {escape(str(exc))}", soft_wrap=True)
        raise typer.Exit(2) from None
    except KeyboardInterrupt:
        pass
    except OSError as exc:
        from paywire.cli.output import port_error

        line = port_error(exc, listen or "the configured listen address")
        if line is None:
            raise
        typer.echo(f"paywire proxy: {line}", err=True)
        raise typer.Exit(1) from None


async def _run(config: Path, listen: str | None, check: bool) -> None:
    import signal
    import socket

    import uvicorn

    from paywire.errors import ConfigError
    from paywire.proxy.app import ProxyServer
    from paywire.proxy.config import route_summary

    server = ProxyServer(config)
    setup = await server.start()
    try:
        for line in route_summary(setup.routes):
            console.print(f"  {line}", highlight=False)
        if check:
            console.print("configuration OK", highlight=False)
            return
        host, _, port = (listen or setup.proxy.listen).rpartition(":")
        if not port.isdigit() or not host:
            raise ConfigError(f"--listen: expected HOST:PORT, got {listen!r}")
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.bind((host.strip("[]"), int(port)))
        bound = sock.getsockname()[1]
        uv = uvicorn.Server(uvicorn.Config(server, log_level="warning", lifespan="off", access_log=False,
                                           timeout_graceful_shutdown=int(setup.proxy.drain_timeout)))
        loop = asyncio.get_running_loop()
        reloads: set[asyncio.Task[bool]] = set()

        def on_hup() -> None:
            task = loop.create_task(server.reload())
            reloads.add(task)
            task.add_done_callback(reloads.discard)

        loop.add_signal_handler(signal.SIGHUP, on_hup)
        task = asyncio.create_task(uv.serve(sockets=[sock]))
        while not uv.started:
            if task.done():
                task.result()
                raise RuntimeError("the server exited during startup")
            await asyncio.sleep(0.01)
        shown = f"[{host}]" if ":" in host else host
        print(f"paywire proxy listening on http://{shown}:{bound} -> {setup.proxy.upstream}", flush=True)
        await task
        sock.close()
    finally:
        await server.aclose()
