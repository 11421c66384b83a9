"""Build, sign (eth_account) and send EIP-1559 transactions from one local key."""

from __future__ import annotations

import asyncio
import math
from typing import Any

import rlp
from eth_account import Account
from eth_utils.address import to_canonical_address, to_checksum_address
from eth_utils.crypto import keccak

from paywire.chain.base import Chain, Receipt
from paywire.chain.rpc import RpcError
from paywire.errors import ChainError, ChainRevert

__all__ = ["TxSender", "contract_address"]

_NONCE_HINTS = ("nonce", "replacement transaction underpriced")


def _is_nonce_error(exc: ChainError) -> bool:
    text = (exc.message if isinstance(exc, RpcError) else str(exc)).lower()
    return any(hint in text for hint in _NONCE_HINTS)


def contract_address(deployer: str, nonce: int) -> str:
    """The CREATE address for ``deployer`` at ``nonce``."""
    return to_checksum_address(keccak(rlp.encode([to_canonical_address(deployer), nonce]))[12:])


class TxSender:
    """Sends EIP-1559 transactions for one private key over any ``Chain``.

    * gas: ``estimate_gas`` × ``gas_margin`` (default 1.2) unless given;
    * fees: ``maxFeePerGas = 2 × latest base fee + tip`` (tip from ``fee_data``), capped by ``max_fee_cap``;
    * nonce: a local counter, initialised from ``get_transaction_count(address, "pending")``, serialised by
      an ``asyncio.Lock`` (use one ``TxSender`` per event loop). After any failed send the counter is
      re-read from the chain; a nonce error ("nonce too low/high", "replacement underpriced") is retried
      with the re-read nonce.
    """

    def __init__(
        self,
        chain: Chain,
        private_key: bytes | str,
        *,
        max_fee_cap: int | None = None,
        gas_margin: float = 1.2,
        nonce_retries: int = 3,
    ) -> None:
        self.chain = chain
        self._account = Account.from_key(private_key)
        self.max_fee_cap = max_fee_cap
        self.gas_margin = gas_margin
        self.nonce_retries = nonce_retries
        self._nonce: int | None = None
        self._lock = asyncio.Lock()

    @property
    def address(self) -> str:
        return str(self._account.address)

    async def _fees(self) -> tuple[int, int]:
        fees = await self.chain.fee_data()
        tip = fees.max_priority_fee
        max_fee = 2 * fees.base_fee + tip
        if self.max_fee_cap is not None:
            max_fee = min(max_fee, self.max_fee_cap)
            tip = min(tip, max_fee)
        return max_fee, tip

    async def _send(self, to: str | None, data: bytes, value: int, gas: int | None) -> tuple[str, int]:
        if gas is None:
            estimate: dict[str, Any] = {"from": self.address, "data": bytes(data), "value": value}
            if to is not None:
                estimate["to"] = to
            gas = math.ceil(await self.chain.estimate_gas(estimate) * self.gas_margin)
        chain_id, (max_fee, tip) = await asyncio.gather(self.chain.chain_id(), self._fees())
        tx: dict[str, Any] = {
            "type": 2,
            "chainId": chain_id,
            "gas": gas,
            "maxFeePerGas": max_fee,
            "maxPriorityFeePerGas": tip,
            "value": value,
            "data": bytes(data),
        }
        if to is not None:
            tx["to"] = to_checksum_address(to)
        async with self._lock:
            attempt = 0
            while True:
                if self._nonce is None:
                    self._nonce = await self.chain.get_transaction_count(self.address, "pending")
                nonce = self._nonce
                signed = self._account.sign_transaction({**tx, "nonce": nonce})
                try:
                    tx_hash = await self.chain.send_raw_transaction(bytes(signed.raw_transaction))
                except ChainError as exc:
                    self._nonce = None  # outcome or counter uncertain: re-read from the chain
                    if not isinstance(exc, ChainRevert) and _is_nonce_error(exc) and attempt < self.nonce_retries:
                        attempt += 1
                        continue
                    raise
                self._nonce = nonce + 1
                return tx_hash, nonce

    async def send(self, to: str | None, data: bytes = b"", value: int = 0, gas: int | None = None) -> str:
        """Sign and broadcast; returns the transaction hash (not waiting for it to be mined).

        ``to=None`` creates a contract. Raises ``ChainRevert`` if gas estimation reverts.
        """
        tx_hash, _ = await self._send(to, data, value, gas)
        return tx_hash

    async def send_and_wait(
        self, to: str | None, data: bytes = b"", value: int = 0, gas: int | None = None, timeout: float = 60.0
    ) -> Receipt:
        """``send`` then ``wait_for_receipt``; the receipt may have status 0 (reverted when mined)."""
        return await self.chain.wait_for_receipt(await self.send(to, data, value, gas), timeout=timeout)

    async def deploy(self, bytecode: bytes, ctor_args_encoded: bytes = b"", *, timeout: float = 60.0) -> str:
        """Deploy ``bytecode + ctor_args_encoded``, wait for it, return the checksummed contract address."""
        tx_hash, nonce = await self._send(None, bytes(bytecode) + bytes(ctor_args_encoded), 0, None)
        receipt = await self.chain.wait_for_receipt(tx_hash, timeout=timeout)
        if receipt.status != 1:
            raise ChainRevert("contract creation reverted")
        return contract_address(self.address, nonce)
