"""Self-facilitating sellers: verify and settle in-process, no separate facilitator service.

    PaymentMiddleware(app, routes, self_facilitator("http://127.0.0.1:8545", key="0x…"), pay_to=…)
"""

from __future__ import annotations

import asyncio

from paywire.facilitator.client import LocalFacilitatorClient
from paywire.facilitator.core import AnyPayload, AnyRequirements, Facilitator
from paywire.x402.models import SettleResponse, SupportedResponse, VerifyResponse


class SelfFacilitator:
    """A ``FacilitatorClient`` that settles ``exact`` EIP-3009 payments itself over one RPC endpoint.

    The chain and signer are set up on first use (on the caller's event loop); ``key`` pays the gas.
    """

    def __init__(self, rpc_url: str, key: str | bytes) -> None:
        self.url = f"in-process ({rpc_url})"
        self._rpc_url, self._key = rpc_url, key
        self._client: LocalFacilitatorClient | None = None
        self._lock: asyncio.Lock | None = None

    async def _get(self) -> LocalFacilitatorClient:
        if self._client is None:
            self._lock = self._lock or asyncio.Lock()
            async with self._lock:
                if self._client is None:
                    from paywire.chain import HttpTransport, RpcChain
                    from paywire.chain.rail import EvmNetwork
                    from paywire.chain.tx import TxSender
                    from paywire.schemes.registry import default_registry

                    chain = RpcChain(HttpTransport(self._rpc_url))
                    network = f"eip155:{await chain.chain_id()}"
                    rails = [EvmNetwork(network, chain, [TxSender(chain, self._key)])]
                    self._client = LocalFacilitatorClient(Facilitator(default_registry.facilitators_for(rails)))
        return self._client

    async def verify(self, payload: AnyPayload, requirements: AnyRequirements) -> VerifyResponse:
        return await (await self._get()).verify(payload, requirements)

    async def settle(self, payload: AnyPayload, requirements: AnyRequirements) -> SettleResponse:
        return await (await self._get()).settle(payload, requirements)

    async def supported(self) -> SupportedResponse:
        return await (await self._get()).supported()


def self_facilitator(rpc_url: str, key: str | bytes) -> SelfFacilitator:
    """One line to settle in-process: ``self_facilitator(rpc_url, gas_key)``."""
    return SelfFacilitator(rpc_url, key)
