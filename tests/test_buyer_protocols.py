"""The buyer's protocols are peers behind one interface: each is a module with a ``PROTOCOL``, listed once in
``BUILTIN``, and the challenge reader merges whatever the registered protocols read from a 402."""

from __future__ import annotations

from collections.abc import Mapping

from paywire.client import protocols
from paywire.client.core import Challenge, Option, PaymentAttempt, read_any_challenge
from paywire.client.protocols.base import NoResign, PaidReceipt, WalletAbilities
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
