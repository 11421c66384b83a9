"""Build, sign (coincurve, byte-for-byte as eth_account would) and send EIP-1559 transactions from local keys.

* ``TxSender`` — one key: a local nonce manager (resync on error), fees from the chain with a cap, and
  *record-before-broadcast* (``send_recorded``): the signed bytes are handed to a callback (which persists
  them) before they reach the node, so a crash after sending can be recovered by re-broadcasting the same
  bytes. ``replace`` re-signs a stuck transaction with the same nonce and bumped fees.
* ``SenderPool`` — several keys used round-robin.
"""

from __future__ import annotations

import asyncio
import functools
import math
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import coincurve
import rlp
from eth_utils.address import to_canonical_address, to_checksum_address
from eth_utils.crypto import keccak

from paywire.chain.base import Chain, Receipt
from paywire.chain.rpc import RpcError
from paywire.errors import ChainError, ChainRevert
from paywire.evm.crypto import address_bytes, address_of_key, keccak256, to_checksum

__all__ = [
    "FeeCapExceeded",
    "RecordRefused",
    "SendErrorKind",
    "SenderPool",
    "SignedTx",
    "TooLate",
    "TxSender",
    "classify_send_error",
    "contract_address",
]

SendErrorKind = Literal["known", "nonce_low", "nonce_high", "underpriced", "rejected", "unknown"]

_KNOWN_HINTS = ("already known", "already imported", "known transaction", "already exists", "alreadyknown")
_LOW_HINTS = ("nonce too low", "nonce is too low", "invalid nonce", "nonce has already been used", "oldnonce")
_HIGH_HINTS = ("nonce too high", "nonce gap", "future nonce")
_UNDERPRICED_HINTS = ("underpriced", "replacement", "fee too low", "max fee per gas less than")


def classify_send_error(exc: ChainError) -> SendErrorKind:
    """What an ``eth_sendRawTransaction`` error means for the transaction.

    ``known``: the node already has exactly this transaction (treat as accepted); ``nonce_low``: the
    sender's nonce was already used (by this or another transaction); ``nonce_high``: a gap before it;
    ``underpriced``: fees too low (or a replacement without enough bump); ``rejected``: any other answer
    of the node (definitely not accepted); ``unknown``: no usable answer (timeout, garbage) — the
    transaction may or may not be in the node.
    """
    if not isinstance(exc, RpcError) or isinstance(exc, ChainRevert):
        return "unknown"
    text = exc.message.lower()
    if any(h in text for h in _KNOWN_HINTS):
        return "known"
    if any(h in text for h in _LOW_HINTS):
        return "nonce_low"
    if any(h in text for h in _HIGH_HINTS):
        return "nonce_high"
    if any(h in text for h in _UNDERPRICED_HINTS):
        return "underpriced"
    if "nonce" in text:
        return "nonce_low"
    return "rejected"


def contract_address(deployer: str, nonce: int) -> str:
    """The CREATE address for ``deployer`` at ``nonce``."""
    return to_checksum_address(keccak(rlp.encode([to_canonical_address(deployer), nonce]))[12:])


class FeeCapExceeded(ChainError):
    """The chain's base fee is above the configured cap: a transaction now would never be mined."""


class RecordRefused(ChainError):
    """``send_recorded``'s callback declined to persist the transaction; nothing was broadcast."""


class TooLate(ChainError):
    """``send_recorded``'s ``in_time`` said no when the transaction's turn came: nothing was broadcast, and its
    nonce goes to the next send of the key."""


@dataclass(frozen=True, slots=True)
class SignedTx:
    """A signed EIP-1559 transaction and what it was built from."""

    raw: bytes
    hash: str  # 0x-hex, lowercase
    sender: str
    nonce: int
    to: str | None
    data: bytes
    value: int
    gas: int
    max_fee: int
    tip: int
    chain_id: int

    @classmethod
    def decode(cls, raw: bytes, sender: str) -> SignedTx:
        """Rebuild from the signed bytes of a type-2 transaction (as stored before broadcasting)."""
        raw = bytes(raw)
        if not raw or raw[0] != 2:
            raise ValueError("not an EIP-1559 (type 2) transaction")
        f = rlp.decode(raw[1:])
        if not isinstance(f, list) or len(f) != 12:
            raise ValueError("malformed EIP-1559 transaction")

        def n(b: Any) -> int:
            return int.from_bytes(bytes(b), "big")

        to = to_checksum_address(bytes(f[5])) if f[5] else None
        return cls(raw=raw, hash="0x" + keccak(raw).hex(), sender=sender, nonce=n(f[1]), to=to,
                   data=bytes(f[7]), value=n(f[6]), gas=n(f[4]), max_fee=n(f[3]), tip=n(f[2]), chain_id=n(f[0]))


Recorder = Callable[[SignedTx], Awaitable[bool]]


@functools.lru_cache(maxsize=256)
def _checksum(address: bytes) -> str:
    return to_checksum(address)


def _rlp_head(length: int, offset: int) -> bytes:
    if length < 56:
        return bytes((offset + length,))
    n = length.to_bytes((length.bit_length() + 7) // 8, "big")
    return bytes((offset + 55 + len(n),)) + n


def _rlp_bytes(b: bytes) -> bytes:
    """RLP of a byte string (the flat fields of a transaction need nothing more than this and lists)."""
    if len(b) == 1 and b[0] < 0x80:
        return b
    return _rlp_head(len(b), 0x80) + b


def _rlp_int(n: int) -> bytes:
    if n < 0:
        raise ValueError("RLP encodes non-negative integers only")
    return _rlp_bytes(n.to_bytes((n.bit_length() + 7) // 8, "big"))


def _finish(turn: asyncio.Future[None]) -> None:
    if not turn.done():
        turn.set_result(None)


class TxSender:
    """Sends EIP-1559 transactions for one private key over any ``Chain``.

    * gas: ``estimate_gas`` × ``gas_margin`` (default 1.2) unless given;
    * fees: ``maxFeePerGas = 2 × latest base fee + tip`` (tip from ``fee_data``), capped by ``max_fee_cap``
      (``FeeCapExceeded`` when the base fee alone is above it); read at most every ``fee_ttl`` seconds;
    * nonce: a local counter, initialised from ``get_transaction_count(address, "pending")``; broadcasts go
      out one at a time in the order the sends began (use one ``TxSender`` per event loop), while the next
      sends already sign and record (``send_recorded``). After any failed send the counter is re-read from
      the chain; a nonce error ("nonce too low/high", "replacement underpriced") is retried with the
      re-read nonce.
    """

    def __init__(
        self,
        chain: Chain,
        private_key: bytes | str,
        *,
        max_fee_cap: int | None = None,
        gas_margin: float = 1.2,
        nonce_retries: int = 3,
        fee_ttl: float = 1.0,
        fee_bump: float = 1.125,
    ) -> None:
        self.chain = chain
        key = bytes.fromhex(private_key.removeprefix("0x")) if isinstance(private_key, str) else bytes(private_key)
        if len(key) != 32:
            raise ValueError(f"a private key is 32 bytes, got {len(key)}")
        self._key = coincurve.PrivateKey(key)  # raises ValueError when out of the curve's range
        self._address = to_checksum(address_of_key(key))
        self.max_fee_cap = max_fee_cap
        self.gas_margin = gas_margin
        self.nonce_retries = nonce_retries
        self.fee_ttl = fee_ttl
        self.fee_bump = fee_bump
        self._nonce: int | None = None  # the next nonce to broadcast (None: read it from the chain)
        self._guess: int | None = None  # the nonce for the next send to take its place in the order
        self._tail: asyncio.Future[None] | None = None  # done when the last send in the order is over
        self._lock = asyncio.Lock()
        self._fee_cache: tuple[float, int, int] | None = None
        self._chain_id: tuple[Chain, int] | None = None  # (chain, its id): a chain's id does not change
        self._fee_lock = asyncio.Lock()
        self.in_flight = 0  # transactions being prepared or broadcast right now (for load balancing)

    @property
    def address(self) -> str:
        return self._address

    @property
    def private_key(self) -> bytes:
        """The 32-byte key (batch-settlement's receiver authorizer signs with the fleet's named key)."""
        return bytes(self._key.secret)

    def __repr__(self) -> str:
        return f"TxSender({self.address})"

    # -- fees, gas, nonce ---------------------------------------------------------------------------------

    async def fees(self) -> tuple[int, int]:
        """``(maxFeePerGas, maxPriorityFeePerGas)`` for a transaction now."""
        cached = self._fee_cache
        if cached is not None and time.monotonic() - cached[0] < self.fee_ttl:
            return cached[1], cached[2]
        async with self._fee_lock:  # one refresh at a time; concurrent callers reuse its answer
            cached = self._fee_cache
            if cached is not None and time.monotonic() - cached[0] < self.fee_ttl:
                return cached[1], cached[2]
            return await self._refresh_fees()

    async def _refresh_fees(self) -> tuple[int, int]:
        fees = await self.chain.fee_data()
        tip = fees.max_priority_fee
        max_fee = 2 * fees.base_fee + tip
        if self.max_fee_cap is not None:
            if fees.base_fee > self.max_fee_cap:
                raise FeeCapExceeded(
                    f"base fee {fees.base_fee} wei is above the cap of {self.max_fee_cap} wei per gas"
                )
            max_fee = min(max_fee, self.max_fee_cap)
            tip = min(tip, max_fee)
        self._fee_cache = (time.monotonic(), max_fee, tip)
        return max_fee, tip

    async def _tx_params(self) -> tuple[int, int, int]:
        """``(chain id, maxFeePerGas, tip)``: from the caches when both are fresh (no task, no await of I/O),
        else read from the chain together."""
        known, cached = self._chain_id, self._fee_cache
        if known is not None and known[0] is self.chain and cached is not None \
                and time.monotonic() - cached[0] < self.fee_ttl:
            return known[1], cached[1], cached[2]
        chain_id, (max_fee, tip) = await asyncio.gather(self.chain.chain_id(), self.fees())
        self._chain_id = (self.chain, chain_id)
        return chain_id, max_fee, tip

    async def estimate(self, to: str | None, data: bytes = b"", value: int = 0) -> int:
        """Gas for the transaction, with the margin applied. ``ChainRevert`` if it would revert."""
        estimate: dict[str, Any] = {"from": self.address, "data": bytes(data), "value": value}
        if to is not None:
            estimate["to"] = to
        return math.ceil(await self.chain.estimate_gas(estimate) * self.gas_margin)

    async def resync(self) -> int:
        """Forget the local nonce counter and re-read it from the chain (pending)."""
        async with self._lock:
            self._nonce = await self.chain.get_transaction_count(self.address, "pending")
            self._guess = None
            return self._nonce

    def sign_with(
        self, *, to: str | None, data: bytes, value: int, gas: int, nonce: int, max_fee: int, tip: int,
        chain_id: int,
    ) -> SignedTx:
        """Sign an EIP-1559 transaction locally (no I/O, no nonce bookkeeping): RLP + keccak + libsecp256k1,
        byte-for-byte what ``eth_account`` produces, at a fraction of its cost."""
        to_b = address_bytes(to) if to is not None else b""
        fields = (_rlp_int(chain_id) + _rlp_int(nonce) + _rlp_int(tip) + _rlp_int(max_fee) + _rlp_int(gas)
                  + _rlp_bytes(to_b) + _rlp_int(value) + _rlp_bytes(bytes(data)) + b"\xc0")
        sighash = keccak256(b"\x02" + _rlp_head(len(fields), 0xC0) + fields)
        sig = self._key.sign_recoverable(sighash, hasher=None)
        body = fields + _rlp_int(sig[64]) + _rlp_bytes(sig[:32].lstrip(b"\x00")) + _rlp_bytes(sig[32:64].lstrip(b"\x00"))
        raw = b"\x02" + _rlp_head(len(body), 0xC0) + body
        return SignedTx(
            raw=raw, hash="0x" + keccak256(raw).hex(), sender=self.address, nonce=nonce,
            to=_checksum(to_b) if to is not None else None, data=bytes(data), value=value, gas=gas,
            max_fee=max_fee, tip=tip, chain_id=chain_id,
        )

    # -- sending ------------------------------------------------------------------------------------------

    async def send_recorded(
        self,
        to: str | None,
        data: bytes = b"",
        value: int = 0,
        gas: int | None = None,
        *,
        record: Recorder | None = None,
        in_time: Callable[[], bool] | None = None,
    ) -> tuple[SignedTx, ChainError | None]:
        """Reserve a nonce, sign, ``await record(tx)``, and only then broadcast.

        Returns ``(tx, None)`` when the node accepted it, ``(tx, error)`` when the outcome is unknown
        (timeout/garbage: the bytes may be in the node). If ``record`` returns False nothing is broadcast,
        the nonce is not consumed and ``RecordRefused`` is raised. A nonce error re-reads the nonce, re-signs
        and calls ``record`` again with the new transaction (up to ``nonce_retries`` times). Any other node
        rejection is raised as ``RpcError`` (nothing was accepted); ``ChainRevert`` if gas estimation reverts.

        Overlapped, in order: a send takes its place in this key's broadcast order and a nonce (the one after
        the sends ahead of it) at once, then signs and records while those are still being broadcast, and
        broadcasts when they are done, one at a time, in that order. If its nonce is then not the key's next
        one (a send ahead of it was refused or its record declined), it is signed again with the right nonce
        and recorded again (over the first record) before anything is broadcast.

        ``in_time``: asked when the transaction's turn comes, just before it would be broadcast; False raises
        ``TooLate`` with nothing broadcast (e.g. what it carries expires before it could be mined), and the
        send behind it takes its nonce (signed again, as above).
        """
        if gas is None:
            gas = await self.estimate(to, data, value)
        chain_id, max_fee, tip = await self._tx_params()
        self.in_flight += 1
        turn: asyncio.Future[None] = asyncio.get_running_loop().create_future()  # done: our broadcast is over
        before: asyncio.Future[None] | None = None
        try:
            async with self._lock:  # a place in the broadcast order and a nonce: no broadcast under this lock
                if self._guess is None:  # only a send in its turn sets _nonce: it is the truth, this a guess
                    self._guess = self._nonce if self._nonce is not None else \
                        await self.chain.get_transaction_count(self.address, "pending")
                nonce, self._guess = self._guess, self._guess + 1
                before, self._tail = self._tail, turn
            signed = self.sign_with(to=to, data=data, value=value, gas=gas, nonce=nonce, max_fee=max_fee,
                                    tip=tip, chain_id=chain_id)
            if record is not None and not await record(signed):
                raise RecordRefused("the transaction was not recorded; it was not broadcast")
            if before is not None and not before.done():
                await asyncio.shield(before)  # the sends ahead of us have broadcast (or given up)
            return await self._broadcast_in_turn(signed, record, in_time)
        finally:
            self.in_flight -= 1
            if before is not None and not before.done():  # we gave up early: those behind us still wait for it
                before.add_done_callback(lambda _f: _finish(turn))
            else:
                _finish(turn)

    async def _broadcast_in_turn(
        self, signed: SignedTx, record: Recorder | None, in_time: Callable[[], bool] | None
    ) -> tuple[SignedTx, ChainError | None]:
        """Broadcast ``signed`` (recorded) now that every send ahead of it is done: only one send of this key is
        here at a time, so ``_nonce`` is the key's next nonce. Signs and records again on a stale nonce."""
        attempt = 0
        while True:
            if self._nonce is None:
                self._nonce = await self.chain.get_transaction_count(self.address, "pending")
            if in_time is not None and not in_time():  # _nonce stays: the send behind us signs with it
                raise TooLate(f"{signed.hash} was not broadcast: its turn came too late")
            if signed.nonce != self._nonce:  # a send ahead of us did not use its nonce: take the right one
                signed = self.sign_with(to=signed.to, data=signed.data, value=signed.value, gas=signed.gas,
                                        nonce=self._nonce, max_fee=signed.max_fee, tip=signed.tip,
                                        chain_id=signed.chain_id)
                if record is not None and not await record(signed):
                    raise RecordRefused("the transaction was not recorded; it was not broadcast")
            try:
                await self.chain.send_raw_transaction(signed.raw)
            except ChainError as exc:
                kind = classify_send_error(exc)
                if kind == "known":
                    self._nonce = signed.nonce + 1
                    return signed, None
                self._nonce = self._guess = None  # re-read next time (the sends behind us sign again)
                if kind == "unknown":  # the node may or may not have it
                    return signed, exc
                if kind in ("nonce_low", "nonce_high", "underpriced") and attempt < self.nonce_retries:
                    attempt += 1
                    continue
                raise
            self._nonce = signed.nonce + 1
            return signed, None

    async def send(self, to: str | None, data: bytes = b"", value: int = 0, gas: int | None = None) -> str:
        """Sign and broadcast; returns the transaction hash (not waiting for it to be mined).

        ``to=None`` creates a contract. Raises ``ChainRevert`` if gas estimation reverts and ``ChainError``
        if the node's answer is unusable (the transaction may still have been accepted).
        """
        signed, error = await self.send_recorded(to, data, value, gas)
        if error is not None:
            raise error
        return signed.hash

    async def send_and_wait(
        self, to: str | None, data: bytes = b"", value: int = 0, gas: int | None = None, timeout: float = 60.0
    ) -> Receipt:
        """``send`` then ``wait_for_receipt``; the receipt may have status 0 (reverted when mined)."""
        return await self.chain.wait_for_receipt(await self.send(to, data, value, gas), timeout=timeout)

    async def deploy(self, bytecode: bytes, ctor_args_encoded: bytes = b"", *, timeout: float = 60.0) -> str:
        """Deploy ``bytecode + ctor_args_encoded``, wait for it, return the checksummed contract address."""
        signed, error = await self.send_recorded(None, bytes(bytecode) + bytes(ctor_args_encoded))
        if error is not None:
            raise error
        receipt = await self.chain.wait_for_receipt(signed.hash, timeout=timeout)
        if receipt.status != 1:
            raise ChainRevert("contract creation reverted")
        return contract_address(self.address, signed.nonce)

    async def broadcast(self, raw: bytes) -> SendErrorKind | None:
        """Send already-signed bytes again (recovery). ``None`` when accepted, else the error kind."""
        return await self.broadcast_raw(self.chain, raw)

    @staticmethod
    async def broadcast_raw(chain: Chain, raw: bytes) -> SendErrorKind | None:
        """``eth_sendRawTransaction`` of stored bytes; any key's transaction, no nonce bookkeeping."""
        try:
            await chain.send_raw_transaction(bytes(raw))
        except ChainError as exc:
            kind = classify_send_error(exc)
            return None if kind == "known" else kind
        return None

    @staticmethod
    async def behind_a_gap(chain: Chain, raw: bytes) -> bool:
        """True when stored bytes carry a nonce above their sender's next one on the node: sent now they would
        wait for a transaction that may never come (a node such as anvil or geth queues them without a word).
        That is left behind when a send was recorded with the nonce after one that the node then refused, and
        the process died before signing it again (``send_recorded``). Unreadable bytes: False."""
        from eth_account import Account  # ~0.5 s to import; this path is rare

        try:
            sender = Account.recover_transaction(bytes(raw))
            nonce = SignedTx.decode(raw, sender).nonce
        except Exception:  # not a transaction we can read: let the node say what it thinks of it
            return False
        return nonce > await chain.get_transaction_count(sender, "pending")

    async def replace(self, tx: SignedTx, *, record: Recorder | None = None) -> tuple[SignedTx, ChainError | None]:
        """Re-sign a stuck ``tx`` with the same nonce and fees bumped by ``fee_bump`` (at least the chain's
        current fees), record it, broadcast it. Either version may end up mined; ``ChainError`` kinds as in
        ``send_recorded``; an ``RpcError`` classified ``nonce_low`` means the nonce was already mined."""
        if tx.sender.lower() != self.address.lower():
            raise ValueError(f"{tx.hash} was signed by {tx.sender}, not {self.address}")
        self._fee_cache = None
        max_fee, tip = await self.fees()
        max_fee = max(max_fee, math.ceil(tx.max_fee * self.fee_bump))
        tip = max(tip, math.ceil(tx.tip * self.fee_bump))
        if self.max_fee_cap is not None and max_fee > self.max_fee_cap:
            raise FeeCapExceeded(f"replacing {tx.hash} needs {max_fee} wei per gas, above the cap")
        tip = min(tip, max_fee)
        bumped = self.sign_with(to=tx.to, data=tx.data, value=tx.value, gas=tx.gas, nonce=tx.nonce,
                                max_fee=max_fee, tip=tip, chain_id=tx.chain_id)
        async with self._lock:
            if record is not None and not await record(bumped):
                raise RecordRefused("the replacement was not recorded; it was not broadcast")
            try:
                await self.chain.send_raw_transaction(bumped.raw)
            except ChainError as exc:
                kind = classify_send_error(exc)
                if kind == "known":
                    return bumped, None
                if kind == "unknown":
                    return bumped, exc
                raise
            return bumped, None


class SenderPool:
    """Several ``TxSender`` keys on one chain, handed out round-robin (skipping busier keys)."""

    def __init__(self, senders: Sequence[TxSender]) -> None:
        if not senders:
            raise ValueError("a SenderPool needs at least one key")
        self.senders = list(senders)
        self._next = 0

    @classmethod
    def from_keys(cls, chain: Chain, keys: Sequence[bytes | str], **kw: Any) -> SenderPool:
        return cls([TxSender(chain, k, **kw) for k in keys])

    def next(self) -> TxSender:
        """The next key in turn; a key with fewer transactions in flight wins over a busier one."""
        n = len(self.senders)
        start = self._next
        self._next = (self._next + 1) % n
        best = self.senders[start % n]
        for i in range(1, n):
            s = self.senders[(start + i) % n]
            if s.in_flight < best.in_flight:
                best = s
        return best

    def for_address(self, address: str) -> TxSender | None:
        for s in self.senders:
            if s.address.lower() == address.lower():
                return s
        return None

    @property
    def addresses(self) -> list[str]:
        return [s.address for s in self.senders]
