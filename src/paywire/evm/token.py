"""Calldata for the ERC-20 / EIP-3009 / EIP-1271 functions paywire calls. Pure encoding, no I/O."""

from __future__ import annotations

from eth_abi.abi import decode as abi_decode
from eth_abi.abi import encode as abi_encode

from paywire.evm.crypto import address_bytes, keccak256


def selector(signature: str) -> bytes:
    """4-byte function selector."""
    return keccak256(signature.encode())[:4]


BALANCE_OF = selector("balanceOf(address)")
NAME = selector("name()")
VERSION = selector("version()")
DECIMALS = selector("decimals()")
AUTHORIZATION_STATE = selector("authorizationState(address,bytes32)")
TRANSFER = selector("transfer(address,uint256)")
MINT = selector("mint(address,uint256)")
TWA_VRS = selector(
    "transferWithAuthorization(address,address,uint256,uint256,uint256,bytes32,uint8,bytes32,bytes32)"
)
TWA_BYTES = selector("transferWithAuthorization(address,address,uint256,uint256,uint256,bytes32,bytes)")
IS_VALID_SIGNATURE = selector("isValidSignature(bytes32,bytes)")
EIP1271_MAGIC = bytes.fromhex("1626ba7e")
ERC6492_MAGIC = bytes.fromhex("6492" * 16)
TRANSFER_TOPIC = keccak256(b"Transfer(address,address,uint256)")


def balance_of(owner: str) -> bytes:
    return BALANCE_OF + abi_encode(["address"], [owner])


def authorization_state(authorizer: str, nonce: bytes) -> bytes:
    return AUTHORIZATION_STATE + abi_encode(["address", "bytes32"], [authorizer, nonce])


def transfer(to: str, amount: int) -> bytes:
    return TRANSFER + abi_encode(["address", "uint256"], [to, amount])


def mint(to: str, amount: int) -> bytes:
    return MINT + abi_encode(["address", "uint256"], [to, amount])


def is_valid_signature(digest: bytes, signature: bytes) -> bytes:
    return IS_VALID_SIGNATURE + abi_encode(["bytes32", "bytes"], [digest, signature])


def _word(n: int) -> bytes:
    return n.to_bytes(32, "big")  # OverflowError outside 0 .. 2**256-1, as the ABI allows no other uint256


def transfer_with_authorization(
    from_: str, to: str, value: int, valid_after: int, valid_before: int, nonce: bytes, signature: bytes
) -> bytes:
    """The (v,r,s) overload for 65-byte signatures, the ``bytes`` overload otherwise (checklist 56).

    Encoded by hand (static words, one tail for the ``bytes`` overload): byte-identical to ``eth_abi``, a tenth
    of its cost, and a settlement encodes it for its simulation and its transaction."""
    if len(nonce) > 32:
        raise ValueError("nonce is longer than bytes32")
    head = (bytes(12) + address_bytes(from_) + bytes(12) + address_bytes(to) + _word(value) + _word(valid_after)
            + _word(valid_before) + bytes(nonce).ljust(32, b"\x00"))
    if len(signature) == 65:
        v = signature[64] if signature[64] >= 27 else signature[64] + 27
        return TWA_VRS + head + _word(v) + signature[:32] + signature[32:64]
    sig = bytes(signature)
    return TWA_BYTES + head + _word(7 * 32) + _word(len(sig)) + sig.ljust((len(sig) + 31) // 32 * 32, b"\x00")


def decode_uint(data: bytes) -> int:
    return int(abi_decode(["uint256"], data)[0])


def decode_bool(data: bytes) -> bool:
    return bool(abi_decode(["bool"], data)[0])


def decode_string(data: bytes) -> str:
    return str(abi_decode(["string"], data)[0])


def constructor_args(name: str, version: str, symbol: str) -> bytes:
    return abi_encode(["string", "string", "string"], [name, version, symbol])
