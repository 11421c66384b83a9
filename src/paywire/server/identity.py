"""The seller's identity step, between routing and payment (docs/identity.md).

:meth:`IdentityGate.check` reads a route's ``SIGN-IN-WITH-X`` header before any payment protocol looks at the
request and answers one of:

* :class:`Reaccess` — a signed-in payer who already paid this path within the route's ``access_for``: serve it
  again, no new payment (the nonce is spent, so the signed message works once);
* a :class:`~paywire.server.core.Reply` — a 402 saying why (a sign-in that does not check out and no payment
  to fall back on, a used nonce, a sign-in without a payment in the window, or ``identity=`` required and
  missing on a paid request: refused before any money moves);
* an :class:`~paywire.identity.did.Identity` or None — go on to the payment, which records the identity.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from paywire.identity.did import Identity
from paywire.identity.siwx import HEADER, SiwxFailure, SiwxProof
from paywire.server.core import PaidRoute, Priced, Reply, Seller
from paywire.server.request import RequestInfo
from paywire.store.db import Database
from paywire.store.identity import IdentityStore


@dataclass(frozen=True, slots=True)
class Reaccess:
    """Serve the request as payment ``record_id`` again (the payer proved who they are)."""

    record_id: int
    identity: Identity


class IdentityGate:
    """Checks sign-ins for the routes that take them, with the single-use nonce table in ``db``."""

    def __init__(self, seller: Seller, db: Database) -> None:
        self.seller = seller
        self.store = IdentityStore(db, clock=seller.clock)

    async def startup(self) -> None:
        await self.store.migrate()

    async def check(self, route: PaidRoute, req: RequestInfo, priced: Priced) -> Reaccess | Reply | Identity | None:
        seller, issuer = self.seller, self.seller.siwx
        offers = priced[0]
        credential = seller.x402_header(route, req) or req.header("authorization")
        paying = credential is not None
        header = req.header(HEADER)
        if header is None or issuer is None:
            if paying and route.identity is not None:
                return seller.payment_required(route, req, offers, "identity_required: this route takes payments "
                                               "only with a Sign-In-With-X proof (SIGN-IN-WITH-X header)")
            return None
        now = seller.clock()
        networks = [o.network for o in offers]
        proof = issuer.check(header, seller.resource(route, req).url, networks, now)
        spent_on = hashlib.sha256(credential.encode()).hexdigest() if credential is not None else None
        if isinstance(proof, SiwxProof) and not await self.store.use_nonce(proof.nonce, proof.expires_at, spent_on):
            proof = SiwxFailure("invalid_siwx_nonce_used", "this sign-in was already used: answer a fresh 402")
        if isinstance(proof, SiwxFailure):
            if paying and route.identity is None:  # the payment stands on its own
                return None
            return seller.payment_required(route, req, offers, f"{proof.code}: {proof.message}")
        identity = proof.identity
        if paying:
            return identity
        if route.access_for is not None:
            rid = await self.store.paid(proof.address, route.key, req.path, now - route.access_for)
            if rid is not None:
                return Reaccess(rid, identity)
        return seller.payment_required(route, req, offers, "siwx_not_paid: signed in, but this address has no "
                                       "payment for this resource that still grants access: pay to continue")

__all__ = ["IdentityGate", "Reaccess"]
