"""``paywire facilitator``: verify and settle over HTTP."""

from __future__ import annotations

import asyncio
from typing import Annotated

import typer
from rich.console import Console

console = Console()


def register(app: typer.Typer) -> None:
    app.command()(facilitator)


def facilitator(
    use_devnet: Annotated[bool, typer.Option("--devnet", help="Run against a fresh embedded devnet.")] = False,
    rpc: Annotated[str, typer.Option(help="RPC URL of the chain to settle on.")] = "",
    key: Annotated[str, typer.Option(envvar="PAYWIRE_FACILITATOR_KEY", help="Gas-paying signer key.")] = "",
    host: Annotated[str, typer.Option()] = "127.0.0.1",
    port: Annotated[int, typer.Option()] = 4020,
) -> None:
    """Serve /verify, /settle and /supported over HTTP."""
    import uvicorn

    from paywire.chain import EmbeddedChain, HttpTransport, RpcChain
    from paywire.chain.tx import TxSender
    from paywire.devnet import setup_devnet
    from paywire.facilitator.app import create_app
    from paywire.facilitator.core import Facilitator
    from paywire.schemes.evm_exact import EvmNetwork, ExactEvmFacilitator

    async def run() -> None:
        if use_devnet:
            rpc_chain = RpcChain(EmbeddedChain(chain_id=31337))
            net = await setup_devnet(rpc_chain)
            signer_key: bytes | str = net.facilitator.private_key
            console.print(_table({"network": net.info.network, "token": net.info.token,
                                       "payer_key": net.info.payer_key}))
        else:
            if not rpc or not key:
                raise typer.BadParameter("give --devnet, or --rpc URL and --key (or PAYWIRE_FACILITATOR_KEY)")
            rpc_chain = RpcChain(HttpTransport(rpc))
            signer_key = key
        network = f"eip155:{await rpc_chain.chain_id()}"
        fac = Facilitator([ExactEvmFacilitator([EvmNetwork(network, rpc_chain, [TxSender(rpc_chain, signer_key)])])])
        server = uvicorn.Server(uvicorn.Config(create_app(fac), host=host, port=port, log_level="info"))
        await server.serve()
        await rpc_chain.aclose()

    asyncio.run(run())


def _table(info: dict[str, object]) -> object:
    from paywire.cli.main import _info_table

    return _info_table(info)
