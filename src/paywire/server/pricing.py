"""Prices → offers: money prices (``"$0.01"``) through an asset registry, atomic amounts, dynamic callables.

An :class:`Offer` is what a seller writes; :func:`resolve_offer` turns it into the wire ``PaymentRequirements``
(digest §1.2). Anything that cannot work raises ``ConfigError`` with what to change.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from paywire.errors import ConfigError
from paywire.schemes.evm_exact.server import Asset, AssetRegistry, exact_evm_offer, parse_money, to_atomic
from paywire.server.request import RequestInfo
from paywire.x402.models import PaymentRequirements
from paywire.x402.networks import is_caip2

Price = str | int | Decimal | float
"""``"$0.01"`` / ``"0.01"`` / ``Decimal`` / ``float`` = dollars of the network's stablecoin; ``int`` = atomic units."""
PriceFn = Callable[[RequestInfo], Price]


@dataclass(frozen=True, slots=True)
class Offer:
    """One way to pay for a route. Unset ``pay_to``/``network`` come from the seller's defaults.

    ``asset`` is an :class:`Asset`, a token address (then its EIP-712 domain must be known to the registry or
    given in ``extra``), or None for the network's default stablecoin. ``price`` may be a callable of the
    request (dynamic pricing).
    """

    price: Price | PriceFn
    pay_to: str | None = None
    network: str | None = None
    asset: Asset | str | None = None
    scheme: str = "exact"
    max_timeout_seconds: int = 60
    extra: Mapping[str, Any] = field(default_factory=dict)

    @property
    def is_dynamic(self) -> bool:
        return callable(self.price)


@dataclass(frozen=True, slots=True)
class Defaults:
    """Seller-wide defaults for offers."""

    pay_to: str | None = None
    network: str | None = None
    assets: AssetRegistry = field(default_factory=AssetRegistry)


def _asset_for(offer: Offer, network: str, assets: AssetRegistry, money: bool) -> Asset | None:
    if isinstance(offer.asset, Asset):
        if offer.asset.network != network:
            raise ConfigError(f"asset {offer.asset.address} is registered on {offer.asset.network}, "
                              f"not on {network}: use an Asset of that network")
        return offer.asset
    try:
        default = assets.default_for(network)
    except ConfigError:
        default = None
    if offer.asset is None:
        if default is None:
            raise ConfigError(
                f"no stablecoin is known on {network}, so a money price like {offer.price!r} cannot be priced: "
                "register the token with AssetRegistry.register(Asset(network, address, name, version, "
                "decimals)) or give Offer(asset=Asset(...))")
        return default
    if default is not None and default.address.lower() == offer.asset.lower():
        return default
    if money:
        raise ConfigError(
            f"asset {offer.asset} on {network} is unknown, so {offer.price!r} cannot be converted to its units: "
            "pass Offer(asset=Asset(network, address, name, version, decimals)) or register it in the "
            "AssetRegistry")
    return None


def resolve_offer(offer: Offer | PaymentRequirements, defaults: Defaults,
                  request: RequestInfo | None = None) -> tuple[PaymentRequirements, int]:
    """The wire offer and its token's decimals (6 when unknown). ``request`` is needed for dynamic prices."""
    if isinstance(offer, PaymentRequirements):
        return offer, _decimals(offer, defaults.assets)
    network = offer.network or (offer.asset.network if isinstance(offer.asset, Asset) else None) or defaults.network
    pay_to = offer.pay_to or defaults.pay_to
    if not network or not is_caip2(network):
        raise ConfigError(f"offer {offer.price!r} needs a CAIP-2 network (e.g. 'eip155:8453'): "
                          "set Offer(network=...) or the seller's default network")
    if not pay_to:
        raise ConfigError(f"offer {offer.price!r} has no payTo: set Offer(pay_to=...) or the seller's pay_to")
    price: Any = offer.price
    if callable(price):
        if request is None:
            raise ConfigError("a dynamic price needs the request")
        price = price(request)
    money = not (isinstance(price, int) and not isinstance(price, bool))
    if isinstance(price, bool) or not isinstance(price, str | int | Decimal | float):
        raise ConfigError(f"price must be '$0.01', a Decimal or atomic int, got {type(price).__name__}")
    asset = _asset_for(offer, network, defaults.assets, money)
    if asset is None:  # an explicit token address with its domain in ``extra`` and an atomic price
        name, version = offer.extra.get("name"), offer.extra.get("version")
        if offer.scheme == "exact" and network.startswith("eip155:") and (
                not isinstance(name, str) or not isinstance(version, str)):
            raise ConfigError(f"token {offer.asset} on {network} needs its EIP-712 domain: give "
                              "Offer(asset=Asset(...)) or extra={'name': ..., 'version': ...}")
        asset = Asset(network, str(offer.asset), str(name or ""), str(version or ""))
    amount = to_atomic(parse_money(price), asset.decimals) if money else int(price)
    if amount < 0:
        raise ConfigError(f"price {price!r} is negative")
    extra: dict[str, Any] = {"name": asset.name, "version": asset.version} if offer.scheme == "exact" else {}
    extra.update(offer.extra)
    req = exact_evm_offer(asset, pay_to, amount=amount, max_timeout_seconds=offer.max_timeout_seconds)
    req = PaymentRequirements(scheme=offer.scheme, network=network, amount=req.amount, asset=req.asset,
                              pay_to=req.pay_to, max_timeout_seconds=req.max_timeout_seconds, extra=extra)
    return req, asset.decimals


def _decimals(req: PaymentRequirements, assets: AssetRegistry) -> int:
    try:
        a = assets.default_for(req.network)
    except ConfigError:
        return 6
    return a.decimals if a.address.lower() == req.asset.lower() else 6
