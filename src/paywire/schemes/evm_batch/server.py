"""Server side of ``batch-settlement`` on EVM: the offer (``receiverAuthorizer`` copied from the facilitator's
``/supported`` kind unless the seller names its own, ``withdrawDelay``, the token's EIP-712 domain), and what a
payment claims. The per-request channel accounting lives in :mod:`paywire.server.channels`."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from typing import Any

from paywire.evm import batch as b
from paywire.evm.assets import AssetRegistry
from paywire.schemes.evm_batch import payload as pl
from paywire.schemes.evm_exact.server import ExactEvmServer
from paywire.schemes.registry import OfferSpec
from paywire.x402.models import PaymentRequirements

DEFAULT_WITHDRAW_DELAY = b.MIN_WITHDRAW_DELAY


class BatchEvmServer:
    """``batch-settlement`` × ``eip155:*`` for the seller role."""

    scheme = pl.SCHEME
    network_pattern = "eip155:*"
    kind_extra_keys = ("receiverAuthorizer",)
    variable = True
    """The offer's amount is the per-request maximum; the handler may charge less (``paywire.server.bill``)."""
    channels = True
    """Payments are vouchers on a channel: the seller's channel accounting handles them, not the claim table."""

    def __init__(self) -> None:
        self._exact = ExactEvmServer()

    def offer(self, spec: OfferSpec) -> tuple[PaymentRequirements, int]:
        extra: dict[str, Any] = {"withdrawDelay": DEFAULT_WITHDRAW_DELAY, **spec.extra}
        return self._exact.offer(replace(spec, extra=extra))

    def decimals(self, requirements: PaymentRequirements, assets: AssetRegistry) -> int:
        return assets.decimals_of(requirements.network, requirements.asset)

    def claim(self, requirements: PaymentRequirements, payload: Mapping[str, Any]) -> tuple[str, str | None] | None:
        try:
            p = pl.parse_payment_once(payload if isinstance(payload, dict) else dict(payload))
        except pl.PayloadError:
            return None
        key = f"batch:{requirements.network}:{b.hex32(p.channel_id)}:{p.type}:{p.voucher.max_claimable}"
        return key, p.config.payer

    def payer(self, payload: Mapping[str, Any]) -> str | None:
        cfg = payload.get("channelConfig")
        payer = cfg.get("payer") if isinstance(cfg, Mapping) else None
        return payer if isinstance(payer, str) else None


__all__ = ["DEFAULT_WITHDRAW_DELAY", "BatchEvmServer"]
