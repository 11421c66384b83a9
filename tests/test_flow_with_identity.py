"""The identity a paid request proved rides on its payment (``paywire.server.flow._with_identity``): the claim
gets the DID, the facilitator's payload gets the ``paywire-identity`` extension, everything else is unchanged."""

from __future__ import annotations

import dataclasses

import pytest

from paywire.identity.did import Identity
from paywire.identity.metadata import IDENTITY_EXTENSION, identity_of
from paywire.server.core import PaidRoute, Proceed, Reply
from paywire.server.flow import _replacer, _with_identity
from paywire.x402.models import PaymentPayload, PaymentRequirements

OFFER = PaymentRequirements(scheme="exact", network="eip155:8453", amount=10_000, asset="0x" + "1" * 40,
                            pay_to="0x" + "2" * 40, max_timeout_seconds=60, extra={"name": "USD Coin", "version": "2"})
WHO = Identity("did:pkh:eip155:8453:0x" + "3" * 40, ("siwx",), ("0x" + "3" * 40,))


def _proceed(extensions: dict[str, object] | None) -> Proceed:
    payload = PaymentPayload(accepted=OFFER, payload={"signature": "0x00"}, extensions=extensions)
    return Proceed(PaidRoute("GET /r", (OFFER,)), payload, OFFER, OFFER, False, "key", "hash", "pid", (OFFER,), 6,
                   "https://api.example.com/r", "x402", "0x" + "3" * 40)


@pytest.mark.parametrize("extensions", [None, {}, {"payment-identifier": {"info": {"id": "abc"}}}])
def test_proven_identity_is_named_on_the_claim_and_to_the_facilitator(extensions: dict[str, object] | None) -> None:
    before = _proceed(extensions)
    got = _with_identity(before, WHO)
    assert got.identity == WHO.did, "the claim does not carry the proven DID"
    assert isinstance(got.payload, PaymentPayload) and identity_of(got.payload.extensions) == WHO.did, \
        "the facilitator is not told the DID"
    assert {k: v for k, v in (got.payload.extensions or {}).items() if k != IDENTITY_EXTENSION} == (extensions or {}), \
        "the payer's own extensions changed"
    assert before.payload.extensions == extensions and before.identity is None, "the original decision changed"
    expected = dataclasses.replace(before, identity=WHO.did, payload=dataclasses.replace(
        before.payload, extensions={**(extensions or {}), IDENTITY_EXTENSION: {"info": {"did": WHO.did}}}))
    assert got == expected, "a field other than the identity and the payload's extensions changed"


def test_without_an_identity_or_a_payment_nothing_changes() -> None:
    p = _proceed(None)
    assert _with_identity(p, None) is p
    reply = Reply(402, (), b"")
    assert _with_identity(reply, WHO) is reply


def test_replacer_refuses_a_class_that_validates_in_post_init() -> None:
    @dataclasses.dataclass(frozen=True, slots=True)
    class Checked:
        x: int

        def __post_init__(self) -> None:
            if self.x < 0:
                raise ValueError("negative")

    with pytest.raises(TypeError):
        _replacer(Checked)
