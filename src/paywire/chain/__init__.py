"""paywire.chain: one async ``Chain`` API (``RpcChain``) over pluggable JSON-RPC transports.

Chain kinds — every one is a ``Transport`` under the same ``RpcChain``:

* ``"embedded"`` — ``EmbeddedChain``: in-process py-evm, wall-clock blocks, no external processes;
* ``"anvil"``    — ``Anvil``: foundry's anvil, installed on demand from npm;
* ``"http(s)://…"`` — ``HttpTransport`` to any node.

``chain = await connect("embedded")`` … ``await chain.aclose()``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from paywire._lazy import lazy_exports
from paywire.errors import ConfigError

if TYPE_CHECKING:
    from paywire.chain.anvil import Anvil, ensure_anvil
    from paywire.chain.base import Chain, FeeData, Log, Receipt
    from paywire.chain.devkeys import DEFAULT_MNEMONIC, dev_keys
    from paywire.chain.embedded import EmbeddedChain, embedded_chain
    from paywire.chain.rpc import (
        HttpTransport,
        RpcChain,
        RpcError,
        Transport,
        decode_revert_reason,
        register_custom_errors,
    )
    from paywire.chain.server import JsonRpcServer
    from paywire.chain.tx import TxSender, contract_address

__getattr__, __dir__ = lazy_exports(__name__, {
    "paywire.chain.anvil": ("Anvil", "ensure_anvil"),
    "paywire.chain.base": ("Chain", "FeeData", "Log", "Receipt"),
    "paywire.chain.devkeys": ("DEFAULT_MNEMONIC", "dev_keys"),
    "paywire.chain.embedded": ("EmbeddedChain", "embedded_chain"),
    "paywire.chain.rpc": (
        "HttpTransport", "RpcChain", "RpcError", "Transport", "decode_revert_reason", "register_custom_errors",
    ),
    "paywire.chain.server": ("JsonRpcServer",),
    "paywire.chain.tx": ("TxSender", "contract_address"),
})

DEV_EXTRA = "pip install 'paywire[dev]'"


def dev_chain_missing() -> str | None:
    """Why the embedded dev chain (py-evm via eth-tester, the ``dev`` extra) cannot run here, or ``None``."""
    import importlib.util

    for module in ("eth_tester", "eth"):
        try:
            found = importlib.util.find_spec(module) is not None
        except (ImportError, ValueError):
            found = False
        if not found:
            return f"the embedded dev chain needs py-evm, which is not installed: {DEV_EXTRA}"
    return None


def require_dev_chain() -> None:
    """Raise ``ConfigError`` with the install command when the embedded dev chain cannot run here."""
    missing = dev_chain_missing()
    if missing:
        raise ConfigError(missing)


__all__ = [
    "DEFAULT_MNEMONIC",
    "DEV_EXTRA",
    "Anvil",
    "Chain",
    "EmbeddedChain",
    "FeeData",
    "HttpTransport",
    "JsonRpcServer",
    "Log",
    "Receipt",
    "RpcChain",
    "RpcError",
    "Transport",
    "TxSender",
    "connect",
    "contract_address",
    "decode_revert_reason",
    "dev_chain_missing",
    "dev_keys",
    "embedded_chain",
    "ensure_anvil",
    "register_custom_errors",
    "require_dev_chain",
]


async def connect(spec: str, *, chain_id: int = 31337) -> RpcChain:
    """Open a chain from a spec string.

    * ``"embedded"`` — a fresh in-process chain with ``chain_id`` (dev accounts: ``dev_keys()``);
    * ``"anvil"`` — start anvil with ``chain_id``; ``aclose()`` on the returned chain stops the process;
    * ``"http://…"``/``"https://…"`` — an existing node (``chain_id`` is not used; the node's id is).

    Closing the returned chain (``await chain.aclose()``) releases everything it started.
    """
    from paywire.chain.anvil import Anvil
    from paywire.chain.embedded import embedded_chain
    from paywire.chain.rpc import HttpTransport, RpcChain

    kind = spec.strip()
    if kind == "embedded":
        chain, _node = await embedded_chain(chain_id)
        return chain
    if kind == "anvil":
        anvil = Anvil(chain_id=chain_id)
        await anvil.start()
        return RpcChain(HttpTransport(anvil.url), on_close=anvil.stop)
    if kind.startswith(("http://", "https://")):
        return RpcChain(HttpTransport(kind))
    raise ConfigError(f"unknown chain spec {spec!r}: use 'embedded', 'anvil', or an http(s):// URL")


def _static_checks(rpc: RpcChain, http: HttpTransport, node: EmbeddedChain) -> tuple[Chain, Transport, Transport]:
    """Never called: makes ``mypy --strict`` prove the implementations satisfy the protocols."""
    return rpc, http, node
