"""Building a :class:`PaymentFlow` from one :class:`~paywire.server.config.SellerConfig` (one place, one
meaning): the seller (routes and offers), the facilitator client and the flow (store, timeouts, Lightning)."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from paywire.errors import ConfigError
from paywire.evm.assets import AssetRegistry
from paywire.facilitator.client import FacilitatorClient, HttpFacilitatorClient
from paywire.server.config import SellerConfig
from paywire.server.core import PaidRoute, Seller
from paywire.server.flow import PaymentFlow

RoutesArg = Sequence[PaidRoute] | Callable[[], Sequence[PaidRoute]]
FacilitatorArg = FacilitatorClient | str


def as_facilitator(facilitator: FacilitatorArg, bearer_token: str | None = None) -> FacilitatorClient:
    """A facilitator client; a URL string means a remote facilitator over HTTP (:class:`HttpFacilitatorClient`)."""
    if isinstance(facilitator, str):
        return HttpFacilitatorClient(facilitator, bearer_token=bearer_token, timeout=30.0)
    if bearer_token is not None:
        raise ConfigError("seller option facilitator_token: only for a facilitator given as a URL "
                          "(give the client its token instead)")
    return facilitator


def seller_config(config: SellerConfig | None = None, facilitator: FacilitatorArg | None = None,
                  options: Mapping[str, Any] | None = None) -> SellerConfig:
    """``config`` (or the defaults) with the keyword ``options`` and a ``facilitator`` argument on top; every
    option checked (``ConfigError`` names the option; an unknown name is ``UnknownOption``)."""
    changes = dict(options or {})
    if facilitator is not None:
        changes["facilitator"] = facilitator
    base = config if config is not None else SellerConfig()
    return base.replace(**changes) if changes else base


def _mpp_server(config: SellerConfig) -> Any:
    if config.mpp_secret is None and config.mpp_realm is None:
        return None
    from paywire.mpp.challenge import ChallengeBinder
    from paywire.mpp.server import MppServer

    if not config.mpp_secret or not config.mpp_realm:
        raise ConfigError("MPP needs both mpp_realm='api.example.com' and mpp_secret=<32+ random bytes>")
    secret = config.mpp_secret
    secrets = [secret] if isinstance(secret, bytes | str) else list(secret)
    try:
        return MppServer(config.mpp_realm, ChallengeBinder([x.encode() if isinstance(x, str) else x
                                                            for x in secrets]), default_ttl=config.mpp_ttl)
    except ValueError as exc:
        raise ConfigError(f"MPP: {exc}") from None


def _seller_risk(config: SellerConfig) -> Any:
    """The flow's risk checkpoints from ``risk`` / ``risk_rules`` (``None``: risk is off)."""
    if (config.risk is None or config.risk is False) and config.risk_rules is None:
        return None
    from paywire.risk.engine import RiskEngine
    from paywire.risk.seller import SellerRisk

    risk = config.risk
    if isinstance(risk, SellerRisk):
        if config.risk_metrics_token is not None and risk.metrics_token is None:
            risk.metrics_token = config.risk_metrics_token
        return risk
    if risk is None or risk is True:
        risk = RiskEngine(config.risk_rules)
    if not isinstance(risk, RiskEngine):
        raise ConfigError("seller option risk: expected True, a RiskEngine or a SellerRisk")
    return SellerRisk(risk, trust_forwarded=config.risk_trust_forwarded, metrics_token=config.risk_metrics_token)


def _siwx_issuer(routes: Sequence[PaidRoute], config: SellerConfig) -> Any:
    if not any(r.signs_in for r in routes):
        return None
    from paywire.identity.siwx import SiwxIssuer

    return SiwxIssuer(config.siwx_secret, origin=config.siwx_origin)


def build_flow(routes: Sequence[PaidRoute], config: SellerConfig) -> PaymentFlow:
    """Seller (offers resolved now: a bad price raises ``ConfigError`` here) + store + facilitator.

    MPP routes need ``mpp_realm`` (the same on every replica) and ``mpp_secret`` (32+ bytes; a list rotates:
    the first signs, all verify). Request bodies up to ``mpp_max_body`` bytes on MPP routes are bound into the
    challenge ``digest``. Lightning routes (``mpp`` lightning, ``l402``) need ``lightning=<backend>``.
    """
    c, facilitator = config, config.facilitator
    if facilitator is None:
        raise TypeError("give a facilitator (client or URL) or a ready PaymentFlow")
    seller = Seller(tuple(routes), pay_to=c.pay_to, network=c.network, assets=c.assets or AssetRegistry(),
                    app_name=c.app_name, cors_origin=c.cors_origin, paywall_html=c.paywall_html,
                    mpp=_mpp_server(c), mpp_nonce_variants=c.mpp_nonce_variants or None,
                    mpp_max_body=c.mpp_max_body, siwx=_siwx_issuer(routes, c),
                    offer_signer=c.offer_signer, receipt_tx=c.receipt_tx)
    return PaymentFlow(seller, as_facilitator(facilitator, c.facilitator_token), c.store,
                       verify_timeout=c.verify_timeout, settle_timeout=c.settle_timeout, replay_wait=c.replay_wait,
                       lease=c.lease, max_record_bytes=c.max_record_bytes, check_supported=c.check_supported,
                       max_handler_seconds=c.max_handler_seconds, lightning=c.lightning,
                       confirm_with_node=c.confirm_with_node, invoice_expiry=c.invoice_expiry,
                       l402_reject_status=c.l402_reject_status, owns_facilitator=isinstance(facilitator, str),
                       risk=_seller_risk(c), agent_directories_private=c.agent_directories_private,
                       siwx_chains=c.siwx_chains, chains=c.chains, audit=c.audit,
                       channel_claims=c.channel_claims, claim_interval=c.claim_interval,
                       claim_threshold=c.claim_threshold)


def make_flow(routes: Sequence[PaidRoute], facilitator: FacilitatorArg, **options: Any) -> PaymentFlow:
    """:func:`build_flow` from keyword options (:class:`SellerConfig`'s names)."""
    return build_flow(routes, seller_config(None, facilitator, options))


class LazyFlow:
    """Holds the config until the routes can be listed (a FastAPI app's routes exist only after import)."""

    def __init__(self, routes: RoutesArg, config: SellerConfig, flow: PaymentFlow | None) -> None:
        if flow is None and config.facilitator is None:
            raise TypeError("give a facilitator (client or URL) or a ready PaymentFlow")
        self._routes, self.config = routes, config
        self._flow = flow
        if flow is None and not callable(routes):
            self._flow = build_flow(routes, config)

    @property
    def flow(self) -> PaymentFlow:
        if self._flow is None:
            routes = self._routes() if callable(self._routes) else self._routes
            self._flow = build_flow(routes, self.config)
        return self._flow
