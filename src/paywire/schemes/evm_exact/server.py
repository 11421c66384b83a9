"""Server side of ``exact`` on EVM: turn a price into an offer (``PaymentRequirements``)."""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal, InvalidOperation

from paywire.errors import ConfigError
from paywire.x402.models import PaymentRequirements


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


def parse_money(price: str | int | float | Decimal) -> Decimal:
    """``"$0.01"``, ``"0.01"``, ``0.01`` → Decimal dollars; raises ConfigError when not a price."""
    text = str(price).strip().removeprefix("$").replace(",", "")
    try:
        value = Decimal(text)
    except InvalidOperation:
        raise ConfigError(f"not a money price: {price!r} (write it like '$0.01')") from None
    if not value.is_finite() or value < 0:
        raise ConfigError(f"not a money price: {price!r}")
    return value


def to_atomic(dollars: Decimal, decimals: int) -> int:
    """Dollars → atomic units; refuses prices finer than the token's precision."""
    scaled = dollars.scaleb(decimals)
    if scaled != scaled.to_integral_value():
        raise ConfigError(f"price {dollars} has more precision than the token's {decimals} decimals")
    return int(scaled)


def exact_evm_offer(
    asset: Asset,
    pay_to: str,
    *,
    amount: int | None = None,
    price: str | Decimal | None = None,
    max_timeout_seconds: int = 60,
) -> PaymentRequirements:
    """An ``exact`` EIP-3009 offer for ``amount`` atomic units (or a money ``price``) of ``asset``."""
    if (amount is None) == (price is None):
        raise ConfigError("give exactly one of amount= (atomic units) or price= ('$0.01')")
    atomic = amount if amount is not None else to_atomic(parse_money(price or "0"), asset.decimals)
    return PaymentRequirements(
        scheme="exact",
        network=asset.network,
        amount=atomic,
        asset=asset.address,
        pay_to=pay_to,
        max_timeout_seconds=max_timeout_seconds,
        extra={"name": asset.name, "version": asset.version},
    )
