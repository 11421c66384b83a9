"""Facilitator configuration from a TOML file, the environment and command-line flags (in rising priority).

TOML (all keys optional except at least one network, unless ``devnet = true``)::

    store = "postgresql://paywire@db/paywire"   # default: $PAYWIRE_STORE or sqlite:///paywire.db
    bearer_token = "…"                          # or bearer_token_env = "FAC_TOKEN"
    host = "0.0.0.0"
    port = 4020
    confirmations = 1                           # default for every network
    receipt_timeout = 60                        # seconds a /settle waits for its transaction
    reconcile_interval = 5                      # seconds between reconciler passes
    stuck_after = 60                            # seconds before a pending transaction is fee-bumped
    rpc_timeout = 10                            # seconds before an RPC call counts as unanswered
    instance_id = "fac-a"                       # default: random per process

    [networks."eip155:8453"]
    rpc = "https://base.example/rpc"            # or "embedded" / "anvil" (local chains)
    keys = ["0x…", "0x…"]                       # or keys_env = "BASE_KEYS" (comma-separated)
    confirmations = 2
    max_fee_gwei = 50                           # cap on maxFeePerGas
    gas_limit = 120000                          # fixed gas per settlement (default: estimate)
    rpc_connections = 32                        # concurrent node requests (default: 4 local, 32 remote)

Environment: ``PAYWIRE_FACILITATOR_CONFIG`` (the TOML path), ``PAYWIRE_STORE``,
``PAYWIRE_FACILITATOR_TOKEN``, ``PAYWIRE_FACILITATOR_NETWORKS`` (``caip2=rpc,caip2=rpc``),
``PAYWIRE_FACILITATOR_KEYS`` (comma-separated keys for networks that name none; ``PAYWIRE_FACILITATOR_KEY``
is read too),
``PAYWIRE_FACILITATOR_CONFIRMATIONS``, ``PAYWIRE_FACILITATOR_HOST``, ``PAYWIRE_FACILITATOR_PORT``,
``PAYWIRE_FACILITATOR_INSTANCE``.
"""

from __future__ import annotations

import dataclasses
import os
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from paywire.errors import ConfigError

__all__ = ["FacilitatorConfig", "NetworkConfig", "load_config", "parse_network_spec"]

LOCAL_CHAINS = ("embedded", "anvil")


@dataclass(slots=True)
class NetworkConfig:
    """One CAIP-2 network: where its RPC is and which keys pay gas there."""

    network: str
    rpc: str
    keys: list[str] = field(default_factory=list)
    confirmations: int | None = None
    max_fee_gwei: float | None = None
    gas_limit: int | None = None
    rpc_connections: int | None = None

    def validate(self) -> None:
        if not self.network.startswith("eip155:") or not self.network[7:].isdigit():
            raise ConfigError(f"network {self.network!r}: only eip155:<chain id> networks are supported")
        if self.rpc not in LOCAL_CHAINS and not self.rpc.startswith(("http://", "https://")):
            raise ConfigError(f"network {self.network}: rpc must be an http(s) URL, 'embedded' or 'anvil'")
        if self.confirmations is not None and self.confirmations < 1:
            raise ConfigError(f"network {self.network}: confirmations must be at least 1")

    @property
    def chain_id(self) -> int:
        return int(self.network.split(":", 1)[1])


@dataclass(slots=True)
class FacilitatorConfig:
    """Everything ``paywire facilitator`` needs (see the module docs for the file format)."""

    networks: list[NetworkConfig] = field(default_factory=list)
    store: str | None = None
    bearer_token: str | None = None
    host: str = "127.0.0.1"
    port: int = 4020
    confirmations: int = 1
    receipt_timeout: float = 60.0
    reconcile_interval: float = 5.0
    stuck_after: float = 60.0
    rpc_timeout: float = 10.0
    instance_id: str | None = None
    devnet: bool = False

    def validate(self) -> None:
        if not self.networks and not self.devnet:
            raise ConfigError("no networks configured: give --network CAIP2=RPC (or a config file), or --devnet")
        seen: set[str] = set()
        for n in self.networks:
            n.validate()
            if n.network in seen:
                raise ConfigError(f"network {n.network} is configured twice")
            seen.add(n.network)
            if not n.keys and n.rpc not in LOCAL_CHAINS:
                raise ConfigError(f"network {n.network}: no signer keys (keys = [...] or PAYWIRE_FACILITATOR_KEYS)")
        if not 0 <= self.port < 65536:
            raise ConfigError("port must be in 0..65535")
        if self.receipt_timeout <= 0 or self.reconcile_interval <= 0:
            raise ConfigError("receipt_timeout and reconcile_interval must be positive")

    def confirmations_for(self, net: NetworkConfig) -> int:
        return net.confirmations if net.confirmations is not None else self.confirmations


def parse_network_spec(spec: str) -> tuple[str, str]:
    """``"eip155:8453=https://…"`` → ``("eip155:8453", "https://…")``."""
    name, sep, rpc = spec.partition("=")
    if not sep or not name.strip() or not rpc.strip():
        raise ConfigError(f"network spec {spec!r}: expected CAIP2=RPC (e.g. eip155:31337=http://127.0.0.1:8545)")
    return name.strip(), rpc.strip()


def _split(value: str) -> list[str]:
    return [v.strip() for v in value.split(",") if v.strip()]


def _keys(table: Mapping[str, Any], env: Mapping[str, str], where: str) -> list[str]:
    keys = table.get("keys", [])
    if isinstance(keys, str):
        keys = _split(keys)
    if not isinstance(keys, list) or not all(isinstance(k, str) for k in keys):
        raise ConfigError(f"{where}: keys must be a list of hex private keys")
    name = table.get("keys_env")
    if isinstance(name, str):
        if name not in env:
            raise ConfigError(f"{where}: keys_env names ${name}, which is not set")
        keys = [*keys, *_split(env[name])]
    return list(keys)


def _from_toml(data: Mapping[str, Any], env: Mapping[str, str]) -> FacilitatorConfig:
    cfg = FacilitatorConfig()
    scalars = {f.name for f in dataclasses.fields(FacilitatorConfig)} - {"networks"}
    unknown = set(data) - scalars - {"networks", "bearer_token_env"}
    if unknown:
        raise ConfigError(f"unknown config keys: {', '.join(sorted(unknown))}")
    for key in scalars & set(data):
        setattr(cfg, key, data[key])
    token_env = data.get("bearer_token_env")
    if isinstance(token_env, str) and env.get(token_env):
        cfg.bearer_token = env[token_env]
    nets = data.get("networks", {})
    if not isinstance(nets, Mapping):
        raise ConfigError("[networks] must be a table of CAIP-2 network → settings")
    for name, table in nets.items():
        if isinstance(table, str):
            table = {"rpc": table}
        if not isinstance(table, Mapping) or "rpc" not in table:
            raise ConfigError(f"networks.{name!r}: needs rpc = URL | 'embedded' | 'anvil'")
        extra = set(table) - {"rpc", "keys", "keys_env", "confirmations", "max_fee_gwei", "gas_limit",
                              "rpc_connections"}
        if extra:
            raise ConfigError(f"networks.{name!r}: unknown keys {', '.join(sorted(extra))}")
        cfg.networks.append(NetworkConfig(
            network=str(name), rpc=str(table["rpc"]), keys=_keys(table, env, f"networks.{name!r}"),
            confirmations=table.get("confirmations"), max_fee_gwei=table.get("max_fee_gwei"),
            gas_limit=table.get("gas_limit"), rpc_connections=table.get("rpc_connections"),
        ))
    return cfg


def load_config(
    path: str | Path | None = None,
    *,
    env: Mapping[str, str] | None = None,
    networks: Sequence[str] = (),
    keys: Sequence[str] = (),
    overrides: Mapping[str, Any] | None = None,
) -> FacilitatorConfig:
    """TOML file (``path`` or ``$PAYWIRE_FACILITATOR_CONFIG``) < environment < flags (``networks`` as
    ``CAIP2=RPC`` specs, ``keys``, and ``overrides`` of scalar fields; ``None`` values are ignored)."""
    env = os.environ if env is None else env
    path = path or env.get("PAYWIRE_FACILITATOR_CONFIG") or None
    if path is not None:
        try:
            data = tomllib.loads(Path(path).read_text())
        except OSError as exc:
            raise ConfigError(f"cannot read config file {path}: {exc}") from exc
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"config file {path} is not valid TOML: {exc}") from exc
        cfg = _from_toml(data, env)
    else:
        cfg = FacilitatorConfig()

    env_map = {
        "store": env.get("PAYWIRE_STORE"), "bearer_token": env.get("PAYWIRE_FACILITATOR_TOKEN"),
        "host": env.get("PAYWIRE_FACILITATOR_HOST"), "instance_id": env.get("PAYWIRE_FACILITATOR_INSTANCE"),
    }
    for k, v in env_map.items():
        if v:
            setattr(cfg, k, v)
    for k, conv in (("port", int), ("confirmations", int)):
        raw = env.get(f"PAYWIRE_FACILITATOR_{k.upper()}")
        if raw:
            try:
                setattr(cfg, k, conv(raw))
            except ValueError as exc:
                raise ConfigError(f"PAYWIRE_FACILITATOR_{k.upper()}={raw!r} is not a number") from exc
    specs = [*_split(env.get("PAYWIRE_FACILITATOR_NETWORKS", "")), *networks]
    by_name = {n.network: n for n in cfg.networks}
    for spec in specs:
        name, rpc = parse_network_spec(spec)
        if name in by_name:
            by_name[name].rpc = rpc
        else:
            by_name[name] = NetworkConfig(name, rpc)
            cfg.networks.append(by_name[name])
    default_keys = list(keys) or _split(env.get("PAYWIRE_FACILITATOR_KEYS") or env.get("PAYWIRE_FACILITATOR_KEY", ""))
    for n in cfg.networks:
        if keys:
            n.keys = list(keys)
        elif not n.keys:
            n.keys = list(default_keys)
    for k, v in (overrides or {}).items():
        if v is not None:
            if not hasattr(cfg, k):
                raise ConfigError(f"unknown setting {k!r}")
            setattr(cfg, k, v)
    return cfg
