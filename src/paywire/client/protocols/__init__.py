"""The payment protocols the buyer speaks, as peers behind one interface (:mod:`.base`): x402, MPP, L402.

Adding a protocol is one module here implementing :class:`~paywire.client.protocols.base.BuyerProtocol` (with a
module-level ``PROTOCOL`` instance) plus one line in ``BUILTIN``. Names are loaded on first use.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any, Final

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


def builtin_protocols() -> tuple[BuyerProtocol, ...]:
    """The built-in protocols' ``PROTOCOL`` instances, in ``BUILTIN`` order."""
    return tuple(importlib.import_module(f"{__name__}.{m}").PROTOCOL for m in BUILTIN)


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


__all__ = ["BUILTIN", "PROTOCOLS", "builtin_protocols", *_LAZY]
