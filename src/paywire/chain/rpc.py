"""JSON-RPC: the ``Transport`` protocol, an HTTP transport, and ``RpcChain`` — the one implementation of
chain logic in paywire. Every chain kind (embedded py-evm, anvil, a remote node) is just a transport.

Error model (see ``paywire.errors``):

* ``ChainRevert(reason, data)`` — the call/transaction reverted. ``reason`` is the decoded ``Error(string)``
  message, ``Panic(0x..)`` for Solidity panics, the registered name of a custom error
  (``register_custom_errors``), or its 4-byte selector as ``0x…`` hex.
* ``RpcError`` (a ``ChainError``) — the node answered with a JSON-RPC error object that is not a revert;
  ``code``/``message``/``data`` are kept verbatim.
* ``ChainError`` — unreachable, timed out, or garbage: the outcome is unknown.
"""

from __future__ import annotations

import asyncio
import functools
import itertools
import re
import threading
import time
import weakref
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Protocol, runtime_checkable

import httpx
from eth_abi.abi import decode as abi_decode
from eth_utils.crypto import keccak

from paywire.chain.base import FeeData, Log, Receipt
from paywire.errors import ChainError, ChainRevert
from paywire.evm.crypto import address_bytes, to_checksum

__all__ = [
    "HttpTransport",
    "RpcChain",
    "RpcError",
    "Transport",
    "decode_revert_reason",
    "error_from_rpc",
    "from_data",
    "from_quantity",
    "register_custom_errors",
    "to_block_param",
    "to_data",
    "to_quantity",
]


@runtime_checkable
class Transport(Protocol):
    """Something that answers Ethereum JSON-RPC calls.

    ``request`` returns the JSON ``result`` value (hex strings, dicts, lists …) or raises ``ChainRevert``,
    ``RpcError`` or ``ChainError``.
    """

    async def request(self, method: str, params: list[Any]) -> Any: ...

    async def aclose(self) -> None: ...


class RpcError(ChainError):
    """A JSON-RPC error object that is not a revert (e.g. ``nonce too low``, ``method not found``)."""

    def __init__(self, code: int, message: str, data: Any = None) -> None:
        super().__init__(f"{message} (code {code})")
        self.code = code
        self.message = message
        self.data = data


# --------------------------------------------------------------------------------------------------------
# Hex encoding
# --------------------------------------------------------------------------------------------------------


def to_quantity(value: int) -> str:
    """An integer as a JSON-RPC quantity (``0x``-prefixed, no leading zeros)."""
    if value < 0:
        raise ValueError("quantities are unsigned")
    return hex(value)


def from_quantity(value: Any) -> int:
    """A JSON-RPC quantity (or a plain int) as an int; garbage raises ``ChainError``."""
    if type(value) is str and len(value) > 2 and value[:2] == "0x":  # the common case: one type test, one int()
        try:
            return int(value, 16)
        except ValueError:
            pass
        raise ChainError(f"expected a hex quantity, got {value!r}")
    if isinstance(value, bool):
        raise ChainError(f"expected a hex quantity, got {value!r}")
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value[:2] in ("0x", "0X"):
        try:
            return int(value, 16) if len(value) > 2 else 0
        except ValueError:
            pass
    raise ChainError(f"expected a hex quantity, got {value!r}")


def to_data(value: bytes) -> str:
    return "0x" + bytes(value).hex()


def from_data(value: Any) -> bytes:
    """``0x``-hex data as bytes; garbage raises ``ChainError``."""
    if type(value) is str and value[:2] == "0x" and not len(value) % 2:  # the common case: even length, one fromhex
        try:
            return bytes.fromhex(value[2:])
        except ValueError:
            pass
        raise ChainError(f"expected 0x-hex data, got {str(value)[:80]!r}")
    if isinstance(value, str) and value[:2] in ("0x", "0X"):
        body = value[2:]
        if len(body) % 2:
            body = "0" + body
        try:
            return bytes.fromhex(body)
        except ValueError:
            pass
    raise ChainError(f"expected 0x-hex data, got {str(value)[:80]!r}")


def to_block_param(block: str | int) -> str:
    """``"latest"``/``"pending"``/… pass through; ints become quantities."""
    if isinstance(block, bool):
        raise TypeError("block must be a tag or a number")
    if isinstance(block, int):
        return to_quantity(block)
    return block


def _hexify(value: Any) -> Any:
    if isinstance(value, bool):
        return value
    if isinstance(value, int):
        return to_quantity(value)
    if isinstance(value, bytes | bytearray | memoryview):
        return to_data(bytes(value))
    if isinstance(value, list | tuple):
        return [_hexify(v) for v in value]
    if isinstance(value, Mapping):
        return {k: _hexify(v) for k, v in value.items()}
    return value


_SNAKE_TO_CAMEL = {
    "max_fee_per_gas": "maxFeePerGas",
    "max_priority_fee_per_gas": "maxPriorityFeePerGas",
    "gas_price": "gasPrice",
    "access_list": "accessList",
    "chain_id": "chainId",
}


def _tx_to_json(tx: Mapping[str, Any]) -> dict[str, Any]:
    """A Python tx dict (ints, bytes, snake or camel keys) as a JSON-RPC transaction object."""
    out: dict[str, Any] = {}
    for key, value in tx.items():
        if value is None:
            continue
        out[_SNAKE_TO_CAMEL.get(key, key)] = _hexify(value)
    return out


# --------------------------------------------------------------------------------------------------------
# Revert decoding
# --------------------------------------------------------------------------------------------------------

ERROR_SELECTOR = bytes.fromhex("08c379a0")  # Error(string)
PANIC_SELECTOR = bytes.fromhex("4e487b71")  # Panic(uint256)

_custom_errors: dict[bytes, str] = {}
_custom_errors_lock = threading.Lock()


def register_custom_errors(*signatures: str) -> None:
    """Teach the decoder custom error names, e.g. ``register_custom_errors("InvalidSignature()")``.

    A revert with a registered selector gets ``reason == "InvalidSignature"`` instead of ``"0x8baa579f"``.
    """
    with _custom_errors_lock:
        for sig in signatures:
            sig = sig.replace(" ", "")
            if "(" not in sig or not sig.endswith(")"):
                raise ValueError(f"not an error signature: {sig!r}")
            _custom_errors[keccak(text=sig)[:4]] = sig.split("(", 1)[0]


def decode_revert_reason(data: bytes) -> str:
    """Revert data → normalized reason string (see module docs). Empty data → ``""``."""
    data = bytes(data)
    if len(data) < 4:
        return "" if not data else "0x" + data.hex()
    selector = data[:4]
    if selector == ERROR_SELECTOR:
        try:
            (reason,) = abi_decode(["string"], data[4:])
            return str(reason)
        except Exception:
            return "0x" + selector.hex()
    if selector == PANIC_SELECTOR:
        try:
            (code,) = abi_decode(["uint256"], data[4:])
            return f"Panic(0x{int(code):02x})"
        except Exception:
            return "0x" + selector.hex()
    name = _custom_errors.get(selector)
    return name if name is not None else "0x" + selector.hex()


def _revert_data(data: Any) -> bytes:
    """Dig revert bytes out of a JSON-RPC ``error.data`` (a hex string, or nested objects some nodes use)."""
    for _ in range(3):
        if isinstance(data, str):
            try:
                return from_data(data)
            except ChainError:
                return b""
        if isinstance(data, Mapping):
            data = data.get("data", data.get("result"))
            continue
        break
    return b""


_REVERT_PREFIXES = (
    re.compile(r"^.*?execution reverted(?::\s*(?P<r>.*))?$", re.S | re.I),
    re.compile(r"^.*?reverted with reason string '(?P<r>.*)'$", re.S | re.I),
    re.compile(r"^.*?\brevert(?:ed)?\b:?\s*(?P<r>.*)$", re.S | re.I),
)


def _reason_from_message(message: str) -> str:
    for rx in _REVERT_PREFIXES:
        m = rx.match(message)
        if m:
            return (m.group("r") or "").strip()
    return ""


def error_from_rpc(error: Any) -> ChainError:
    """Turn a JSON-RPC error object into ``ChainRevert`` (code 3 or a "revert" message) or ``RpcError``."""
    if not isinstance(error, Mapping):
        return ChainError(f"malformed JSON-RPC error: {str(error)[:200]!r}")
    code = error.get("code")
    message = str(error.get("message", ""))
    data = error.get("data")
    if code == 3 or "revert" in message.lower():
        raw = _revert_data(data)
        reason = decode_revert_reason(raw) if len(raw) >= 4 else _reason_from_message(message)
        return ChainRevert(reason, raw)
    return RpcError(code if isinstance(code, int) and not isinstance(code, bool) else -32603, message, data)


# --------------------------------------------------------------------------------------------------------
# HTTP transport
# --------------------------------------------------------------------------------------------------------


class HttpTransport:
    """JSON-RPC 2.0 over HTTP(S) with httpx.

    Usable from several event loops/threads: one ``httpx.AsyncClient`` is kept per event loop.
    ``timeout`` bounds the whole request (connect + send + wait for the answer).
    """

    def __init__(self, url: str, timeout: float = 10.0, *, headers: Mapping[str, str] | None = None) -> None:
        if not url.startswith(("http://", "https://")):
            raise ValueError(f"not an http(s) URL: {url!r}")
        self.url = url
        self.timeout = timeout
        self._headers = dict(headers or {})
        self._ids = itertools.count(1)
        self._clients: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, httpx.AsyncClient] = (
            weakref.WeakKeyDictionary()
        )
        self._lock = threading.Lock()
        self._closed = False

    def __repr__(self) -> str:
        return f"HttpTransport({self.url!r})"

    def _client(self) -> httpx.AsyncClient:
        loop = asyncio.get_running_loop()
        with self._lock:
            if self._closed:
                raise ChainError(f"transport to {self.url} is closed")
            client = self._clients.get(loop)
            if client is None:
                client = httpx.AsyncClient(
                    timeout=httpx.Timeout(self.timeout),
                    headers={"content-type": "application/json", **self._headers},
                )
                self._clients[loop] = client
            return client

    async def request(self, method: str, params: list[Any]) -> Any:
        request_id = next(self._ids)
        payload = {"jsonrpc": "2.0", "id": request_id, "method": method, "params": list(params)}
        client = self._client()
        try:
            async with asyncio.timeout(self.timeout):
                response = await client.post(self.url, json=payload)
        except (TimeoutError, httpx.TimeoutException) as exc:
            raise ChainError(f"{method}: no answer from {self.url} within {self.timeout}s") from exc
        except httpx.HTTPError as exc:
            raise ChainError(f"{method}: {self.url} unreachable: {type(exc).__name__}: {exc}") from exc
        try:
            body = response.json()
        except ValueError as exc:
            raise ChainError(
                f"{method}: {self.url} answered HTTP {response.status_code} with non-JSON: "
                f"{response.text[:120]!r}"
            ) from exc
        return unwrap_response(method, body, request_id, response.status_code)

    async def aclose(self) -> None:
        with self._lock:
            self._closed = True
            clients = list(self._clients.items())
            self._clients.clear()
        try:
            current: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
        except RuntimeError:
            current = None
        for loop, client in clients:
            if loop is current:
                await client.aclose()
            elif not loop.is_closed() and loop.is_running():
                asyncio.run_coroutine_threadsafe(client.aclose(), loop)


def unwrap_response(method: str, body: Any, request_id: int, status: int) -> Any:
    """The ``result`` of a JSON-RPC response body, or the right ``ChainError``/``ChainRevert``."""
    if not isinstance(body, dict):
        raise ChainError(f"{method}: malformed JSON-RPC response (HTTP {status}): {str(body)[:120]!r}")
    if body.get("id") is not None and body.get("id") != request_id:  # checked before the error: someone else's
        raise ChainError(f"{method}: response id {body.get('id')!r} does not match request id {request_id}")
    error = body.get("error")
    if error is not None:
        raise error_from_rpc(error)
    if status >= 400:
        raise ChainError(f"{method}: HTTP {status}")
    if body.get("id") != request_id:
        raise ChainError(f"{method}: response id {body.get('id')!r} does not match request id {request_id}")
    if "result" not in body:
        raise ChainError(f"{method}: JSON-RPC response has neither result nor error")
    return body["result"]


# --------------------------------------------------------------------------------------------------------
# RpcChain
# --------------------------------------------------------------------------------------------------------


@functools.lru_cache(maxsize=1024)
def _log_address(address: str) -> str:
    """Checksummed log address (a receipt's logs name the same few contracts again and again)."""
    return to_checksum(address_bytes(address))


def _parse_log(raw: Any) -> Log:
    if not isinstance(raw, Mapping):
        raise ChainError(f"malformed log: {str(raw)[:120]!r}")
    try:
        return Log(
            address=_log_address(str(raw["address"])),
            topics=tuple([from_data(t) for t in raw.get("topics") or ()]),
            data=from_data(raw.get("data") or "0x"),
            block_number=from_quantity(raw.get("blockNumber") or "0x0"),
            transaction_hash=str(raw.get("transactionHash") or ""),
            log_index=from_quantity(raw.get("logIndex") or "0x0"),
        )
    except (KeyError, ValueError, TypeError) as exc:
        raise ChainError(f"malformed log: {str(raw)[:120]!r}") from exc


def _parse_receipt(raw: Any) -> Receipt | None:
    if raw is None:
        return None
    if not isinstance(raw, Mapping) or "transactionHash" not in raw:
        raise ChainError(f"malformed receipt: {str(raw)[:160]!r}")
    if raw.get("blockNumber") is None:  # some nodes answer pending receipts with a null block
        return None
    status = raw.get("status")
    return Receipt(
        transaction_hash=str(raw["transactionHash"]),
        status=from_quantity(status) if status is not None else 1,
        block_number=from_quantity(raw["blockNumber"]),
        gas_used=from_quantity(raw.get("gasUsed") or "0x0"),
        effective_gas_price=from_quantity(raw.get("effectiveGasPrice") or raw.get("gasPrice") or "0x0"),
        logs=tuple([_parse_log(entry) for entry in raw.get("logs") or ()]),
    )


def _encode_topic(topic: Any) -> Any:
    if topic is None:
        return None
    if isinstance(topic, list | tuple):
        return [_encode_topic(t) for t in topic]
    if isinstance(topic, bytes | bytearray):
        return to_data(bytes(topic).rjust(32, b"\0"))
    return str(topic)


class RpcChain:
    """The ``Chain`` implementation: typed, async access to an EVM chain over any ``Transport``.

    ``on_close`` (optional) runs after the transport is closed by ``aclose()`` — e.g. stop an anvil process.
    """

    def __init__(
        self, transport: Transport, *, on_close: Callable[[], Awaitable[None]] | None = None
    ) -> None:
        self.transport = transport
        self._on_close = on_close
        self._chain_id: int | None = None
        self._closed = False

    def __repr__(self) -> str:
        return f"RpcChain({self.transport!r})"

    async def __aenter__(self) -> RpcChain:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def request(self, method: str, params: list[Any]) -> Any:
        return await self.transport.request(method, params)

    async def chain_id(self) -> int:
        if self._chain_id is None:
            self._chain_id = from_quantity(await self.request("eth_chainId", []))
        return self._chain_id

    async def block_number(self) -> int:
        return from_quantity(await self.request("eth_blockNumber", []))

    async def get_block(self, block: str | int = "latest", full_transactions: bool = False) -> dict[str, Any]:
        """The raw JSON-RPC block object; ``ChainError`` if the node does not know it."""
        result = await self.request("eth_getBlockByNumber", [to_block_param(block), full_transactions])
        if not isinstance(result, dict):
            raise ChainError(f"block {block!r} not found")
        return result

    async def block_timestamp(self, block: str | int = "latest") -> int:
        return from_quantity((await self.get_block(block)).get("timestamp"))

    async def call(
        self, to: str, data: bytes, *, sender: str | None = None, block: str | int = "latest"
    ) -> bytes:
        tx: dict[str, Any] = {"to": to, "data": to_data(data)}
        if sender is not None:
            tx["from"] = sender
        return from_data(await self.request("eth_call", [tx, to_block_param(block)]))

    async def estimate_gas(self, tx: dict[str, Any]) -> int:
        """``tx`` uses JSON-RPC keys (``from``, ``to``, ``data``, ``value``, ``maxFeePerGas`` …; snake_case
        fee keys are accepted too); int and bytes values are hex-encoded here."""
        return from_quantity(await self.request("eth_estimateGas", [_tx_to_json(tx)]))

    async def send_raw_transaction(self, raw: bytes) -> str:
        result = await self.request("eth_sendRawTransaction", [to_data(raw)])
        if not isinstance(result, str) or not result.startswith("0x"):
            raise ChainError(f"eth_sendRawTransaction answered {result!r}")
        return result.lower()

    async def get_transaction_receipt(self, tx_hash: str) -> Receipt | None:
        return _parse_receipt(await self.request("eth_getTransactionReceipt", [tx_hash]))

    async def wait_for_receipt(self, tx_hash: str, timeout: float = 30.0, poll: float = 0.05) -> Receipt:
        """Poll until mined. Transient ``ChainError`` while polling is retried until ``timeout``."""
        deadline = time.monotonic() + timeout
        last_error: ChainError | None = None
        while True:
            try:
                receipt = await self.get_transaction_receipt(tx_hash)
                last_error = None
            except ChainRevert:
                raise
            except ChainError as exc:
                receipt, last_error = None, exc
            if receipt is not None:
                return receipt
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                detail = f" (last error: {last_error})" if last_error else ""
                raise ChainError(f"transaction {tx_hash} not mined within {timeout}s{detail}")
            await asyncio.sleep(min(poll, remaining))

    async def get_logs(
        self,
        *,
        address: str | None = None,
        topics: list[Any] | None = None,
        from_block: int | str = 0,
        to_block: int | str = "latest",
    ) -> list[Log]:
        """``topics`` entries may be bytes, 0x-hex strings, ``None`` (wildcard) or lists (any-of)."""
        flt: dict[str, Any] = {"fromBlock": to_block_param(from_block), "toBlock": to_block_param(to_block)}
        if address is not None:
            flt["address"] = address
        if topics is not None:
            flt["topics"] = [_encode_topic(t) for t in topics]
        result = await self.request("eth_getLogs", [flt])
        if not isinstance(result, list):
            raise ChainError(f"eth_getLogs answered {str(result)[:120]!r}")
        return [_parse_log(entry) for entry in result]

    async def get_balance(self, address: str, block: str | int = "latest") -> int:
        return from_quantity(await self.request("eth_getBalance", [address, to_block_param(block)]))

    async def get_code(self, address: str, block: str | int = "latest") -> bytes:
        return from_data(await self.request("eth_getCode", [address, to_block_param(block)]))

    async def get_storage_at(self, address: str, slot: int, block: str | int = "latest") -> bytes:
        result = await self.request("eth_getStorageAt", [address, to_quantity(slot), to_block_param(block)])
        return from_data(result).rjust(32, b"\0")

    async def get_transaction_count(self, address: str, block: str | int = "pending") -> int:
        return from_quantity(await self.request("eth_getTransactionCount", [address, to_block_param(block)]))

    async def fee_data(self) -> FeeData:
        block, gas_price = await asyncio.gather(self.get_block("latest"), self.request("eth_gasPrice", []))
        base_fee = from_quantity(block.get("baseFeePerGas") or "0x0")
        price = from_quantity(gas_price)
        try:
            tip = from_quantity(await self.request("eth_maxPriorityFeePerGas", []))
        except ChainRevert:
            raise
        except ChainError:  # pre-London or minimal node: derive the tip from the legacy price
            tip = max(price - base_fee, 0)
        return FeeData(base_fee=base_fee, max_priority_fee=tip, gas_price=price)

    async def aclose(self) -> None:
        if self._closed:
            return
        self._closed = True
        try:
            await self.transport.aclose()
        finally:
            if self._on_close is not None:
                await self._on_close()

