"""The EVM network family (CAIP-2 namespace ``eip155``) for the facilitator service.

For one configured ``eip155:<chain id>`` network: check its settings, open its chain (``rpc = "embedded"``: an
in-process chain served over JSON-RPC; ``"anvil"``: a started anvil; an ``http(s)://`` URL: that node), check the
node is the configured chain, and build its rail (``paywire.chain.rail.EvmNetwork``: the chain, the gas-paying
keys, confirmations, fee cap, gas limit). Registered into ``paywire.families.default_families`` by
:func:`register` (listed in ``BUILTIN_FAMILIES``). Chain modules load when a network is opened, not on import.
"""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from paywire.errors import ConfigError
from paywire.families import Closer, OpenNetwork

if TYPE_CHECKING:
    from paywire.chain.rail import EvmNetwork
    from paywire.chain.rpc import RpcChain, Transport
    from paywire.facilitator.config import FacilitatorConfig, NetworkConfig
    from paywire.families import FamilyRegistry

__all__ = ["LOCAL_CHAINS", "EvmFamily", "register"]

LOCAL_CHAINS = ("embedded", "anvil")
"""``rpc`` values that start a local chain (funded development keys; no configured keys needed)."""


class EvmFamily:
    """``eip155:<chain id>`` networks."""

    namespace = "eip155"
    shape = "eip155:<chain id>"

    def validate(self, net: NetworkConfig) -> None:
        if not net.network.startswith("eip155:") or not net.network[7:].isdigit():
            raise ConfigError(f"network {net.network!r}: only eip155:<chain id> networks are supported")
        if net.rpc not in LOCAL_CHAINS and not net.rpc.startswith(("http://", "https://")):
            raise ConfigError(f"network {net.network}: rpc must be an http(s) URL, 'embedded' or 'anvil'")

    def needs_keys(self, net: NetworkConfig) -> bool:
        return net.rpc not in LOCAL_CHAINS

    async def open(self, net: NetworkConfig, config: FacilitatorConfig) -> OpenNetwork:
        chain, url, closers = await _open_chain(net, config.rpc_timeout)
        try:
            actual = await chain.chain_id()
            if actual != chain_id(net):
                raise ConfigError(f"network {net.network}: the RPC at {url} is chain {actual}")
            rail = _evm_network(net, chain, config)
        except BaseException:
            for close in closers:
                with contextlib.suppress(Exception):
                    await close()
            raise

        async def devnet() -> object:
            from paywire.devnet import setup_devnet

            return await setup_devnet(chain, rpc_url=url)

        return OpenNetwork(rail, url, closers, devnet)


def register(registry: FamilyRegistry) -> None:
    registry.register(EvmFamily())


def chain_id(net: NetworkConfig) -> int:
    """The chain id of a validated ``eip155:<chain id>`` network."""
    return int(net.network.split(":", 1)[1])


async def _open_chain(n: NetworkConfig, rpc_timeout: float) -> tuple[RpcChain, str, list[Closer]]:
    """The chain for one network, its JSON-RPC URL, and what to run on shutdown."""
    from paywire.chain.rpc import RpcChain

    if n.rpc == "embedded":
        from paywire.chain.embedded import EmbeddedChain
        from paywire.chain.permit2 import permit2_code
        from paywire.chain.server import JsonRpcServer

        node = EmbeddedChain(chain_id=chain_id(n), code=permit2_code())
        server = JsonRpcServer(node)
        url = server.start()

        async def stop_server() -> None:
            server.stop()

        chain = RpcChain(node)
        return chain, url, [stop_server, chain.aclose]
    if n.rpc == "anvil":
        from paywire.chain.anvil import Anvil

        anvil = Anvil(chain_id=chain_id(n))
        await anvil.start()
        chain = RpcChain(_transport(anvil.url, rpc_timeout, n.rpc_connections))
        from paywire.chain.permit2 import install_permit2

        await install_permit2(chain)
        return chain, anvil.url, [chain.aclose, anvil.stop]
    chain = RpcChain(_transport(n.rpc, rpc_timeout, n.rpc_connections))
    return chain, n.rpc, [chain.aclose]


def _transport(url: str, timeout: float, connections: int | None) -> Transport:
    """Plain-HTTP nodes get the lean keep-alive transport; HTTPS goes through httpx.

    Connections: a node on this machine (anvil, a local geth) is fastest with few concurrent requests —
    they contend for its state lock — while a remote provider needs many to hide its latency."""
    if connections is None:
        host = urlsplit(url).hostname or ""
        connections = 4 if host in ("127.0.0.1", "localhost", "::1") else 32
    if url.startswith("http://"):
        from paywire.chain.keepalive import KeepAliveTransport

        return KeepAliveTransport(url, timeout=timeout, max_connections=connections)
    from paywire.chain.rpc import HttpTransport

    return HttpTransport(url, timeout=timeout)


def _evm_network(n: NetworkConfig, chain: RpcChain, config: FacilitatorConfig) -> EvmNetwork:
    """The rail configuration of one network: its chain and the keys that pay gas."""
    from paywire.chain.rail import EvmNetwork
    from paywire.chain.tx import TxSender

    keys: list[bytes | str] = list(n.keys)
    if not keys and n.rpc in LOCAL_CHAINS:
        from paywire.chain.devkeys import dev_keys

        keys = [dev_keys(2)[1]]
    cap = int(n.max_fee_gwei * 10**9) if n.max_fee_gwei is not None else None
    senders = [TxSender(chain, k, max_fee_cap=cap) for k in keys]
    named = None
    if n.fleet_key:  # one sender per key in a process: a fleet key that is also a gas key shares its nonce counter
        fleet = TxSender(chain, n.fleet_key, max_fee_cap=cap)
        named = next((s for s in senders if s.address == fleet.address), fleet)
    return EvmNetwork(n.network, chain, senders, confirmations=config.confirmations_for(n), gas_limit=n.gas_limit,
                      named_sender=named)
