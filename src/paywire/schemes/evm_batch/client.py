"""Client side of ``batch-settlement`` on EVM: open a channel with one deposit, then sign one cumulative voucher
per request (``charged + amount``), keeping each channel's charged total from the seller's answers.

Checks before trusting an answer (spec "Client Verification Rules"): ``chargedAmount <= amount`` and the new
cumulative equals the old plus ``chargedAmount``; otherwise the channel is marked distrusted and nothing more is
signed on it. A corrective 402 is adopted only with proof: our own signature over the seller's ``voucherState``,
or the escrow's ``totalClaimed`` read from the chain. State lives in a :class:`ChannelBook` (in memory by
default; ``paywire.store.channels.BuyerChannelStore`` keeps it durable).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from typing import Any, Protocol

from paywire.evm import batch as b
from paywire.evm import eip712
from paywire.evm.crypto import address_bytes, recover_address, to_checksum
from paywire.evm.signer import EvmSigner
from paywire.schemes.evm_batch import payload as pl
from paywire.schemes.permit2_client import ChainFor
from paywire.spending import BUDGETED
from paywire.x402.models import PaymentRequirements, SettleResponse

DEPOSIT_MULTIPLIER = 10
"""A new deposit covers this many requests at the offer's maximum (or the seller's ``extra.minDeposit``)."""

class DepositNotBudgeted(RuntimeError):
    """The channel needs a larger deposit than the spend policy reserved (its state moved since): pay again."""


@dataclass(frozen=True, slots=True)
class ClientChannel:
    """What the payer knows of one channel."""

    channel_id: str
    network: str
    config: dict[str, Any]
    charged: int = 0  # the seller's cumulative charge as we accepted it
    balance: int = 0  # deposited minus refunded/withdrawn, as far as we know
    pending_max: int = 0  # the ceiling of the voucher in flight (0: none)
    pending_deposit: int = 0
    distrusted: str = ""  # why we stopped signing on this channel


class ChannelBook(Protocol):
    async def get(self, channel_id: str) -> ClientChannel | None: ...

    async def put(self, channel: ClientChannel) -> None: ...

    async def drop(self, channel_id: str) -> None: ...


class MemoryBook:
    """Channel state in memory (lost with the process; the seller's ``channelState`` and the chain recover it)."""

    def __init__(self) -> None:
        self.channels: dict[str, ClientChannel] = {}

    async def get(self, channel_id: str) -> ClientChannel | None:
        return self.channels.get(channel_id)

    async def put(self, channel: ClientChannel) -> None:
        self.channels[channel.channel_id] = channel

    async def drop(self, channel_id: str) -> None:
        self.channels.pop(channel_id, None)


class ChannelDistrusted(RuntimeError):
    """The seller's answers on this channel did not add up: sign nothing more on it (withdraw instead)."""


class BatchEvmClient:
    """``batch-settlement`` × ``eip155:*`` for the payer role (one channel per seller, token and salt)."""

    scheme = pl.SCHEME
    network_pattern = "eip155:*"

    def __init__(self, signer: EvmSigner, *, book: ChannelBook | None = None, salt: int = 0,
                 deposit_multiplier: int = DEPOSIT_MULTIPLIER, max_deposit: int | None = None,
                 clock: Callable[[], float] = time.time) -> None:
        self.signer = signer
        self.max_deposit = max_deposit
        """Atomic units one deposit may take at most (default: ``deposit_multiplier`` × the offer's maximum); a
        seller's ``extra.minDeposit`` above it is not followed."""
        self.book: ChannelBook = book if book is not None else MemoryBook()
        self.salt = salt.to_bytes(32, "big")
        self.deposit_multiplier = deposit_multiplier
        self._clock = clock
        self._chain_for: ChainFor | None = None

    async def use_store(self, db: Any, account: str = "") -> None:
        """Keep channel state durably in the buyer's store (the buyer engine calls this when it opens it)."""
        from paywire.store.channels import BuyerChannelStore

        if not isinstance(self.book, MemoryBook):
            return
        durable = BuyerChannelStore(db, account or self.signer.address)
        await durable.migrate()
        for ch in list(self.book.channels.values()):
            await durable.put(ch)
        self.book = durable

    def use_chains(self, chain_for: ChainFor) -> None:
        """Let the client read the escrow (cold start and corrective 402s without a voucher proof)."""
        self._chain_for = chain_for

    def can_pay(self, requirements: PaymentRequirements) -> bool:
        ra = requirements.extra.get("receiverAuthorizer")
        return (requirements.scheme == pl.SCHEME and requirements.network.startswith("eip155:")
                and isinstance(ra, str) and len(ra) == 42 and int(ra, 16) != 0)

    def ledger_fields(self, payload: Mapping[str, Any]) -> tuple[str | None, int | None]:
        return (None, None)

    # -- channel identity ---------------------------------------------------------------------------
    def config_for(self, requirements: PaymentRequirements) -> b.ChannelConfig:
        delay = requirements.extra.get("withdrawDelay")
        me = to_checksum(self.signer.address)
        return b.ChannelConfig(me, me, to_checksum(requirements.pay_to),
                               to_checksum(str(requirements.extra["receiverAuthorizer"])),
                               to_checksum(requirements.asset),
                               int(delay) if isinstance(delay, int | str) and str(delay).isdigit()
                               else b.MIN_WITHDRAW_DELAY, self.salt)

    def channel_id(self, requirements: PaymentRequirements) -> str:
        return b.hex32(self.config_for(requirements).channel_id(_chain_id(requirements.network)))

    async def channel(self, requirements: PaymentRequirements) -> ClientChannel:
        cfg = self.config_for(requirements)
        cid = b.hex32(cfg.channel_id(_chain_id(requirements.network)))
        found = await self.book.get(cid)
        if found is not None:
            return found
        ch = ClientChannel(cid, requirements.network, cfg.to_wire())
        onchain = await self._read(requirements.network, b.bytes32(cid))
        if onchain is not None:  # cold start: the escrow's claims are the baseline
            ch = replace(ch, charged=onchain.total_claimed, balance=onchain.balance)
        return ch

    async def _read(self, network: str, cid: bytes) -> b.OnchainChannel | None:
        if self._chain_for is None:
            return None
        chain = await self._chain_for(network)
        if chain is None:
            return None
        raw = await chain.call(b.MULTICALL3_ADDRESS, b.try_aggregate(b.channel_state_calls(cid)))
        return b.decode_channel_state(b.decode_try_aggregate(raw))

    # -- paying ------------------------------------------------------------------------------------
    async def create_payload(self, requirements: PaymentRequirements) -> Mapping[str, Any]:
        """A voucher for ``charged + amount``, with a deposit first when the balance does not cover it."""
        ch = await self.channel(requirements)
        if ch.distrusted:
            raise ChannelDistrusted(f"channel {ch.channel_id}: {ch.distrusted}")
        cfg = b.ChannelConfig.from_wire(ch.config)
        chain_id = _chain_id(requirements.network)
        cid = b.bytes32(ch.channel_id)
        ceiling = ch.charged + requirements.amount
        deposit = self._deposit(ch, requirements)
        allowed = BUDGETED.get()  # what the buyer's spend policy reserved for this payment (None: no buyer)
        if allowed is not None and deposit > allowed:
            raise DepositNotBudgeted(f"channel {ch.channel_id} needs a deposit of {deposit} atomic units, but the "
                                     f"spend policy reserved {allowed}: pay again")
        voucher = await self._voucher(cid, ceiling, chain_id)
        out: dict[str, Any] = {"type": "voucher", "channelConfig": cfg.to_wire(), "voucher": voucher.to_wire()}
        if deposit:
            out["type"] = "deposit"
            out["deposit"] = {"amount": str(deposit),
                              "authorization": await self._deposit_authorization(requirements, cid, deposit)}
        await self.book.put(replace(ch, pending_max=ceiling, pending_deposit=deposit))
        return out

    def _deposit(self, ch: ClientChannel, requirements: PaymentRequirements) -> int:
        """What paying ``requirements`` on ``ch`` deposits: 0 while the voucher fits in the deposited balance."""
        ceiling = ch.charged + requirements.amount
        if ceiling <= ch.balance:
            return 0
        hint = requirements.extra.get("minDeposit")
        floor = int(hint) if isinstance(hint, str) and hint.isdigit() and len(hint) < 40 else 0
        cap = self.max_deposit if self.max_deposit is not None else requirements.amount * self.deposit_multiplier
        return max(ceiling - ch.balance, min(max(requirements.amount * self.deposit_multiplier, floor), cap))

    async def budget_amount(self, requirements: PaymentRequirements) -> int:
        """What the spend policy reserves for paying ``requirements`` (the buyer engine asks before signing): the
        deposit when the channel must be opened or topped up, else 0 — a voucher draws down inside the deposit
        already reserved. The unspent deposit comes back to the budget on a refund or withdrawal."""
        ch = await self.channel(requirements)
        return 0 if ch.distrusted else self._deposit(ch, requirements)

    async def _voucher(self, cid: bytes, ceiling: int, chain_id: int) -> pl.Voucher:
        sig = await self.signer.sign_digest(b.voucher_digest(cid, ceiling, chain_id))
        return pl.Voucher(cid, ceiling, sig)

    async def _deposit_authorization(self, requirements: PaymentRequirements, cid: bytes,
                                     amount: int) -> dict[str, Any]:
        now = int(self._clock())
        chain_id = _chain_id(requirements.network)
        valid_before = now + max(requirements.max_timeout_seconds, 300)
        if requirements.extra.get("assetTransferMethod") == "permit2":
            nonce = int.from_bytes(os.urandom(32), "big")
            digest = b.permit2_deposit_digest(requirements.asset, amount, nonce, valid_before, cid, chain_id)
            sig = await self.signer.sign_digest(digest)
            return {"permit2Authorization": {
                "from": to_checksum(self.signer.address),
                "permitted": {"token": to_checksum(requirements.asset), "amount": str(amount)},
                "spender": to_checksum(b.PERMIT2_COLLECTOR_ADDRESS), "nonce": str(nonce),
                "deadline": str(valid_before), "witness": {"channelId": b.hex32(cid)}, "signature": "0x" + sig.hex()}}
        name, version = requirements.extra.get("name"), requirements.extra.get("version")
        if not isinstance(name, str) or not isinstance(version, str):
            raise ValueError("the offer lacks the token's EIP-712 name/version (extra.name, extra.version)")
        salt = int.from_bytes(os.urandom(32), "big")
        digest = eip712.transfer_authorization_digest(
            eip712.domain_separator(name, version, chain_id, requirements.asset), address_bytes(self.signer.address),
            address_bytes(b.ERC3009_COLLECTOR_ADDRESS), amount, 0, valid_before, b.erc3009_deposit_nonce(cid, salt),
            typehash=eip712.RECEIVE_WITH_AUTHORIZATION_TYPEHASH)
        sig = await self.signer.sign_digest(digest)
        return {"erc3009Authorization": {"validAfter": "0", "validBefore": str(valid_before),
                                         "salt": "0x" + salt.to_bytes(32, "big").hex(), "signature": "0x" + sig.hex()}}

    async def refund_payload(self, requirements: PaymentRequirements, amount: int | None = None) -> Mapping[str, Any]:
        """A cooperative refund: a zero-charge voucher (``charged``) and optionally how much to return."""
        ch = await self.channel(requirements)
        cid = b.bytes32(ch.channel_id)
        voucher = await self._voucher(cid, ch.charged, _chain_id(requirements.network))
        out: dict[str, Any] = {"type": "refund", "channelConfig": ch.config, "voucher": voucher.to_wire()}
        if amount is not None:
            out["amount"] = str(amount)
        return out

    # -- answers -----------------------------------------------------------------------------------
    async def settled(self, requirements: PaymentRequirements, settlement: SettleResponse) -> None:
        """Adopt a paid answer's ``chargedAmount`` after checking it (module docs); a refund's new balance."""
        if not settlement.success or not isinstance(settlement.extra, Mapping):
            return
        ch = await self.channel(requirements)
        state = settlement.extra.get("channelState")
        state = state if isinstance(state, Mapping) else {}
        if "chargedAmount" not in settlement.extra:  # a refund: the escrow's new balance
            if "balance" in state:
                await self.book.put(replace(ch, balance=int(str(state["balance"])), pending_max=0, pending_deposit=0))
            return
        try:
            charged = int(str(settlement.extra["chargedAmount"]))
            cumulative = state.get("chargedCumulativeAmount")
        except ValueError:
            charged, cumulative = -1, None
        problem = ""
        if charged < 0 or charged > requirements.amount:
            problem = f"the seller charged {charged}, more than the offer's maximum {requirements.amount}"
        elif cumulative is not None and str(cumulative) != str(ch.charged + charged):
            problem = f"the seller's cumulative {cumulative} is not {ch.charged} + {charged}"
        if problem:
            await self.book.put(replace(ch, distrusted=problem, pending_max=0))
            raise ChannelDistrusted(problem)
        await self.book.put(replace(ch, charged=ch.charged + charged, balance=ch.balance + ch.pending_deposit,
                                    pending_max=0, pending_deposit=0))

    async def recover(self, reason: str, requirements: PaymentRequirements, offer_extra: Mapping[str, Any]) -> bool:
        """A corrective 402 (``cumulative_amount_mismatch``): adopt the seller's charged total when our own
        signature proves it (``voucherState``) or the chain says so; True when the next voucher will differ."""
        if reason not in (pl.CUMULATIVE_MISMATCH, pl.CUMULATIVE_BELOW_CLAIMED):
            return False
        ch = await self.channel(requirements)
        cs, vs = offer_extra.get("channelState"), offer_extra.get("voucherState")
        cid = b.bytes32(ch.channel_id)
        if isinstance(cs, Mapping) and isinstance(vs, Mapping) and str(cs.get("channelId", "")).lower() == ch.channel_id:
            try:
                charged = int(str(cs["chargedCumulativeAmount"]))
                signed = int(str(vs["signedMaxClaimable"]))
                sig = b.hex_bytes(vs["signature"])
                balance = int(str(cs.get("balance", ch.balance)))
            except (KeyError, ValueError):
                return False
            digest = b.voucher_digest(cid, signed, _chain_id(requirements.network))
            mine = recover_address(digest, sig) if len(sig) == 65 else None
            if mine is None or mine != address_bytes(self.signer.address) or charged > signed:
                return False
            await self.book.put(replace(ch, charged=charged, balance=max(balance, ch.balance), pending_max=0))
            return charged != ch.charged or balance != ch.balance
        onchain = await self._read(requirements.network, cid)
        if onchain is None:
            return False
        await self.book.put(replace(ch, charged=onchain.total_claimed, balance=onchain.balance, pending_max=0))
        return True


def _chain_id(network: str) -> int:
    return int(network.split(":", 1)[1])


__all__ = ["DEPOSIT_MULTIPLIER", "BatchEvmClient", "ChannelBook", "ChannelDistrusted", "ClientChannel", "DepositNotBudgeted", "MemoryBook"]
