"""``exact`` scheme on EVM networks via EIP-3009 ``transferWithAuthorization``."""

from paywire.schemes.evm_exact.client import ExactEvmClient
from paywire.schemes.evm_exact.facilitator import EvmNetwork, ExactEvmFacilitator, check_offchain, map_revert
from paywire.schemes.evm_exact.server import Asset, AssetRegistry, exact_evm_offer, parse_money

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
