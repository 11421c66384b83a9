"""The EVM ``Rail`` (``paywire.settlement.rail``): settlement transactions over ``Chain`` + ``TxSender`` keys.

``EvmNetwork`` says which chain and keys to settle with; ``EvmRail`` is what the settlement engine drives on
it. Authorizations are EIP-3009's (``authorizationState`` and the ``AuthorizationUsed`` event) or Permit2's
(an intent whose target is an x402 Permit2 proxy: Permit2's nonce bitmap, and the transaction that sent the
intent's own calldata); outcomes are judged by the ERC-20 ``Transfer`` log.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from paywire.chain.base import Chain, Receipt
from paywire.chain.tx import Recorder as TxRecorder
from paywire.chain.tx import SenderPool, SignedTx, TxSender
from paywire.evm import permit2 as p2
from paywire.evm import token
from paywire.evm.crypto import address_bytes, keccak256, to_checksum
from paywire.settlement.rail import Intent, Mined, Recorder, SentTx

__all__ = ["AUTHORIZATION_USED_TOPIC", "TRANSFER_TOPIC", "EvmNetwork", "EvmRail"]

AUTHORIZATION_USED_TOPIC = keccak256(b"AuthorizationUsed(address,bytes32)")
TRANSFER_TOPIC = keccak256(b"Transfer(address,address,uint256)")


@dataclass(slots=True)
class EvmNetwork:
    """One chain the facilitator settles on, with the keys that pay gas (used round-robin).

    ``confirmations``: blocks a settlement needs (1 = mined) before it is reported settled;
    ``gas_limit``: fixed gas per settlement transaction (default: the facilitator's, else an estimate).
    ``named_sender``: the key clients bind to (upto's ``facilitatorAddress``, batch-settlement's
    ``receiverAuthorizer``), the fleet's shared key; default: the first of ``senders``. It sends only the
    settlements bound to it, not the round-robin ones.
    """

    network: str
    chain: Chain
    senders: Sequence[TxSender]
    confirmations: int = 1
    gas_limit: int | None = None
    named_sender: TxSender | None = None
    _pool: SenderPool | None = field(default=None, repr=False)

    @property
    def named(self) -> TxSender | None:
        """The key ``/supported`` names for this network (None: no keys)."""
        return self.named_sender if self.named_sender is not None else (self.senders[0] if self.senders else None)

    @property
    def all_senders(self) -> list[TxSender]:
        """Every key of the network: the gas keys and the named key when it is not one of them."""
        extra = self.named_sender
        if extra is None or any(s is extra or s.address == extra.address for s in self.senders):
            return list(self.senders)
        return [*self.senders, extra]

    def sender(self) -> TxSender:
        if self._pool is None:
            self._pool = SenderPool(self.senders)
        return self._pool.next()

    def sender_for(self, address: str | None) -> TxSender | None:
        if address is None:
            return None
        return next((s for s in self.all_senders if s.address.lower() == address.lower()), None)


def _sent(tx: SignedTx) -> SentTx:
    return SentTx(hash=tx.hash, raw=tx.raw, signer=tx.sender, nonce=tx.nonce)


def _recorder(record: Recorder | None) -> TxRecorder | None:
    if record is None:
        return None

    async def on_signed(tx: SignedTx) -> bool:
        return await record(_sent(tx))

    return on_signed


class EvmRail:
    """``Rail`` over one ``EvmNetwork``. ``gas_limit``: the facilitator's fixed gas when the network sets
    none; ``log_lookback_blocks``: how far back to look for the transaction that used an authorization."""

    def __init__(self, net: EvmNetwork, *, gas_limit: int | None = None, log_lookback_blocks: int = 100_000) -> None:
        self.net = net
        self.gas_limit = net.gas_limit or gas_limit
        self._lookback = log_lookback_blocks

    @property
    def network(self) -> str:
        return self.net.network

    @property
    def chain(self) -> Chain:
        return self.net.chain

    # -- keys ---------------------------------------------------------------------------------------------
    def next_signer(self) -> str:
        return self.net.sender().address

    def has_signer(self, address: str) -> bool:
        return self.net.sender_for(address) is not None

    def account(self, address: str) -> str:
        return to_checksum(address)

    def _sender(self, signer: str | None) -> TxSender:
        found = self.net.sender_for(signer)
        return found if found is not None else self.net.sender()

    async def estimate(self, intent: Intent, signer: str) -> int:
        """Gas for the intent's transaction from ``signer`` (with its margin); ``ChainRevert`` if it would revert."""
        return await self._sender(signer).estimate(intent.target, intent.payload)

    # -- sending ------------------------------------------------------------------------------------------
    async def send(
        self, intent: Intent, *, signer: str | None = None, limit: int | None = None, record: Recorder | None = None,
        in_time: Callable[[], bool] | None = None,
    ) -> tuple[SentTx, str | None]:
        tx, unknown = await self._sender(signer).send_recorded(
            intent.target, intent.payload, gas=self.gas_limit or limit, record=_recorder(record), in_time=in_time)
        return _sent(tx), str(unknown) if unknown is not None else None

    async def rebroadcast(self, raw: bytes) -> str | None:
        if await TxSender.behind_a_gap(self.chain, raw):
            return "nonce_high"
        return await TxSender.broadcast_raw(self.chain, raw)

    async def replace(self, raw: bytes, signer: str, *, record: Recorder) -> SentTx:
        sender = self.net.sender_for(signer)
        if sender is None:
            raise ValueError(f"{signer} is not a key of this facilitator")
        tx, _ = await sender.replace(SignedTx.decode(raw, signer), record=_recorder(record))
        return _sent(tx)

    # -- what the chain says ------------------------------------------------------------------------------
    async def receipt(self, tx_hash: str, intent: Intent, *, wait: float = 0.0) -> Mined | None:
        if wait > 0:
            return await self._mined(await self.chain.wait_for_receipt(tx_hash, timeout=wait), intent)
        receipt = await self.chain.get_transaction_receipt(tx_hash)
        return None if receipt is None else await self._mined(receipt, intent)

    async def knows(self, tx_hash: str) -> bool:
        return await self.chain.request("eth_getTransactionByHash", [tx_hash]) is not None

    async def now(self) -> int:
        return await self.chain.block_timestamp()

    async def is_used(self, intent: Intent) -> bool:
        if _is_permit2(intent):
            word = await self.chain.call(p2.PERMIT2_ADDRESS, p2.nonce_bitmap(intent.payer, int(intent.nonce, 16)))
            return p2.nonce_used(token.decode_uint(word), int(intent.nonce, 16))
        data = token.authorization_state(intent.payer, _nonce(intent))
        return token.decode_bool(await self.chain.call(intent.asset, data))

    async def find_use(self, intent: Intent) -> Mined | None:
        head = await self.chain.block_number()
        if _is_permit2(intent):
            return await self._find_permit2_use(intent, max(0, head - self._lookback))
        logs = await self.chain.get_logs(
            address=intent.asset,
            topics=[AUTHORIZATION_USED_TOPIC, bytes(12) + address_bytes(intent.payer), _nonce(intent)],
            from_block=max(0, head - self._lookback), to_block="latest",
        )
        if not logs:
            return None
        receipt = await self.chain.get_transaction_receipt(logs[-1].transaction_hash)
        return None if receipt is None else await self._mined(receipt, intent)

    async def _find_permit2_use(self, intent: Intent, from_block: int) -> Mined | None:
        """Permit2 logs no use of a nonce: find the payer's ``Transfer`` logs and, among their transactions,
        the one that sent this intent's calldata (it carries the signature, so it is this authorization's)."""
        logs = await self.chain.get_logs(
            address=intent.asset, topics=[TRANSFER_TOPIC, bytes(12) + address_bytes(intent.payer)],
            from_block=from_block, to_block="latest",
        )
        for entry in reversed(logs):
            tx = await self.chain.request("eth_getTransactionByHash", [entry.transaction_hash])
            sent = (tx or {}).get("input") or (tx or {}).get("data") or ""
            if sent.lower() == "0x" + intent.payload.hex():
                receipt = await self.chain.get_transaction_receipt(entry.transaction_hash)
                return None if receipt is None else await self._mined(receipt, intent)
        return None

    async def _mined(self, receipt: Receipt, intent: Intent) -> Mined:
        confirmed = self.net.confirmations <= 1 or (
            await self.chain.block_number() >= receipt.block_number + self.net.confirmations - 1)
        return Mined(hash=receipt.transaction_hash, block_number=receipt.block_number, ok=receipt.status == 1,
                     paid=receipt.status == 1 and _paid(receipt, intent), confirmed=confirmed)


def _is_permit2(intent: Intent) -> bool:
    return intent.target.lower() in _PERMIT2_PROXIES


_PERMIT2_PROXIES = frozenset({p2.EXACT_PROXY_ADDRESS.lower(), p2.UPTO_PROXY_ADDRESS.lower()})


def _nonce(intent: Intent) -> bytes:
    return bytes.fromhex(intent.nonce.removeprefix("0x"))


def _paid(receipt: Receipt, intent: Intent) -> bool:
    """The receipt holds the ERC-20 ``Transfer(payer, pay_to, amount)`` log of the intent's asset."""
    want = (TRANSFER_TOPIC, bytes(12) + address_bytes(intent.payer), bytes(12) + address_bytes(intent.pay_to))
    return any(
        log.address.lower() == intent.asset.lower() and log.topics[:3] == want
        and int.from_bytes(log.data[:32], "big") == intent.amount
        for log in receipt.logs
    )
