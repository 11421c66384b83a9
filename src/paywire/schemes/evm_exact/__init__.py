"""``exact`` scheme on EVM networks via EIP-3009 ``transferWithAuthorization``.

``register(registry)`` adds its three sides to a :class:`~paywire.schemes.registry.SchemeRegistry`; the rest of
paywire finds them there. The names below are importable from this package and load on first use.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from paywire.evm.assets import Asset, AssetRegistry
    from paywire.money import parse_money
    from paywire.schemes.evm_exact.client import ExactEvmClient
    from paywire.schemes.evm_exact.facilitator import (
        EvmNetwork,
        ExactEvmFacilitator,
        check_offchain,
        map_revert,
    )
    from paywire.schemes.evm_exact.server import ExactEvmServer, exact_evm_offer
    from paywire.schemes.registry import ClientScheme, FacilitatorScheme, SchemeRegistry

SCHEME = "exact"
NETWORK_PATTERN = "eip155:*"

_EXPORTS = {
    "Asset": "paywire.evm.assets",
    "AssetRegistry": "paywire.evm.assets",
    "EvmNetwork": "paywire.schemes.evm_exact.facilitator",
    "ExactEvmClient": "paywire.schemes.evm_exact.client",
    "ExactEvmFacilitator": "paywire.schemes.evm_exact.facilitator",
    "ExactEvmServer": "paywire.schemes.evm_exact.server",
    "check_offchain": "paywire.schemes.evm_exact.facilitator",
    "exact_evm_offer": "paywire.schemes.evm_exact.server",
    "map_revert": "paywire.schemes.evm_exact.facilitator",
    "parse_money": "paywire.money",
}


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)


def _client(signer: Any) -> ClientScheme | None:
    from paywire.evm.signer import EvmSigner

    if not isinstance(signer, EvmSigner):
        return None
    from paywire.schemes.evm_exact.client import ExactEvmClient

    return ExactEvmClient(signer)


def _facilitator(*args: Any, **kwargs: Any) -> FacilitatorScheme:
    from paywire.schemes.evm_exact.facilitator import ExactEvmFacilitator

    return ExactEvmFacilitator(*args, **kwargs)


def register(registry: SchemeRegistry) -> None:
    """Add ``exact`` × ``eip155:*`` (client, server, facilitator) and the known EVM stablecoins."""
    from paywire.evm.assets import KNOWN_ASSETS
    from paywire.schemes.evm_exact.server import ExactEvmServer

    registry.register_server(ExactEvmServer())
    registry.register_client(SCHEME, NETWORK_PATTERN, _client)
    registry.register_facilitator(SCHEME, NETWORK_PATTERN, _facilitator)
    registry.register_assets(KNOWN_ASSETS)


__all__ = [
    "NETWORK_PATTERN",
    "SCHEME",
    "Asset",
    "AssetRegistry",
    "EvmNetwork",
    "ExactEvmClient",
    "ExactEvmFacilitator",
    "ExactEvmServer",
    "check_offchain",
    "exact_evm_offer",
    "map_revert",
    "parse_money",
    "register",
]
