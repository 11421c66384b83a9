"""The one interface a payment protocol implements on the buyer, free of I/O.

A protocol (x402, MPP, L402) turns a 402 into payable :class:`~paywire.client.core.Option` entries, turns the
chosen option into the credential header of the paid request (asking the wallet's scheme to sign or pay),
reads the receipt off the paid response, and says whether a rejection is one it can answer by signing again.
The engine (``client/engine.py``) performs every HTTP exchange and ledger write; it asks the registered
protocols, in order, and never branches on a protocol's name.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final, Protocol

if TYPE_CHECKING:
    from paywire.client.core import Challenge, Option, PaymentAttempt
    from paywire.schemes.registry import ClientScheme
    from paywire.x402.models import SettleResponse

X402: Final = "x402"
MPP: Final = "mpp"
L402: Final = "l402"

AssetLookup = Callable[[str, str], Any]
"""(network, token address) → the token's EIP-712 domain (an ``Asset``), or None when unknown."""


@dataclass(frozen=True, slots=True)
class WalletAbilities:
    """What the wallet can answer, for headers a protocol adds to the first request."""

    schemes: Sequence[ClientScheme]
    lightning: bool
    """A Lightning wallet backend is configured."""


@dataclass(frozen=True, slots=True)
class PaidReceipt:
    """What a paid response says about the payment: x402's parsed settlement, and the reference recorded as
    the ledger's ``tx`` (transaction hash, payment hash)."""

    settlement: SettleResponse | None = None
    reference: str | None = None


@dataclass(frozen=True, slots=True)
class Resign:
    """Answer a rejection by paying ``option`` (read from the rejecting 402) signed with ``variant``; the
    engine remembers the variant for the host and re-signs at most once per payment."""

    option: Option
    variant: str


class BuyerProtocol(Protocol):
    """A payment protocol as the buyer speaks it."""

    name: str
    """``Option.protocol`` of the options it reads; the name ``Policy.protocols`` uses."""
    reuses_credential: bool
    """A paid credential may be sent again on later requests to the same host (L402 tokens)."""

    def request_headers(self, wallet: WalletAbilities) -> Mapping[str, str]:
        """Headers for the first, unpaid request (MPP: ``Accept-Payment``)."""
        ...

    def read(self, headers: Mapping[str, str], body: bytes, assets: AssetLookup) -> Challenge | None:
        """This protocol's payable options in a 402, as a :class:`Challenge` (options indexed from 0); None when
        the 402 offers nothing payable in this protocol; ``WireError`` when it offers it unreadably."""
        ...

    async def credential(self, challenge: Challenge, option: Option, scheme: ClientScheme, *,
                         variant: str) -> PaymentAttempt:
        """The paid request's header for ``option``, signed (or paid) by ``scheme``. ``variant`` is the signing
        variant learnt for this host (MPP ``evm/charge``: the EIP-3009 nonce derivation); others ignore it."""
        ...

    def receipt(self, headers: Mapping[str, str], option: Option) -> PaidReceipt:
        """What the response to the paid request says about the payment."""
        ...

    def resign(self, reason: str, headers: Mapping[str, str], option: Option, variant: str,
               assets: AssetLookup) -> Resign | None:
        """After a 402 to the paid request with ``reason``: another way to pay it, or None (the usual answer)."""
        ...


class NoResign:
    """Mixin for protocols without a second try."""

    def resign(self, reason: str, headers: Mapping[str, str], option: Option, variant: str,
               assets: AssetLookup) -> Resign | None:
        return None


def www_authenticate(headers: Mapping[str, str]) -> str:
    return headers.get("www-authenticate") or headers.get("WWW-Authenticate") or ""


def protocol_rank(preferences: Sequence[str]) -> Callable[[str], int]:
    order = {p: i for i, p in enumerate(preferences)}
    return lambda proto: order.get(proto, len(order))


__all__ = [
    "L402",
    "MPP",
    "X402",
    "AssetLookup",
    "BuyerProtocol",
    "NoResign",
    "PaidReceipt",
    "Resign",
    "WalletAbilities",
    "protocol_rank",
    "www_authenticate",
]
