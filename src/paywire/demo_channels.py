"""``paywire demo --scheme batch-settlement``: many paid requests on one payment channel, settled in a handful of
transactions, on the embedded chain with our escrow at the canonical address.

The agent opens a channel with one deposit, pays each request with a voucher (no transaction), the seller's claim
manager claims and sweeps the charges in two transactions, and the agent asks for the rest of its deposit back.
The table shows every on-chain transaction and the token balance deltas of payer, payee and escrow.
"""

from __future__ import annotations

import shutil
import tempfile
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import httpx
from rich.console import Console
from rich.table import Table
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from paywire.chain import EmbeddedChain, RpcChain
from paywire.chain.permit2 import permit2_code
from paywire.chain.rail import EvmNetwork
from paywire.chain.tx import TxSender
from paywire.client.core import Payer
from paywire.client.httpx_transport import PaymentTransport
from paywire.devnet import setup_devnet
from paywire.evm import batch as b
from paywire.facilitator.app import create_app
from paywire.facilitator.client import HttpFacilitatorClient
from paywire.facilitator.core import Facilitator
from paywire.schemes.evm_batch.client import BatchEvmClient
from paywire.schemes.evm_batch.refund import refund_channel
from paywire.schemes.registry import default_registry
from paywire.server import Offer, PaidRoute, bill
from paywire.server.asgi import PaymentMiddleware
from paywire.server.channel_claims import ClaimManager
from paywire.serving import serve_asgi
from paywire.store.channels import ChannelStore

if TYPE_CHECKING:
    from paywire.cli.output import Steps

PRICE = 1_000  # at most $0.001 a request; the handler bills by the word


@dataclass
class ChannelDemo:
    requests: int = 0
    served: int = 0
    charged: int = 0
    elapsed: float = 0.0
    transactions: list[tuple[str, str]] = field(default_factory=list)  # (what, tx hash)
    deltas: dict[str, int] = field(default_factory=dict)


def _usdc(atomic: int) -> str:
    return f"{atomic / 1_000_000:+,.6f}".rstrip("0").rstrip(".")


async def run_channel_demo(console: Console | None = None, *, requests: int = 1000,
                           steps: Steps | None = None) -> ChannelDemo:
    out = console or Console()
    step = steps.step if steps is not None else (lambda _text: None)
    workdir = tempfile.mkdtemp(prefix="paywire-demo-")
    step("starting the embedded chain with the x402 escrow")
    chain = RpcChain(EmbeddedChain(chain_id=31337, code=permit2_code()))
    result = ChannelDemo(requests=requests)
    try:
        net = await setup_devnet(chain, on_step=step)
        facilitator = Facilitator(default_registry.facilitators_for(
            [EvmNetwork(net.info.network, chain, [TxSender(chain, net.facilitator.private_key)])]))

        async def complete(request: Request) -> JSONResponse:
            words = int(request.query_params.get("words", "10"))
            bill(request, min(words * 50, PRICE))  # 50 atomic units a word, at most the offer's maximum
            return JSONResponse({"words": words})

        app = Starlette(routes=[Route("/complete", complete)])
        routes = [PaidRoute("GET /complete", description="metered completion",
                            offers=(Offer(PRICE, pay_to=net.payee.address, asset=net.asset,
                                          scheme="batch-settlement"),))]
        step("starting the facilitator and the metered API")
        async with serve_asgi(create_app(facilitator)) as fac_url:
            api = PaymentMiddleware(app, routes, HttpFacilitatorClient(fac_url), store=f"sqlite:///{workdir}/s.db",
                                    channel_claims=False)  # the demo claims and sweeps in view
            async with serve_asgi(api) as api_url:
                if steps is not None:
                    steps.done()
                who = {"payer": net.payer.address, "payee": net.payee.address, "escrow": b.BATCH_SETTLEMENT_ADDRESS}
                before = {k: await net.token_balance(a) for k, a in who.items()}
                first_block = await chain.block_number() + 1
                client = BatchEvmClient(net.payer, deposit_multiplier=requests + 1)
                t = time.perf_counter()
                async with httpx.AsyncClient(transport=PaymentTransport(Payer([client])), timeout=60) as agent:
                    for i in range(requests):
                        r = await agent.get(f"{api_url}/complete?words={5 + i % 15}")
                        result.served += r.status_code == 200
                result.elapsed = time.perf_counter() - t
                store = ChannelStore(api.flow.payments.db)
                rows = await store.all()
                result.charged = sum(r.charged for r in rows)
                manager = ClaimManager(store, HttpFacilitatorClient(fac_url))
                await manager.claim()
                await manager.settle()
                refund = await refund_channel(client, f"{api_url}/complete")
                await api.flow.aclose()
            last_block = await chain.block_number()
            for n in range(first_block, last_block + 1):
                block = await chain.request("eth_getBlockByNumber", [hex(n), False])
                for tx in block["transactions"] if block else ():
                    result.transactions.append(("", str(tx)))
            labels = {refund.transaction: "refund (claim + refundWithSignature)",
                      **{tx: "claim (all channels, one transaction)" for tx in manager.transactions[:1]},
                      **{tx: "settle (sweep to the payee)" for tx in manager.transactions[1:]}}
            result.transactions = [(labels.get(tx, "deposit (EIP-3009 receiveWithAuthorization)"), tx)
                                   for _, tx in result.transactions]
            result.deltas = {k: await net.token_balance(a) - before[k] for k, a in who.items()}
        table = Table(title=f"{result.served} paid requests on one channel: on-chain transactions")
        table.add_column("transaction")
        table.add_column("hash", no_wrap=True)
        for what, tx in result.transactions:
            table.add_row(what, f"{tx[:10]}…{tx[-4:]}")
        out.print(table)
        deltas = Table(title="token balance changes (USDC)")
        for col in ("payer", "payee", "escrow"):
            deltas.add_column(col, justify="right")
        deltas.add_row(*(_usdc(result.deltas[k]) for k in ("payer", "payee", "escrow")))
        out.print(deltas)
        out.print(f"charged {_usdc(result.charged)} USDC over {result.served} requests in {result.elapsed:.1f} s "
                  f"({result.served / max(result.elapsed, 1e-9):,.0f} paid requests/s, two HTTP round trips each); "
                  f"{len(result.transactions)} transactions")
        return result
    finally:
        await chain.aclose()
        shutil.rmtree(workdir, ignore_errors=True)


__all__ = ["ChannelDemo", "run_channel_demo"]
