"""The ``paywire facilitator`` service: chains and keys from a ``FacilitatorConfig``, a durable settlement
store, the ``Facilitator``, the background reconciler and the HTTP app — started and stopped together."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import sys
import tempfile
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from paywire.chain import Anvil, EmbeddedChain, HttpTransport, JsonRpcServer, RpcChain, Transport
from paywire.chain.devkeys import dev_keys
from paywire.chain.rail import EvmNetwork
from paywire.chain.tx import TxSender
from paywire.errors import ConfigError
from paywire.facilitator.app import create_app
from paywire.facilitator.config import FacilitatorConfig, NetworkConfig
from paywire.facilitator.core import Facilitator
from paywire.facilitator.keepalive import KeepAliveTransport
from paywire.facilitator.metrics import Metrics, facilitator_metrics
from paywire.facilitator.reconciler import Reconciler
from paywire.schemes.registry import FacilitatorScheme, default_registry
from paywire.store import store_url
from paywire.store.settlements import SettlementStore

__all__ = ["FacilitatorService"]

Closer = Callable[[], Awaitable[None]]


async def _open_chain(n: NetworkConfig, rpc_timeout: float) -> tuple[RpcChain, str, list[Closer]]:
    """The chain for one network, its JSON-RPC URL, and what to run on shutdown."""
    if n.rpc == "embedded":
        node = EmbeddedChain(chain_id=n.chain_id)
        server = JsonRpcServer(node)
        url = server.start()

        async def stop_server() -> None:
            server.stop()

        chain = RpcChain(node)
        return chain, url, [stop_server, chain.aclose]
    if n.rpc == "anvil":
        anvil = Anvil(chain_id=n.chain_id)
        await anvil.start()
        chain = RpcChain(_transport(anvil.url, rpc_timeout, n.rpc_connections))
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
        return KeepAliveTransport(url, timeout=timeout, max_connections=connections)
    return HttpTransport(url, timeout=timeout)


def _evm_network(n: NetworkConfig, chain: RpcChain, config: FacilitatorConfig) -> EvmNetwork:
    """The rail configuration of one network: its chain and the keys that pay gas."""
    keys: list[bytes | str] = list(n.keys) or ([dev_keys(2)[1]] if n.rpc in ("embedded", "anvil") else [])
    cap = int(n.max_fee_gwei * 10**9) if n.max_fee_gwei is not None else None
    senders = [TxSender(chain, k, max_fee_cap=cap) for k in keys]
    return EvmNetwork(n.network, chain, senders, confirmations=config.confirmations_for(n), gas_limit=n.gas_limit)


def build_schemes(
    config: FacilitatorConfig, networks: Sequence[EvmNetwork], store: SettlementStore
) -> list[FacilitatorScheme]:
    """One facilitator side per registered (scheme, network pattern) that matches a configured network, built by
    the scheme's own factory (``SchemeRegistry.register_facilitator``) over those networks' rails."""
    out = default_registry.facilitators_for(networks, store=store, receipt_timeout=config.receipt_timeout,
                                            stuck_after=config.stuck_after)
    if not out:
        raise ConfigError("no registered scheme settles on the configured networks "
                          f"({', '.join(n.network for n in networks)})")
    return out


@dataclass(slots=True)
class FacilitatorService:
    """A running facilitator. ``await FacilitatorService.start(config)`` … ``await service.aclose()``."""

    config: FacilitatorConfig
    facilitator: Facilitator
    store: SettlementStore
    metrics: Metrics
    reconciler: Reconciler
    rpc_urls: dict[str, str]
    devnet: Any = None  # paywire.devnet.Devnet when started with devnet=True
    _closers: list[Closer] = field(default_factory=list, repr=False)

    @classmethod
    async def start(cls, config: FacilitatorConfig) -> FacilitatorService:
        if config.devnet and not config.networks:
            config.networks = [NetworkConfig("eip155:31337", "embedded")]
        config.validate()
        closers: list[Closer] = []
        try:
            url = config.store
            if url is None and config.devnet:  # a fresh chain must not inherit another chain's records
                url = f"sqlite:///{Path(tempfile.mkdtemp(prefix='paywire-devnet-')) / 'facilitator.db'}"
            store = await SettlementStore.open(store_url(url), instance_id=config.instance_id)
            closers.append(store.aclose)
            nets: list[EvmNetwork] = []
            rpc_urls: dict[str, str] = {}
            devnet = None
            for n in config.networks:
                chain, rpc_url, stop = await _open_chain(n, config.rpc_timeout)
                closers[:0] = stop
                actual = await chain.chain_id()
                if actual != n.chain_id:
                    raise ConfigError(f"network {n.network}: the RPC at {rpc_url} is chain {actual}")
                rpc_urls[n.network] = rpc_url
                if config.devnet and devnet is None:
                    from paywire.devnet import setup_devnet

                    devnet = await setup_devnet(chain, rpc_url=rpc_url)
                nets.append(_evm_network(n, chain, config))
            facilitator = Facilitator(build_schemes(config, nets, store), store=store)
            metrics = facilitator_metrics()
            reconciler = Reconciler(facilitator, interval=config.reconcile_interval, metrics=metrics)
            return cls(config, facilitator, store, metrics, reconciler, rpc_urls, devnet, closers)
        except BaseException:
            for close in closers:
                with contextlib.suppress(Exception):
                    await close()
            raise

    def app(self) -> Any:
        """The ASGI app; its lifespan starts the reconciler (first pass at once, then every interval)."""

        async def startup() -> None:
            self.reconciler.start()

        return create_app(self.facilitator, bearer_token=self.config.bearer_token, metrics=self.metrics,
                          on_startup=startup, on_shutdown=self.reconciler.stop)

    async def serve(self, *, on_ready: Callable[[str], None] | None = None) -> None:
        """Serve over HTTP with uvicorn until interrupted (``port = 0`` picks a free port)."""
        import uvicorn

        host, port = self.config.host, self.config.port
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        bound = sock.getsockname()[1]
        url = f"http://{f'[{host}]' if ':' in host else host}:{bound}"
        server = uvicorn.Server(uvicorn.Config(self.app(), lifespan="on", log_level="warning", access_log=False))

        async def announce() -> None:
            while not server.started:
                if server.should_exit:
                    return
                await asyncio.sleep(0.01)
            if on_ready is not None:
                on_ready(url)

        watcher = asyncio.create_task(announce())
        try:
            await server.serve(sockets=[sock])
        finally:
            watcher.cancel()
            sock.close()

    async def aclose(self) -> None:
        await self.reconciler.stop()
        for close in self._closers:
            try:
                await close()
            except Exception as exc:  # keep closing the rest
                print(f"paywire facilitator: error while closing: {exc}", file=sys.stderr)
