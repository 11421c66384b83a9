"""MPP (``Authorization: Payment``) on the seller: offers, credential checks, receipts (:class:`Mpp`).

A route that sets ``mpp=("evm", "lightning")`` adds ``WWW-Authenticate: Payment`` challenges (one per offer,
ordered by ``Accept-Payment``) to its 402 (see :func:`paywire.server.protocols.base.challenge_reply`).

MPP credentials are turned into the same (PaymentPayload, PaymentRequirements) pairs the x402 path settles:
``evm/charge`` through ``to_x402`` (so the EIP-3009 authorization is claimed under the same key whichever
protocol carried it), ``lightning/charge`` as a ``lightning`` pair settled by
:class:`paywire.server.lightning_settle.LightningSettler`. The ledger row's ``payment_id`` is
``mpp:<challenge id>`` (UNIQUE: one challenge, one payment); a copy of a served credential gets 402
``invalid-challenge`` instead of a replay (one delivery, checklist 110).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final

from paywire.evm.assets import Asset
from paywire.identity.did import DidError, Identity
from paywire.lightning.base import LightningError
from paywire.lightning.networks import BIP122, LIGHTNING_SCHEME, lightning_network_id
from paywire.mpp import problems as P
from paywire.mpp.methods.evm_charge import METHOD as EVM
from paywire.mpp.methods.evm_charge import EvmChargeMethod, chain_id_of, evm_charge_request, to_x402
from paywire.mpp.methods.lightning_charge import METHOD as LIGHTNING
from paywire.mpp.methods.lightning_charge import LightningChargeMethod, lightning_offer_template
from paywire.mpp.problems import Problem
from paywire.mpp.receipt import HEADER as RECEIPT_HEADER
from paywire.mpp.receipt import Receipt
from paywire.mpp.server import Accepted, MppServer, Offer
from paywire.server.core import Headers, PaidRoute, Priced, Proceed, payment_hash, scheme_claim
from paywire.server.lightning_settle import LightningSettler
from paywire.server.protocols.base import Challenges, Parsed, ProtocolDefaults, Reject, SellerContext
from paywire.server.request import RequestInfo
from paywire.store.payments import PaymentRecord
from paywire.x402.models import PaymentPayload, PaymentRequirements, PaymentRequirementsV1, SettleResponse

log = logging.getLogger("paywire.server")

NAME: Final = "mpp"
MPP_METHODS: Final = (EVM, LIGHTNING)
MPP_ID_PREFIX: Final = "mpp:"
"""``payment_id`` of an MPP row: ``mpp:<challenge id>`` (UNIQUE: one challenge, one payment)."""


def mpp_payment_id(challenge_id: str) -> str:
    return MPP_ID_PREFIX + challenge_id


def challenge_id_of(payment_id: str | None) -> str | None:
    """The challenge id in an MPP row's ``payment_id`` (the row's ``protocol`` says it is an MPP row)."""
    if payment_id and payment_id.startswith(MPP_ID_PREFIX):
        return payment_id[len(MPP_ID_PREFIX):]
    return None


# ------------------------------------------------------------------------------------------------ offers


def eip3009_assets(offers: Sequence[PaymentRequirements], decimals: Sequence[int]) -> list[tuple[Asset, str, int]]:
    """(asset, pay_to, amount) of every x402 ``exact`` EIP-3009 offer: what ``evm/charge`` can mirror."""
    out = []
    for o, d in zip(offers, decimals, strict=False):
        extra = o.extra
        if (o.scheme == "exact" and o.network.startswith("eip155:")
                and extra.get("assetTransferMethod", "eip3009") == "eip3009"
                and isinstance(extra.get("name"), str) and isinstance(extra.get("version"), str)):
            out.append((Asset(o.network, o.asset, str(extra["name"]), str(extra["version"]), d), o.pay_to, o.amount))
    return out


def mpp_templates(mpp: Sequence[str], sats: int | None, offers: Sequence[PaymentRequirements],
                  decimals: Sequence[int], description: str = "") -> list[Offer]:
    """The route's MPP offers: each EIP-3009 x402 offer as ``evm/charge``; ``lightning/charge`` for ``sats``
    (a template: the invoice is filled in per challenge)."""
    out: list[Offer] = []
    if EVM in mpp:
        out += [Offer(EVM, "charge", evm_charge_request(a, pay_to, amount)) for a, pay_to, amount
                in eip3009_assets(offers, decimals)]
    if LIGHTNING in mpp and sats:
        out.append(lightning_offer_template(sats, description=description or None))
    return out


# ------------------------------------------------------------------------------------------------ credentials


@dataclass(frozen=True, slots=True)
class MppPayment:
    """A verified MPP credential as a settleable pair, plus what its receipt needs."""

    challenge_id: str
    method: str
    payload: PaymentPayload
    requirements: PaymentRequirements
    auth_key: str
    payer: str | None
    decimals: int
    identity: Identity | None = None
    """The credential's ``source``: proven by ``evm/charge`` (the method checked it names the signer, so it is
    the payer's did:pkh), only claimed by ``lightning/charge`` (a preimage says nothing about who paid)."""


def claimed_source(source: str | None) -> Identity | None:
    """A ``source`` the payment does not prove, as a claim; one that is no DID we read is dropped (it is only
    a claim, so it cannot fail the payment)."""
    if source is None:
        return None
    try:
        return Identity.claim(source)
    except DidError as exc:
        log.info("paywire: MPP source dropped (not a DID we read): %s", exc)
        return None


def verify_mpp(server: MppServer, authorization: str, templates: Sequence[Offer],
               offers: Sequence[PaymentRequirements], decimals: Sequence[int], *,
               nonce_variants: Sequence[str] | None = None, body: bytes | None = None) -> MppPayment | Problem | None:
    """Core checks (checklist 105–112, ``body`` against the challenge digest), then the method's pure payload
    checks; no I/O."""
    now = server.clock()
    verdict = server.check(authorization, templates, body=body, now=now)
    if verdict is None or isinstance(verdict, Problem):
        return verdict
    ch = verdict.challenge
    if ch.method == EVM:
        assets = [a for a, _, _ in eip3009_assets(offers, decimals)]
        method = (EvmChargeMethod(None, assets, nonce_variants=tuple(nonce_variants)) if nonce_variants
                  else EvmChargeMethod(None, assets))
        checked = method.verify(verdict, now)
        if isinstance(checked, Problem):
            return checked.with_challenge_id(ch.id)
        auth, asset = checked.data
        payload, req = to_x402(auth, asset)
        claimed = scheme_claim(req, payload.payload)
        key = claimed[0] if claimed is not None else checked.replay_key
        source = verdict.credential.source  # checked against the payer by the method (did:pkh of ``from``)
        identity = (Identity.from_account(req.network, checked.payer, "payment")
                    if source is not None and checked.payer else None)
        return MppPayment(ch.id, EVM, payload, req, key, checked.payer, asset.decimals, identity)
    if ch.method == LIGHTNING:
        checked = LightningChargeMethod().verify(verdict, now)
        if isinstance(checked, Problem):
            return checked.with_challenge_id(ch.id)
        payload, req = lightning_pair(verdict)
        return MppPayment(ch.id, LIGHTNING, payload, req, f"lightning:{checked.data}", None, 0,
                          claimed_source(verdict.credential.source))
    return Problem(P.METHOD_UNSUPPORTED, f"{ch.method}/{ch.intent} is not supported", challenge_id=ch.id)


def lightning_pair(accepted: Accepted) -> tuple[PaymentPayload, PaymentRequirements]:
    """A verified ``lightning/charge`` credential in the shape the flow stores and settles."""
    from paywire.lightning.bolt11 import decode_bolt11

    details = accepted.challenge.request["methodDetails"]
    inv = decode_bolt11(details["invoice"])
    req = PaymentRequirements(scheme=LIGHTNING_SCHEME, network=lightning_network_id(inv.network),
                              amount=inv.amount_sat or 0, asset="sat", pay_to=LIGHTNING,
                              max_timeout_seconds=max(inv.expiry, 1),
                              extra={"invoice": details["invoice"], "paymentHash": inv.payment_hash})
    payload = PaymentPayload(accepted=req, payload={"preimage": str(accepted.credential.payload["preimage"]).lower(),
                                                    "paymentHash": inv.payment_hash})
    return payload, req


# ------------------------------------------------------------------------------------------------ replies


def problem_for_reason(reason: str) -> Problem:
    """An x402 verify/settle reason as the MPP problem a Payment client understands."""
    if "insufficient" in reason:
        return Problem(P.PAYMENT_INSUFFICIENT, reason)
    if "expired" in reason or "valid_before" in reason:
        return Problem(P.PAYMENT_EXPIRED, reason)
    if "nonce_already_used" in reason or reason == "payment_already_used":
        return Problem(P.INVALID_CHALLENGE, "challenge or payment proof already used")
    return Problem(P.VERIFICATION_FAILED, reason)


def mpp_receipt(method: str, challenge_id: str, res: SettleResponse, now: float) -> Receipt:
    extra: dict[str, Any] = {}
    if method == EVM and res.network.startswith("eip155:"):
        extra["chainId"] = chain_id_of(res.network)
    if res.extensions and isinstance(res.extensions.get("audit"), dict):  # the seller's audit reference
        extra["audit"] = res.extensions["audit"]
    return Receipt.success(method, res.transaction, now=now, challenge_id=challenge_id, **extra)


def method_of(requirements_network: str) -> str:
    return LIGHTNING if requirements_network.startswith("bip122:") else EVM


def receipt_headers(receipt: Receipt, app_headers: Sequence[tuple[str, str]]) -> tuple[tuple[str, str], ...]:
    """A paid MPP response: the app's headers, ``Payment-Receipt`` and ``Cache-Control: private`` (checklist 111);
    stale x402 receipt headers are dropped."""
    drop = {"cache-control", "content-length", RECEIPT_HEADER.lower(), "payment-response", "x-payment-response"}
    no_store = any(k.lower() == "cache-control" and "no-store" in v.lower() for k, v in app_headers)
    kept = [(k, v) for k, v in app_headers if k.lower() not in drop]
    return (*kept, (RECEIPT_HEADER, receipt.to_header()),
            ("access-control-expose-headers", "Payment-Receipt, WWW-Authenticate, PAYMENT-REQUIRED"),
            ("cache-control", "private, no-store" if no_store else "private"))


# ------------------------------------------------------------------------------------------------ the protocol


class Mpp(ProtocolDefaults):
    """MPP ``Payment`` credentials on the routes that set ``mpp=(...)`` (:class:`SellerProtocol`)."""

    name = NAME

    def __init__(self, ctx: SellerContext) -> None:
        self.seller = ctx.seller
        self.lightning = ctx.lightning
        self.invoice_expiry = ctx.invoice_expiry
        self.settler = LightningSettler(ctx.lightning, confirm_with_node=ctx.confirm_with_node)

    def takes(self, route: PaidRoute) -> bool:
        return bool(route.mpp)

    def needs_lightning(self, route: PaidRoute) -> bool:
        return "lightning" in route.mpp

    async def parse(self, route: PaidRoute, req: RequestInfo, priced: Priced) -> Parsed:
        """An ``Authorization: Payment`` credential: core and method checks (sans-I/O), then the x402 pair."""
        server = self.seller.mpp
        auth = req.header("authorization")
        if server is None or auth is None or not server.has_credential(auth):
            return None
        offers, decimals = priced
        templates = mpp_templates(route.mpp, route.sats, offers, decimals, route.description)
        res = verify_mpp(server, auth, templates, offers, decimals, nonce_variants=self.seller.mpp_nonce_variants,
                         body=req.body)
        if res is None:
            return None
        if isinstance(res, Problem):
            return Reject(res, offers)
        return Proceed(route, res.payload, res.requirements, res.requirements, False, res.auth_key,
                       payment_hash(res.payload), mpp_payment_id(res.challenge_id), offers, res.decimals, req.url,
                       NAME, identity=res.identity.recorded if res.identity is not None else None)

    async def challenges(self, route: PaidRoute, req: RequestInfo) -> Challenges:
        """One ``Payment`` challenge per offer, ordered by ``Accept-Payment``; a Lightning node that cannot make an
        invoice drops only its own challenge."""
        from paywire.mpp.methods.lightning_charge import lightning_offer

        server = self.seller.mpp
        if server is None:
            return Challenges()
        offers, decimals = self.seller.offers_for(route, req)
        concrete = mpp_templates([m for m in route.mpp if m != "lightning"], None, offers, decimals)
        if "lightning" in route.mpp and self.lightning is not None and route.sats:
            try:
                concrete.append(await lightning_offer(self.lightning, route.sats,
                                                      description=route.description or None,
                                                      memo=route.description or route.key,
                                                      expiry=self.invoice_expiry))
            except (LightningError, ValueError) as exc:
                log.warning("paywire: no Lightning invoice for %s: %s", route.key, exc)
        issued = server.issue_all(concrete, accept_payment=req.header("accept-payment"), body=req.body)
        return Challenges(tuple(c.to_header() for c in issued), issued[0].id if issued else None)

    def receipt_headers(self, rec: PaymentRecord, res: SettleResponse,
                        app_headers: Sequence[tuple[str, str]]) -> Headers:
        """``Payment-Receipt`` (checklist 111) with ``private`` caching."""
        cid = challenge_id_of(rec.payment_id) or ""
        return receipt_headers(mpp_receipt(method_of(res.network), cid, res, time.time()), app_headers)

    def failure_problem(self, reason: str) -> Problem | None:
        return problem_for_reason(reason)

    def used(self, p: Proceed) -> Reject | None:
        """402 ``invalid-challenge`` with fresh challenges: this challenge or proof was already used."""
        return Reject(Problem(P.INVALID_CHALLENGE, "challenge or payment proof already used",
                              challenge_id=challenge_id_of(p.payment_id)), p.offers)

    def facilitator_for(self, requirements: PaymentRequirements | PaymentRequirementsV1) -> Any | None:
        """``lightning`` pairs are settled here (the preimage is the proof); ``evm/charge`` by the facilitator."""
        return self.settler if requirements.scheme == LIGHTNING_SCHEME else None


__all__ = [
    "BIP122",
    "LIGHTNING_SCHEME",
    "MPP_METHODS",
    "NAME",
    "Mpp",
    "MppPayment",
    "challenge_id_of",
    "claimed_source",
    "eip3009_assets",
    "lightning_network_id",
    "lightning_pair",
    "method_of",
    "mpp_payment_id",
    "mpp_receipt",
    "mpp_templates",
    "problem_for_reason",
    "receipt_headers",
    "verify_mpp",
]
