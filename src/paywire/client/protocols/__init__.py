"""The payment protocols the buyer speaks, as peers behind one interface (:mod:`.base`): x402, MPP, L402.

Adding a protocol is one module here implementing :class:`~paywire.client.protocols.base.BuyerProtocol` (with a
module-level ``PROTOCOL`` instance) plus one line in ``BUILTIN``. Names are loaded on first use.

A protocol defined elsewhere (a plugin, a test) is added with :func:`register`: a ``Buyer`` made afterwards
speaks it (after the built-in ones) and ``Policy(protocols=[...])`` accepts its name — register it before
building the policy.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any, Final

from paywire.errors import ConfigError

if TYPE_CHECKING:
    from paywire.client.protocols.base import BuyerProtocol

BUILTIN: Final = (
    "x402",
    "mpp",
    "l402",
)
"""The built-in protocols: each is the module of that name here, whose ``PROTOCOL`` has that name. Their options
are listed in this order; ``Policy(protocols=…)`` accepts these names."""
PROTOCOLS: Final = BUILTIN


_ADDED: dict[str, BuyerProtocol] = {}
"""Protocols added with :func:`register`, by name, in registration order."""


def builtin_protocols() -> tuple[BuyerProtocol, ...]:
    """The built-in protocols' ``PROTOCOL`` instances, in ``BUILTIN`` order."""
    return tuple(importlib.import_module(f"{__name__}.{m}").PROTOCOL for m in BUILTIN)


def register(protocol: BuyerProtocol, *, replace: bool = False) -> BuyerProtocol:
    """Add a protocol: a ``Buyer`` made from now on speaks it (after the built-in ones, unless given
    ``protocols=``) and ``Policy(protocols=...)`` accepts its ``name``. A built-in name, or a name already
    registered (unless ``replace``), is a ``ConfigError``. Returns ``protocol``."""
    name = getattr(protocol, "name", None)
    if not isinstance(name, str) or not name:
        raise ConfigError(f"a buyer protocol needs a non-empty name, got {name!r} ({protocol!r})")
    if name in BUILTIN:
        raise ConfigError(f"buyer protocol {name!r} is built in and cannot be registered again")
    if name in _ADDED and not replace and _ADDED[name] is not protocol:
        raise ConfigError(f"a buyer protocol named {name!r} is already registered (pass replace=True)")
    _ADDED[name] = protocol
    return protocol


def unregister(name: str) -> None:
    """Remove a protocol added with :func:`register` (no error when there is none)."""
    _ADDED.pop(name, None)


def registered() -> tuple[BuyerProtocol, ...]:
    """Every protocol a ``Buyer`` speaks by default: the built-in ones, then the registered ones."""
    return (*builtin_protocols(), *_ADDED.values())


def protocol_names() -> tuple[str, ...]:
    """The names ``Policy(protocols=...)`` accepts: ``BUILTIN``, then the registered protocols' names (no import
    of any protocol module)."""
    return (*BUILTIN, *_ADDED)


_LAZY: Final = {
    "L402": "base", "MPP": "base", "X402": "base", "AssetLookup": "base",
    "BuyerProtocol": "base", "PaidReceipt": "base", "Resign": "base", "WalletAbilities": "base",
    "protocol_rank": "base", "www_authenticate": "base",
    "HASH_MISMATCH": "mpp", "MppOffer": "mpp", "accept_payment_value": "mpp", "credential_field": "mpp",
    "mpp_offers": "mpp", "other_variant": "mpp",
    "L402Offer": "l402", "l402_authorization": "l402", "l402_offers": "l402",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{module}"), name)


__all__ = ["BUILTIN", "PROTOCOLS", "builtin_protocols", "protocol_names", "register", "registered", "unregister", *_LAZY]
