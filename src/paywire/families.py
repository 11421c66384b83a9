"""Network families (chain families, "rails") for the facilitator service, keyed by CAIP-2 namespace.

A family (``eip155`` for EVM chains, ``solana`` …) knows, for one configured network (a
:class:`paywire.facilitator.config.NetworkConfig`):

* :meth:`NetworkFamily.validate` — whether the network's name and settings are valid for the family
  (``ConfigError`` says what to fix), and :meth:`NetworkFamily.needs_keys` — whether it needs signer keys;
* :meth:`NetworkFamily.open` — how to open it: connect (or start a local chain), check it is the configured
  network, and build the rail object the family's schemes settle with (EVM: ``paywire.chain.rail.EvmNetwork``),
  returned as an :class:`OpenNetwork` with its RPC URL, what to close on shutdown and an optional devnet hook.

``FacilitatorService.start`` asks :data:`default_families` for each configured network and hands the rails to
the scheme registry (``default_registry.facilitators_for``); ``NetworkConfig.validate`` asks it too, so a
network of no registered family is refused at startup.

A family registers from its own folder: its module has ``register(registry)``. paywire's own families are listed
in :data:`BUILTIN_FAMILIES`, one line each, and loaded on the first lookup (importing this module loads nothing
else). A family that is not part of paywire registers itself the same way::

    from paywire.families import default_families
    default_families.register(MyFamily())
"""

from __future__ import annotations

import importlib
import threading
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from paywire.errors import ConfigError

if TYPE_CHECKING:
    from paywire.facilitator.config import FacilitatorConfig, NetworkConfig

__all__ = [
    "BUILTIN_FAMILIES",
    "Closer",
    "FamilyRegistry",
    "NetworkFamily",
    "NetworkRail",
    "OpenNetwork",
    "default_families",
]

BUILTIN_FAMILIES: tuple[str, ...] = (
    "paywire.chain.family",  # eip155: EVM chains (embedded, anvil or an http(s) JSON-RPC node)
)
"""Modules whose ``register(registry)`` fills :data:`default_families`: one line per family."""

Closer = Callable[[], Awaitable[None]]


class NetworkRail(Protocol):
    """What the service needs of a family's rail object: the CAIP-2 network it settles on. The family's scheme
    factories (``SchemeRegistry.register_facilitator``) take it as is."""

    @property
    def network(self) -> str: ...


@dataclass(slots=True)
class OpenNetwork:
    """One opened network.

    ``rail``: what the family's schemes settle with; ``rpc_url``: where its node answers (the service's
    ``rpc_urls``); ``closers``: run in this order on shutdown; ``devnet``: for ``--devnet``, sets up a devnet
    on this network and returns it (``paywire.devnet.Devnet`` for EVM), or None when the family has none.
    """

    rail: NetworkRail
    rpc_url: str
    closers: list[Closer] = field(default_factory=list)
    devnet: Callable[[], Awaitable[Any]] | None = None


class NetworkFamily(Protocol):
    """A chain family, for the facilitator service."""

    namespace: str
    """CAIP-2 namespace: ``eip155``."""
    shape: str
    """How its network names look, for messages: ``eip155:<chain id>``."""

    def validate(self, net: NetworkConfig) -> None:
        """Refuse (``ConfigError``) a network name or settings this family cannot use."""
        ...

    def needs_keys(self, net: NetworkConfig) -> bool:
        """Whether the network needs configured signer keys (a local dev chain brings its own)."""
        ...

    async def open(self, net: NetworkConfig, config: FacilitatorConfig) -> OpenNetwork:
        """Open the network and build its rail. When this raises, it has already closed what it opened."""
        ...


class FamilyRegistry:
    """Network families by CAIP-2 namespace. ``builtins``: modules whose ``register(registry)`` is called on the
    first lookup (not on import); a family registered explicitly wins over a builtin of the same namespace."""

    def __init__(self, builtins: Sequence[str] = ()) -> None:
        self._builtins = tuple(builtins)
        self._loaded = not self._builtins
        self._lock = threading.RLock()
        self._families: dict[str, NetworkFamily] = {}

    def _load(self) -> None:
        if self._loaded:
            return
        with self._lock:  # a second thread must not see a half-filled registry
            if not self._loaded:
                explicit = dict(self._families)
                for name in self._builtins:
                    importlib.import_module(name).register(self)
                self._families.update(explicit)
                self._loaded = True

    def register(self, family: NetworkFamily) -> None:
        """Add (or replace) the family for ``family.namespace``."""
        self._families[family.namespace] = family

    def unregister(self, namespace: str) -> None:
        self._load()
        self._families.pop(namespace, None)

    def get(self, namespace: str) -> NetworkFamily | None:
        self._load()
        return self._families.get(namespace)

    def families(self) -> list[NetworkFamily]:
        """Every registered family, in registration order."""
        self._load()
        return list(self._families.values())

    def for_network(self, network: str) -> NetworkFamily:
        """The family of a CAIP-2 network; ``ConfigError`` naming the network and the known families if none."""
        namespace, sep, _ = network.partition(":")
        family = self.get(namespace) if sep else None
        if family is None:
            known = " or ".join(f.shape for f in self.families()) or "registered"
            raise ConfigError(f"network {network!r}: only {known} networks are supported")
        return family


default_families = FamilyRegistry(BUILTIN_FAMILIES)
"""The registry the facilitator service and its configuration ask; paywire's own families load on first lookup."""
