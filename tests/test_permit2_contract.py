"""Our Permit2 (signature-transfer subset) on the embedded chain, called directly: the plain
``permitTransferFrom``, deadlines, amounts, the unordered nonce bitmap and its invalidation, compact (EIP-2098)
signatures and wrong signers — each with the error the canonical Permit2 gives."""

from __future__ import annotations

import os
import time

import pytest
import pytest_asyncio
from eth_abi.abi import encode as abi_encode

from paywire.chain.tx import TxSender
from paywire.devnet import Devnet
from paywire.errors import ChainRevert
from paywire.evm import permit2 as p2
from paywire.evm import token
from paywire.evm.crypto import keccak256
from paywire.evm.signer import LocalSigner
from tests.test_metered import approve_permit2, permit2_devnet

pytestmark = pytest.mark.asyncio(loop_scope="module")

PERMIT_TRANSFER_FROM_TYPEHASH = keccak256(
    b"PermitTransferFrom(TokenPermissions permitted,address spender,uint256 nonce,uint256 deadline)"
    b"TokenPermissions(address token,uint256 amount)")
TOKEN_PERMISSIONS_TYPEHASH = keccak256(b"TokenPermissions(address token,uint256 amount)")


def digest(chain_id: int, token_address: str, amount: int, spender: str, nonce: int, deadline: int) -> bytes:
    permitted = keccak256(abi_encode(["bytes32", "address", "uint256"], [TOKEN_PERMISSIONS_TYPEHASH, token_address,
                                                                         amount]))
    struct = keccak256(abi_encode(["bytes32", "bytes32", "address", "uint256", "uint256"],
                                  [PERMIT_TRANSFER_FROM_TYPEHASH, permitted, spender, nonce, deadline]))
    return keccak256(b"\x19\x01" + p2.domain_separator(chain_id) + struct)


def transfer_call(token_address: str, amount: int, nonce: int, deadline: int, to: str, requested: int, owner: str,
                  signature: bytes) -> bytes:
    return p2.PERMIT_TRANSFER_FROM + abi_encode(
        ["((address,uint256),uint256,uint256)", "(address,uint256)", "address", "bytes"],
        [((token_address, amount), nonce, deadline), (to, requested), owner, signature])


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def net():
    n = await permit2_devnet()
    await approve_permit2(n, n.payer.private_key)
    yield n
    await n.chain.aclose()


async def spender_call(net: Devnet, data: bytes) -> str | None:
    """eth_call from the facilitator key (the spender); the custom error's name, or None when it succeeds."""
    try:
        await net.chain.call(p2.PERMIT2_ADDRESS, data, sender=net.facilitator.address)
    except ChainRevert as exc:
        return p2.error_name(exc.data) or exc.reason
    return None


async def signed(net: Devnet, amount: int, nonce: int, deadline: int, signer: LocalSigner | None = None) -> bytes:
    s = signer or net.payer
    return await s.sign_digest(digest(net.info.chain_id, net.info.token, amount, net.facilitator.address, nonce,
                                      deadline))


async def test_permit_transfer_from_moves_up_to_the_signed_amount_once(net: Devnet) -> None:
    nonce, deadline = int.from_bytes(os.urandom(32), "big"), int(time.time()) + 600
    sig = await signed(net, 5_000, nonce, deadline)
    over = transfer_call(net.info.token, 5_000, nonce, deadline, net.payee.address, 5_001, net.payer.address, sig)
    assert await spender_call(net, over) == "InvalidAmount", "more than the signed amount was not refused"
    ok = transfer_call(net.info.token, 5_000, nonce, deadline, net.payee.address, 3_000, net.payer.address, sig)
    before = await net.token_balance(net.payee.address)
    sender = TxSender(net.chain, net.facilitator.private_key)
    receipt = await net.chain.wait_for_receipt(await sender.send(p2.PERMIT2_ADDRESS, ok))
    assert receipt.status == 1, "a valid permitTransferFrom reverted"
    assert await net.token_balance(net.payee.address) - before == 3_000, "the requested amount did not move"
    word = token.decode_uint(await net.chain.call(p2.PERMIT2_ADDRESS, p2.nonce_bitmap(net.payer.address, nonce)))
    assert p2.nonce_used(word, nonce), "the nonce bit is not set"
    assert await spender_call(net, ok) == "InvalidNonce", "a used nonce was accepted again"


async def test_expired_deadline_and_wrong_signer_are_refused(net: Devnet) -> None:
    past = int(time.time()) - 10
    sig = await signed(net, 1_000, 1, past)
    call = transfer_call(net.info.token, 1_000, 1, past, net.payee.address, 1_000, net.payer.address, sig)
    assert await spender_call(net, call) == "SignatureExpired", "an expired permit was accepted"
    later = int(time.time()) + 600
    forged = await signed(net, 1_000, 2, later, LocalSigner.generate())
    call = transfer_call(net.info.token, 1_000, 2, later, net.payee.address, 1_000, net.payer.address, forged)
    assert await spender_call(net, call) == "InvalidSigner", "another key's signature was accepted"
    short = transfer_call(net.info.token, 1_000, 3, later, net.payee.address, 1_000, net.payer.address, b"\x01" * 63)
    assert await spender_call(net, short) == "InvalidSignatureLength"


async def test_compact_eip2098_signature_is_accepted(net: Devnet) -> None:
    nonce, deadline = 77, int(time.time()) + 600
    sig = await signed(net, 1_000, nonce, deadline)
    v = sig[64] if sig[64] >= 27 else sig[64] + 27
    vs = int.from_bytes(sig[32:64], "big") | ((v - 27) << 255)
    compact = sig[:32] + vs.to_bytes(32, "big")
    call = transfer_call(net.info.token, 1_000, nonce, deadline, net.payee.address, 1_000, net.payer.address, compact)
    assert await spender_call(net, call) is None, "a 64-byte EIP-2098 signature was refused"


async def test_invalidated_nonces_cannot_be_used(net: Devnet) -> None:
    nonce, deadline = (5 << 8) | 9, int(time.time()) + 600  # word 5, bit 9
    sig = await signed(net, 1_000, nonce, deadline)
    call = transfer_call(net.info.token, 1_000, nonce, deadline, net.payee.address, 1_000, net.payer.address, sig)
    assert await spender_call(net, call) is None, "the permit should be usable before invalidation"
    invalidate = p2.selector("invalidateUnorderedNonces(uint256,uint256)") + abi_encode(["uint256", "uint256"],
                                                                                        [5, 1 << 9])
    payer = TxSender(net.chain, net.payer.private_key)
    receipt = await net.chain.wait_for_receipt(await payer.send(p2.PERMIT2_ADDRESS, invalidate))
    assert receipt.status == 1 and receipt.logs, "invalidateUnorderedNonces failed or logged nothing"
    assert await spender_call(net, call) == "InvalidNonce", "an invalidated nonce was still usable"
