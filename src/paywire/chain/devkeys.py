"""Well-known development keys: the same mnemonic and derivation path anvil and hardhat use by default, so
the embedded chain and anvil hand out identical funded accounts (``0xf39F…2266`` first)."""

from __future__ import annotations

from functools import lru_cache

DEFAULT_MNEMONIC = "test test test test test test test test test test test junk"
DEFAULT_DERIVATION_PATH = "m/44'/60'/0'/0/"

__all__ = ["DEFAULT_DERIVATION_PATH", "DEFAULT_MNEMONIC", "address_of", "dev_keys"]


@lru_cache(maxsize=8)
def _dev_keys(mnemonic: str, count: int, path: str) -> tuple[bytes, ...]:
    # imported here: eth_account takes ~0.4 s to import (py_ecc builds BLS12-381 tables), which a process that
    # only imports this module (a facilitator with its own keys) should not pay
    from eth_account.hdaccount import key_from_seed, seed_from_mnemonic

    seed = seed_from_mnemonic(mnemonic, "")
    return tuple(bytes(key_from_seed(seed, f"{path}{i}")) for i in range(count))


def dev_keys(
    count: int = 10, mnemonic: str = DEFAULT_MNEMONIC, path: str = DEFAULT_DERIVATION_PATH
) -> list[bytes]:
    """The first ``count`` private keys of ``mnemonic`` (BIP-44 path ``path`` + index)."""
    if not path.endswith("/"):
        path += "/"
    return list(_dev_keys(mnemonic, count, path))


def address_of(private_key: bytes) -> str:
    """Checksummed address of a 32-byte private key."""
    from paywire.evm.crypto import address_of_key, to_checksum

    return to_checksum(address_of_key(private_key))
