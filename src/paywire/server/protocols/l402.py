"""L402 on the seller (:class:`L402`): macaroon + invoice challenges, reusable paid tokens.

A route with ``l402=True`` (or a service name) adds ``WWW-Authenticate: L402`` challenges (both forms) for
``sats`` to its 402. A valid token (macaroon chain, preimage and caveats, checklist 99–101) passes: the request
goes through with its payment, without a claim per request; its first use writes one ledger row so sales list
Lightning income too. A token that does not verify gets 401 (``reject_status``) with fresh challenges. A
challenge writes nothing (root keys derive from the store's master secret); startup drops revocations and
pre-derivation root keys of tokens that have expired.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from typing import Any, Final

from paywire.lightning.base import LightningError
from paywire.mpp import problems as P
from paywire.mpp.problems import Problem
from paywire.server.core import Headers, PaidRoute, Priced
from paywire.server.protocols.base import Admit, Challenges, Parsed, ProtocolDefaults, Reject, SellerContext
from paywire.server.request import RequestInfo
from paywire.store.db import Database
from paywire.store.payments import NewPayment, PaymentRecord
from paywire.x402.models import SettleResponse

log = logging.getLogger("paywire.server")

NAME: Final = "l402"


class L402(ProtocolDefaults):
    """L402 / LSAT tokens on the routes that set ``l402`` (:class:`SellerProtocol`)."""

    name = NAME

    def __init__(self, ctx: SellerContext) -> None:
        self.ctx = ctx
        self._store: Any = None  # paywire.store.l402.L402Store, after startup
        self._servers: dict[tuple[str, int], Any] = {}  # (service, ttl) → paywire.l402.server.L402Server

    def takes(self, route: PaidRoute) -> bool:
        return bool(route.l402)

    def needs_lightning(self, route: PaidRoute) -> bool:
        return bool(route.l402)

    async def startup(self, db: Database) -> None:
        """The L402 tables and master secret, when a route takes L402; prune what expired."""
        routes = [r for r in self.ctx.seller.routes if r.l402]
        if routes:
            from paywire.store.l402 import L402Store

            self._store = L402Store(db)
            await self._store.migrate()
            await self._store.master_secret()
            ttl: dict[str, int] = {}
            for r in routes:
                ttl[r.l402_service] = max(ttl.get(r.l402_service, 0), r.l402_ttl)
            now = time.time()
            for service, longest in ttl.items():
                await self._store.prune(now=now, service=service, token_ttl=longest)

    def _server(self, route: PaidRoute) -> Any:
        from paywire.l402.server import L402Server

        srv = self._servers.get((route.l402_service, route.l402_ttl))
        if srv is None:
            assert self.ctx.lightning is not None and self._store is not None
            srv = L402Server(self._store, self.ctx.lightning, service=route.l402_service,
                             token_ttl=route.l402_ttl, invoice_expiry=self.ctx.invoice_expiry,
                             reject_status=self.ctx.l402_reject_status)
            self._servers[(route.l402_service, route.l402_ttl)] = srv
        return srv

    async def parse(self, route: PaidRoute, req: RequestInfo, priced: Priced) -> Parsed:
        """An ``L402``/``LSAT`` credential (``Authorization`` or the alternative headers)."""
        from paywire.identity.metadata import proven_identity
        from paywire.l402.caveats import CaveatError, check_caveats, identity_satisfier
        from paywire.l402.header import credential_from_headers, has_l402
        from paywire.l402.server import L402Ok

        auth = req.header("authorization")
        if not (auth and has_l402(auth)):
            auth = credential_from_headers(req.headers)
            if auth is None:
                return None
        offers = priced[0]
        res = await self._server(route).verify(auth)
        if not isinstance(res, L402Ok):
            problem = Problem(P.VERIFICATION_FAILED if res.status != 402 else P.PAYMENT_REQUIRED, res.reason)
            return Reject(problem, offers, res.status, res.reason)
        who = proven_identity.get()
        try:  # an identity caveat: the request must prove one of the names (docs/identity.md)
            check_caveats(res.caveats, [identity_satisfier((who.did, *who.addresses) if who is not None else ())])
        except CaveatError as exc:
            status = self._server(route).reject_status
            return Reject(Problem(P.VERIFICATION_FAILED, str(exc)), offers, status, str(exc))
        return Admit(NewPayment(
            auth_key=f"l402:{res.payment_hash}", payment_id=None, payload_hash=res.token_id, route=route.key,
            method=req.method, path=req.path, settle_mode="before", x402_version=0, scheme="l402",
            network="lightning", asset="sat", pay_to="lightning", amount=route.sats or 0, decimals=0,
            payer=res.token_id, payload="{}", requirements="{}", protocol=NAME,
            identity=who.did if who is not None else None), res.payment_hash)

    async def challenges(self, route: PaidRoute, req: RequestInfo) -> Challenges:
        if not route.sats:
            return Challenges()
        try:
            ch = await self._server(route).challenge(route.sats, memo=route.description or route.key)
        except (LightningError, ValueError) as exc:
            log.warning("paywire: no L402 challenge for %s: %s", route.key, exc)
            return Challenges()
        return Challenges(tuple(ch.headers))

    def receipt_headers(self, rec: PaymentRecord, res: SettleResponse,
                        app_headers: Sequence[tuple[str, str]]) -> Headers:
        return tuple(app_headers)  # a token pays before the request: its response is the app's


__all__ = ["L402", "NAME"]
