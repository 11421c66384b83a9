"""Permit2, the x402 Permit2 proxies, the x402 batch-settlement escrow with its two deposit collectors, and
Multicall3 on a development chain, at the canonical addresses the x402 SDKs use.

The contracts are paywire's own (``contracts/src/Permit2.sol``, ``X402ExactPermit2Proxy.sol``,
``X402UptoPermit2Proxy.sol``, ``X402BatchSettlement.sol``, ``X402ERC3009DepositCollector.sol``,
``X402Permit2DepositCollector.sol``, ``Multicall3.sol``); they have no constructor state and no immutables, so
their runtime code works wherever it is placed:

* the embedded chain: ``EmbeddedChain(code=permit2_code())`` puts it in the genesis state;
* anvil: :func:`install_permit2` sends ``anvil_setCode`` for each address.
"""

from __future__ import annotations

from paywire.chain.base import Chain
from paywire.evm.artifacts import load_artifact
from paywire.evm.batch import (
    BATCH_SETTLEMENT_ADDRESS,
    ERC3009_COLLECTOR_ADDRESS,
    MULTICALL3_ADDRESS,
    PERMIT2_COLLECTOR_ADDRESS,
)
from paywire.evm.permit2 import EXACT_PROXY_ADDRESS, PERMIT2_ADDRESS, UPTO_PROXY_ADDRESS

CONTRACTS: dict[str, str] = {
    PERMIT2_ADDRESS: "Permit2",
    EXACT_PROXY_ADDRESS: "X402ExactPermit2Proxy",
    UPTO_PROXY_ADDRESS: "X402UptoPermit2Proxy",
    BATCH_SETTLEMENT_ADDRESS: "X402BatchSettlement",
    ERC3009_COLLECTOR_ADDRESS: "X402ERC3009DepositCollector",
    PERMIT2_COLLECTOR_ADDRESS: "X402Permit2DepositCollector",
    MULTICALL3_ADDRESS: "Multicall3",
}


def permit2_code() -> dict[str, bytes]:
    """{canonical address: runtime code} of every contract in :data:`CONTRACTS`."""
    return {address: load_artifact(name).deployed_bytecode for address, name in CONTRACTS.items()}


async def install_permit2(chain: Chain) -> None:
    """Place the contracts of :data:`CONTRACTS` on a chain that takes ``anvil_setCode`` (anvil, hardhat) unless present."""
    for address, runtime in permit2_code().items():
        if await chain.get_code(address) != runtime:
            await chain.request("anvil_setCode", [address, "0x" + runtime.hex()])


async def approve_permit2(chain: Chain, private_key: bytes | str, token_address: str, amount: int = 2**256 - 1,
                          *, timeout: float = 60.0) -> str:
    """The payer's one-time ``approve(Permit2, amount)`` on ``token_address`` (default: unlimited); waits for it
    and returns its transaction hash. Raises ``ChainError`` when it reverts."""
    from paywire.chain.tx import TxSender
    from paywire.errors import ChainError
    from paywire.evm.permit2 import approve

    tx = await TxSender(chain, private_key).send(token_address, approve(PERMIT2_ADDRESS, amount))
    receipt = await chain.wait_for_receipt(tx, timeout=timeout)
    if receipt.status != 1:
        raise ChainError(f"approve(Permit2) on {token_address} reverted (transaction {tx})")
    return tx


__all__ = ["CONTRACTS", "approve_permit2", "install_permit2", "permit2_code"]
