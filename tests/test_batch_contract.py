"""Our ``X402BatchSettlement`` escrow, its two deposit collectors and Multicall3 at the canonical addresses on the
embedded chain (py-evm executing the compiled artifacts): deposits through EIP-3009 ``receiveWithAuthorization``
and Permit2, ``claimWithSignature`` over several channels in one transaction, ``settle``, ``refundWithSignature``
(nonce first, capped), the timed withdrawal's guards, and the ids/digests agreeing with the official x402 SDK.
Balances are read back from the token after every money movement.
"""

from __future__ import annotations

import os
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass

import pytest
import pytest_asyncio

from paywire.chain import EmbeddedChain, RpcChain
from paywire.chain.devkeys import dev_keys
from paywire.chain.permit2 import approve_permit2, permit2_code
from paywire.chain.tx import TxSender
from paywire.devnet import Devnet, setup_devnet
from paywire.errors import ChainRevert
from paywire.evm import batch as b
from paywire.evm import eip712
from paywire.evm.crypto import address_bytes
from paywire.evm.signer import LocalSigner
from tests.helpers import close_devnet

pytestmark = pytest.mark.asyncio(loop_scope="module")

AUTHORIZER = LocalSigner(dev_keys(6)[4])  # the receiver authorizer: signs claims and refunds, sends nothing


@dataclass
class Env:
    net: Devnet
    sender: TxSender  # the facilitator's key relays every transaction

    async def balance(self, who: str) -> int:
        return await self.net.token_balance(who)

    async def state(self, cid: bytes) -> b.OnchainChannel:
        raw = await self.net.chain.call(b.MULTICALL3_ADDRESS, b.try_aggregate(b.channel_state_calls(cid)))
        return b.decode_channel_state(b.decode_try_aggregate(raw))

    async def send(self, data: bytes, signer: LocalSigner | None = None) -> None:
        sender = self.sender if signer is None else TxSender(self.net.chain, signer.private_key)
        receipt = await sender.send_and_wait(b.BATCH_SETTLEMENT_ADDRESS, data)
        assert receipt.status == 1, "the escrow transaction reverted"

    async def reverts(self, data: bytes, sender: str | None = None) -> str | None:
        with pytest.raises(ChainRevert) as exc:
            await self.net.chain.call(b.BATCH_SETTLEMENT_ADDRESS, data, sender=sender or self.net.facilitator.address)
        return b.error_name(exc.value.data)


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def env() -> AsyncIterator[Env]:
    net = await setup_devnet(RpcChain(EmbeddedChain(chain_id=31337, code=permit2_code())))
    try:
        yield Env(net, TxSender(net.chain, net.facilitator.private_key))
    finally:
        await close_devnet(net)


def config(net: Devnet, salt: int = 0, delay: int = 900) -> b.ChannelConfig:
    return b.ChannelConfig(net.payer.address, net.payer.address, net.payee.address, AUTHORIZER.address,
                           net.info.token, delay, salt.to_bytes(32, "big"))


async def deposit_3009(env: Env, cfg: b.ChannelConfig, amount: int) -> bytes:
    """The payer's ReceiveWithAuthorization to the ERC-3009 collector, relayed by the facilitator."""
    net = env.net
    cid = cfg.channel_id(net.info.chain_id)
    salt = int.from_bytes(os.urandom(32), "big")
    before = int(time.time()) + 600
    domain = eip712.domain_separator(net.info.token_name, net.info.token_version, net.info.chain_id, net.info.token)
    digest = eip712.transfer_authorization_digest(
        domain, address_bytes(net.payer.address), address_bytes(b.ERC3009_COLLECTOR_ADDRESS), amount, 0, before,
        b.erc3009_deposit_nonce(cid, salt), typehash=eip712.RECEIVE_WITH_AUTHORIZATION_TYPEHASH)
    sig = await net.payer.sign_digest(digest)
    data = b.deposit(cfg, amount, b.ERC3009_COLLECTOR_ADDRESS, b.erc3009_collector_data(0, before, salt, sig))
    await env.send(data)
    return data


async def voucher(net: Devnet, cfg: b.ChannelConfig, ceiling: int) -> bytes:
    return await net.payer.sign_digest(b.voucher_digest(cfg.channel_id(net.info.chain_id), ceiling, net.info.chain_id))


async def test_contracts_sit_at_the_canonical_addresses_and_ids_match_the_sdk(env: Env) -> None:
    from x402.mechanisms.evm.batch_settlement.types import ChannelConfig as SdkConfig
    from x402.mechanisms.evm.batch_settlement.utils import compute_channel_id

    for address in (b.BATCH_SETTLEMENT_ADDRESS, b.ERC3009_COLLECTOR_ADDRESS, b.PERMIT2_COLLECTOR_ADDRESS,
                    b.MULTICALL3_ADDRESS):
        assert await env.net.chain.get_code(address), f"no code at {address}"
    cfg = config(env.net, 7)
    ours = cfg.channel_id(env.net.info.chain_id)
    onchain = await env.net.chain.call(b.BATCH_SETTLEMENT_ADDRESS, b.selector(
        "getChannelId((address,address,address,address,address,uint40,bytes32))") + b.deposit(cfg, 1, b.ZERO_ADDRESS,
                                                                                              b"")[4:4 + 7 * 32])
    sdk = compute_channel_id(SdkConfig.from_dict(cfg.to_wire()), env.net.info.network)
    assert onchain == ours, "the contract's channel id differs from ours"
    assert "0x" + ours.hex() == sdk.lower(), "our channel id differs from the official SDK's"


async def test_deposits_claims_across_channels_settle_and_refund(env: Env) -> None:
    net = env.net
    chain_id = net.info.chain_id
    a, c = config(net, 1), config(net, 2)
    payer0, escrow0, payee0 = (await env.balance(net.payer.address), await env.balance(b.BATCH_SETTLEMENT_ADDRESS),
                               await env.balance(net.payee.address))
    replayed = await deposit_3009(env, a, 100_000)
    await deposit_3009(env, c, 50_000)
    assert await env.balance(b.BATCH_SETTLEMENT_ADDRESS) - escrow0 == 150_000, "the escrow did not receive deposits"
    assert payer0 - await env.balance(net.payer.address) == 150_000
    assert (await env.state(a.channel_id(chain_id))).balance == 100_000
    await env.reverts(replayed)  # the token refuses the used authorization: a deposit cannot be replayed

    # one claim transaction for two channels, authorized by one ClaimBatch signature
    claims = [b.VoucherClaim(a, 3_000, await voucher(net, a, 3_000), 3_000),
              b.VoucherClaim(c, 7_000, await voucher(net, c, 7_000), 6_500)]
    batch_sig = await AUTHORIZER.sign_digest(b.claim_batch_digest(claims, chain_id))
    wrong = await AUTHORIZER.sign_digest(b.claim_batch_digest(claims[:1], chain_id))
    assert await env.reverts(b.claim_with_signature(claims, wrong)) == "InvalidSignature"
    await env.send(b.claim_with_signature(claims, batch_sig))
    sa, sc = await env.state(a.channel_id(chain_id)), await env.state(c.channel_id(chain_id))
    assert (sa.total_claimed, sc.total_claimed) == (3_000, 6_500), "claims were not recorded"
    assert await env.balance(net.payee.address) == payee0, "a claim moved tokens"

    # a replayed or lower claim is a no-op; above the voucher's ceiling or signed by someone else is refused
    await env.send(b.claim_with_signature(claims, batch_sig))
    assert (await env.state(a.channel_id(chain_id))).total_claimed == 3_000
    over = [b.VoucherClaim(a, 3_000, claims[0].signature, 3_001)]
    assert await env.reverts(b.claim_with_signature(over, await AUTHORIZER.sign_digest(
        b.claim_batch_digest(over, chain_id)))) == "ClaimExceedsCeiling"
    forged = [b.VoucherClaim(a, 9_000, await net.payee.sign_digest(b.voucher_digest(
        a.channel_id(chain_id), 9_000, chain_id)), 9_000)]
    assert await env.reverts(b.claim_with_signature(forged, await AUTHORIZER.sign_digest(
        b.claim_batch_digest(forged, chain_id)))) == "InvalidSignature"
    assert await env.reverts(b.claim(claims), sender=net.payer.address) == "NotAuthorizedToClaim"

    # settle sweeps both channels' claims in one transfer; a second settle moves nothing
    await env.send(b.settle(net.payee.address, net.info.token))
    assert await env.balance(net.payee.address) - payee0 == 9_500, "settle did not pay the claimed total"
    await env.send(b.settle(net.payee.address, net.info.token))
    assert await env.balance(net.payee.address) - payee0 == 9_500, "a second settle paid again"

    # refundWithSignature: nonce must match, amount capped to the unclaimed escrow, nonce advances
    cid = a.channel_id(chain_id)
    sig0 = await AUTHORIZER.sign_digest(b.refund_digest(cid, 0, 10_000, chain_id))
    assert await env.reverts(b.refund_with_signature(a, 10_000, 1, sig0)) == "InvalidRefundNonce"
    assert await env.reverts(b.refund_with_signature(a, 10_000, 0, await net.payee.sign_digest(
        b.refund_digest(cid, 0, 10_000, chain_id)))) == "InvalidSignature"
    p1 = await env.balance(net.payer.address)
    await env.send(b.refund_with_signature(a, 10_000, 0, sig0))
    assert await env.balance(net.payer.address) - p1 == 10_000
    assert await env.reverts(b.refund_with_signature(a, 10_000, 0, sig0)) == "InvalidRefundNonce", "refund replayed"
    big = await AUTHORIZER.sign_digest(b.refund_digest(cid, 1, 10**9, chain_id))
    await env.send(b.refund_with_signature(a, 10**9, 1, big))
    after = await env.state(cid)
    assert (after.balance, after.total_claimed, after.refund_nonce) == (3_000, 3_000, 2), "refund not capped"
    assert await env.balance(net.payer.address) - p1 == 97_000
    assert await env.balance(b.BATCH_SETTLEMENT_ADDRESS) - escrow0 == 50_000 - 6_500, "escrow holds the wrong sum"


async def test_permit2_deposit_and_withdrawal_guards(env: Env) -> None:
    net = env.net
    chain_id = net.info.chain_id
    await approve_permit2(net.chain, net.payer.private_key, net.info.token)
    cfg = config(net, 3)
    cid = cfg.channel_id(chain_id)
    nonce, deadline = int.from_bytes(os.urandom(16), "big"), int(time.time()) + 600
    sig = await net.payer.sign_digest(b.permit2_deposit_digest(net.info.token, 20_000, nonce, deadline, cid,
                                                               chain_id))
    other = config(net, 4).channel_id(chain_id)  # the witness binds the channel: another channel fails
    bad = await net.payer.sign_digest(b.permit2_deposit_digest(net.info.token, 20_000, nonce, deadline, other,
                                                               chain_id))
    with pytest.raises(ChainRevert):
        await net.chain.call(b.BATCH_SETTLEMENT_ADDRESS, b.deposit(
            cfg, 20_000, b.PERMIT2_COLLECTOR_ADDRESS, b.permit2_collector_data(nonce, deadline, bad)),
            sender=net.facilitator.address)
    escrow0 = await env.balance(b.BATCH_SETTLEMENT_ADDRESS)
    await env.send(b.deposit(cfg, 20_000, b.PERMIT2_COLLECTOR_ADDRESS,
                             b.permit2_collector_data(nonce, deadline, sig)))
    assert await env.balance(b.BATCH_SETTLEMENT_ADDRESS) - escrow0 == 20_000
    assert (await env.state(cid)).balance == 20_000

    # only the collector's escrow may call collect; only the payer side may withdraw
    with pytest.raises(ChainRevert) as exc:
        await net.chain.call(b.ERC3009_COLLECTOR_ADDRESS, b.selector("collect(address,address,uint256,bytes32,bytes)")
                             + bytes(32 * 6), sender=net.facilitator.address)
    assert b.error_name(exc.value.data) == "OnlyX402BatchSettlement"
    assert await env.reverts(b.initiate_withdraw(cfg, 5_000), sender=net.payee.address) == "InvalidChannel"
    assert await env.reverts(b.initiate_withdraw(cfg, 20_001), sender=net.payer.address) == \
        "WithdrawAmountExceedsAvailable"
    await env.send(b.initiate_withdraw(cfg, 15_000), net.payer)
    state = await env.state(cid)
    assert state.withdraw_amount == 15_000 and state.withdraw_requested_at > 0
    assert await env.reverts(b.finalize_withdraw(cfg), sender=net.payer.address) == "WithdrawDelayNotElapsed"
    assert await env.reverts(b.initiate_withdraw(cfg, 1), sender=net.payer.address) == "WithdrawalAlreadyPending"
    # a cooperative refund shrinks the pending withdrawal, and cancels it once it covers it
    await env.send(b.refund(cfg, 6_000), LocalSigner(net.payee.private_key))
    assert (await env.state(cid)).withdraw_amount == 9_000
    await env.send(b.refund(cfg, 9_000), LocalSigner(net.payee.private_key))
    state = await env.state(cid)
    assert (state.withdraw_amount, state.withdraw_requested_at, state.balance) == (0, 0, 5_000)
