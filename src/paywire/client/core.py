"""The buyer's protocol decisions, free of I/O: read a 402, rank its options, build the payment, and decide
what a reply (or a network failure) to the paid request means.

The I/O shells (``engine.py`` and the transports built on it) ask these functions what to do.
"""

from __future__ import annotations

import dataclasses
import enum
import hashlib
import json
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

from paywire.client.policy import FUNDS, PROTOCOL, SCHEME, Policy, Quote, Refusal, check_static, describe
from paywire.errors import PaywireError, WireError
from paywire.schemes.registry import NO_LEDGER_FIELDS, ClientScheme, LedgerFields, handles
from paywire.spending import Receipt
from paywire.x402.codec import (
    PAYMENT_ID_RE,
    PAYMENT_IDENTIFIER,
    PAYMENT_REQUIRED,
    PAYMENT_RESPONSE,
    PAYMENT_SIGNATURE,
    X_PAYMENT,
    X_PAYMENT_RESPONSE,
    decode_header,
    decode_payment_required,
    decode_payment_response,
    encode_header,
)
from paywire.x402.models import (
    PaymentPayload,
    PaymentPayloadV1,
    PaymentRequired,
    PaymentRequiredV1,
    PaymentRequirements,
    PaymentRequirementsV1,
    ResourceInfo,
    SettleResponse,
    requirements_v1_to_v2,
)

if TYPE_CHECKING:
    from paywire.client.protocols.base import BuyerProtocol



# ------------------------------------------------------------------------------------------------ errors


class PaymentError(PaywireError):
    """The client could not (or would not) pay for a 402. ``receipt`` is the ledger entry, when there is one."""

    def __init__(self, message: str, *, receipt: Receipt | None = None) -> None:
        super().__init__(message)
        self.receipt = receipt


class PaymentRefused(PaymentError):
    """The policy (or the wallet) refused every option; ``refusals`` says which rule refused each and why."""

    def __init__(self, message: str, refusals: Sequence[Refusal], *, receipt: Receipt | None = None) -> None:
        super().__init__(message, receipt=receipt)
        self.refusals = list(refusals)

    @property
    def rule(self) -> str:
        """The rule that refused the cheapest option."""
        return self.refusals[0].rule if self.refusals else ""


class PaymentDeclined(PaymentError):
    """The approval hook (or the person at the prompt) said no."""


class DryRunPayment(PaymentError):
    """Dry-run mode: nothing was signed; ``quote`` is what would have been paid."""

    def __init__(self, message: str, quote: Quote, *, receipt: Receipt | None = None) -> None:
        super().__init__(message, receipt=receipt)
        self.quote = quote


class PaymentRejected(PaymentError):
    """The server answered the paid request with 402 again; ``reason`` is the server's reason."""

    def __init__(self, message: str, reason: str, *, receipt: Receipt | None = None,
                 settlement: SettleResponse | None = None) -> None:
        super().__init__(message, receipt=receipt)
        self.reason = reason
        self.settlement = settlement


class PaymentOutcomeUnknown(PaymentError):
    """The paid request never got a usable answer: the payment may or may not have settled.

    Its budget stays spent until the chain shows the authorization expired unused."""


# ------------------------------------------------------------------------------------------------ challenge


def parse_challenge(headers: Mapping[str, str], body: bytes) -> PaymentRequired | PaymentRequiredV1:
    """v2 ``PAYMENT-REQUIRED`` header first, else a v1 JSON body (checklist 26)."""
    raw = headers.get(PAYMENT_REQUIRED.lower()) or headers.get(PAYMENT_REQUIRED)
    if raw is not None:
        return decode_payment_required(raw)
    try:
        obj = json.loads(body) if body else None
    except ValueError:
        obj = None
    if isinstance(obj, dict) and obj.get("x402Version") == 1:
        return PaymentRequiredV1.from_wire(obj)
    raise WireError("missing_field", "402 without PAYMENT-REQUIRED header or v1 body")


@dataclass(frozen=True, slots=True)
class Option:
    """One entry of ``accepts``: ``requirements`` in v2 shape; ``v1`` keeps the original v1 entry."""

    index: int
    requirements: PaymentRequirements
    v1: PaymentRequirementsV1 | None = None
    protocol: str = "x402"
    """The protocol that read it (``x402``, ``mpp``, ``l402``); ``offer`` is that protocol's own data for paying
    it (``paywire.client.protocols.mpp.MppOffer``, ``paywire.client.protocols.l402.L402Offer``)."""
    offer: Any = None

    def wire(self) -> dict[str, Any]:
        """The entry exactly as the server sent it (v1 or v2 shape)."""
        return self.v1.to_wire() if self.v1 is not None else self.requirements.to_wire()


@dataclass(frozen=True, slots=True)
class Challenge:
    """A parsed 402, either version, with its options in server order."""

    version: int
    options: tuple[Option, ...]
    raw: PaymentRequired | PaymentRequiredV1 | None
    resource: ResourceInfo | None = None
    extensions: Mapping[str, Any] | None = None
    error: str | None = None
    www_authenticate: str | None = None

    def to_json(self) -> str:
        out: dict[str, Any] = self.raw.to_wire() if self.raw is not None else {}
        if self.www_authenticate:
            out = {**out, "wwwAuthenticate": self.www_authenticate}
        return json.dumps(out, separators=(",", ":"))


def to_challenge(pr: PaymentRequired | PaymentRequiredV1) -> Challenge:
    """Normalize either version to a :class:`Challenge`."""
    if isinstance(pr, PaymentRequiredV1):
        options = []
        resource = None
        for i, r1 in enumerate(pr.accepts):
            req, res = requirements_v1_to_v2(r1)
            resource = resource or res
            options.append(Option(i, req, r1))
        return Challenge(1, tuple(options), pr, resource, None, pr.error or None)
    return Challenge(2, tuple(Option(i, r) for i, r in enumerate(pr.accepts)), pr, pr.resource, pr.extensions,
                     pr.error)


def read_challenge(headers: Mapping[str, str], body: bytes) -> Challenge:
    """Parse a 402 into a :class:`Challenge`; ``WireError`` when it is not an x402 challenge."""
    return to_challenge(parse_challenge(headers, body))


def read_any_challenge(headers: Mapping[str, str], body: bytes, *, assets: Callable[[str, str], Any],
                       protocols: Sequence[str] | None = None,
                       registry: Sequence[BuyerProtocol] | None = None) -> Challenge:
    """Every payable option of a 402 as one :class:`Challenge`: each protocol of ``registry`` (default: the
    registered ones: x402, then MPP ``WWW-Authenticate: Payment``, then L402, then any added with
    ``paywire.client.protocols.register``) named in ``protocols`` (None: all) adds its
    options, in that order; the first protocol's challenge carries the rest. ``WireError`` when the 402 offers
    nothing this client reads."""
    if registry is None:
        from paywire.client.protocols import registered

        registry = registered()
    error: WireError | None = None
    merged: Challenge | None = None
    for proto in registry:
        if protocols is not None and proto.name not in protocols:
            continue
        try:
            part = proto.read(headers, body, assets)
        except WireError as exc:
            error = error or exc
            continue
        if part is None:
            continue
        if merged is None:
            merged = part
            continue
        n = len(merged.options)
        merged = dataclasses.replace(
            merged, options=(*merged.options, *(dataclasses.replace(o, index=n + i) for i, o in enumerate(part.options))),
            www_authenticate=merged.www_authenticate or part.www_authenticate)
    if merged is None:
        raise error or WireError("missing_field", "402 without a challenge this client can read")
    return merged


def parse_settlement(headers: Mapping[str, str]) -> SettleResponse | None:
    """The settlement a paid response carries (checklist 36); None when absent or unreadable."""
    raw = (headers.get(PAYMENT_RESPONSE.lower()) or headers.get(PAYMENT_RESPONSE)
           or headers.get(X_PAYMENT_RESPONSE.lower()) or headers.get(X_PAYMENT_RESPONSE))
    if raw is None:
        return None
    try:
        return decode_payment_response(raw)
    except WireError:
        return None


def challenge_error(headers: Mapping[str, str], body: bytes = b"") -> str | None:
    """The server's reason on a 402 after paying: ``PAYMENT-REQUIRED.error``, else the v1 body's ``error``."""
    raw = headers.get(PAYMENT_REQUIRED.lower()) or headers.get(PAYMENT_REQUIRED)
    if raw is not None:
        try:
            err = decode_header(raw).get("error")
        except WireError:
            err = None
        if isinstance(err, str) and err:
            return err
    try:
        obj = json.loads(body) if body else None
    except ValueError:
        return None
    if isinstance(obj, dict):
        for key in ("error", "detail"):  # x402 bodies; MPP problem+json (RFC 9457)
            if isinstance(obj.get(key), str) and obj[key]:
                return str(obj[key])
    return None


def rejection_reason(headers: Mapping[str, str], body: bytes) -> str:
    """The best human reason for a 402 that answered a payment."""
    settlement = parse_settlement(headers)
    if settlement is not None and not settlement.success and settlement.error_reason:
        return settlement.error_reason
    return challenge_error(headers, body) or "payment refused (the server gave no reason)"


# ------------------------------------------------------------------------------------------------ choosing


def quote_of(option: Option, host: str, policy: Policy) -> Quote:
    r = option.requirements
    return Quote(host=host, payee=r.pay_to, network=r.network, asset=r.asset, amount=r.amount,
                 usd_micros=policy.value(r.network, r.asset, r.amount))


def scheme_for(schemes: Sequence[ClientScheme], req: PaymentRequirements) -> ClientScheme | None:
    """The first registered scheme that can sign for ``req``."""
    for s in schemes:
        if handles(s, req.scheme, req.network) and s.can_pay(req):
            return s
    return None


@dataclass(frozen=True, slots=True)
class Candidate:
    option: Option
    quote: Quote


@dataclass(frozen=True, slots=True)
class Ranking:
    """Options that pass the static rules, cheapest first, and why the others were dropped."""

    candidates: tuple[Candidate, ...]
    refusals: tuple[tuple[Option, Refusal], ...]


def _price_key(c: Candidate, rank: Callable[[str], int] = lambda _p: 0) -> tuple[int, int, int, int]:
    q = c.quote
    r = rank(c.option.protocol)
    return (r, 0, q.usd_micros, c.option.index) if q.usd_micros is not None else (r, 1, q.amount, c.option.index)


def rank_options(
    challenge: Challenge,
    host: str,
    policy: Policy,
    schemes: Sequence[ClientScheme],
    balance: Callable[[Option], int | None] = lambda _o: None,
) -> Ranking:
    """Drop options no scheme can sign, the policy refuses, or the wallet cannot fund (``balance`` returns
    None when unknown); sort the rest cheapest first (dollar value, then server order)."""
    ok: list[Candidate] = []
    refused: list[tuple[Option, Refusal]] = []
    for opt in challenge.options:
        req = opt.requirements
        q = quote_of(opt, host, policy)
        if opt.protocol not in policy.protocols:
            refused.append((opt, Refusal(PROTOCOL, f"{opt.protocol} is not in the policy's protocols "
                                                   f"{list(policy.protocols)}")))
            continue
        if scheme_for(schemes, req) is None:
            refused.append((opt, Refusal(SCHEME, f"no wallet scheme can pay {req.scheme} on {req.network}")))
            continue
        refusal = check_static(policy, q)
        if refusal is not None:
            refused.append((opt, refusal))
            continue
        funds = balance(opt)
        if funds is not None and funds < req.amount:
            refused.append((opt, Refusal(FUNDS, f"wallet holds {funds} atomic units of {req.asset} on "
                                                f"{req.network}, needs {req.amount}")))
            continue
        ok.append(Candidate(opt, q))
    order = {p: i for i, p in enumerate(policy.protocols)}

    def rank(proto: str) -> int:
        return order.get(proto, len(order))

    ok.sort(key=lambda c: _price_key(c, rank))
    refused.sort(key=lambda pair: _price_key(Candidate(pair[0], quote_of(pair[0], host, policy)), rank))
    return Ranking(tuple(ok), tuple(refused))


def refusal_message(url: str, refusals: Sequence[tuple[Option, Refusal]]) -> str:
    """One sentence per refused option (cheapest first)."""
    if not refusals:
        return f"{url}: nothing to pay"
    parts = [f"option {opt.index} ({opt.requirements.amount} of {opt.requirements.asset}) refused by "
             f"{ref.rule}: {ref.reason}" for opt, ref in refusals]
    return f"not paying {url}: " + "; ".join(parts)


# ------------------------------------------------------------------------------------------------ building


def new_payment_id() -> str:
    """``pay_`` + 32 hex digits (the SDK's format, digest §9.2)."""
    return "pay_" + uuid.uuid4().hex


def is_valid_payment_id(value: str) -> bool:
    return PAYMENT_ID_RE.fullmatch(value) is not None


def with_payment_id(extensions: Mapping[str, Any] | None, payment_id: str) -> Mapping[str, Any] | None:
    """Echo the server's extensions, adding ``info.id`` when it advertised ``payment-identifier``
    (checklist 28, 37); everything the server sent is kept."""
    if not extensions:
        return extensions
    declared = extensions.get(PAYMENT_IDENTIFIER)
    if not isinstance(declared, Mapping):
        return extensions
    info = declared.get("info")
    info_d = dict(info) if isinstance(info, Mapping) else {}
    if "id" not in info_d:
        info_d["id"] = payment_id
    out = dict(extensions)
    out[PAYMENT_IDENTIFIER] = {**declared, "info": info_d}
    return out


def advertises_payment_id(challenge: Challenge) -> bool:
    return bool(challenge.extensions) and isinstance(
        (challenge.extensions or {}).get(PAYMENT_IDENTIFIER), Mapping)


@dataclass(frozen=True, slots=True)
class PaymentAttempt:
    """What the client sends on the retry, and what identifies it in the ledger."""

    header: str
    value: str
    requirements: PaymentRequirements
    version: int
    payment_id: str | None = None
    nonce: str | None = None
    valid_before: int | None = None
    extra: tuple[tuple[str, str], ...] = ()  # sent along (a Sign-In-With-X proof)

    @property
    def headers(self) -> dict[str, str]:
        return {self.header: self.value, **dict(self.extra)}

    @property
    def payload_hash(self) -> str:
        return payload_hash(self.value)


def payload_hash(header_value: str) -> str:
    """sha256 of the encoded payment header, hex."""
    return hashlib.sha256(header_value.encode("ascii")).hexdigest()


def build_payment(challenge: Challenge, option: Option, inner: Mapping[str, Any],
                  payment_id: str | None = None, *, ledger: LedgerFields = NO_LEDGER_FIELDS,
                  extensions: Mapping[str, Any] | None = None) -> PaymentAttempt:
    """The payment header for ``option``: ``accepted`` is the server's entry verbatim (checklist 27, 29).
    ``ledger``: the signing scheme's ``ledger_fields(inner)`` (nonce, valid_before), kept on the attempt;
    ``extensions``: the scheme's own entries, replacing the server's declarations of the same keys."""
    nonce, valid_before = ledger
    if option.v1 is not None:
        p1 = PaymentPayloadV1(x402_version=1, scheme=option.v1.scheme, network=option.v1.network, payload=inner)
        return PaymentAttempt(X_PAYMENT, encode_header(p1.to_wire()), option.requirements, 1, None,
                              nonce, valid_before)
    pid = payment_id if advertises_payment_id(challenge) else None
    echoed = with_payment_id(challenge.extensions, pid) if pid else challenge.extensions
    if extensions:
        echoed = {**(echoed or {}), **extensions}
    p = PaymentPayload(x402_version=2, accepted=option.requirements, payload=inner, resource=challenge.resource,
                       extensions=echoed)
    return PaymentAttempt(PAYMENT_SIGNATURE, encode_header(p.to_wire()), option.requirements, 2, pid,
                          nonce, valid_before)


def already_paying(headers: Mapping[str, str]) -> bool:
    """The request already carries a payment: never pay for it again (checklist 30)."""
    keys = {k.lower() for k in headers}
    return PAYMENT_SIGNATURE.lower() in keys or X_PAYMENT.lower() in keys


# ------------------------------------------------------------------------------------------------ retry safety


class Sent(enum.Enum):
    """How far a failed send got."""

    NOT_SENT = "not_sent"
    """The request never reached the server (connection refused, connect timeout)."""
    MAYBE_SENT = "maybe_sent"
    """The server may have received it (timeout or reset while waiting for the answer)."""


class Next(enum.Enum):
    """What to do after one send of the paid request."""

    DONE = "done"
    """A usable answer: deliver it."""
    RESEND = "resend"
    """Send the very same signed payment again."""
    REJECTED = "rejected"
    """The server answered 402: it refused the payment."""
    UNKNOWN = "unknown"
    """Out of retries without an answer: the payment may have settled."""
    UNSENT = "unsent"
    """Out of retries and the payment never left this machine."""


RETRYABLE_STATUS: Final = frozenset({500, 502, 503, 504})


def after_send_error(sent: Sent, tries: int, max_retries: int, reached_before: bool) -> Next:
    """A send failed. Resend the same payment while retries remain; otherwise the outcome is unknown if
    the payment may ever have reached the server, else it was never sent."""
    if tries < max_retries:
        return Next.RESEND
    return Next.UNKNOWN if (reached_before or sent is Sent.MAYBE_SENT) else Next.UNSENT


def after_response(status: int, tries: int, max_retries: int) -> Next:
    """The paid request got an answer. 5xx → resend the same payment (bounded); 402, and 412 (a Permit2
    approval is missing: checklist 15) → rejected."""
    if status in (402, 412):
        return Next.REJECTED
    if status in RETRYABLE_STATUS:
        return Next.RESEND if tries < max_retries else Next.UNKNOWN
    return Next.DONE


# ------------------------------------------------------------------------------------------------ legacy API


class Payer:
    """Chooses the first offer a registered scheme can pay (server order) and signs it; no policy, no ledger.

    Kept for simple uses (``PaymentTransport(Payer([...]))``); :class:`~paywire.client.engine.Buyer` adds the
    policy, the ledger and retry safety on top of the same decisions."""

    def __init__(self, schemes: Sequence[ClientScheme]) -> None:
        self.schemes = list(schemes)

    async def pay(self, challenge: PaymentRequired | PaymentRequiredV1) -> PaymentAttempt:
        """Sign the first payable offer in the server's order (checklist 27-29)."""
        c = to_challenge(challenge)
        for opt in c.options:
            scheme = scheme_for(self.schemes, opt.requirements)
            if scheme is not None:
                inner = await scheme.create_payload(opt.requirements)
                return build_payment(c, opt, inner, new_payment_id(), ledger=scheme.ledger_fields(inner))
        raise PaymentError("no offer in the 402 can be paid by this wallet")


__all__ = [
    "PAYMENT_IDENTIFIER",
    "Candidate",
    "Challenge",
    "DryRunPayment",
    "Next",
    "Option",
    "Payer",
    "PaymentAttempt",
    "PaymentDeclined",
    "PaymentError",
    "PaymentOutcomeUnknown",
    "PaymentRefused",
    "PaymentRejected",
    "Ranking",
    "Receipt",
    "Sent",
    "after_response",
    "after_send_error",
    "already_paying",
    "build_payment",
    "challenge_error",
    "describe",
    "new_payment_id",
    "parse_challenge",
    "parse_settlement",
    "rank_options",
    "read_challenge",
    "rejection_reason",
    "with_payment_id",
]
