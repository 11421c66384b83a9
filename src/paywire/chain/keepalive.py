"""JSON-RPC over a lean keep-alive HTTP/1.1 client (``paywire.transport.rpc_http``), for the facilitator.

A settlement or verification is a handful of small JSON-RPC calls; with a general-purpose HTTP client the
client's own bookkeeping costs more CPU than the node's answer (~2.5 ms vs ~0.2 ms per call on anvil). Same
error model as ``HttpTransport``: ``ChainRevert`` / ``RpcError`` for JSON-RPC errors, ``ChainError`` when
there is no usable answer (timeout, garbage, refused). Plain ``http://`` only; use ``HttpTransport`` for
``https://``.
"""

from __future__ import annotations

import itertools
import json
from typing import Any
from urllib.parse import urlsplit

from paywire.chain.rpc import unwrap_response
from paywire.errors import ChainError
from paywire.transport.keepalive import HttpError, HttpTimeout
from paywire.transport.rpc_http import RpcHttpClient

__all__ = ["KeepAliveTransport"]

BROADCAST_CONNECTIONS = 8
"""Connections kept for ``eth_sendRawTransaction`` besides ``max_connections`` (one per key sending at once)."""
_BROADCASTS = frozenset({"eth_sendRawTransaction"})
_READS = frozenset({
    "eth_blockNumber", "eth_call", "eth_chainId", "eth_estimateGas", "eth_feeHistory", "eth_gasPrice", "eth_getBalance",
    "eth_getBlockByHash", "eth_getBlockByNumber", "eth_getCode", "eth_getLogs", "eth_getStorageAt",
    "eth_getTransactionByHash", "eth_getTransactionCount", "eth_getTransactionReceipt", "eth_maxPriorityFeePerGas",
    "net_version",
})
"""Calls that change nothing on the node: asked again if a reused connection closes before their answer."""

_compact = json.JSONEncoder(separators=(",", ":")).encode
"""``json.dumps(obj, separators=(",", ":"))`` without building an encoder per call."""


def _plain(s: object) -> bool:
    """A string JSON writes as itself between quotes (ASCII letters and digits, ``_``; e.g. ``0x``-hex)."""
    return type(s) is str and s.isascii() and (s.isalnum() or (s != "" and s.replace("_", "a").isalnum()))


def request_body(request_id: int, method: str, params: list[Any]) -> bytes:
    """The JSON-RPC request, byte for byte ``json.dumps`` with compact separators. Parameters that are plain
    strings or flat objects of plain strings (hashes, hex data, addresses, block tags: nearly every call) are
    written without the encoder, which scans every character of a long hex string for escapes."""
    parts = []
    for p in params:
        if (type(p) is str and p.isascii() and p.isalnum()) or _plain(p):  # the first test is ``_plain``'s common case
            parts.append(f'"{p}"')
        elif type(p) is dict and all(_plain(k) and _plain(v) for k, v in p.items()):
            parts.append("{" + ",".join(f'"{k}":"{v}"' for k, v in p.items()) + "}")
        else:
            return _compact({"jsonrpc": "2.0", "id": request_id, "method": method, "params": list(params)}).encode()
    if not _plain(method):
        return _compact({"jsonrpc": "2.0", "id": request_id, "method": method, "params": list(params)}).encode()
    return f'{{"jsonrpc":"2.0","id":{int(request_id)},"method":"{method}","params":[{",".join(parts)}]}}'.encode()


class KeepAliveTransport:
    """JSON-RPC 2.0 over plain HTTP/1.1 with a per-event-loop pool of up to ``max_connections`` connections.

    ``timeout`` bounds each call (connect + send + answer); a call that times out closes its connection.
    """

    def __init__(self, url: str, timeout: float = 10.0, *, max_connections: int = 32) -> None:
        parts = urlsplit(url)
        if parts.scheme != "http" or not parts.hostname:
            raise ValueError(f"KeepAliveTransport needs an http:// URL, got {url!r}")
        self.url = url
        self.timeout = timeout
        self.http = RpcHttpClient(url, timeout=timeout, max_connections=max_connections,
                                  max_idle=max_connections, max_body=64 * 1024 * 1024)
        # Broadcasts get connections of their own: a key's next transaction waits for its broadcast (nonce
        # order), so a broadcast queued behind simulations and receipt polls would hold up the whole key.
        self._broadcast = RpcHttpClient(url, timeout=timeout, max_connections=BROADCAST_CONNECTIONS,
                                        max_idle=BROADCAST_CONNECTIONS, max_body=1024 * 1024)
        self._ids = itertools.count(1)
        self._closed = False

    def __repr__(self) -> str:
        return f"KeepAliveTransport({self.url!r})"

    async def request(self, method: str, params: list[Any]) -> Any:
        if self._closed:
            raise ChainError(f"transport to {self.url} is closed")
        request_id = next(self._ids)
        body = request_body(request_id, method, params)
        http = self._broadcast if method in _BROADCASTS else self.http
        try:
            status, data = await http.post(body, idempotent=method in _READS)
        except HttpTimeout as exc:
            raise ChainError(f"{method}: no answer from {self.url} within {self.timeout}s") from exc
        except HttpError as exc:
            raise ChainError(f"{method}: {self.url} unreachable or broken answer: {exc}") from exc
        try:
            obj = json.loads(data)
        except ValueError as exc:
            raise ChainError(f"{method}: {self.url} answered HTTP {status} with non-JSON: {data[:120]!r}") from exc
        return unwrap_response(method, obj, request_id, status)

    async def aclose(self) -> None:
        self._closed = True
        await self.http.aclose()
        await self._broadcast.aclose()
