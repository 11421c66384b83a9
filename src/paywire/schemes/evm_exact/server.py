"""Server side of ``exact`` on EVM: turn a price into an EIP-3009 offer (``PaymentRequirements``), and say
which authorization a payment for it spends."""

from __future__ import annotations

from collections.abc import Mapping
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from paywire.errors import ConfigError, WireError
from paywire.evm.assets import KNOWN_ASSETS, Asset, AssetRegistry
from paywire.evm.permit2 import claim_of, is_permit2_payload
from paywire.money import amount_of, is_money, parse_money, to_atomic
from paywire.schemes.evm_exact.identity import authorization_key_and_payer, payer_of
from paywire.schemes.registry import OfferSpec
from paywire.x402.models import PaymentRequirements
from paywire.x402.reasons import INVALID_EXACT_EVM_NONCE_ALREADY_USED, PERMIT2_INVALID_NONCE

if TYPE_CHECKING:
    from paywire.chain.base import Chain
    from paywire.settlement.rail import Mined

LOOKBACK_BLOCKS = 100_000
"""How far back :meth:`ExactEvmServer.find_settlement` looks for the authorization's use (a day and more on
chains with 1-2 s blocks; an authorization is valid for minutes)."""


class ExactEvmServer:
    """``exact`` × ``eip155:*`` for the seller role."""

    scheme = "exact"
    network_pattern = "eip155:*"
    spent_reasons = frozenset({INVALID_EXACT_EVM_NONCE_ALREADY_USED, PERMIT2_INVALID_NONCE})
    """Settle refusals that mean "this authorization is spent" (see ``SettlementLookup``)."""

    def offer(self, spec: OfferSpec) -> tuple[PaymentRequirements, int]:
        asset = spec.assets.resolve(spec.network, spec.asset, money=is_money(spec.price), price=spec.price)
        permit2 = spec.extra.get("assetTransferMethod") == "permit2"
        if asset is None:  # an explicit token address with its domain in ``extra`` and an atomic price
            name, version = spec.extra.get("name"), spec.extra.get("version")
            if permit2 and not (isinstance(name, str) and isinstance(version, str)):
                name, version = "", ""  # Permit2 signs with its own domain; the token's is not needed
            if not isinstance(name, str) or not isinstance(version, str):
                raise ConfigError(f"token {spec.asset} on {spec.network} needs its EIP-712 domain: give "
                                  "Offer(asset=Asset(...)) or extra={'name': ..., 'version': ...}")
            asset = Asset(spec.network, str(spec.asset), name, version)
        amount = amount_of(spec.price, asset.decimals)
        extra: dict[str, Any] = {"name": asset.name, "version": asset.version} if asset.name else {}
        extra.update(spec.extra)
        req = PaymentRequirements(scheme=spec.scheme, network=spec.network, amount=amount, asset=asset.address,
                                  pay_to=spec.pay_to, max_timeout_seconds=spec.max_timeout_seconds, extra=extra)
        return req, asset.decimals

    def decimals(self, requirements: PaymentRequirements, assets: AssetRegistry) -> int:
        return assets.decimals_of(requirements.network, requirements.asset)

    def claim(self, requirements: PaymentRequirements, payload: Mapping[str, Any]) -> tuple[str, str | None] | None:
        if is_permit2_payload(payload):
            return claim_of(requirements.network, dict(payload))
        return authorization_key_and_payer(requirements.network, requirements.asset, payload)

    def payer(self, payload: Mapping[str, Any]) -> str | None:
        if is_permit2_payload(payload):
            found = claim_of("", dict(payload))
            return found[1] if found else None
        return payer_of(payload)

    async def find_settlement(self, requirements: PaymentRequirements, payload: Mapping[str, Any],
                              chain: Chain) -> Mined | None:
        """The transaction that spent this payment's authorization, judged by its ``Transfer`` log to
        ``pay_to``: EIP-3009's ``AuthorizationUsed`` log, or for Permit2 the payer's ``Transfer`` whose transaction
        sent this payment's proxy call (one made with an EIP-2612 permit beside it is not matched), in the last
        :data:`LOOKBACK_BLOCKS` blocks."""
        from paywire.chain.rail import EvmNetwork, EvmRail

        inner = dict(payload)
        try:
            if is_permit2_payload(inner):
                from paywire.evm.permit2 import Permit2Payload
                from paywire.schemes.evm_permit2 import EXACT
                from paywire.schemes.evm_permit2 import intent_of as permit2_intent

                p = Permit2Payload.from_wire(inner)
                intent = permit2_intent(EXACT, p, requirements, p.authorization.amount)
            else:
                from paywire.schemes.evm_exact.facilitator import intent_of
                from paywire.schemes.evm_exact.payload import ExactEvmPayload

                intent = intent_of(ExactEvmPayload.from_wire(inner), requirements)
        except (WireError, ValueError, KeyError):
            return None
        if intent.pay_to.lower() != requirements.pay_to.lower() or intent.amount < requirements.amount:
            return None  # not an authorization for this offer: nothing it did paid this seller
        return await EvmRail(EvmNetwork(requirements.network, chain, ()),
                             log_lookback_blocks=LOOKBACK_BLOCKS).find_use(intent)


def exact_evm_offer(
    asset: Asset,
    pay_to: str,
    *,
    amount: int | None = None,
    price: str | Decimal | None = None,
    max_timeout_seconds: int = 60,
) -> PaymentRequirements:
    """An ``exact`` EIP-3009 offer for ``amount`` atomic units (or a money ``price``) of ``asset``."""
    if (amount is None) == (price is None):
        raise ConfigError("give exactly one of amount= (atomic units) or price= ('$0.01')")
    atomic = amount if amount is not None else to_atomic(parse_money(price or "0"), asset.decimals)
    return PaymentRequirements(
        scheme="exact",
        network=asset.network,
        amount=atomic,
        asset=asset.address,
        pay_to=pay_to,
        max_timeout_seconds=max_timeout_seconds,
        extra={"name": asset.name, "version": asset.version},
    )


# ``Asset``, ``AssetRegistry``, ``KNOWN_ASSETS`` live in ``paywire.evm.assets`` and the money helpers in
# ``paywire.money``; they stay importable from here for code written before the move.
__all__ = ["KNOWN_ASSETS", "Asset", "AssetRegistry", "ExactEvmServer", "exact_evm_offer", "parse_money", "to_atomic"]
