"""A token's EIP-712 domain, read from the chain: what paywire needs to sign or price a token known only by its
address (MPP ``evm/charge``, ``paywire pay --asset 0x…``, a seller's ``$`` price in a token no registry knows).

ERC-5267 ``eip712Domain()`` first; a token without it answers ``name()`` and ``version()`` (the way USDC did
before ERC-5267). ``decimals()`` and ``symbol()`` come along for pricing.

    asset = await read_asset(chain, "0xToken")                 # Asset(network, address, name, version, decimals)
    assets = chain_assets("http://127.0.0.1:8545")            # an AssetRegistry that reads unknown tokens
"""

from __future__ import annotations

import asyncio
import concurrent.futures
from collections.abc import Coroutine, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

from eth_abi.abi import decode as abi_decode
from eth_abi.exceptions import DecodingError

from paywire.errors import ChainError, ChainRevert, ConfigError
from paywire.evm.assets import KNOWN_ASSETS, Asset, AssetRegistry
from paywire.evm.token import DECIMALS, NAME, VERSION, selector

if TYPE_CHECKING:
    from paywire.chain.base import Chain

EIP712_DOMAIN = selector("eip712Domain()")
SYMBOL = selector("symbol()")
ERC5267_TYPES = ["bytes1", "string", "string", "uint256", "address", "bytes32", "uint256[]"]
HAS_NAME, HAS_VERSION, HAS_CHAIN_ID, HAS_CONTRACT = 0x01, 0x02, 0x04, 0x08

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class TokenDomain:
    """A token's EIP-712 domain as the token states it; ``source`` says how it was read."""

    name: str
    version: str
    chain_id: int | None
    verifying_contract: str | None
    source: str  # "eip5267" or "name/version"


async def _call(chain: Chain, address: str, data: bytes) -> bytes | None:
    """The call's return data, or None when the token reverts or has no such function (empty answer)."""
    try:
        out = await chain.call(address, data)
    except ChainRevert:
        return None
    return out or None


def _string(raw: bytes | None) -> str | None:
    if raw is None:
        return None
    try:
        return str(abi_decode(["string"], raw)[0])
    except (DecodingError, OverflowError, ValueError):
        return None


async def _eip5267(chain: Chain, address: str) -> TokenDomain | None:
    raw = await _call(chain, address, EIP712_DOMAIN)
    if raw is None:
        return None
    try:
        fields, name, version, chain_id, contract, _salt, _ext = abi_decode(ERC5267_TYPES, raw)
    except (DecodingError, OverflowError, ValueError):
        return None
    bits = fields[0] if fields else 0
    if not bits & HAS_NAME or not bits & HAS_VERSION:
        return None  # a domain without name or version is not an EIP-3009 token's
    return TokenDomain(str(name), str(version), int(chain_id) if bits & HAS_CHAIN_ID else None,
                       str(contract) if bits & HAS_CONTRACT else None, "eip5267")


async def read_token_domain(chain: Chain, address: str) -> TokenDomain:
    """The EIP-712 domain of the token at ``address``: ERC-5267 ``eip712Domain()``, else ``name()`` and
    ``version()``. ``ConfigError`` (naming the token) when it answers neither."""
    domain = await _eip5267(chain, address)
    if domain is not None:
        return domain
    name = _string(await _call(chain, address, NAME))
    version = _string(await _call(chain, address, VERSION))
    if name is None or version is None:
        missing = " and ".join(f for f, v in (("name()", name), ("version()", version)) if v is None)
        raise ConfigError(f"token {address} states no EIP-712 domain: it answers neither eip712Domain() (ERC-5267) "
                          f"nor {missing}, so its EIP-712 name and version cannot be read from the chain")
    return TokenDomain(name, version, None, None, "name/version")


async def read_asset(chain: Chain, address: str, *, network: str | None = None) -> Asset:
    """The token at ``address`` as an :class:`Asset` (EIP-712 domain, decimals, symbol), read from ``chain``.
    ``network`` defaults to ``eip155:<the node's chain id>``; a given one must be the node's."""
    chain_id = await chain.chain_id()
    net = network or f"eip155:{chain_id}"
    if net != f"eip155:{chain_id}":
        raise ConfigError(f"token {address}: the node serves eip155:{chain_id}, not {net}")
    domain = await read_token_domain(chain, address)
    if domain.chain_id is not None and domain.chain_id != chain_id:
        raise ConfigError(f"token {address} states chain id {domain.chain_id} in its EIP-712 domain, "
                          f"but the node serves chain {chain_id}")
    raw = await _call(chain, address, DECIMALS)
    try:
        decimals = int(abi_decode(["uint8"], raw)[0]) if raw else 6
    except (DecodingError, OverflowError, ValueError):
        decimals = 6
    symbol = _string(await _call(chain, address, SYMBOL)) or ""
    return Asset(net, address, domain.name, domain.version, decimals, symbol)


async def read_asset_at(rpc_url: str, address: str, *, network: str | None = None) -> Asset:
    """:func:`read_asset` through a node given by URL (opened and closed here)."""
    from paywire.chain.rpc import HttpTransport, RpcChain

    chain = RpcChain(HttpTransport(rpc_url))
    try:
        return await read_asset(chain, address, network=network)
    finally:
        await chain.aclose()


def run_sync(coro: Coroutine[Any, Any, T]) -> T:
    """Run ``coro`` to completion from sync code, also when an event loop runs in this thread (then on a
    short-lived thread of its own: for one-time reads at startup, not for hot paths)."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coro)
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, coro).result()


class ChainTokenLookup:
    """``(network, address) → Asset | None`` for :class:`AssetRegistry` ``lookup``: reads a token no registry
    knows from the network's node (sync; a seller resolves its offers once, at startup)."""

    def __init__(self, rpc: str | Mapping[str, str]) -> None:
        self._any = rpc if isinstance(rpc, str) else None
        self._by_network = dict(rpc) if isinstance(rpc, Mapping) else {}
        self._any_network: str | None = None

    def _url(self, network: str) -> str | None:
        url = self._by_network.get(network)
        if url is not None or self._any is None or not network.startswith("eip155:"):
            return url
        if self._any_network is None:
            self._any_network = run_sync(_network_of(self._any))
        return self._any if self._any_network == network else None

    def __call__(self, network: str, address: str) -> Asset | None:
        try:
            url = self._url(network)
            if url is None:
                return None
            return run_sync(read_asset_at(url, address, network=network))
        except (ChainError, OSError) as exc:
            raise ConfigError(f"cannot read token {address} on {network} from its node: {exc}") from None


async def _network_of(rpc_url: str) -> str:
    from paywire.chain.rpc import HttpTransport, RpcChain

    chain = RpcChain(HttpTransport(rpc_url))
    try:
        return f"eip155:{await chain.chain_id()}"
    finally:
        await chain.aclose()


def chain_assets(rpc: str | Mapping[str, str], *assets: Asset) -> AssetRegistry:
    """An :class:`AssetRegistry` of the known USDC deployments and ``assets`` that reads any other token a money
    price names by address from the node (``rpc``: one URL, used for the network its chain id names, or
    ``{network: url}``): ``Offer("$0.01", asset="0xToken", network="eip155:31337")`` then needs no name or
    version."""
    return AssetRegistry((*KNOWN_ASSETS, *assets), lookup=ChainTokenLookup(rpc))


__all__ = ["ChainTokenLookup", "TokenDomain", "chain_assets", "read_asset", "read_asset_at", "read_token_domain",
           "run_sync"]
