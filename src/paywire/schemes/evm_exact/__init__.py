"""``exact`` scheme on EVM networks via EIP-3009 ``transferWithAuthorization``."""

from __future__ import annotations

from typing import TYPE_CHECKING

from paywire._lazy import lazy_exports

if TYPE_CHECKING:
    from paywire.schemes.evm_exact.client import ExactEvmClient
    from paywire.schemes.evm_exact.facilitator import (
        EvmNetwork,
        ExactEvmFacilitator,
        check_offchain,
        map_revert,
    )
    from paywire.schemes.evm_exact.server import Asset, AssetRegistry, exact_evm_offer, parse_money

__getattr__, __dir__ = lazy_exports(__name__, {
    "paywire.schemes.evm_exact.client": ("ExactEvmClient",),
    "paywire.schemes.evm_exact.facilitator": (
        "EvmNetwork", "ExactEvmFacilitator", "check_offchain", "map_revert",
    ),
    "paywire.schemes.evm_exact.server": ("Asset", "AssetRegistry", "exact_evm_offer", "parse_money"),
})

__all__ = [
    "Asset",
    "AssetRegistry",
    "EvmNetwork",
    "ExactEvmClient",
    "ExactEvmFacilitator",
    "check_offchain",
    "exact_evm_offer",
    "map_revert",
    "parse_money",
]
