"""The seller's identity step, between routing and payment (docs/identity.md).

:meth:`IdentityGate.check` reads a route's identity proofs before any payment protocol looks at the request —
an RFC 9421 agent signature (Web Bot Auth: ``Signature-Agent``, ``Signature-Input``, ``Signature``) on routes
with ``identity="agent-sig"`` or ``"required"``, and a ``SIGN-IN-WITH-X`` proof on routes that sign in — and
answers one of:

* :class:`Reaccess` — a signed-in payer who already paid this path within the route's ``access_for``: serve it
  again, no new payment (the nonce is spent, so the signed message works once);
* a :class:`~paywire.server.core.Reply` — a 402 saying why (a proof that does not check out, a used nonce, a
  sign-in without a payment in the window, or the route's ``identity`` missing on a paid request: refused
  before any money moves);
* :class:`Free` — a proven identity the route serves without payment (``free_quota``, or priced at zero by
  ``price_for_identity``);
* an :class:`~paywire.identity.did.Identity` or None — go on to the payment, which records the identity (at
  the identity's own price when the route has ``price_for_identity``); an identity that is not on the route's
  ``allow_identities`` is refused (``identity_not_allowed``) before any money moves.

Only proven identities count here. A DID a payer merely names (an MPP ``lightning/charge`` ``source``: see
:meth:`~paywire.identity.did.Identity.claim`) is read after this step, with the payment, and is recorded as a
claim; it is never on an allowlist, never repriced, never free and never satisfies ``identity="required"``.

Each proof's nonce is spent once in the store (``siwx_nonces``; an agent signature's as ``sig:<keyid>:<nonce>``)
— a resent paid request may reuse its own, so retries of one payment still replay.
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Mapping
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

from paywire.identity import erc6492
from paywire.identity.agent import AgentFailure, AgentProof, claimed, verify
from paywire.identity.did import Identity
from paywire.identity.siwx import HEADER, NOT_THE_ADDRESS, SiwxContractCheck, SiwxFailure, SiwxProof
from paywire.server.agents import AgentDirectories, DirectoryError
from paywire.server.core import PaidRoute, Priced, Reply, Seller, resource_url
from paywire.server.request import RequestInfo
from paywire.store.db import Database
from paywire.store.identity import IdentityStore
from paywire.x402.models import PaymentRequirements

_deferred: ContextVar[SiwxProof | None] = ContextVar("paywire_deferred_sign_in", default=None)


def _listed(who: Identity, allowed: frozenset[str]) -> bool:
    """Whether ``who`` is on an allowlist: a claim (no proofs) never is."""
    return who.proven and (who.did.lower() in allowed or any(a.lower() in allowed for a in who.addresses))


@dataclass(frozen=True, slots=True)
class Free:
    """Serve without a payment: a proven identity within its free quota (``free_quota``) or priced at zero
    (``price_for_identity``); ``why`` says which."""

    identity: Identity
    why: str


@dataclass(frozen=True, slots=True)
class Reaccess:
    """Serve the request as payment ``record_id`` again (the payer proved who they are)."""

    record_id: int
    identity: Identity


class IdentityGate:
    """Checks the identity proofs of the routes that take them, with the single-use nonce table in ``db``."""

    def __init__(self, seller: Seller, db: Database, *, allow_private_directories: bool = False,
                 directories: AgentDirectories | None = None, chains: Mapping[str, Any] | None = None) -> None:
        self.seller = seller
        self.chains = dict(chains or {})
        self.store = IdentityStore(db, clock=seller.clock)
        self.directories = directories or AgentDirectories(allow_private=allow_private_directories)

    async def startup(self) -> None:
        """Migrate the nonce table; a seller whose routes take agent signatures needs the ``identity`` extra
        (``ConfigError`` at startup, not on the first request)."""
        if any(r.identity in ("agent-sig", "required") for r in self.seller.routes):
            from paywire.identity.agent import _ed25519

            _ed25519()
        await self.store.migrate()

    async def check(self, route: PaidRoute, req: RequestInfo,
                    priced: Priced) -> Reaccess | Free | Reply | Identity | None:
        seller, offers = self.seller, priced[0]
        credential = seller.x402_header(route, req) or req.header("authorization")
        paying = credential is not None

        def refuse(reason: str) -> Reply:
            return seller.payment_required(route, req, offers, reason)

        agent: Identity | None = None
        if route.identity in ("agent-sig", "required") and claimed(req.headers) is not None:
            spent_on = hashlib.sha256(credential.encode()).hexdigest() if credential is not None else None
            proof = await self._agent_proof(req, spent_on)
            if isinstance(proof, AgentFailure):
                return refuse(f"{proof.code}: {proof.message}")
            agent = proof.identity
        signed_in = await self._sign_in(route, req, offers, paying) if route.signs_in else None
        if isinstance(signed_in, SiwxFailure):
            if route.identity is None and paying:  # the payment stands on its own
                signed_in = None
            elif not (route.identity == "required" and agent is not None and paying):
                return refuse(f"{signed_in.code}: {signed_in.message}")
            else:
                signed_in = None
        who = agent or (signed_in.identity if signed_in is not None else None)
        allowed = route.allow_identities
        if allowed is not None and who is not None and not _listed(who, allowed):
            return refuse("identity_not_allowed: this route serves only the identities on its allowlist")
        if paying:
            rule = route.identity
            missing = (agent is None if rule == "agent-sig" else signed_in is None if rule == "siwx"
                       else agent is None and signed_in is None if rule == "required" else False)
            if missing or (allowed is not None and who is None):
                how = {"agent-sig": "an RFC 9421 agent signature (Signature-Agent, Signature-Input, Signature)",
                       "siwx": "a Sign-In-With-X proof (SIGN-IN-WITH-X header)"}.get(
                    route.identity or "", "a Sign-In-With-X proof or an RFC 9421 agent signature")
                return refuse(f"identity_required: this route takes payments only with {how}")
            return who
        if who is None:
            return None
        if signed_in is not None and route.access_for is not None:
            rid = await self.store.paid(signed_in.address, route.key, req.path, seller.clock() - route.access_for)
            if rid is not None:
                return Reaccess(rid, signed_in.identity)
        mine = self.repriced(route, priced, who)
        if any(getattr(o, "amount", None) == 0 for o in mine[0]):
            return Free(who, "price")
        if route.free_quota is not None and who.proven and await self.store.take_free(who.did, route.key, *route.free_quota):
            return Free(who, "free_quota")
        if signed_in is None:  # an agent signature alone: the route's 402
            return None
        return seller.payment_required(route, req, mine[0], "siwx_not_paid: signed in, but this address has no "
                                       "payment for this resource that still grants access: pay to continue")

    @staticmethod
    def repriced(route: PaidRoute, priced: Priced, who: Identity | None) -> Priced:
        """The route's offers at ``who``'s price (``route.price_for_identity``)."""
        f = route.price_for_identity
        if f is None or who is None or not who.proven:  # a claim pays the route's price
            return priced
        offers: list[Any] = []
        for o in priced[0]:
            amount = f(who, o) if isinstance(o, PaymentRequirements) else None
            offers.append(o if amount is None or amount == o.amount else dataclasses.replace(o, amount=int(amount)))
        return tuple(offers), priced[1]

    async def _sign_in(self, route: PaidRoute, req: RequestInfo, offers: tuple[object, ...],
                       paying: bool) -> SiwxProof | SiwxFailure | None:
        header, issuer = req.header(HEADER), self.seller.siwx
        if header is None or issuer is None:
            return None
        networks = route.sign_in_networks(offers)
        checked = issuer.check(header, resource_url(route, req), networks, self.seller.clock())
        proof = await self._contract_wallet(checked) if isinstance(checked, SiwxContractCheck) else checked
        if isinstance(proof, SiwxProof) and paying:
            _deferred.set(proof)  # with a payment: spent once the payer is known (spend_deferred)
            return proof
        if isinstance(proof, SiwxProof) and not await self.store.use_nonce(proof.nonce, proof.expires_at, None):
            return SiwxFailure("invalid_siwx_nonce_used", "this sign-in was already used: answer a fresh 402")
        return proof

    @staticmethod
    def take_deferred() -> SiwxProof | None:
        """The sign-in of the paid request just checked whose nonce is not spent yet (and forget it)."""
        proof = _deferred.get()
        if proof is not None:
            _deferred.set(None)
        return proof

    async def spend_deferred(self, proof: SiwxProof, payer: str | None, route: PaidRoute, req: RequestInfo,
                             identity: Identity | None, offers: tuple[object, ...]) -> Identity | Reply | None:
        """A paid request's sign-in, once its payment is read. Signed by the payer itself, it needs no nonce: a
        replay can only come with a payment from the same address, which proves the same identity (and a
        payment is used once). Otherwise the nonce is spent now; a used one drops the identity from a route that
        does not need it, and refuses the request on one that does."""
        if payer is not None and payer.lower() == proof.address.lower():
            return identity
        credential = self.seller.x402_header(route, req) or req.header("authorization") or ""
        if await self.store.use_nonce(proof.nonce, proof.expires_at, hashlib.sha256(credential.encode()).hexdigest()):
            return identity
        if identity is not None and identity.did != proof.identity.did:
            return identity  # the identity came from an agent signature
        if route.identity is None and not route.per_identity:
            return None  # the payment stands on its own
        return self.seller.payment_required(route, req, offers,  # type: ignore[arg-type]
                                            "invalid_siwx_nonce_used: this sign-in was already used: answer a "
                                            "fresh 402")

    async def _contract_wallet(self, c: SiwxContractCheck) -> SiwxProof | SiwxFailure:
        """EIP-1271: the address is a contract whose ``isValidSignature`` accepts the signature."""
        from paywire.evm import token

        chain = self.chains.get(c.proof.network)
        if chain is None:
            return NOT_THE_ADDRESS
        if erc6492.is_wrapped(c.signature):
            return await self._counterfactual_wallet(chain, c)
        try:
            if not await chain.get_code(c.proof.address):
                return NOT_THE_ADDRESS
            answer = await chain.call(c.proof.address, token.is_valid_signature(c.digest, c.signature))
        except Exception as exc:  # a reverting wallet says no; an unreachable node must not become a 500
            if "revert" in str(exc).lower():
                return SiwxFailure("invalid_siwx_signature", "the contract wallet refused the signature (reverted)")
            return SiwxFailure("invalid_siwx_verifier_error", f"cannot ask the chain about the wallet: {exc}")
        if answer[:4] != token.EIP1271_MAGIC:
            return SiwxFailure("invalid_siwx_signature", "the contract wallet's isValidSignature says no")
        return c.proof

    @staticmethod
    async def _counterfactual_wallet(chain: Any, c: SiwxContractCheck) -> SiwxProof | SiwxFailure:
        """ERC-6492: one creating ``eth_call`` deploys the wallet inside the call and asks it (nothing is sent)."""
        try:
            data = erc6492.validator_call(c.proof.address, c.digest, c.signature)
        except ValueError as exc:
            return SiwxFailure("invalid_siwx_malformed_signature", f"ERC-6492: {exc}")
        try:
            answer = await chain.request("eth_call", [{"data": "0x" + data.hex(), "gas": hex(5_000_000)}, "latest"])
            raw = bytes.fromhex(str(answer).removeprefix("0x"))
        except Exception as exc:  # a node that cannot run it must not become a 500
            return SiwxFailure("invalid_siwx_verifier_error", f"cannot ask the chain about the wallet: {exc}")
        if raw[:4] != erc6492.EIP1271_MAGIC:
            return SiwxFailure("invalid_siwx_signature",
                               "the undeployed wallet (ERC-6492) does not accept the signature")
        return c.proof

    async def _agent_proof(self, req: RequestInfo, spent_on: str | None) -> AgentProof | AgentFailure:
        who = claimed(req.headers)
        if not hasattr(who, "keyid"):
            return who if isinstance(who, AgentFailure) else AgentFailure("invalid_agent_signature", "unsigned")
        assert who is not None and not isinstance(who, AgentFailure)
        try:
            key = await self.directories.key(who.agent, who.keyid)
        except DirectoryError as exc:
            return AgentFailure(exc.code, str(exc))
        proof = verify(req.method, req.url, req.headers, key, self.seller.clock())
        if isinstance(proof, AgentProof) and not await self.store.use_nonce(
                f"sig:{proof.keyid}:{proof.nonce}", proof.expires_at, spent_on):
            return AgentFailure("agent_signature_replayed", "this signature's nonce was already used")
        return proof


__all__ = ["Free", "IdentityGate", "Reaccess"]
