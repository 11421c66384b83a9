"""The seller's protocol decisions (digest §3.3–3.5, §9.2; checklist 1–23), free of any framework and of I/O.

``Seller.decide(request)`` says what to do with one request: let it through (:class:`Pass`), answer it
ourselves (:class:`Reply`: 402 challenge, paywall, CORS preflight, 400 …) or verify a matched payment
(:class:`Proceed`). The orchestration around verify/claim/settle lives in ``paywire.server.flow``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import re
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, Literal

from paywire.errors import ConfigError, WireError
from paywire.evm.assets import AssetRegistry
from paywire.identity.siws import solana_reference
from paywire.identity.siwx import SIGN_IN_WITH_X, SiwxIssuer, SplicedHeader
from paywire.schemes.registry import default_registry
from paywire.server.pricing import Defaults, Offer, Price, PriceFn, resolve_offer
from paywire.server.request import RequestInfo
from paywire.x402.codec import (
    PAYMENT_ID_RE,
    PAYMENT_IDENTIFIER,
    PAYMENT_REQUIRED,
    PAYMENT_RESPONSE,
    PAYMENT_SIGNATURE,
    X_PAYMENT,
    X_PAYMENT_RESPONSE,
    decode_payment_signature,
    encode_header,
    encode_json,
)
from paywire.x402.matching import find_matching_requirements, find_matching_v1
from paywire.x402.models import (
    PaymentPayload,
    PaymentPayloadV1,
    PaymentRequired,
    PaymentRequirements,
    PaymentRequirementsV1,
    ResourceInfo,
    SettleResponse,
    SupportedResponse,
    requirements_v2_to_v1,
)
from paywire.x402.networks import matches_pattern, to_caip2_or_none

EXPOSED_HEADERS = "PAYMENT-REQUIRED, PAYMENT-RESPONSE, X-PAYMENT-RESPONSE"
ALLOWED_REQUEST_HEADERS = "PAYMENT-SIGNATURE, X-PAYMENT, SIGN-IN-WITH-X, Content-Type, Authorization, Accept"
_PARAM_RE = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)(?::path)?\}")
SettleMode = Literal["after", "before"]
Headers = tuple[tuple[str, str], ...]
OfferLike = Offer | PaymentRequirements
OffersFn = Callable[[RequestInfo], Sequence[OfferLike]]

PAYMENT_IDENTIFIER_SCHEMA: Mapping[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "type": "object",
    "properties": {"required": {"type": "boolean"},
                   "id": {"type": "string", "minLength": 16, "maxLength": 128, "pattern": "^[a-zA-Z0-9_-]+$"}},
    "required": ["required"],
}


def _compile_path(pattern: str) -> re.Pattern[str]:
    """``/a``, ``/a/*`` (glob, crosses ``/``), ``/items/{id}`` (one segment), ``/files/{p:path}`` (rest)."""
    out, pos = [], 0
    for m in re.finditer(r"\{[^}]*\}|\*", pattern):
        out.append(re.escape(pattern[pos:m.start()]))
        tok = m.group(0)
        if tok == "*":
            out.append(".*")
        elif _PARAM_RE.fullmatch(tok) is None:
            raise ConfigError(f"bad path parameter {tok!r} in {pattern!r}: use {{name}} or {{name:path}}")
        else:
            out.append(".*" if tok.endswith(":path}") else "[^/]+")
        pos = m.end()
    out.append(re.escape(pattern[pos:]))
    return re.compile("".join(out))


IdentityRule = Literal["siwx", "agent-sig", "required"]
IDENTITY_RULES: tuple[str, ...] = ("siwx", "agent-sig", "required")
DEFAULT_CHALLENGE_ORDER: tuple[str, ...] = ("l402", "mpp")
"""The protocols whose challenges are ``WWW-Authenticate`` values, in their default order (x402's is the 402)."""


EIP2612_GAS_SPONSORING = "eip2612GasSponsoring"
EIP2612_DECLARATION: dict[str, Any] = {
    "info": {"description": "The facilitator accepts an EIP-2612 permit approving Permit2, sent with the payment.",
             "version": "1"},
    "schema": {
        "$schema": "https://json-schema.org/draft/2020-12/schema", "type": "object",
        "properties": {
            "from": {"type": "string", "pattern": "^0x[a-fA-F0-9]{40}$"},
            "asset": {"type": "string", "pattern": "^0x[a-fA-F0-9]{40}$"},
            "spender": {"type": "string", "pattern": "^0x[a-fA-F0-9]{40}$"},
            "amount": {"type": "string", "pattern": "^[0-9]+$"},
            "nonce": {"type": "string", "pattern": "^[0-9]+$"},
            "deadline": {"type": "string", "pattern": "^[0-9]+$"},
            "signature": {"type": "string", "pattern": "^0x[a-fA-F0-9]+$"},
            "version": {"type": "string"},
        },
        "required": ["from", "asset", "spender", "amount", "nonce", "deadline", "signature", "version"],
    },
}
"""``PaymentRequired.extensions.eip2612GasSponsoring`` for Permit2 offers, when the facilitator supports it."""

ERC20_APPROVAL_GAS_SPONSORING = "erc20ApprovalGasSponsoring"
_ADDRESS = {"type": "string", "pattern": "^0x[a-fA-F0-9]{40}$"}
ERC20_APPROVAL_DECLARATION: dict[str, Any] = {
    "info": {"description": "The facilitator accepts a raw signed approval transaction and will sponsor the gas "
                            "fees.", "version": "1"},
    "schema": {
        "$schema": "https://json-schema.org/draft/2020-12/schema", "type": "object",
        "properties": {
            "from": {**_ADDRESS, "description": "The address of the sender."},
            "asset": {**_ADDRESS, "description": "The ERC-20 token contract address to approve."},
            "spender": {**_ADDRESS, "description": "The address of the spender (Canonical Permit2)."},
            "amount": {"type": "string", "pattern": "^[0-9]+$",
                       "description": "Approval amount (uint256). Typically MaxUint."},
            "signedTransaction": {"type": "string", "pattern": "^0x[a-fA-F0-9]+$",
                                  "description": "RLP-encoded signed transaction calling ERC20.approve()."},
            "version": {"type": "string", "pattern": "^[0-9]+(\\.[0-9]+)*$",
                        "description": "Schema version identifier."},
        },
        "required": ["from", "asset", "spender", "amount", "signedTransaction", "version"],
    },
}
"""``PaymentRequired.extensions.erc20ApprovalGasSponsoring`` (x402 ``specs/extensions/erc20_gas_sponsoring.md``)
for Permit2 offers, when the facilitator supports it: a payer without the Permit2 approval (and without gas) may
send its signed ``approve(Permit2, …)`` transaction, which the facilitator funds, relays, then settles."""


def with_kind_extra(offer: PaymentRequirements, supported: SupportedResponse) -> PaymentRequirements:
    """The offer with the facilitator's ``/supported`` kind extra its scheme asks for (``kind_extra_keys``,
    e.g. upto's ``facilitatorAddress``) filled in where the offer does not set them."""
    keys = getattr(default_registry.server(offer.scheme, offer.network), "kind_extra_keys", ())
    missing = [k for k in keys if k not in offer.extra]
    if not missing:
        return offer
    for kind in supported.kinds:
        if (kind.x402_version == 2 and kind.scheme == offer.scheme and kind.extra
                and matches_pattern(offer.network, kind.network)):
            found = {k: kind.extra[k] for k in missing if k in kind.extra}
            return dataclasses.replace(offer, extra={**offer.extra, **found}) if found else offer
    return offer


@dataclass(frozen=True, slots=True)
class PaidRoute:
    """A priced route.

    ``path`` is a pattern (``/weather``, ``/api/*``, ``/items/{id}``) optionally prefixed by methods
    (``"GET /weather"``, ``"GET,POST /x"``); ``method`` does the same (``*`` = any). ``offers`` are
    :class:`Offer` / ``PaymentRequirements`` (or a callable of the request returning them); ``price`` is the
    shorthand for one offer with the seller's defaults.

    ``settle="after"`` runs the handler buffered, settles, and releases the response only when paid (handler
    status >= 400 or an exception: no charge). ``settle="before"`` settles first, then runs (and may stream).
    ``payment_identifier`` advertises the idempotency extension (``"required"`` makes the id mandatory).
    ``x402_versions`` says which protocol generations may pay (``(1,)`` omits ``PAYMENT-REQUIRED``).

    Other protocols on the same route (one 402 carries them all): ``mpp=("evm", "lightning")`` adds MPP
    ``Payment`` challenges — ``evm/charge`` mirrors each EIP-3009 offer, ``lightning/charge`` asks ``sats``;
    ``l402=True`` (or a service name) adds an L402 challenge for ``sats``, whose paid token is then reusable
    until ``l402_ttl`` seconds pass. A route with ``sats`` and no ``price``/``offers`` offers no x402.
    ``challenge_order`` orders their ``WWW-Authenticate`` challenges: L402 first by default, because Aperture-style
    clients read only the first value, while MPP clients (pympp, mppx) look through every value for ``Payment``.

    Identity (docs/identity.md): ``siwx=True`` advertises Sign-In-With-X in the 402; ``access_for=<seconds>``
    lets a payer who paid this path within that time sign in and get it again without paying;
    ``identity=`` refuses a payment that comes without that proof, before any money moves: ``"siwx"`` a
    sign-in, ``"agent-sig"`` an RFC 9421 agent signature (Web Bot Auth), ``"required"`` either; the proven
    identity (its DID) is recorded with the payment. ``access_for`` and ``identity`` of siwx/required imply
    ``siwx``.
    """

    path: str
    offers: tuple[OfferLike, ...] | OffersFn = ()
    method: str = "*"
    description: str = ""
    mime_type: str = "application/json"
    price: Price | PriceFn | None = None
    settle: SettleMode = "after"
    payment_identifier: bool | Literal["required"] = False
    x402_versions: tuple[int, ...] = (1, 2)
    paywall: bool = True
    resource: str | None = None
    mpp: tuple[str, ...] = ()
    l402: bool | str = False
    sats: int | None = None
    l402_ttl: int = 3600
    challenge_order: tuple[str, ...] = DEFAULT_CHALLENGE_ORDER
    discovery: bool | Mapping[str, Any] = False
    """x402 bazaar: publish this route (its 402 carries ``extensions["bazaar"]``; a facilitator that settles it lists
    it at ``/discovery/resources``). True, or example inputs and output: ``{"query_params": {...}, "body": {...},
    "body_type": "json", "output": {...}}`` (see :func:`paywire.x402.bazaar.http_discovery`)."""
    siwx: bool = False
    access_for: float | None = None
    identity: IdentityRule | None = None
    allow_identities: frozenset[str] | None = None
    """Only these identities may use the route (DIDs or wallet addresses): others are refused before any money
    moves; implies sign-in (docs/identity.md)."""
    free_quota: tuple[int, float] | None = None
    """``(n, seconds)``: each proven identity gets ``n`` requests per window without paying (then it pays)."""
    price_for_identity: Callable[[Any, PaymentRequirements], int | None] | None = None
    """``f(identity, offer) -> amount`` in the offer's atomic units for a proven identity (None: the offer's own;
    0: free). A signed-in payer is quoted, and pays, its own price."""
    sign_in_chains: tuple[str, ...] | None = None
    """The chains a payer may sign in with (CAIP-2: ``solana:<genesis hash>`` for Sign-In With Solana,
    ``eip155:<id>``); None: the offers' networks. Implies sign-in."""
    methods: frozenset[str] = field(init=False, repr=False)
    pattern: str = field(init=False, repr=False)
    _regex: re.Pattern[str] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        path, method = self.path.strip(), self.method
        if " " in path:
            method, path = path.split(None, 1)
        methods = frozenset(m.strip().upper() for m in method.split(",") if m.strip())
        if not path.startswith("/"):
            raise ConfigError(f"route path {self.path!r} must start with '/' (e.g. 'GET /weather')")
        if self.settle not in ("after", "before"):
            raise ConfigError(f"route {self.path!r}: settle must be 'after' or 'before', not {self.settle!r}")
        if not set(self.x402_versions) <= {1, 2} or not self.x402_versions:
            raise ConfigError(f"route {self.path!r}: x402_versions must be a non-empty subset of (1, 2)")
        if isinstance(self.mpp, str):
            object.__setattr__(self, "mpp", (self.mpp,))
        unknown = set(self.mpp) - {"evm", "lightning"}
        if unknown:
            raise ConfigError(f"route {self.path!r}: mpp methods are 'evm' and 'lightning', not {sorted(unknown)}")
        if isinstance(self.challenge_order, str):
            object.__setattr__(self, "challenge_order", (self.challenge_order,))
        order = tuple(self.challenge_order)
        if not set(order) <= set(DEFAULT_CHALLENGE_ORDER) or len(set(order)) != len(order):
            raise ConfigError(f"route {self.path!r}: challenge_order lists each of {DEFAULT_CHALLENGE_ORDER} at most "
                              f"once, not {order}")
        object.__setattr__(self, "challenge_order", order)
        if isinstance(self.discovery, Mapping):
            from paywire.x402.bazaar import DISCOVERY_OPTIONS

            unknown_keys = set(self.discovery) - DISCOVERY_OPTIONS
            if unknown_keys:
                raise ConfigError(f"route {self.path!r}: discovery takes {sorted(DISCOVERY_OPTIONS)}, not "
                                  f"{sorted(unknown_keys)}")
        needs_sats = "lightning" in self.mpp or bool(self.l402)
        if needs_sats and (not isinstance(self.sats, int) or isinstance(self.sats, bool) or self.sats <= 0):
            raise ConfigError(f"route {self.path!r}: Lightning (mpp 'lightning' / l402) needs sats=<positive int>")
        if self.price is None and not self.offers:
            if not needs_sats:
                raise ConfigError(f"route {self.path!r} has no price: give price='$0.01' or offers=(...)")
            if "evm" in self.mpp:
                raise ConfigError(f"route {self.path!r}: mpp 'evm' mirrors the x402 offers: give a price")
        if self.identity is not None and self.identity not in IDENTITY_RULES:
            raise ConfigError(f"route {self.path!r}: identity must be one of {IDENTITY_RULES}, not {self.identity!r}")
        if self.allow_identities is not None:
            if isinstance(self.allow_identities, str):
                raise ConfigError(f"route {self.path!r}: allow_identities takes a list, not one string")
            object.__setattr__(self, "allow_identities", frozenset(a.lower() for a in self.allow_identities))
        if self.free_quota is not None:
            n, window = self.free_quota
            if isinstance(n, bool) or not isinstance(n, int) or n < 1 or not window > 0:
                raise ConfigError(f"route {self.path!r}: free_quota is (requests >= 1, seconds > 0), "
                                  f"not {self.free_quota!r}")
        if self.sign_in_chains is not None:
            if isinstance(self.sign_in_chains, str) or not self.sign_in_chains or not all(
                    isinstance(c, str) and ((c.startswith("eip155:") and c[7:].isdigit()) or solana_reference(c))
                    for c in self.sign_in_chains):
                raise ConfigError(f"route {self.path!r}: sign_in_chains takes a list of CAIP-2 eip155:/solana: "
                                  f"ids, not {self.sign_in_chains!r}")
            object.__setattr__(self, "sign_in_chains", tuple(self.sign_in_chains))
        if self.access_for is not None and (isinstance(self.access_for, bool) or not self.access_for > 0):
            raise ConfigError(f"route {self.path!r}: access_for is a number of seconds > 0, not {self.access_for!r}")
        object.__setattr__(self, "methods", methods or frozenset({"*"}))
        object.__setattr__(self, "pattern", path)
        object.__setattr__(self, "_regex", _compile_path(path))

    @property
    def key(self) -> str:
        """``"GET /weather"``: how the ledger names the route."""
        return f"{','.join(sorted(self.methods))} {self.pattern}"

    def matches(self, method: str, path: str) -> bool:
        m = method.upper()
        if "*" not in self.methods and m not in self.methods and not (m == "HEAD" and "GET" in self.methods):
            return False
        return self._regex.fullmatch(path) is not None

    @property
    def x402(self) -> bool:
        """Whether the route offers x402 at all (a Lightning-only route does not)."""
        return self.price is not None or bool(self.offers)

    @property
    def extra_protocols(self) -> bool:
        """MPP or L402 challenges ride along on this route's 402s."""
        return bool(self.mpp) or bool(self.l402)

    @property
    def signs_in(self) -> bool:
        """The route takes Sign-In-With-X (advertised in its 402s)."""
        return (self.siwx or self.access_for is not None or self.identity in ("siwx", "required")
                or self.per_identity or self.sign_in_chains is not None)

    @property
    def per_identity(self) -> bool:
        """The route treats proven identities differently (allowlist, free quota, price)."""
        return self.allow_identities is not None or self.free_quota is not None or self.price_for_identity is not None

    def sign_in_networks(self, offers: Sequence[object]) -> list[str]:
        """The chains this route's 402s offer to sign in with: ``sign_in_chains``, else the offers' networks."""
        if self.sign_in_chains is not None:
            return list(self.sign_in_chains)
        return [str(getattr(o, "network", "")) for o in offers]

    @property
    def checks_identity(self) -> bool:
        """The seller looks at this route's identity proofs (sign-in, agent signature) before its payments."""
        return self.signs_in or self.identity is not None

    @property
    def l402_service(self) -> str:
        return self.l402 if isinstance(self.l402, str) else "paywire"

    def offer_specs(self) -> tuple[OfferLike, ...] | OffersFn:
        if self.price is not None:
            return (Offer(price=self.price),) + (self.offers if isinstance(self.offers, tuple) else ())
        return self.offers


# ------------------------------------------------------------------------------------------------ decisions


@dataclass(frozen=True, slots=True)
class Reply:
    """A response the middleware sends itself (402, preflight, 400, 409, 503 …)."""

    status: int
    headers: Headers
    body: bytes

    def header(self, name: str) -> str | None:
        low = name.lower()
        return next((v for k, v in self.headers if k.lower() == low), None)


@dataclass(frozen=True, slots=True)
class Pass:
    """Not ours to charge: hand the request to the app (free)."""


@dataclass(frozen=True, slots=True)
class Proceed:
    """A decodable payment that matches one of the route's offers: claim and verify it next."""

    route: PaidRoute
    payload: PaymentPayload | PaymentPayloadV1
    requirements: PaymentRequirements | PaymentRequirementsV1
    offer: PaymentRequirements  # v2 form of the matched offer (ledger, display)
    v1: bool
    auth_key: str  # the authorization being spent (claim key)
    payload_hash: str  # sha256 of the payment minus extensions (same payment ⇔ same hash)
    payment_id: str | None  # payment-identifier extension id (``mpp:<challenge id>`` for MPP)
    offers: tuple[PaymentRequirements, ...]
    decimals: int
    url: str
    protocol: str = "x402"  # the protocol that carried the payment (``paywire.server.protocols``)
    payer: str | None = None  # who signed, when the payload says (EIP-3009 ``from``)
    identity: str | None = None  # the DID the request proved (Sign-In-With-X), recorded with the payment


Decision = Pass | Reply | Proceed
Priced = tuple[tuple[PaymentRequirements, ...], tuple[int, ...]]
"""A route's offers for one request and their decimals (:meth:`Seller.offers_for`)."""


_SHA256 = hashlib.sha256()


_CANONICAL = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=False)
"""What ``json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False)`` builds on every call; its
``encode`` keeps no state between calls (the circular-reference markers are per call)."""


def _canonical(obj: Any) -> bytes:
    return _CANONICAL.encode(obj).encode()


def payment_hash(payload: PaymentPayload | PaymentPayloadV1) -> str:
    """What makes two payment headers "the same payment": scheme data and the accepted offer, not extensions."""
    inner = payload.payload
    if type(inner) is not dict:  # the decoder's payloads are plain dicts: encoded as they are, no copy
        inner = dict(inner)
    if isinstance(payload, PaymentPayloadV1):
        core: dict[str, Any] = {"v": 1, "scheme": payload.scheme, "network": to_caip2_or_none(payload.network),
                                "payload": inner}
    else:
        core = {"v": 2, "accepted": payload.accepted.wire_view(), "payload": inner}
    h = _SHA256.copy()  # a copy of an empty state: cheaper than a new OpenSSL hash object
    h.update(_canonical(core))
    return h.hexdigest()


def authorization_identity(offer: PaymentRequirements, payload: PaymentPayload | PaymentPayloadV1) -> str:
    """The claim key: what the offer's scheme says the payload spends (for ``exact`` on EVM: network, asset,
    payer, nonce); the payment hash when the scheme names nothing single-use."""
    return identity_and_payer(offer, payload)[0]


def identity_and_payer(offer: PaymentRequirements,
                       payload: PaymentPayload | PaymentPayloadV1) -> tuple[str, str | None]:
    """(:func:`authorization_identity`, the payer when the payload names one), parsing the payload once.

    The scheme registered for the offer says which authorization the payload spends (``ServerScheme.claim``)."""
    found = scheme_claim(offer, payload.payload)
    if found is not None:
        return found
    return f"{offer.scheme}:{offer.network}:sha256:{payment_hash(payload)}", None


def scheme_claim(offer: PaymentRequirements, inner: Mapping[str, Any]) -> tuple[str, str | None] | None:
    """(claim key, payer) as the offer's registered scheme reads them from the payload, or None."""
    server = default_registry.server(offer.scheme, offer.network)
    return server.claim(offer, inner) if server is not None else None


def scheme_payer(offer: PaymentRequirements, inner: Mapping[str, Any]) -> str | None:
    """Who signed the payload, as the offer's registered scheme reads it, or None."""
    server = default_registry.server(offer.scheme, offer.network)
    return server.payer(inner) if server is not None else None


def payment_identifier(payload: PaymentPayload) -> tuple[str | None, str | None]:
    """(id, error) from ``extensions["payment-identifier"].info.id`` (digest §9.2)."""
    ext = (payload.extensions or {}).get(PAYMENT_IDENTIFIER)
    if ext is None:
        return None, None
    info = ext.get("info") if isinstance(ext, Mapping) else None
    pid = info.get("id") if isinstance(info, Mapping) else None
    if pid is None:
        return None, None
    if not isinstance(pid, str) or PAYMENT_ID_RE.fullmatch(pid) is None:
        return None, "payment-identifier id must match ^[a-zA-Z0-9_-]{16,128}$"
    return pid, None


def json_reply(status: int, body: Mapping[str, Any], headers: Headers = ()) -> Reply:
    data = json.dumps(body, separators=(",", ":")).encode()
    return Reply(status, (("content-type", "application/json"), ("cache-control", "no-store"),
                          ("access-control-expose-headers", EXPOSED_HEADERS), *headers), data)


def resource_url(route: PaidRoute, req: RequestInfo) -> str:
    """The URL a route's payments (and sign-ins) are for: its configured ``resource``, else the request's URL."""
    return route.resource or req.url


@dataclass(slots=True)
class Seller:
    """Route table plus the x402 exchange rules; build it once, ask it per request.

    Static offers are resolved at construction, so a money price without a known asset fails right here
    (``ConfigError``). ``check_supported`` compares them with the facilitator's ``/supported`` (checklist 8).
    """

    routes: Sequence[PaidRoute] = field(default_factory=tuple)
    pay_to: str | None = None
    network: str | None = None
    assets: AssetRegistry = field(default_factory=AssetRegistry)
    app_name: str = ""
    cors_origin: str | None = "*"
    paywall_html: str | None = None
    mpp: Any = None  # paywire.mpp.server.MppServer: needed by routes with mpp=(...)
    mpp_nonce_variants: tuple[str, ...] | None = None
    mpp_max_body: int = 1024 * 1024
    """MPP routes bind request bodies up to this size through the challenge ``digest`` (RFC 9530)."""
    siwx: SiwxIssuer | None = None
    """Issues and checks Sign-In-With-X challenges (made when a route signs in and none is given)."""
    offer_signer: Any = None
    """An :class:`~paywire.identity.offers.ArtifactSigner`: sign every 402's offers and every paid response's
    receipt (x402 ``offer-receipt``); ``receipt_tx`` puts the transaction hash in receipts (else privacy-minimal)."""
    receipt_tx: bool = False
    clock: Callable[[], float] = time.time
    _static: dict[int, tuple[tuple[PaymentRequirements, ...], tuple[int, ...]]] = field(
        default_factory=dict, repr=False)
    _supported: SupportedResponse | None = field(default=None, repr=False)
    _challenges: dict[tuple[int, str], Reply] = field(default_factory=dict, repr=False)
    _sign_in_templates: dict[tuple[int, str], tuple[Headers, Headers, bytes, SplicedHeader, str]] = field(
        default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        self.routes = tuple(self.routes)
        if self.siwx is None and any(r.signs_in for r in self.routes):
            self.siwx = SiwxIssuer()
        defaults = self.defaults
        for i, r in enumerate(self.routes):
            if r.mpp and self.mpp is None:
                raise ConfigError(f"route {r.key} offers MPP: give the seller an MPP realm and secret "
                                  "(mpp_realm='api.example.com', mpp_secret=<32+ random bytes>)")
            if not r.x402:
                self._static[i] = ((), ())
                continue
            specs = r.offer_specs()
            if callable(specs) or any(isinstance(o, Offer) and o.is_dynamic for o in specs):
                continue
            try:
                resolved = [resolve_offer(o, defaults) for o in specs]
            except ConfigError as exc:
                raise ConfigError(f"route {r.key}: {exc}") from None
            if not resolved:
                raise ConfigError(f"route {r.key} has no offers")
            self._static[i] = (tuple(x[0] for x in resolved), tuple(x[1] for x in resolved))

    @property
    def defaults(self) -> Defaults:
        return Defaults(pay_to=self.pay_to, network=self.network, assets=self.assets)

    # -- routing and pricing -------------------------------------------------------------------
    def route_for(self, method: str, path: str) -> PaidRoute | None:
        for r in self.routes:
            if r.matches(method, path):
                return r
        return None

    def route_for_request(self, req: RequestInfo) -> PaidRoute | None:
        """The route a request is about; a CORS preflight is about the method it asks for."""
        if req.method == "OPTIONS":
            asked = req.header("access-control-request-method")
            return self.route_for(asked.strip().upper(), req.path) if asked else None
        return self.route_for(req.method, req.path)

    def offers_for(self, route: PaidRoute, request: RequestInfo) -> tuple[tuple[PaymentRequirements, ...],
                                                                       tuple[int, ...]]:
        """The route's offers for this request (static ones are cached; dynamic ones priced now)."""
        idx = next((i for i, r in enumerate(self.routes) if r is route), -1)
        cached = self._static.get(idx)
        if cached is not None:
            return cached
        if not route.x402:
            return (), ()
        specs = route.offer_specs()
        items = specs(request) if callable(specs) else specs
        resolved = [resolve_offer(o, self.defaults, request) for o in items]
        if not resolved:
            raise ConfigError(f"route {route.key}: the price callable returned no offers")
        offers = tuple(x[0] for x in resolved)
        if self._supported is not None:
            self._check_offers(route, offers, self._supported, "the facilitator")
            offers = tuple(with_kind_extra(o, self._supported) for o in offers)
        return offers, tuple(x[1] for x in resolved)

    def static_priced(self, route: PaidRoute) -> Priced | None:
        """The route's offers and decimals when they do not depend on the request (None: priced per request)."""
        return self._static.get(next((i for i, r in enumerate(self.routes) if r is route), -1))

    def static_offers(self) -> list[tuple[PaidRoute, PaymentRequirements]]:
        return [(self.routes[i], o) for i, (offers, _) in sorted(self._static.items()) for o in offers]

    def check_supported(self, supported: SupportedResponse, facilitator: str = "the facilitator") -> None:
        """Refuse offers whose (scheme, network) the facilitator does not settle (checklist 8)."""
        self._supported = supported
        for i, (offers, decimals) in self._static.items():
            self._check_offers(self.routes[i], offers, supported, facilitator)
            self._static[i] = (tuple(with_kind_extra(o, supported) for o in offers), decimals)

    @staticmethod
    def _check_offers(route: PaidRoute, offers: Sequence[PaymentRequirements], supported: SupportedResponse,
                      facilitator: str) -> None:
        # a route is payable through the versions it takes; a v1 kind names its network the v1 way
        # ("base-sepolia"): compare it as CAIP-2
        kinds = [(k.scheme, to_caip2_or_none(k.network) or k.network, k)
                 for k in supported.kinds if k.x402_version in route.x402_versions]
        for o in offers:
            if not any(scheme == o.scheme and matches_pattern(o.network, network) for scheme, network, _ in kinds):
                labels = {(-k.x402_version, f"{k.scheme} on {k.network}" + ("" if k.x402_version > 1 else " (x402 v1)"))
                          for k in supported.kinds}
                have = ", ".join(label for _, label in sorted(labels)) or "nothing"
                raise ConfigError(
                    f"route {route.key} offers {o.scheme} on {o.network}, but {facilitator} supports only: {have}."
                    f" Change the route's network/scheme to one of those, or use a facilitator that settles "
                    f"{o.scheme} on {o.network}")

    def binds_body(self, req: RequestInfo) -> bool:
        """Whether the adapter should read this request's body first: an MPP route, and a body is announced."""
        if self.mpp is None or not req.may_have_body:
            return False
        route = self.route_for_request(req)
        return route is not None and bool(route.mpp)

    # -- the decision --------------------------------------------------------------------------
    @staticmethod
    def x402_header(route: PaidRoute, req: RequestInfo) -> str | None:
        """The request's x402 payment header the route takes (``PAYMENT-SIGNATURE`` v2, ``X-PAYMENT`` v1)."""
        raw = req.header(PAYMENT_SIGNATURE) if 2 in route.x402_versions else None
        if raw is None and 1 in route.x402_versions:
            raw = req.header(X_PAYMENT)
        return raw

    def decide(self, req: RequestInfo, priced: Priced | None = None) -> Decision:
        """The x402 decision for one request (``priced``: the route's offers when the caller already has them).

        Other protocols' credentials (MPP, L402) are parsed by ``paywire.server.protocols`` before this runs."""
        route = self.route_for_request(req)
        if req.method == "OPTIONS":
            return self.preflight(req) if route is not None else Pass()
        if route is None:
            return Pass()
        offers, decimals = priced if priced is not None else self.offers_for(route, req)
        raw = self.x402_header(route, req)
        if req.method == "HEAD":
            err = "HEAD is never charged: send GET with the payment" if raw is not None else None
            r = self.payment_required(route, req, offers, err)
            return Reply(r.status, r.headers, b"")
        if raw is None:
            if route.paywall and req.is_browser and 2 in route.x402_versions and offers:
                return self.paywall(route, req, offers, decimals)
            return self.payment_required(route, req, offers)
        try:
            payload = decode_payment_signature(raw)
        except WireError as exc:  # checklist 10: never verified, never settled
            return self.payment_required(route, req, offers, f"invalid payment header: {exc}")
        if isinstance(payload, PaymentPayloadV1):
            if 1 not in route.x402_versions:
                return self.payment_required(route, req, offers, "x402 v1 payments are not accepted here")
            resource = self.resource(route, req)
            m1 = find_matching_v1([requirements_v2_to_v1(o, resource) for o in offers], payload)
            if m1 is None:
                return self.payment_required(route, req, offers, "No matching payment requirements")
            i = next(j for j, o in enumerate(offers) if requirements_v2_to_v1(o, resource) == m1)
            key, payer = identity_and_payer(offers[i], payload)
            return Proceed(route, payload, m1, offers[i], True, key, payment_hash(payload), None, offers, decimals[i],
                           req.url, payer=payer)
        if 2 not in route.x402_versions:
            return self.payment_required(route, req, offers, "x402 v2 payments are not accepted here")
        m = find_matching_requirements(offers, payload.accepted)
        if m is None:  # checklist 11
            return self.payment_required(route, req, offers, "No matching payment requirements")
        pid, pid_error = payment_identifier(payload)
        if pid_error is not None:
            return json_reply(400, {"error": "invalid_payment_identifier", "message": pid_error})
        if pid is None and route.payment_identifier == "required":  # checklist 23
            return json_reply(400, {"error": "payment_identifier_required",
                                    "message": "this route requires extensions['payment-identifier'].info.id"})
        i = offers.index(m)
        key, payer = identity_and_payer(m, payload)
        return Proceed(route, payload, m, m, False, key, payment_hash(payload), pid, offers, decimals[i], req.url,
                       payer=payer)

    # -- responses -----------------------------------------------------------------------------
    def resource(self, route: PaidRoute, req: RequestInfo) -> ResourceInfo:
        return ResourceInfo(url=resource_url(route, req), description=route.description, mime_type=route.mime_type)

    def extensions(self, route: PaidRoute, req: RequestInfo | None = None,
                   offers: Sequence[PaymentRequirements] = ()) -> dict[str, Any] | None:
        out: dict[str, Any] = {}
        if route.payment_identifier:
            out[PAYMENT_IDENTIFIER] = {"info": {"required": route.payment_identifier == "required"},
                                       "schema": PAYMENT_IDENTIFIER_SCHEMA}
        if route.discovery:
            from paywire.x402.bazaar import BAZAAR, route_discovery

            out[BAZAAR] = route_discovery(route, req.method if req is not None else None)
        if route.signs_in and self.siwx is not None and req is not None:  # a fresh nonce per 402
            out[SIGN_IN_WITH_X] = self.siwx.declaration(self.resource(route, req).url,
                                                        route.sign_in_networks(offers), self.clock())
        if self.offer_signer is not None and req is not None and offers:
            from paywire.identity.offers import OFFER_RECEIPT

            out[OFFER_RECEIPT] = self.offer_signer.offers_extension(self.resource(route, req).url, offers, self.clock())
        if self._supported is not None and any(o.scheme == "upto" or o.extra.get("assetTransferMethod") == "permit2"
                                               for o in offers):  # Permit2 offers: approvals the facilitator sponsors
            if EIP2612_GAS_SPONSORING in self._supported.extensions:
                out[EIP2612_GAS_SPONSORING] = EIP2612_DECLARATION  # it sends the payer's permit with the settle
            if ERC20_APPROVAL_GAS_SPONSORING in self._supported.extensions:
                out[ERC20_APPROVAL_GAS_SPONSORING] = ERC20_APPROVAL_DECLARATION  # it funds and relays the approval
        return out or None

    def challenge(self, route: PaidRoute, req: RequestInfo, offers: Sequence[PaymentRequirements],
                  error: str | None = None) -> PaymentRequired:
        return PaymentRequired(x402_version=2, accepts=tuple(offers), resource=self.resource(route, req),
                               error=error or "Payment required", extensions=self.extensions(route, req, offers))

    def payment_required(self, route: PaidRoute, req: RequestInfo, offers: Sequence[PaymentRequirements],
                         error: str | None = None, extra_headers: Headers = ()) -> Reply:
        """402 with ``PAYMENT-REQUIRED`` (v2) and a v1 JSON body, so both generations can pay (checklist 1, 92).

        The plain challenge of a route with static offers depends only on the URL: it is built once per URL."""
        key: tuple[int, str] | None = None
        if error is None and not extra_headers and self.offer_signer is None:
            idx = next((i for i, r in enumerate(self.routes) if r is route), -1)
            static = self._static.get(idx)
            if static is not None and static[0] is offers:
                key = (idx, f"{req.method} {req.url}" if route.discovery else req.url)  # bazaar names the method
                if route.signs_in:
                    # the body has no nonce; a route without x402 offers has no PAYMENT-REQUIRED to splice into
                    if self.siwx is not None and offers and set(route.x402_versions) == {1, 2}:
                        return self._sign_in_challenge(route, req, offers, key)
                    key = None
                else:
                    hit = self._challenges.get(key)
                    if hit is not None:
                        return hit
        reply = self._payment_required(route, req, offers, error, extra_headers)
        if key is not None:
            if len(self._challenges) >= 1024:
                self._challenges.clear()
            self._challenges[key] = reply
        return reply

    def _sign_in_challenge(self, route: PaidRoute, req: RequestInfo, offers: Sequence[PaymentRequirements],
                           key: tuple[int, str]) -> Reply:
        """The 402 of a sign-in route: built once per URL as JSON text with stand-ins for the challenge's nonce
        and times (unguessable per template); each 402 fills in fresh ones and encodes the header."""
        assert self.siwx is not None
        hit = self._sign_in_templates.get(key)
        if hit is None:
            url = resource_url(route, req)
            reply = self._payment_required(route, req, offers, None, ())
            wire = self.challenge(route, req, offers).to_wire()
            decl = self.siwx.declaration(url, route.sign_in_networks(offers), self.clock())
            marks = (os.urandom(16).hex(), os.urandom(12).hex(), os.urandom(12).hex())  # as long as the values
            decl["info"] = {**decl["info"], "nonce": marks[0], "issuedAt": marks[1], "expirationTime": marks[2]}
            raw = encode_json({**wire, "extensions": {**(wire.get("extensions") or {}), SIGN_IN_WITH_X: decl}})
            at = next(i for i, (k, _) in enumerate(reply.headers) if k == PAYMENT_REQUIRED)
            if len(self._sign_in_templates) >= 1024:
                self._sign_in_templates.clear()
            hit = self._sign_in_templates[key] = (reply.headers[:at], reply.headers[at + 1:], reply.body,
                                                  SplicedHeader(raw, [m.encode() for m in marks]), url)
        before, after, body, spliced, url = hit
        return Reply(402, (*before, (PAYMENT_REQUIRED, spliced.render(self.siwx.fresh(url, self.clock()))), *after),
                     body)

    def _payment_required(self, route: PaidRoute, req: RequestInfo, offers: Sequence[PaymentRequirements],
                          error: str | None, extra_headers: Headers) -> Reply:
        pr = self.challenge(route, req, offers, error)
        headers: list[tuple[str, str]] = []
        if not offers:  # a Lightning-only route: the flow adds its WWW-Authenticate challenges
            body0 = {"error": error or "Payment required"}
            return Reply(402, (("content-type", "application/json"), ("cache-control", "no-store"),
                               *extra_headers), json.dumps(body0, separators=(",", ":")).encode())
        if 2 in route.x402_versions:
            headers.append((PAYMENT_REQUIRED, encode_header(pr.to_wire())))
        if 1 in route.x402_versions:
            resource = self.resource(route, req)
            body: dict[str, Any] = {
                "x402Version": 1,
                "error": error or "X-PAYMENT header is required",
                "accepts": [requirements_v2_to_v1(o, resource).to_wire() for o in offers],
            }
        else:
            body = pr.to_wire()
        headers += [("content-type", "application/json"), ("cache-control", "no-store"),
                    ("access-control-expose-headers", EXPOSED_HEADERS), *extra_headers]
        return Reply(402, tuple(headers), json.dumps(body, separators=(",", ":")).encode())

    def paywall(self, route: PaidRoute, req: RequestInfo, offers: Sequence[PaymentRequirements],
                decimals: Sequence[int]) -> Reply:
        """The browser paywall (checklist 20): our self-contained page, 402, ``PAYMENT-REQUIRED`` too."""
        from paywire.server.paywall import render_paywall

        pr = self.challenge(route, req, offers)
        html = render_paywall(pr, app_name=self.app_name, decimals=decimals[0] if decimals else 6,
                              template=self.paywall_html)
        return Reply(402, ((PAYMENT_REQUIRED, encode_header(pr.to_wire())),
                           ("content-type", "text/html; charset=utf-8"), ("cache-control", "no-store"),
                           ("access-control-expose-headers", EXPOSED_HEADERS)), html.encode())

    def preflight(self, req: RequestInfo) -> Reply:
        """CORS preflight for a paid route: allow the payment headers (checklist 21)."""
        asked = req.header("access-control-request-headers") or ""
        allow = ALLOWED_REQUEST_HEADERS + (f", {asked}" if asked else "")
        headers: list[tuple[str, str]] = [
            ("access-control-allow-methods", "GET, POST, PUT, PATCH, DELETE, HEAD, OPTIONS"),
            ("access-control-allow-headers", allow),
            ("access-control-expose-headers", EXPOSED_HEADERS),
            ("access-control-max-age", "600"),
            ("vary", "Origin"),
        ]
        origin = self.allow_origin(req)
        if origin:
            headers.insert(0, ("access-control-allow-origin", origin))
        return Reply(204, tuple(headers), b"")

    def allow_origin(self, req: RequestInfo) -> str | None:
        if self.cors_origin is None or req.header("origin") is None:
            return None
        return self.cors_origin

    def with_receipt(self, res: SettleResponse, route: PaidRoute, req: RequestInfo) -> SettleResponse:
        """``res`` with the seller's signed receipt (``extensions["offer-receipt"]``) when it signs receipts; the
        ledger keeps it, so a replay answers with the same receipt."""
        if self.offer_signer is None or not res.success or not res.payer:
            return res
        from paywire.identity.offers import OFFER_RECEIPT
        from paywire.x402.networks import to_caip2_or_none

        network = to_caip2_or_none(res.network) or res.network
        ext = self.offer_signer.receipt_extension(self.resource(route, req).url, res.payer, network, self.clock(),
                                                  res.transaction if self.receipt_tx else None)
        return dataclasses.replace(res, extensions={**(res.extensions or {}), OFFER_RECEIPT: ext})

    @staticmethod
    def settlement_headers(res: SettleResponse, v1: bool) -> Headers:
        """``PAYMENT-RESPONSE`` (v2) or ``X-PAYMENT-RESPONSE`` (v1) (checklist 17, 94)."""
        name = X_PAYMENT_RESPONSE if v1 else PAYMENT_RESPONSE
        return ((name, encode_header(res.to_wire())), ("access-control-expose-headers", EXPOSED_HEADERS))

    def paid_headers(self, res: SettleResponse, v1: bool, app_headers: Sequence[tuple[str, str]]) -> Headers:
        """Headers of a released paid response: the app's, minus caching and stale payment headers, plus ours."""
        drop = {"cache-control", "access-control-expose-headers", PAYMENT_RESPONSE.lower(),
                X_PAYMENT_RESPONSE.lower(), "content-length"}
        no_store = any(k.lower() == "cache-control" and "no-store" in v.lower() for k, v in app_headers)
        kept = [(k, v) for k, v in app_headers if k.lower() not in drop]
        return (*kept, *self.settlement_headers(res, v1),
                ("cache-control", "private, no-store" if no_store else "private"))

    def settlement_failed(self, proceed: Proceed, req: RequestInfo, res: SettleResponse) -> Reply:
        """402 with the failed ``PAYMENT-RESPONSE``; the handler's output is not sent (checklist 18)."""
        reason = res.error_reason or "settlement_failed"
        return self.payment_required(proceed.route, req, proceed.offers, reason,
                                     self.settlement_headers(res, proceed.v1)[:1])

    @staticmethod
    def settlement_pending(res: SettleResponse | None, detail: str) -> Reply:
        """503 + ``Retry-After``: the settlement's outcome is unknown; retry with the same payment."""
        headers: Headers = (("retry-after", "2"),)
        if res is not None:
            headers += ((PAYMENT_RESPONSE, encode_header(res.to_wire())),)
        return json_reply(503, {"error": "settlement_pending", "message": detail,
                                "retry": "send the same request with the same payment header"}, headers)

    @staticmethod
    def in_progress() -> Reply:
        return json_reply(503, {"error": "payment_in_progress",
                                "message": "this payment is being processed; retry with the same payment"},
                          (("retry-after", "1"),))

    @staticmethod
    def conflict(message: str, error: str = "payment_conflict") -> Reply:
        return json_reply(409, {"error": error, "message": message})

    @staticmethod
    def handler_failed() -> Reply:
        return json_reply(500, {"error": "handler_failed", "message": "the handler failed; you were not charged"})

    @staticmethod
    def response_too_large(limit: int) -> Reply:
        return json_reply(500, {"error": "response_too_large",
                                "message": f"the response exceeds {limit} bytes, more than this route holds until "
                                           "payment settles; you were not charged"})


def merge_headers(app_headers: Sequence[tuple[str, str]], ours: Sequence[tuple[str, str]]) -> list[tuple[str, str]]:
    """The app's headers with ours replacing any of the same name (a no-store cache policy is kept)."""
    names = {k.lower() for k, _ in ours}
    no_store = any(k.lower() == "cache-control" and "no-store" in v.lower() for k, v in app_headers)
    out = [(k, v) for k, v in app_headers if k.lower() not in names]
    for k, v in ours:
        out.append((k, "private, no-store" if no_store and k.lower() == "cache-control" and v == "private" else v))
    return out


def decimals_display(amount: int, decimals: int) -> str:
    """``10000, 6`` → ``"0.01"``."""
    text = format(Decimal(amount).scaleb(-decimals), "f")
    return (text.rstrip("0").rstrip(".") if "." in text else text) or "0"


__all__ = [
    "ALLOWED_REQUEST_HEADERS",
    "DEFAULT_CHALLENGE_ORDER",
    "EXPOSED_HEADERS",
    "Decision",
    "Offer",
    "PaidRoute",
    "Pass",
    "Priced",
    "Proceed",
    "Reply",
    "RequestInfo",
    "Seller",
    "SettleMode",
    "authorization_identity",
    "payment_hash",
    "payment_identifier",
    "resource_url",
]
