"""Seller side of L402: mint a macaroon bound to a fresh invoice, then verify ``macaroon:preimage``.

Root keys derive from the store's master secret and the identifier (:func:`macaroons.derive_root_key`), so a
challenge writes nothing: an unpaid request costs no row. Verification follows the spec's order (checklist
99–101): decode the identifier, recompute the HMAC chain under its root key (a token minted before keys were
derived: the key stored under ``sha256(identifier)``), check ``sha256(preimage) == payment_hash``, then the
caveats, then that it is not revoked. A credential may carry several macaroons (``L402 <m1>,<m2>:<preimage>``,
the spec's grammar): the request passes if one of them passes alone. Statuses: no or malformed credential → 402
with a fresh challenge; a well-formed credential that fails verification → 401 with a fresh challenge (the spec;
``reject_status=402`` behaves like aperture). Paid tokens are reusable bearer credentials until their
``<service>_valid_until`` caveat passes or they are revoked.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

from paywire.errors import WireError
from paywire.l402 import macaroons as M
from paywire.l402.caveats import (
    VALID_UNTIL_SUFFIX,
    Caveat,
    CaveatError,
    check_caveats,
    request_satisfiers,
    services_caveat,
)
from paywire.l402.caveats import valid_until_caveat as _valid_until
from paywire.l402.header import DEFAULT_FORMS, format_challenges, has_l402, parse_credential
from paywire.l402.identifier import Identifier
from paywire.lightning.base import LightningBackend, LightningError
from paywire.store.l402 import L402Store

MAX_MACAROONS: Final = 8
"""Macaroons read from one credential (each costs a signature check)."""


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
    """Mint and verify L402 tokens for one ``service``; the master secret and revocations live in ``store``."""

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
        root_secret: bytes | None = None,
        max_macaroons: int = MAX_MACAROONS,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if reject_status not in (401, 402):
            raise ValueError("reject_status is 401 (spec) or 402 (aperture)")
        if root_secret is not None and len(root_secret) < 32:
            raise ValueError("root_secret must be at least 32 bytes")
        self.store = store
        self.backend = backend
        self.service = service
        self.tier = tier
        self.token_ttl = token_ttl
        self.invoice_expiry = invoice_expiry
        self.forms = tuple(forms)
        self.reject_status = reject_status
        self.max_macaroons = max_macaroons
        self.clock = clock
        self._secret = root_secret

    async def _master(self) -> bytes:
        if self._secret is None:
            self._secret = await self.store.master_secret()
        return self._secret

    async def challenge(self, amount_sat: int, *, memo: str = "", caveats: Sequence[Caveat] = ()) -> L402Challenge:
        """Create an invoice and mint a macaroon committed to its payment hash (nothing is stored)."""
        inv = await self.backend.create_invoice(amount_sat, memo or f"{self.service} access", self.invoice_expiry)
        ident = Identifier.new(bytes.fromhex(inv.payment_hash))
        base = [services_caveat({self.service: self.tier}),
                _valid_until(self.service, int(self.clock()) + self.token_ttl), *caveats]
        mac = M.encode(M.mint(ident, M.derive_root_key(await self._master(), ident), base))
        return L402Challenge(format_challenges(mac, inv.bolt11, self.forms), mac, inv.bolt11, inv.payment_hash)

    async def verify(self, authorization: str | None, *, capability: str | None = None,
                     now: float | None = None) -> L402Ok | L402Denied:
        """Judge an ``Authorization`` value (``L402`` or ``LSAT``, one or several macaroons)."""
        if not authorization or not has_l402(authorization):
            return L402Denied(402, "payment required")
        try:
            cred = parse_credential(authorization)
        except WireError as exc:
            return L402Denied(402, f"malformed L402 credential: {exc.detail or exc.reason}")
        if len(cred.macaroons) > self.max_macaroons:
            return L402Denied(402, f"malformed L402 credential: {len(cred.macaroons)} macaroons, at most "
                                   f"{self.max_macaroons} are read")
        t = self.clock() if now is None else now
        denials = []
        for text in cred.macaroons:
            res = await self._verify_one(text, cred.preimage, capability, t)
            if isinstance(res, L402Ok):
                return res
            denials.append(res)
        if len(denials) == 1:
            return denials[0]
        status = self.reject_status if any(d.status == self.reject_status for d in denials) else 402
        return L402Denied(status, f"none of the {len(denials)} macaroons is valid here: "
                                  + "; ".join(f"#{i + 1}: {d.reason}" for i, d in enumerate(denials)))

    async def _verify_one(self, text: str, preimage: str, capability: str | None, now: float) -> L402Ok | L402Denied:
        try:
            mac = M.decode(text)
            ident = M.identifier_of(mac)
        except WireError as exc:
            return L402Denied(402, f"malformed L402 credential: {exc.detail or exc.reason}")
        if not await self._authentic(mac, ident):
            return L402Denied(self.reject_status, "unknown or forged token")
        digest = hashlib.sha256(bytes.fromhex(preimage)).digest()
        if not hmac.compare_digest(digest, ident.payment_hash):
            return L402Denied(self.reject_status, "preimage does not match the token's payment hash")
        try:
            caveats = M.first_party_caveats(mac)
            check_caveats(caveats, request_satisfiers(self.service, capability, now))
        except CaveatError as exc:
            return L402Denied(self.reject_status, str(exc))
        if await self.store.is_revoked(ident.key_id):
            return L402Denied(self.reject_status, "token revoked")
        return L402Ok(ident.payment_hash.hex(), ident.token_id.hex(), tuple(caveats))

    async def _authentic(self, mac: Any, ident: Identifier) -> bool:
        """The HMAC chain checks out under the derived root key, or under a stored one (tokens minted before)."""
        if M.signature_ok(mac, M.derive_root_key(await self._master(), ident)):
            return True
        stored = await self.store.legacy_root_key(ident.key_id)
        return stored is not None and M.signature_ok(mac, stored)

    async def revoke(self, macaroon_b64: str) -> bool:
        """Revoke the token: every copy and attenuation stops verifying. False if it is not one of ours or was
        revoked already (``WireError`` if it is not a macaroon)."""
        mac = M.decode(macaroon_b64)
        ident = M.identifier_of(mac)
        if not await self._authentic(mac, ident):
            return False
        return await self.store.revoke(ident.key_id, expires_at=self._expiry(mac))

    def _expiry(self, mac: Any) -> float | None:
        """The minted ``<service>_valid_until`` (later ones may only be earlier), for pruning the revocation."""
        try:
            caveats = M.first_party_caveats(mac)
        except CaveatError:
            return None
        first = next((c for c in caveats if c.condition == self.service + VALID_UNTIL_SUFFIX), None)
        return float(first.value) if first is not None and first.value.isdigit() else None

    async def prune(self, now: float | None = None) -> int:
        """Drop revocations of expired tokens and stored root keys of this service's expired tokens."""
        t = self.clock() if now is None else now
        return await self.store.prune(now=t, service=self.service, token_ttl=self.token_ttl)

    async def invoice_paid(self, payment_hash: str) -> bool:
        """Optional extra check at the node (aperture's MPP path does it)."""
        try:
            return (await self.backend.lookup_invoice(payment_hash)).paid
        except LightningError:
            return False
