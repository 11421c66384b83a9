"""Scheme plugins: one folder per (scheme × network family), three roles.

* client side (``ClientScheme``) signs a payment for an offer;
* facilitator side (``FacilitatorScheme``) verifies and settles it;
* server side (``ServerScheme``) turns a price into an offer.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Protocol

from paywire.x402.models import (
    PaymentPayload,
    PaymentRequirements,
    SettleResponse,
    SupportedKind,
    VerifyResponse,
)
from paywire.x402.networks import matches_pattern


class ClientScheme(Protocol):
    scheme: str
    network_pattern: str

    def can_pay(self, requirements: PaymentRequirements) -> bool:
        """True when this wallet can sign for the offer."""
        ...

    async def create_payload(self, requirements: PaymentRequirements) -> Mapping[str, Any]:
        """The scheme-specific ``PaymentPayload.payload`` object for the offer."""
        ...


class FacilitatorScheme(Protocol):
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


def handles(plugin: ClientScheme | FacilitatorScheme, scheme: str, network: str) -> bool:
    """Whether a plugin is registered for (scheme, network)."""
    return plugin.scheme == scheme and matches_pattern(network, plugin.network_pattern)


def supported_kinds(plugins: Sequence[FacilitatorScheme]) -> list[SupportedKind]:
    """``/supported`` kinds for v2 and (where a legacy name exists) v1."""
    from paywire.x402.networks import to_v1_name

    kinds: list[SupportedKind] = []
    for p in plugins:
        for net in p.networks():
            kinds.append(SupportedKind(x402_version=2, scheme=p.scheme, network=net, extra=p.kind_extra(net)))
    for p in plugins:
        for net in p.networks():
            v1 = to_v1_name(net)
            if v1 is not None:
                kinds.append(SupportedKind(x402_version=1, scheme=p.scheme, network=v1, extra=p.kind_extra(net)))
    return kinds
