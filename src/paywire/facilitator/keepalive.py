"""``KeepAliveTransport`` moved to :mod:`paywire.chain.keepalive` (the EVM family opens its chains with it);
re-exported here for existing imports."""

from __future__ import annotations

from paywire.chain.keepalive import KeepAliveTransport

__all__ = ["KeepAliveTransport"]
