"""The buyer's risk guard, before it signs: the guard against a compromised or looping agent and a lying
seller.

The ``buyer`` checkpoint sees the payee, the seller's host and route (``host/path``), the price, and how the
price compares with what this buyer paid this route and this host on average over the longest window
(``price_ratio_route``, ``price_ratio_host``), plus the agent's own velocity (``route_count_1m``,
``host_count_1m``, ``agent_count_1m``, sums). A refusal raises :class:`RiskRefused` naming the rule; nothing
is signed and the ledger row says ``refused`` with rule ``risk:<id>``. An allowed price joins the history.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from paywire.client.core import Candidate, PaymentRefused, Receipt
from paywire.risk.engine import RiskEngine
from paywire.risk.model import Decision, Event
from paywire.spending import Refusal


class RiskRefused(PaymentRefused):
    """The buyer's risk guard refused to sign: ``rule`` names the risk rule, ``decision`` has the features."""

    def __init__(self, decision: Decision, url: str, *, receipt: Receipt | None = None) -> None:
        reason = decision.reason or "refused"
        super().__init__(f"risk guard refused to pay {url}: {decision.describe()}",
                         [Refusal(f"risk:{decision.rule or 'fail_mode'}", reason)], receipt=receipt)
        self.decision = decision

    @property
    def rule(self) -> str:
        """The risk rule's id (``""`` when the fail mode refused)."""
        return self.decision.rule or ""

    @property
    def reason(self) -> str:
        return self.decision.reason or ""


@dataclass
class BuyerGuard:
    """The ``buyer`` checkpoint for a :class:`~paywire.client.engine.Buyer` (``Buyer(..., risk=guard)``).

    ``agent``: this agent's name in the counters (one engine may guard several agents).
    """

    engine: RiskEngine
    agent: str = "agent"

    def event(self, url_host: str, route: str, cand: Candidate) -> Event:
        q = cand.quote
        amount, decimals = (q.usd_micros, 6) if q.usd_micros is not None else (q.amount, 0)
        return Event("buyer", host=url_host, route=route, payee=q.payee, agent=self.agent, amount=amount,
                     decimals=decimals, asset=q.asset, network=q.network)

    async def check(self, url_host: str, route: str, cand: Candidate) -> Decision:
        """The decision for paying ``cand``; an allowed price is added to the host's and route's history."""
        event = self.event(url_host, route, cand)
        decision = await self.engine.check(event)
        if decision.allowed:
            await self.engine.note_paid(event)
        return decision


def buyer_guard(risk: Any) -> BuyerGuard | None:
    """``Buyer(risk=…)``: ``True`` (the default rules), a ``RiskEngine`` or a ``BuyerGuard``."""
    if risk is None or risk is False:
        return None
    if isinstance(risk, BuyerGuard):
        return risk
    if risk is True:
        return BuyerGuard(RiskEngine())
    if isinstance(risk, RiskEngine):
        return BuyerGuard(risk)
    from paywire.errors import ConfigError

    raise ConfigError("buyer option risk: expected True, a RiskEngine or a BuyerGuard")
