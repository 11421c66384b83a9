"""The payer's side of ``eip2612GasSponsoring`` for Permit2 offers (``exact`` with ``assetTransferMethod:
permit2``, ``upto``): when the seller declares the extension and the payer has not approved Permit2 on the
token, sign the token's EIP-2612 ``permit(owner, Permit2, amount, deadline)``; the facilitator submits it with
the payment, so the payer needs neither an approval transaction nor gas.

Chain reads (the allowance, the token's permit nonce) go through the wallet's ``chain_for`` (a client scheme
gets it with ``use_chains``); without one, nothing is signed and a missing approval is answered with a 412.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from paywire.evm import permit2 as p2
from paywire.evm.eip712 import domain_separator
from paywire.evm.signer import EvmSigner
from paywire.x402.models import PaymentRequirements
from paywire.x402.networks import evm_chain_id

ChainFor = Callable[[str], Awaitable[Any]]
"""``network → chain`` (an object with ``async call(to, data) -> bytes``), or None when unknown."""


def _uint(data: bytes) -> int:
    return int.from_bytes(bytes(data)[:32], "big")


async def sponsored_approval(
    signer: EvmSigner, chain_for: ChainFor | None, requirements: PaymentRequirements,
    declared: Mapping[str, Any], *, clock: Callable[[], float] = time.time,
) -> Mapping[str, Any] | None:
    """``{eip2612GasSponsoring: {info}}`` to send with a Permit2 payment, or None when the seller does not take
    it, the token's EIP-712 domain is not in the offer, the wallet cannot read the chain, or the allowance to
    Permit2 already covers the amount."""
    name, version = requirements.extra.get("name"), requirements.extra.get("version")
    if (p2.EIP2612_GAS_SPONSORING not in declared or chain_for is None
            or not isinstance(name, str) or not isinstance(version, str) or not name):
        return None
    chain = await chain_for(requirements.network)
    if chain is None:
        return None
    owner, token_address, amount = signer.address, requirements.asset, requirements.amount
    if _uint(await chain.call(token_address, p2.allowance(owner))) >= amount:
        return None
    nonce = _uint(await chain.call(token_address, p2.NONCES + bytes(12) + bytes.fromhex(owner[2:])))
    deadline = int(clock()) + (requirements.max_timeout_seconds or 3600)
    domain = domain_separator(name, version, evm_chain_id(requirements.network), token_address)
    signature = await signer.sign_digest(p2.eip2612_digest(domain, owner, amount, nonce, deadline))
    return p2.eip2612_extension(owner, token_address, amount, nonce, deadline, signature)


__all__ = ["ChainFor", "sponsored_approval"]
