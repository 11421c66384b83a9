"""CAIP-2 ids of the Bitcoin chains a BOLT11 invoice can be for (``bip122:<genesis hash prefix>``)."""

from __future__ import annotations

from typing import Final

LIGHTNING_SCHEME: Final = "lightning"
"""The scheme name of a Lightning payment (an invoice and its preimage) in paywire's ledgers and options."""

BIP122: Final = {
    "mainnet": "bip122:000000000019d6689c085ae165831e93",
    "testnet": "bip122:000000000933ea01ad0ee984209779ba",
    "signet": "bip122:00000008819873e925422c1ff0f99f7c",
    "regtest": "bip122:0f9188f13cb7b2c71f2a335e3a4fc328",
}


def lightning_network_id(network: str) -> str:
    """``mainnet`` → ``bip122:000000000019d6689c085ae165831e93``; unknown names map to regtest's id."""
    return BIP122.get(network, BIP122["regtest"])
