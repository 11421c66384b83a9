"""x402 on the buyer: ``PAYMENT-REQUIRED`` (or a v1 body) in, ``PAYMENT-SIGNATURE`` / ``X-PAYMENT`` out,
``PAYMENT-RESPONSE`` read back. The wire helpers live in :mod:`paywire.client.core`."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Final

from paywire.client.core import (
    Challenge,
    Option,
    PaymentAttempt,
    advertises_payment_id,
    build_payment,
    new_payment_id,
    parse_settlement,
    read_challenge,
)
from paywire.client.protocols.base import X402, AssetLookup, NoResign, PaidReceipt, WalletAbilities

if TYPE_CHECKING:
    from paywire.schemes.registry import ClientScheme


class X402Protocol(NoResign):
    name = X402
    reuses_credential = False

    def request_headers(self, wallet: WalletAbilities) -> Mapping[str, str]:
        return {}

    def read(self, headers: Mapping[str, str], body: bytes, assets: AssetLookup) -> Challenge | None:
        """The v2 header, else a v1 body; ``WireError`` when the 402 has neither (or an unreadable one)."""
        return read_challenge(headers, body)

    async def credential(self, challenge: Challenge, option: Option, scheme: ClientScheme, *,
                         variant: str) -> PaymentAttempt:
        inner = await scheme.create_payload(option.requirements)
        added = None
        hook = getattr(scheme, "payload_extensions", None)  # a scheme's own extension data (eip2612GasSponsoring)
        if hook is not None and challenge.extensions and option.v1 is None:
            added = await hook(option.requirements, challenge.extensions)
        pid = new_payment_id() if advertises_payment_id(challenge) else None  # only echoed when advertised
        return build_payment(challenge, option, inner, pid, ledger=scheme.ledger_fields(inner),
                             extensions=added)

    def receipt(self, headers: Mapping[str, str], option: Option) -> PaidReceipt:
        settlement = parse_settlement(headers)
        return PaidReceipt(settlement, settlement.transaction if settlement is not None else None)


PROTOCOL: Final = X402Protocol()

__all__ = ["PROTOCOL", "X402Protocol"]
