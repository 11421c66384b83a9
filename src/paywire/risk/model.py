"""The risk vocabulary, pure: checkpoints, actions, one evaluated :class:`Decision`, and what a checkpoint is
asked about (:class:`Event`).

A decision is ``allow``, ``deny`` (with a reason code), ``challenge`` (ask for an identity proof or a fresh
payment), or ``review`` (serve, but flag). A rule in ``shadow`` mode — or every rule when the engine is in
shadow mode — is evaluated and recorded but never enforced: its decision says ``shadow=True`` and acts as
``allow``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final, Literal

from paywire.errors import ConfigError

Action = Literal["allow", "deny", "challenge", "review"]
ACTIONS: Final[tuple[Action, ...]] = ("allow", "deny", "challenge", "review")
Checkpoint = Literal["request", "payment", "settle", "buyer"]
CHECKPOINTS: Final[tuple[Checkpoint, ...]] = ("request", "payment", "settle", "buyer")
"""``request``: the seller, before anything else. ``payment``: the seller, once the payment is parsed (payer,
amount, asset, network known) and before the facilitator is asked. ``settle``: the facilitator, before it
settles. ``buyer``: the buyer, before it signs."""

SEVERITY: Final[Mapping[str, int]] = {"allow": 0, "review": 1, "challenge": 2, "deny": 3}


@dataclass(frozen=True, slots=True)
class Event:
    """What one checkpoint knows; fields a checkpoint does not know stay ``None`` / 0.

    ``amount`` is in the asset's atomic units with ``decimals``; ``payment_key`` identifies one credential (its
    copies share it); ``host`` and ``route`` on the buyer are the seller's host and ``host + path``.
    """

    checkpoint: Checkpoint
    ip: str | None = None
    route: str | None = None
    method: str | None = None
    agent: str | None = None
    header_bytes: int = 0
    has_payment: bool = False
    payer: str | None = None
    payee: str | None = None
    amount: int = 0
    decimals: int = 6
    asset: str | None = None
    network: str | None = None
    scheme: str | None = None
    protocol: str | None = None
    payment_key: str | None = None
    requester: str | None = None
    host: str | None = None

    @property
    def value(self) -> float:
        """The amount in whole tokens (``10000`` units of a 6-decimals token → ``0.01``)."""
        return float(self.amount) / float(10 ** self.decimals)


@dataclass(frozen=True, slots=True)
class Decision:
    """The outcome of one checkpoint.

    ``action`` is what the caller enforces (``allow`` when the deciding rule is in shadow mode). ``rule`` is the
    id of the rule that decided (``None``: no rule matched, or the state backend was down and the checkpoint's
    ``fail`` mode decided: then ``degraded`` is set). ``matched`` lists every rule that matched, shadow ones
    too; ``features`` the values the rules saw; ``list_version`` the allow/deny/sanctions lists' version.
    """

    action: Action
    checkpoint: Checkpoint
    rule: str | None = None
    reason: str | None = None
    shadow: bool = False
    matched: tuple[str, ...] = ()
    features: Mapping[str, Any] = field(default_factory=dict)
    list_version: str = ""
    degraded: bool = False

    @property
    def allowed(self) -> bool:
        """Serve / pay (``allow`` or ``review``); ``deny`` and ``challenge`` stop the request."""
        return self.action in ("allow", "review")

    def describe(self) -> str:
        """``deny by rule sanctioned_payer (sanctioned)``-style text for logs and errors."""
        who = f"rule {self.rule}" if self.rule else ("the fail mode (state backend down)" if self.degraded
                                                      else "no rule")
        return f"{self.action} by {who}" + (f" ({self.reason})" if self.reason else "")


class RiskConfigError(ConfigError):
    """A rule file or risk option is wrong; the message names the file, the rule and the line."""
