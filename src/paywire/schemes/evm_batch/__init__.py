"""``batch-settlement`` scheme on EVM networks (x402 payment channels, spec ``scheme_batch_settlement_evm.md``):
the payer deposits once into the x402 escrow, then signs a cumulative voucher per request; the seller checks
vouchers with one signature recovery, keeps per-channel accounting (:mod:`paywire.server.channels`,
store :mod:`paywire.store.channels`) and claims many channels in one transaction.

``register(registry)`` adds its three sides to a :class:`~paywire.schemes.registry.SchemeRegistry`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from paywire.schemes.registry import ClientScheme, FacilitatorScheme, SchemeRegistry

SCHEME = "batch-settlement"
NETWORK_PATTERN = "eip155:*"


def _client(signer: Any) -> ClientScheme | None:
    from paywire.evm.signer import EvmSigner

    if not isinstance(signer, EvmSigner):
        return None
    from paywire.schemes.evm_batch.client import BatchEvmClient

    return BatchEvmClient(signer)


def _facilitator(*args: Any, **kwargs: Any) -> FacilitatorScheme:
    from paywire.schemes.evm_batch.facilitator import BatchEvmFacilitator

    return BatchEvmFacilitator(*args, **kwargs)


def register(registry: SchemeRegistry) -> None:
    """Add ``batch-settlement`` × ``eip155:*`` (client, server, facilitator)."""
    from paywire.schemes.evm_batch.server import BatchEvmServer

    registry.register_server(BatchEvmServer())
    registry.register_client(SCHEME, NETWORK_PATTERN, _client)
    registry.register_facilitator(SCHEME, NETWORK_PATTERN, _facilitator)


__all__ = ["NETWORK_PATTERN", "SCHEME", "register"]
