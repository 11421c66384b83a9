"""paywire.client: pay HTTP 402s from an agent or a script, within a spend policy.

    from paywire.client import Policy, x402_client
    from paywire.wallet import Wallet

    client = x402_client(wallet=Wallet.from_env(), policy=Policy(max_per_payment="$0.10", daily="$5"))
    r = await client.get("https://api.example.com/paid")   # 402 → policy → sign → retry → 200
    settlement_of(r)                                         # the parsed PAYMENT-RESPONSE

Receipts and budgets live in ``$PAYWIRE_STORE`` (default ``~/.paywire/paywire.db``), so they survive restarts.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from paywire._lazy import lazy_exports
from paywire.client.config import BuyerConfig, factory_config

if TYPE_CHECKING:
    import httpx
    import requests

    from paywire.client.core import (
        DryRunPayment,
        Payer,
        PaymentAttempt,
        PaymentDeclined,
        PaymentError,
        PaymentOutcomeUnknown,
        PaymentRefused,
        PaymentRejected,
        Receipt,
        parse_challenge,
        parse_settlement,
    )
    from paywire.client.engine import ApprovalRequest, Approver, Buyer
    from paywire.client.httpx_transport import (
        PaymentTransport,
        SyncPaymentTransport,
        receipt_of,
        settlement_of,
    )
    from paywire.client.policy import Policy, Quote, Refusal

__getattr__, __dir__ = lazy_exports(__name__, {
    "paywire.client.core": (
        "DryRunPayment", "Payer", "PaymentAttempt", "PaymentDeclined", "PaymentError", "PaymentOutcomeUnknown",
        "PaymentRefused", "PaymentRejected", "Receipt", "parse_challenge", "parse_settlement",
    ),
    "paywire.client.engine": ("ApprovalRequest", "Approver", "Buyer"),
    "paywire.client.httpx_transport": ("PaymentTransport", "SyncPaymentTransport", "receipt_of", "settlement_of"),
    "paywire.client.policy": ("Policy", "Quote", "Refusal"),
})

DEFAULT_TIMEOUT = 30.0


def default_store() -> str:
    """``$PAYWIRE_STORE``, else ``sqlite:///~/.paywire/paywire.db``."""
    explicit = os.environ.get("PAYWIRE_STORE")
    if explicit:
        return explicit
    return f"sqlite:///{Path.home() / '.paywire' / 'paywire.db'}"


_default_store = default_store


def _make_buyer(wallet: Any, policy: Policy | None, config: BuyerConfig, store: Any) -> tuple[Buyer, bool]:
    """(buyer, made here): a buyer made here is closed with its client. ``store``: ``...`` = not given."""
    from paywire.client.engine import Buyer

    if isinstance(wallet, Buyer):
        return wallet, False
    if store is ...:
        store = default_store() if config.store is None else config.store
    return Buyer(wallet, policy, config=config, store=store), True


def x402_client(wallet: Any, policy: Policy | None = None, *, config: BuyerConfig | None = None,
                store: Any = ..., approve: Approver | None = None, max_retries: int | None = None,
                **httpx_kwargs: Any) -> httpx.AsyncClient:
    """An ``httpx.AsyncClient`` that pays 402s from ``wallet`` within ``policy`` (receipts in ``store``).
    ``config``: a :class:`BuyerConfig`; the keyword arguments win over it."""
    import httpx

    from paywire.client.httpx_transport import PaymentTransport

    cfg = factory_config(config, approve=approve, max_retries=max_retries)
    buyer, made = _make_buyer(wallet, policy, cfg, store)
    httpx_kwargs.setdefault("timeout", cfg.timeout)
    return httpx.AsyncClient(transport=PaymentTransport(buyer, close_buyer=made), **httpx_kwargs)


def x402_sync_client(wallet: Any, policy: Policy | None = None, *, config: BuyerConfig | None = None,
                     store: Any = ..., approve: Approver | None = None, max_retries: int | None = None,
                     **httpx_kwargs: Any) -> httpx.Client:
    """The same as :func:`x402_client` for synchronous code (``httpx.Client``)."""
    import httpx

    from paywire.client.httpx_transport import SyncPaymentTransport

    cfg = factory_config(config, approve=approve, max_retries=max_retries)
    buyer, made = _make_buyer(wallet, policy, cfg, store)
    httpx_kwargs.setdefault("timeout", cfg.timeout)
    return httpx.Client(transport=SyncPaymentTransport(buyer, close_buyer=made), **httpx_kwargs)


def x402_requests(wallet: Any, policy: Policy | None = None, *, config: BuyerConfig | None = None,
                  store: Any = ..., approve: Approver | None = None, max_retries: int | None = None,
                  session: requests.Session | None = None) -> requests.Session:
    """A ``requests.Session`` that pays 402s (needs ``pip install paywire[requests]``)."""
    from paywire.client.requests_adapter import x402_session

    cfg = factory_config(config, approve=approve, max_retries=max_retries)
    buyer, _ = _make_buyer(wallet, policy, cfg, store)
    return x402_session(buyer, session=session)


__all__ = [
    "ApprovalRequest",
    "Approver",
    "Buyer",
    "BuyerConfig",
    "DryRunPayment",
    "Payer",
    "PaymentAttempt",
    "PaymentDeclined",
    "PaymentError",
    "PaymentOutcomeUnknown",
    "PaymentRefused",
    "PaymentRejected",
    "PaymentTransport",
    "Policy",
    "Quote",
    "Receipt",
    "Refusal",
    "SyncPaymentTransport",
    "default_store",
    "parse_challenge",
    "parse_settlement",
    "receipt_of",
    "settlement_of",
    "x402_client",
    "x402_requests",
    "x402_sync_client",
]
