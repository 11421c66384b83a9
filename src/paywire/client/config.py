"""The buyer's options, typed: :class:`BuyerConfig`, one object taken as ``config=`` by ``Buyer``, the httpx
transports, the ``requests`` adapter and the factories ``x402_client``, ``x402_sync_client``, ``x402_requests``
— each also takes the options as keywords (:class:`BuyerOptions`), which win over the config. Both are merged
and checked in one place, :func:`buyer_config`.

    config = BuyerConfig(max_retries=3, nonce_variant="json")
    client = x402_client(wallet, policy, config=config)
    buyer = Buyer(wallet, policy, config=config, store="sqlite:///spend.db")   # keywords win
    config = BuyerConfig.load("paywire.toml")   # [buyer] table < $PAYWIRE_BUYER_* < keywords

TOML ``[buyer]`` and ``PAYWIRE_BUYER_<OPTION>`` take the options that are text, numbers or flags (``store``
as a URL); ``approve``, ``lightning``, ``assets`` and ``protocols`` are objects, code only.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, Literal, TypedDict

from paywire.settings import Settings, UnknownOption, non_negative, option, positive, unknown_names

if TYPE_CHECKING:
    from paywire.client.engine import Approver, Buyer
    from paywire.client.policy import Policy
    from paywire.client.protocols.base import BuyerProtocol
    from paywire.evm.assets import Asset

__all__ = ["BuyerConfig", "BuyerOptions", "buyer_config"]

NonceVariant = Literal["concat", "json"]


@dataclass(frozen=True, slots=True)
class BuyerConfig(Settings):
    """Every buyer option (see :class:`paywire.client.Buyer` for their meaning)."""

    ROLE: ClassVar[str] = "buyer"

    store: Any = None
    """Receipts and budgets: a database URL, a ``Database`` or a ``SpendLedger``. None: the client factories
    use ``$PAYWIRE_STORE`` or ``~/.paywire/paywire.db`` (a buyer's state is the user's, so it lives in the home
    directory; a seller's lives where the service runs — see "Where state lives" in docs/buyer.md);
    :meth:`buyer` keeps receipts in memory."""
    approve: Approver | None = option(None, env=False, toml=False)
    """Called (sync or async) for payments above ``policy.approval_threshold``."""
    risk: Any = option(None, env=False, toml=False)
    """The risk guard before signing: ``True`` (the default rules), a ``RiskEngine`` or a ``BuyerGuard``
    (docs/risk.md); a refusal raises ``RiskRefused`` naming the rule."""
    max_retries: int = option(2, check=non_negative)
    """How often the same signed payment is resent after a timeout, reset or 5xx."""
    retry_delay: float = option(0.2, check=non_negative, duration=True)
    account: str | None = None
    """The wallet's address for the ledger (default: read from the wallet)."""
    reconcile_every: float = option(30.0, check=positive, duration=True)
    lightning: Any = option(None, env=False, toml=False)
    """Lightning wallet backend that pays invoices (default ``wallet.lightning``)."""
    assets: tuple[Asset, ...] = option((), env=False, toml=False)
    """Extra EIP-3009 tokens (MPP ``evm/charge`` needs their EIP-712 domain)."""
    nonce_variant: NonceVariant = "concat"
    """The MPP EIP-3009 nonce derivation tried first."""
    send_accept_payment: bool = True
    sign_in: bool = True
    """Answer a 402's Sign-In-With-X challenge with the paying wallet's key (on a network the policy allows):
    first alone — a seller that grants re-access serves it without a new payment — then with the payment."""
    agent_key: Any = option(None, env=False, toml=False)
    """An :class:`~paywire.identity.agent.AgentKey`: sign every request (RFC 9421, Web Bot Auth profile)."""
    protocols: tuple[BuyerProtocol, ...] | None = option(None, env=False, toml=False)
    """The payment protocols spoken (None: the registered ones, :func:`paywire.client.protocols.registered`;
    ``policy.protocols`` chooses among them)."""
    timeout: float = option(30.0, check=positive, duration=True)
    """HTTP timeout of the clients ``x402_client`` / ``x402_sync_client`` make (unless given to them)."""
    audit: str | None = None
    """This agent's name in the audit log (e.g. ``agent-eu1-7``, env ``PAYWIRE_BUYER_AUDIT``): every change of the
    receipts ledger (policy refusal, budget reserved / committed / released / held, payment signed, the server's
    answer) queues an audit event in its transaction (docs/audit.md). Needs a ``store``. None: no events."""

    def buyer_kwargs(self, **changes: Any) -> dict[str, Any]:
        """The keyword arguments of :class:`~paywire.client.Buyer` (``changes`` on top)."""
        out = {name: getattr(self, name) for name in self.options() if name not in NOT_BUYER}
        return {**out, **changes}

    def buyer(self, wallet: Any, policy: Policy | None = None) -> Buyer:
        """A :class:`~paywire.client.Buyer` with these options."""
        from paywire.client.engine import Buyer

        return Buyer(wallet, policy, config=self)


NOT_BUYER = frozenset({"timeout"})
"""Options of the config that a ``Buyer`` does not use (the HTTP client's, set by the factories)."""


class BuyerOptions(TypedDict, total=False):
    """:class:`BuyerConfig`'s options as keyword arguments of ``Buyer``, ``PaymentTransport``,
    ``SyncPaymentTransport``, ``PaymentAdapter`` and ``x402_session`` (all but ``timeout``, the HTTP client's)."""

    store: Any
    approve: Approver | None
    risk: Any
    max_retries: int
    retry_delay: float
    account: str | None
    reconcile_every: float
    lightning: Any
    assets: Sequence[Asset]
    nonce_variant: NonceVariant
    send_accept_payment: bool
    sign_in: bool
    agent_key: Any
    protocols: Sequence[BuyerProtocol] | None
    audit: str | None


def buyer_config(config: BuyerConfig | None = None, options: Mapping[str, Any] | None = None, *,
                 where: str = "Buyer") -> BuyerConfig:
    """``config`` (or the defaults) with the keyword ``options`` on top, every option converted and checked: the
    one place a buyer's options are put together. A name that is not a buyer option (or is the HTTP client's
    ``timeout``) raises :class:`~paywire.settings.UnknownOption` (a ``TypeError`` and ``ConfigError``) naming it."""
    changes = dict(options or {})
    known = [n for n in BuyerConfig.options() if n not in NOT_BUYER]
    unknown = set(changes) - set(known)
    if unknown:
        hint = " (timeout is the HTTP client's: give it to x402_client or to your httpx client)" \
            if "timeout" in unknown else ""
        raise UnknownOption(f"{where}(): unknown buyer option {unknown_names(unknown, known)}{hint}")
    base = config if config is not None else BuyerConfig()
    return base.replace(**changes) if changes else base


def factory_config(config: BuyerConfig | None, **given: Any) -> BuyerConfig:
    """``config`` (or the defaults) with the factory keywords the caller gave (None: not given)."""
    changes = {k: v for k, v in given.items() if v is not None}
    base = config if config is not None else BuyerConfig()
    return base.replace(**changes) if changes else base
