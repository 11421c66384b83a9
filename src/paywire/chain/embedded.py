"""An in-process EVM chain (py-evm via eth-tester's ``PyEVMBackend``) that speaks Ethereum JSON-RPC.

``EmbeddedChain`` is a ``Transport``: wrap it in ``RpcChain`` (or use ``embedded_chain()``), or serve it over
HTTP with ``JsonRpcServer`` so web3.py / viem / ethers can use it like any node.

Behaviour, chosen to look like a real post-merge node:

* **Chain id** — the one you ask for is what ``eth_chainId`` returns, what ``CHAINID`` sees (calls and mined
  transactions), and what raw transactions are checked against (EIP-155 legacy and typed transactions with
  another chain id are rejected; unprotected legacy transactions are accepted, like anvil).
* **Accounts** — the anvil/hardhat dev mnemonic (10 accounts × 10 000 ETH by default, ``0xf39F…2266`` first)
  plus whatever ``funded`` maps (address *or* private key → wei) at genesis; ``fund()`` tops up later.
* **Wall-clock blocks, no drift** — no per-call auto-mining. A transaction is executed into the pending block
  whose timestamp is fixed when the block's first transaction arrives: ``max(now, parent + 1)``. If that is
  not in the future the block is mined right away; otherwise (a block was already mined this second) the
  miner thread mines it at the start of the next second, together with every transaction that arrived
  meanwhile. So block timestamps are never ahead of wall clock, and a chain that idled for an hour produces
  its next block at *now*, not at ``parent + 1``.
* **Calls at now** — ``eth_call``/``eth_estimateGas`` on ``latest``/``pending`` run on that block's state with
  ``block.timestamp = max(now, block timestamp)``, like a node building its next block. Without fee fields
  they run with gas price 0 and ``BASEFEE = 0`` (geth semantics), so any ``from`` works.
* **Reverts** — a reverting ``eth_call``/``eth_estimateGas`` raises ``ChainRevert`` (served as JSON-RPC error
  code 3 with the revert data); a reverting *transaction* is mined with receipt status 0.
* **Threading** — py-evm is not thread-safe, so every chain operation runs on one dedicated thread. The async
  API awaits that thread and may be used from any number of event loops and threads at once.
"""

from __future__ import annotations

import asyncio
import bisect
import concurrent.futures
import logging
import os
import re
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, NoReturn, TypeVar

import rlp
from eth_account import Account
from eth_utils.address import to_canonical_address, to_checksum_address
from eth_utils.crypto import keccak
from eth_utils.exceptions import ValidationError as EthValidationError

from paywire.chain import require_dev_chain
from paywire.chain.devkeys import DEFAULT_DERIVATION_PATH, DEFAULT_MNEMONIC, address_of, dev_keys
from paywire.chain.rpc import RpcChain, RpcError, decode_revert_reason, from_data, to_data, to_quantity
from paywire.errors import ChainError, ChainRevert

__all__ = ["EmbeddedChain", "embedded_chain"]

log = logging.getLogger(__name__)

T = TypeVar("T")

ZERO_ADDRESS = b"\0" * 20
ETHER = 10**18
_NAMED_LATEST = ("latest", "safe", "finalized")


def _q(value: int) -> str:
    return to_quantity(int(value))


def _d(value: bytes) -> str:
    return to_data(bytes(value))


def _addr_out(value: bytes) -> str | None:
    return to_checksum_address(value) if value else None


def _bloom(value: int) -> str:
    return _d(int(value).to_bytes(256, "big"))


def _bad_params(detail: str) -> RpcError:
    return RpcError(-32602, f"invalid params: {detail}")


def _p_qty(value: Any, what: str = "quantity") -> int:
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    if isinstance(value, str) and value[:2] in ("0x", "0X"):
        try:
            return int(value, 16) if len(value) > 2 else 0
        except ValueError:
            pass
    raise _bad_params(f"{what} must be a 0x-hex quantity, got {value!r}")


def _p_data(value: Any, what: str = "data") -> bytes:
    try:
        return from_data(value)
    except ChainError:
        raise _bad_params(f"{what} must be 0x-hex bytes") from None


def _p_addr(value: Any, what: str = "address") -> bytes:
    raw = _p_data(value, what)
    if len(raw) != 20:
        raise _bad_params(f"{what} must be 20 bytes, got {len(raw)}")
    return raw


def _p_hash(value: Any, what: str = "hash") -> bytes:
    raw = _p_data(value, what)
    if len(raw) != 32:
        raise _bad_params(f"{what} must be 32 bytes, got {len(raw)}")
    return raw


def _arg(params: Sequence[Any], index: int, default: Any = None) -> Any:
    return params[index] if len(params) > index and params[index] is not None else default


_NONCE_RX = re.compile(r"Expected (\d+), but got (\d+)")


def _validation_message(exc: Exception) -> str:
    """py-evm validation errors, phrased like geth so client libraries recognise them."""
    msg = str(exc)
    m = _NONCE_RX.search(msg)
    if m and "nonce" in msg.lower():
        expected, got = int(m.group(1)), int(m.group(2))
        kind = "too low" if got < expected else "too high"
        return f"nonce {kind}: next nonce {expected}, tx nonce {got}"
    if "afford" in msg or "enough balance" in msg:
        return f"insufficient funds for gas * price + value ({msg})"
    if "base fee" in msg:
        return f"max fee per gas less than block base fee ({msg})"
    if "exceeds gas limit" in msg:
        return f"exceeds block gas limit ({msg})"
    if "intrinsic" in msg.lower() or "Transaction.gas" in msg:
        return f"intrinsic gas too low ({msg})"
    return msg


def _vm_error_message(error: Exception) -> str:
    name = type(error).__name__
    return {
        "OutOfGas": "out of gas",
        "InsufficientStack": "stack underflow",
        "StackDepthLimit": "max call depth exceeded",
        "InvalidInstruction": "invalid opcode",
        "InvalidJumpDestination": "invalid jump destination",
        "WriteProtection": "write protection",
        "ContractCreationCollision": "contract address collision",
        "OutOfBoundsRead": "return data out of bounds",
        "ReservedBytesInCode": "invalid code: must not begin with 0xef",
    }.get(name, f"{name}: {error}" if str(error) else name)


def _contract_address(sender: bytes, nonce: int) -> bytes:
    return keccak(rlp.encode([sender, nonce]))[12:]


def _funded_address(key: str | bytes) -> bytes:
    """``funded`` keys may be addresses (20 bytes / 0x-hex) or private keys (32 bytes / 0x-hex)."""
    raw = key if isinstance(key, bytes) else bytes.fromhex(key.removeprefix("0x").removeprefix("0X"))
    if len(raw) == 20:
        return raw
    if len(raw) == 32:
        return to_canonical_address(address_of(raw))
    raise ValueError(f"funded: {key!r} is neither an address nor a private key")


@dataclass(slots=True)
class _StoredLog:
    address: bytes
    topics: tuple[bytes, ...]
    tx_index: int
    json: dict[str, Any]


@dataclass(slots=True)
class _LogQuery:
    from_block: int
    to_block: int
    addresses: frozenset[bytes] | None
    topics: list[frozenset[bytes] | None]

    def matches(self, entry: _StoredLog) -> bool:
        if self.addresses is not None and entry.address not in self.addresses:
            return False
        for i, wanted in enumerate(self.topics):
            if wanted is None:
                continue
            if i >= len(entry.topics) or entry.topics[i] not in wanted:
                return False
        return True


@dataclass(slots=True)
class _Filter:
    kind: str  # "logs" | "blocks" | "pending"
    cursor: int  # last block number already reported
    criteria: dict[str, Any] = field(default_factory=dict)


class EmbeddedChain:
    """In-process py-evm chain; a JSON-RPC ``Transport`` (see the module docs for its behaviour).

    ``EmbeddedChain(chain_id=31337, funded={"0xabc…": 10**18, "0x<private key>": 5 * 10**18})``.
    ``code={address: runtime bytecode}`` places contracts in the genesis state (``paywire.chain.permit2``).
    The constructor blocks briefly (genesis, key derivation); from async code prefer ``embedded_chain()``.
    Close it with ``close()``/``aclose()`` (or ``RpcChain.aclose()`` on a chain wrapping it).
    """

    def __init__(
        self,
        chain_id: int = 31337,
        funded: Mapping[str | bytes, int] | None = None,
        *,
        accounts: int = 10,
        balance: int = 10_000 * ETHER,
        mnemonic: str = DEFAULT_MNEMONIC,
        derivation_path: str = DEFAULT_DERIVATION_PATH,
        gas_limit: int = 30_000_000,
        priority_fee: int = 10**9,
        code: Mapping[str, bytes] | None = None,
    ) -> None:
        if not 0 < chain_id < 2**64:
            raise ValueError("chain_id must be a positive 64-bit integer")
        require_dev_chain()  # py-evm comes with the ``dev`` extra: fail with the install command, not deep inside
        self._chain_id = chain_id
        self._priority_fee = priority_fee
        self._keys = dev_keys(accounts, mnemonic, derivation_path)
        self._accounts = [address_of(k) for k in self._keys]
        self._dev_keys: dict[bytes, bytes] = {bytes(to_canonical_address(a)): k for a, k in zip(self._accounts, self._keys, strict=True)}
        genesis_funds: dict[bytes, int] = {to_canonical_address(a): balance for a in self._accounts}
        for key, wei in (funded or {}).items():
            genesis_funds[_funded_address(key)] = int(wei)
        self._genesis_code = {bytes(to_canonical_address(a)): bytes(c) for a, c in (code or {}).items()}

        self._executor = concurrent.futures.ThreadPoolExecutor(
            max_workers=1, thread_name_prefix=f"paywire-evm-{chain_id}"
        )
        self._cond = threading.Condition()
        self._closed = False
        self._due: float | None = None  # wall-clock time at which the pending batch must be mined
        self._thread_id = 0

        # chain-thread state
        self._backend: Any = None
        self._batch = 0  # transactions in the pending block
        self._tx_index: dict[bytes, tuple[int, int]] = {}
        self._logs: dict[int, list[_StoredLog]] = {}
        self._log_blocks: list[int] = []  # sorted block numbers that have logs
        self._filters: dict[int, _Filter] = {}
        self._next_filter = 1

        try:
            self._executor.submit(self._setup, genesis_funds, gas_limit).result()
        except BaseException:
            self._executor.shutdown(wait=False)
            raise
        self._miner = threading.Thread(target=self._miner_loop, name=f"paywire-miner-{chain_id}", daemon=True)
        self._miner.start()

    # ---------------------------------------------------------------------------------------------------
    # public API
    # ---------------------------------------------------------------------------------------------------

    @property
    def chain_id(self) -> int:
        return self._chain_id

    @property
    def accounts(self) -> list[str]:
        """Checksummed dev accounts (funded at genesis, usable with ``eth_sendTransaction``)."""
        return list(self._accounts)

    @property
    def private_keys(self) -> list[bytes]:
        return list(self._keys)

    def __repr__(self) -> str:
        return f"EmbeddedChain(chain_id={self._chain_id})"

    async def request(self, method: str, params: list[Any]) -> Any:
        """Answer one JSON-RPC call with its ``result`` (raises ``ChainRevert``/``RpcError``)."""
        return await asyncio.wrap_future(self._submit(self._handle, method, list(params or [])))

    def request_sync(self, method: str, params: list[Any]) -> Any:
        """Blocking variant of ``request`` for threads without an event loop."""
        if threading.get_ident() == self._thread_id:
            return self._handle(method, list(params or []))
        return self._submit(self._handle, method, list(params or [])).result()

    async def run(self, fn: Callable[[Any], T]) -> T:
        """Escape hatch: run ``fn(backend)`` (eth-tester ``PyEVMBackend``) on the chain thread."""
        return await asyncio.wrap_future(self._submit(fn, self._backend))

    async def fund(self, address: str, wei: int, *, timeout: float = 10.0) -> str:
        """Send ``wei`` from dev account 0 to ``address`` and wait until it is mined; returns the tx hash."""
        tx_hash = str(await self.request("eth_sendTransaction", [
            {"from": self._accounts[0], "to": address, "value": _q(wei)}
        ]))
        deadline = time.monotonic() + timeout
        while await self.request("eth_getTransactionReceipt", [tx_hash]) is None:
            if time.monotonic() > deadline:
                raise ChainError(f"funding transaction {tx_hash} not mined within {timeout}s")
            await asyncio.sleep(0.02)
        return tx_hash

    def close(self) -> None:
        """Stop the miner and the chain thread. Pending (unmined) transactions are dropped."""
        with self._cond:
            if self._closed:
                return
            self._closed = True
            self._cond.notify_all()
        if threading.current_thread() is not self._miner:
            self._miner.join(timeout=5)
        self._executor.shutdown(wait=threading.get_ident() != self._thread_id)

    async def aclose(self) -> None:
        await asyncio.to_thread(self.close)

    async def __aenter__(self) -> EmbeddedChain:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    # ---------------------------------------------------------------------------------------------------
    # threading
    # ---------------------------------------------------------------------------------------------------

    def _submit(self, fn: Callable[..., T], *args: Any) -> concurrent.futures.Future[T]:
        with self._cond:
            if self._closed:
                raise ChainError("the embedded chain is closed")
            try:
                return self._executor.submit(fn, *args)
            except RuntimeError as exc:
                raise ChainError("the embedded chain is closed") from exc

    def _schedule(self, due: float) -> None:
        with self._cond:
            self._due = due
            self._cond.notify_all()

    def _miner_loop(self) -> None:
        while True:
            with self._cond:
                while not self._closed and self._due is None:
                    self._cond.wait()
                if self._closed:
                    return
                assert self._due is not None
                delay = self._due - time.time()
                if delay > 0:
                    self._cond.wait(delay)
                    continue
                self._due = None
                try:
                    future = self._executor.submit(self._mine_if_due)
                except RuntimeError:
                    return
            try:
                future.result()
            except Exception:  # pragma: no cover - logged, the next transaction retries
                log.exception("embedded chain: mining failed")

    # ---------------------------------------------------------------------------------------------------
    # chain thread: setup and mining
    # ---------------------------------------------------------------------------------------------------

    def _setup(self, genesis_funds: dict[bytes, int], gas_limit: int) -> None:
        from eth_tester import PyEVMBackend

        self._thread_id = threading.get_ident()
        state = {
            address: {"balance": wei, "nonce": 0, "code": b"", "storage": {}}
            for address, wei in genesis_funds.items()
        }
        for address, runtime in self._genesis_code.items():  # contracts at fixed addresses (e.g. Permit2)
            state[address] = {"balance": state.get(address, {}).get("balance", 0), "nonce": 1, "code": runtime,
                              "storage": {}}
        params = PyEVMBackend.generate_genesis_params(
            overrides={"timestamp": int(time.time()) - 1, "gas_limit": gas_limit}
        )
        backend = PyEVMBackend(genesis_parameters=params, genesis_state=state)
        chain = backend.chain
        # py-evm reads the chain id from the chain (class) attribute: ChainContext(chain.chain_id) feeds the
        # VM execution context (CHAINID) each time a VM is built, and eth-tester defaults tx chain ids from it.
        type(chain).chain_id = self._chain_id
        chain.chain_id = self._chain_id
        backend.account_keys = ()  # we sign ourselves; never let eth-tester sign with its own keys
        self._backend = backend
        self._new_pending_header()

    @property
    def _chain(self) -> Any:
        return self._backend.chain

    def _head(self) -> Any:
        return self._chain.get_canonical_head()

    def _new_pending_header(self) -> None:
        # Choose the next block's PREVRANDAO now (post-merge it is never zero), so estimates against the
        # pending block see the value its transactions will see.
        chain = self._chain
        chain.header = chain.header.copy(mix_hash=os.urandom(32))

    def _mine_if_due(self) -> None:
        if self._batch == 0:
            return
        due = self._chain.header.timestamp
        if due <= time.time():
            self._mine()
        else:
            self._schedule(due)

    def _mine(self) -> None:
        if self._batch == 0:
            return
        self._chain.mine_block()  # seals the pending header as prepared by _apply
        self._batch = 0
        self._new_pending_header()
        head = self._head()
        block = self._chain.get_canonical_block_by_number(head.block_number)
        self._index_block(block)

    def _index_block(self, block: Any) -> None:
        number = block.header.block_number
        receipts = block.get_receipts(self._chain.chaindb)
        stored: list[_StoredLog] = []
        for tx_index, (tx, receipt) in enumerate(zip(block.transactions, receipts, strict=True)):
            self._tx_index[tx.hash] = (number, tx_index)
            for entry in receipt.logs:
                topics = tuple(int(t).to_bytes(32, "big") for t in entry.topics)
                stored.append(_StoredLog(
                    address=bytes(entry.address),
                    topics=topics,
                    tx_index=tx_index,
                    json={
                        "address": to_checksum_address(entry.address),
                        "topics": [_d(t) for t in topics],
                        "data": _d(entry.data),
                        "blockNumber": _q(number),
                        "blockHash": _d(block.hash),
                        "blockTimestamp": _q(block.header.timestamp),
                        "transactionHash": _d(tx.hash),
                        "transactionIndex": _q(tx_index),
                        "logIndex": _q(len(stored)),
                        "removed": False,
                    },
                ))
        if stored:
            self._logs[number] = stored
            self._log_blocks.append(number)

    def _apply(self, tx: Any) -> str:
        """Execute a signed transaction into the pending block (see module docs for the timing rules)."""
        chain = self._chain
        if tx.hash in self._tx_index or any(p.hash == tx.hash for p in chain.get_block().transactions):
            raise RpcError(-32000, "already known")
        if self._batch == 0:
            # Fix the block's timestamp before its first transaction executes, so that what the
            # transactions see is what the mined block says.
            timestamp = max(int(time.time()), self._head().timestamp + 1)
            chain.header = chain.header.copy(timestamp=timestamp)
        try:
            chain.apply_transaction(tx)
        except EthValidationError as exc:
            if self._batch and "exceeds gas limit" in str(exc):
                # pending block is full: seal it as soon as its timestamp is reached, then retry
                time.sleep(max(0.0, chain.header.timestamp - time.time()))
                self._mine()
                return self._apply(tx)
            raise RpcError(-32000, _validation_message(exc)) from None
        self._batch += 1
        if chain.header.timestamp <= time.time():
            self._mine()
        else:
            self._schedule(chain.header.timestamp)
        return _d(tx.hash)

    # ---------------------------------------------------------------------------------------------------
    # chain thread: JSON-RPC dispatch
    # ---------------------------------------------------------------------------------------------------

    def _handle(self, method: str, params: list[Any]) -> Any:
        handler = _METHODS.get(method)
        if handler is None:
            raise RpcError(-32601, f"the method {method} does not exist/is not available")
        try:
            return handler(self, params)
        except ChainError:
            raise
        except EthValidationError as exc:
            raise RpcError(-32000, _validation_message(exc)) from None
        except (IndexError, KeyError, TypeError, ValueError) as exc:
            raise _bad_params(f"{method}: {exc}") from None
        except Exception as exc:
            log.exception("embedded chain: %s failed", method)
            raise RpcError(-32603, f"internal error in {method}: {type(exc).__name__}: {exc}") from None

    # block resolution -----------------------------------------------------------------------------------

    def _header_at(self, tag: Any) -> Any:
        """Resolve a block parameter (tag, number, or EIP-1898 object) to a header; pending → pending header."""
        chain = self._chain
        if tag is None or tag in _NAMED_LATEST:
            return self._head()
        if tag == "pending":
            return chain.header
        if tag == "earliest":
            return chain.get_canonical_block_header_by_number(0)
        if isinstance(tag, Mapping):
            if "blockHash" in tag:
                header = self._canonical_header_by_hash(_p_hash(tag["blockHash"], "blockHash"))
                if header is None:
                    raise RpcError(-32000, "header not found")
                return header
            return self._header_at(tag.get("blockNumber"))
        number = _p_qty(tag, "block number")
        if number > self._head().block_number:
            raise RpcError(-32000, "header not found")
        return chain.get_canonical_block_header_by_number(number)

    def _block_number_at(self, tag: Any, default: str = "latest") -> int:
        if tag is None:
            tag = default
        if tag in (*_NAMED_LATEST, "pending"):
            return int(self._head().block_number)
        if tag == "earliest":
            return 0
        return _p_qty(tag, "block number")

    def _canonical_header_by_hash(self, block_hash: bytes) -> Any:
        chain = self._chain
        try:
            header = chain.get_block_header_by_hash(block_hash)
        except Exception:
            return None
        if header.block_number > self._head().block_number:
            return None
        if chain.get_canonical_block_header_by_number(header.block_number).hash != header.hash:
            return None
        return header

    def _state(self, tag: Any) -> Any:
        return self._chain.get_vm(self._header_at(tag)).state

    def _call_header(self, tag: Any) -> Any:
        header = self._header_at(tag)
        if tag is None or tag in (*_NAMED_LATEST, "pending"):
            header = header.copy(timestamp=max(header.timestamp, int(time.time())))
        return header

    # serialisation -------------------------------------------------------------------------------------

    def _block_json(self, block: Any, full: bool, pending: bool = False) -> dict[str, Any]:
        h = block.header
        base_fee = getattr(h, "base_fee_per_gas", None)
        if full:
            txs: list[Any] = [
                self._tx_json(tx, None if pending else block, i) for i, tx in enumerate(block.transactions)
            ]
        else:
            txs = [_d(tx.hash) for tx in block.transactions]
        out: dict[str, Any] = {
            "number": _q(h.block_number),
            "hash": None if pending else _d(h.hash),
            "parentHash": _d(h.parent_hash),
            "nonce": _d(h.nonce),
            "sha3Uncles": _d(h.uncles_hash),
            "logsBloom": _bloom(h.bloom),
            "transactionsRoot": _d(h.transaction_root),
            "stateRoot": _d(h.state_root),
            "receiptsRoot": _d(h.receipt_root),
            "miner": to_checksum_address(h.coinbase),
            "difficulty": _q(h.difficulty),
            "totalDifficulty": _q(h.difficulty),
            "extraData": _d(h.extra_data),
            "size": _q(len(rlp.encode(block))),
            "gasLimit": _q(h.gas_limit),
            "gasUsed": _q(h.gas_used),
            "timestamp": _q(h.timestamp),
            "transactions": txs,
            "uncles": [],
            "mixHash": _d(h.mix_hash),
        }
        if base_fee is not None:
            out["baseFeePerGas"] = _q(base_fee)
        if getattr(h, "withdrawals_root", None) is not None:
            out["withdrawalsRoot"] = _d(h.withdrawals_root)
            out["withdrawals"] = [
                {
                    "index": _q(w.index),
                    "validatorIndex": _q(w.validator_index),
                    "address": to_checksum_address(w.address),
                    "amount": _q(w.amount),
                }
                for w in getattr(block, "withdrawals", ()) or ()
            ]
        for attr, key, fmt in (
            ("blob_gas_used", "blobGasUsed", _q),
            ("excess_blob_gas", "excessBlobGas", _q),
            ("parent_beacon_block_root", "parentBeaconBlockRoot", _d),
            ("requests_hash", "requestsHash", _d),
        ):
            value = getattr(h, attr, None)
            if value is not None:
                out[key] = fmt(value)
        return out

    @staticmethod
    def _tx_type(tx: Any) -> int:
        type_id = getattr(tx, "type_id", None)
        return int(type_id) if type_id is not None else 0

    def _effective_gas_price(self, tx: Any, base_fee: int | None) -> int:
        if self._tx_type(tx) >= 2:
            if base_fee is None:
                return int(tx.max_fee_per_gas)
            return int(min(tx.max_fee_per_gas, base_fee + tx.max_priority_fee_per_gas))
        return int(tx.gas_price)

    def _tx_json(self, tx: Any, block: Any | None, index: int | None) -> dict[str, Any]:
        kind = self._tx_type(tx)
        mined = block is not None
        out: dict[str, Any] = {
            "type": _q(kind),
            "hash": _d(tx.hash),
            "nonce": _q(tx.nonce),
            "blockHash": _d(block.hash) if block is not None else None,
            "blockNumber": _q(block.header.block_number) if block is not None else None,
            "transactionIndex": _q(index) if mined and index is not None else None,
            "from": to_checksum_address(tx.sender),
            "to": _addr_out(tx.to),
            "value": _q(tx.value),
            "gas": _q(tx.gas),
            "input": _d(tx.data),
        }
        if kind in (0, 1):
            out["gasPrice"] = _q(tx.gas_price)
        if kind >= 1:
            out["chainId"] = _q(tx.chain_id)
            out["accessList"] = [
                {
                    "address": to_checksum_address(item.account),
                    "storageKeys": [_d(int(k).to_bytes(32, "big")) for k in item.storage_keys],
                }
                for item in tx.access_list or ()
            ]
        elif tx.chain_id is not None:
            out["chainId"] = _q(tx.chain_id)
        if kind >= 2:
            out["maxFeePerGas"] = _q(tx.max_fee_per_gas)
            out["maxPriorityFeePerGas"] = _q(tx.max_priority_fee_per_gas)
            base_fee = getattr(block.header, "base_fee_per_gas", None) if block is not None else None
            out["gasPrice"] = _q(self._effective_gas_price(tx, base_fee))
        if kind == 4:
            out["authorizationList"] = [
                {
                    "chainId": _q(a.chain_id),
                    "address": to_checksum_address(a.address),
                    "nonce": _q(a.nonce),
                    "yParity": _q(a.y_parity),
                    "r": _q(a.r),
                    "s": _q(a.s),
                }
                for a in tx.authorization_list
            ]
        if kind == 0:
            out["v"] = _q(tx.v)
        else:
            out["v"] = _q(tx.y_parity)
            out["yParity"] = _q(tx.y_parity)
        out["r"] = _q(tx.r)
        out["s"] = _q(tx.s)
        return out

    def _receipt_json(self, block: Any, receipts: Sequence[Any], index: int) -> dict[str, Any]:
        tx = block.transactions[index]
        receipt = receipts[index]
        previous = receipts[index - 1].gas_used if index else 0
        number = block.header.block_number
        return {
            "transactionHash": _d(tx.hash),
            "transactionIndex": _q(index),
            "blockHash": _d(block.hash),
            "blockNumber": _q(number),
            "from": to_checksum_address(tx.sender),
            "to": _addr_out(tx.to),
            "cumulativeGasUsed": _q(receipt.gas_used),
            "gasUsed": _q(receipt.gas_used - previous),
            "effectiveGasPrice": _q(
                self._effective_gas_price(tx, getattr(block.header, "base_fee_per_gas", None))
            ),
            "contractAddress": (
                to_checksum_address(_contract_address(tx.sender, tx.nonce)) if not tx.to else None
            ),
            "logs": [entry.json for entry in self._logs.get(number, ()) if entry.tx_index == index],
            "logsBloom": _bloom(receipt.bloom),
            "status": _q(1 if receipt.state_root == b"\x01" else 0),
            "type": _q(self._tx_type(tx)),
        }

    def _mined_block(self, number: int) -> Any:
        return self._chain.get_canonical_block_by_number(number)

    # execution -----------------------------------------------------------------------------------------

    def _spoof(self, txobj: Any, header: Any) -> tuple[Any, Any]:
        """Build an unsigned transaction from a JSON-RPC call object; returns (vm state, spoofed tx)."""
        from eth.vm.spoof import SpoofTransaction

        if not isinstance(txobj, Mapping):
            raise _bad_params("transaction must be an object")
        fee_keys = ("gasPrice", "maxFeePerGas", "maxPriorityFeePerGas")
        free = all(_p_qty(txobj[k], k) == 0 for k in fee_keys if txobj.get(k) is not None)
        if free and getattr(header, "base_fee_per_gas", None) is not None:
            header = header.copy(base_fee_per_gas=0)
        vm = self._chain.get_vm(header)
        state = vm.state
        sender = _p_addr(txobj["from"], "from") if txobj.get("from") else ZERO_ADDRESS
        to = _p_addr(txobj["to"], "to") if txobj.get("to") else b""
        data_hex = txobj.get("input") if txobj.get("input") is not None else txobj.get("data")
        data = _p_data(data_hex, "input") if data_hex is not None else b""
        value = _p_qty(txobj.get("value") or 0, "value")
        gas = _p_qty(txobj["gas"], "gas") if txobj.get("gas") is not None else header.gas_limit
        nonce = _p_qty(txobj["nonce"], "nonce") if txobj.get("nonce") is not None else state.get_nonce(sender)
        builder = vm.get_transaction_builder()
        if txobj.get("gasPrice") is not None and txobj.get("maxFeePerGas") is None:
            unsigned = builder.create_unsigned_transaction(
                nonce=nonce, gas_price=_p_qty(txobj["gasPrice"]), gas=gas, to=to, value=value, data=data
            )
        else:
            max_fee = _p_qty(txobj.get("maxFeePerGas") or 0, "maxFeePerGas")
            tip = _p_qty(txobj.get("maxPriorityFeePerGas") or 0, "maxPriorityFeePerGas")
            if txobj.get("maxFeePerGas") is None and tip:
                max_fee = tip + 2 * int(getattr(header, "base_fee_per_gas", 0) or 0)
            access_list = tuple(
                (_p_addr(item["address"]), tuple(int.from_bytes(_p_hash(k), "big") for k in item["storageKeys"]))
                for item in txobj.get("accessList") or ()
            )
            unsigned = builder.new_unsigned_dynamic_fee_transaction(
                chain_id=self._chain_id,
                nonce=nonce,
                max_priority_fee_per_gas=tip,
                max_fee_per_gas=max_fee,
                gas=gas,
                to=to,
                value=value,
                data=data,
                access_list=access_list,
            )
        return state, SpoofTransaction(unsigned, from_=sender)

    @staticmethod
    def _raise_vm_error(error: Exception, output: bytes = b"") -> NoReturn:
        from eth.exceptions import Revert

        if isinstance(error, Revert):
            data = error.args[0] if error.args and isinstance(error.args[0], bytes) else output
            raise ChainRevert(decode_revert_reason(bytes(data)), bytes(data))
        raise RpcError(-32000, _vm_error_message(error))

    def _call(self, txobj: Any, tag: Any) -> bytes:
        state, tx = self._spoof(txobj, self._call_header(tag))
        snapshot = state.snapshot()
        try:
            computation = state.apply_transaction(tx)
        finally:
            state.revert(snapshot)
        if computation.is_error:
            self._raise_vm_error(computation.error, computation.output)
        return bytes(computation.output)

    def _estimate(self, txobj: Any, tag: Any) -> int:
        from eth.estimators.gas import binary_gas_search_1000_tolerance
        from eth.exceptions import VMError

        state, tx = self._spoof(txobj, self._call_header(tag))
        try:
            return int(binary_gas_search_1000_tolerance(state, tx))
        except VMError as exc:
            if type(exc).__name__ == "OutOfGas":
                raise RpcError(-32000, "gas required exceeds allowance") from None
            self._raise_vm_error(exc)

    def _decode_raw(self, raw: bytes) -> Any:
        if not raw:
            raise RpcError(-32000, "invalid transaction: empty")
        if raw[0] == 3:
            raise RpcError(-32000, "blob transactions are not supported by the embedded chain")
        try:
            tx = self._chain.get_vm().get_transaction_builder().decode(raw)
            tx.check_signature_validity()
            _ = tx.sender
        except Exception as exc:
            raise RpcError(-32000, f"invalid transaction: {type(exc).__name__}: {exc}") from None
        tx_chain = tx.chain_id
        if tx_chain is not None and tx_chain != self._chain_id:
            raise RpcError(
                -32000, f"invalid chain id for signer: transaction is for chain {tx_chain}, this is {self._chain_id}"
            )
        return tx

    # ---------------------------------------------------------------------------------------------------
    # JSON-RPC methods (chain thread)
    # ---------------------------------------------------------------------------------------------------

    def rpc_web3_clientVersion(self, params: list[Any]) -> str:
        from importlib.metadata import version

        return f"paywire-embedded/py-evm-{version('py-evm')}/eth-tester-{version('eth-tester')}"

    def rpc_net_version(self, params: list[Any]) -> str:
        return str(self._chain_id)

    def rpc_net_listening(self, params: list[Any]) -> bool:
        return True

    def rpc_eth_chainId(self, params: list[Any]) -> str:
        return _q(self._chain_id)

    def rpc_eth_syncing(self, params: list[Any]) -> bool:
        return False

    def rpc_eth_mining(self, params: list[Any]) -> bool:
        return True

    def rpc_eth_accounts(self, params: list[Any]) -> list[str]:
        return list(self._accounts)

    def rpc_eth_coinbase(self, params: list[Any]) -> str:
        return to_checksum_address(self._chain.header.coinbase)

    def rpc_eth_blockNumber(self, params: list[Any]) -> str:
        return _q(self._head().block_number)

    def rpc_eth_maxPriorityFeePerGas(self, params: list[Any]) -> str:
        return _q(self._priority_fee)

    def rpc_eth_gasPrice(self, params: list[Any]) -> str:
        return _q(int(self._chain.header.base_fee_per_gas) + self._priority_fee)

    def rpc_eth_blobBaseFee(self, params: list[Any]) -> str:
        return _q(1)

    def rpc_eth_feeHistory(self, params: list[Any]) -> dict[str, Any]:
        count = min(_p_qty(params[0], "blockCount"), 1024)
        newest = self._block_number_at(_arg(params, 1))
        percentiles = [float(p) for p in (_arg(params, 2) or [])]
        if count == 0:
            return {"oldestBlock": _q(0), "baseFeePerGas": [], "gasUsedRatio": [], "reward": []}
        oldest = max(0, newest - count + 1)
        chain = self._chain
        base_fees: list[str] = []
        ratios: list[float] = []
        rewards: list[list[str]] = []
        for number in range(oldest, newest + 1):
            block = self._mined_block(number)
            h = block.header
            base_fee = int(h.base_fee_per_gas)
            base_fees.append(_q(base_fee))
            ratios.append(h.gas_used / h.gas_limit if h.gas_limit else 0.0)
            if percentiles:
                rewards.append([_q(r) for r in self._rewards(block, base_fee, percentiles)])
        if newest >= self._head().block_number:
            base_fees.append(_q(chain.header.base_fee_per_gas))
        else:
            base_fees.append(_q(chain.get_canonical_block_header_by_number(newest + 1).base_fee_per_gas))
        out: dict[str, Any] = {"oldestBlock": _q(oldest), "baseFeePerGas": base_fees, "gasUsedRatio": ratios}
        if percentiles:
            out["reward"] = rewards
        return out

    def _rewards(self, block: Any, base_fee: int, percentiles: list[float]) -> list[int]:
        if not block.transactions:
            return [0 for _ in percentiles]
        receipts = block.get_receipts(self._chain.chaindb)
        items: list[tuple[int, int]] = []
        previous = 0
        for tx, receipt in zip(block.transactions, receipts, strict=True):
            items.append((self._effective_gas_price(tx, base_fee) - base_fee, receipt.gas_used - previous))
            previous = receipt.gas_used
        items.sort()
        total = sum(g for _, g in items) or 1
        out: list[int] = []
        for p in percentiles:
            threshold = total * p / 100
            acc = 0
            chosen = items[-1][0]
            for tip, gas in items:
                acc += gas
                if acc >= threshold:
                    chosen = tip
                    break
            out.append(max(chosen, 0))
        return out

    def rpc_eth_getBlockByNumber(self, params: list[Any]) -> dict[str, Any] | None:
        tag = _arg(params, 0, "latest")
        full = bool(_arg(params, 1, False))
        if tag == "pending":
            return self._block_json(self._chain.get_block(), full, pending=True)
        try:
            header = self._header_at(tag)
        except RpcError:
            return None
        return self._block_json(self._mined_block(header.block_number), full)

    def rpc_eth_getBlockByHash(self, params: list[Any]) -> dict[str, Any] | None:
        header = self._canonical_header_by_hash(_p_hash(params[0], "block hash"))
        if header is None:
            return None
        return self._block_json(self._mined_block(header.block_number), bool(_arg(params, 1, False)))

    def _block_for(self, tag_or_hash: Any, by_hash: bool) -> Any | None:
        if by_hash:
            header = self._canonical_header_by_hash(_p_hash(tag_or_hash, "block hash"))
        else:
            if tag_or_hash == "pending":
                return self._chain.get_block()
            try:
                header = self._header_at(tag_or_hash)
            except RpcError:
                return None
        return None if header is None else self._mined_block(header.block_number)

    def rpc_eth_getBlockTransactionCountByNumber(self, params: list[Any]) -> str | None:
        block = self._block_for(_arg(params, 0, "latest"), by_hash=False)
        return None if block is None else _q(len(block.transactions))

    def rpc_eth_getBlockTransactionCountByHash(self, params: list[Any]) -> str | None:
        block = self._block_for(params[0], by_hash=True)
        return None if block is None else _q(len(block.transactions))

    def rpc_eth_getTransactionByBlockNumberAndIndex(self, params: list[Any]) -> dict[str, Any] | None:
        return self._tx_in_block(self._block_for(_arg(params, 0, "latest"), by_hash=False), params[1])

    def rpc_eth_getTransactionByBlockHashAndIndex(self, params: list[Any]) -> dict[str, Any] | None:
        return self._tx_in_block(self._block_for(params[0], by_hash=True), params[1])

    def _tx_in_block(self, block: Any | None, index: Any) -> dict[str, Any] | None:
        i = _p_qty(index, "index")
        if block is None or i >= len(block.transactions):
            return None
        mined = block.header.block_number <= self._head().block_number
        return self._tx_json(block.transactions[i], block if mined else None, i)

    def rpc_eth_getTransactionByHash(self, params: list[Any]) -> dict[str, Any] | None:
        tx_hash = _p_hash(params[0], "transaction hash")
        where = self._tx_index.get(tx_hash)
        if where is not None:
            block = self._mined_block(where[0])
            return self._tx_json(block.transactions[where[1]], block, where[1])
        for i, tx in enumerate(self._chain.get_block().transactions):
            if tx.hash == tx_hash:
                return self._tx_json(tx, None, i)
        return None

    def rpc_eth_getTransactionReceipt(self, params: list[Any]) -> dict[str, Any] | None:
        where = self._tx_index.get(_p_hash(params[0], "transaction hash"))
        if where is None:
            return None
        block = self._mined_block(where[0])
        return self._receipt_json(block, block.get_receipts(self._chain.chaindb), where[1])

    def rpc_eth_getBlockReceipts(self, params: list[Any]) -> list[dict[str, Any]] | None:
        tag = _arg(params, 0, "latest")
        block = self._block_for(tag, by_hash=isinstance(tag, str) and len(tag) == 66)
        if block is None or block.header.block_number > self._head().block_number:
            return None
        receipts = block.get_receipts(self._chain.chaindb)
        return [self._receipt_json(block, receipts, i) for i in range(len(block.transactions))]

    def rpc_eth_getBalance(self, params: list[Any]) -> str:
        return _q(self._state(_arg(params, 1)).get_balance(_p_addr(params[0])))

    def rpc_eth_getCode(self, params: list[Any]) -> str:
        return _d(self._state(_arg(params, 1)).get_code(_p_addr(params[0])))

    def rpc_eth_getStorageAt(self, params: list[Any]) -> str:
        slot = _p_qty(params[1], "slot")
        value = self._state(_arg(params, 2)).get_storage(_p_addr(params[0]), slot)
        return _d(int(value).to_bytes(32, "big"))

    def rpc_eth_getTransactionCount(self, params: list[Any]) -> str:
        return _q(self._state(_arg(params, 1)).get_nonce(_p_addr(params[0])))

    def rpc_eth_call(self, params: list[Any]) -> str:
        if len(params) > 2 and params[2]:
            raise RpcError(-32602, "state overrides are not supported by the embedded chain")
        return _d(self._call(params[0], _arg(params, 1, "latest")))

    def rpc_eth_estimateGas(self, params: list[Any]) -> str:
        # like geth and anvil, estimate against the pending block by default
        return _q(self._estimate(params[0], _arg(params, 1, "pending")))

    def rpc_eth_sendRawTransaction(self, params: list[Any]) -> str:
        return self._apply(self._decode_raw(_p_data(params[0], "raw transaction")))

    def rpc_eth_sendTransaction(self, params: list[Any]) -> str:
        txobj = params[0]
        if not isinstance(txobj, Mapping) or not txobj.get("from"):
            raise _bad_params("eth_sendTransaction needs an object with 'from'")
        sender = _p_addr(txobj["from"], "from")
        key = self._dev_keys.get(sender)
        if key is None:
            raise RpcError(-32000, f"unknown account {to_checksum_address(sender)}")
        pending = self._chain.header
        tx: dict[str, Any] = {
            "chainId": self._chain_id,
            "nonce": _p_qty(txobj["nonce"]) if txobj.get("nonce") is not None
            else self._state("pending").get_nonce(sender),
            "value": _p_qty(txobj.get("value") or 0, "value"),
            "data": _p_data(txobj.get("input") or txobj.get("data") or "0x"),
        }
        if txobj.get("to"):
            tx["to"] = to_checksum_address(_p_addr(txobj["to"], "to"))
        if txobj.get("gasPrice") is not None and txobj.get("maxFeePerGas") is None:
            tx["gasPrice"] = _p_qty(txobj["gasPrice"])
        else:
            tip = _p_qty(txobj.get("maxPriorityFeePerGas") or self._priority_fee)
            tx["maxPriorityFeePerGas"] = tip
            tx["maxFeePerGas"] = _p_qty(txobj.get("maxFeePerGas") or (2 * pending.base_fee_per_gas + tip))
            tx["type"] = 2
        if txobj.get("gas") is not None:
            tx["gas"] = _p_qty(txobj["gas"], "gas")
        else:
            estimate_obj = {k: v for k, v in txobj.items() if k not in ("gasPrice", "maxFeePerGas", "maxPriorityFeePerGas", "nonce")}
            tx["gas"] = min(self._estimate(estimate_obj, "pending") * 6 // 5, pending.gas_limit)
        signed = Account.sign_transaction(tx, key)
        return self._apply(self._decode_raw(bytes(signed.raw_transaction)))

    # logs and filters ----------------------------------------------------------------------------------

    def _log_query(self, criteria: Any) -> _LogQuery:
        if not isinstance(criteria, Mapping):
            raise _bad_params("filter must be an object")
        if criteria.get("blockHash") is not None:
            header = self._canonical_header_by_hash(_p_hash(criteria["blockHash"], "blockHash"))
            if header is None:
                raise RpcError(-32000, "unknown block")
            start = end = int(header.block_number)
        else:
            start = self._block_number_at(criteria.get("fromBlock"))
            end = self._block_number_at(criteria.get("toBlock"))
        address = criteria.get("address")
        addresses: frozenset[bytes] | None = None
        if address is not None:
            items = address if isinstance(address, list) else [address]
            addresses = frozenset(_p_addr(a) for a in items)
        topics: list[frozenset[bytes] | None] = []
        for t in criteria.get("topics") or []:
            if t is None:
                topics.append(None)
            elif isinstance(t, list):
                topics.append(frozenset(_p_hash(x, "topic") for x in t) if t else None)
            else:
                topics.append(frozenset([_p_hash(t, "topic")]))
        return _LogQuery(start, end, addresses, topics)

    def _find_logs(self, query: _LogQuery, after: int | None = None) -> list[dict[str, Any]]:
        start = query.from_block if after is None else max(query.from_block, after + 1)
        end = min(query.to_block, int(self._head().block_number))
        out: list[dict[str, Any]] = []
        i = bisect.bisect_left(self._log_blocks, start)
        while i < len(self._log_blocks) and self._log_blocks[i] <= end:
            out.extend(e.json for e in self._logs[self._log_blocks[i]] if query.matches(e))
            i += 1
        return out

    def rpc_eth_getLogs(self, params: list[Any]) -> list[dict[str, Any]]:
        return self._find_logs(self._log_query(_arg(params, 0, {})))

    def _new_filter(self, kind: str, criteria: dict[str, Any]) -> str:
        fid = self._next_filter
        self._next_filter += 1
        self._filters[fid] = _Filter(kind, int(self._head().block_number), criteria)
        return _q(fid)

    def rpc_eth_newFilter(self, params: list[Any]) -> str:
        criteria = dict(_arg(params, 0, {}))
        self._log_query(criteria)  # validate now
        return self._new_filter("logs", criteria)

    def rpc_eth_newBlockFilter(self, params: list[Any]) -> str:
        return self._new_filter("blocks", {})

    def rpc_eth_newPendingTransactionFilter(self, params: list[Any]) -> str:
        return self._new_filter("pending", {})

    def rpc_eth_uninstallFilter(self, params: list[Any]) -> bool:
        return self._filters.pop(_p_qty(params[0], "filter id"), None) is not None

    def _get_filter(self, value: Any) -> _Filter:
        flt = self._filters.get(_p_qty(value, "filter id"))
        if flt is None:
            raise RpcError(-32000, "filter not found")
        return flt

    def rpc_eth_getFilterChanges(self, params: list[Any]) -> list[Any]:
        flt = self._get_filter(params[0])
        head = int(self._head().block_number)
        if flt.kind == "logs":
            query = self._log_query(flt.criteria)
            if flt.criteria.get("fromBlock") in (None, *_NAMED_LATEST, "pending"):
                query.from_block = 0  # "from now on": everything after the cursor
            out: list[Any] = self._find_logs(query, after=flt.cursor)
        elif flt.kind == "blocks":
            out = [_d(self._chain.get_canonical_block_header_by_number(n).hash) for n in range(flt.cursor + 1, head + 1)]
        else:
            out = [
                _d(self._mined_block(n).transactions[i].hash)
                for n in range(flt.cursor + 1, head + 1)
                for i in range(len(self._mined_block(n).transactions))
            ]
        flt.cursor = head
        return out

    def rpc_eth_getFilterLogs(self, params: list[Any]) -> list[dict[str, Any]]:
        flt = self._get_filter(params[0])
        if flt.kind != "logs":
            raise RpcError(-32000, "filter is not a log filter")
        return self._find_logs(self._log_query(flt.criteria))


_METHODS: dict[str, Callable[[EmbeddedChain, list[Any]], Any]] = {
    name.removeprefix("rpc_"): getattr(EmbeddedChain, name)
    for name in dir(EmbeddedChain)
    if name.startswith("rpc_")
}


async def embedded_chain(
    chain_id: int = 31337, funded: Mapping[str | bytes, int] | None = None, **kwargs: Any
) -> tuple[RpcChain, EmbeddedChain]:
    """Start an ``EmbeddedChain`` off the event loop and wrap it: ``chain, node = await embedded_chain()``.

    ``chain`` (``RpcChain``) is the typed API; ``node`` exposes ``accounts``/``private_keys``/``fund()``.
    ``await chain.aclose()`` also closes ``node``. ``kwargs`` go to ``EmbeddedChain``.
    """
    node = await asyncio.to_thread(EmbeddedChain, chain_id, funded, **kwargs)
    return RpcChain(node), node
