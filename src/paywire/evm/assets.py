"""Tokens of the EVM family: which stablecoin a money price means on each network, with its EIP-712 domain."""

from __future__ import annotations

from collections.abc import Callable
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


TokenLookup = Callable[[str, str], "Asset | None"]
"""``(network, address) → Asset | None``: finds a token no registry lists (``paywire.chain.token_domain``
reads it from a node)."""


class AssetRegistry:
    """Which token a money price (``"$0.01"``) means on each network, and the tokens known by address.

    ``lookup`` is asked once per token a price names by address that the registry does not list (e.g.
    :class:`paywire.chain.token_domain.ChainTokenLookup`, which reads its EIP-712 domain from the chain)."""

    def __init__(self, assets: tuple[Asset, ...] = KNOWN_ASSETS, *, lookup: TokenLookup | None = None) -> None:
        self._by_network: dict[str, Asset] = {}
        self._by_address: dict[tuple[str, str], Asset] = {}
        self.lookup = lookup
        for a in assets:
            self.register(a)

    def register(self, asset: Asset) -> None:
        """Make ``asset`` its network's default token (and known by address)."""
        self._by_network[asset.network] = asset
        self.add(asset)

    def add(self, asset: Asset) -> None:
        """Know ``asset`` by its address without making it its network's default."""
        self._by_address[(asset.network, asset.address.lower())] = asset

    def find(self, network: str, address: str) -> Asset | None:
        """The listed token at ``address`` on ``network``, else what ``lookup`` finds (kept), else None."""
        known = self._by_address.get((network, address.lower()))
        if known is not None or self.lookup is None:
            return known
        found = self.lookup(network, address)
        if found is not None:
            self.add(found)
        return found

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
        found = self.find(network, asset)
        if found is None and money:
            raise ConfigError(
                f"asset {asset} on {network} is unknown, so {price!r} cannot be converted to its units: "
                "give the registry a node to read it from (paywire.chain.token_domain.chain_assets(rpc_url)), "
                "pass Offer(asset=Asset(network, address, name, version, decimals)) or register it in the "
                "AssetRegistry")
        return found

    def decimals_of(self, network: str, address: str, default: int = 6) -> int:
        """Decimals of a listed token (or one ``lookup`` found), else ``default``."""
        a = self._by_address.get((network, address.lower()))
        return a.decimals if a is not None else default


__all__ = ["KNOWN_ASSETS", "Asset", "AssetRegistry", "TokenLookup"]
