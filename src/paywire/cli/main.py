"""The ``paywire`` command."""

from __future__ import annotations

import asyncio
import contextlib
import signal
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

app = typer.Typer(no_args_is_help=True, add_completion=False, help="HTTP 402 machine payments.")
console = Console()


@app.command()
def demo(purchases: Annotated[int, typer.Option(help="How many resources the agent buys.")] = 3,
         rail: Annotated[str, typer.Option(help="evm (x402 on an embedded chain) or lightning (L402 on LNbits)")]
         = "evm") -> None:
    """Offline end-to-end demo: embedded chain, token, facilitator, paid API and a paying agent."""
    from paywire.demo import run_demo

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

    results = asyncio.run(run_demo(console, purchases=purchases))
    settled = [p for p in results if p.status == 200 and p.tx and p.price > 0]
    if len(settled) != len(results):
        console.print(f"[red]only {len(settled)} of {len(results)} purchases settled[/]")
        raise typer.Exit(1)
    console.print(f"[green]{len(settled)} purchases paid and settled on chain.[/]")


def _info_table(info: dict[str, object]) -> Table:
    t = Table(title="paywire devnet", show_header=False)
    t.add_column("key", style="bold")
    t.add_column("value")
    for k, v in info.items():
        if isinstance(v, dict):
            for kk, vv in v.items():
                t.add_row(f"{k}.{kk}", str(vv))
        else:
            t.add_row(k, str(v))
    return t


async def _wait_forever() -> None:
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
    state: Annotated[Path, typer.Option(help="Where to write the state file.")] = Path("devnet.json"),
    exit_after_setup: Annotated[bool, typer.Option("--exit", help="Write the state file and exit.")] = False,
) -> None:
    """Local chain + token + funded payer/payee/facilitator, served as JSON-RPC on 127.0.0.1."""
    import json

    from paywire.chain import Anvil, EmbeddedChain, HttpTransport, JsonRpcServer, RpcChain
    from paywire.devnet import setup_devnet

    async def run() -> None:
        server: JsonRpcServer | None = None
        anvil: Anvil | None = None
        if chain == "embedded":
            backend = EmbeddedChain(chain_id=chain_id)
            server = JsonRpcServer(backend)
            url = server.start()
            rpc = RpcChain(backend)
        elif chain == "anvil":
            anvil = Anvil(chain_id=chain_id)
            await anvil.start()
            url = anvil.url
            rpc = RpcChain(HttpTransport(url))
        else:
            url = chain
            rpc = RpcChain(HttpTransport(url))
        try:
            net = await setup_devnet(rpc, rpc_url=url)
            net.write_state(state)
            console.print(_info_table(json.loads(net.info.to_json())))
            console.print(f"state written to [bold]{state}[/]")
            if not exit_after_setup:
                console.print("serving; Ctrl-C to stop")
                await _wait_forever()
        finally:
            if server is not None:
                server.stop()
            await rpc.aclose()
            if anvil is not None:
                await anvil.stop()

    asyncio.run(run())


def _register_subcommands() -> None:
    from paywire.cli import buyer, facilitator, seller

    for module in (facilitator, seller, buyer):
        module.register(app)


_register_subcommands()


def main() -> None:
    app()


if __name__ == "__main__":
    main()
