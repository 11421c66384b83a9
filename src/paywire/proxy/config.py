"""``paywire proxy``'s configuration: one TOML file (``paywire.toml``) with a ``[proxy]`` table (upstream, listen
address, limits, identity key), its ``[[proxy.routes]]`` (what costs what) and the usual ``[seller]`` table
(facilitator, ``pay_to``, ``network``, store, MPP realm and secret …)::

    [proxy]
    upstream = "http://127.0.0.1:8000"
    listen = "127.0.0.1:4021"
    identity_secret_file = "/etc/paywire/identity.key"   # 32+ bytes; the upstream checks Paywire-Signature

    [[proxy.routes]]
    path = "GET /weather"
    price = "$0.01"

    [[proxy.routes]]
    path = "POST /jobs/*"
    price = "$0.50"
    settle = "before"        # settle first, then stream the upstream's answer

    [seller]
    facilitator = "https://facilitator.example"
    pay_to = "0x…"
    network = "eip155:8453"

Every option is also ``$PAYWIRE_PROXY_<OPTION>`` (routes only in the file). :func:`load_proxy` reads and checks it
all, and refuses an unsafe setup unless the file says so explicitly (:func:`unsafe_reasons`).
"""

from __future__ import annotations

import ipaddress
import os
import re
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Literal
from urllib.parse import urlsplit

from paywire.errors import ConfigError
from paywire.server.config import SellerConfig
from paywire.server.core import PaidRoute
from paywire.server.pricing import Offer
from paywire.server.request import RequestInfo
from paywire.settings import Settings, gather, non_negative, option, positive, read_toml, role_table

__all__ = ["LightningNode", "ProxyConfig", "ProxySetup", "load_proxy", "parse_lightning", "parse_routes",
           "unsafe_reasons"]

ROUTE_KEYS = frozenset({"path", "price", "asset", "network", "pay_to", "extra", "max_timeout_seconds", "settle",
                        "description", "mime_type", "payment_identifier", "mpp", "l402", "sats",
                        "discovery", "price_url", "price_header"})
PRICE_HEADER = "paywire-price"
"""Where the proxy puts a route's price from its ``price_url`` for the payment flow (never the client's)."""
MIN_SECRET = 32
_PRICE = re.compile(r"\d{1,30}|\$?\d{1,18}\.\d{1,12}|\$\d{1,18}")
_TOKEN = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]{1,64}")


def _http_url(value: Any) -> str | None:
    if not isinstance(value, str) or not value.startswith(("http://", "https://")):
        return "expected an http(s) URL"
    return None


def _listen(value: Any) -> str | None:
    host, sep, port = str(value).rpartition(":")
    return None if sep and host and port.isdigit() else "expected HOST:PORT (e.g. 127.0.0.1:4021; port 0 = any)"


@dataclass(frozen=True, slots=True)
class ProxyConfig(Settings):
    """The ``[proxy]`` table (see docs/proxy.md, "Options")."""

    ROLE: ClassVar[str] = "proxy"

    upstream: str = option("", check=_http_url)
    """The API being sold: requests are forwarded to this base URL (its path is prepended)."""
    listen: str = option("127.0.0.1:4021", check=_listen)
    unpriced: Literal["deny", "forward"] = "deny"
    """Paths no route prices: refused with 404 (default) or forwarded free."""
    identity_secret: str | None = option(None, secret=True)
    """HMAC key (32+ bytes) for the ``Paywire-*`` identity headers the upstream receives."""
    identity_secret_file: str | None = None
    """Read ``identity_secret`` from this file (first line) instead."""
    sign_identity: bool = True
    """False: forward no identity headers at all (then no secret is needed)."""
    allow_plain_http: bool = False
    """Allow ``http://`` to a non-loopback upstream or facilitator (payment data and identity in clear text)."""
    preserve_host: bool = False
    """Forward the client's ``Host`` instead of the upstream's."""
    connect_timeout: float = option(10.0, check=positive, duration=True)
    read_timeout: float = option(300.0, check=positive, duration=True)
    """Longest wait for the next bytes of the upstream's answer (an SSE stream may idle this long)."""
    write_timeout: float = option(300.0, check=positive, duration=True)
    max_body: int = option(1024 * 1024 * 1024, check=positive)
    """Largest request body forwarded (bytes; a larger ``Content-Length`` is refused with 413 before payment)."""
    upstream_client: Literal["h11", "httpx"] = "h11"
    """The HTTP client for the upstream: ``h11`` is paywire's own (answers parsed by httptools; the name is historical),
    or ``httpx``; both stream (bench/proxy.py measures them)."""
    max_connections: int = option(256, check=positive)
    """Open connections to the upstream at most (more requests wait for one)."""
    openapi_path: str = "/openapi.json"
    """The MPP discovery document (OpenAPI with ``x-payment-info``) when a route offers MPP; "" = never."""
    title: str = "paid API"
    """The service's name in the discovery document."""
    health_path: str = "/healthz"
    metrics_path: str = "/metrics"
    """"" serves no metrics at all."""
    metrics_token: str | None = option(None, secret=True)
    """Bearer token (16+ bytes) that ``/metrics`` requires; without one, ``/metrics`` answers loopback clients
    only (403 to anyone else)."""
    metrics_token_file: str | None = None
    """Read ``metrics_token`` from this file (first line) instead."""
    drain_timeout: float = option(600.0, check=positive, duration=True)
    """After a reload, how long the old configuration may finish its requests before it is closed anyway."""
    reconcile_interval: float = option(60.0, check=non_negative, duration=True)
    """Every this often, settle again what a stopped process left open: unresolved settlements, and ``settling``
    rows whose owner's lease ran out (``PaymentFlow.reconcile_pending``); 0 = never (run it yourself)."""


@dataclass(frozen=True, slots=True)
class ProxySetup:
    """Everything one configuration file says: the proxy's options, the seller's, and the priced routes."""

    proxy: ProxyConfig
    seller: SellerConfig
    routes: tuple[PaidRoute, ...]
    secret: bytes | None
    source: str = ""
    pricing: Mapping[int, str] = field(default_factory=dict)
    """Route index → pricing endpoint URL (``price_url`` routes)."""
    quoting: Mapping[int, str] = field(default_factory=dict)
    """Route index → upstream response header naming the price (``price_header`` routes; asked with ``HEAD``)."""
    metrics_token: bytes | None = None
    """What ``Authorization: Bearer`` must carry for ``/metrics`` (None: loopback clients only)."""
    lightning: LightningNode | None = None
    """The ``[proxy.lightning]`` node for ``l402`` and ``mpp = ["lightning"]`` routes."""


LIGHTNING_KEYS = frozenset({"backend", "url", "invoice_key", "invoice_key_file", "macaroon", "macaroon_file",
                            "tls_cert", "timeout"})


@dataclass(frozen=True, slots=True)
class LightningNode:
    """``[proxy.lightning]``: the node that issues (and looks up) the invoices of Lightning routes.

    ``backend = "lnbits"`` takes ``url`` and the wallet's ``invoice_key`` (or ``invoice_key_file``);
    ``backend = "lnd"`` takes the REST ``url``, an invoice ``macaroon`` in hex (or ``macaroon_file``, hex or
    binary) and ``tls_cert`` (a path; default: the system's CAs). Only receiving keys are needed."""

    backend: Literal["lnbits", "lnd"]
    url: str
    key: str = field(repr=False)
    tls_cert: str | None = None
    timeout: float = 30.0

    def connect(self) -> Any:
        """The :class:`~paywire.lightning.base.LightningBackend` (opens an HTTP client; ``aclose`` it)."""
        if self.backend == "lnbits":
            from paywire.lightning.lnbits import LnbitsBackend

            return LnbitsBackend(self.url, invoice_key=self.key, timeout=self.timeout)
        from paywire.lightning.lnd import LndRestBackend

        return LndRestBackend(self.url, self.key, tls_cert=self.tls_cert, timeout=self.timeout)


def _read_key(entry: Mapping[str, Any], name: str, base: Path, where: str, *, binary_hex: bool = False) -> str | None:
    value = entry.get(name)
    file = entry.get(name + "_file")
    if file is None:
        return str(value) if value else None
    path = Path(str(file))
    path = path if path.is_absolute() else base / path
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"{where}: {name}_file: cannot read {path}: {exc}") from None
    try:
        text = raw.decode("ascii").strip()
        if not binary_hex or all(c in "0123456789abcdefABCDEF" for c in text):
            return text
    except UnicodeDecodeError:
        pass
    return raw.hex()  # an lnd macaroon file is binary


def _check_table(entry: Any, allowed: Collection[str], where: str, not_table: str, unknown_label: str) -> None:
    """Refuse an entry that is not a table or that names keys outside ``allowed`` (with did-you-mean hints)."""
    if not isinstance(entry, Mapping):
        raise ConfigError(f"{where}: {not_table}")
    unknown = set(entry) - set(allowed)
    if unknown:
        from paywire.settings import unknown_names

        raise ConfigError(f"{where}: {unknown_label}: {unknown_names(unknown, allowed)}")


def parse_lightning(entry: Any, base: Path, where: str) -> LightningNode | None:
    """``[proxy.lightning]`` → :class:`LightningNode` (None when the table is absent)."""
    if entry is None:
        return None
    where = f"{where}.lightning"
    _check_table(entry, LIGHTNING_KEYS, where,
                 "must be a table (backend = \"lnbits\", url = ..., invoice_key_file = ...)",
                 "unknown keys")
    backend = entry.get("backend")
    if backend not in ("lnbits", "lnd"):
        raise ConfigError(f"{where}: backend = \"lnbits\" or \"lnd\"")
    url = entry.get("url")
    if _http_url(url) is not None:
        raise ConfigError(f"{where}: url must be the node's http(s) URL")
    timeout = entry.get("timeout", 30.0)
    if isinstance(timeout, bool) or not isinstance(timeout, int | float) or timeout <= 0:
        raise ConfigError(f"{where}: timeout must be a positive number of seconds")
    if backend == "lnbits":
        key = _read_key(entry, "invoice_key", base, where)
        if not key:
            raise ConfigError(f"{where}: LNbits needs the wallet's invoice_key (or invoice_key_file)")
        return LightningNode("lnbits", str(url), key, timeout=float(timeout))
    key = _read_key(entry, "macaroon", base, where, binary_hex=True)
    if not key:
        raise ConfigError(f"{where}: lnd needs an invoice macaroon (macaroon = hex, or macaroon_file)")
    cert = entry.get("tls_cert")
    if cert is not None:
        cert_path = Path(str(cert))
        cert = str(cert_path if cert_path.is_absolute() else base / cert_path)
    return LightningNode("lnd", str(url), key, cert, float(timeout))


def _route(entry: Any, where: str) -> PaidRoute:
    _check_table(entry, ROUTE_KEYS, where, "each [[proxy.routes]] entry must be a table", "unknown route keys")
    path = entry.get("path")
    if not isinstance(path, str) or not path.strip():
        raise ConfigError(f"{where}: a route needs path = \"GET /weather\" (methods optional)")
    offers: tuple[Offer, ...] = ()
    price = entry.get("price")
    price_url = entry.get("price_url")
    price_header = entry.get("price_header")
    if sum(x is not None for x in (price, price_url, price_header)) > 1:
        raise ConfigError(f"{where}: route {path!r}: give one of price, price_url, price_header")
    if price_url is not None:
        if _http_url(price_url) is not None:
            raise ConfigError(f"{where}: route {path!r}: price_url must be an http(s) URL")
        price = header_price
    if price_header is not None:
        if not isinstance(price_header, str) or not _TOKEN.fullmatch(price_header) \
                or price_header.lower() == PRICE_HEADER:
            raise ConfigError(f"{where}: route {path!r}: price_header must be a header name (e.g. \"X-Price\")")
        price = header_price
    if price is not None:
        if price is not header_price and (isinstance(price, bool) or not isinstance(price, str | int | float)):
            raise ConfigError(f"{where}: route {path!r}: price is '$0.01' or atomic units (an integer)")
        extra = entry.get("extra", {})
        if not isinstance(extra, Mapping):
            raise ConfigError(f"{where}: route {path!r}: extra must be a table (e.g. {{name=..., version=...}})")
        offers = (Offer(price=price, asset=entry.get("asset"), network=entry.get("network"),
                        pay_to=entry.get("pay_to"), extra=dict(extra),
                        max_timeout_seconds=int(entry.get("max_timeout_seconds", 60))),)
    mpp = entry.get("mpp", ())
    try:
        return PaidRoute(path, offers=offers, settle=entry.get("settle", "after"),
                         description=str(entry.get("description", "")),
                         mime_type=str(entry.get("mime_type", "application/json")),
                         payment_identifier=entry.get("payment_identifier", False),
                         mpp=tuple(mpp) if isinstance(mpp, list | tuple) else mpp,
                         l402=entry.get("l402", False), sats=entry.get("sats"),
                         discovery=entry.get("discovery", False))
    except ConfigError as exc:
        raise ConfigError(f"{where}: {exc}") from None


def header_price(req: RequestInfo) -> str | int:
    """A ``price_url`` route's price for this request: what the proxy fetched and put in :data:`PRICE_HEADER`
    (digits: atomic units; else money like ``$0.01``)."""
    raw = (req.header(PRICE_HEADER) or "").strip()
    if not raw:
        raise ConfigError("no price for this request (the pricing endpoint was not asked)")
    return int(raw) if raw.isdigit() else raw


def price_urls(entries: Any) -> dict[int, str]:
    """Route index → its pricing endpoint (``price_url``), for the routes that have one."""
    return {i: str(e["price_url"]) for i, e in enumerate(entries or []) if isinstance(e, Mapping)
            and e.get("price_url")}


def price_headers(entries: Any) -> dict[int, str]:
    """Route index → the upstream response header that prices it (``price_header``, lower-case)."""
    return {i: str(e["price_header"]).lower() for i, e in enumerate(entries or []) if isinstance(e, Mapping)
            and e.get("price_header")}


def parse_price(raw: str) -> str | None:
    """A price as a pricing endpoint or upstream header states it, checked: digits (atomic units) or money like
    ``$0.03`` / ``0.03`` (no exponents, at most 30 digits); None when it is neither or not positive."""
    text = raw.strip()
    if not _PRICE.fullmatch(text):
        return None
    digits = text.lstrip("$").replace(".", "")
    return text if digits.strip("0") else None


def parse_routes(entries: Any, where: str = "config") -> tuple[PaidRoute, ...]:
    """``[[proxy.routes]]`` tables → :class:`PaidRoute` (first match wins, in file order)."""
    if not isinstance(entries, list) or not entries:
        raise ConfigError(f"{where}: no [[proxy.routes]]: the proxy would sell nothing (add path = ..., price = ...)")
    return tuple(_route(e, where) for e in entries)


def _secret(cfg: ProxyConfig, base: Path) -> bytes | None:
    if not cfg.sign_identity:
        return None
    text = cfg.identity_secret
    if cfg.identity_secret_file:
        path = Path(cfg.identity_secret_file)
        path = path if path.is_absolute() else base / path
        try:
            text = path.read_text().strip()
        except OSError as exc:
            raise ConfigError(f"proxy option identity_secret_file: cannot read {path}: {exc}") from None
    if not text:
        raise ConfigError("proxy: set identity_secret_file (or identity_secret) to 32+ random bytes, the key the "
                          "upstream checks Paywire-Signature with; or sign_identity = false to forward no identity")
    secret = text.encode()
    if len(secret) < MIN_SECRET:
        raise ConfigError(f"proxy option identity_secret: needs {MIN_SECRET}+ bytes, got {len(secret)}")
    return secret


MIN_METRICS_TOKEN = 16


def _metrics_token(cfg: ProxyConfig, base: Path) -> bytes | None:
    text = cfg.metrics_token
    if cfg.metrics_token_file:
        path = Path(cfg.metrics_token_file)
        path = path if path.is_absolute() else base / path
        try:
            text = path.read_text().strip()
        except OSError as exc:
            raise ConfigError(f"proxy option metrics_token_file: cannot read {path}: {exc}") from None
    if text is None:
        return None
    token = text.strip().encode()
    if len(token) < MIN_METRICS_TOKEN:
        raise ConfigError(f"proxy option metrics_token: needs {MIN_METRICS_TOKEN}+ bytes, got {len(token)}")
    return token


def _loopback(url: str) -> bool:
    host = urlsplit(url).hostname or ""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def unsafe_reasons(setup: ProxySetup) -> list[str]:
    """What makes this setup unsafe to start (each waived only by the option it names)."""
    reasons: list[str] = []
    cfg = setup.proxy
    if not cfg.allow_plain_http:
        if cfg.upstream.startswith("http://") and not _loopback(cfg.upstream):
            reasons.append(f"upstream {cfg.upstream} is plain http on another host: use https, or set "
                           "allow_plain_http = true")
        fac = setup.seller.facilitator
        if isinstance(fac, str) and fac.startswith("http://") and not _loopback(fac):
            reasons.append(f"facilitator {fac} is plain http on another host: use https, or set "
                           "allow_plain_http = true")
        node = setup.lightning
        if node is not None and node.url.startswith("http://") and not _loopback(node.url):
            reasons.append(f"lightning node {node.url} is plain http on another host (its key would travel in "
                           "clear text): use https, or set allow_plain_http = true")
    if setup.lightning is None:
        for r in setup.routes:
            if r.l402 or "lightning" in r.mpp:
                reasons.append(f"route {r.key} takes Lightning (l402 / mpp lightning): add a [proxy.lightning] "
                               "table (backend, url, invoice key)")
    offers = [o for r in setup.routes if isinstance(r.offers, tuple) for o in r.offers]
    if setup.seller.pay_to is None and any(isinstance(o, Offer) and o.pay_to is None for o in offers):
        reasons.append("no pay_to: set [seller] pay_to (or pay_to on each route)")
    reserved = {p for p in (cfg.health_path, cfg.metrics_path) if p}
    for r in setup.routes:
        if any(r.matches(m, p) for p in reserved for m in ("GET",)):
            reasons.append(f"route {r.key} covers {' or '.join(sorted(reserved))}, which the proxy serves itself")
    return reasons


def load_proxy(path: str | Path | None = None, *, env: Mapping[str, str] | None = None,
               **code: Any) -> ProxySetup:
    """Read and check the file (``path`` or ``$PAYWIRE_PROXY_CONFIG``), the environment and ``code``.

    Raises ``ConfigError`` naming the option, or listing why the setup is unsafe."""
    env = os.environ if env is None else env
    path = path or env.get("PAYWIRE_PROXY_CONFIG") or None
    if path is None:
        raise ConfigError("paywire proxy needs a config file: --config paywire.toml (see docs/proxy.md)")
    data = read_toml(path)
    where = f"config file {path} [proxy]"
    table = role_table(data, "proxy", f"config file {path}")
    values = gather(ProxyConfig, code=code, toml=table, toml_where=where, env=env,
                    toml_ignore=("routes", "lightning"))
    cfg = ProxyConfig(**values)
    if not cfg.upstream:
        raise ConfigError(f"{where}: set upstream = \"http://127.0.0.1:8000\" (the API to sell)")
    routes = parse_routes(table.get("routes"), where)
    seller = SellerConfig.load(path, env=env) if "seller" in data else SellerConfig.load(None, env=env)
    if seller.facilitator is None:
        raise ConfigError(f"config file {path}: set [seller] facilitator = \"https://…\"")
    base = Path(path).parent
    setup = ProxySetup(cfg, seller, routes, _secret(cfg, base), str(path), pricing=price_urls(table.get("routes")),
                       quoting=price_headers(table.get("routes")), metrics_token=_metrics_token(cfg, base),
                       lightning=parse_lightning(table.get("lightning"), base, where))
    reasons = unsafe_reasons(setup)
    if reasons:
        raise ConfigError("refusing an unsafe proxy setup:\n  - " + "\n  - ".join(reasons))
    return setup


def route_summary(routes: Sequence[PaidRoute]) -> list[str]:
    """One line per route for the startup log."""
    return [f"{r.key} settle={r.settle}" + (f" mpp={','.join(r.mpp)}" if r.mpp else "") for r in routes]
