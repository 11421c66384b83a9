"""Tokens of the EVM family: which stablecoin a money price means on each network, with its EIP-712 domain."""

from __future__ import annotations

from dataclasses import dataclass

from paywire.errors import ConfigError


@dataclass(frozen=True, slots=True)
class Asset:
    """An EIP-3009 token on one network, with its EIP-712 domain."""

    network: str
    address: str
    name: str
    version: str
    decimals: int = 6
    symbol: str = "USDC"


# Known USDC deployments (digest §1.7). Local chains register their own token.
KNOWN_ASSETS: tuple[Asset, ...] = (
    Asset("eip155:8453", "0x833589fCD6eDb6E08f4c7C32D4f71b54bdA02913", "USD Coin", "2"),
    Asset("eip155:84532", "0x036CbD53842c5426634e7929541eC2318f3dCF7e", "USDC", "2"),
)


class AssetRegistry:
    """Which token a money price (``"$0.01"``) means on each network."""

    def __init__(self, assets: tuple[Asset, ...] = KNOWN_ASSETS) -> None:
        self._by_network: dict[str, Asset] = {}
        for a in assets:
            self.register(a)

    def register(self, asset: Asset) -> None:
        self._by_network[asset.network] = asset

    def default_for(self, network: str) -> Asset:
        try:
            return self._by_network[network]
        except KeyError:
            raise ConfigError(
                f"no default stablecoin known on {network}: register one with AssetRegistry.register(Asset(...))"
                " or give the asset explicitly"
            ) from None

    def resolve(self, network: str, asset: Asset | str | None, *, money: bool, price: object) -> Asset | None:
        """The token an offer of ``price`` on ``network`` means: an explicit :class:`Asset` (which must be on
        ``network``), the network's default (``asset`` None, or its address), or None for an unknown token
        address with an atomic price. ConfigError when a money price cannot be converted."""
        if isinstance(asset, Asset):
            if asset.network != network:
                raise ConfigError(f"asset {asset.address} is registered on {asset.network}, "
                                  f"not on {network}: use an Asset of that network")
            return asset
        default = self._by_network.get(network)
        if asset is None:
            if default is None:
                raise ConfigError(
                    f"no stablecoin is known on {network}, so a money price like {price!r} cannot be priced: "
                    "register the token with AssetRegistry.register(Asset(network, address, name, version, "
                    "decimals)) or give Offer(asset=Asset(...))")
            return default
        if default is not None and default.address.lower() == asset.lower():
            return default
        if money:
            raise ConfigError(
                f"asset {asset} on {network} is unknown, so {price!r} cannot be converted to its units: "
                "pass Offer(asset=Asset(network, address, name, version, decimals)) or register it in the "
                "AssetRegistry")
        return None

    def decimals_of(self, network: str, address: str, default: int = 6) -> int:
        """Decimals of the network's default token when ``address`` is it, else ``default``."""
        a = self._by_network.get(network)
        return a.decimals if a is not None and a.address.lower() == address.lower() else default


__all__ = ["KNOWN_ASSETS", "Asset", "AssetRegistry"]
