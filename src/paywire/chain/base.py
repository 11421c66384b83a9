"""The one async chain interface the rest of paywire talks to."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol


@dataclass(frozen=True, slots=True)
class Log:
    address: str  # checksummed
    topics: tuple[bytes, ...]
    data: bytes
    block_number: int
    transaction_hash: str  # 0x-hex
    log_index: int


@dataclass(frozen=True, slots=True)
class Receipt:
    transaction_hash: str  # 0x-hex
    status: int  # 1 success, 0 reverted
    block_number: int
    gas_used: int
    effective_gas_price: int
    logs: tuple[Log, ...] = field(default_factory=tuple)


@dataclass(frozen=True, slots=True)
class FeeData:
    base_fee: int  # of the latest block, wei
    max_priority_fee: int  # suggested tip, wei
    gas_price: int  # legacy suggestion, wei


class Chain(Protocol):
    """Async access to one EVM chain. Implementations: ``RpcChain`` over any transport."""

    async def chain_id(self) -> int: ...
    async def block_number(self) -> int: ...
    async def block_timestamp(self, block: str | int = "latest") -> int: ...
    async def call(self, to: str, data: bytes, *, sender: str | None = None, block: str | int = "latest") -> bytes:
        """eth_call; raises ``ChainRevert`` with a normalized reason on revert."""
        ...
    async def estimate_gas(self, tx: dict[str, Any]) -> int: ...
    async def send_raw_transaction(self, raw: bytes) -> str: ...
    async def get_transaction_receipt(self, tx_hash: str) -> Receipt | None: ...
    async def wait_for_receipt(self, tx_hash: str, timeout: float = 30.0, poll: float = 0.05) -> Receipt: ...
    async def get_logs(
        self, *, address: str | None = None, topics: list[Any] | None = None,
        from_block: int | str = 0, to_block: int | str = "latest",
    ) -> list[Log]: ...
    async def get_balance(self, address: str, block: str | int = "latest") -> int: ...
    async def get_code(self, address: str, block: str | int = "latest") -> bytes: ...
    async def get_transaction_count(self, address: str, block: str | int = "pending") -> int: ...
    async def fee_data(self) -> FeeData: ...
    async def request(self, method: str, params: list[Any]) -> Any:
        """Raw JSON-RPC escape hatch."""
        ...
    async def aclose(self) -> None: ...
