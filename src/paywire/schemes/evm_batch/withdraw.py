"""The payer's exit without the seller (spec "Timed withdrawal"): ``start_withdrawal`` asks the escrow to release
(part of) the unclaimed deposit after the channel's withdraw delay; ``finish_withdrawal`` collects it once the
delay passed (capped to what is still unclaimed then: the seller may claim its vouchers meanwhile). The payer's
own key sends both transactions (it pays the gas)."""

from __future__ import annotations

from dataclasses import dataclass

from paywire.chain.base import Chain
from paywire.chain.tx import TxSender
from paywire.errors import ChainError, ChainRevert
from paywire.evm import batch as b


@dataclass(frozen=True, slots=True)
class Withdrawal:
    transaction: str
    amount: int  # requested (start) or paid out (finish)
    ready_at: int  # unix time from which ``finish_withdrawal`` succeeds (start); 0 for finish


async def _state(chain: Chain, cid: bytes) -> b.OnchainChannel:
    raw = await chain.call(b.MULTICALL3_ADDRESS, b.try_aggregate(b.channel_state_calls(cid)))
    return b.decode_channel_state(b.decode_try_aggregate(raw))


async def _send(chain: Chain, private_key: bytes, data: bytes, what: str) -> str:
    sender = TxSender(chain, private_key)
    try:
        await chain.call(b.BATCH_SETTLEMENT_ADDRESS, data, sender=sender.address)
    except ChainRevert as exc:
        raise ChainError(f"{what} would revert: {b.error_name(exc.data) or exc.reason}") from None
    receipt = await sender.send_and_wait(b.BATCH_SETTLEMENT_ADDRESS, data)
    if receipt.status != 1:
        raise ChainError(f"{what} reverted (transaction {receipt.transaction_hash})")
    return receipt.transaction_hash


async def start_withdrawal(chain: Chain, private_key: bytes, config: b.ChannelConfig,
                           amount: int | None = None) -> Withdrawal:
    """``initiateWithdraw`` for ``amount`` (default: all the unclaimed escrow). ``ChainError`` says why not."""
    chain_id = await chain.chain_id()
    state = await _state(chain, config.channel_id(chain_id))
    want = state.available if amount is None else amount
    if want <= 0:
        raise ChainError("nothing to withdraw: the channel's escrow is all claimed")
    tx = await _send(chain, private_key, b.initiate_withdraw(config, want), "initiateWithdraw")
    started = await chain.block_timestamp("latest")
    return Withdrawal(tx, want, started + config.withdraw_delay)


async def finish_withdrawal(chain: Chain, private_key: bytes, config: b.ChannelConfig) -> Withdrawal:
    """``finalizeWithdraw`` once the delay passed; the amount paid out comes from the escrow's balance change."""
    chain_id = await chain.chain_id()
    cid = config.channel_id(chain_id)
    before = (await _state(chain, cid)).balance
    tx = await _send(chain, private_key, b.finalize_withdraw(config), "finalizeWithdraw")
    return Withdrawal(tx, before - (await _state(chain, cid)).balance, 0)


__all__ = ["Withdrawal", "finish_withdrawal", "start_withdrawal"]
