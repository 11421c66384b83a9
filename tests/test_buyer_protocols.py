"""The buyer's protocols are peers behind one interface: each is a module with a ``PROTOCOL``, listed once in
``BUILTIN``, and the challenge reader merges whatever the registered protocols read from a 402. A protocol
defined outside the package is added with ``protocols.register`` and is then paid like a built-in one."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

import httpx
import pytest

from paywire.client import (
    Buyer,
    PaymentError,
    PaymentRefused,
    PaymentTransport,
    Policy,
    protocols,
    receipt_of,
)
from paywire.client.core import Challenge, Option, PaymentAttempt, read_any_challenge
from paywire.client.protocols.base import NoResign, PaidReceipt, WalletAbilities
from paywire.errors import ConfigError
from paywire.serving import serve_asgi
from paywire.x402.codec import encode_header
from paywire.x402.models import PaymentRequirements

PAYEE = "0x" + "cd" * 20
TOKEN = "0x" + "ab" * 20


class ToyProtocol(NoResign):
    """A made-up protocol: ``Toy-Price: <sats>`` on the 402, ``Toy-Paid: <preimage>`` on the paid request."""

    name = "toy"
    reuses_credential = False

    def request_headers(self, wallet: WalletAbilities) -> Mapping[str, str]:
        return {}

    def read(self, headers: Mapping[str, str], body: bytes, assets: object) -> Challenge | None:
        price = headers.get("toy-price")
        if price is None:
            return None
        r = PaymentRequirements(scheme="toy", network="toy:1", amount=int(price), asset="sat", pay_to="toy",
                                max_timeout_seconds=60)
        return Challenge(0, (Option(0, r, None, self.name),), None, www_authenticate="Toy")

    async def credential(self, challenge: Challenge, option: Option, scheme: object, *,
                         variant: str) -> PaymentAttempt:
        return PaymentAttempt("Toy-Paid", "x", option.requirements, 0)

    def receipt(self, headers: Mapping[str, str], option: Option) -> PaidReceipt:
        return PaidReceipt(None, headers.get("toy-receipt"))


def x402_headers(*amounts: int) -> dict[str, str]:
    accepts = [{"scheme": "exact", "network": "eip155:31337", "amount": str(a), "asset": TOKEN, "payTo": PAYEE,
                "maxTimeoutSeconds": 60, "extra": {"name": "USD Coin", "version": "2"}} for a in amounts]
    return {"payment-required": encode_header({"x402Version": 2, "resource": {"url": "http://x/y"},
                                               "accepts": accepts})}


def test_every_builtin_protocol_is_the_module_of_its_name() -> None:
    assert [p.name for p in protocols.builtin_protocols()] == list(protocols.BUILTIN) == ["x402", "mpp", "l402"]


def test_a_registered_protocol_adds_its_options_after_the_others() -> None:
    registry = (*protocols.builtin_protocols(), ToyProtocol())
    c = read_any_challenge({**x402_headers(5, 6), "toy-price": "7"}, b"", assets=lambda n, t: None,
                           registry=registry)
    assert [(o.index, o.protocol, o.requirements.amount) for o in c.options] == [
        (0, "x402", 5), (1, "x402", 6), (2, "toy", 7)]
    assert c.version == 2 and c.www_authenticate == "Toy"
    alone = read_any_challenge({"toy-price": "7"}, b"", assets=lambda n, t: None, registry=registry)
    assert alone.version == 0 and [o.protocol for o in alone.options] == ["toy"]
    only_x402 = read_any_challenge({**x402_headers(5), "toy-price": "7"}, b"", assets=lambda n, t: None,
                                   protocols=("x402",), registry=registry)
    assert [o.protocol for o in only_x402.options] == ["x402"]


def test_the_old_module_names_still_import() -> None:
    from paywire.client.protocols import (  # noqa: F401
        HASH_MISMATCH,
        L402Offer,
        MppOffer,
        accept_payment_value,
        credential_field,
        l402_authorization,
        l402_offers,
        mpp_offers,
        other_variant,
        protocol_rank,
    )

    assert HASH_MISMATCH == "challenge hash mismatch"
    assert protocols.PROTOCOLS == ("x402", "mpp", "l402")


# ------------------------------------------------------------------------------------------------ registered


class ToyScheme:
    """The wallet side of the toy protocol: "signs" by echoing the server's nonce with the amount."""

    scheme = "toy"
    network_pattern = "toy:*"

    def __init__(self) -> None:
        self.signed: list[int] = []

    def can_pay(self, requirements: PaymentRequirements) -> bool:
        return requirements.asset == "sat"

    async def create_payload(self, requirements: PaymentRequirements) -> Mapping[str, Any]:
        self.signed.append(requirements.amount)
        return {"paid": f"{requirements.amount}:{requirements.extra['nonce']}"}

    def ledger_fields(self, payload: Mapping[str, Any]) -> tuple[str | None, int | None]:
        return None, None


class PayingToy(ToyProtocol):
    """The toy protocol with a credential the wallet's scheme makes (``Toy-Nonce`` names the 402)."""

    name = "toy-pay"

    def read(self, headers: Mapping[str, str], body: bytes, assets: object) -> Challenge | None:
        price = headers.get("toy-price")
        if price is None:
            return None
        r = PaymentRequirements(scheme="toy", network="toy:1", amount=int(price), asset="sat", pay_to="toy-shop",
                                max_timeout_seconds=60, extra={"nonce": headers.get("toy-nonce", "")})
        return Challenge(0, (Option(0, r, None, self.name),), None, www_authenticate="Toy")

    async def credential(self, challenge: Challenge, option: Option, scheme: Any, *,
                         variant: str) -> PaymentAttempt:
        payload = await scheme.create_payload(option.requirements)
        return PaymentAttempt("Toy-Paid", payload["paid"], option.requirements, 0, payment_id=payload["paid"])


@pytest.fixture
def toy() -> Iterator[PayingToy]:
    proto = protocols.register(PayingToy())
    try:
        yield proto
    finally:
        protocols.unregister(proto.name)


def toy_shop(seen: list[str | None]) -> Any:
    """A real HTTP server's app: 402 with ``Toy-Price: 7`` until the request carries ``Toy-Paid: 7:n-1``."""

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        headers = {k.decode().lower(): v.decode() for k, v in scope["headers"]}
        seen.append(headers.get("toy-paid"))
        if headers.get("toy-paid") == "7:n-1":
            status, extra, body = 200, [(b"toy-receipt", b"ref-42")], b"the goods"
        else:
            status, extra, body = 402, [(b"toy-price", b"7"), (b"toy-nonce", b"n-1")], b"pay me"
        await send({"type": "http.response.start", "status": status,
                    "headers": [(b"content-length", str(len(body)).encode()), *extra]})
        await send({"type": "http.response.body", "body": body})

    return app


async def test_a_registered_protocol_is_allowed_by_the_policy_and_paid_end_to_end(toy: PayingToy) -> None:
    assert protocols.protocol_names() == ("x402", "mpp", "l402", "toy-pay")
    assert [p.name for p in protocols.registered()] == ["x402", "mpp", "l402", "toy-pay"]
    policy = Policy(protocols=("x402", "toy-pay"))
    scheme = ToyScheme()
    buyer = Buyer([scheme], policy, account="0x" + "11" * 20)
    assert [p.name for p in buyer.protocols] == ["x402", "mpp", "l402", "toy-pay"]
    seen: list[str | None] = []
    async with serve_asgi(toy_shop(seen)) as url, httpx.AsyncClient(transport=PaymentTransport(buyer), timeout=60) as c:
        r = await c.get(url + "/goods")
    assert (r.status_code, r.text) == (200, "the goods")
    assert seen == [None, "7:n-1"] and scheme.signed == [7]
    receipt = receipt_of(r)
    assert receipt is not None
    assert (receipt.outcome, receipt.protocol, receipt.amount, receipt.pay_to, receipt.tx) == (
        "paid", "toy-pay", 7, "toy-shop", "ref-42")


async def test_a_registered_protocol_the_policy_leaves_out_is_not_paid(toy: PayingToy) -> None:
    """The default policy (x402, MPP, L402) does not read the toy challenge at all: nothing is signed or sent."""
    seen: list[str | None] = []
    scheme = ToyScheme()
    buyer = Buyer([scheme], Policy(), account="0x" + "11" * 20)
    async with serve_asgi(toy_shop(seen)) as url, httpx.AsyncClient(transport=PaymentTransport(buyer), timeout=60) as c:
        with pytest.raises(PaymentError) as ei:
            await c.get(url + "/goods")
    assert not isinstance(ei.value, PaymentRefused) or ei.value.rule == "protocols"
    assert seen == [None] and scheme.signed == []


def test_policy_names_must_be_builtin_or_registered() -> None:
    with pytest.raises(ConfigError, match=r"Policy\(protocols=...\): unknown \['x420'\] \(use x402, mpp, l402\)$"):
        Policy(protocols=("x420",))
    with pytest.raises(ConfigError, match=r"unknown \['toy-pay'\]"):
        Policy(protocols=("toy-pay",))
    proto = protocols.register(PayingToy())
    try:
        assert Policy(protocols=("toy-pay",)).protocols == ("toy-pay",)
        with pytest.raises(ConfigError, match=r"use x402, mpp, l402, toy-pay"):
            Policy(protocols=("x420",))
        with pytest.raises(ConfigError, match="already registered"):
            protocols.register(PayingToy())
        assert protocols.register(proto) is proto  # the same object again is fine
    finally:
        protocols.unregister("toy-pay")
    with pytest.raises(ConfigError, match="built in"):
        protocols.register(type("FakeMpp", (ToyProtocol,), {"name": "mpp"})())
    assert protocols.protocol_names() == protocols.BUILTIN
