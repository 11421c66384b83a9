"""``upto`` scheme on EVM networks via Permit2 and the x402 upto Permit2 proxy (digest §7.1): the payer signs a
maximum; the seller charges what serving cost, at most that (0 sends no transaction).

``register(registry)`` adds its three sides to a :class:`~paywire.schemes.registry.SchemeRegistry`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from paywire.schemes.registry import ClientScheme, FacilitatorScheme, SchemeRegistry

SCHEME = "upto"
NETWORK_PATTERN = "eip155:*"


def _client(signer: Any) -> ClientScheme | None:
    from paywire.evm.signer import EvmSigner

    if not isinstance(signer, EvmSigner):
        return None
    from paywire.schemes.evm_upto.client import UptoEvmClient

    return UptoEvmClient(signer)


def _facilitator(*args: Any, **kwargs: Any) -> FacilitatorScheme:
    from paywire.schemes.evm_upto.facilitator import UptoEvmFacilitator

    return UptoEvmFacilitator(*args, **kwargs)


def register(registry: SchemeRegistry) -> None:
    """Add ``upto`` × ``eip155:*`` (client, server, facilitator)."""
    from paywire.schemes.evm_upto.server import UptoEvmServer

    registry.register_server(UptoEvmServer())
    registry.register_client(SCHEME, NETWORK_PATTERN, _client)
    registry.register_facilitator(SCHEME, NETWORK_PATTERN, _facilitator)


__all__ = ["NETWORK_PATTERN", "SCHEME", "register"]
