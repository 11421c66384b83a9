"""``evm/charge`` end to end on the embedded chain: credentials signed by us and by pympp, settled through
our EIP-3009 facilitator, exactly once under replay and concurrency (checklist 106–111)."""

from __future__ import annotations

import asyncio
import dataclasses
import os

import pytest
import pytest_asyncio

from paywire.evm.crypto import keccak256
from paywire.mpp import problems as P
from paywire.mpp.challenge import ChallengeBinder, parse_www_authenticate
from paywire.mpp.credential import Credential, parse_authorization
from paywire.mpp.methods.evm_charge import (
    CONCAT,
    JSON_ARRAY,
    EvmAuthorization,
    EvmChargeMethod,
    evm_charge_request,
    sign_evm_charge,
    to_x402,
)
from paywire.mpp.redeem import NoCredential, Paid, Rejected, redeem
from paywire.mpp.server import MppServer, Offer
from paywire.store.mpp import MppStore
from tests.helpers import close_devnet, facilitator_for, new_devnet, payer_of

pytestmark = pytest.mark.asyncio(loop_scope="module")

AMOUNT = 10_000


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def net():
    n = await new_devnet("embedded")
    yield n
    await close_devnet(n)


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def world(net, tmp_path_factory):
    store = await MppStore.open(f"sqlite:///{tmp_path_factory.mktemp('mpp') / 'mpp.db'}")
    server = MppServer("shop.example", ChallengeBinder([os.urandom(32)]))
    method = EvmChargeMethod(facilitator_for(net), [net.asset])
    offer = Offer("evm", "charge", evm_charge_request(net.asset, net.payee.address, AMOUNT))
    yield server, store, method, offer
    await store.aclose()


async def balances(net):
    return await net.token_balance(net.payer.address), await net.token_balance(net.payee.address)


async def test_pay_with_spec_nonce_moves_tokens_once(net, world):
    """A spec-style (keccak(id‖realm)) credential settles on chain; receipt reference = tx hash."""
    server, store, method, offer = world
    [ch] = parse_www_authenticate(server.issue(offer).to_header())
    cred = await sign_evm_charge(ch, payer_of(net), net.asset, variant=CONCAT)
    before = await balances(net)
    out = await redeem(server, store, [method], cred.to_authorization(), [offer])
    assert isinstance(out, Paid), out
    assert out.receipt.method == "evm" and out.receipt.challenge_id == ch.id
    assert out.receipt.reference.startswith("0x") and out.receipt.extra["chainId"] == 31337
    receipt = await net.chain.get_transaction_receipt(out.receipt.reference)
    assert receipt is not None and receipt.status == 1
    after = await balances(net)
    assert after == (before[0] - AMOUNT, before[1] + AMOUNT)
    row = await store.get(ch.id)
    assert row is not None and row.state == "settled" and row.reference == out.receipt.reference

    again = await redeem(server, store, [method], cred.to_authorization(), [offer])
    assert isinstance(again, Rejected) and again.problem.type is P.INVALID_CHALLENGE
    assert again.problem.status == 402
    assert await balances(net) == after


async def test_pympp_style_json_nonce_and_pympp_signed_credential(net, world):
    """Both derivations settle: our signer with the JSON-array nonce, and pympp's own evm client."""
    server, store, method, offer = world
    [ch] = parse_www_authenticate(server.issue(offer).to_header())
    cred = await sign_evm_charge(ch, payer_of(net), net.asset, variant=JSON_ARRAY)
    before = await balances(net)
    assert isinstance(await redeem(server, store, [method], cred.to_authorization(), [offer]), Paid)

    mpp = pytest.importorskip("mpp", reason="pympp (official MPP SDK) not installed")
    from eth_account import Account
    from mpp.methods.evm.client import _config

    hdr = server.issue(offer).to_header()
    their_challenge = mpp.Challenge.from_www_authenticate(hdr)
    cfg = _config(currency=net.asset.address, chain_id=31337, decimals=6,
                  account=Account.from_key(net.payer.private_key),
                  authorization={"name": net.asset.name, "version": net.asset.version})
    their = await cfg.create_credential(their_challenge)
    out = await redeem(server, store, [method], their.to_authorization(), [offer])
    assert isinstance(out, Paid), out
    assert await balances(net) == (before[0] - 2 * AMOUNT, before[1] + 2 * AMOUNT)


async def test_concurrent_presentations_settle_once(net, world):
    """Checklist 110: eight concurrent presentations of one credential → one settlement, one Paid."""
    server, store, method, offer = world
    [ch] = parse_www_authenticate(server.issue(offer).to_header())
    auth = (await sign_evm_charge(ch, payer_of(net), net.asset)).to_authorization()
    before = await balances(net)
    outs = await asyncio.gather(*(redeem(server, store, [method], auth, [offer]) for _ in range(8)))
    paid = [o for o in outs if isinstance(o, Paid)]
    assert len(paid) == 1
    assert all(isinstance(o, Rejected) and o.problem.type is P.INVALID_CHALLENGE for o in outs if o not in paid)
    assert await balances(net) == (before[0] - AMOUNT, before[1] + AMOUNT)


def _resign_payload(cred: Credential, **changes) -> Credential:
    auth = EvmAuthorization.from_payload(cred.payload)
    return dataclasses.replace(cred, payload=dataclasses.replace(auth, **changes).to_payload())


async def test_payload_checks_refuse_before_anything_moves(net, world):
    """Wrong nonce / value / recipient / signature / source → the specified problem; no tokens move."""
    server, store, method, offer = world
    before = await balances(net)
    signer = payer_of(net)

    async def fresh() -> tuple:
        [ch] = parse_www_authenticate(server.issue(offer).to_header())
        return ch, await sign_evm_charge(ch, signer, net.asset)

    async def attempt(cred: Credential):
        return await redeem(server, store, [method], cred.to_authorization(), [offer])

    _, cred = await fresh()
    out = await attempt(_resign_payload(cred, nonce=keccak256(b"other")))
    assert isinstance(out, Rejected) and out.problem.type is P.VERIFICATION_FAILED
    assert "challenge hash" in out.problem.detail
    _, cred = await fresh()
    out = await attempt(_resign_payload(cred, value=AMOUNT - 1))
    assert isinstance(out, Rejected) and out.problem.type is P.PAYMENT_INSUFFICIENT
    _, cred = await fresh()
    out = await attempt(_resign_payload(cred, to=net.payer.address))
    assert isinstance(out, Rejected) and out.problem.type is P.VERIFICATION_FAILED
    _, cred = await fresh()
    sig = bytearray(EvmAuthorization.from_payload(cred.payload).signature)
    sig[10] ^= 1
    out = await attempt(_resign_payload(cred, signature=bytes(sig)))
    assert isinstance(out, Rejected) and out.problem.type is P.VERIFICATION_FAILED
    _, cred = await fresh()
    out = await attempt(dataclasses.replace(cred, source="did:pkh:eip155:31337:" + net.payee.address))
    assert isinstance(out, Rejected) and out.problem.type is P.VERIFICATION_FAILED
    out = await attempt(dataclasses.replace(cred, payload={"type": "permit2"}))
    assert isinstance(out, Rejected) and out.problem.type is P.MALFORMED_CREDENTIAL
    assert isinstance(await redeem(server, store, [method], None, [offer]), NoCredential)
    assert await balances(net) == before
    # a refused proof was released: the honest credential for that challenge still pays
    assert isinstance(await attempt(cred), Paid)


async def test_insufficient_balance_refuses_and_releases(net, world):
    """A payer without funds: settlement refused (payment-insufficient), the claim released, nothing moved."""
    from paywire.evm.signer import LocalSigner

    server, store, method, offer = world
    poor = LocalSigner.generate()
    [ch] = parse_www_authenticate(server.issue(offer).to_header())
    cred = await sign_evm_charge(ch, poor, net.asset)
    out = await redeem(server, store, [method], cred.to_authorization(), [offer])
    assert isinstance(out, Rejected) and out.problem.type is P.PAYMENT_INSUFFICIENT
    assert await store.get(ch.id) is None


async def test_x402_adapter_shape(net):
    """The adapter builds the exact/EIP-3009 pair our facilitator expects."""
    offer = Offer("evm", "charge", evm_charge_request(net.asset, net.payee.address, AMOUNT))
    server = MppServer("r", ChallengeBinder([b"k" * 32]))
    [ch] = parse_www_authenticate(server.issue(offer).to_header())
    cred = parse_authorization((await sign_evm_charge(ch, payer_of(net), net.asset)).to_authorization())
    payload, req = to_x402(EvmAuthorization.from_payload(cred.payload), net.asset)
    assert req.scheme == "exact" and req.network == net.info.network and req.amount == AMOUNT
    assert req.extra == {"assetTransferMethod": "eip3009", "name": net.asset.name, "version": net.asset.version}
    assert payload.accepted == req and payload.payload["authorization"]["nonce"] == cred.payload["nonce"]
    v = await facilitator_for(net).verify(payload, req)
    assert v.is_valid, v
