"""Money prices written by people (``"$0.01"``) and the atomic units a token counts in. Pure."""

from __future__ import annotations

from decimal import Decimal, InvalidOperation

from paywire.errors import ConfigError

Price = str | int | Decimal | float
"""``"$0.01"`` / ``"0.01"`` / ``Decimal`` / ``float`` = dollars of a stablecoin; ``int`` = atomic units."""


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


def is_money(price: Price) -> bool:
    """An ``int`` price is atomic units; anything else is dollars."""
    return not (isinstance(price, int) and not isinstance(price, bool))


def amount_of(price: Price, decimals: int) -> int:
    """Atomic units for ``price`` of a token with ``decimals``; ConfigError when negative or too precise."""
    amount = to_atomic(parse_money(price), decimals) if is_money(price) else int(price)
    if amount < 0:
        raise ConfigError(f"price {price!r} is negative")
    return amount


__all__ = ["Price", "amount_of", "is_money", "parse_money", "to_atomic"]
