"""The payer's side of ``eip2612GasSponsoring`` for Permit2 offers (``exact`` with ``assetTransferMethod:
permit2``, ``upto``): when the seller declares the extension and the payer has not approved Permit2 on the
token, sign the token's EIP-2612 ``permit(owner, Permit2, amount, deadline)``; the facilitator submits it with
the payment, so the payer needs neither an approval transaction nor gas.

Chain reads (the allowance, the token's permit nonce) go through the wallet's ``chain_for`` (a client scheme
gets it with ``use_chains``); without one, nothing is signed and a missing approval is answered with a 412.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from paywire.evm import permit2 as p2
from paywire.evm.approval_tx import (
    ERC20_APPROVAL_GAS_SPONSORING,
    MAX_UINT256,
    approval_extension,
    approval_sighash,
    approve_calldata,
    encode_approval,
)
from paywire.evm.eip712 import domain_separator
from paywire.evm.signer import EvmSigner
from paywire.x402.models import PaymentRequirements
from paywire.x402.networks import evm_chain_id

ChainFor = Callable[[str], Awaitable[Any]]
"""``network → chain`` (an object with ``async call(to, data) -> bytes``), or None when unknown."""


def _uint(data: bytes) -> int:
    return int.from_bytes(bytes(data)[:32], "big")


class ChainReadingClient:
    """What the EVM payer clients share: a signer, a clock, and optional chain reads (the allowance and the
    permit nonce behind the ``eip2612GasSponsoring`` / ``erc20ApprovalGasSponsoring`` extensions)."""

    def __init__(self, signer: EvmSigner, *, clock: Callable[[], float] = time.time) -> None:
        self.signer = signer
        self._clock = clock
        self._chain_for: ChainFor | None = None

    def use_chains(self, chain_for: ChainFor) -> None:
        """Let the client read the chain (the wallet calls this with its chains)."""
        self._chain_for = chain_for

    async def _approval(self, requirements: PaymentRequirements, declared: Mapping[str, Any],
                        ) -> Mapping[str, Any] | None:
        """The approval extension for a Permit2 payment, when the seller takes one and the payer has none."""
        return await sponsored_approval(self.signer, self._chain_for, requirements, declared, clock=self._clock)


async def sponsored_approval(
    signer: EvmSigner, chain_for: ChainFor | None, requirements: PaymentRequirements,
    declared: Mapping[str, Any], *, clock: Callable[[], float] = time.time,
) -> Mapping[str, Any] | None:
    """``{eip2612GasSponsoring: {info}}`` to send with a Permit2 payment, or None when the seller does not take
    it, the token's EIP-712 domain is not in the offer, the wallet cannot read the chain, or the allowance to
    Permit2 already covers the amount."""
    name, version = requirements.extra.get("name"), requirements.extra.get("version")
    eip2612 = (p2.EIP2612_GAS_SPONSORING in declared and isinstance(name, str) and isinstance(version, str)
               and bool(name))
    if not (eip2612 or ERC20_APPROVAL_GAS_SPONSORING in declared) or chain_for is None:
        return None
    chain = await chain_for(requirements.network)
    if chain is None:
        return None
    owner, token_address, amount = signer.address, requirements.asset, requirements.amount
    if _uint(await chain.call(token_address, p2.allowance(owner))) >= amount:
        return None
    if not eip2612:  # erc20ApprovalGasSponsoring: a signed approve(Permit2, MAX) the facilitator relays
        return await signed_approval(signer, chain, requirements)
    assert isinstance(name, str) and isinstance(version, str)
    nonce = _uint(await chain.call(token_address, p2.NONCES + bytes(12) + bytes.fromhex(owner[2:])))
    deadline = int(clock()) + (requirements.max_timeout_seconds or 3600)
    domain = domain_separator(name, version, evm_chain_id(requirements.network), token_address)
    signature = await signer.sign_digest(p2.eip2612_digest(domain, owner, amount, nonce, deadline))
    return p2.eip2612_extension(owner, token_address, amount, nonce, deadline, signature)


async def signed_approval(signer: EvmSigner, chain: Any, requirements: PaymentRequirements) -> Mapping[str, Any]:
    """``{erc20ApprovalGasSponsoring: {info}}``: the payer's EIP-1559 ``approve(Permit2, MAX)`` on the token, at
    its next nonce and today's fees (for a token without EIP-2612; the payer needs no gas of its own)."""
    nonce, fees, chain_id = await asyncio.gather(chain.get_transaction_count(signer.address, "pending"),
                                                 chain.fee_data(), chain.chain_id())
    tip = fees.max_priority_fee
    max_fee = 2 * fees.base_fee + tip
    data = approve_calldata(p2.PERMIT2_ADDRESS, MAX_UINT256)
    gas = 60_000  # an ERC-20 approve from a fresh slot costs ~46,000
    digest = approval_sighash(chain_id, nonce, tip, max_fee, gas, requirements.asset, data)
    raw = encode_approval(chain_id, nonce, tip, max_fee, gas, requirements.asset, data,
                          await signer.sign_digest(digest))
    return approval_extension(signer.address, requirements.asset, MAX_UINT256, raw)


__all__ = ["ChainFor", "signed_approval", "sponsored_approval"]
