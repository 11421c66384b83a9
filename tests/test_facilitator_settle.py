"""Exactly-once settlement on a durable store, in one process: concurrency, repeats, two instances on one
store, refusals with the digest's reason codes, takeover of dead claims, and recovery of recorded
transactions that never reached the chain. Runs on the embedded chain and on anvil, SQLite and PostgreSQL.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from pathlib import Path

import httpx
import pytest
import pytest_asyncio

from paywire.chain.devkeys import dev_keys
from paywire.chain.tx import TxSender
from paywire.evm import token
from paywire.facilitator.app import SETTLEMENT_ID_HEADER, create_app
from paywire.facilitator.core import Facilitator
from paywire.schemes.evm_exact.payload import ExactEvmPayload
from paywire.serving import serve_asgi
from paywire.store.settlements import SettlementStore, requirements_digest, settlement_id
from paywire.x402.models import FacilitatorRequest, PaymentPayload, PaymentRequirements
from tests.helpers import CHAIN_KINDS, close_devnet, new_devnet, offer, payer_of, sign
from tests.test_facilitator_helpers import authorization_uses, facilitator_with_store

pytestmark = pytest.mark.asyncio(loop_scope="module")

# dev keys 0-3 belong to the devnet (deployer/facilitator/payer/payee); tests use 6-9 as extra gas keys
KEYS = dev_keys(10)


@pytest_asyncio.fixture(loop_scope="module", scope="module", params=CHAIN_KINDS)
async def net(request):
    n = await new_devnet(request.param)
    yield n
    await close_devnet(n)


@pytest_asyncio.fixture(loop_scope="module")
async def store(tmp_path: Path):
    s = await SettlementStore.open(f"sqlite:///{tmp_path / 'fac.db'}")
    yield s
    await s.aclose()


def body(p: PaymentPayload, req: PaymentRequirements) -> dict:
    return FacilitatorRequest(x402_version=2, payment_payload=p, payment_requirements=req).to_wire()


def sid_of(p: PaymentPayload, req: PaymentRequirements) -> str:
    a = ExactEvmPayload.from_wire(p.payload).authorization
    return settlement_id(req.network, req.asset, a.from_, a.nonce)


async def nonce_of(net, address: str) -> int:
    return await net.chain.get_transaction_count(address, "latest")


async def test_fifty_concurrent_settles_over_http_move_money_once(net, store_url):
    """50 concurrent POST /settle of one payment → one on-chain transfer and 50 identical answers
    (checklist 44/45; money safety), on SQLite and PostgreSQL."""
    st = await SettlementStore.open(store_url)
    fac = facilitator_with_store(net, st)
    app = create_app(Facilitator([fac], store=st))
    req = offer(net, 4_321)
    p = await sign(req, payer_of(net))
    payer_before = await net.token_balance(net.payer.address)
    gas_nonce = await nonce_of(net, net.facilitator.address)
    try:
        async with serve_asgi(app) as url, httpx.AsyncClient(timeout=90) as http:
            rs = await asyncio.gather(*(http.post(url + "/settle", json=body(p, req)) for _ in range(50)))
            assert {r.status_code for r in rs} == {200}
            answers = [r.json() for r in rs]
            assert all(a == answers[0] for a in answers), {str(a) for a in answers}
            assert answers[0]["success"] is True and answers[0]["transaction"].startswith("0x")
            assert answers[0]["payer"] == net.payer.address and answers[0]["amount"] == "4321"
            sid = rs[0].headers[SETTLEMENT_ID_HEADER]
            assert sid == sid_of(p, req)
            rec = (await http.get(f"{url}/settlements/{sid}")).json()
        assert rec["state"] == "settled" and rec["transaction"] == answers[0]["transaction"]
        assert rec["requirementsDigest"] == requirements_digest(req.to_wire())
        assert await authorization_uses(net, p) == [answers[0]["transaction"]]
        assert await net.token_balance(net.payer.address) == payer_before - 4_321
        assert await nonce_of(net, net.facilitator.address) == gas_nonce + 1  # one transaction, no reverted extras
    finally:
        await st.aclose()


async def test_repeated_settle_answers_the_recorded_outcome(net, store):
    """A settle repeated after success answers the same tx hash and sends nothing (idempotent settle)."""
    fac = facilitator_with_store(net, store)
    req = offer(net, 1_111)
    p = await sign(req, payer_of(net))
    first = await fac.settle(p, req)
    assert first.success
    gas_nonce = await nonce_of(net, net.facilitator.address)
    again = await asyncio.gather(*(fac.settle(p, req) for _ in range(5)))
    assert all(r == first for r in again)
    assert await nonce_of(net, net.facilitator.address) == gas_nonce
    # a fresh facilitator object on the same store (e.g. after a restart) answers from the record too
    restarted = facilitator_with_store(net, store)
    assert await restarted.settle(p, req) == first


async def test_repeated_settle_answers_from_the_record_while_the_node_is_down(net, store):
    """A settle repeated after success is answered from the record even when the node cannot be reached (the
    row is not read before verifying any more; a verification that fails reads it)."""
    import socket

    from paywire.chain import RpcChain
    from paywire.chain.keepalive import KeepAliveTransport

    fac = facilitator_with_store(net, store)
    req = offer(net, 1_212)
    p = await sign(req, payer_of(net))
    first = await fac.settle(p, req)
    assert first.success
    with socket.socket() as s:  # a port nobody listens on any more
        s.bind(("127.0.0.1", 0))
        dead_port = s.getsockname()[1]
    dead = RpcChain(KeepAliveTransport(f"http://127.0.0.1:{dead_port}", timeout=2.0))
    try:
        cut_off = facilitator_with_store(net, store, chain=dead)
        assert await cut_off.settle(p, req) == first
    finally:
        await dead.aclose()


async def test_two_instances_on_one_store_settle_once(net, store_url):
    """Two facilitators (separate store connections, separate gas keys) racing on one payment: one
    transfer, every answer identical — the database constraint decides, not process memory."""
    a = await SettlementStore.open(store_url, instance_id="fac-a")
    b = await SettlementStore.open(store_url, instance_id="fac-b")
    try:
        fa = facilitator_with_store(net, a, keys=[KEYS[6]])
        fb = facilitator_with_store(net, b, keys=[KEYS[7]])
        req = offer(net, 2_468)
        p = await sign(req, payer_of(net))
        before = await net.token_balance(net.payee.address)
        results = await asyncio.gather(*((fa if i % 2 else fb).settle(p, req) for i in range(20)))
        assert all(r == results[0] for r in results) and results[0].success
        assert await authorization_uses(net, p) == [results[0].transaction]
        assert await net.token_balance(net.payee.address) == before + 2_468
        row = await a.get(sid_of(p, req))
        assert row is not None and row.state == "settled" and row.owner in ("fac-a", "fac-b")
    finally:
        await a.aclose()
        await b.aclose()


async def test_refusals_carry_the_digest_reason_codes(net, store):
    """Replayed, expired, underpaid, wrong-recipient and wrong-chain payments are refused with the
    reason codes of spec-digest §4.5/§12.4 (checklist 48-51, 55) and nothing is recorded or sent."""
    fac = facilitator_with_store(net, store)
    gas_nonce = await nonce_of(net, net.facilitator.address)
    payer = payer_of(net)

    # expired: validBefore already in the past (signed with a clock 10 minutes back)
    req = offer(net)
    old = await sign(req, payer, clock=lambda: time.time() - 600)
    r = await fac.settle(old, req)
    assert (r.success, r.error_reason, r.transaction) == (False, "invalid_exact_evm_payload_authorization_valid_before", "")

    # underpaid: the authorization is for less than the offer
    cheap = offer(net, 10)
    p = await sign(cheap, payer)
    r = await fac.settle(dataclasses.replace(p, accepted=req), req)
    assert r.error_reason == "invalid_exact_evm_payload_authorization_value_mismatch"

    # wrong recipient: the authorization pays someone else
    other = offer(net, pay_to=net.deployer.address)
    p = await sign(other, payer)
    r = await fac.settle(dataclasses.replace(p, accepted=req), req)
    assert r.error_reason == "invalid_exact_evm_payload_recipient_mismatch"

    # wrong chain: an offer on a chain this facilitator does not settle on
    foreign = offer(net, network="eip155:8453")
    r = await fac.settle(await sign(foreign, payer), foreign)
    assert r.error_reason == "invalid_network"

    for bad in (old,):
        assert await store.get(sid_of(bad, req)) is None
    assert await nonce_of(net, net.facilitator.address) == gas_nonce  # nothing was broadcast

    # replayed: settled once; the same authorization under other requirements is refused …
    req = offer(net, 3_000)
    p = await sign(req, payer)
    assert (await fac.settle(p, req)).success
    other_req = dataclasses.replace(req, max_timeout_seconds=120)
    r = await fac.settle(dataclasses.replace(p, accepted=other_req), other_req)
    assert (r.success, r.error_reason, r.transaction) == (False, "invalid_exact_evm_nonce_already_used", "")
    # … and a facilitator without its record (another operator) finds the nonce used on chain
    stranger = facilitator_with_store(net, None)
    r = await stranger.settle(p, req)
    assert (r.success, r.error_reason) == (False, "invalid_exact_evm_nonce_already_used")
    assert len(await authorization_uses(net, p)) == 1


async def test_claim_of_a_dead_instance_is_taken_over(net, store):
    """A claim whose owner died before sending anything (lease ran out) is taken over and settled."""
    req = offer(net, 555)
    p = await sign(req, payer_of(net))
    a = ExactEvmPayload.from_wire(p.payload).authorization
    dead = SettlementStore(store.db, instance_id="dead")
    claimed, _ = await dead.claim(network=req.network, asset=req.asset, payer=a.from_, nonce="0x" + a.nonce.hex(),
                                  requirements_digest=requirements_digest(req.to_wire()), request={},
                                  amount=a.value, pay_to=a.to, lease_seconds=0.01)
    assert claimed
    await asyncio.sleep(0.05)
    fac = facilitator_with_store(net, store)
    r = await fac.settle(p, req)
    assert r.success, r
    row = await store.get(sid_of(p, req))
    assert row is not None and row.state == "settled" and row.owner == store.instance_id and row.attempts == 2


async def _record_without_broadcast(net, store: SettlementStore, fac, p, req, sender: TxSender, nonce: int):
    """What a crash between 'record' and 'broadcast' leaves behind: a submitted row whose tx the chain never saw."""
    a = ExactEvmPayload.from_wire(p.payload).authorization
    from paywire.schemes.evm_exact.facilitator import intent_of

    intent = intent_of(ExactEvmPayload.from_wire(p.payload), req)
    claimed, _ = await store.claim(network=req.network, asset=req.asset, payer=a.from_, nonce="0x" + a.nonce.hex(),
                                   requirements_digest=intent.digest, request=intent.record, amount=a.value,
                                   pay_to=a.to, lease_seconds=0.01)
    assert claimed
    data = token.transfer_with_authorization(a.from_, a.to, a.value, a.valid_after, a.valid_before, a.nonce,
                                             ExactEvmPayload.from_wire(p.payload).signature)
    max_fee, tip = await sender.fees()
    tx = sender.sign_with(to=req.asset, data=data, value=0, gas=200_000, nonce=nonce, max_fee=max_fee, tip=tip,
                          chain_id=await net.chain.chain_id())
    assert await store.record_tx(sid_of(p, req), tx_hash=tx.hash, raw_tx=tx.raw, signer=tx.sender, tx_nonce=tx.nonce,
                                 previous_hash=None, lease_seconds=0.01)
    return tx


async def test_recorded_but_never_broadcast_is_rebroadcast_by_the_reconciler(net, store):
    """Crash after recording, before broadcasting: the reconciler sends the stored bytes; the row settles
    with exactly that hash and a later /settle answers it."""
    key = KEYS[8]
    fac = facilitator_with_store(net, store, keys=[key])
    sender = fac._nets[net.info.network].senders[0]
    req = offer(net, 777)
    p = await sign(req, payer_of(net))
    nonce = await net.chain.get_transaction_count(sender.address, "pending")
    tx = await _record_without_broadcast(net, store, fac, p, req, sender, nonce)
    assert await net.chain.request("eth_getTransactionByHash", [tx.hash]) is None
    await asyncio.sleep(0.05)
    stats = await fac.reconcile_once()
    assert stats["rebroadcast"] == 1
    await net.chain.wait_for_receipt(tx.hash)
    stats = await fac.reconcile_once()
    assert stats["settled"] == 1
    row = await store.get(sid_of(p, req))
    assert row is not None and row.state == "settled" and row.tx_hash == tx.hash
    r = await fac.settle(p, req)
    assert r.success and r.transaction == tx.hash
    assert await authorization_uses(net, p) == [tx.hash]


async def test_dead_recorded_transaction_is_re_signed(net, store):
    """The recorded tx can never be mined (its gas-key nonce was used by another tx): the reconciler signs a
    new one (recorded before broadcast), and the payment settles once."""
    key = KEYS[9]
    fac = facilitator_with_store(net, store, keys=[key])
    sender = fac._nets[net.info.network].senders[0]
    req = offer(net, 888)
    p = await sign(req, payer_of(net))
    nonce = await net.chain.get_transaction_count(sender.address, "pending")
    dead = await _record_without_broadcast(net, store, fac, p, req, sender, nonce)
    # the same key's nonce is consumed by something else
    other = TxSender(net.chain, key)
    await net.chain.wait_for_receipt(await other.send(net.payee.address, value=1))
    await asyncio.sleep(0.05)
    stats = await fac.reconcile_once()
    assert stats["rebroadcast"] == 1  # a re-signed transaction was sent
    row = await store.get(sid_of(p, req))
    assert row is not None and row.tx_hash != dead.hash and row.tx_hashes == (dead.hash, row.tx_hash)
    await net.chain.wait_for_receipt(row.tx_hash)
    await fac.reconcile_once()
    row = await store.get(sid_of(p, req))
    assert row is not None and row.state == "settled"
    assert await authorization_uses(net, p) == [row.tx_hash]


async def test_reconciler_fails_an_expired_unsent_claim_and_sends_a_fresh_one(net, store):
    """Claims left by a dead instance: an expired, unused authorization becomes failed; one still valid is
    sent by the reconciler itself (nobody else would before it expires) and a retried settle answers its
    transaction (issue 11 item 5)."""
    fac = facilitator_with_store(net, store)
    payer = payer_of(net)
    short = offer(net, 5, max_timeout_seconds=1)
    expired = await sign(short, payer)
    fresh_req = offer(net, 6)
    fresh = await sign(fresh_req, payer)
    for p, req in ((expired, short), (fresh, fresh_req)):
        a = ExactEvmPayload.from_wire(p.payload).authorization
        dead = SettlementStore(store.db, instance_id="dead")
        from paywire.schemes.evm_exact.facilitator import intent_of

        intent = intent_of(ExactEvmPayload.from_wire(p.payload), req)
        await dead.claim(network=req.network, asset=req.asset, payer=a.from_, nonce="0x" + a.nonce.hex(),
                         requirements_digest=intent.digest, request=intent.record, amount=a.value,
                         pay_to=a.to, lease_seconds=0.01)
    # let the short authorization expire on chain (blocks keep coming on the embedded chain only with txs)
    deadline = time.time() + 30
    valid_before = ExactEvmPayload.from_wire(expired.payload).authorization.valid_before
    while await net.chain.block_timestamp() < valid_before:
        assert time.time() < deadline
        await net.chain.wait_for_receipt(await TxSender(net.chain, KEYS[6]).send(net.payee.address, value=1))
        await asyncio.sleep(0.5)
    await fac.reconcile_once()
    gone = await store.get(sid_of(expired, short))
    assert gone is not None and gone.state == "failed"
    assert gone.error_reason == "invalid_exact_evm_payload_authorization_valid_before"
    kept = await store.get(sid_of(fresh, fresh_req))
    assert kept is not None and kept.state in ("submitted", "settled"), f"the fresh claim was not sent: {kept}"
    assert kept.owner == store.instance_id, "the reconciler did not take the dead instance's claim over"
    r = await fac.settle(fresh, fresh_req)
    assert r.success, r
    assert await authorization_uses(net, fresh) == [r.transaction], "the fresh authorization did not move once"


async def test_library_users_can_pass_a_store_url(net, tmp_path: Path):
    """``ExactEvmFacilitator(…, store="sqlite:///file.db")`` opens and migrates the store on first use."""
    url = f"sqlite:///{tmp_path / 'lib.db'}"
    fac = facilitator_with_store(net, None)
    fac = type(fac)(list(fac._nets.values()), store=url)
    req = offer(net, 99)
    p = await sign(req, payer_of(net))
    first = await fac.settle(p, req)
    assert first.success and await fac.settle(p, req) == first
    reopened = await SettlementStore.open(url)
    row = await reopened.get(sid_of(p, req))
    assert row is not None and row.state == "settled" and row.tx_hash == first.transaction
    await reopened.aclose()
    await fac.store.aclose()  # type: ignore[union-attr]
