"""One orchestration for every adapter: decide → claim → verify → handler ⇄ settle → record → release.

``PaymentFlow.begin(request)`` returns a :data:`Plan`; the adapter (ASGI, WSGI) carries it out:

* :class:`Forward` — not a paid request: run the app as usual;
* :class:`Respond` — send this reply (402, replay of a recorded response, 409, 503 …);
* :class:`RunBuffered` — ``settle="after"``: run the app buffered, then ``await plan.finish(result)`` for the
  reply to send (settled response, or 402 when settlement failed; handler >= 400 / exception → no charge);
* :class:`RunStreaming` — ``settle="before"``: already paid; stream the app's response with ``plan.headers``
  added, then ``await plan.finish(recorded)``.

Exactly-once: the payment is claimed in the store (unique authorization / payment id) before anything runs;
concurrent or later copies of it wait for the recorded outcome and replay it, and never run the handler.

Which payment a request carries, its challenges and receipts are the protocols' business
(:mod:`paywire.server.protocols`): each parses its credential into proceed (claimed here, whatever protocol
carried it), reject (a reply with every fresh challenge) or pass (a reusable credential: :class:`Forward` with
its :class:`PaymentInfo`). A protocol may deliver a credential once: a copy then gets its rejection instead of
a replay.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import json
import logging
import os
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final, TypeVar

from paywire.errors import ConfigError, WireError
from paywire.facilitator.client import FacilitatorClient, FacilitatorUnavailable
from paywire.identity.did import CLAIMED_PREFIX, Identity
from paywire.identity.metadata import IDENTITY_EXTENSION, identity_extension, proven_identity
from paywire.lightning.base import LightningBackend
from paywire.mpp.problems import Problem
from paywire.schemes.registry import default_registry
from paywire.server.chains import ChainReaders
from paywire.server.core import Decision, Headers, PaidRoute, Proceed, Reply, Seller, json_reply, scheme_payer
from paywire.server.identity import Free, IdentityGate, Reaccess
from paywire.server.metering import SETTLEMENT_OVERRIDES, Meter, override_of
from paywire.server.protocols import seller_protocols
from paywire.server.protocols.base import (
    NO_LIGHTNING,
    Admit,
    Reject,
    SellerContext,
    SellerProtocol,
    challenge_reply,
    error_of,
)
from paywire.server.request import RequestInfo
from paywire.store import store_url

if TYPE_CHECKING:
    from paywire.risk.seller import SellerRisk
from paywire.store.payments import (
    IN_FLIGHT,
    TERMINAL,
    NewPayment,
    PaymentRecord,
    PaymentStore,
    StoredResponse,
    response_fields,
)
from paywire.x402.models import (
    PaymentPayload,
    PaymentPayloadV1,
    PaymentRequirements,
    PaymentRequirementsV1,
    SettleResponse,
    VerifyResponse,
    requirements_v1_to_v2,
)
from paywire.x402.reasons import TRANSACTION_FAILED, canonical_reason

log = logging.getLogger("paywire.server")

UNRESOLVED_REASONS = frozenset({"settlement_unresolved", "settlement_pending", "unexpected_settle_error"})
"""Settle answers that do not say whether money moved: never served, never called failed; reconciled later."""
TOO_LARGE = "response_too_large_to_replay"
ABANDONED = "abandoned: the seller stopped while the handler ran; not settled"
ABANDONED_MESSAGE = ("the seller stopped while handling this payment; it was not charged and will not run again: "
                     "sign a new payment")


_COMPACT = json.JSONEncoder(separators=(",", ":"))  # json.dumps(value, separators=…) builds one per call


def _compact(value: Any) -> str:
    return _COMPACT.encode(value)


class ResponseTooLarge(Exception):
    """settle="after": the handler's response outgrew ``max_record_bytes`` (it must be held, and recorded for
    replays, until the payment settles). Nothing is charged; such routes should use settle="before"."""

    def __init__(self, size: int, limit: int) -> None:
        super().__init__(f"the response exceeded {limit} bytes ({size} so far)")
        self.size, self.limit = size, limit


@dataclass(frozen=True, slots=True)
class PaymentInfo:
    """What a paid handler may read (ASGI ``scope["paywire.payment"]`` / ``request.state.payment``; WSGI
    ``environ["paywire.payment"]``)."""

    record_id: int
    route: str
    payer: str | None
    amount: int
    decimals: int
    asset: str
    network: str
    pay_to: str
    scheme: str
    x402_version: int
    payment_id: str | None
    transaction: str | None = None  # set when settle="before" (already settled)
    protocol: str = "x402"  # the protocol that carried it ("x402" | "mpp" | "l402"), as in the ledger
    identity: str | None = None  # the DID the payer proved (Sign-In-With-X, agent signature, MPP evm source)
    reaccess: bool = False  # served again to a signed-in payer of this earlier payment (no new payment)
    meter: Meter | None = None  # variable price (upto, settle="after"): ``paywire.server.bill(request, amount)``
    claimed_identity: str | None = None  # a DID the payer named but did not prove (MPP lightning source): no proof

    def __post_init__(self) -> None:
        """A ledger value ``claimed:<did>`` passed as ``identity`` moves to ``claimed_identity``."""
        if self.identity is not None and self.identity.startswith(CLAIMED_PREFIX):
            proven, claimed = Identity.split_recorded(self.identity)
            object.__setattr__(self, "identity", proven)
            object.__setattr__(self, "claimed_identity", claimed)


@dataclass(frozen=True, slots=True)
class Forward:
    """Not a paid request — or a reusable credential (L402 token) that checked out (``payment`` is then set)."""

    payment: PaymentInfo | None = None


@dataclass(frozen=True, slots=True)
class Respond:
    reply: Reply


Commit = Callable[[], Awaitable[None]]
"""A ledger write left for after the reply is sent (see :attr:`RunBuffered.finish_then`)."""


@dataclass(frozen=True, slots=True)
class RunBuffered:
    payment: PaymentInfo
    finish: Callable[[StoredResponse | BaseException], Awaitable[Reply]]
    finish_then: Callable[[StoredResponse | BaseException], Awaitable[tuple[Reply, Commit | None]]] | None = None
    """Like ``finish``, but a paid reply's last ledger write (``settling`` → ``served``) is handed back instead of
    awaited: the adapter sends the reply, then awaits the write (also when sending fails); the claim's lease is
    renewed until the write is done, however long a slow client takes to read the reply. Until it lands the row
    says what a crash between the settle answer and that write leaves: ``settling`` with the recorded response,
    which a retry or :meth:`PaymentFlow.reconcile_pending` settles again (idempotent) and serves from the record.
    Adapters that do not send before writing use ``finish``."""


@dataclass(frozen=True, slots=True)
class RunStreaming:
    payment: PaymentInfo
    headers: Headers
    finish: Callable[[StoredResponse | BaseException], Awaitable[None]]
    abandon: Callable[[], Awaitable[None]]  # paid, handler not run: leave it for the payer's retry


Plan = Forward | Respond | RunBuffered | RunStreaming


class _Heartbeat:
    """Keeps a claim's lease alive while its owner works (a replica takes over only a dead owner's rows)."""

    def __init__(self, store: PaymentStore, rid: int, owner: str, lease: float, max_life: float) -> None:
        self._store, self._rid, self._owner, self._lease = store, rid, owner, lease
        self._task: asyncio.Future[None] | None = None
        # most paid work ends well inside a third of the lease: a timer is cheaper than a task until then
        self._timer: asyncio.TimerHandle | None = asyncio.get_running_loop().call_later(
            lease / 3, self._start, max_life - lease / 3)

    def _start(self, max_life: float) -> None:
        self._timer = None
        self._task = asyncio.ensure_future(self._run(max_life))

    async def _run(self, max_life: float) -> None:
        end = time.monotonic() + max_life
        with contextlib.suppress(Exception):
            while await self._store.renew(self._rid, self._owner, self._lease) and time.monotonic() < end:
                await asyncio.sleep(self._lease / 3)

    def stop(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
        if self._task is not None:
            self._task.cancel()


def _metered(meter: Meter, result: StoredResponse, requirements: PaymentRequirements | PaymentRequirementsV1,
             ) -> tuple[StoredResponse, PaymentRequirements] | BaseException:
    """A variable-price payment after its handler: the response without ``Settlement-Overrides`` and the
    requirements to settle (``amount`` = the charge); an exception (nothing charged) for an unusable charge."""
    if not isinstance(requirements, PaymentRequirements):
        return ValueError("variable prices need x402 v2")
    override = override_of(result.headers)
    headers = tuple(h for h in result.headers if h[0].lower() != SETTLEMENT_OVERRIDES)
    try:
        amount = meter.charged if meter.charged is not None else (
            meter.charge(override) if override is not None else meter.maximum)
    except ValueError as exc:
        log.error("paywire: the handler's charge was refused, nothing charged: %s", exc)
        return exc
    return (dataclasses.replace(result, headers=headers),
            dataclasses.replace(requirements, amount=amount))


def _stored(reply: Reply) -> StoredResponse:
    return StoredResponse(reply.status, reply.headers, reply.body)


_P = TypeVar("_P")


def _with_identity(parsed: _P, identity: Identity | None) -> _P:
    """A payment to claim carries the identity its request proved (written to its ledger row, and named to the
    facilitator in the payload's ``paywire-identity`` extension, which the payer's signature does not cover)."""
    if identity is None or not isinstance(parsed, Proceed):
        return parsed
    payload = parsed.payload
    if isinstance(payload, PaymentPayload):
        ext = {**payload.extensions} if payload.extensions else {}
        ext[IDENTITY_EXTENSION] = identity_extension(identity.did)
        payload = _PAYLOAD_REPLACE(payload, extensions=ext)
    return _PROCEED_REPLACE(parsed, identity=identity.did, payload=payload)  # type: ignore[return-value]


def _replacer(cls: type[_P]) -> Callable[..., _P]:
    """``dataclasses.replace`` for a frozen slots dataclass without ``__post_init__``, minus its per-call
    ``fields()`` walk and keyword ``__init__``: a copy with ``changes`` set."""
    if "__post_init__" in vars(cls):
        raise TypeError(f"{cls.__name__} has a __post_init__: use dataclasses.replace")
    names = tuple(f.name for f in dataclasses.fields(cls))  # type: ignore[arg-type]
    setter = object.__setattr__

    def replace(obj: _P, **changes: Any) -> _P:
        new = object.__new__(cls)
        for name in names:
            setter(new, name, changes[name] if name in changes else getattr(obj, name))
        return new

    return replace


_PAYLOAD_REPLACE: Final = _replacer(PaymentPayload)
_PROCEED_REPLACE: Final = _replacer(Proceed)


def _doubtful_on_retry(offer: PaymentRequirements, reason: str) -> bool:
    """An answer to a second /settle that our own first one, had it landed, would cause: a resend that reverted
    (``transaction_failed``), or what the offer's scheme lists as "authorization spent" (``spent_reasons``).
    Never taken as "not paid". Compared in our spelling (``canonical_reason``)."""
    reason = canonical_reason(reason)
    if reason == TRANSACTION_FAILED:
        return True
    return reason in getattr(default_registry.server(offer.scheme, offer.network), "spent_reasons", ())


def _payload_of(rec: PaymentRecord) -> tuple[PaymentPayload | PaymentPayloadV1,
                                             PaymentRequirements | PaymentRequirementsV1]:
    p, r = json.loads(rec.payload), json.loads(rec.requirements)
    if rec.x402_version == 1:
        return PaymentPayloadV1.from_wire(p), PaymentRequirementsV1.from_wire(r)
    return PaymentPayload.from_wire(p), PaymentRequirements.from_wire(r)


@dataclass(slots=True)
class PaymentFlow:
    """The seller's payment logic with its store and facilitator; shared by the ASGI and WSGI adapters.

    ``replay_wait``: how long a concurrent copy of a payment waits for the first one's outcome before it gets
    503 "in progress". ``lease``: how long a claim survives its owner's death (renewed while alive).
    """

    seller: Seller
    facilitator: FacilitatorClient
    store: PaymentStore | str | None = None
    verify_timeout: float = 30.0
    settle_timeout: float = 60.0
    replay_wait: float = 30.0
    lease: float = 30.0
    max_record_bytes: int = 4 * 1024 * 1024
    check_supported: bool = True
    max_handler_seconds: float = 3600.0
    lightning: LightningBackend | None = None
    """The node that issues invoices for ``mpp=("lightning",)`` and ``l402`` routes."""
    confirm_with_node: bool = False
    """MPP ``lightning/charge``: also require the node to show the invoice paid (the preimage already proves it)."""
    invoice_expiry: int = 600
    l402_reject_status: int = 401
    owns_facilitator: bool = False
    """The flow built its facilitator client (from a URL): :meth:`aclose` closes it too."""
    risk: SellerRisk | None = None
    """Risk checkpoints (:mod:`paywire.risk.seller`): before the request, and before the facilitator verifies."""
    agent_directories_private: bool = False
    """Agent signatures: agents' key directories may be on private/loopback addresses, over http (dev only)."""
    siwx_chains: Any = None
    """Sign-In-With-X: CAIP-2 network → ``Chain``, to check contract wallets' signatures (EIP-1271); default:
    ``chains``."""
    chains: Any = None
    """Read-only chain access per network (:mod:`paywire.server.chains`): reconciling looks there for a
    settlement that the facilitator cannot account for."""
    audit: str | None = None
    """This replica's name in the audit log (docs/audit.md): every ledger change queues an event in its
    transaction. None: no audit events (nothing extra runs)."""
    channel_claims: bool = True
    """``batch-settlement``: run the claim manager (:attr:`claims`) with the flow."""
    claim_interval: float = 60.0
    claim_threshold: int | None = None
    claims: Any = field(default=None, init=False, repr=False)
    """The running :class:`~paywire.server.channel_claims.ClaimManager` (None until a channel route starts it)."""
    _store: PaymentStore | None = field(default=None, init=False, repr=False)
    _claims_task: asyncio.Future[None] | None = field(default=None, init=False, repr=False)
    _claims_stop: asyncio.Event | None = field(default=None, init=False, repr=False)
    _protocols: dict[str, SellerProtocol] = field(default_factory=dict, init=False, repr=False)
    _texts: dict[int, tuple[Any, str]] = field(default_factory=dict, init=False, repr=False)
    """Compact JSON of the offers payments were made against (the ledger's ``requirements``): a route's offer is
    one object for every request, encoded once. Keyed by ``id``; holding the object keeps that id its own."""
    _admitted: set[str] = field(default_factory=set, init=False, repr=False)
    _started: bool = field(default=False, init=False, repr=False)
    _lock: asyncio.Lock | None = field(default=None, init=False, repr=False)
    _identity: IdentityGate | None = field(default=None, init=False, repr=False)
    _channel_seller: Any = field(default=None, init=False, repr=False)
    _challenge_tally: Any = field(default=None, init=False, repr=False)  # paywire.audit.verdicts.ChallengeTally
    _chain_readers: ChainReaders | None = field(default=None, init=False, repr=False)

    def _readers(self) -> ChainReaders:
        if self._chain_readers is None:
            self._chain_readers = ChainReaders(self.chains)
        return self._chain_readers

    @property
    def identity_chains(self) -> Any:
        """The chains Sign-In-With-X checks contract wallets on: ``siwx_chains``, else ``chains`` (or None)."""
        if self.siwx_chains is not None:
            return self.siwx_chains
        return self._readers().as_mapping() or None

    def _channels(self) -> Any:
        """The channel accounting of ``batch-settlement`` payments (``paywire.server.channels``)."""
        if self._channel_seller is None:
            from paywire.server.channels import ChannelSeller

            self._channel_seller = ChannelSeller(self)
        return self._channel_seller

    # -- lifecycle -------------------------------------------------------------------------------
    async def startup(self) -> None:
        """Open and migrate the store; check the offers against the facilitator's ``/supported`` (checklist 8).

        Raises ``ConfigError`` saying what to change. Idempotent; adapters call it at startup or first use.
        """
        if self._started:
            return
        if self._lock is None:
            self._lock = asyncio.Lock()
        async with self._lock:
            if self._started:
                return
            self._readers()  # a bad ``chains`` value raises ConfigError now, not on the first reconciliation
            if isinstance(self.store, PaymentStore):
                self._store = self.store
                await self._store.migrate()
            else:
                self._store = await PaymentStore.open(store_url(self.store))
            if self.audit is not None:
                from paywire.audit.wiring import enable_audit, record_config, seller_routes

                await enable_audit(self._store, "seller", self.audit)
                from paywire.audit.verdicts import ChallengeTally

                self._challenge_tally = ChallengeTally(self._store.db, self.audit)
                await record_config(self._store.db, self.audit, "config.seller_started",
                                    {"routes": seller_routes(self.seller)})
            ctx = SellerContext(self.seller, self.lightning, self.invoice_expiry, self.confirm_with_node,
                                self.l402_reject_status)
            protocols = seller_protocols(ctx)
            if self.lightning is None and any(p.needs_lightning(r) for p in protocols for r in self.seller.routes):
                raise ConfigError(NO_LIGHTNING)
            for proto in protocols:
                await proto.startup(self._store.db)
            if self.risk is not None:
                await self.risk.startup(self._store.db, self)
            if any(r.checks_identity for r in self.seller.routes):
                self._identity = IdentityGate(self.seller, self._store.db,
                                              allow_private_directories=self.agent_directories_private,
                                              chains=self.identity_chains)
                await self._identity.startup()
            self._protocols = {p.name: p for p in protocols}
            if self.check_supported and any(r.x402 for r in self.seller.routes):
                try:
                    supported = await self.facilitator.supported()
                except FacilitatorUnavailable as exc:
                    raise ConfigError(f"cannot check the facilitator's /supported ({exc}): start the facilitator "
                                      "first, fix its URL, or pass check_supported=False") from exc
                name = getattr(self.facilitator, "url", None) or type(self.facilitator).__name__
                self.seller.check_supported(supported, f"the facilitator ({name})")
            self._started = True
            if any(getattr(o, "scheme", None) == "batch-settlement" for r in self.seller.routes
                   if isinstance(r.offers, tuple) for o in r.offers):
                await self.start_claims()

    async def start_claims(self) -> None:
        """Start the ``batch-settlement`` claim manager in this process (idempotent; off with
        ``channel_claims=False``). Called at startup when a route offers the scheme, and on the first channel
        payment; :meth:`stop_claims` / :meth:`aclose` stop it."""
        if not self.channel_claims or self._claims_task is not None or self._store is None:
            return
        from paywire.server.channel_claims import ClaimManager
        from paywire.store.channels import ChannelStore

        store = ChannelStore(self._store.db)
        await store.migrate()
        if self._claims_task is not None:
            return
        self.claims = ClaimManager(store, self.facilitator, interval=self.claim_interval,
                                   threshold=self.claim_threshold)
        self._claims_stop = asyncio.Event()
        self._claims_task = asyncio.ensure_future(
            self.claims.run(self._claims_stop, poll=min(1.0, self.claim_interval)))

    async def stop_claims(self) -> None:
        """Stop the claim manager after its current pass (what it claimed is in the store)."""
        task, self._claims_task = self._claims_task, None
        if task is None:
            return
        assert self._claims_stop is not None
        self._claims_stop.set()
        with contextlib.suppress(Exception, asyncio.CancelledError):
            await task

    @property
    def payments(self) -> PaymentStore:
        """The store (after :meth:`startup`): the seller's ledger."""
        if self._store is None:
            raise RuntimeError("PaymentFlow.startup() has not run")
        return self._store

    async def aclose(self) -> None:
        """Close what the flow opened: its store (unless it was given one) and a facilitator client it built;
        stop the claim manager."""
        await self.stop_claims()
        if self._challenge_tally is not None:
            with contextlib.suppress(Exception):
                await self._challenge_tally.flush()
            self._challenge_tally = None
        if self._store is not None and not isinstance(self.store, PaymentStore):
            await self._store.aclose()
        self._store, self._started = None, False
        if self._chain_readers is not None:
            await self._chain_readers.aclose()
        if self.owns_facilitator:
            closer = getattr(self.facilitator, "aclose", None)
            if closer is not None:
                await closer()

    # -- per request -----------------------------------------------------------------------------
    async def begin(self, req: RequestInfo) -> Plan:
        """What to do with one request (see the module docstring)."""
        if self.risk is not None and self.risk.metrics_token is not None:  # off unless a token is set
            metrics = self.risk.metrics_reply(req)
            if metrics is not None:
                return Respond(metrics)
        try:
            route = self.seller.route_for_request(req)
            if route is not None:
                await self.startup()
                if self.risk is not None and req.method != "OPTIONS":
                    refused = await self.risk.before_request(self.seller, route, req)
                    if refused is not None:
                        return Respond(refused)
            d = await self._decide(route, req)
            if self.risk is not None and route is not None and isinstance(d, Reply | Reject):
                await self.risk.rejected(route, req, d.reason if isinstance(d, Reject) else d)
        except ConfigError as exc:
            log.error("paywire: seller misconfigured: %s", exc)
            return Respond(json_reply(500, {"error": "seller_misconfigured", "message": str(exc)}))
        if isinstance(d, Reply):
            if route is not None and route.extra_protocols and req.method != "OPTIONS":
                return Respond(await self.augment(route, req, d))
            if route is not None and self._challenge_tally is not None and d.status == 402:
                await self._challenge_tally.note(route.key, "x402")  # audit: a bounded tally, not an event
            return Respond(d)
        if isinstance(d, Reject):
            assert route is not None
            return Respond(await self._reject(route, req, d))
        if isinstance(d, Admit):
            return Forward(await self._admit(d))
        if isinstance(d, Reaccess):
            return Forward(await self._reaccess(d))
        if isinstance(d, Free):
            assert route is not None
            who = d.identity
            return Forward(PaymentInfo(0, route.key, who.addresses[0] if who.addresses else None, 0, 0, "", "", "",
                                       d.why, 0, None, identity=who.did))
        if not isinstance(d, Proceed):
            return Forward()
        plan = await self._paid(d, req)
        if not d.route.extra_protocols:
            return plan
        return await self._with_challenges(plan, d, req)

    async def _decide(self, route: PaidRoute | None,
                      req: RequestInfo) -> Decision | Reject | Admit | Reaccess | Free:
        """The route's sign-in first (docs/identity.md), then its protocols, in order, for the request's credential;
        none: the x402 402 (or paywall)."""
        if route is None or req.method in ("OPTIONS", "HEAD"):
            return self.seller.decide(req)
        priced = self.seller.offers_for(route, req)
        identity, deferred = None, None
        if self._identity is not None and route.checks_identity:
            checked = await self._identity.check(route, req, priced)
            deferred = self._identity.take_deferred()
            if isinstance(checked, Reply | Reaccess | Free):
                return checked
            identity = checked
            priced = self._identity.repriced(route, priced, identity)
        named = proven_identity.set(identity) if identity is not None else None  # L402 identity caveats read it
        try:
            for proto in self._protocols_of(route):
                parsed = await proto.parse(route, req, priced)
                if parsed is not None:
                    if deferred is not None and self._identity is not None and isinstance(parsed, Proceed | Admit):
                        payer = parsed.payer if isinstance(parsed, Proceed) else None
                        kept = await self._identity.spend_deferred(deferred, payer, route, req, identity, priced[0])
                        if isinstance(kept, Reply):
                            return kept
                        identity = kept
                    return _with_identity(parsed, identity)
        finally:
            if named is not None:
                proven_identity.reset(named)
        return _with_identity(self.seller.decide(req, priced), identity)

    async def _reaccess(self, r: Reaccess) -> PaymentInfo:
        """The earlier payment a signed-in payer is served again under."""
        rec = await self.payments.get(r.record_id)
        assert rec is not None  # settled rows are never deleted
        return PaymentInfo(rec.id, rec.route, rec.payer, rec.amount, rec.decimals, rec.asset, rec.network, rec.pay_to,
                           rec.scheme, rec.x402_version, rec.payment_id, rec.tx, rec.protocol, r.identity.did, True)

    def _protocols_of(self, route: PaidRoute) -> list[SellerProtocol]:
        return [p for p in self._protocols.values() if p.takes(route)]

    def _protocol(self, name: str) -> SellerProtocol:
        return self._protocols[name]

    # -- challenges next to x402 ------------------------------------------------------------------------
    async def augment(self, route: PaidRoute, req: RequestInfo, reply: Reply, problem: Problem | None = None,
                      status: int | None = None) -> Reply:
        """Add the route's other challenges (MPP, L402 …) to an x402 402: one reply, every way to pay."""
        protocols = self._protocols_of(route)
        if self._challenge_tally is not None and reply.status == 402:  # audit: bounded tallies, not events
            await self._challenge_tally.note(route.key, "+".join(sorted(p.name for p in protocols)))
        return await challenge_reply(protocols, route, req, reply, problem, status)

    async def _reject(self, route: PaidRoute, req: RequestInfo, rej: Reject) -> Reply:
        """A credential that failed its protocol's checks: the x402 402 with every fresh challenge."""
        base = self.seller.payment_required(route, req, rej.offers, rej.reason)
        return await self.augment(route, req, base, rej.problem, rej.status)

    async def _admit(self, a: Admit) -> PaymentInfo:
        """A reusable credential that checked out: one ledger row on its first use (sales list it), no claim
        per request."""
        new = a.payment
        rid = 0
        if new.auth_key not in self._admitted:
            store, owner = self.payments, os.urandom(16).hex()
            rec = await store.claim(new, owner, self.lease)
            if rec is not None:
                await store.update(rec.id, owner, ["verifying"], state="served", owner=None, tx=a.tx,
                                   settled_at=time.time())
                rid = rec.id
            if len(self._admitted) > 100_000:
                self._admitted.clear()
            self._admitted.add(new.auth_key)
        return PaymentInfo(rid, new.route, new.payer, new.amount, new.decimals, new.asset, new.network, new.pay_to,
                           new.scheme, new.x402_version, new.payment_id, a.tx, new.protocol, new.identity)

    async def _with_challenges(self, plan: Plan, p: Proceed, req: RequestInfo) -> Plan:
        """402s of a multi-protocol route carry every challenge, with the paying protocol's problem types."""
        proto = self._protocol(p.protocol)

        def problem_of(reply: Reply) -> Problem | None:
            return proto.failure_problem(str(error_of(reply) or "verification_failed"))

        if isinstance(plan, Respond):
            return Respond(await self.augment(p.route, req, plan.reply, problem_of(plan.reply)))
        if isinstance(plan, RunBuffered):
            inner = plan.finish

            async def finish(result: StoredResponse | BaseException) -> Reply:
                reply = await inner(result)
                return await self.augment(p.route, req, reply, problem_of(reply))

            return RunBuffered(plan.payment, finish)
        return plan

    def _paid_headers(self, rec: PaymentRecord, res: SettleResponse, app_headers: Headers) -> Headers:
        """The paying protocol's receipt (x402 ``PAYMENT-RESPONSE``, MPP ``Payment-Receipt``), ``private``; with
        auditing on it carries the audit reference a payer asks inclusion proofs with (docs/audit.md)."""
        if self.audit is not None and res.success:
            from paywire.audit.receipts import KEY, reference

            ref = reference(self.audit, rec.id, res.transaction or rec.tx, rec.payment_id)
            res = dataclasses.replace(res, extensions={**(res.extensions or {}), KEY: ref})
        return self._protocol(rec.protocol).receipt_headers(rec, res, app_headers)

    def _facilitator_for(self, protocol: str, requirements: PaymentRequirements | PaymentRequirementsV1) -> Any:
        return self._protocol(protocol).facilitator_for(requirements) or self.facilitator

    async def _paid(self, p: Proceed, req: RequestInfo) -> Plan:
        if self.risk is not None:  # before the facilitator hears of it: a denial costs no call, moves nothing
            refused = await self.risk.before_verify(self.seller, p, req)
            if refused is not None:
                return Respond(refused)
        if getattr(default_registry.server(p.offer.scheme, p.offer.network), "channels", False):
            channel_plan: Plan = await self._channels().pay(p, req)  # batch-settlement: vouchers, not claims
            return channel_plan
        store = self.payments
        offer = p.offer
        new = NewPayment(
            auth_key=p.auth_key, payment_id=p.payment_id, payload_hash=p.payload_hash, route=p.route.key,
            method=req.method, path=req.path, settle_mode=self._settle_mode(p), x402_version=1 if p.v1 else 2,
            scheme=offer.scheme, network=offer.network, asset=offer.asset, pay_to=offer.pay_to, amount=offer.amount,
            decimals=p.decimals, payer=p.payer or scheme_payer(p.offer, p.payload.payload), payload=_compact(p.payload.wire_view()),
            requirements=self._requirements_text(p.requirements), protocol=p.protocol, identity=p.identity,
        )
        prime = getattr(self._facilitator_for(p.protocol, p.requirements), "prime", None)
        if prime is not None:  # the facilitator request carries the same two JSON texts: encode them once
            prime(p.payload, p.requirements, new.payload, new.requirements)
        owner = os.urandom(16).hex()
        # verify, then claim: an invalid payment writes nothing, and the claim goes in already verified (one
        # ledger commit per payment fewer). Concurrent copies all verify; the database's unique keys let one of
        # them claim, the others wait for its outcome (as does a copy the facilitator refuses because the first
        # one already settled it).
        verdict = await self._verify(p)
        valid = not isinstance(verdict, BaseException) and verdict.is_valid
        if valid:
            assert isinstance(verdict, VerifyResponse)
            if verdict.payer and verdict.payer != new.payer:
                new = dataclasses.replace(new, payer=verdict.payer)
        state = "settling" if new.settle_mode == "before" else "claimed"
        for _ in range(8):
            if valid:
                rec = await store.claim(new, owner, self.lease, state)
                if rec is not None:
                    if self.risk is not None:  # the route's amount statistics
                        await self.risk.verified(p, req)
                    return await self._run_verified(p, req, rec, owner, self._heartbeat(rec.id, owner))
            existing = await store.find(p.auth_key, p.payment_id)
            if existing is None:
                if not valid:
                    return await self._refused(p, req, verdict)
                continue  # its claim was just released (an older row found invalid): try again
            plan = await self._replay(p, req, existing, owner)
            if plan is not None:
                return plan
        return Respond(self.seller.in_progress())

    def _requirements_text(self, requirements: PaymentRequirements | PaymentRequirementsV1) -> str:
        hit = self._texts.get(id(requirements))
        if hit is not None and hit[0] is requirements:
            return hit[1]
        text = _compact(requirements.wire_view())
        if len(self._texts) >= 256:  # priced-per-request offers are new objects each time: keep the cache small
            self._texts.clear()
        self._texts[id(requirements)] = (requirements, text)
        return text

    @staticmethod
    def _settle_mode(p: Proceed) -> str:
        """The route's settle mode — except a variable price (upto), which settles after its handler whatever the
        route says: before it, only the maximum is known, and the payer must not be charged that."""
        if p.route.settle == "before" and getattr(default_registry.server(p.offer.scheme, p.offer.network),
                                                  "variable", False):
            return "after"
        return p.route.settle

    async def _verify(self, p: Proceed) -> VerifyResponse | BaseException:
        try:
            async with asyncio.timeout(self.verify_timeout):
                verdict: VerifyResponse = await self._facilitator_for(p.protocol, p.requirements).verify(
                    p.payload, p.requirements)
                return verdict
        except (FacilitatorUnavailable, TimeoutError) as exc:
            return exc
        except Exception as exc:  # a client bug: refuse this payment, keep the claim table clean
            log.exception("paywire: verify raised")
            return exc

    def _info(self, p: Proceed, rec: PaymentRecord, payer: str | None, tx: str | None = None) -> PaymentInfo:
        return PaymentInfo(rec.id, rec.route, payer, rec.amount, rec.decimals, rec.asset, rec.network, rec.pay_to,
                           rec.scheme, rec.x402_version, rec.payment_id, tx, rec.protocol, rec.identity)

    def _heartbeat(self, rid: int, owner: str) -> _Heartbeat:
        return _Heartbeat(self.payments, rid, owner, self.lease, self.max_handler_seconds)

    async def _refused(self, p: Proceed, req: RequestInfo, verdict: VerifyResponse | BaseException) -> Respond:
        """The 402 for a payment the facilitator refused (checklist 14: fresh challenge with the reason; nothing
        ran) or could not verify."""
        if isinstance(verdict, BaseException):
            return Respond(self.seller.payment_required(p.route, req, p.offers, f"facilitator unavailable: {verdict}"))
        reason = verdict.invalid_reason or "invalid_payment"
        if self.risk is not None:  # counted by kind: replay, underpaid, expired, invalid
            await self.risk.failed(p, req, reason)
        reply = self.seller.payment_required(p.route, req, p.offers, reason)
        if reason == "permit2_allowance_required":  # checklist 15
            reply = Reply(412, reply.headers, reply.body)
        return Respond(reply)

    async def _run_claimed(self, p: Proceed, req: RequestInfo, rec: PaymentRecord, owner: str) -> Plan:
        """We took over an older claim written before its verification: ``verifying``, or a ``settle="before"`` row
        still ``claimed`` (nothing ran, nothing was settled): verify it, then run the route's settle mode."""
        store = self.payments
        hb = self._heartbeat(rec.id, owner)  # a slow verify must not let a live claim lapse
        verdict = await self._verify(p)
        if isinstance(verdict, BaseException) or not verdict.is_valid:
            hb.stop()
            reason = (verdict.invalid_reason or "invalid_payment") if isinstance(verdict, VerifyResponse) \
                else "facilitator_unavailable"
            await store.release_claim(rec.id, owner, reason)
            return await self._refused(p, req, verdict)
        payer = verdict.payer or rec.payer
        # the payer column is written only when it changes: it is indexed, and rewriting an index entry with the
        # same value still costs every commit a second page; from here on ``rec.payer`` is the row's
        moved: dict[str, Any] = {}
        if payer != rec.payer:
            moved = {"payer": payer}
        if self.risk is not None:  # the route's amount statistics
            await self.risk.verified(p, req)
        # after: recorded before the handler starts (a crash from here on retires the payment, one before it does
        # not); before: a settle may be sent from here on
        to = "settling" if rec.settle_mode == "before" else "claimed"
        if not await store.update(rec.id, owner, [rec.state], state=to, **moved):
            hb.stop()
            return Respond(self.seller.in_progress())
        return await self._run_verified(p, req, dataclasses.replace(rec, state=to, payer=payer), owner, hb)

    async def _run_verified(self, p: Proceed, req: RequestInfo, rec: PaymentRecord, owner: str,
                            hb: _Heartbeat) -> Plan:
        """We hold the verified claim: ``settling`` (settle="before": settle, then run the handler) or ``claimed``
        (settle="after": the handler may run; it is recorded as possibly started)."""
        if rec.settle_mode == "before":
            return await self._settle_first(p, req, rec, owner, hb, rec.payer, p.payload, p.requirements)
        meter = Meter(rec.amount, rec.decimals) if getattr(
            default_registry.server(rec.scheme, rec.network), "variable", False) else None

        async def finish_then(result: StoredResponse | BaseException) -> tuple[Reply, Commit | None]:
            later: list[Commit] = []
            try:
                reply = await self._after_handler(p, req, rec, owner, result, meter, later)
            except BaseException:
                hb.stop()
                raise
            if not later:
                hb.stop()
                return reply, None
            record = later[0]

            async def commit() -> None:  # the lease stays renewed while a slow client takes the reply
                try:
                    await record()
                finally:
                    hb.stop()

            return reply, commit

        async def finish(result: StoredResponse | BaseException) -> Reply:
            reply, commit = await finish_then(result)
            if commit is not None:
                await commit()
            return reply

        info = self._info(p, rec, rec.payer)
        if meter is not None:
            info = dataclasses.replace(info, meter=meter)
        return RunBuffered(info, finish, finish_then)

    async def _after_handler(self, p: Proceed, req: RequestInfo, rec: PaymentRecord, owner: str,
                             result: StoredResponse | BaseException, meter: Meter | None = None,
                             later: list[Commit] | None = None) -> Reply:
        """settle="after", state ``claimed`` held by us (the row names the payer): record the handler's result,
        then settle it or record why nothing is charged (``later``: see :attr:`RunBuffered.finish_then`)."""
        store = self.payments
        requirements = p.requirements
        if meter is not None and not isinstance(result, BaseException) and result.status < 400:
            metered = _metered(meter, result, requirements)
            if isinstance(metered, BaseException):
                result = metered
            else:
                result, requirements = metered
        if isinstance(result, BaseException) or result.status >= 400:  # checklist 19: not charged
            if isinstance(result, ResponseTooLarge):
                log.error("paywire: %s answered more than max_record_bytes=%d with settle='after'; not charging "
                          "(use settle='before' for large or streamed responses)", p.route.key, result.limit)
                reply, error = self.seller.response_too_large(result.limit), str(result)
            elif isinstance(result, BaseException):
                reply, error = self.seller.handler_failed(), f"handler raised {type(result).__name__}"
            else:
                reply, error = Reply(result.status, result.headers, result.body), f"handler status {result.status}"
            await store.update(rec.id, owner, ["claimed"], state="failed", owner=None, error=error,
                               **response_fields(_stored(reply)))
            return reply
        charged: dict[str, Any] = {}
        if requirements is not p.requirements and isinstance(requirements, PaymentRequirements):
            charged = {"requirements": _compact(requirements.wire_view()), "amount": requirements.amount}
        if not await store.update(rec.id, owner, ["claimed"], state="settling", **response_fields(result),
                                  **charged):
            return self.seller.in_progress()
        return await self._settle_and_release(p, req, rec, owner, result, p.payload, requirements, later=later)

    async def _settle(self, protocol: str, payload: PaymentPayload | PaymentPayloadV1,
                      requirements: PaymentRequirements | PaymentRequirementsV1,
                      reconciling: bool) -> tuple[str, SettleResponse | None, str]:
        """("settled" | "failed" | "unresolved", facilitator answer, detail). Unknown is never called failed."""
        try:
            async with asyncio.timeout(self.settle_timeout):
                res = await self._facilitator_for(protocol, requirements).settle(payload, requirements)
        except (FacilitatorUnavailable, TimeoutError) as exc:
            return "unresolved", None, f"facilitator did not answer /settle: {exc or type(exc).__name__}"
        except Exception as exc:  # a client bug must not turn an unknown outcome into "failed"
            log.exception("paywire: settle raised")
            return "unresolved", None, f"settle raised {type(exc).__name__}: {exc}"
        if res.success:
            return "settled", res, ""
        reason = res.error_reason or "settlement_failed"
        if reason in UNRESOLVED_REASONS:
            return "unresolved", res, reason
        if reconciling:
            # our earlier /settle may have landed, and a facilitator that keeps no record of it fails this one
            # ("already used", or a reverted resend: the official SDK's "transaction_failed"; later on, expired
            # or an emptied balance): the chain tells, when we can read it
            offer = requirements_v1_to_v2(requirements)[0] if isinstance(requirements, PaymentRequirementsV1) \
                else requirements
            found = await self._on_chain(payload, offer, reason)
            if found is not None:
                return found
            if _doubtful_on_retry(offer, reason):
                return "unresolved", res, reason
        return "failed", res, reason

    async def _on_chain(self, payload: PaymentPayload | PaymentPayloadV1, offer: PaymentRequirements,
                        reason: str) -> tuple[str, SettleResponse | None, str] | None:
        """What the chain says about a payment whose retried settlement failed with ``reason``: settled (it paid
        ``pay_to``), failed (spent by a transaction that did not), or None (no chain for the network, nothing
        found yet, not confirmed, or the scheme cannot tell)."""
        chain = self._readers().get(offer.network)
        finder = getattr(default_registry.server(offer.scheme, offer.network), "find_settlement", None)
        if chain is None or finder is None:
            return None
        try:
            async with asyncio.timeout(self.settle_timeout):
                mined = await finder(offer, payload.payload, chain)
        except Exception as exc:  # an unreachable node leaves the row for the next pass
            log.warning("paywire: reading %s for a settlement failed: %s", offer.network, exc)
            return None
        if mined is None or not mined.ok or not mined.confirmed:
            return None
        if mined.paid:
            return "settled", SettleResponse(True, mined.hash, offer.network), ""
        detail = f"the authorization was spent by {mined.hash}, which did not pay {offer.pay_to}"
        return "failed", SettleResponse(False, mined.hash, offer.network, error_reason=reason,
                                        error_message=detail), reason

    async def _settle_and_record(self, p: Proceed | None, req: RequestInfo | None, rec: PaymentRecord, owner: str,
                                 payload: PaymentPayload | PaymentPayloadV1,
                                 requirements: PaymentRequirements | PaymentRequirementsV1,
                                 reconciling: bool, later: list[Commit] | None = None) -> SettleResponse | Reply:
        """State ``settling``, held by us: settle and record the outcome — the one place every settle outcome is
        written, for both settle modes. Paid: the settle answer (``after`` rows become ``served``, released;
        ``before`` rows ``settled``, still ours for the handler). Else the reply: 402 (failed, recorded for
        replays) or 503 (unresolved: a retry or :meth:`reconcile_pending` asks again)."""
        store = self.payments
        outcome, res, detail = await self._settle(rec.protocol, payload, requirements, reconciling)
        if outcome == "settled" and res is not None:
            if p is not None and req is not None:
                res = self.seller.with_receipt(res, p.route, req)  # signed once, recorded, replayed as is
            release = {"owner": None} if rec.settle_mode == "after" else {}
            record = functools.partial(
                store.update, rec.id, owner, ["settling"], state="served" if release else "settled", **release,
                tx=res.transaction, settle_response=json.dumps(res.to_wire()), settled_at=time.time(),
                **({"payer": res.payer} if res.payer and res.payer != rec.payer else {}))
            if later is not None and release:
                later.append(functools.partial(self._record_served, record, rec.id))
            else:
                await record()
            return res
        if outcome == "failed" and res is not None:
            reply = (self.seller.settlement_failed(p, req, res) if p is not None and req is not None
                     else self._failed_reply(res, isinstance(payload, PaymentPayloadV1)))
            await store.update(rec.id, owner, ["settling"], state="failed", owner=None, error=detail,
                               tx=res.transaction or None, settle_response=json.dumps(res.to_wire()),
                               **response_fields(_stored(reply)))
            return reply
        await store.update(rec.id, owner, ["settling"], state="unresolved", owner=None, error=detail,
                           tx=(res.transaction or None) if res else None,
                           settle_response=json.dumps(res.to_wire()) if res else None)
        return self.seller.settlement_pending(res, detail)

    async def _settle_and_release(self, p: Proceed | None, req: RequestInfo | None, rec: PaymentRecord, owner: str,
                                  response: StoredResponse, payload: PaymentPayload | PaymentPayloadV1,
                                  requirements: PaymentRequirements | PaymentRequirementsV1,
                                  reconciling: bool = False, later: list[Commit] | None = None) -> Reply:
        """settle="after", state ``settling`` held by us: settle and release the recorded response if paid."""
        settled = await self._settle_and_record(p, req, rec, owner, payload, requirements, reconciling, later)
        if isinstance(settled, Reply):
            return settled
        return Reply(response.status, self._paid_headers(rec, settled, response.headers), response.body)

    @staticmethod
    async def _record_served(record: Callable[[], Awaitable[bool]], rid: int) -> None:
        """The deferred ``served`` write: a failure leaves the row ``settling`` (see ``finish_then``), logged."""
        try:
            await record()
        except Exception:
            log.exception("paywire: recording payment %s as served failed; a retry or reconcile_pending will", rid)

    def _failed_reply(self, res: SettleResponse, v1: bool) -> Reply:
        return json_reply(402, {"error": res.error_reason or "settlement_failed"},
                          self.seller.settlement_headers(res, v1)[:1])

    async def _settle_first(self, p: Proceed | None, req: RequestInfo | None, rec: PaymentRecord, owner: str,
                            hb: _Heartbeat, payer: str | None, payload: PaymentPayload | PaymentPayloadV1,
                            requirements: PaymentRequirements | PaymentRequirementsV1,
                            reconciling: bool = False) -> Plan:
        """settle="before", state ``settling`` held by us: settle, then let the handler run (and stream)."""
        settled = await self._settle_and_record(p, req, rec, owner, payload, requirements, reconciling)
        if isinstance(settled, Reply):
            hb.stop()
            return Respond(settled)
        return self._stream_plan(rec, owner, hb, settled, payer or settled.payer)

    def _stream_plan(self, rec: PaymentRecord, owner: str, hb: _Heartbeat, res: SettleResponse,
                     payer: str | None) -> RunStreaming:
        store = self.payments
        headers = self._paid_headers(rec, res, ())
        info = PaymentInfo(rec.id, rec.route, payer, rec.amount, rec.decimals, rec.asset, rec.network, rec.pay_to,
                           rec.scheme, rec.x402_version, rec.payment_id, res.transaction, rec.protocol, rec.identity)

        async def finish(result: StoredResponse | BaseException) -> None:
            try:
                if isinstance(result, BaseException):
                    changes: dict[str, Any] = {"error": f"handler raised {type(result).__name__} after settlement",
                                               **response_fields(_stored(self.seller.handler_failed()))}
                else:
                    changes = {"error": None if result.complete else TOO_LARGE, **response_fields(result)}
                await store.update(rec.id, owner, ["settled"], state="served", owner=None, **changes)
            finally:
                hb.stop()

        async def abandon() -> None:
            hb.stop()
            await store.update(rec.id, owner, ["settled"], owner=None, lease_until=None)

        return RunStreaming(info, headers, finish, abandon)

    # -- replays -----------------------------------------------------------------------------------
    async def _replay(self, p: Proceed, req: RequestInfo, rec: PaymentRecord | None, owner: str) -> Plan | None:
        """A copy of an already-claimed payment: wait for its outcome and replay it; None = claim vanished."""
        store = self.payments
        if rec is None:
            return None
        used = self._protocol(p.protocol).used(p)  # None: copies replay; else it delivers a credential once
        if used is not None and (rec.payload_hash != p.payload_hash or rec.route != p.route.key
                                 or rec.path != req.path or rec.payment_id != p.payment_id):
            return Respond(await self._reject(p.route, req, used))
        if rec.payload_hash != p.payload_hash:  # checklist 23
            if p.payment_id is not None and rec.payment_id == p.payment_id:
                return Respond(self.seller.conflict("this payment-identifier was used with a different payment",
                                                    "payment_identifier_conflict"))
            return Respond(self.seller.conflict("this authorization was already presented with different content"))
        if rec.route != p.route.key or rec.path != req.path:
            return Respond(self.seller.conflict(f"this payment was already used for {rec.method} {rec.path}",
                                                "payment_already_used"))
        deadline = time.monotonic() + self.replay_wait
        delay = 0.01
        while True:
            if rec.state in TERMINAL:
                if used is not None and rec.state == "served":  # one delivery per credential
                    return Respond(await self._reject(p.route, req, used))
                return Respond(self._replay_reply(rec))
            now = time.time()
            if rec.state == "unresolved":
                if await store.take_over(rec.id, owner, ["unresolved"], self.lease) and await store.update(
                        rec.id, owner, ["unresolved"], state="settling"):
                    return await self._reconcile(rec, owner, p, req)
            elif (rec.state in IN_FLIGHT and (rec.lease_until or 0.0) < now
                  and await store.take_over(rec.id, owner, [rec.state], self.lease)):
                    log.warning("paywire: taking over payment %s abandoned in state %s", rec.id, rec.state)
                    return await self._resume(rec, owner, p, req)
            if time.monotonic() >= deadline:
                return Respond(self.seller.in_progress())
            await asyncio.sleep(delay)
            delay = min(delay * 1.5, 0.2)
            rec = await store.get(rec.id)
            if rec is None:
                return None

    def _replay_reply(self, rec: PaymentRecord) -> Reply:
        resp = rec.response
        if resp is None and rec.error == ABANDONED:
            return self.seller.conflict(ABANDONED_MESSAGE, "payment_abandoned")
        if resp is None:
            return json_reply(409, {"error": "payment_already_used", "message": "no recorded response"})
        if rec.state == "served" and rec.settle_response:
            if rec.error == TOO_LARGE:
                return self.seller.conflict("this payment was already used; its streamed response was too large "
                                            "to record for replay", "payment_already_used")
            res = SettleResponse.from_wire(json.loads(rec.settle_response))
            return Reply(resp.status, self._paid_headers(rec, res, resp.headers), resp.body)
        return Reply(resp.status, resp.headers, resp.body)

    async def _reconcile(self, rec: PaymentRecord, owner: str, p: Proceed | None = None,
                         req: RequestInfo | None = None) -> Plan:
        """An unresolved settlement, now ``settling`` and ours: ask the facilitator again (it is idempotent per
        authorization), then release (after) or run the handler (before)."""
        try:
            payload, requirements = _payload_of(rec)
        except WireError as exc:  # cannot happen for rows we wrote; never serve on doubt
            return Respond(json_reply(500, {"error": "corrupt_payment_record", "message": str(exc)}))
        hb = self._heartbeat(rec.id, owner)
        if rec.settle_mode == "before":
            return await self._settle_first(p, req, rec, owner, hb, rec.payer, payload, requirements, True)
        try:
            response = rec.response or _stored(self.seller.handler_failed())
            return Respond(await self._settle_and_release(p, req, rec, owner, response, payload, requirements,
                                                          True))
        finally:
            hb.stop()

    async def _resume(self, rec: PaymentRecord, owner: str, p: Proceed, req: RequestInfo) -> Plan:
        """Continue a payment whose owner died (its lease ran out)."""
        store = self.payments
        if rec.state == "claimed" and rec.settle_mode == "after":
            # its handler may have run (or be half done): never run it a second time. Nothing was settled, so
            # the payer lost nothing; the authorization is retired and they sign a new one.
            if not await store.update(rec.id, owner, ["claimed"], state="failed", owner=None, error=ABANDONED):
                return Respond(self.seller.in_progress())
            return Respond(self.seller.conflict(ABANDONED_MESSAGE, "payment_abandoned"))
        if rec.state in ("verifying", "claimed"):  # nothing ran, nothing was settled: start over as its owner
            return await self._run_claimed(p, req, rec, owner)
        if rec.state == "settling":  # a settle may have been sent: reconcile
            return await self._reconcile(rec, owner, p, req)
        # "settled" (before mode): paid, but the handler never finished; the payer is owed the content
        res = SettleResponse.from_wire(json.loads(rec.settle_response or "{}"))
        hb = self._heartbeat(rec.id, owner)
        if not await store.renew(rec.id, owner, self.lease):
            hb.stop()
            return Respond(self.seller.in_progress())
        return self._stream_plan(rec, owner, hb, res, rec.payer)

    async def reconcile_pending(self, limit: int = 100) -> dict[str, int]:
        """Ask the facilitator again about every unresolved settlement, and every ``settling`` row whose owner
        stopped before recording its outcome (a background job may call this).

        Paid ``after`` rows become ``served`` (their response waits for the payer's retry); ``before`` rows
        become ``settled`` (the handler runs when the payer retries). Returns counts per outcome.
        """
        await self.startup()
        counts: dict[str, int] = {}
        owner = os.urandom(16).hex()
        found = [(rec, "unresolved") for rec in await self.payments.unresolved(limit)]
        # a process stopped after /settle and before recording the outcome (for settle="after" also after sending
        # the reply: RunBuffered.finish_then) leaves ``settling`` under a lease that runs out: settle it again
        found += [(rec, "settling") for rec in await self.payments.stale_settling(limit=limit)]
        for rec, state in found:
            if not await self.payments.take_over(rec.id, owner, [state], self.lease):
                continue
            if state == "unresolved" and not await self.payments.update(rec.id, owner, ["unresolved"],
                                                                        state="settling"):
                continue
            plan = await self._reconcile(rec, owner)
            if isinstance(plan, RunStreaming):  # paid; leave the handler for the payer's retry
                await plan.abandon()
                counts["settled"] = counts.get("settled", 0) + 1
                continue
            state = (await self.payments.get(rec.id) or rec).state
            counts[state] = counts.get(state, 0) + 1
        return counts
