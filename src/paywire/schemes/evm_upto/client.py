"""Client side of ``upto`` on EVM: sign a Permit2 ``PermitWitnessTransferFrom`` for the offer's maximum, bound
to the recipient and to the facilitator the offer names (``extra.facilitatorAddress``)."""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Mapping
from typing import Any

from paywire.evm import permit2
from paywire.evm.signer import EvmSigner
from paywire.schemes.permit2_client import ChainFor, sponsored_approval
from paywire.x402.models import PaymentRequirements

VALID_AFTER_BACKDATE = 600  # seconds of clock-skew tolerance, as for exact


class UptoEvmClient:
    """``upto`` × ``eip155:*`` for the payer role. The buyer's policy budgets the maximum (``amount``)."""

    scheme = "upto"
    network_pattern = "eip155:*"

    def __init__(self, signer: EvmSigner, *, clock: Callable[[], float] = time.time) -> None:
        self.signer = signer
        self._clock = clock
        self._chain_for: ChainFor | None = None

    def use_chains(self, chain_for: ChainFor) -> None:
        """Let the client read the chain (for ``eip2612GasSponsoring``: the allowance and the permit nonce)."""
        self._chain_for = chain_for

    async def payload_extensions(self, requirements: PaymentRequirements, declared: Mapping[str, Any],
                                 ) -> Mapping[str, Any] | None:
        """An EIP-2612 permit approving Permit2, when the seller takes one and the payer has no allowance."""
        return await sponsored_approval(self.signer, self._chain_for, requirements, declared, clock=self._clock)

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
