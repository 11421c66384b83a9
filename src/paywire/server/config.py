"""The seller's options, typed: :class:`SellerConfig`, one object for the payment middleware (ASGI, WSGI,
FastAPI ``install``), built into a flow in one place (:func:`paywire.server.setup.build_flow`).

    config = SellerConfig(pay_to="0x…", network="eip155:8453", settle_timeout=30)
    app = PaymentMiddleware(app, routes, "https://facilitator.example", config=config)
    app = PaymentMiddleware(app, routes, "https://facilitator.example", pay_to="0x…")   # the same, as keywords
    config = SellerConfig.load("paywire.toml")   # [seller] table < $PAYWIRE_SELLER_* < keywords

TOML ``[seller]`` and ``PAYWIRE_SELLER_<OPTION>`` take the options that are text, numbers or flags
(``facilitator`` as a URL, ``store`` as a URL); ``assets`` and ``lightning`` are objects, code only.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, Literal, TypedDict

from paywire.settings import Settings, between, non_negative, option, positive

if TYPE_CHECKING:
    from paywire.evm.assets import AssetRegistry
    from paywire.facilitator.client import FacilitatorClient
    from paywire.lightning.base import LightningBackend
    from paywire.store.payments import PaymentStore

__all__ = ["SellerConfig", "SellerOptions"]

NonceVariant = Literal["concat", "json"]


def _facilitator_like(value: Any) -> str | None:
    if isinstance(value, str):
        return None if value.startswith(("http://", "https://")) else "expected an http(s) URL"
    if all(hasattr(value, m) for m in ("verify", "settle", "supported")):
        return None
    return "expected a URL or a FacilitatorClient (verify, settle, supported)"


def _chains_like(value: Any) -> str | None:
    from paywire.server.chains import chains_problem

    return chains_problem(value)


def _store_like(value: Any) -> str | None:
    if isinstance(value, str) or hasattr(value, "claim"):
        return None
    return "expected a store URL or a PaymentStore"


@dataclass(frozen=True, slots=True)
class SellerConfig(Settings):
    """Every seller option (see docs/seller.md, "Options reference")."""

    ROLE: ClassVar[str] = "seller"

    facilitator: FacilitatorClient | str | None = option(None, check=_facilitator_like)
    """A ``FacilitatorClient`` (``LocalFacilitatorClient`` = self-facilitating) or a facilitator URL."""
    facilitator_token: str | None = option(None, secret=True)
    """Bearer token for a facilitator given as a URL."""
    pay_to: str | None = None
    """Default payee for money prices."""
    network: str | None = None
    """Default CAIP-2 network for money prices."""
    assets: AssetRegistry | None = option(None, env=False, toml=False)
    """Assets money prices may use (default: the known USDC deployments)."""
    store: PaymentStore | str | None = option(None, check=_store_like)
    """The ledger: a URL or ``PaymentStore`` (default ``$PAYWIRE_STORE`` or ``sqlite:///paywire.db``)."""
    app_name: str = ""
    cors_origin: str | None = "*"
    paywall_html: str | None = None
    check_supported: bool = True
    """At startup, compare the offers with the facilitator's ``/supported``."""
    verify_timeout: float = option(30.0, check=positive, duration=True)
    settle_timeout: float = option(60.0, check=positive, duration=True)
    replay_wait: float = option(30.0, check=non_negative, duration=True)
    """How long a concurrent copy of a payment waits for the first one's outcome (then 503 "in progress")."""
    lease: float = option(30.0, check=positive, duration=True)
    """How long a claim survives its owner's death (renewed while alive)."""
    max_record_bytes: int = option(4 * 1024 * 1024, check=non_negative)
    """Largest response held for settle="after" and recorded for replays."""
    max_handler_seconds: float = option(3600.0, check=positive, duration=True)
    mpp_realm: str | None = None
    """MPP: the realm (the same on every replica); needs ``mpp_secret``."""
    mpp_secret: bytes | str | tuple[bytes | str, ...] | None = option(None, secret=True)
    """MPP: 32+ bytes; a list rotates (the first signs, all verify)."""
    mpp_ttl: int = option(300, check=positive, duration=True)
    mpp_nonce_variants: tuple[NonceVariant, ...] | None = None
    """MPP ``evm/charge``: the EIP-3009 nonce derivations accepted (default both)."""
    mpp_max_body: int = option(1024 * 1024, check=non_negative)
    """MPP routes bind request bodies up to this size through the challenge ``digest``."""
    lightning: LightningBackend | None = option(None, env=False, toml=False)
    """The node that issues invoices for ``mpp=("lightning",)`` and ``l402`` routes."""
    confirm_with_node: bool = False
    invoice_expiry: int = option(600, check=positive, duration=True)
    l402_reject_status: int = option(401, check=between(400, 499))
    risk: Any = option(None, env=False, toml=False)
    """Risk checkpoints: ``True`` (the default rules, counters in this process), a ``RiskEngine`` or a
    ``SellerRisk`` (docs/risk.md)."""
    risk_rules: str | None = None
    """A risk rule file (TOML); setting it turns risk on."""
    risk_trust_forwarded: bool = False
    """Risk: take the client IP from ``X-Forwarded-For`` (only behind a proxy that sets it)."""
    risk_metrics_token: str | None = option(None, secret=True)
    """Risk: serve Prometheus counters at ``/metrics`` to ``Authorization: Bearer <token>`` (unset: no route)."""
    siwx_secret: bytes | str | None = option(None, secret=True)
    """Sign-In-With-X: the key of the stateless nonce MAC (the same on every replica; random per process if unset)."""
    siwx_origin: str | None = None
    """Sign-In-With-X: the public origin challenges name (``https://api.example.com``; default: the request's)."""
    siwx_chains: Any = option(None, env=False, toml=False)
    """Sign-In-With-X: ``{network: Chain}`` to check contract wallets (EIP-1271); default: ``chains``; without
    either only EOAs sign in."""
    chains: Any = option(None, check=_chains_like)
    """Read-only chain access, ``{network: JSON-RPC URL or Chain}`` (TOML ``[seller.chains]``, env
    ``eip155:8453=https://…,…``): reconciling finds there a settlement its facilitator cannot account for
    (:mod:`paywire.server.chains`)."""
    offer_signer: Any = option(None, env=False, toml=False)
    """Signed offers and receipts (x402 ``offer-receipt``): an :class:`~paywire.identity.offers.ArtifactSigner`."""
    receipt_tx: bool = False
    """Signed receipts name the settlement's transaction (verifiable on chain; less private)."""
    agent_directories_private: bool = False
    """Agent signatures: let agents' key directories be on private/loopback addresses and plain http (dev only)."""
    channel_claims: bool = True
    """``batch-settlement``: run the claim manager with the seller (from startup when a route offers the scheme,
    else from the first channel payment; stopped with it). False: run ``ClaimManager`` yourself."""
    claim_interval: float = option(60.0, check=positive, duration=True)
    """Claim manager: claim and sweep every this many seconds."""
    claim_threshold: int | None = option(None, check=non_negative)
    """Claim manager: claim sooner once this many atomic units wait unclaimed."""
    audit: str | None = None
    """This replica's name in the audit log (e.g. ``seller-eu1-7``): queue an audit event with every ledger change
    (docs/audit.md). None (default): no audit events."""


class SellerOptions(TypedDict, total=False):
    """:class:`SellerConfig`'s options as keyword arguments (``PaymentMiddleware(..., pay_to=…)``)."""

    facilitator_token: str | None
    pay_to: str | None
    network: str | None
    assets: AssetRegistry | None
    store: PaymentStore | str | None
    app_name: str
    cors_origin: str | None
    paywall_html: str | None
    check_supported: bool
    verify_timeout: float
    settle_timeout: float
    replay_wait: float
    lease: float
    max_record_bytes: int
    max_handler_seconds: float
    mpp_realm: str | None
    mpp_secret: bytes | str | list[bytes | str] | tuple[bytes | str, ...] | None
    mpp_ttl: int
    mpp_nonce_variants: list[str] | tuple[str, ...] | None
    mpp_max_body: int
    lightning: LightningBackend | None
    confirm_with_node: bool
    invoice_expiry: int
    l402_reject_status: int
    risk: Any
    risk_rules: str | None
    risk_trust_forwarded: bool
    risk_metrics_token: str | None
    siwx_secret: bytes | str | None
    siwx_origin: str | None
    siwx_chains: Any
    chains: Any
    offer_signer: Any
    receipt_tx: bool
    agent_directories_private: bool
    channel_claims: bool
    claim_interval: float
    claim_threshold: int | None
    audit: str | None
