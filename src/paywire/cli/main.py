"""The ``paywire`` command.

``paywire --help`` imports only typer, rich and this file: the other commands live in ``paywire.cli.buyer``,
``.seller`` and ``.facilitator`` and load when they run (or show their own help); every command imports what it
needs (chains, stores, servers, clients) inside its function.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Annotated

import click
import typer
from rich.console import Console
from typer.core import TyperGroup
from typer.main import get_group

# Commands registered by other modules' ``register(app)``: name → (module, the help line ``paywire --help`` shows).
# tests/test_layers.py checks each line against the command's own docstring.
LAZY_COMMANDS: dict[str, tuple[str, str]] = {
    "facilitator": ("paywire.cli.facilitator",
                    "Serve /verify, /settle, /supported, /settlements/{id}, /metrics and /health over HTTP."),
    "sales": ("paywire.cli.seller",
              "Show paid requests: route, amount, payer, transaction and outcome, with revenue totals."),
    "pay": ("paywire.cli.buyer",
            "Fetch a URL like curl and pay its 402 from your wallet: shows the price, asks unless --yes or within\n"
            "policy, prints the receipt."),
    "wallet": ("paywire.cli.buyer", "The buyer's wallet: create a key, show it, read balances, list receipts."),
    "audit": ("paywire.cli.audit", "The tamper-evident audit log: verify it, prove entries, export, witness."),
    "discover": ("paywire.cli.discover",
                 "List what can be bought at a URL or through a facilitator: resource, price, network, protocols."),
    "proxy": ("paywire.cli.proxy",
              "Sell an HTTP API through a paying reverse proxy: routes and prices from a config file; SIGHUP reloads it."),
    "risk": ("paywire.cli.risk", "Risk decisions: show the decision log, test a rule file on recorded traffic."),
    "agent": ("paywire.cli.agent", "Agent identity: RFC 9421 request-signing keys (Web Bot Auth)."),
}


def load_commands(module: str) -> dict[str, click.Command]:
    """The click commands ``module.register(app)`` adds to an app."""
    sub = typer.Typer(add_completion=False)
    importlib.import_module(module).register(sub)
    return dict(get_group(sub).commands)


class LazyGroup(TyperGroup):
    """Lists ``LAZY_COMMANDS`` from their help lines; imports a command's module only to run it."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return [*super().list_commands(ctx), *(n for n in LAZY_COMMANDS if n not in self.commands)]

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        command = super().get_command(ctx, cmd_name)
        if command is None and cmd_name in LAZY_COMMANDS:  # listed in a help page: a stub with the help line
            return click.Command(cmd_name, help=LAZY_COMMANDS[cmd_name][1])
        return command

    def resolve_command(self, ctx: click.Context, args: list[str]) -> tuple[str | None, click.Command | None,
                                                                            list[str]]:
        name = click.utils.make_str(args[0]) if args else ""
        if name in LAZY_COMMANDS and name not in self.commands:
            for loaded, command in load_commands(LAZY_COMMANDS[name][0]).items():
                self.add_command(command, loaded)
        return super().resolve_command(ctx, args)


app = typer.Typer(cls=LazyGroup, no_args_is_help=True, add_completion=False, help="HTTP 402 machine payments.")
console = Console()


def _version(value: bool) -> None:
    if value:
        typer.echo(f"paywire {_installed_version()}")
        raise typer.Exit()


def _installed_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("paywire")
    except PackageNotFoundError:  # running from a source tree that is not installed
        from paywire import __version__

        return __version__


@app.callback()
def _root(show_version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True,
                                                     help="Print the version and exit.")] = False) -> None:
    """HTTP 402 machine payments."""


def _require_dev_chain(command: str) -> None:
    """Exit with one line naming the extra when the embedded dev chain (py-evm) is not installed."""
    from paywire.chain import dev_chain_missing

    missing = dev_chain_missing()
    if missing:
        typer.echo(f"paywire {command}: {missing}", err=True)
        raise typer.Exit(1)


@app.command()
def demo(purchases: Annotated[int, typer.Option(help="How many resources the agent buys.")] = 3,
         rail: Annotated[str, typer.Option(help="evm (x402 on an embedded chain) or lightning (L402 on LNbits)")]
         = "evm",
         scheme: Annotated[str, typer.Option(help="exact, or batch-settlement (payment channel: --requests paid "
                                                  "requests, a handful of transactions)")] = "exact",
         requests: Annotated[int, typer.Option(help="batch-settlement: paid requests on the channel.")] = 1000,
         ) -> None:
    """Offline end-to-end demo: embedded chain, token, facilitator, paid API and a paying agent."""
    import asyncio

    if scheme == "batch-settlement":
        _require_dev_chain("demo")
        from paywire.cli.output import Steps
        from paywire.demo_channels import run_channel_demo

        with Steps("paywire demo --scheme batch-settlement") as steps:
            ch = asyncio.run(run_channel_demo(console, requests=requests, steps=steps))
        if ch.served != requests or len(ch.transactions) > 4 or ch.deltas.get("escrow", 1) != 0:
            console.print("[red]the channel demo did not complete[/]")
            raise typer.Exit(1)
        console.print(f"[green]{ch.served} paid requests, {len(ch.transactions)} on-chain transactions.[/]")
        return
    if scheme != "exact":
        console.print(f"[red]unknown scheme {scheme!r}: use exact or batch-settlement[/]")
        raise typer.Exit(2)

    if rail == "lightning":
        from paywire.demo import run_lightning_demo
        from paywire.lightning.lnbits_dev import LnbitsUnavailable

        try:
            ln = asyncio.run(run_lightning_demo(console, requests=purchases))
        except LnbitsUnavailable as exc:
            console.print(f"[red]LNbits cannot run here: {exc}[/]")
            raise typer.Exit(1) from None
        if not ln or any(p.status != 200 for p in ln) or ln[0].paid_sat <= 0:
            console.print("[red]the L402 purchase did not complete[/]")
            raise typer.Exit(1)
        console.print(f"[green]paid {ln[0].paid_sat} sat once, served {len(ln)} requests with one L402 token.[/]")
        return
    if rail != "evm":
        console.print(f"[red]unknown rail {rail!r}: use evm or lightning[/]")
        raise typer.Exit(2)

    _require_dev_chain("demo")
    from paywire.cli.output import Steps

    with Steps("paywire demo") as steps:
        steps.step("loading the embedded chain (py-evm), the seller and the facilitator")
        from paywire.demo import run_demo

        results = asyncio.run(run_demo(console, purchases=purchases, steps=steps))
    settled = [p for p in results if p.status == 200 and p.tx and p.price > 0]
    if len(settled) != len(results):
        console.print(f"[red]only {len(settled)} of {len(results)} purchases settled[/]")
        raise typer.Exit(1)
    console.print(f"[green]{len(settled)} purchases paid and settled on chain.[/]")


async def _wait_forever() -> None:
    import asyncio
    import contextlib
    import signal

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)
    await stop.wait()


@app.command()
def devnet(
    chain: Annotated[str, typer.Option(help="embedded, anvil, or an RPC URL.")] = "embedded",
    chain_id: Annotated[int, typer.Option(help="Chain id (embedded/anvil).")] = 31337,
    port: Annotated[int, typer.Option(help="JSON-RPC port of the embedded chain (0 picks a free one).")] = 0,
    state: Annotated[Path, typer.Option(help="Where to write the state file (it holds the funded keys: "
                                             "written with mode 0600).")] = Path("devnet.json"),
    profile: Annotated[bool, typer.Option(help="Leave a profile (~/.paywire/devnet/profile.json: RPC, token, "
                                               "payer key file) that `paywire pay` uses with no flags.")] = True,
    exit_after_setup: Annotated[bool, typer.Option("--exit", help="Write the state file and exit.")] = False,
) -> None:
    """Local chain + token + funded payer/payee/facilitator, served as JSON-RPC on 127.0.0.1."""
    import asyncio

    if chain == "embedded":
        _require_dev_chain("devnet")
    elif port:
        typer.echo("paywire devnet: --port is for the embedded chain (anvil picks a free port; a URL has its own)",
                   err=True)
        raise typer.Exit(2)
    from paywire.cli.output import Steps

    steps = Steps("paywire devnet")
    steps.step("loading the chain tools" + (" (py-evm)" if chain == "embedded" else ""))

    from paywire.chain import Anvil, EmbeddedChain, HttpTransport, JsonRpcServer, RpcChain
    from paywire.cli.output import info_table, port_error
    from paywire.devnet import setup_devnet

    async def run() -> None:
        server: JsonRpcServer | None = None
        anvil: Anvil | None = None
        written = None
        if chain == "embedded":
            steps.step("starting the embedded chain")
            from paywire.chain.permit2 import (
                permit2_code,  # Permit2 + x402 proxies at their canonical addresses
            )

            backend = EmbeddedChain(chain_id=chain_id, code=permit2_code())
            server = JsonRpcServer(backend, port=port)
            try:
                url = server.start()
            except OSError as exc:
                steps.done()
                typer.echo(f"paywire devnet: {port_error(exc, f'127.0.0.1:{port}') or exc}", err=True)
                raise typer.Exit(1) from None
            rpc = RpcChain(backend)
        elif chain == "anvil":
            steps.step("starting anvil (installed from npm on first use)")
            anvil = Anvil(chain_id=chain_id)
            await anvil.start()
            url = anvil.url
            rpc = RpcChain(HttpTransport(url))
            from paywire.chain.permit2 import install_permit2

            await install_permit2(rpc)
        else:
            url = chain
            rpc = RpcChain(HttpTransport(url))
        try:
            net = await setup_devnet(rpc, rpc_url=url, on_step=steps.step)
            if chain in ("embedded", "anvil"):  # Permit2 is there: let the payer pay Permit2 offers (upto) too
                from paywire.chain.permit2 import approve_permit2

                steps.step("approving Permit2 for the payer")
                await approve_permit2(rpc, net.payer.private_key, net.info.token)
            steps.step(f"writing {state}")
            net.write_state(state)
            local = chain in ("embedded", "anvil")
            if profile and not (exit_after_setup and local):  # no profile for a chain that stops with us
                from paywire.cli.profile import write_devnet_profile

                written = write_devnet_profile(net.info)
            steps.done()
            console.print(info_table(net.info.public()))
            console.print(f"state (with the funded keys, mode 0600) written to [bold]{state}[/]", highlight=False)
            if written is not None:
                console.print(f"profile written to [bold]{written.path}[/] (payer key in {written.key_file}, "
                              f"mode 0600): `paywire pay URL` now pays from the devnet payer "
                              f"{written.payer}", highlight=False, soft_wrap=True)
            if not exit_after_setup:
                console.print("serving; Ctrl-C to stop")
                await _wait_forever()
        finally:
            steps.done()
            if server is not None:
                server.stop()
            await rpc.aclose()
            if anvil is not None:
                await anvil.stop()
            if written is not None and chain in ("embedded", "anvil"):
                from paywire.cli.profile import remove_profile_if_ours

                remove_profile_if_ours(written)  # its chain is gone

    asyncio.run(run())


def main() -> None:
    app()


if __name__ == "__main__":
    main()
