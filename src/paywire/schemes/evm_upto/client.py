"""Client side of ``upto`` on EVM: sign a Permit2 ``PermitWitnessTransferFrom`` for the offer's maximum, bound
to the recipient and to the facilitator the offer names (``extra.facilitatorAddress``)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from paywire.evm import permit2
from paywire.schemes.permit2_client import ChainReadingClient
from paywire.x402.models import PaymentRequirements

VALID_AFTER_BACKDATE = 600  # seconds of clock-skew tolerance, as for exact


class UptoEvmClient(ChainReadingClient):
    """``upto`` × ``eip155:*`` for the payer role. The buyer's policy budgets the maximum (``amount``)."""

    scheme = "upto"
    network_pattern = "eip155:*"

    async def payload_extensions(self, requirements: PaymentRequirements, declared: Mapping[str, Any],
                                 ) -> Mapping[str, Any] | None:
        """An EIP-2612 permit approving Permit2, when the seller takes one and the payer has no allowance."""
        return await self._approval(requirements, declared)

    def can_pay(self, requirements: PaymentRequirements) -> bool:
        fac = requirements.extra.get("facilitatorAddress")
        return (requirements.scheme == "upto" and requirements.network.startswith("eip155:")
                and isinstance(fac, str) and len(fac) == 42)

    async def create_payload(self, requirements: PaymentRequirements) -> Mapping[str, Any]:
        """``{signature, permit2Authorization}`` for at most ``requirements.amount``."""
        now = int(self._clock())
        return await permit2.sign(
            self.signer, requirements, spender=permit2.UPTO_PROXY_ADDRESS,
            facilitator=str(requirements.extra["facilitatorAddress"]), now=now,
            valid_after=now - VALID_AFTER_BACKDATE, nonce=int.from_bytes(os.urandom(32), "big"),
        )

    def ledger_fields(self, payload: Mapping[str, Any]) -> tuple[str | None, int | None]:
        return permit2.ledger_fields(dict(payload))
