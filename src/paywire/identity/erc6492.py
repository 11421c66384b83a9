"""ERC-6492: signatures of smart wallets that are not deployed yet (counterfactual), checked with one ``eth_call``.

A wrapped signature is ``abi.encode(address factory, bytes factoryCalldata, bytes signature)`` followed by
the 32-byte magic suffix ``0x6492…6492``. The universal-validator approach checks it without a transaction: an
``eth_call`` that *creates* a throwaway contract whose constructor calls ``factory`` with ``factoryCalldata``
(deploying the wallet inside the call only) when the wallet has no code yet, then asks the wallet
``isValidSignature(hash, signature)`` (EIP-1271) and returns the answer. Nothing is written to the chain.

Our validator is the few EVM instructions below, assembled here (no compiler needed); its inputs follow its
code, in our own layout (signer, hash, factory, calldata, signature), since only :func:`validator_call` builds
them. Sans-I/O: :func:`unwrap` and :func:`validator_call` make bytes; the caller runs the ``eth_call``.
"""

from __future__ import annotations

from typing import Final

from paywire.evm.crypto import address_bytes

MAGIC_SUFFIX: Final = bytes.fromhex("6492" * 16)
EIP1271_MAGIC: Final = bytes.fromhex("1626ba7e")
MAX_INPUT: Final = 0x7000
"""Largest factory calldata + signature the validator takes (bytes)."""
_M, _R = 0x8000, 0x7FE0  # memory: the isValidSignature call is built at _M, its answer lands at _R

_OPS = {"STOP": 0x00, "ADD": 0x01, "SUB": 0x03, "ISZERO": 0x15, "SHL": 0x1B, "CODESIZE": 0x38,
        "CODECOPY": 0x39, "EXTCODESIZE": 0x3B, "MLOAD": 0x51, "MSTORE": 0x52, "JUMPI": 0x57, "GAS": 0x5A,
        "JUMPDEST": 0x5B, "DUP1": 0x80, "DUP3": 0x82, "SWAP1": 0x90, "CALL": 0xF1, "RETURN": 0xF3,
        "STATICCALL": 0xFA, "CALLDATALOAD": 0x35, "CREATE2": 0xF5}

# the constructor; ("@", name) marks a position, ("push2", name) pushes it, ints are PUSH1/PUSH4 values
_PROGRAM: Final[tuple[object, ...]] = (
    # copy the inputs (after the code) to memory 0: codecopy(0, END, codesize - END)
    ("push2", "end"), "CODESIZE", "SUB", ("push2", "end"), ("push1", 0), "CODECOPY",
    # a wallet with code is asked directly; else its factory deploys it (inside this call only)
    ("push1", 0x00), "MLOAD", "EXTCODESIZE", ("push2", "deployed"), "JUMPI",
    ("push1", 0), ("push1", 0), ("push1", 0x60), "MLOAD", ("push1", 0x80), ("push1", 0), ("push1", 0x40), "MLOAD",
    "GAS", "CALL", "ISZERO", ("push2", "fail"), "JUMPI",
    ("@", "deployed"), "JUMPDEST",
    # a = 0x80 + len(calldata): where the signature's length word is
    ("push1", 0x60), "MLOAD", ("push1", 0x80), "ADD",
    # isValidSignature(bytes32 hash, bytes signature) at M: selector, hash, 0x40, length, bytes
    ("push4", 0x1626BA7E), ("push1", 0xE0), "SHL", ("push2", _M), "MSTORE",
    ("push1", 0x20), "MLOAD", ("push2", _M + 4), "MSTORE",
    ("push1", 0x40), ("push2", _M + 36), "MSTORE",
    "DUP1", "MLOAD", ("push1", 0x20), "ADD",  # n = 32 + len(signature)
    "DUP1", "DUP3", ("push2", "end"), "ADD", ("push2", _M + 68), "CODECOPY",  # codecopy(M+68, END+a, n)
    ("push1", 0x20), "SWAP1", ("push2", _R), "SWAP1", ("push1", 0x44), "ADD",
    ("push2", _M), ("push1", 0x00), "MLOAD", "GAS", "STATICCALL",  # staticcall(gas, signer, M, 68+n, R, 32)
    "ISZERO", ("push2", "fail"), "JUMPI",
    ("push2", _R), "MLOAD", ("push1", 0), "MSTORE", ("push1", 0x20), ("push1", 0), "RETURN",
    ("@", "fail"), "JUMPDEST", ("push1", 0x20), ("push1", 0), "RETURN",  # 32 zero bytes: not valid
    ("@", "end"),
)


def assemble(program: tuple[object, ...]) -> bytes:
    """EVM code of a small program: opcode names, ``("push1" | "push2" | "push4", value or label)`` and
    ``("@", label)`` positions."""
    widths = {"push1": 1, "push2": 2, "push4": 4}
    labels: dict[str, int] = {}
    pos = 0
    for item in program:
        if isinstance(item, tuple) and item[0] == "@":
            labels[str(item[1])] = pos
        elif isinstance(item, tuple):
            pos += 1 + widths[str(item[0])]
        else:
            pos += 1
    out = bytearray()
    for item in program:
        if isinstance(item, tuple) and item[0] == "@":
            continue
        if isinstance(item, tuple):
            kind, value = str(item[0]), item[1]
            n = widths[kind]
            number = labels[value] if isinstance(value, str) else int(str(value))
            out += bytes([0x5F + n]) + number.to_bytes(n, "big")
        else:
            out.append(_OPS[str(item)])
    return bytes(out)


VALIDATOR: Final = assemble(_PROGRAM)
"""The validator's creation code (its inputs are appended to it)."""


def _word(data: bytes, at: int) -> int:
    if at + 32 > len(data):
        raise ValueError("truncated ABI data")
    return int.from_bytes(data[at:at + 32], "big")


def _bytes_at(data: bytes, head: int) -> bytes:
    offset = _word(data, head)
    length = _word(data, offset)
    if offset + 32 + length > len(data):
        raise ValueError("truncated ABI bytes")
    return data[offset + 32:offset + 32 + length]


def is_wrapped(signature: bytes) -> bool:
    return signature.endswith(MAGIC_SUFFIX)


def unwrap(signature: bytes) -> tuple[str, bytes, bytes]:
    """(factory, factory calldata, inner signature) of an ERC-6492 signature; ``ValueError`` if malformed."""
    if not is_wrapped(signature):
        raise ValueError("not an ERC-6492 signature (no magic suffix)")
    body = signature[:-32]
    factory = _word(body, 0)
    if factory >> 160:
        raise ValueError("the factory is not an address")
    calldata, inner = _bytes_at(body, 32), _bytes_at(body, 64)
    if len(calldata) + len(inner) > MAX_INPUT:
        raise ValueError("the factory calldata and signature are too large")
    return "0x" + factory.to_bytes(20, "big").hex(), calldata, inner


def wrap(factory: str, calldata: bytes, signature: bytes) -> bytes:
    """An ERC-6492 signature (what a counterfactual wallet's owner sends)."""
    def dyn(b: bytes) -> bytes:
        return len(b).to_bytes(32, "big") + b + bytes(-len(b) % 32)

    head = bytes(12) + address_bytes(factory) + (96).to_bytes(32, "big")
    first = dyn(calldata)
    head += (96 + len(first)).to_bytes(32, "big")
    return head + first + dyn(signature) + MAGIC_SUFFIX


def validator_call(signer: str, digest: bytes, signature: bytes) -> bytes:
    """The ``data`` of the creating ``eth_call`` that checks ``signature`` (ERC-6492) over ``digest`` for
    ``signer``; the call returns 32 bytes starting with :data:`EIP1271_MAGIC` when it is valid."""
    factory, calldata, inner = unwrap(signature)
    if len(digest) != 32:
        raise ValueError("the digest is 32 bytes")
    return (VALIDATOR + bytes(12) + address_bytes(signer) + digest + bytes(12) + address_bytes(factory)
            + len(calldata).to_bytes(32, "big") + calldata + len(inner).to_bytes(32, "big") + inner)


__all__ = ["EIP1271_MAGIC", "MAGIC_SUFFIX", "VALIDATOR", "assemble", "is_wrapped", "unwrap", "validator_call", "wrap"]
