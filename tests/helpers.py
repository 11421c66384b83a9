"""Shared test helpers: a devnet with a facilitator, and payload builders."""

from __future__ import annotations

import contextlib
import dataclasses
import threading
from collections.abc import Callable, Iterator
from typing import Any

from paywire.chain import Anvil, EmbeddedChain, RpcChain
from paywire.chain.base import Chain
from paywire.chain.tx import TxSender
from paywire.devnet import Devnet, setup_devnet
from paywire.evm.signer import EvmSigner, LocalSigner
from paywire.facilitator.core import Facilitator
from paywire.schemes.evm_exact import EvmNetwork, ExactEvmClient, ExactEvmFacilitator, exact_evm_offer
from paywire.x402.models import PaymentPayload, PaymentRequirements

CHAIN_KINDS = ["embedded", "anvil"]


def need_npm() -> None:
    import shutil

    import pytest

    if shutil.which("npm") is None:
        pytest.skip("npm is not installed, so the pinned anvil package cannot be installed")


async def new_devnet(kind: str = "embedded", chain_id: int = 31337) -> Devnet:
    """A devnet on the embedded chain or on a fresh anvil; ``close_devnet`` stops it."""
    if kind == "anvil":
        need_npm()
        anvil = Anvil(chain_id=chain_id)
        await anvil.start()
        net = await setup_devnet(anvil.chain(), rpc_url=anvil.url)
        net.extra["anvil"] = anvil
        return net
    return await setup_devnet(RpcChain(EmbeddedChain(chain_id=chain_id)))


async def close_devnet(net: Devnet) -> None:
    await net.chain.aclose()
    anvil = net.extra.get("anvil")
    if anvil is not None:
        await anvil.stop()


def facilitator_for(net: Devnet, chain: Chain | None = None, **kw: Any) -> ExactEvmFacilitator:
    c = chain or net.chain
    return ExactEvmFacilitator([EvmNetwork(net.info.network, c, [TxSender(c, net.facilitator.private_key)])], **kw)


def full_facilitator(net: Devnet, **kw: Any) -> Facilitator:
    return Facilitator([facilitator_for(net, **kw)])


def offer(net: Devnet, amount: int = 10_000, **changes: Any) -> PaymentRequirements:
    req = exact_evm_offer(net.asset, net.payee.address, amount=amount)
    return dataclasses.replace(req, **changes) if changes else req


async def sign(
    req: PaymentRequirements, signer: EvmSigner, *, clock: Callable[[], float] | None = None,
    accepted: PaymentRequirements | None = None,
) -> PaymentPayload:
    client = ExactEvmClient(signer, clock=clock) if clock else ExactEvmClient(signer)
    inner = await client.create_payload(req)
    return PaymentPayload(x402_version=2, accepted=accepted or req, payload=inner)


def payer_of(net: Devnet) -> LocalSigner:
    return LocalSigner(net.payer.private_key)


@contextlib.contextmanager
def serve_wsgi(app: Any) -> Iterator[str]:
    """A WSGI app on a threaded werkzeug server on 127.0.0.1, port chosen by the OS; yields its base URL."""
    from werkzeug.serving import make_server

    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        thread.join(timeout=10)
