"""The ``paywire facilitator`` service: networks from a ``FacilitatorConfig`` (each opened by its family,
``paywire.families``), a durable settlement store, the ``Facilitator``, the background reconciler and the HTTP
app — started and stopped together."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import sys
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from paywire.errors import ConfigError
from paywire.facilitator.app import create_app
from paywire.facilitator.config import FacilitatorConfig, NetworkConfig
from paywire.facilitator.core import Facilitator
from paywire.facilitator.metrics import Metrics, facilitator_metrics
from paywire.facilitator.reconciler import Reconciler
from paywire.families import Closer, NetworkRail, default_families
from paywire.schemes.registry import FacilitatorScheme, default_registry
from paywire.store import store_url
from paywire.store.settlements import SettlementStore

__all__ = ["FacilitatorService"]


def build_schemes(
    config: FacilitatorConfig, networks: Sequence[NetworkRail], store: SettlementStore
) -> list[FacilitatorScheme]:
    """One facilitator side per registered (scheme, network pattern) that matches a configured network, built by
    the scheme's own factory (``SchemeRegistry.register_facilitator``) over those networks' rails (each opened by
    its family, ``paywire.families``)."""
    out = default_registry.facilitators_for(networks, store=store, receipt_timeout=config.receipt_timeout,
                                            stuck_after=config.stuck_after, expiry_margin=config.expiry_margin)
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
            if config.audit:  # every settlement change queues its audit event (docs/audit.md)
                from paywire.audit.wiring import enable_audit

                await enable_audit(store, "facilitator", store.instance_id)
            rails: list[NetworkRail] = []
            rpc_urls: dict[str, str] = {}
            devnet = None
            for n in config.networks:  # each network's family opens it and builds its rail
                opened = await default_families.for_network(n.network).open(n, config)
                closers[:0] = opened.closers
                rpc_urls[n.network] = opened.rpc_url
                if config.devnet and devnet is None and opened.devnet is not None:
                    devnet = await opened.devnet()
                rails.append(opened.rail)
            facilitator = Facilitator(build_schemes(config, rails, store), store=store, risk=_risk(config))
            if config.audit:  # the keys and kinds in force: a rotated key shows as a changed event between starts
                from paywire.audit.wiring import record_config

                await record_config(store.db, store.instance_id, "config.facilitator_started",
                                    {"supported": facilitator.supported().to_wire()})
                from paywire.audit.verdicts import VerdictTally

                facilitator.verdicts = VerdictTally(store.db, store.instance_id,
                                                    interval=config.audit_verdict_interval)
                closers.insert(0, facilitator.verdicts.flush)
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


def _risk(config: FacilitatorConfig) -> Any:
    """The ``settle`` risk checkpoint from ``risk_rules`` / ``risk_redis`` (None: off)."""
    if config.risk_rules is None and config.risk_redis is None:
        return None
    from paywire.risk.engine import RiskEngine
    from paywire.risk.redis_state import RedisState

    rules = None if config.risk_rules in (None, "default") else config.risk_rules
    return RiskEngine(rules, state=RedisState(config.risk_redis) if config.risk_redis else None)
