"""What a chain family does for the settlement engine (``paywire.settlement.engine``): the ``Rail``.

A scheme turns a verified payment into an ``Intent`` (what moves, from whom to whom, and the transaction
payload that moves it); the engine claims it in the store and drives one ``Rail`` per network through
sign → record → broadcast → receipt, and back through the chain after a crash. Nothing here is specific to
one chain: ids are strings (0x-hex on EVM), transactions are bytes. ``paywire.chain.rail.EvmRail`` is the
EVM implementation.

Errors: a rail raises ``paywire.errors.ChainRevert`` when the settlement would fail on chain (nothing was
sent) and ``ChainError`` when the node refused it or could not be reached before it was accepted.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

__all__ = ["Intent", "Mined", "Rail", "Recorder", "SentTx"]


@dataclass(frozen=True, slots=True)
class Intent:
    """One authorization to settle, as the scheme describes it to the engine and the rail.

    ``nonce``: the authorization's single-use id (0x-hex), unique per (network, asset, payer);
    ``valid_before``: chain time (seconds) from which it can no longer settle; ``target``/``payload``: the
    transaction to send (EVM: the contract called and its calldata); ``digest``: of the payment requirements
    it was made for; ``record``: what the scheme needs to rebuild this intent later (stored with the claim).
    """

    network: str
    asset: str
    payer: str  # display form (EVM: checksummed)
    pay_to: str
    amount: int
    nonce: str
    valid_before: int
    target: str
    payload: bytes
    digest: str
    record: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class SentTx:
    """A signed settlement transaction, as recorded before it is broadcast."""

    hash: str  # the chain's transaction id (EVM: 0x-hex, lowercase)
    raw: bytes  # the signed bytes, enough to broadcast it again
    signer: str  # the key that pays for it
    nonce: int  # the signer's sequence number it uses


@dataclass(frozen=True, slots=True)
class Mined:
    """A settlement transaction the chain included. ``ok``: it executed; ``paid``: it moved exactly the
    intent's amount of its asset from payer to payee; ``confirmed``: it has the confirmations required."""

    hash: str
    block_number: int
    ok: bool
    paid: bool
    confirmed: bool


Recorder = Callable[[SentTx], Awaitable[bool]]
"""Persists a signed transaction before it is broadcast; False means "not recorded: do not send"."""


class Rail(Protocol):
    """One network of one chain family, as the settlement engine uses it."""

    @property
    def network(self) -> str: ...

    # -- keys
    def next_signer(self) -> str:
        """The key to pay for the next settlement (round-robin over the rail's keys)."""
        ...

    def has_signer(self, address: str) -> bool:
        """Whether ``address`` is one of this rail's keys (only the key's owner can replace its transaction)."""
        ...

    def account(self, address: str) -> str:
        """The display form of an account as the store keeps it (EVM: checksummed)."""
        ...

    # -- sending
    async def send(
        self, intent: Intent, *, signer: str | None = None, limit: int | None = None, record: Recorder | None = None,
        in_time: Callable[[], bool] | None = None,
    ) -> tuple[SentTx, str | None]:
        """Sign the intent's transaction from ``signer`` (default: ``next_signer()``) with the resource limit
        ``limit`` (EVM gas; default: the rail's, else an estimate), ``await record(tx)`` and only then broadcast.
        Returns ``(tx, None)`` when the node accepted it, ``(tx, error)`` when that is unknown (the bytes may be
        in the node). ``record`` returning False raises ``ChainError`` with nothing sent. ``in_time`` is asked
        right before the broadcast (when the key's earlier transactions are out): False raises ``ChainError``
        with nothing sent, and the key's sequence number goes to its next transaction."""
        ...

    async def rebroadcast(self, raw: bytes) -> str | None:
        """Send recorded bytes again. ``None``: accepted (or already known); ``"nonce_low"``: it can never be
        included (its slot was used by another transaction: sign a new one); ``"nonce_high"``: not sent, it
        cannot be included now (a slot before it is empty: sign a new one); ``"unknown"``: no usable answer;
        any other string: refused for that reason."""
        ...

    async def replace(self, raw: bytes, signer: str, *, record: Recorder) -> SentTx:
        """Re-sign a stuck transaction of ``signer`` so it is included sooner (fee bump), record, broadcast."""
        ...

    # -- what the chain says
    async def receipt(self, tx_hash: str, intent: Intent, *, wait: float = 0.0) -> Mined | None:
        """The transaction's inclusion (judged against ``intent``), or None while the chain has none. With
        ``wait``: poll up to that many seconds for it, then raise ``ChainError``."""
        ...

    async def knows(self, tx_hash: str) -> bool:
        """Whether the node has the transaction (pending or included)."""
        ...

    async def now(self) -> int:
        """The chain's current time (seconds), compared with ``Intent.valid_before``."""
        ...

    async def is_used(self, intent: Intent) -> bool:
        """Whether the authorization was already consumed on chain (by any transaction)."""
        ...

    async def find_use(self, intent: Intent) -> Mined | None:
        """The transaction that consumed the authorization, when ``is_used`` says one did."""
        ...
