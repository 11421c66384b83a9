"""Seller side of L402: mint a macaroon bound to a fresh invoice, then verify ``macaroon:preimage``.

Verification follows the spec's order (checklist 99–101): decode the identifier, look up the root key by
``sha256(identifier)`` and recompute the HMAC chain, check ``sha256(preimage) == payment_hash``, then the
caveats. Statuses: no or malformed credential → 402 with a fresh challenge; a well-formed credential that
fails verification → 401 with a fresh challenge (the spec; ``reject_status=402`` behaves like aperture).
Paid tokens are reusable bearer credentials until their ``<service>_valid_until`` caveat passes.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from paywire.errors import WireError
from paywire.l402 import macaroons as M
from paywire.l402.caveats import Caveat, CaveatError, check_caveats, request_satisfiers, services_caveat
from paywire.l402.caveats import valid_until_caveat as _valid_until
from paywire.l402.header import DEFAULT_FORMS, format_challenges, has_l402, parse_credential
from paywire.l402.identifier import Identifier
from paywire.lightning.base import LightningBackend, LightningError
from paywire.store.l402 import L402Store


@dataclass(frozen=True, slots=True)
class L402Ok:
    """A valid paid token; ``token_id`` identifies the buyer across re-mints."""

    payment_hash: str
    token_id: str
    caveats: tuple[Caveat, ...]


@dataclass(frozen=True, slots=True)
class L402Denied:
    """Answer ``status`` with a fresh challenge; ``reason`` is for logs and the body."""

    status: int
    reason: str


@dataclass(frozen=True, slots=True)
class L402Challenge:
    """What a 402/401 carries: the ``WWW-Authenticate`` values and the invoice/macaroon behind them."""

    headers: list[str]
    macaroon: str
    invoice: str
    payment_hash: str
    extra: dict[str, str] = field(default_factory=dict)


class L402Server:
    """Mint and verify L402 tokens for one ``service``; root keys live in ``store``."""

    def __init__(
        self,
        store: L402Store,
        backend: LightningBackend,
        *,
        service: str,
        tier: int = 0,
        token_ttl: int = 3600,
        invoice_expiry: int = 600,
        forms: Sequence[str] = DEFAULT_FORMS,
        reject_status: int = 401,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if reject_status not in (401, 402):
            raise ValueError("reject_status is 401 (spec) or 402 (aperture)")
        self.store = store
        self.backend = backend
        self.service = service
        self.tier = tier
        self.token_ttl = token_ttl
        self.invoice_expiry = invoice_expiry
        self.forms = tuple(forms)
        self.reject_status = reject_status
        self.clock = clock

    async def challenge(self, amount_sat: int, *, memo: str = "", caveats: Sequence[Caveat] = ()) -> L402Challenge:
        """Create an invoice, mint a macaroon committed to its payment hash, store the root key."""
        inv = await self.backend.create_invoice(amount_sat, memo or f"{self.service} access", self.invoice_expiry)
        ident = Identifier.new(bytes.fromhex(inv.payment_hash))
        root_key = os.urandom(32)
        await self.store.put(ident.key_id, root_key, payment_hash=inv.payment_hash, token_id=ident.token_id.hex(),
                             service=self.service)
        base = [services_caveat({self.service: self.tier}),
                _valid_until(self.service, int(self.clock()) + self.token_ttl), *caveats]
        mac = M.encode(M.mint(ident, root_key, base))
        return L402Challenge(format_challenges(mac, inv.bolt11, self.forms), mac, inv.bolt11, inv.payment_hash)

    async def verify(self, authorization: str | None, *, capability: str | None = None,
                     now: float | None = None) -> L402Ok | L402Denied:
        """Judge an ``Authorization`` value (``L402`` or ``LSAT``)."""
        if not authorization or not has_l402(authorization):
            return L402Denied(402, "payment required")
        try:
            cred = parse_credential(authorization)
            if len(cred.macaroons) != 1:
                raise WireError("malformed_l402", "exactly one macaroon is supported (no discharges)")
            mac = M.decode(cred.macaroons[0])
            ident = M.identifier_of(mac)
        except WireError as exc:
            return L402Denied(402, f"malformed L402 credential: {exc.detail or exc.reason}")
        root_key = await self.store.get(ident.key_id)
        if root_key is None or not M.signature_ok(mac, root_key):
            return L402Denied(self.reject_status, "unknown or forged token")
        digest = hashlib.sha256(bytes.fromhex(cred.preimage)).digest()
        if not hmac.compare_digest(digest, ident.payment_hash):
            return L402Denied(self.reject_status, "preimage does not match the token's payment hash")
        try:
            caveats = M.first_party_caveats(mac)
            t = self.clock() if now is None else now
            check_caveats(caveats, request_satisfiers(self.service, capability, t))
        except CaveatError as exc:
            return L402Denied(self.reject_status, str(exc))
        return L402Ok(ident.payment_hash.hex(), ident.token_id.hex(), tuple(caveats))

    async def revoke(self, macaroon_b64: str) -> bool:
        """Delete the token's root key; every copy and attenuation stops verifying."""
        return await self.store.revoke(M.identifier_of(M.decode(macaroon_b64)).key_id)

    async def invoice_paid(self, payment_hash: str) -> bool:
        """Optional extra check at the node (aperture's MPP path does it)."""
        try:
            return (await self.backend.lookup_invoice(payment_hash)).paid
        except LightningError:
            return False
