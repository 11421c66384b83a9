"""EIP-712 hashing for the EIP-3009 authorization types, written out flat for speed."""

from __future__ import annotations

from functools import lru_cache

from paywire.evm.crypto import address_bytes, keccak256

DOMAIN_TYPEHASH = keccak256(
    b"EIP712Domain(string name,string version,uint256 chainId,address verifyingContract)"
)
TRANSFER_WITH_AUTHORIZATION_TYPEHASH = keccak256(
    b"TransferWithAuthorization(address from,address to,uint256 value,uint256 validAfter,"
    b"uint256 validBefore,bytes32 nonce)"
)
RECEIVE_WITH_AUTHORIZATION_TYPEHASH = keccak256(
    b"ReceiveWithAuthorization(address from,address to,uint256 value,uint256 validAfter,"
    b"uint256 validBefore,bytes32 nonce)"
)
CANCEL_AUTHORIZATION_TYPEHASH = keccak256(b"CancelAuthorization(address authorizer,bytes32 nonce)")

_ZERO12 = bytes(12)


def _u256(n: int) -> bytes:
    return n.to_bytes(32, "big")


@lru_cache(maxsize=1024)
def domain_separator(name: str, version: str, chain_id: int, verifying_contract: str) -> bytes:
    """EIP-712 domain separator of a token (cached: a server sees few distinct tokens)."""
    return keccak256(
        DOMAIN_TYPEHASH
        + keccak256(name.encode())
        + keccak256(version.encode())
        + _u256(chain_id)
        + _ZERO12
        + address_bytes(verifying_contract)
    )


def transfer_authorization_digest(
    domain: bytes,
    from_: bytes,
    to: bytes,
    value: int,
    valid_after: int,
    valid_before: int,
    nonce: bytes,
    *,
    typehash: bytes = TRANSFER_WITH_AUTHORIZATION_TYPEHASH,
) -> bytes:
    """Digest signed for ``TransferWithAuthorization`` (or ``ReceiveWithAuthorization`` via typehash)."""
    struct_hash = keccak256(
        typehash
        + _ZERO12
        + from_
        + _ZERO12
        + to
        + _u256(value)
        + _u256(valid_after)
        + _u256(valid_before)
        + nonce
    )
    return keccak256(b"\x19\x01" + domain + struct_hash)


def cancel_authorization_digest(domain: bytes, authorizer: bytes, nonce: bytes) -> bytes:
    """Digest signed for ``CancelAuthorization``."""
    return keccak256(b"\x19\x01" + domain + keccak256(CANCEL_AUTHORIZATION_TYPEHASH + _ZERO12 + authorizer + nonce))
