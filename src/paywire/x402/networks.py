"""CAIP-2 network identifiers and the x402 v1 legacy network names (digest §1.7, §2)."""

from __future__ import annotations

import re
from typing import Final

from paywire.errors import WireError
from paywire.x402 import reasons

_CAIP2_RE: Final = re.compile(r"([-a-z0-9]{3,8}):([-_a-zA-Z0-9]{1,32})")
_CHAIN_ID_RE: Final = re.compile(r"[1-9][0-9]*")

SOLANA_MAINNET: Final = "solana:5eykt4UsFv8P8NJdTREpY1vzqKqZKvdp"
SOLANA_DEVNET: Final = "solana:EtWTRABZaYq6iMfeYKouRu166VU2xqa1"
SOLANA_TESTNET: Final = "solana:4uhcVJyU9pJkvQyS88uRDiswHXSCkY3z"

_V1_CHAIN_IDS: Final[dict[str, int]] = {
    "base": 8453,
    "base-sepolia": 84532,
    "ethereum": 1,
    "polygon": 137,
    "polygon-amoy": 80002,
    "avalanche": 43114,
    "avalanche-fuji": 43113,
    "abstract": 2741,
    "abstract-testnet": 11124,
    "iotex": 4689,
    "sei": 1329,
    "sei-testnet": 1328,  # the pinned SDK (2.25.0) signs with 1328; the digest's 713715 is outdated
    "peaq": 3338,
    "story": 1513,
    "educhain": 656476,
    "skale-base-sepolia": 1444673419,
    "megaeth": 4326,
    "monad": 143,
    "monad-testnet": 10143,
    "stable": 988,
    "stable-testnet": 2201,
    "celo": 42220,
    "flare": 14,
}

V1_NETWORKS: Final[dict[str, str]] = {
    **{name: f"eip155:{chain_id}" for name, chain_id in _V1_CHAIN_IDS.items()},
    "solana": SOLANA_MAINNET,
    "solana-devnet": SOLANA_DEVNET,
    "solana-testnet": SOLANA_TESTNET,
}
"""x402 v1 legacy network name -> CAIP-2 id (PY ``V1_NETWORK_CHAIN_IDS`` plus Solana)."""

_CAIP2_TO_V1: Final[dict[str, str]] = {caip2: name for name, caip2 in V1_NETWORKS.items()}


def parse_caip2(network: str) -> tuple[str, str]:
    """Split a strict CAIP-2 id into ``(namespace, reference)``; ``WireError(invalid_network)`` if malformed."""
    m = _CAIP2_RE.fullmatch(network) if isinstance(network, str) else None
    if m is None:
        raise WireError(reasons.INVALID_NETWORK, f"not a CAIP-2 network id: {network!r:.80}")
    return m.group(1), m.group(2)


def is_caip2(network: object) -> bool:
    """True when ``network`` is a syntactically valid CAIP-2 id."""
    return isinstance(network, str) and _CAIP2_RE.fullmatch(network) is not None


def evm_chain_id(network: str) -> int:
    """Chain id of an ``eip155:<decimal>`` network; ``WireError(invalid_network)`` otherwise."""
    namespace, reference = parse_caip2(network)
    if namespace != "eip155" or _CHAIN_ID_RE.fullmatch(reference) is None:
        raise WireError(reasons.INVALID_NETWORK, f"not an eip155:<chainId> network: {network!r:.80}")
    return int(reference)


def is_evm(network: str) -> bool:
    """True for ``eip155:*`` networks and for v1 names that map to one."""
    caip2 = to_caip2_or_none(network)
    return caip2 is not None and caip2.startswith("eip155:")


def to_caip2_or_none(name_or_caip2: str) -> str | None:
    """Like :func:`to_caip2` but returns ``None`` instead of raising."""
    if not isinstance(name_or_caip2, str):
        return None
    mapped = V1_NETWORKS.get(name_or_caip2)
    if mapped is not None:
        return mapped
    return name_or_caip2 if _CAIP2_RE.fullmatch(name_or_caip2) else None


def to_caip2(name_or_caip2: str) -> str:
    """Map a known v1 name to CAIP-2, return a valid CAIP-2 id unchanged, else ``invalid_network``."""
    result = to_caip2_or_none(name_or_caip2)
    if result is None:
        raise WireError(reasons.INVALID_NETWORK, f"unknown network: {name_or_caip2!r:.80}")
    return result


def to_v1_name(caip2: str) -> str | None:
    """The v1 legacy name of a CAIP-2 id, or ``None`` when v1 has no name for it."""
    return _CAIP2_TO_V1.get(caip2)


def matches_pattern(network: str, pattern: str) -> bool:
    """True if ``network`` equals ``pattern`` or lies in a ``<namespace>:*`` family pattern.

    A v1 legacy ``network`` is normalised to CAIP-2 first, so ``base`` matches ``eip155:*``.
    """
    if network == pattern:
        return True
    normalised = to_caip2_or_none(network)
    if normalised is None:
        return False
    if normalised == pattern:
        return True
    if pattern.endswith(":*"):
        return normalised.partition(":")[0] == pattern[:-2]
    return False
