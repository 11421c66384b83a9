"""The spend policy as pure rules: each rule refuses exactly what it should, and says which rule and why."""

from __future__ import annotations

import pytest

from paywire.client.policy import (
    Policy,
    Quote,
    check_static,
    fmt_usd,
    needs_approval,
    to_micros,
    usd_micros_of,
)
from paywire.errors import ConfigError
from paywire.evm.assets import Asset
from paywire.spending import Spent, check_budget

NET = "eip155:31337"
TOKEN = "0x" + "ab" * 20
PAYEE = "0x" + "cd" * 20
ASSET = Asset(NET, TOKEN, "USD Coin", "2")


def q(amount: int = 10_000, **kw) -> Quote:
    base = {"host": "api.example.com", "payee": PAYEE, "network": NET, "asset": TOKEN, "amount": amount,
            "usd_micros": amount}
    base.update(kw)
    return Quote(**base)


def pol(**kw) -> Policy:
    return Policy(assets=[ASSET], **kw)


def test_money_parsing_and_display() -> None:
    assert to_micros("$0.10") == 100_000 and to_micros(0.1) == 100_000 and to_micros("5") == 5_000_000
    assert fmt_usd(100_000) == "$0.10" and fmt_usd(1) == "$0.000001" and fmt_usd(5_000_000) == "$5.00"
    assert usd_micros_of(10**18, 18) == 1_000_000 and usd_micros_of(1, 18) == 1  # rounds up, never down
    assert usd_micros_of(1, 2) == 10_000
    with pytest.raises(ConfigError):
        Policy(max_per_payment="ten dollars")
    with pytest.raises(ConfigError, match="list"):
        Policy(allowed_hosts="api.example.com")


def test_value_of_known_and_registered_assets() -> None:
    p = pol()
    assert p.value(NET, TOKEN.upper().replace("0X", "0x"), 2_500) == 2_500
    assert p.value("eip155:8453", "0x833589fCD6eDb6E08f4c7C32D4f71b54bdA02913", 1_000_000) == 1_000_000
    assert p.value(NET, "0x" + "00" * 20, 5) is None


@pytest.mark.parametrize(("policy", "quote", "rule"), [
    (pol(allowed_networks=["eip155:8453"]), q(), "allowed_networks"),
    (pol(allowed_assets=["0x" + "11" * 20]), q(), "allowed_assets"),
    (pol(allowed_assets=[f"eip155:1/{TOKEN}"]), q(), "allowed_assets"),  # right token, other network
    (pol(allowed_payees=["0x" + "22" * 20]), q(), "allowed_payees"),
    (pol(allowed_hosts=["*.other.org"]), q(), "allowed_hosts"),
    (pol(max_per_payment="$0.009"), q(), "max_per_payment"),
    (pol(max_per_payment="$1"), q(usd_micros=None), "unvalued_asset"),
])
def test_static_rules_refuse(policy: Policy, quote: Quote, rule: str) -> None:
    r = check_static(policy, quote)
    assert r is not None and r.rule == rule and r.reason


@pytest.mark.parametrize("policy", [
    pol(),
    pol(allowed_networks=[NET], allowed_assets=[TOKEN.upper().replace("0X", "0x")],
        allowed_payees=[PAYEE.upper().replace("0X", "0x")], allowed_hosts=["*.example.com"]),
    pol(allowed_assets=[f"{NET}/{TOKEN}"], max_per_payment="$0.01"),
    Policy(),  # no money limits: an unvalued asset is fine
])
def test_static_rules_allow(policy: Policy) -> None:
    assert check_static(policy, q(usd_micros=None if not policy.has_money_limits else 10_000)) is None


@pytest.mark.parametrize(("limits", "spent", "rule"), [
    ({"per_host": "$0.05"}, Spent(host=45_000), "per_host"),
    ({"per_payee": "$0.05"}, Spent(payee=45_000), "per_payee"),
    ({"daily": "$0.05"}, Spent(day=45_000), "daily"),
    ({"total": "$0.05"}, Spent(total=45_000), "total"),
])
def test_budget_rules(limits: dict, spent: Spent, rule: str) -> None:
    p = pol(**limits)
    refusal = check_budget(p, q(10_000), spent)
    assert refusal is not None and refusal.rule == rule
    assert "$0.05" in refusal.reason and "$0.045" in refusal.reason
    assert check_budget(p, q(5_000), spent) is None  # exactly at the cap is allowed
    assert check_budget(p, q(10_000), Spent()) is None


def test_approval_threshold() -> None:
    assert not needs_approval(pol(), q())
    assert not needs_approval(pol(approval_threshold="$0.01"), q(10_000))
    assert needs_approval(pol(approval_threshold="$0.01"), q(10_001))
    assert needs_approval(pol(approval_threshold="$0"), q(1))
    assert needs_approval(pol(approval_threshold="$5"), q(usd_micros=None))


def test_from_mapping() -> None:
    p = Policy.from_mapping({"daily": "$5", "allowed_hosts": ["a.com"]}, assets=[ASSET])
    assert p.limit("daily") == 5_000_000 and p.has_budgets and p.value(NET, TOKEN, 1) == 1
    with pytest.raises(ConfigError, match="unknown policy keys: dayly"):
        Policy.from_mapping({"dayly": "$5"})
