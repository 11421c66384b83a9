"""A plain voucher checked without the facilitator (spec: "A plain EOA-authorized voucher may be verified locally
when the server's mirrored onchain state is fresh"): the config binds to the channel id and the offer, one
``ecrecover`` names the payer authorizer, and the ceiling is within the mirrored balance and above the claims.
Pure."""

from __future__ import annotations

from paywire.evm import batch as b
from paywire.evm.crypto import address_bytes, recover_address
from paywire.schemes.evm_batch import payload as pl
from paywire.schemes.evm_batch.facilitator import Invalid, check_config
from paywire.x402.models import PaymentRequirements


def check_voucher(p: pl.ChannelPayload, requirements: PaymentRequirements, chain_id: int, balance: int,
                  total_claimed: int) -> str | None:
    """None when the voucher is good against the mirrored (``balance``, ``total_claimed``); else the spec's
    reason. A contract-wallet payer (``payerAuthorizer`` zero) needs the chain: ``voucher_signature``."""
    try:
        check_config(p, requirements, chain_id)
    except Invalid as exc:
        return exc.reason
    v = p.voucher
    authorizer = p.config.payer_authorizer
    if int(authorizer, 16) == 0 or len(v.signature) != 65:
        return pl.VOUCHER_SIGNATURE
    recovered = recover_address(b.voucher_digest(p.channel_id, v.max_claimable, chain_id), v.signature)
    if recovered is None or recovered != address_bytes(authorizer):
        return pl.VOUCHER_SIGNATURE
    if v.max_claimable > balance:
        return pl.CUMULATIVE_EXCEEDS_BALANCE
    if v.max_claimable <= total_claimed:
        return pl.CUMULATIVE_BELOW_CLAIMED
    return None


__all__ = ["check_voucher"]
