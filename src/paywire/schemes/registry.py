"""Scheme plugins and the registry through which the rest of paywire learns about them.

A scheme (``exact``, ``upto`` …) on one network family (``eip155:*``, ``solana:*`` …) is one folder with
three sides:

* :class:`ClientScheme` (buyer): can it pay an offer, sign the payload, and which fields of the signed payload
  the buyer's durable ledger keeps (:meth:`ClientScheme.ledger_fields`);
* :class:`ServerScheme` (seller): turn a price into a wire offer (:meth:`ServerScheme.offer`), the decimals of
  an offer, and the claim key / payer of a payment (what makes two payments "the same authorization");
* :class:`FacilitatorScheme` (facilitator): verify and settle.

A seller side may also implement :class:`SettlementLookup`: find on chain the settlement of a payment that its
facilitator cannot account for (a facilitator that keeps no record answers a second ``/settle`` of a settled
payment with "nonce already used").

The folder's ``__init__.py`` has ``register(registry)``, which adds its sides to a :class:`SchemeRegistry`
keyed by (scheme, network pattern). The package's own schemes are listed in :data:`BUILTIN_SCHEMES`, one line
each, and registered into :data:`default_registry` on its first lookup (so importing this module stays light).
A scheme that is not part of paywire registers itself the same way::

    from paywire.schemes.registry import default_registry
    my_scheme.register(default_registry)
"""

from __future__ import annotations

import importlib
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import TYPE_CHECKING, Any, Generic, Protocol, TypeVar

from paywire.x402.models import (
    PaymentPayload,
    PaymentRequirements,
    SettleResponse,
    SupportedKind,
    VerifyResponse,
)
from paywire.x402.networks import matches_pattern

if TYPE_CHECKING:
    from paywire.chain.base import Chain
    from paywire.evm.assets import Asset, AssetRegistry
    from paywire.settlement.rail import Mined

BUILTIN_SCHEMES: tuple[str, ...] = (
    "paywire.schemes.evm_exact",  # exact × eip155:* (EIP-3009 transferWithAuthorization, or Permit2)
    "paywire.schemes.evm_upto",  # upto × eip155:* (Permit2 + the x402 upto proxy)
    "paywire.schemes.evm_batch",  # batch-settlement × eip155:* (x402 payment channels, our escrow)
)
"""Modules whose ``register(registry)`` fills :data:`default_registry`: one line per scheme."""

LedgerFields = tuple[str | None, int | None]
"""(nonce, valid_before) of a signed payload, as the buyer's ledger keeps them; (None, None) when the scheme
has no single-use nonce or expiry."""

NO_LEDGER_FIELDS: LedgerFields = (None, None)


# ------------------------------------------------------------------------------------------------ sides


class ClientScheme(Protocol):
    """Buyer side: sign a payment for an offer."""

    scheme: str
    network_pattern: str

    def can_pay(self, requirements: PaymentRequirements) -> bool:
        """True when this wallet can sign for the offer."""
        ...

    async def create_payload(self, requirements: PaymentRequirements) -> Mapping[str, Any]:
        """The scheme-specific ``PaymentPayload.payload`` object for the offer."""
        ...

    def ledger_fields(self, payload: Mapping[str, Any]) -> LedgerFields:
        """(nonce, valid_before) of a payload this scheme signed, for the buyer's ledger (reconciliation)."""
        ...


@dataclass(frozen=True, slots=True)
class OfferSpec:
    """A seller's price for one (scheme, network), everything generic already resolved; the scheme turns it
    into the wire offer.

    ``price``: an ``int`` is atomic units, anything else a money price (``"$0.01"``, ``Decimal``) in dollars;
    ``asset``: the family's asset object, a token identifier, or None for the network's default token;
    ``assets``: the seller's registry of default tokens per network.
    """

    scheme: str
    network: str
    pay_to: str
    price: str | int | Decimal | float
    asset: Asset | str | None
    assets: AssetRegistry
    max_timeout_seconds: int = 60
    extra: Mapping[str, Any] = field(default_factory=dict)


class ServerScheme(Protocol):
    """Seller side: price → offer, and what a payment for an offer claims."""

    scheme: str
    network_pattern: str

    def offer(self, spec: OfferSpec) -> tuple[PaymentRequirements, int]:
        """The wire offer for ``spec`` and its token's decimals; ConfigError says what to change."""
        ...

    def decimals(self, requirements: PaymentRequirements, assets: AssetRegistry) -> int:
        """Decimals of the offer's token (for showing prices)."""
        ...

    def claim(self, requirements: PaymentRequirements, payload: Mapping[str, Any]) -> tuple[str, str | None] | None:
        """(claim key, payer) when the payload names a single-use authorization (two payments with one key can
        settle at most once between them); None when it does not parse (the seller then uses the payment hash)."""
        ...

    def payer(self, payload: Mapping[str, Any]) -> str | None:
        """Who pays, when the payload says so."""
        ...


class SettlementLookup(Protocol):
    """Optional seller side: read the chain (never write) for the transaction that spent a payment.

    A seller side may also list ``spent_reasons``: the settle refusals that mean "this authorization is spent".
    Answered to a retried ``/settle``, they may be our own first settlement, so the seller never records them as
    "not paid" (without a chain to read, the payment stays unresolved).
    """

    async def find_settlement(self, requirements: PaymentRequirements, payload: Mapping[str, Any],
                              chain: Chain) -> Mined | None:
        """The transaction that used the payload's authorization (``paid``: it moved the offer's amount to its
        ``pay_to``), or None when none is found or the scheme cannot tell."""
        ...


class FacilitatorScheme(Protocol):
    """Facilitator side: verify and settle."""

    scheme: str
    network_pattern: str

    def networks(self) -> Sequence[str]:
        """Concrete CAIP-2 networks this instance can settle on."""
        ...

    def signer_addresses(self) -> Sequence[str]: ...

    def kind_extra(self, network: str) -> Mapping[str, Any] | None: ...

    async def verify(
        self, payload: PaymentPayload, requirements: PaymentRequirements, *, v1: bool = False
    ) -> VerifyResponse:
        """``v1`` selects x402 v1 rules and reason spellings."""
        ...

    async def settle(
        self, payload: PaymentPayload, requirements: PaymentRequirements, *, v1: bool = False
    ) -> SettleResponse: ...


class AssetInfo(Protocol):
    """What the registry needs to know of a network family's token (``paywire.evm.assets.Asset`` is one)."""

    @property
    def network(self) -> str: ...

    @property
    def address(self) -> str: ...

    @property
    def decimals(self) -> int: ...


ClientFactory = Callable[[Any], ClientScheme | None]
"""A signer or wallet → the client side for it, or None when this scheme cannot use that kind of signer."""
FacilitatorFactory = Callable[..., FacilitatorScheme]
"""Builds the facilitator side for the service: ``factory(rails, *, store, receipt_timeout, stuck_after,
expiry_margin)`` (a scheme without expiring authorizations may ignore the last), where
``rails`` are the configured networks of the scheme's family (EVM: ``paywire.chain.rail.EvmNetwork``)."""


def handles(plugin: ClientScheme | ServerScheme | FacilitatorScheme, scheme: str, network: str) -> bool:
    """Whether a plugin is for (scheme, network)."""
    return plugin.scheme == scheme and matches_pattern(network, plugin.network_pattern)


def supported_kinds(plugins: Sequence[FacilitatorScheme]) -> list[SupportedKind]:
    """``/supported`` kinds for v2 and (where a legacy name exists) v1."""
    from paywire.x402.networks import to_v1_name

    kinds: list[SupportedKind] = []
    for p in plugins:
        for net in p.networks():
            kinds.append(SupportedKind(x402_version=2, scheme=p.scheme, network=net, extra=p.kind_extra(net)))
    for p in plugins:
        if getattr(p, "v2_only", False):  # a scheme x402 v1 does not have (upto)
            continue
        for net in p.networks():
            v1 = to_v1_name(net)
            if v1 is not None:
                kinds.append(SupportedKind(x402_version=1, scheme=p.scheme, network=v1, extra=p.kind_extra(net)))
    return kinds


# ------------------------------------------------------------------------------------------------ registry

_V = TypeVar("_V")
_CACHE_LIMIT = 1024  # lookups remembered per table (networks come from configuration, so few)


@dataclass(slots=True)
class _Table(Generic[_V]):
    """(scheme, network pattern) → value; lookups by a concrete network, most specific pattern first."""

    entries: dict[tuple[str, str], _V] = field(default_factory=dict)
    _cache: dict[tuple[str, str], _V | None] = field(default_factory=dict)

    def put(self, scheme: str, pattern: str, value: _V) -> None:
        self.entries.pop((scheme, pattern), None)  # re-registering moves the entry last (it wins ties)
        self.entries[(scheme, pattern)] = value
        self._cache.clear()

    def drop(self, scheme: str, pattern: str) -> None:
        self.entries.pop((scheme, pattern), None)
        self._cache.clear()

    def find(self, scheme: str, network: str) -> _V | None:
        key = (scheme, network)
        try:
            return self._cache[key]
        except KeyError:
            pass
        best: _V | None = None
        best_rank = -1
        for (s, pattern), value in self.entries.items():
            if s != scheme or not matches_pattern(network, pattern):
                continue
            rank = 0 if pattern.endswith("*") else 1  # an exact network beats a family; later beats earlier
            if rank >= best_rank:
                best, best_rank = value, rank
        if len(self._cache) < _CACHE_LIMIT:
            self._cache[key] = best
        return best


class SchemeRegistry:
    """Scheme sides keyed by (scheme, network pattern), and the known tokens of each network family.

    ``builtins``: modules whose ``register(registry)`` is called on the first lookup (not on import).
    """

    def __init__(self, builtins: Sequence[str] = ()) -> None:
        self._builtins = tuple(builtins)
        self._loaded = not self._builtins
        self._lock = threading.RLock()
        self._clients: _Table[ClientFactory] = _Table()
        self._servers: _Table[ServerScheme] = _Table()
        self._facilitators: _Table[FacilitatorFactory] = _Table()
        self._assets: dict[tuple[str, str], AssetInfo] = {}

    def _load(self) -> None:
        if self._loaded:
            return
        with self._lock:  # a second thread must not see a half-filled registry
            if not self._loaded:
                for name in self._builtins:
                    importlib.import_module(name).register(self)
                self._loaded = True

    # -- registration ---------------------------------------------------------------------------

    def register_client(self, scheme: str, network_pattern: str, factory: ClientFactory) -> None:
        """How to build the buyer side from a signer or wallet (``factory`` returns None for a signer it
        cannot use)."""
        self._clients.put(scheme, network_pattern, factory)

    def register_server(self, server: ServerScheme) -> None:
        """The seller side, for its ``(scheme, network_pattern)``."""
        self._servers.put(server.scheme, server.network_pattern, server)

    def register_facilitator(self, scheme: str, network_pattern: str, factory: FacilitatorFactory) -> None:
        """How the facilitator service builds the facilitator side from its settings."""
        self._facilitators.put(scheme, network_pattern, factory)

    def register_assets(self, assets: Iterable[AssetInfo]) -> None:
        """Tokens of a network family every buyer and seller knows (e.g. USDC on Base)."""
        for a in assets:
            self._assets[(a.network, a.address.lower())] = a

    def unregister(self, scheme: str, network_pattern: str) -> None:
        """Remove every side registered for (scheme, network_pattern)."""
        self._load()
        self._clients.drop(scheme, network_pattern)
        self._servers.drop(scheme, network_pattern)
        self._facilitators.drop(scheme, network_pattern)

    # -- lookups --------------------------------------------------------------------------------

    def server(self, scheme: str, network: str) -> ServerScheme | None:
        """The seller side for (scheme, network), or None."""
        self._load()
        return self._servers.find(scheme, network)

    def client_factory(self, scheme: str, network: str) -> ClientFactory | None:
        self._load()
        return self._clients.find(scheme, network)

    def facilitator_factory(self, scheme: str, network: str) -> FacilitatorFactory | None:
        self._load()
        return self._facilitators.find(scheme, network)

    def clients_for(self, signer: Any) -> list[ClientScheme]:
        """The buyer side of every registered scheme that can use ``signer``, in registration order."""
        self._load()
        out: list[ClientScheme] = []
        for factory in self._clients.entries.values():
            client = factory(signer)
            if client is not None:
                out.append(client)
        return out

    def facilitators(self) -> list[tuple[str, str, FacilitatorFactory]]:
        """(scheme, network pattern, factory) of every registered facilitator side, in registration order."""
        self._load()
        return [(s, p, f) for (s, p), f in self._facilitators.entries.items()]

    def facilitators_for(self, rails: Sequence[Any], **settings: Any) -> list[FacilitatorScheme]:
        """The facilitator side of every registered scheme whose network pattern matches one of ``rails``
        (objects with a ``network``: EVM's ``EvmNetwork``), each built over its matching rails with
        ``settings`` (``store``, ``receipt_timeout``, ``stuck_after``, ``expiry_margin``)."""
        out: list[FacilitatorScheme] = []
        for _scheme, pattern, factory in self.facilitators():
            mine = [r for r in rails if matches_pattern(r.network, pattern)]
            if mine:
                out.append(factory(mine, **settings))
        return out

    def assets(self) -> tuple[AssetInfo, ...]:
        """Every known token of every network family."""
        self._load()
        return tuple(self._assets.values())


default_registry = SchemeRegistry(BUILTIN_SCHEMES)
"""The registry the seller, buyer and facilitator ask; paywire's own schemes register on its first lookup."""


__all__ = [
    "BUILTIN_SCHEMES",
    "NO_LEDGER_FIELDS",
    "AssetInfo",
    "ClientFactory",
    "ClientScheme",
    "FacilitatorFactory",
    "FacilitatorScheme",
    "LedgerFields",
    "OfferSpec",
    "SchemeRegistry",
    "ServerScheme",
    "default_registry",
    "handles",
    "supported_kinds",
]
