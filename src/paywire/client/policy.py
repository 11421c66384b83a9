"""Spend policy for a paying client: pure rules → allow / refuse (which rule, and why). No I/O.

Money limits are dollars (``"$0.10"``, ``Decimal("0.1")``, ``0.1``) and apply to tokens paywire can value in
dollars: the known USDC deployments plus any ``Asset`` given in ``Policy(assets=...)`` (treated as $1
stablecoins). Internally everything is counted in micro-dollars (integers), rounding a payment *up*, so spend
is never under-counted.

Budgets (``per_host``, ``per_payee``, ``total``) cover every payment the store remembers; ``daily`` covers
the current UTC day. The store passes what was already spent (``paywire.spending.Spent``);
``paywire.spending.check_budget`` decides.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, Final

from paywire.errors import ConfigError
from paywire.evm.assets import Asset
from paywire.money import parse_money
from paywire.schemes.registry import default_registry
from paywire.spending import DAILY, MICROS, PER_HOST, PER_PAYEE, TOTAL, fmt_usd
from paywire.spending import Quote as Quote
from paywire.spending import Refusal as Refusal

Money = str | int | float | Decimal

# Rule names, as they appear in refusals, receipts and the CLI (the budget ones: paywire.spending).
NETWORK: Final = "allowed_networks"
ASSET: Final = "allowed_assets"
PAYEE: Final = "allowed_payees"
HOST: Final = "allowed_hosts"
MAX_PER_PAYMENT: Final = "max_per_payment"
APPROVAL: Final = "approval"
UNVALUED: Final = "unvalued_asset"
FUNDS: Final = "funds"
SCHEME: Final = "scheme"
PROTOCOL: Final = "protocols"
SATS_PER_BTC: Final = 100_000_000


def to_micros(value: Money) -> int:
    """Dollars → micro-dollars (``"$0.10"`` → 100000); refuses finer than a micro-dollar."""
    dollars = parse_money(value)
    scaled = dollars * MICROS
    if scaled != scaled.to_integral_value():
        raise ConfigError(f"{value!r} is finer than a millionth of a dollar")
    return int(scaled)


def usd_micros_of(amount: int, decimals: int) -> int:
    """Atomic units of a $1 token → micro-dollars, rounded up."""
    if decimals >= 6:
        return int(-(-amount // 10 ** (decimals - 6)))
    return int(amount * 10 ** (6 - decimals))


def _norm_addr(a: str) -> str:
    return a.lower() if a.startswith("0x") else a


def _money_opt(value: Money | None, name: str) -> int | None:
    if value is None:
        return None
    try:
        return to_micros(value)
    except ConfigError as exc:
        raise ConfigError(f"Policy({name}=...): {exc}") from None


@dataclass(frozen=True)
class Policy:
    """What an agent may pay, checked before anything is signed. ``None`` means "no limit" for each rule.

    * ``max_per_payment``: the most one payment may cost.
    * ``per_host`` / ``per_payee`` / ``total``: budgets over everything the store remembers;
      ``daily``: budget for the current UTC day.
    * ``allowed_networks`` (CAIP-2), ``allowed_assets`` (token addresses, or ``network/address``),
      ``allowed_payees`` (addresses), ``allowed_hosts`` (``api.example.com``, ``*.example.com``).
    * ``approval_threshold``: payments above it need the approval hook's yes (``0`` = every payment).
    * ``dry_run``: decide and record what would be paid, but never sign.
    * ``assets``: extra tokens valued at $1 each (e.g. a devnet's token), besides the known USDC.
    * ``btc_usd``: the dollar price of one bitcoin you want Lightning payments (sats: MPP ``lightning/charge``
      and L402) counted at; every dollar limit and budget then covers them. Without it sats are unvalued:
      refused when the policy has dollar limits, allowed otherwise.
    * ``protocols``: which protocols may pay, most preferred first (x402 wins when several are offered and
      allowed; then the cheapest option of that protocol): built-in names, or names added with
      :func:`paywire.client.protocols.register` (before the policy is made).
    * ``offer_signers``: pay only offers signed (x402 ``offer-receipt``) by one of these seller keys —
      addresses (EIP-712) or DIDs (JWS ``kid``); None: signatures are checked and kept when present, not required.
    """

    max_per_payment: Money | None = None
    per_host: Money | None = None
    per_payee: Money | None = None
    daily: Money | None = None
    total: Money | None = None
    allowed_networks: Collection[str] | None = None
    allowed_assets: Collection[str] | None = None
    allowed_payees: Collection[str] | None = None
    allowed_hosts: Collection[str] | None = None
    approval_threshold: Money | None = None
    dry_run: bool = False
    assets: Sequence[Asset] = ()
    btc_usd: Money | None = None
    protocols: Sequence[str] = ("x402", "mpp", "l402")
    offer_signers: Collection[str] | None = None
    _limits: dict[str, int | None] = field(init=False, repr=False, compare=False)
    _values: dict[tuple[str, str], int] = field(init=False, repr=False, compare=False)
    _btc: int | None = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        limits = {
            name: _money_opt(getattr(self, name), name)
            for name in (MAX_PER_PAYMENT, PER_HOST, PER_PAYEE, DAILY, TOTAL, "approval_threshold")
        }
        object.__setattr__(self, "_limits", limits)
        known = default_registry.assets()  # every registered network family's tokens (USDC on Base …)
        values = {(a.network, _norm_addr(a.address)): a.decimals for a in (*known, *self.assets)}
        object.__setattr__(self, "_values", values)
        object.__setattr__(self, "_btc", _money_opt(self.btc_usd, "btc_usd"))
        if isinstance(self.protocols, str):
            raise ConfigError(f"Policy(protocols=...) takes a list, not one string: [{self.protocols!r}]")
        from paywire.client.protocols import protocol_names

        names = protocol_names()  # the built-in ones, then those added with paywire.client.protocols.register
        unknown = set(self.protocols) - set(names)
        if unknown:
            raise ConfigError(f"Policy(protocols=...): unknown {sorted(unknown)} (use {', '.join(names)})")
        for name in ("allowed_networks", "allowed_assets", "allowed_payees", "allowed_hosts", "offer_signers"):
            v = getattr(self, name)
            if isinstance(v, str):
                raise ConfigError(f"Policy({name}=...) takes a list, not one string: [{v!r}]")

    @classmethod
    def from_mapping(cls, data: dict[str, Any], *, assets: Iterable[Asset] = ()) -> Policy:
        """A policy from a JSON/TOML-style mapping with the same keys as the constructor."""
        known = {f for f in cls.__dataclass_fields__ if not f.startswith("_") and f != "assets"}
        unknown = set(data) - known
        if unknown:
            raise ConfigError(f"unknown policy keys: {', '.join(sorted(unknown))} (known: {', '.join(sorted(known))})")
        return cls(**data, assets=tuple(assets))

    def limit(self, name: str) -> int | None:
        """A money limit in micro-dollars (``max_per_payment``, ``daily``, ..., ``approval_threshold``)."""
        return self._limits[name]

    @property
    def has_budgets(self) -> bool:
        """True when any rule needs to know past spend."""
        return any(self._limits[n] is not None for n in (PER_HOST, PER_PAYEE, DAILY, TOTAL))

    @property
    def has_money_limits(self) -> bool:
        return any(v is not None for v in self._limits.values())

    def value(self, network: str, asset: str, amount: int) -> int | None:
        """Micro-dollars for ``amount`` atomic units of a token, or None when the token has no known value."""
        if asset == "sat" and network.startswith("bip122:"):
            return None if self._btc is None else int(-(-amount * self._btc // SATS_PER_BTC))
        decimals = self._values.get((network, _norm_addr(asset)))
        return None if decimals is None else usd_micros_of(amount, decimals)

    def value_released(self, network: str, asset: str, amount: int) -> int:
        """Micro-dollars of ``amount`` coming back (a refund), rounded down (0 when the token has no value)."""
        decimals = self._values.get((network, _norm_addr(asset)))
        if decimals is None:
            return 0
        return int(amount // 10 ** (decimals - 6)) if decimals >= 6 else int(amount * 10 ** (6 - decimals))

    def with_changes(self, **changes: Any) -> Policy:
        """A copy with some fields replaced."""
        fields = {f: getattr(self, f) for f in self.__dataclass_fields__ if not f.startswith("_")}
        fields.update(changes)
        return Policy(**fields)


def _host_allowed(host: str, patterns: Collection[str]) -> bool:
    h = host.lower()
    return any(h == p.lower() or fnmatch.fnmatchcase(h, p.lower()) for p in patterns)


def _asset_allowed(network: str, asset: str, allowed: Collection[str]) -> bool:
    a = _norm_addr(asset)
    for entry in allowed:
        net, sep, addr = entry.rpartition("/")
        if sep and net != network:
            continue
        if _norm_addr(addr) == a:
            return True
    return False


def check_static(policy: Policy, q: Quote) -> Refusal | None:
    """Rules that do not depend on past spend: allow-lists, asset value, max per payment."""
    if policy.allowed_networks is not None and q.network not in policy.allowed_networks:
        return Refusal(NETWORK, f"network {q.network} is not in allowed_networks {sorted(policy.allowed_networks)}")
    if policy.allowed_assets is not None and not _asset_allowed(q.network, q.asset, policy.allowed_assets):
        return Refusal(ASSET, f"asset {q.asset} on {q.network} is not in allowed_assets")
    if policy.allowed_payees is not None and _norm_addr(q.payee) not in {
        _norm_addr(p) for p in policy.allowed_payees
    }:
        return Refusal(PAYEE, f"payee {q.payee} is not in allowed_payees")
    if policy.allowed_hosts is not None and not _host_allowed(q.host, policy.allowed_hosts):
        return Refusal(HOST, f"host {q.host} is not in allowed_hosts {sorted(policy.allowed_hosts)}")
    if q.usd_micros is None:
        if policy.has_money_limits:
            return Refusal(UNVALUED, f"asset {q.asset} on {q.network} has no known dollar value, so the "
                                     "policy's dollar limits cannot be applied (add it to Policy(assets=...))")
        return None
    cap = policy.limit(MAX_PER_PAYMENT)
    if cap is not None and q.usd_micros > cap:
        return Refusal(MAX_PER_PAYMENT, f"price {fmt_usd(q.usd_micros)} is above max_per_payment {fmt_usd(cap)}")
    return None


def needs_approval(policy: Policy, q: Quote) -> bool:
    """True when the payment is above the approval threshold (an unvalued asset always needs approval then)."""
    threshold = policy.limit("approval_threshold")
    if threshold is None:
        return False
    return q.usd_micros is None or q.usd_micros > threshold


def describe(q: Quote) -> str:
    """``$0.01 (10000 atomic of 0xabc… on eip155:8453) to 0xdef…``."""
    price = fmt_usd(q.usd_micros) if q.usd_micros is not None else f"{q.amount} atomic units"
    return f"{price} to {q.payee} on {q.network} (asset {q.asset})"

