"""Seller flow for one request: core checks → method checks → single-use claim → settlement → receipt.

The only I/O is the store and the method's settlement. Whatever happens, the caller gets one of
``NoCredential`` (answer 402 payment-required), ``Rejected`` (answer ``problem``: 402s with fresh challenges),
or ``Paid`` (serve, with the receipt headers). Only the request whose claim won settles and is served.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from paywire.mpp import problems as P
from paywire.mpp.methods.base import MppMethod, Refused, Settled, Unknown, Verified
from paywire.mpp.problems import Problem
from paywire.mpp.receipt import Receipt
from paywire.mpp.server import Accepted, MppServer, Offer
from paywire.store.mpp import MppStore

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class NoCredential:
    pass


@dataclass(frozen=True, slots=True)
class Rejected:
    problem: Problem


@dataclass(frozen=True, slots=True)
class Paid:
    receipt: Receipt
    verified: Verified

    @property
    def accepted(self) -> Accepted:
        return self.verified.accepted


Outcome = NoCredential | Rejected | Paid


async def redeem(
    server: MppServer,
    store: MppStore,
    methods: Sequence[MppMethod] | Mapping[tuple[str, str], MppMethod],
    authorization: str | None,
    offers: Sequence[Offer],
    *,
    body: bytes | None = None,
) -> Outcome:
    """Judge and, if valid, settle the Payment credential in ``authorization`` exactly once."""
    now = server.clock()
    verdict = server.check(authorization, offers, body=body, now=now)
    if verdict is None:
        return NoCredential()
    if isinstance(verdict, Problem):
        return Rejected(verdict)
    table = methods if isinstance(methods, Mapping) else {(m.method, m.intent): m for m in methods}
    ch = verdict.challenge
    method = table.get((ch.method, ch.intent))
    if method is None:
        return Rejected(Problem(P.METHOD_UNSUPPORTED, f"{ch.method}/{ch.intent} is not supported",
                                challenge_id=ch.id))
    checked = method.verify(verdict, now)
    if isinstance(checked, Problem):
        return Rejected(checked.with_challenge_id(ch.id))
    won = await store.claim(challenge_id=ch.id, replay_key=checked.replay_key, realm=ch.realm, method=ch.method,
                            intent=ch.intent, expires_at=verdict.expires_at, payer=checked.payer,
                            amount=checked.amount, currency=checked.currency)
    if not won:
        return Rejected(Problem(P.INVALID_CHALLENGE, "challenge or payment proof already used", challenge_id=ch.id))
    try:
        result = await method.settle(checked)
    except Exception as exc:  # the payment may have landed: keep the claim, do not invite a second payment
        log.exception("MPP settlement of %s failed", ch.id)
        result = Unknown(f"settlement error: {type(exc).__name__}")
    if isinstance(result, Settled):
        receipt = Receipt.success(ch.method, result.reference, now=server.clock(), challenge_id=ch.id,
                                  **result.receipt_extra)
        await store.complete(ch.id, result.reference, receipt.to_wire())
        return Paid(receipt, checked)
    if isinstance(result, Refused):
        if result.nothing_moved:
            await store.release(ch.id)
        else:
            await store.note_error(ch.id, result.problem.detail)
        return Rejected(result.problem.with_challenge_id(ch.id))
    if result.reference:
        await store.set_reference(ch.id, result.reference)
    await store.note_error(ch.id, result.detail)
    return Rejected(P.unresolved(result.detail).with_challenge_id(ch.id))
