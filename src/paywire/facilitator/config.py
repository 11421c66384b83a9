"""Facilitator configuration from a TOML file, the environment and command-line flags (in rising priority).

TOML (all keys optional except at least one network, unless ``devnet = true``)::

    store = "postgresql://paywire@db/paywire"   # default: $PAYWIRE_STORE or sqlite:///paywire.db
    bearer_token = "…"                          # or bearer_token_env = "FAC_TOKEN"
    host = "0.0.0.0"
    port = 4020
    confirmations = 1                           # default for every network
    receipt_timeout = 60                        # seconds a settlement waits for its receipt before it counts as pending
    reconcile_interval = 5                      # seconds between reconciler passes
    stuck_after = 60                            # seconds before a pending transaction is fee-bumped
    rpc_timeout = 10                            # seconds before an RPC call counts as unanswered
    expiry_margin = 3                           # no transaction is broadcast later than this before validBefore
    instance_id = "fac-a"                       # default: random per process

    [networks."eip155:8453"]
    rpc = "https://base.example/rpc"            # or "embedded" / "anvil" (local chains)
    keys = ["0x…", "0x…"]                       # or keys_env = "BASE_KEYS" (comma-separated)
    fleet_key = "0x…"                           # or fleet_key_env: the key /supported names (below)
    confirmations = 2
    max_fee_gwei = 50                           # cap on maxFeePerGas
    gas_limit = 120000                          # fixed gas per settlement (default: estimate)
    rpc_connections = 32                        # concurrent node requests (default: 4 local, 32 remote)

Environment: ``PAYWIRE_FACILITATOR_CONFIG`` (the TOML path), ``PAYWIRE_STORE``,
``PAYWIRE_FACILITATOR_TOKEN``, ``PAYWIRE_FACILITATOR_NETWORKS`` (``caip2=rpc,caip2=rpc``),
``PAYWIRE_FACILITATOR_KEYS`` (comma-separated keys for networks that name none; ``PAYWIRE_FACILITATOR_KEY``
is read too), ``PAYWIRE_FACILITATOR_FLEET_KEY`` (the fleet key of networks that name none), ``PAYWIRE_FACILITATOR_INSTANCE``, and ``PAYWIRE_FACILITATOR_<OPTION>`` for the other options
(``HOST``, ``PORT``, ``CONFIRMATIONS``, ``RECEIPT_TIMEOUT``, ``EXPIRY_MARGIN`` …). The file may also hold the options as a
``[facilitator]`` table (next to ``[seller]`` and ``[buyer]``).

Loaded by the shared loader (:mod:`paywire.settings`): every value is converted and checked the same way
(durations take ``30s``/``5m``), errors name the option, unknown keys are refused with the closest name.

``fleet_key``: the key clients bind to (``upto``'s ``facilitatorAddress``, ``batch-settlement``'s
``receiverAuthorizer``) and so the only one that may send those settlements. Give every instance of a fleet the
same one (next to its own ``keys``, which stay per instance): then every instance's ``/supported`` names it and
any instance settles what another verified. Default: the network's first key.

``expiry_margin``: seconds an authorization must have left before ``validBefore`` for its settlement
transaction to be broadcast (or re-broadcast, re-signed, fee-bumped); a later one is not sent and the settlement
ends failed with the expired reason (``paywire.settlement.engine``). Raise it on chains with slow blocks; at
most ``MAX_EXPIRY_MARGIN`` (a margin as long as the authorizations' lifetime would settle nothing).
"""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from paywire.errors import ConfigError
from paywire.families import default_families
from paywire.settings import (
    Settings,
    at_least,
    between,
    convert,
    gather,
    option,
    positive,
    read_toml,
    role_table,
    unknown_names,
)

__all__ = ["MAX_EXPIRY_MARGIN", "FacilitatorConfig", "NetworkConfig", "is_loopback", "load_config",
           "parse_network_spec"]

EXPIRY_MARGIN = 3.0
"""Default ``expiry_margin`` (the engine's ``paywire.settlement.engine.EXPIRY_MARGIN``; a test keeps them equal)."""
MAX_EXPIRY_MARGIN = 3600.0
"""Largest ``expiry_margin``: authorizations rarely live longer, and a margin that long would settle nothing."""


def _expiry_margin(value: Any) -> str | None:
    if 0 <= value <= MAX_EXPIRY_MARGIN:
        return None
    return (f"must be between 0 and {MAX_EXPIRY_MARGIN:g} seconds (how long before an authorization's "
            "validBefore the last broadcast may go out)")


@dataclass(slots=True)
class NetworkConfig:
    """One CAIP-2 network: where its RPC is and which keys pay gas there. Its family (``paywire.families``, by
    the CAIP-2 namespace) checks it and opens it; ``max_fee_gwei``, ``gas_limit`` and ``rpc_connections`` are
    read by the families that have them (EVM)."""

    network: str
    rpc: str
    keys: list[str] = field(default_factory=list)
    confirmations: int | None = None
    max_fee_gwei: float | None = None
    gas_limit: int | None = None
    rpc_connections: int | None = None
    fleet_key: str | None = None
    """The key ``/supported`` names (upto, batch-settlement), the same on every instance of a fleet."""

    def validate(self) -> None:
        """Its family checks the name and settings (a network of no registered family is refused)."""
        default_families.for_network(self.network).validate(self)
        if self.confirmations is not None and self.confirmations < 1:
            raise ConfigError(f"network {self.network}: confirmations must be at least 1")


@dataclass(slots=True)
class FacilitatorConfig(Settings):
    """Everything ``paywire facilitator`` needs (see the module docs for the file format)."""

    ROLE: ClassVar[str] = "facilitator"

    networks: list[NetworkConfig] = option(factory=list, env=False, toml=False)
    store: str | None = option(None, env="PAYWIRE_STORE")
    bearer_token: str | None = option(None, env="PAYWIRE_FACILITATOR_TOKEN", secret=True)
    host: str = "127.0.0.1"
    port: int = option(4020, check=between(0, 65535))
    confirmations: int = option(1, check=at_least(1))
    receipt_timeout: float = option(60.0, check=positive, duration=True)
    reconcile_interval: float = option(5.0, check=positive, duration=True)
    stuck_after: float = option(60.0, check=positive, duration=True)
    rpc_timeout: float = option(10.0, check=positive, duration=True)
    expiry_margin: float = option(EXPIRY_MARGIN, check=_expiry_margin, duration=True)
    """No settlement transaction is broadcast later than this many seconds before its ``validBefore``."""
    instance_id: str | None = option(None, env="PAYWIRE_FACILITATOR_INSTANCE")
    audit: bool = False
    """Queue an audit event with every settlement change, in its transaction (docs/audit.md)."""
    audit_verdict_interval: float = option(60.0, duration=True)
    """With ``audit``: verify verdicts go into the log as one tally per this many seconds (bounded, whatever the
    request rate; docs/audit.md)."""
    devnet: bool = False
    allow_unauthenticated_public: bool = False
    risk_rules: str | None = None
    """Turn on the risk ``settle`` checkpoint with this rule file (``"default"``: the shipped rules)."""
    risk_redis: str | None = None
    """Risk counters in this Redis (a fleet of facilitators); default: in this process."""
    """Serve a non-loopback ``host`` without ``bearer_token``: anyone who reaches the port may then settle,
    read settlement records (payer, payee, amount) and metrics. Off by default; the service refuses to start."""

    def validate(self) -> None:
        """Check every option (also after changes) and the networks; ``ConfigError`` says what to fix."""
        self.check()
        if not self.bearer_token and not is_loopback(self.host) and not self.allow_unauthenticated_public:
            raise ConfigError(
                f"refusing to serve {self.host!r} without authentication: anyone who reaches it could call /settle "
                "and read /settlements and /metrics. Set a token (--token, $PAYWIRE_FACILITATOR_TOKEN or "
                "bearer_token), bind 127.0.0.1, or accept the risk with --allow-unauthenticated-public "
                "($PAYWIRE_FACILITATOR_ALLOW_UNAUTHENTICATED_PUBLIC=1, allow_unauthenticated_public = true)")
        if not self.networks and not self.devnet:
            raise ConfigError("no networks configured: give --network CAIP2=RPC (or a config file), or --devnet")
        seen: set[str] = set()
        for n in self.networks:
            n.validate()
            if n.network in seen:
                raise ConfigError(f"network {n.network} is configured twice")
            seen.add(n.network)
            if not n.keys and default_families.for_network(n.network).needs_keys(n):
                raise ConfigError(f"network {n.network}: no signer keys (keys = [...] or PAYWIRE_FACILITATOR_KEYS)")

    @classmethod
    def load(cls, path: str | Path | None = None, *, env: Mapping[str, str] | None = None,
             **code: Any) -> FacilitatorConfig:
        """:func:`load_config` (the file, the environment, then ``code``; None values in ``code`` are unset)."""
        return load_config(path, env=env, overrides=code)

    def confirmations_for(self, net: NetworkConfig) -> int:
        return net.confirmations if net.confirmations is not None else self.confirmations


def is_loopback(host: str) -> bool:
    """Whether binding ``host`` serves this machine only (``localhost``, 127.0.0.0/8, ``::1``); an unspecified
    address (``0.0.0.0``, ``::``) or any other name counts as public."""
    name = host.strip().strip("[]").lower()
    if name == "localhost":
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


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


_NETWORK_OPTIONS: dict[str, tuple[Any, Any]] = {
    "confirmations": (int | None, at_least(1)), "max_fee_gwei": (float | None, positive),
    "gas_limit": (int | None, positive), "rpc_connections": (int | None, positive),
}


def _networks(nets: Any, env: Mapping[str, str], where: str) -> list[NetworkConfig]:
    if not isinstance(nets, Mapping):
        raise ConfigError("[networks] must be a table of CAIP-2 network → settings")
    out: list[NetworkConfig] = []
    for name, table in nets.items():
        if isinstance(table, str):
            table = {"rpc": table}
        if not isinstance(table, Mapping) or "rpc" not in table:
            raise ConfigError(f"networks.{name!r}: needs rpc = URL | 'embedded' | 'anvil'")
        known = ["rpc", "keys", "keys_env", "fleet_key", "fleet_key_env", *_NETWORK_OPTIONS]
        extra = set(table) - set(known)
        if extra:
            raise ConfigError(f"networks.{name!r}: unknown keys {unknown_names(extra, known)}")
        values = {k: convert("facilitator", f'networks."{name}".{k}', tp, table.get(k), check=check, source=where)
                  for k, (tp, check) in _NETWORK_OPTIONS.items()}
        fleet = _keys({"keys": table.get("fleet_key", []), "keys_env": table.get("fleet_key_env")}, env,
                      f"networks.{name!r} fleet_key")
        if len(fleet) > 1:
            raise ConfigError(f"networks.{name!r}: fleet_key is one key")
        out.append(NetworkConfig(network=str(name), rpc=str(table["rpc"]),
                                 keys=_keys(table, env, f"networks.{name!r}"), fleet_key=fleet[0] if fleet else None,
                                 **values))
    return out


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
    table: dict[str, Any] = {}
    where = ""
    nets: list[NetworkConfig] = []
    if path is not None:
        where = f"config file {path}"
        table = role_table(read_toml(path), "facilitator", where, whole_file=True)
        token_env = table.pop("bearer_token_env", None)
        if isinstance(token_env, str) and env.get(token_env):
            table["bearer_token"] = env[token_env]
        nets = _networks(table.pop("networks", {}), env, where)
    code = {k: v for k, v in (overrides or {}).items() if v is not None}
    values = gather(FacilitatorConfig, code=code, toml=table, toml_where=where, env=env,
                    env_ignore=("KEYS", "KEY", "NETWORKS", "FLEET_KEY"))
    cfg = FacilitatorConfig(**values)
    if "networks" not in values:
        cfg.networks = nets
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
        if n.fleet_key is None and env.get("PAYWIRE_FACILITATOR_FLEET_KEY"):
            n.fleet_key = env["PAYWIRE_FACILITATOR_FLEET_KEY"].strip()
    return cfg
