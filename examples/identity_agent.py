"""Identity, end to end on an embedded chain, in one process: ``python examples/identity_agent.py`` (dev extra).

* ``GET /report`` costs $0.05 and stays open for a day to whoever paid it (``access_for``): the agent pays,
  "loses" the response, and a fresh client with the same wallet signs in (Sign-In-With-X) and gets it again —
  the balances show one transfer.
* ``GET /orders`` takes payments only from a signed agent (``identity="agent-sig"``): the agent's RFC 9421 key
  directory is served by a second small server (``paywire agent keys`` writes the same file); the sale's ledger
  row names the agent's ``did:key``; an unsigned payment is refused before any money moves.
* The seller signs its offers and receipts (x402 ``offer-receipt``, EIP-712): the signed agent pays only offers
  signed by the seller's key (``Policy(offer_signers=...)``) and gets back a signed receipt naming its wallet.
"""

from __future__ import annotations

import asyncio
import os
import tempfile

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from paywire.chain import EmbeddedChain, RpcChain
from paywire.chain.tx import TxSender
from paywire.client import BuyerConfig, PaymentError, Policy, x402_client
from paywire.devnet import setup_devnet
from paywire.evm import token
from paywire.facilitator.client import LocalFacilitatorClient
from paywire.facilitator.core import Facilitator
from paywire.identity.agent import DIRECTORY_PATH, AgentKey, directory
from paywire.identity.offers import ArtifactSigner, receipt_of, verify_receipt
from paywire.schemes.evm_exact import EvmNetwork, ExactEvmFacilitator, exact_evm_offer
from paywire.server.asgi import PaymentMiddleware
from paywire.server.core import PaidRoute
from paywire.serving import serve_asgi
from paywire.wallet import Wallet
from paywire.x402.codec import decode_header


async def main() -> None:
    net = await setup_devnet(RpcChain(EmbeddedChain()))
    facilitator = Facilitator([ExactEvmFacilitator([EvmNetwork(net.info.network, net.chain,
                                                               [TxSender(net.chain, net.facilitator.private_key)])])])
    offer = exact_evm_offer(net.asset, net.payee.address, amount=50_000)

    async def balance() -> float:
        return token.decode_uint(await net.chain.call(net.info.token, token.balance_of(net.payee.address))) / 1e6

    async def content(request: Request) -> JSONResponse:
        p = request.scope.get("paywire.payment")
        return JSONResponse({"path": request.url.path, "identity": p.identity if p else None,
                             "reaccess": p.reaccess if p else None})

    holder: dict[str, AgentKey] = {}
    agent_site = Starlette(routes=[Route(DIRECTORY_PATH, lambda r: JSONResponse(directory([holder["key"]])))])
    async with serve_asgi(agent_site) as agent_url:
        holder["key"] = key = AgentKey.generate(agent_url)
        signer = ArtifactSigner(os.urandom(32))  # the seller's identity key for offers and receipts
        routes = [PaidRoute("GET /report", (offer,), access_for=24 * 3600),
                  PaidRoute("GET /orders", (offer,), identity="agent-sig")]
        seller = PaymentMiddleware(Starlette(routes=[Route("/{p:path}", content)]), routes,
                                   LocalFacilitatorClient(facilitator),
                                   store=f"sqlite:///{tempfile.mkdtemp()}/seller.db", siwx_secret=b"example" * 5,
                                   agent_directories_private=True,  # the agent's directory is on 127.0.0.1
                                   offer_signer=signer)
        async with serve_asgi(seller) as url:
            wallet = Wallet.from_key(net.info.payer_key, chains={net.info.network: net.chain})
            policy = Policy(assets=[net.asset])
            start = await balance()
            async with x402_client(wallet, policy) as client:
                print("paid  ", (await client.get(url + "/report")).json(), f"payee +${await balance() - start:.2f}")
            async with x402_client(wallet, policy) as client:  # a new process: no memory of the payment
                print("again ", (await client.get(url + "/report")).json(), f"payee +${await balance() - start:.2f}")
            trusting = Policy(assets=[net.asset], offer_signers=[signer.address])
            async with x402_client(wallet, trusting, config=BuyerConfig(agent_key=key)) as client:
                signed = await client.get(url + "/orders")
                print("signed", signed.json(), f"payee +${await balance() - start:.2f}")
            async with x402_client(wallet, policy) as client:
                try:
                    await client.get(url + "/orders")
                except PaymentError as exc:
                    print("unsigned refused:", str(exc)[:100], f"payee +${await balance() - start:.2f}")
            receipt = verify_receipt(receipt_of(decode_header(signed.headers["payment-response"]).get("extensions")))
            print("receipt signed by", receipt.signer, "for payer", receipt.payload["payer"])
    await net.chain.aclose()


if __name__ == "__main__":
    asyncio.run(main())
