"""The settlement calldata and checksums paywire builds by hand are byte-identical to the reference encoders
(``eth_abi``, ``eth_utils``): a wrong byte would send a transfer the token rejects, or to someone else."""

from __future__ import annotations

import random

from eth_abi.abi import encode as abi_encode
from eth_utils.address import to_checksum_address

from paywire.evm import token
from paywire.evm.crypto import to_checksum

HEAD = ["address", "address", "uint256", "uint256", "uint256", "bytes32"]


def reference(from_: str, to: str, value: int, after: int, before: int, nonce: bytes, sig: bytes) -> bytes:
    head = [from_, to, value, after, before, nonce]
    if len(sig) == 65:
        v = sig[64] if sig[64] >= 27 else sig[64] + 27
        return token.TWA_VRS + abi_encode([*HEAD, "uint8", "bytes32", "bytes32"], [*head, v, sig[:32], sig[32:64]])
    return token.TWA_BYTES + abi_encode([*HEAD, "bytes"], [*head, sig])


def test_transfer_with_authorization_matches_eth_abi() -> None:
    rng = random.Random(7)
    for i in range(400):
        sig = rng.randbytes(rng.choice([2, 31, 32, 33, 64, 65, 65, 66, 97, 130, 200]))
        if len(sig) == 65 and i % 2:
            sig = sig[:64] + bytes([rng.choice([0, 1, 27, 28])])
        args = ("0x" + rng.randbytes(20).hex(), to_checksum_address(rng.randbytes(20)),
                rng.getrandbits(rng.randint(1, 256)), rng.getrandbits(40), 2**256 - 1 if i == 3 else rng.getrandbits(64),
                rng.randbytes(32), sig)
        assert token.transfer_with_authorization(*args) == reference(*args), args


def test_checksums_match_eth_utils_for_text_and_bytes() -> None:
    rng = random.Random(8)
    for _ in range(300):
        raw = rng.randbytes(20)
        want = to_checksum_address(raw)
        assert to_checksum(raw) == want
        assert to_checksum("0x" + raw.hex()) == want
        assert to_checksum("0x" + raw.hex().upper()) == want
