"""Building a :class:`PaymentFlow` from the keyword arguments every adapter takes (one place, one meaning)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from paywire.evm.assets import AssetRegistry
from paywire.facilitator.client import FacilitatorClient
from paywire.server.core import PaidRoute, Seller
from paywire.server.flow import PaymentFlow
from paywire.server.remote import RemoteFacilitator
from paywire.store.payments import PaymentStore

RoutesArg = Sequence[PaidRoute] | Callable[[], Sequence[PaidRoute]]
FacilitatorArg = FacilitatorClient | str

_FLOW_OPTIONS = ("verify_timeout", "settle_timeout", "replay_wait", "lease", "max_record_bytes", "check_supported",
                 "max_handler_seconds", "lightning", "confirm_with_node", "invoice_expiry", "l402_reject_status")


def as_facilitator(facilitator: FacilitatorArg) -> FacilitatorClient:
    """A facilitator client; a URL string means a remote facilitator over HTTP (:class:`RemoteFacilitator`)."""
    return RemoteFacilitator(facilitator) if isinstance(facilitator, str) else facilitator


def make_flow(routes: Sequence[PaidRoute], facilitator: FacilitatorArg, *, pay_to: str | None = None,
              network: str | None = None, assets: AssetRegistry | None = None,
              store: PaymentStore | str | None = None, app_name: str = "", cors_origin: str | None = "*",
              paywall_html: str | None = None, mpp_realm: str | None = None,
              mpp_secret: bytes | str | Sequence[bytes | str] | None = None, mpp_ttl: int = 300,
              mpp_nonce_variants: Sequence[str] | None = None, mpp_max_body: int = 1024 * 1024,
              **options: Any) -> PaymentFlow:
    """Seller (offers resolved now: a bad price raises ``ConfigError`` here) + store + facilitator.

    MPP routes need ``mpp_realm`` (the same on every replica) and ``mpp_secret`` (32+ bytes; a list rotates:
    the first signs, all verify). Request bodies up to ``mpp_max_body`` bytes on MPP routes are bound into the
    challenge ``digest``. Lightning routes (``mpp`` lightning, ``l402``) need ``lightning=<backend>``.
    """
    unknown = set(options) - set(_FLOW_OPTIONS)
    if unknown:
        raise TypeError(f"unknown option(s): {', '.join(sorted(unknown))}")
    mpp = None
    if mpp_secret is not None or mpp_realm is not None:
        from paywire.errors import ConfigError
        from paywire.mpp.challenge import ChallengeBinder
        from paywire.mpp.server import MppServer

        if not mpp_secret or not mpp_realm:
            raise ConfigError("MPP needs both mpp_realm='api.example.com' and mpp_secret=<32+ random bytes>")
        secrets = [mpp_secret] if isinstance(mpp_secret, bytes | str) else list(mpp_secret)
        try:
            mpp = MppServer(mpp_realm, ChallengeBinder([x.encode() if isinstance(x, str) else x for x in secrets]),
                            default_ttl=mpp_ttl)
        except ValueError as exc:
            raise ConfigError(f"MPP: {exc}") from None
    seller = Seller(tuple(routes), pay_to=pay_to, network=network, assets=assets or AssetRegistry(),
                    app_name=app_name, cors_origin=cors_origin, paywall_html=paywall_html, mpp=mpp,
                    mpp_nonce_variants=tuple(mpp_nonce_variants) if mpp_nonce_variants else None,
                    mpp_max_body=mpp_max_body)
    return PaymentFlow(seller, as_facilitator(facilitator), store, owns_facilitator=isinstance(facilitator, str),
                       **options)


class LazyFlow:
    """Holds the arguments until the routes can be listed (a FastAPI app's routes exist only after import)."""

    def __init__(self, routes: RoutesArg, facilitator: FacilitatorArg | None, flow: PaymentFlow | None,
                 options: dict[str, Any]) -> None:
        if flow is None and facilitator is None:
            raise TypeError("give a facilitator (client or URL) or a ready PaymentFlow")
        self._routes, self._facilitator, self._options = routes, facilitator, options
        self._flow = flow
        if flow is None and not callable(routes):
            self._flow = make_flow(routes, facilitator or "", **options)

    @property
    def flow(self) -> PaymentFlow:
        if self._flow is None:
            routes = self._routes() if callable(self._routes) else self._routes
            self._flow = make_flow(routes, self._facilitator or "", **self._options)
        return self._flow
