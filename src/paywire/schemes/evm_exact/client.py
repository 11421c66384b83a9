"""Client side of ``exact`` on EVM: sign an EIP-3009 ``TransferWithAuthorization`` for an offer, or a Permit2
``PermitWitnessTransferFrom`` when the offer says ``assetTransferMethod: permit2``."""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from paywire.evm import permit2
from paywire.evm.crypto import address_bytes
from paywire.evm.eip712 import domain_separator, transfer_authorization_digest
from paywire.schemes.evm_exact.identity import ledger_fields
from paywire.schemes.evm_exact.payload import Eip3009Authorization, ExactEvmPayload
from paywire.schemes.permit2_client import ChainReadingClient
from paywire.x402.models import PaymentRequirements
from paywire.x402.networks import evm_chain_id

VALID_AFTER_BACKDATE = 600  # seconds of clock-skew tolerance (digest App. A)
DEFAULT_VALIDITY = 3600  # when the offer says maxTimeoutSeconds = 0


class ExactEvmClient(ChainReadingClient):
    """``exact`` × ``eip155:*`` for the payer role (EIP-3009 and Permit2 offers)."""

    scheme = "exact"
    network_pattern = "eip155:*"

    async def payload_extensions(self, requirements: PaymentRequirements, declared: Mapping[str, Any],
                                 ) -> Mapping[str, Any] | None:
        """Permit2 offers: an EIP-2612 permit approving Permit2 when the seller takes one and no allowance
        exists; nothing for EIP-3009 offers."""
        if requirements.extra.get("assetTransferMethod") != "permit2":
            return None
        return await self._approval(requirements, declared)

    def can_pay(self, requirements: PaymentRequirements) -> bool:
        extra = requirements.extra
        if requirements.scheme != "exact" or not requirements.network.startswith("eip155:"):
            return False
        method = extra.get("assetTransferMethod", "eip3009")
        if method == "permit2":  # any ERC-20: the payer approved Permit2 once (a 412 says when not)
            return True
        return method == "eip3009" and isinstance(extra.get("name"), str) and isinstance(extra.get("version"), str)

    async def create_payload(self, requirements: PaymentRequirements) -> Mapping[str, Any]:
        """Signed ``{signature, authorization}`` (checklist 31, 32), or ``{signature, permit2Authorization}``
        for a Permit2 offer (spender: the exact Permit2 proxy)."""
        now = int(self._clock())
        if requirements.extra.get("assetTransferMethod") == "permit2":
            return await permit2.sign(self.signer, requirements, spender=permit2.EXACT_PROXY_ADDRESS,
                                      facilitator=None, now=now, valid_after=now - VALID_AFTER_BACKDATE,
                                      nonce=int.from_bytes(os.urandom(32), "big"))
        lifetime = requirements.max_timeout_seconds or DEFAULT_VALIDITY
        auth = Eip3009Authorization(
            from_=self.signer.address,
            to=requirements.pay_to,
            value=requirements.amount,
            valid_after=now - VALID_AFTER_BACKDATE,
            valid_before=now + lifetime,
            nonce=os.urandom(32),
        )
        digest = transfer_authorization_digest(
            domain_separator(
                str(requirements.extra["name"]), str(requirements.extra["version"]),
                evm_chain_id(requirements.network), requirements.asset,
            ),
            address_bytes(auth.from_), address_bytes(auth.to), auth.value,
            auth.valid_after, auth.valid_before, auth.nonce,
        )
        signature = await self.signer.sign_digest(digest)
        return ExactEvmPayload(signature=signature, authorization=auth).to_wire()

    def ledger_fields(self, payload: Mapping[str, Any]) -> tuple[str | None, int | None]:
        """(nonce, validBefore) of an authorization this client signed (Permit2: nonce, deadline)."""
        if permit2.is_permit2_payload(payload):
            return permit2.ledger_fields(dict(payload))
        return ledger_fields(payload)
