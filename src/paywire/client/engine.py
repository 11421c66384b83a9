"""The buyer's async I/O shell: one HTTP exchange that may need paying, end to end.

``Buyer.handle(exchange)`` sends the request; on 402 it reads the challenge through each registered payment
protocol (``protocols/``: x402, MPP, L402 behind one interface), ranks the options (``core``), applies the
policy (``policy``), reserves budget in the ledger (``store.spend``), asks for approval when needed, has the
option's protocol sign it, and sends the paid request — resending the *same* signed payment when the network
or the server fails, so a flaky connection never pays twice. Each HTTP client (httpx async/sync, requests) is a
small :class:`Exchange` adapter over this one flow.
"""

from __future__ import annotations

import asyncio
import binascii
import inspect
import json
import logging
import time
from collections.abc import Awaitable, Callable, Coroutine, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any, Generic, NoReturn, Protocol, TypeVar, Unpack
from urllib.parse import urlsplit

from paywire.client.config import BuyerConfig, BuyerOptions, buyer_config
from paywire.client.core import (
    Candidate,
    Challenge,
    DryRunPayment,
    Next,
    Option,
    Payer,
    PaymentAttempt,
    PaymentDeclined,
    PaymentError,
    PaymentOutcomeUnknown,
    PaymentRefused,
    PaymentRejected,
    Receipt,
    Sent,
    after_response,
    after_send_error,
    quote_of,
    rank_options,
    read_any_challenge,
    refusal_message,
    rejection_reason,
    scheme_for,
)
from paywire.client.policy import APPROVAL, Policy, Quote, Refusal, describe, needs_approval
from paywire.client.protocols import registered
from paywire.client.protocols.base import BuyerProtocol, PaidReceipt, WalletAbilities
from paywire.client.sse import is_event_stream
from paywire.errors import ConfigError, WireError
from paywire.evm.signer import EvmSigner
from paywire.schemes.registry import ClientScheme, default_registry
from paywire.spending import BUDGETED
from paywire.store.db import Database
from paywire.x402.models import SettleResponse

SIWX_HEADER = "SIGN-IN-WITH-X"
_SIWX_KEY = SIWX_HEADER.lower().encode()  # the extension's key in PAYMENT-REQUIRED (identity.siwx.SIGN_IN_WITH_X)

R = TypeVar("R")
log = logging.getLogger(__name__)


class Exchange(Protocol[R]):
    """One request as an HTTP client sees it; ``R`` is that client's response type."""

    url: str
    method: str
    paying: bool
    """The request already carries a payment header (never pay it again)."""

    async def send(self, extra_headers: Mapping[str, str] | None) -> R:
        """Send the request, with ``extra_headers`` added (None: the original request)."""
        ...

    def status(self, response: R) -> int: ...

    def headers(self, response: R) -> Mapping[str, str]:
        """Response headers; lookups with lower-case names must work."""
        ...

    async def read(self, response: R) -> bytes: ...

    async def discard(self, response: R) -> None: ...

    def classify(self, exc: BaseException) -> Sent | None:
        """How far a failed ``send`` got; None when ``exc`` is not a network failure."""
        ...

    def attach(self, response: R, receipt: Receipt, settlement: SettleResponse | None) -> None:
        """Expose the receipt and the parsed ``PAYMENT-RESPONSE`` on the response."""
        ...


@dataclass(frozen=True, slots=True)
class ApprovalRequest:
    """What the approval hook is asked to allow."""

    url: str
    method: str
    quote: Quote
    option: Option

    def __str__(self) -> str:
        return f"{self.method} {self.url}: pay {describe(self.quote)}"


Approver = Callable[[ApprovalRequest], bool | Awaitable[bool]]
WalletLike = Any  # paywire.wallet.Wallet, a Payer, a list of ClientSchemes, or an EvmSigner


# ------------------------------------------------------------------------------------------------ ledgers


class _MemoryLedger:
    """Receipts kept in memory when no store is configured (no budgets: those need a store); the newest
    ``keep`` entries are kept."""

    def __init__(self, keep: int = 10_000) -> None:
        self.rows: dict[int, Receipt] = {}
        self._next = 1
        self._keep = keep

    def _new(self, r: Receipt) -> int:
        rid = self._next
        self._next += 1
        if len(self.rows) >= self._keep:
            for old in [k for k, v in self.rows.items() if v.budget not in ("reserved", "held")][:len(self.rows) // 10]:
                del self.rows[old]
        now = time.time()
        self.rows[rid] = replace(r, id=rid, created_at=now, updated_at=now)
        return rid

    async def reserve(self, policy: Policy, candidates: Sequence[Candidate], *, url: str, method: str,
                      version: int, challenge: str, signed: tuple[Candidate, dict[str, Any]] | None = None) -> Any:
        from paywire.store.spend import Reservation

        c = candidates[0]
        r = _receipt_for(url, method, c, version, challenge, outcome="pending", budget="reserved")
        if signed is not None and signed[0] is c:
            r = replace(r, outcome="signed", **signed[1])
        return Reservation(self._new(r), c)

    async def check(self, policy: Policy, candidates: Sequence[Candidate]) -> Any:
        return candidates[0]

    async def record(self, *, url: str, method: str, host: str, outcome: str, x402_version: int | None = None,
                     candidate: Candidate | None = None, rule: str | None = None, reason: str | None = None,
                     challenge: str | None = None) -> int:
        if candidate is not None:
            r = _receipt_for(url, method, candidate, x402_version, challenge, outcome=outcome, budget="none")
        else:
            r = Receipt(url=url, method=method, host=host, outcome=outcome, x402_version=x402_version,
                        challenge=challenge)
        return self._new(replace(r, rule=rule, reason=reason))

    async def mark_signed(self, row_id: int, *, payload_hash: str, payment_id: str | None, nonce: str | None,
                          valid_before: int | None) -> None:
        self.rows[row_id] = replace(self.rows[row_id], payload_hash=payload_hash, payment_id=payment_id,
                                    nonce=nonce, valid_before=valid_before, outcome="signed")

    async def finish(self, row_id: int, *, outcome: str, budget: str, tx: str | None = None,
                     status_code: int | None = None, rule: str | None = None, reason: str | None = None,
                     identity: str | None = None, proofs: str | None = None, audit: str | None = None,
                     charged: int | None = None) -> bool:
        r = self.rows[row_id]
        if r.budget not in ("reserved", "held"):
            return False
        self.rows[row_id] = replace(r, outcome=outcome, budget=budget, tx=tx or r.tx,
                                    status_code=status_code or r.status_code, rule=rule or r.rule,
                                    reason=reason or r.reason, updated_at=time.time(),
                                    identity=identity or r.identity, proofs=proofs or r.proofs,
                                    audit=audit or r.audit, charged=r.charged if charged is None else charged)
        return True

    async def get(self, row_id: int) -> Receipt | None:
        return self.rows.get(row_id)

    async def history(self, *, limit: int | None = None, all_accounts: bool = False) -> list[Receipt]:
        rows = sorted(self.rows.values(), key=lambda r: -(r.id or 0))
        return rows[:limit] if limit is not None else rows


def _identity(attempt: PaymentAttempt) -> dict[str, Any]:
    """What identifies a signed payment in its ledger row (``SpendLedger.mark_signed``'s fields)."""
    return {"payload_hash": attempt.payload_hash, "payment_id": attempt.payment_id, "nonce": attempt.nonce,
            "valid_before": attempt.valid_before}


async def _mark_signed(ledger: Any, rid: int, attempt: PaymentAttempt) -> None:
    """Write the payment's identity before it leaves (so ``reconcile`` finds its nonce after a crash)."""
    try:
        await ledger.mark_signed(rid, **_identity(attempt))
    except Exception:  # the row still counts as reserved: spend is not under-counted
        log.warning("could not record the signed payment of ledger row %s", rid, exc_info=True)


def _receipt_for(url: str, method: str, c: Candidate, version: int | None, challenge: str | None, *,
                 outcome: str, budget: str) -> Receipt:
    r = c.option.requirements
    return Receipt(url=url, method=method, host=c.quote.host, outcome=outcome, budget=budget, x402_version=version,
                   scheme=r.scheme, network=r.network, asset=r.asset, pay_to=r.pay_to, amount=r.amount,
                   usd_micros=c.quote.usd_micros or 0, challenge=challenge,
                   chosen=json.dumps(c.option.wire(), separators=(",", ":")), protocol=c.option.protocol)


def _audit_reference(settlement: SettleResponse | None) -> str | None:
    """The seller's audit reference in its receipt, as the ledger keeps it (JSON), or None."""
    if settlement is None or not settlement.extensions:
        return None
    from paywire.audit.receipts import reference_of

    ref = reference_of(settlement.extensions)
    return None if ref is None else json.dumps(ref, sort_keys=True, separators=(",", ":"))


class _Row:
    """The ledger row of one payment in flight."""

    def __init__(self, ledger: Any, rid: int) -> None:
        self.ledger, self.rid = ledger, rid

    async def finish(self, **kw: Any) -> None:
        await self.ledger.finish(self.rid, **kw)

    async def get(self) -> Receipt:
        receipt: Receipt = await self.ledger.get(self.rid)
        return receipt


def _may_ask_sign_in(raw: str) -> bool:
    """False when a ``PAYMENT-REQUIRED`` value cannot hold a sign-in challenge: its JSON has neither the
    extension's name nor any escape (a JSON key spells the name literally or with escapes), or it is not base64
    at all (the strict decode refuses it too). Cheaper than the strict decode it saves."""
    try:
        text = binascii.a2b_base64(raw)
    except (binascii.Error, ValueError):
        return False
    return _SIWX_KEY in text or b"\\" in text


def _has_offers(challenge: Challenge) -> bool:
    from paywire.identity.offers import OFFER_RECEIPT

    return OFFER_RECEIPT in (challenge.extensions or {})


class _Evidence:
    """What the buyer keeps with a paid row: the identity it proved, the seller's signed offer for the option
    paid and the signed receipt that came back (checked: our payer, network and origin, the offer's signer)."""

    def __init__(self, url: str, identity: str | None, offer: tuple[Any, Any] | None,
                 trusted: Any) -> None:
        self.url, self.identity, self.offer, self.trusted = url, identity, offer, trusted

    def kept(self, settlement: SettleResponse | None, cand: Candidate) -> dict[str, str]:
        from paywire.identity.offers import ProofError, check_receipt, receipt_of

        out: dict[str, str] = {"identity": self.identity} if self.identity else {}
        proofs: dict[str, Any] = {}
        if self.offer is not None:
            proofs.update(offer=self.offer[0], signer=self.offer[1].signer)
        receipt = receipt_of(settlement.extensions) if settlement is not None else None
        if receipt is not None and settlement is not None and settlement.payer:
            try:
                v = check_receipt(receipt, payer=settlement.payer, network=cand.option.requirements.network,
                                  request_url=self.url, signer=proofs.get("signer"),
                                  trusted=list(self.trusted) if self.trusted is not None else None)
                proofs.update(receipt=receipt, signer=v.signer)
            except ProofError as exc:
                log.warning("paywire: the seller's receipt from %s does not check out: %s", self.url, exc)
        if proofs:
            out["proofs"] = json.dumps(proofs, separators=(",", ":"))
        return out


# ------------------------------------------------------------------------------------------------ the buyer


def host_of(url: str) -> str:
    parts = urlsplit(url)
    return (parts.hostname or "").lower() + (f":{parts.port}" if parts.port else "")


def route_of(url: str) -> str:
    """``host[:port]/path`` (no query): where an L402 token was accepted."""
    return host_of(url) + (urlsplit(url).path or "/")


class Buyer:
    """Pays 402s for any HTTP client, within a policy, with a receipts ledger and retry safety.

    ``wallet``: a :class:`paywire.wallet.Wallet` (balances and on-chain checks too), or just signing
    schemes (a ``Payer``, a list of ``ClientScheme``, or an ``EvmSigner``).
    ``store``: a database URL (``sqlite:///file.db``, ``postgresql://…``), a ``Database``, a ``SpendLedger``,
    or None to keep receipts in memory only (then the policy may not use budgets).
    ``approve``: called (sync or async) for payments above ``policy.approval_threshold``.
    ``max_retries``: how often the same signed payment is resent after a timeout, reset or 5xx.

    MPP and L402 (``WWW-Authenticate: Payment`` / ``L402``) are paid from the same wallet and policy:
    ``lightning`` (or ``wallet.lightning``) is the Lightning wallet backend (LNbits, LND) that pays invoices;
    ``assets`` adds EIP-3009 tokens whose EIP-712 domain MPP ``evm/charge`` needs (besides ``policy.assets``
    and the known USDC); ``nonce_variant`` is the EIP-3009 nonce derivation tried first (``"concat"``, the
    spec and mppx; ``"json"``, pympp) — on a "challenge hash mismatch" the other one is tried once and
    remembered for that host. Paid L402 tokens are reused for the same host until the server refuses them.
    ``protocols``: the payment protocols spoken (default: the registered ones — the built-in x402, MPP and L402
    plus any added with :func:`paywire.client.protocols.register`; ``policy.protocols`` chooses among them).

    The options come as a :class:`~paywire.client.config.BuyerConfig` (``config=``) and/or as keywords
    (:class:`~paywire.client.config.BuyerOptions`), which win; each is checked, and an unknown name raises
    :class:`~paywire.settings.UnknownOption` (a ``TypeError`` and ``ConfigError``) naming it.
    """

    def __init__(self, wallet: WalletLike, policy: Policy | None = None, *, config: BuyerConfig | None = None,
                 **options: Unpack[BuyerOptions]) -> None:
        c = buyer_config(config, options)
        self.config = c
        self.policy = policy or Policy()
        self.approve = c.approve
        self.risk = _risk_guard(c.risk)
        self.max_retries = c.max_retries
        self.retry_delay = c.retry_delay
        self.wallet = wallet if hasattr(wallet, "schemes") and callable(wallet.schemes) else None
        self.schemes = _schemes_of(wallet)
        self.account = c.account or _account_of(wallet, self.schemes)
        self.lightning = c.lightning if c.lightning is not None else getattr(wallet, "lightning", None)
        if self.lightning is not None and not any(getattr(s, "scheme", "") == "lightning" for s in self.schemes):
            from paywire.client.lightning import LightningPayer

            self.schemes.append(LightningPayer(self.lightning))
        known = default_registry.assets()
        self._assets = {(a.network, a.address.lower()): a for a in (*known, *self.policy.assets, *c.assets)}
        self.protocols: tuple[BuyerProtocol, ...] = c.protocols if c.protocols is not None else registered()
        self._by_name = {p.name: p for p in self.protocols}
        self.nonce_variant: str = c.nonce_variant
        self._variants: dict[str, str] = {}  # host → the signing variant its server accepted (MPP nonce)
        # reusable credentials (L402 tokens) as (header, value):
        self._tokens: dict[str, tuple[str, str]] = {}  # host → the latest paid one (tried on paths not seen yet)
        self._token_routes: dict[str, tuple[str, str]] = {}  # host + path → the one last accepted there
        self.send_accept_payment = c.send_accept_payment
        self.sign_in = c.sign_in
        self.agent_key = c.agent_key
        from paywire.identity.didweb import DidWebResolver

        self._did_web = DidWebResolver()
        self._store = store = c.store
        self._ledger: Any = None
        self._reconcile_every = c.reconcile_every
        self._last_reconcile = 0.0
        if store is None and self.policy.has_budgets:
            raise ConfigError("the policy has budgets, which must be remembered: give Buyer(store='sqlite:///…')")
        if store is not None and not self.account:
            raise ConfigError("cannot tell the wallet's address for the ledger: pass account='0x…'")
        self.audit = c.audit
        self._audit_ready: asyncio.Future[Any] | None = None
        if self.audit is not None and store is None:
            raise ConfigError("audit= needs a receipts store to audit: give Buyer(store='sqlite:///…')")

    # -------------------------------------------------------------- ledger

    async def ledger(self) -> Any:
        """The ledger (opened and migrated on first use)."""
        if self._ledger is not None:
            await getattr(self._ledger, "ensure_schema", _noop)()
            if self._audit_ready is not None:  # no change before its audit trail is on
                await asyncio.shield(self._audit_ready)
            return self._ledger
        if self._store is None:
            self._ledger = _MemoryLedger()
            return self._ledger
        from paywire.store.db import open_database
        from paywire.store.spend import SpendLedger

        store = self._store
        if isinstance(store, SpendLedger):
            ledger = store
        else:
            db: Database = open_database(store) if isinstance(store, str) else store
            ledger = SpendLedger(db, self.account)
        self._ledger = ledger  # set before awaiting: concurrent first requests share one ledger
        if self.audit is not None and ledger.audit is None:
            self._audit_ready = asyncio.ensure_future(self._enable_audit(ledger, self.audit))
        await ledger.ensure_schema()
        for scheme in self.schemes:  # stateful schemes keep their state next to the receipts (batch channels)
            use_store = getattr(scheme, "use_store", None)
            if use_store is not None:
                await use_store(ledger.db, self.account)
        if self._audit_ready is not None:
            await asyncio.shield(self._audit_ready)
        return ledger

    async def _enable_audit(self, ledger: Any, instance: str) -> None:
        """Audit the ledger's changes from now on, and record the policy in force (a change between two starts
        shows as a different ``settings_digest``)."""
        from paywire.audit.wiring import enable_audit, policy_settings, record_config

        await enable_audit(ledger, "buyer", instance)
        await record_config(ledger.db, instance, "config.buyer_started", {"policy": policy_settings(
            self.policy, self.account or "")})

    async def history(self, limit: int | None = None) -> list[Receipt]:
        """Receipts, newest first."""
        return list(await (await self.ledger()).history(limit=limit))

    async def reconcile(self) -> int:
        """Release budget held by payments whose authorization expired unused on chain (needs a Wallet with
        a node for the network); count payments the chain shows settled. Returns rows changed."""
        ledger = await self.ledger()
        wallet = self.wallet
        if wallet is None or not hasattr(ledger, "reconcile"):
            return 0

        async def used(r: Receipt) -> bool | None:
            if not (r.network and r.asset and r.nonce):
                return None
            result: bool | None = await wallet.authorization_used(r.network, r.asset, r.nonce, r.valid_before)
            return result

        self._last_reconcile = time.monotonic()
        return int(await ledger.reconcile(used))

    async def aclose(self) -> None:
        """Close what the buyer opened (its ledger connections; the database when it was given a URL)."""
        ledger, self._ledger = self._ledger, None
        if ledger is None or self._store is None:
            return
        if hasattr(ledger, "aclose") and not isinstance(self._store, type(ledger)):
            await ledger.aclose()
        if isinstance(self._store, str):
            await ledger.db.aclose()

    # -------------------------------------------------------------- the flow

    async def handle(self, ex: Exchange[R]) -> R:
        """Send ``ex``'s request; pay a 402 if the policy allows; return the final response.

        Raises a :class:`PaymentError` subclass instead of returning an unpaid or refused 402."""
        if self.agent_key is not None and not isinstance(ex, _SignedExchange):
            ex = _SignedExchange(ex, self.agent_key)
        host, route = host_of(ex.url), route_of(ex.url)
        own = self._token_routes.get(route) if not ex.paying else None
        token = own or (self._tokens.get(host) if not ex.paying else None)
        if token is not None:  # a paid L402 token is reusable until the server refuses it (checklist 103)
            first = await ex.send({token[0]: token[1]})
            if ex.status(first) not in (401, 402):
                self._remember_token(host, route, token, latest=False)
                return first
            if own is not None:  # refused where it was accepted before: revoked or expired, forget it
                self._forget_token(token)
            await ex.discard(first)  # else another service's token (one host, several services): keep it
        first = await ex.send(self._first_headers() if not ex.paying else None)
        if ex.status(first) != 402 or ex.paying:
            return first
        body = await ex.read(first)
        proof: str | None = None
        signed_in_as: str | None = None
        if self.sign_in:  # Sign-In-With-X: a seller that remembers our payment serves us again for free
            answer = await self._sign_in(ex, ex.headers(first))
            if answer is not None:
                again = await ex.send({SIWX_HEADER: answer[0]})
                if ex.status(again) != 402:
                    await ex.discard(first)
                    return again
                await ex.discard(first)
                first, body = again, await ex.read(again)
                answer = await self._sign_in(ex, ex.headers(first))  # the fresh challenge, sent with the payment
                if answer is not None:
                    proof, signed_in_as = answer
        ledger = await self.ledger()
        try:
            challenge = read_any_challenge(ex.headers(first), body, assets=self._asset_for,
                                           protocols=self.policy.protocols, registry=self.protocols)
        except WireError as exc:
            rid = await ledger.record(url=ex.url, method=ex.method, host=host, outcome="failed",
                                      reason=f"unreadable 402: {exc}")
            raise PaymentError(f"{ex.url} answered 402 without a readable x402 challenge (nor MPP or L402): {exc}",
                               receipt=await ledger.get(rid)) from exc
        await ex.discard(first)
        if self.wallet is not None and self._store is not None and \
                time.monotonic() - self._last_reconcile > self._reconcile_every:
            await self.reconcile()
        signed: dict[int, tuple[Any, Any]] = {}
        if self.policy.offer_signers is not None or _has_offers(challenge):
            challenge, signed = await self._signed_offers(ex, challenge, host, ledger)
        attempt, rid, cand = await self._prepare(ex, challenge, host, ledger)
        who = signed_in_as or (self.agent_key.did if self.agent_key is not None else None)
        evidence = _Evidence(ex.url, who, signed.get(cand.option.index) if cand.option.protocol == "x402" else None,
                             self.policy.offer_signers)
        if proof is not None:
            attempt = replace(attempt, extra=((SIWX_HEADER, proof),))
        return await self._deliver(ex, challenge, attempt, _Row(ledger, rid), cand, evidence)

    async def _signed_offers(self, ex: Exchange[Any], challenge: Challenge, host: str,
                             ledger: Any) -> tuple[Challenge, dict[int, tuple[Any, Any]]]:
        """The x402 options with a valid signed offer (x402 ``offer-receipt``); when the policy names
        ``offer_signers``, only those options stay payable (none: refused, nothing signed)."""
        from paywire.identity.offers import offers_of, signed_offers, web_kids

        x402 = [o for o in challenge.options if o.protocol == "x402"]
        keys: dict[str, tuple[str, bytes]] = {}
        for did in sorted(web_kids(offers_of(challenge.extensions)))[:4]:  # did:web kids: fetch their documents
            try:
                keys.update(await self._did_web.keys(did))
            except WireError as exc:
                log.warning("paywire: cannot resolve the offer signer %s: %s", did, exc)
        found = signed_offers(challenge.extensions, [o.requirements for o in x402], ex.url, time.time(),
                              self.policy.offer_signers, keys)
        signed = {x402[i].index: v for i, v in found.items()}
        if self.policy.offer_signers is None:
            return challenge, signed
        keep = tuple(o for o in challenge.options if o.index in signed and o.protocol == "x402")
        if not keep:
            refusal = Refusal("offer_signature", "no offer is signed by a seller key the policy trusts "
                                                 "(Policy.offer_signers)")
            rid = await ledger.record(url=ex.url, method=ex.method, host=host, outcome="refused",
                                      x402_version=challenge.version, rule=refusal.rule, reason=refusal.reason,
                                      challenge=challenge.to_json())
            raise PaymentRefused(f"{ex.url}: {refusal}", [refusal], receipt=await ledger.get(rid))
        return replace(challenge, options=keep), signed

    async def _sign_in(self, ex: Exchange[Any], headers: Mapping[str, str]) -> tuple[str, str] | None:
        """A ``SIGN-IN-WITH-X`` proof answering the 402's challenge with the paying wallet's EVM key (its Solana key
        when the challenge names no EVM chain it may use), on a network
        the policy allows and for the origin that sent it; None when there is no such challenge or key."""
        from paywire.identity.siwx import (
            SIGN_IN_WITH_X,
            answer_challenge,
            choose_chain,
            encode_proof,
            personal_sign_digest,
        )
        from paywire.x402.codec import decode_header

        raw = headers.get("payment-required")
        policy = self.policy
        if raw is None or (policy.allowed_hosts is not None and host_of(ex.url) not in policy.allowed_hosts):
            return None
        if not _may_ask_sign_in(raw):  # the usual 402: no need to decode it twice
            return None
        try:
            ext = (decode_header(raw).get("extensions") or {}).get(SIGN_IN_WITH_X)
        except (WireError, AttributeError):
            return None
        if not isinstance(ext, Mapping):  # no sign-in asked (the usual 402): no signer to look for
            return None
        signers = [getattr(s, "signer", None) for s in self.schemes]
        signer = next((x for x in signers if isinstance(x, EvmSigner)
                       and (not self.account or x.address.lower() == self.account.lower())), None)
        allowed = list(policy.allowed_networks) if policy.allowed_networks is not None else None
        network = choose_chain(ext, allowed) if signer is not None else None
        if network is None:  # no EVM chain (or key) to sign in with: the wallet's Solana account, if any
            return await self._sign_in_solana(ex, ext, allowed)
        assert signer is not None
        try:
            payload, text = answer_challenge(ext, ex.url, signer.address, network)
        except WireError as exc:
            log.warning("paywire: not answering the sign-in challenge of %s: %s", ex.url, exc)
            return None
        from paywire.identity.did import did_pkh

        proof = encode_proof(payload, await signer.sign_digest(personal_sign_digest(text)))
        return proof, did_pkh(network, signer.address)

    async def _sign_in_solana(self, ex: Exchange[Any], ext: Mapping[str, Any],
                              allowed: list[str] | None) -> tuple[str, str] | None:
        """A Sign-In With Solana proof with the wallet's Solana key (``Wallet(..., solana=SolanaKey(...))``)."""
        from paywire.identity.siws import SolanaKey
        from paywire.identity.siwx import answer_challenge, choose_chain, encode_proof

        key = getattr(self.wallet, "solana", None)
        network = choose_chain(ext, allowed, "ed25519") if isinstance(key, SolanaKey) else None
        if network is None or not isinstance(key, SolanaKey):
            return None
        try:
            payload, text = answer_challenge(ext, ex.url, key.address, network)
        except (WireError, KeyError, TypeError) as exc:
            log.warning("paywire: not answering the sign-in challenge of %s: %s", ex.url, exc)
            return None
        return encode_proof(payload, key.sign_message(text.encode())), f"did:pkh:{network}:{key.address}"

    def _remember_token(self, host: str, route: str, token: tuple[str, str], *, latest: bool) -> None:
        if latest:
            self._tokens[host] = token
        self._token_routes.pop(route, None)
        self._token_routes[route] = token
        while len(self._token_routes) > 4096:  # oldest first
            del self._token_routes[next(iter(self._token_routes))]

    def _forget_token(self, token: tuple[str, str]) -> None:
        for table in (self._tokens, self._token_routes):
            for key in [k for k, v in table.items() if v == token]:
                del table[key]

    def _first_headers(self) -> dict[str, str] | None:
        """What the protocols add to the unpaid request (MPP ``Accept-Payment``: the methods this wallet can
        answer; servers filter and order by it)."""
        if not self.send_accept_payment:
            return None
        abilities = WalletAbilities(self.schemes, self.lightning is not None)
        out: dict[str, str] = {}
        for proto in self.protocols:
            if proto.name in self.policy.protocols:
                out.update(proto.request_headers(abilities))
        return out or None

    def _asset_for(self, network: str, token: str) -> Any:
        return self._assets.get((network, token.lower()))

    async def _balances(self, challenge: Challenge) -> dict[tuple[str, str], int | None]:
        wallet = self.wallet
        if wallet is None or not hasattr(wallet, "balance"):
            return {}
        keys = sorted({(o.requirements.network, o.requirements.asset) for o in challenge.options
                       if o.requirements.network.startswith("eip155:")})
        if len(keys) == 1:  # awaited here: no task and no extra turn of the event loop for the usual one offer
            try:
                one = await wallet.balance(*keys[0])
            except Exception:
                one = None
            return {keys[0]: one if isinstance(one, int) else None}
        values = await asyncio.gather(*(wallet.balance(n, a) for n, a in keys), return_exceptions=True)
        return {k: (v if isinstance(v, int) else None) for k, v in zip(keys, values, strict=True)}

    async def _prepare(self, ex: Exchange[Any], challenge: Challenge, host: str,
                       ledger: Any) -> tuple[PaymentAttempt, int, Candidate]:
        policy = self.policy
        balances = await self._balances(challenge)
        ranking = rank_options(challenge, host, policy, self.schemes,
                               balance=lambda o: balances.get((o.requirements.network, o.requirements.asset)))
        cj = challenge.to_json()
        record = {"url": ex.url, "method": ex.method, "host": host, "x402_version": challenge.version,
                  "challenge": cj}
        if not ranking.candidates:
            opt, ref = ranking.refusals[0]
            rid = await ledger.record(outcome="refused", candidate=Candidate(opt, quote_of(opt, host, policy)),
                                      rule=ref.rule, reason=ref.reason, **record)
            raise PaymentRefused(refusal_message(ex.url, ranking.refusals), [r for _, r in ranking.refusals],
                                 receipt=await ledger.get(rid))
        ranking = replace(ranking, candidates=tuple([await self._budgeted(c) for c in ranking.candidates]))
        if policy.dry_run:
            chosen = await ledger.check(policy, ranking.candidates)
            if isinstance(chosen, Candidate):
                rid = await ledger.record(outcome="dry_run", candidate=chosen, reason="dry run: nothing signed",
                                          **record)
                raise DryRunPayment(f"dry run: would pay {describe(chosen.quote)} for {ex.url}", chosen.quote,
                                    receipt=await ledger.get(rid))
            await self._budget_refused(ex, chosen.refusals, ranking.refusals, record, ledger)
        # a plain x402 ``exact`` EVM payment (no approval, no risk guard) is signed first and its identity
        # written with the reservation, in one transaction; the payment leaves only after that commit
        pre = await self._presign(ex, challenge, host, ranking.candidates[0])
        res = await ledger.reserve(policy, ranking.candidates, url=ex.url, method=ex.method,
                                   version=challenge.version, challenge=cj,
                                   signed=None if pre is None else (pre[0], _identity(pre[1])))
        from paywire.store.spend import BudgetRefused

        if isinstance(res, BudgetRefused):
            await self._budget_refused(ex, [(c, _deposit_refusal(c, r)) for c, r in res.refusals],
                                       ranking.refusals, record, ledger)
        rid, cand = res.id, res.candidate
        if pre is not None and pre[0] is cand:
            return pre[1], rid, cand
        try:
            if needs_approval(policy, cand.quote):
                ok = await self._ask(ApprovalRequest(ex.url, ex.method, cand.quote, cand.option))
                if not ok:
                    await ledger.finish(rid, outcome="declined", budget="released", rule=APPROVAL,
                                        reason="the approval hook said no")
                    raise PaymentDeclined(f"payment of {describe(cand.quote)} for {ex.url} was not approved",
                                          receipt=await ledger.get(rid))
            if self.risk is not None:  # the risk guard, last before signing
                await self._risk_check(ex, host, cand, ledger, rid)
            attempt = await self._sign(challenge, cand, host)
        except PaymentError:
            raise
        except BaseException as exc:
            if _maybe_paid(exc):  # a Lightning payment that may have gone out: keep it counted
                await ledger.finish(rid, outcome="unknown", budget="held",
                                    reason=f"lightning payment outcome unknown: {exc}")
                raise PaymentOutcomeUnknown(f"paying the invoice for {ex.url} had an unknown outcome: {exc}",
                                            receipt=await ledger.get(rid)) from exc
            await ledger.finish(rid, outcome="failed", budget="released",
                                reason=f"not signed: {type(exc).__name__}: {exc}")
            if isinstance(exc, Exception):
                raise PaymentError(f"could not sign the payment for {ex.url}: {exc}",
                                   receipt=await ledger.get(rid)) from exc
            raise
        await _mark_signed(ledger, rid, attempt)
        return attempt, rid, cand

    async def _sign(self, challenge: Challenge, cand: Candidate, host: str) -> PaymentAttempt:
        scheme = scheme_for(self.schemes, cand.option.requirements)
        assert scheme is not None
        token = BUDGETED.set(cand.quote.amount if hasattr(scheme, "budget_amount") else None)
        try:
            attempt: PaymentAttempt = await self._by_name[cand.option.protocol].credential(
                challenge, cand.option, scheme, variant=self._variants.get(host, self.nonce_variant))
        finally:
            BUDGETED.reset(token)
        return attempt

    async def _presign(self, ex: Exchange[Any], challenge: Challenge, host: str,
                       cand: Candidate) -> tuple[Candidate, PaymentAttempt] | None:
        """``cand`` signed before its budget is reserved, when that has no effect outside this process: an x402
        ``exact`` payment on an EVM network that needs no approval and no risk check (signing is local; the
        signature is only kept, never sent, until the reservation is committed). None otherwise, or when
        signing fails (the usual path signs again after reserving and records the failure)."""
        r = cand.option.requirements
        if cand.option.protocol != "x402" or r.scheme != "exact" or not r.network.startswith("eip155:") or \
                self.risk is not None or needs_approval(self.policy, cand.quote):
            return None
        scheme = scheme_for(self.schemes, r)
        if scheme is None or hasattr(scheme, "budget_amount"):
            return None
        try:
            return cand, await self._sign(challenge, cand, host)
        except Exception:
            return None

    async def _budgeted(self, cand: Candidate) -> Candidate:
        """The candidate as the budgets see it: a scheme with ``budget_amount`` (``batch-settlement``) reserves
        what it will actually move — the channel's deposit when one is due, 0 for a voucher inside it."""
        scheme = scheme_for(self.schemes, cand.option.requirements)
        hook = getattr(scheme, "budget_amount", None)
        if hook is None:
            return cand
        r = cand.option.requirements
        amount = int(await hook(r))
        usd = None if cand.quote.usd_micros is None else self.policy.value(r.network, r.asset, amount)
        return Candidate(cand.option, replace(cand.quote, amount=amount, usd_micros=usd))

    async def refund_channel(self, url: str, amount: int | None = None, *, method: str = "GET") -> SettleResponse:
        """Ask the seller at ``url`` for a cooperative refund of our ``batch-settlement`` channel (``amount``
        atomic units, default all that is unspent); what comes back is released to the budgets (a ledger row of
        negative weight). ``RefundFailed`` says why not."""
        from paywire.schemes.evm_batch.client import BatchEvmClient
        from paywire.schemes.evm_batch.refund import refund_offer

        scheme = next((s for s in self.schemes if isinstance(s, BatchEvmClient)), None)
        if scheme is None:
            raise ConfigError("the wallet has no batch-settlement scheme to refund a channel with")
        ledger = await self.ledger()  # attaches the durable channel book to the scheme
        res, offer = await refund_offer(scheme, url, amount, method=method)
        if res.success and res.amount:
            await self.release(url, offer.network, offer.asset, int(res.amount), method=method,
                               payee=offer.pay_to, ledger=ledger, reason=f"channel refund {res.transaction}")
        return res

    async def release(self, url: str, network: str, asset: str, amount: int, *, method: str = "GET",
                      payee: str = "", ledger: Any = None, reason: str = "") -> None:
        """Give ``amount`` atomic units back to the budgets (a channel refund or withdrawal returned unspent
        deposit): a committed ledger row of negative weight, valued rounding down, so spend is never
        under-counted."""
        ledger = ledger or await self.ledger()
        if not hasattr(ledger, "release") or amount <= 0:
            return
        usd = self.policy.value_released(network, asset, amount)
        if usd:
            await ledger.release(url=url, method=method, host=host_of(url), network=network, asset=asset,
                                 pay_to=payee, amount=amount, usd_micros=usd, reason=reason or "channel refund")

    async def _risk_check(self, ex: Exchange[Any], host: str, cand: Candidate, ledger: Any, rid: int) -> None:
        from paywire.risk.buyer import RiskRefused

        decision = await self.risk.check(host, route_of(ex.url), cand)
        if not decision.allowed:
            await ledger.finish(rid, outcome="refused", budget="released", rule=f"risk:{decision.rule or ''}",
                                reason=decision.reason or "refused by the risk guard")
            raise RiskRefused(decision, ex.url, receipt=await ledger.get(rid))

    async def _budget_refused(self, ex: Exchange[Any], budget_refusals: Sequence[tuple[Candidate, Refusal]],
                              static: Sequence[tuple[Option, Refusal]], record: dict[str, Any],
                              ledger: Any) -> NoReturn:
        cand, ref = budget_refusals[0]
        rid = await ledger.record(outcome="refused", candidate=cand, rule=ref.rule, reason=ref.reason, **record)
        pairs = [(c.option, r) for c, r in budget_refusals] + list(static)
        raise PaymentRefused(refusal_message(ex.url, pairs), [r for _, r in pairs], receipt=await ledger.get(rid))

    async def _ask(self, request: ApprovalRequest) -> bool:
        if self.approve is None:
            return False
        if inspect.iscoroutinefunction(self.approve):
            return bool(await self.approve(request))
        result = await asyncio.to_thread(self.approve, request)
        if inspect.isawaitable(result):
            result = await result
        return bool(result)

    async def _deliver(self, ex: Exchange[R], challenge: Challenge, attempt: PaymentAttempt, row: _Row,
                       cand: Candidate, evidence: _Evidence | None = None) -> R:
        proto = self._by_name[cand.option.protocol]
        tries = 0
        reached = False
        switched = False
        answered = False  # a risk challenge answered with a sign-in (once)
        while True:
            try:
                response = await ex.send(attempt.headers)
            except Exception as exc:
                sent = ex.classify(exc) or Sent.MAYBE_SENT
                reached = reached or sent is Sent.MAYBE_SENT
                nxt = after_send_error(sent, tries, self.max_retries, reached)
                if nxt is Next.RESEND:
                    tries += 1
                    await asyncio.sleep(self.retry_delay * tries)
                    continue
                if nxt is Next.UNSENT:
                    await row.finish(outcome="failed", budget="released",
                                        reason=f"never reached the server: {type(exc).__name__}: {exc}")
                    raise PaymentError(f"could not reach {ex.url} to pay: {exc}",
                                       receipt=await row.get()) from exc
                await row.finish(outcome="unknown", budget="held",
                                    reason=f"no answer after {tries + 1} sends: {type(exc).__name__}: {exc}")
                raise PaymentOutcomeUnknown(
                    f"{ex.url}: no answer to the paid request after {tries + 1} tries ({exc}); the payment "
                    "may have settled, so its budget stays spent", receipt=await row.get()) from exc
            status = ex.status(response)
            nxt = after_response(status, tries, self.max_retries)
            if nxt is Next.RESEND:
                reached = True
                await ex.discard(response)
                tries += 1
                await asyncio.sleep(self.retry_delay * tries)
                continue
            headers = ex.headers(response)
            paid = proto.receipt(headers, cand.option)
            settlement = paid.settlement
            if nxt is Next.REJECTED:
                reason = rejection_reason(headers, await ex.read(response))
                if reason.startswith("risk_challenge") and self.sign_in and not answered:
                    # the seller's risk engine asks who we are: the same payment again, with a sign-in proof
                    answered = True
                    answer = await self._sign_in(ex, headers)
                    if answer is not None:
                        extra = tuple(h for h in attempt.extra if h[0] != SIWX_HEADER)
                        attempt = replace(attempt, extra=(*extra, (SIWX_HEADER, answer[0])))
                        continue
                retry = None if switched else await self._resign(ex, response, challenge, reason, cand, proto)
                if retry is not None:  # e.g. the peer derives the EIP-3009 nonce the other way: once, then remember
                    switched = True
                    attempt, cand = retry
                    await _mark_signed(row.ledger, row.rid, attempt)
                    continue
                return await self._rejected(ex, response, attempt, row, cand, reached, settlement, reason)
            if nxt is Next.UNKNOWN:
                await row.finish(outcome="unknown", budget="held", status_code=status,
                                    reason=f"HTTP {status} after {tries + 1} tries")
            elif 200 <= status < 400:
                if settlement is None and proto.name == "x402" and is_event_stream(headers):
                    # a streamed (variable-price) response: its receipt is the stream's last event, sent once the
                    # charge is known; the row is finished when the body ends
                    tail = getattr(ex, "tail", None)
                    ended = self._served_later(ex, response, row, cand, status, paid, evidence, proto, attempt)
                    if tail is not None and tail(response, ended):
                        ex.attach(response, await row.get(), None)
                        return response
                return await self._served(ex, response, row, cand, status, paid, evidence, proto, attempt)
            else:
                # an error status instead of the resource: honest servers do not settle then (checklist 19);
                # the budget stays held until the chain shows the authorization expired unused
                await row.finish(outcome="rejected", budget="held", status_code=status,
                                    reason=f"HTTP {status} to the paid request")
            receipt = await row.get()
            ex.attach(response, receipt, settlement)
            return response

    async def _served(self, ex: Exchange[R], response: R, row: _Row, cand: Candidate, status: int,
                      paid: PaidReceipt, evidence: _Evidence | None, proto: Any, attempt: PaymentAttempt) -> R:
        """A paid request was served (2xx/3xx): finish its row with the seller's receipt (``PAYMENT-RESPONSE``, or
        a stream's closing ``payment-response`` event): its transaction and the amount it says it charged."""
        settlement = paid.settlement
        if settlement is not None and not settlement.success:
            await row.finish(outcome="unknown", budget="held", status_code=status,
                             reason=f"served, but settlement reported {settlement.error_reason}")
        else:
            kept = evidence.kept(settlement, cand) if evidence is not None else {}
            await _scheme_settled(scheme_for(self.schemes, cand.option.requirements),
                                  cand.option.requirements, settlement)
            await row.finish(outcome="paid", budget="committed", status_code=status, tx=paid.reference or None,
                             audit=_audit_reference(settlement), charged=_charged(settlement), **kept)
            if proto.reuses_credential:
                self._remember_token(host_of(ex.url), route_of(ex.url), (attempt.header, attempt.value),
                                     latest=True)
        ex.attach(response, await row.get(), settlement)
        return response

    def _served_later(self, ex: Exchange[R], response: R, row: _Row, cand: Candidate, status: int,
                      paid: PaidReceipt, evidence: _Evidence | None, proto: Any,
                      attempt: PaymentAttempt) -> Callable[[str | None], Coroutine[Any, Any, None]]:
        """What to run when a streamed response's body ends: :meth:`_served` with its closing receipt event
        (``raw``: the event's data; None without one, then the row is finished as a header-less answer)."""

        async def ended(raw: str | None) -> None:
            final = proto.receipt({"payment-response": raw}, cand.option) if raw else paid
            await self._served(ex, response, row, cand, status, final, evidence, proto, attempt)

        return ended

    async def _resign(self, ex: Exchange[R], response: R, challenge: Challenge, reason: str, cand: Candidate,
                      proto: BuyerProtocol) -> tuple[PaymentAttempt, Candidate] | None:
        """A rejection the protocol answers by signing this 402's fresh offer another way (MPP "challenge hash
        mismatch": the other EIP-3009 nonce derivation); the variant is remembered for the host."""
        host = host_of(ex.url)
        used = self._variants.get(host, self.nonce_variant)
        current = scheme_for(self.schemes, cand.option.requirements)
        if await _scheme_recovered(current, reason, ex.headers(response), cand.option.requirements):
            assert current is not None  # a channel scheme resynced (batch-settlement corrective 402): sign again
            token = BUDGETED.set(cand.quote.amount if hasattr(current, "budget_amount") else None)
            try:
                new_attempt = await proto.credential(challenge, cand.option, current, variant=used)
            finally:
                BUDGETED.reset(token)
            await ex.discard(response)
            return new_attempt, cand
        resign = proto.resign(reason, ex.headers(response), cand.option, used, self._asset_for)
        if resign is None:
            return None
        scheme = scheme_for(self.schemes, resign.option.requirements)
        if scheme is None:
            return None
        new = await proto.credential(challenge, resign.option, scheme, variant=resign.variant)
        self._variants[host] = resign.variant
        await ex.discard(response)
        return new, Candidate(resign.option, cand.quote)

    async def _rejected(self, ex: Exchange[R], response: R, attempt: PaymentAttempt, row: _Row, cand: Candidate,
                        reached: bool, settlement: SettleResponse | None, reason: str) -> R:
        used: bool | None = None
        wallet = self.wallet
        if wallet is not None and attempt.nonce and hasattr(wallet, "authorization_used"):
            r = cand.option.requirements
            used = await wallet.authorization_used(r.network, r.asset, attempt.nonce)
        status = ex.status(response)
        if used:
            await row.finish(outcome="paid", budget="committed", status_code=status,
                                reason=f"server answered 402 ({reason}) but the payment settled on chain")
            receipt = await row.get()
            ex.attach(response, receipt, settlement)
            raise PaymentRejected(f"{ex.url} took the payment (settled on chain) but answered 402: {reason}",
                                  reason, receipt=receipt, settlement=settlement)
        if reached:
            await row.finish(outcome="unknown", budget="held", status_code=status,
                                reason=f"402 after a lost answer: {reason}")
            receipt = await row.get()
            ex.attach(response, receipt, settlement)
            raise PaymentOutcomeUnknown(
                f"{ex.url} answered 402 ({reason}) to a resent payment whose first answer was lost; it may "
                "have settled, so its budget stays spent", receipt=receipt)
        await row.finish(outcome="rejected", budget="held", status_code=status, reason=reason)
        receipt = await row.get()
        ex.attach(response, receipt, settlement)
        hint = ""
        if reason.endswith("permit2_allowance_required"):  # exact/upto, and batch-settlement's deposit: in words
            from paywire.evm.permit2 import PERMIT2_ADDRESS

            r = cand.option.requirements
            hint = (f": approve Permit2 ({PERMIT2_ADDRESS}) to spend token {r.asset} on {r.network} once "
                    "(paywire.chain.permit2.approve_permit2), then pay again")
        raise PaymentRejected(f"{ex.url} refused the payment: {reason}{hint}", reason, receipt=receipt,
                              settlement=settlement)


def as_buyer(buyer: Buyer | WalletLike, policy: Policy | None, config: BuyerConfig | None, options: BuyerOptions,
             *, where: str) -> tuple[Buyer, bool]:
    """(the buyer, whether it was made here) for an adapter given ``buyer``: a ready :class:`Buyer` as it is (then
    no policy, config or options, which it could not take: ``ConfigError``), else a new one from the wallet and
    those."""
    if isinstance(buyer, Buyer):
        given = [n for n, v in (("policy", policy), ("config", config)) if v is not None] + sorted(options)
        if given:
            raise ConfigError(f"{where}() got a ready Buyer and {', '.join(given)}: give those to the Buyer instead")
        return buyer, False
    return Buyer(buyer, policy, config=buyer_config(config, options, where=where)), True


def _deposit_refusal(cand: Candidate, ref: Refusal) -> Refusal:
    """A budget refusal of a channel deposit, said as such (the price was the deposit, not the request)."""
    r = cand.option.requirements
    if r.scheme != "batch-settlement" or cand.quote.amount == r.amount:
        return ref
    return Refusal(ref.rule, f"opening a batch-settlement channel reserves its deposit of {cand.quote.amount} "
                             f"atomic units ({describe(cand.quote)}, {cand.quote.amount // max(r.amount, 1)} "
                             f"requests at {r.amount}), which exceeds the remaining budget: {ref.reason}")


def _risk_guard(risk: Any) -> Any:
    if risk is None or risk is False:
        return None
    from paywire.risk.buyer import buyer_guard

    return buyer_guard(risk)


def _charged(settlement: SettleResponse | None) -> int | None:
    """The amount a receipt says was charged: ``extra.chargedAmount`` (a channel voucher moves no token, its
    ``amount`` is empty), else ``amount``."""
    if settlement is None:
        return None
    extra = settlement.extra or {}
    value = extra.get("chargedAmount")
    if isinstance(value, str) and value.isdigit():
        return int(value)
    return settlement.amount


async def _scheme_settled(scheme: ClientScheme | None, requirements: Any, settlement: SettleResponse | None) -> None:
    """Tell a stateful scheme (``batch-settlement``) what the seller answered (its charge, the channel state)."""
    hook = getattr(scheme, "settled", None)
    if hook is not None and settlement is not None:
        await hook(requirements, settlement)


async def _scheme_recovered(scheme: ClientScheme | None, reason: str, headers: Mapping[str, str],
                            requirements: Any) -> bool:
    """A stateful scheme's resync from a corrective 402 (its offer's ``extra``); True: sign again."""
    hook = getattr(scheme, "recover", None)
    if hook is None:
        return False
    from paywire.x402.codec import decode_payment_required

    raw = next((v for k, v in headers.items() if k.lower() == "payment-required"), None)
    extra: Mapping[str, Any] = {}
    if raw is not None:
        try:
            for offer in decode_payment_required(raw).accepts:
                if offer.scheme == requirements.scheme and offer.network == requirements.network:
                    extra = offer.extra
                    break
        except Exception:
            return False
    return bool(await hook(reason, requirements, extra))


async def _noop() -> None:
    return None


def _maybe_paid(exc: BaseException) -> bool:
    from paywire.lightning.base import LightningError

    return isinstance(exc, LightningError) and exc.retryable


def _schemes_of(wallet: WalletLike) -> list[ClientScheme]:
    if isinstance(wallet, Payer):
        return list(wallet.schemes)
    if hasattr(wallet, "schemes") and callable(wallet.schemes):
        return list(wallet.schemes())
    if isinstance(wallet, EvmSigner):
        return default_registry.clients_for(wallet)
    if isinstance(wallet, list | tuple):
        return list(wallet)
    raise ConfigError(f"not a wallet: {wallet!r} (give a paywire.wallet.Wallet, a Payer, schemes or a signer)")


def _account_of(wallet: WalletLike, schemes: Sequence[ClientScheme]) -> str:
    address = getattr(wallet, "address", None)
    if isinstance(address, str):
        return address
    for s in schemes:
        signer = getattr(s, "signer", None)
        if signer is not None and isinstance(getattr(signer, "address", None), str):
            return str(signer.address)
    return ""


class _SignedExchange(Generic[R]):
    """An exchange whose every send carries the agent's RFC 9421 signature (over the payment header too)."""

    def __init__(self, inner: Exchange[R], key: Any) -> None:
        self._inner, self._key = inner, key
        self.url, self.method, self.paying = inner.url, inner.method, inner.paying

    async def send(self, extra_headers: Mapping[str, str] | None) -> R:
        extra = dict(extra_headers or {})
        extra.update(self._key.sign(self.method, self.url, extra, time.time()))
        return await self._inner.send(extra)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


class ExchangeBase(Generic[R]):
    """Shared fields of the adapters."""

    def __init__(self, url: str, method: str, paying: bool) -> None:
        self.url = url
        self.method = method
        self.paying = paying
