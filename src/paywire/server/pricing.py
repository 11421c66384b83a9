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
from paywire.evm.assets import Asset, AssetRegistry
from paywire.money import amount_of, is_money
from paywire.schemes.registry import OfferSpec, SchemeRegistry, default_registry
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


class _PlainServer:
    """Pricing for a (scheme, network) no plugin is registered for: the token's atomic units, the seller's
    ``extra`` as given."""

    def offer(self, spec: OfferSpec) -> tuple[PaymentRequirements, int]:
        asset = spec.assets.resolve(spec.network, spec.asset, money=is_money(spec.price), price=spec.price)
        address = asset.address if asset is not None else str(spec.asset)
        decimals = asset.decimals if asset is not None else 6
        req = PaymentRequirements(scheme=spec.scheme, network=spec.network, amount=amount_of(spec.price, decimals),
                                  asset=address, pay_to=spec.pay_to, max_timeout_seconds=spec.max_timeout_seconds,
                                  extra=dict(spec.extra))
        return req, decimals

    def decimals(self, requirements: PaymentRequirements, assets: AssetRegistry) -> int:
        return assets.decimals_of(requirements.network, requirements.asset)


_PLAIN = _PlainServer()


def resolve_offer(offer: Offer | PaymentRequirements, defaults: Defaults,
                  request: RequestInfo | None = None,
                  registry: SchemeRegistry = default_registry) -> tuple[PaymentRequirements, int]:
    """The wire offer and its token's decimals (6 when unknown). ``request`` is needed for dynamic prices.

    The scheme registered for (scheme, network) builds the offer (``ServerScheme.offer``)."""
    if isinstance(offer, PaymentRequirements):
        server = registry.server(offer.scheme, offer.network) or _PLAIN
        return offer, server.decimals(offer, defaults.assets)
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
    if isinstance(price, bool) or not isinstance(price, str | int | Decimal | float):
        raise ConfigError(f"price must be '$0.01', a Decimal or atomic int, got {type(price).__name__}")
    spec = OfferSpec(scheme=offer.scheme, network=network, pay_to=pay_to, price=price, asset=offer.asset,
                     assets=defaults.assets, max_timeout_seconds=offer.max_timeout_seconds, extra=offer.extra)
    found = registry.server(offer.scheme, network)
    return found.offer(spec) if found is not None else _PLAIN.offer(spec)
