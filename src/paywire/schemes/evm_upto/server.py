"""Server side of ``upto`` on EVM: a price is the maximum a request may cost; the offer says Permit2 and names
the facilitator (copied from its ``/supported`` kind, ``kind_extra_keys``)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from paywire.evm.assets import AssetRegistry
from paywire.evm.permit2 import claim_of
from paywire.schemes.evm_exact.server import ExactEvmServer
from paywire.schemes.registry import OfferSpec
from paywire.x402.models import PaymentRequirements


class UptoEvmServer:
    """``upto`` × ``eip155:*`` for the seller role."""

    scheme = "upto"
    network_pattern = "eip155:*"
    kind_extra_keys = ("facilitatorAddress",)
    """Keys of the facilitator's ``/supported`` kind extra the offer carries (the seller copies them in)."""
    variable = True
    """The handler reports the actual charge (``paywire.server.bill``); the offer's amount is the maximum."""

    def __init__(self) -> None:
        self._exact = ExactEvmServer()

    def offer(self, spec: OfferSpec) -> tuple[PaymentRequirements, int]:
        extra: dict[str, Any] = {**spec.extra, "assetTransferMethod": "permit2"}
        from dataclasses import replace

        return self._exact.offer(replace(spec, extra=extra))

    def decimals(self, requirements: PaymentRequirements, assets: AssetRegistry) -> int:
        return assets.decimals_of(requirements.network, requirements.asset)

    def claim(self, requirements: PaymentRequirements, payload: Mapping[str, Any]) -> tuple[str, str | None] | None:
        found = claim_of(requirements.network, dict(payload))
        return (found[0], found[1]) if found is not None else None

    def payer(self, payload: Mapping[str, Any]) -> str | None:
        found = claim_of("", dict(payload))
        return found[1] if found is not None else None
