"""paywire.wallet: the buyer's keys (env var, encrypted keystore, or any signer callable) and balances."""

from __future__ import annotations

from typing import TYPE_CHECKING

from paywire._lazy import lazy_exports

if TYPE_CHECKING:
    from paywire.wallet.keystore import decrypt_keystore, encrypt_key, keystore_address, write_keystore
    from paywire.wallet.signers import CallableSigner
    from paywire.wallet.wallet import KEY_ENV, KEYSTORE_ENV, RPC_ENV, Wallet, parse_rpc

__getattr__, __dir__ = lazy_exports(__name__, {
    "paywire.wallet.keystore": ("decrypt_keystore", "encrypt_key", "keystore_address", "write_keystore"),
    "paywire.wallet.signers": ("CallableSigner",),
    "paywire.wallet.wallet": ("KEY_ENV", "KEYSTORE_ENV", "RPC_ENV", "Wallet", "parse_rpc"),
})

__all__ = [
    "KEYSTORE_ENV",
    "KEY_ENV",
    "RPC_ENV",
    "CallableSigner",
    "Wallet",
    "decrypt_keystore",
    "encrypt_key",
    "keystore_address",
    "parse_rpc",
    "write_keystore",
]
