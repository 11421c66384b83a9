"""FastAPI: prices declared on the endpoints themselves, as a decorator or as a dependency.

    app = FastAPI()
    install(app, "http://127.0.0.1:4020", pay_to="0x…", network="eip155:84532")

    @app.get("/weather")
    @paid("$0.01", description="Current weather")
    async def weather(): ...

    @app.get("/report")
    async def report(payment: PaymentInfo = Depends(charge("$0.05", settle="before"))):
        return {"payer": payment.payer}

``install`` adds the ASGI :class:`~paywire.server.asgi.PaymentMiddleware`; it lists the priced endpoints when
the app starts. The dependency fails closed: without the middleware the endpoint answers 500, never for free.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, TypeVar, Unpack

from paywire.server.config import SellerConfig, SellerOptions
from paywire.server.core import PaidRoute
from paywire.server.flow import PaymentInfo
from paywire.server.setup import FacilitatorArg, seller_config

F = TypeVar("F", bound=Callable[..., Any])
MARK = "__paywire_route__"


def paid(price: Any = None, **route: Any) -> Callable[[F], F]:
    """Decorator (under ``@app.get(...)``): charge ``price`` for this endpoint. Keyword arguments are
    :class:`PaidRoute` fields (``offers``, ``description``, ``settle``, ``payment_identifier`` …)."""

    def mark(fn: F) -> F:
        setattr(fn, MARK, {"price": price, **route})
        return fn

    return mark


def charge(price: Any = None, **route: Any) -> Callable[..., PaymentInfo]:
    """A dependency that prices the endpoint and hands it the verified :class:`PaymentInfo`."""
    from fastapi import HTTPException, Request

    def payment(request: Request) -> PaymentInfo:
        info = request.scope.get("paywire.payment")
        if not isinstance(info, PaymentInfo):  # fail closed: never serve a priced endpoint unpaid
            raise HTTPException(500, "paywire payment middleware is not installed for this app")
        return info

    payment.__annotations__ = {"request": Request, "return": PaymentInfo}  # real types for FastAPI's resolver

    setattr(payment, MARK, {"price": price, **route})
    return payment


def _marks(route: Any) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = []
    endpoint = getattr(route, "endpoint", None)
    if endpoint is not None and hasattr(endpoint, MARK):
        found.append(getattr(endpoint, MARK))
    stack = list(getattr(getattr(route, "dependant", None), "dependencies", []) or [])
    while stack:
        dep = stack.pop()
        call = getattr(dep, "call", None)
        if call is not None and hasattr(call, MARK):
            found.append(getattr(call, MARK))
        stack.extend(getattr(dep, "dependencies", []) or [])
    return found


def routes_of(app: Any) -> list[PaidRoute]:
    """The priced endpoints of a FastAPI (or Starlette) app, as :class:`PaidRoute` objects."""
    out: list[PaidRoute] = []
    for r in getattr(app, "routes", []):
        marks = _marks(r)
        if not marks:
            continue
        if len(marks) > 1:
            from paywire.errors import ConfigError

            raise ConfigError(f"endpoint {getattr(r, 'path', '?')} is priced twice: keep one @paid/charge")
        spec = dict(marks[0])
        methods = ",".join(sorted(m for m in (getattr(r, "methods", None) or {"GET"}) if m != "HEAD")) or "*"
        price = spec.pop("price", None)
        out.append(PaidRoute(path=str(getattr(r, "path_format", None) or r.path), method=methods, price=price,
                             **spec))
    return out


def install(app: Any, facilitator: FacilitatorArg | None = None, *, routes: Sequence[PaidRoute] = (),
            config: SellerConfig | None = None, **options: Unpack[SellerOptions]) -> None:
    """Add the payment middleware to ``app``: its ``@paid``/``charge`` endpoints plus ``routes``. Options: a
    :class:`~paywire.server.config.SellerConfig` and/or its fields as keywords, checked now."""
    from paywire.server.asgi import PaymentMiddleware

    cfg = seller_config(config, facilitator, options)
    if cfg.facilitator is None:
        raise TypeError("give a facilitator (client or URL)")
    app.add_middleware(PaymentMiddleware, routes=lambda: [*routes, *routes_of(app)], config=cfg)


__all__ = ["PaymentInfo", "charge", "install", "paid", "routes_of"]
