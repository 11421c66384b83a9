"""``paywire proxy``: sell any HTTP API with no code change — a paying reverse proxy configured by a TOML file.

    paywire proxy --config paywire.toml

The names an upstream needs (checking the signed identity headers) import from here without loading the proxy::

    from paywire.proxy import verify_identity
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from paywire._lazy import lazy_exports

if TYPE_CHECKING:
    from paywire.proxy.app import ProxyServer
    from paywire.proxy.config import ProxyConfig, ProxySetup, load_proxy
    from paywire.proxy.identity import identity_headers, verify_identity

__getattr__, __dir__ = lazy_exports(__name__, {
    "paywire.proxy.app": ("ProxyServer",),
    "paywire.proxy.config": ("ProxyConfig", "ProxySetup", "load_proxy"),
    "paywire.proxy.identity": ("identity_headers", "verify_identity"),
})

__all__ = ["ProxyConfig", "ProxyServer", "ProxySetup", "identity_headers", "load_proxy", "verify_identity"]
