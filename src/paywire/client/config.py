"""The buyer's options, typed: :class:`BuyerConfig`, taken by ``x402_client``, ``x402_sync_client`` and
``x402_requests`` (``config=``; their keyword arguments still work and win) and by :meth:`BuyerConfig.buyer`.

    config = BuyerConfig(max_retries=3, nonce_variant="json")
    client = x402_client(wallet, policy, config=config)
    config = BuyerConfig.load("paywire.toml")   # [buyer] table < $PAYWIRE_BUYER_* < keywords

TOML ``[buyer]`` and ``PAYWIRE_BUYER_<OPTION>`` take the options that are text, numbers or flags (``store``
as a URL); ``approve``, ``lightning`` and ``assets`` are objects, code only.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, Literal

from paywire.settings import Settings, non_negative, option, positive

if TYPE_CHECKING:
    from paywire.client.engine import Approver, Buyer
    from paywire.client.policy import Policy
    from paywire.evm.assets import Asset

__all__ = ["BuyerConfig"]


@dataclass(frozen=True, slots=True)
class BuyerConfig(Settings):
    """Every buyer option (see :class:`paywire.client.Buyer` for their meaning)."""

    ROLE: ClassVar[str] = "buyer"

    store: Any = None
    """Receipts and budgets: a database URL, a ``Database`` or a ``SpendLedger``. None: the client factories
    use ``$PAYWIRE_STORE`` or ``~/.paywire/paywire.db``; :meth:`buyer` keeps receipts in memory."""
    approve: Approver | None = option(None, env=False, toml=False)
    """Called (sync or async) for payments above ``policy.approval_threshold``."""
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
    nonce_variant: Literal["concat", "json"] = "concat"
    """The MPP EIP-3009 nonce derivation tried first."""
    send_accept_payment: bool = True
    timeout: float = option(30.0, check=positive, duration=True)
    """HTTP timeout of the clients ``x402_client`` / ``x402_sync_client`` make (unless given to them)."""

    def buyer_kwargs(self, **changes: Any) -> dict[str, Any]:
        """The keyword arguments of :class:`~paywire.client.Buyer` (``changes`` on top)."""
        out = {name: getattr(self, name) for name in self.options() if name != "timeout"}
        return {**out, **changes}

    def buyer(self, wallet: Any, policy: Policy | None = None) -> Buyer:
        """A :class:`~paywire.client.Buyer` with these options."""
        from paywire.client.engine import Buyer

        return Buyer(wallet, policy, **self.buyer_kwargs())


def factory_config(config: BuyerConfig | None, **given: Any) -> BuyerConfig:
    """``config`` (or the defaults) with the factory keywords the caller gave (None: not given)."""
    changes = {k: v for k, v in given.items() if v is not None}
    base = config if config is not None else BuyerConfig()
    return base.replace(**changes) if changes else base
