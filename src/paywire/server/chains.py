"""The seller's read-only chain access (``chains``): CAIP-2 network → a ``Chain`` or a JSON-RPC node URL.

The seller never sends a transaction. It reads the chain when its facilitator cannot account for a payment:
on reconciling, a facilitator that keeps no record of its settlements answers a second ``/settle`` of a settled
payment with "nonce already used", and only the chain tells "settled by our first ``/settle``" (serve it) from
"spent elsewhere" (don't). Also used for Sign-In-With-X contract wallets when ``siwx_chains`` is not given.

Accepted forms: ``{"eip155:8453": "https://…", "eip155:84532": chain}`` (code, or a ``[seller.chains]`` TOML
table), ``["eip155:8453=https://…"]`` or the text ``"eip155:8453=https://…,eip155:84532=https://…"``
(``PAYWIRE_SELLER_CHAINS``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from paywire.errors import ConfigError
from paywire.x402.networks import is_caip2

if TYPE_CHECKING:
    from paywire.chain.base import Chain

__all__ = ["ChainReaders", "chains_problem"]


def _pairs(value: Any) -> list[tuple[str, Any]]:
    """(network, Chain or URL) pairs of any accepted form; ConfigError names what is wrong."""
    if isinstance(value, Mapping):
        items = list(value.items())
    else:
        texts = value.split(",") if isinstance(value, str) else value
        if not isinstance(texts, list | tuple):
            raise ConfigError("expected {network: URL or Chain} or 'network=URL' items")
        items = []
        for text in texts:
            if not isinstance(text, str) or "=" not in text:
                raise ConfigError(f"expected 'network=URL', got {text!r}")
            network, _, url = text.strip().partition("=")
            items.append((network.strip(), url.strip()))
    for network, chain in items:
        if not isinstance(network, str) or not is_caip2(network):
            raise ConfigError(f"{network!r} is not a CAIP-2 network (eip155:8453)")
        if isinstance(chain, str):
            if not chain.startswith(("http://", "https://")):
                raise ConfigError(f"{network}: expected an http(s) JSON-RPC URL, got {chain!r}")
        elif not all(hasattr(chain, m) for m in ("call", "get_logs", "get_transaction_receipt")):
            raise ConfigError(f"{network}: expected a URL or a Chain")
    return items


def chains_problem(value: Any) -> str | None:
    """The seller option check: None when ``value`` is an accepted form."""
    if value is None:
        return None
    try:
        _pairs(value)
    except ConfigError as exc:
        return str(exc)
    return None


class ChainReaders:
    """Chains by network, the URLs' clients made on first use and closed by :meth:`aclose`."""

    def __init__(self, value: Any) -> None:
        self._given: dict[str, Any] = dict(_pairs(value)) if value is not None else {}
        self._owned: dict[str, Chain] = {}

    def __bool__(self) -> bool:
        return bool(self._given)

    def get(self, network: str) -> Chain | None:
        found = self._owned.get(network)
        if found is not None:
            return found
        given = self._given.get(network)
        if not isinstance(given, str):
            return given
        from paywire.chain.rpc import HttpTransport, RpcChain

        chain = self._owned[network] = RpcChain(HttpTransport(given))
        return chain

    def as_mapping(self) -> dict[str, Chain]:
        """Every network's chain (for Sign-In-With-X's contract-wallet checks)."""
        return {network: chain for network in self._given if (chain := self.get(network)) is not None}

    async def aclose(self) -> None:
        owned, self._owned = list(self._owned.values()), {}
        for chain in owned:
            await chain.aclose()
