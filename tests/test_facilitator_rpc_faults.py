"""An RPC that times out or answers garbage never turns a settlement into a false success or failure: the
answer is ``settlement_unresolved`` with the tx hash, the record is ``unresolved``, and the reconciler
finishes it once the chain answers again. A tiny misbehaving JSON-RPC proxy sits in front of the real
(embedded) chain; the test reads the truth from the chain directly."""

from __future__ import annotations

import asyncio
import contextlib
import time
from pathlib import Path

import pytest
import pytest_asyncio
from starlette.responses import PlainTextResponse

from paywire.chain import EmbeddedChain, HttpTransport, RpcChain
from paywire.chain.keepalive import KeepAliveTransport
from paywire.chain.tx import SignedTx, TxSender
from paywire.devnet import setup_devnet
from paywire.serving import serve_asgi
from paywire.store.settlements import SettlementStore
from tests.helpers import close_devnet, new_devnet, offer, payer_of, sign
from tests.test_facilitator_helpers import RpcProxy, authorization_uses, facilitator_with_store, wait_until
from tests.test_facilitator_settle import sid_of


def warnings_about(caplog, sid: str) -> list[str]:
    """The settlement engine's WARNING lines naming ``sid``, cut before their reason."""
    return [r.getMessage().split(":")[0] for r in caplog.records
            if r.name == "paywire.settlement.engine" and r.levelname == "WARNING" and sid in r.getMessage()]

pytestmark = pytest.mark.asyncio(loop_scope="module")


@pytest_asyncio.fixture(loop_scope="module", scope="module", params=["httpx", "keepalive"])
async def world(request):
    """(devnet, proxy, the facilitator's chain through the proxy) — over both JSON-RPC transports."""
    node = EmbeddedChain()
    net = await setup_devnet(RpcChain(node))
    proxy = RpcProxy(node, hang=4.0)
    async with serve_asgi(proxy.app()) as url:
        kind = HttpTransport if request.param == "httpx" else KeepAliveTransport
        flaky = RpcChain(kind(url, timeout=1.5))  # generous: only injected faults may time out
        yield net, proxy, flaky
        await flaky.aclose()
    await net.chain.aclose()


@pytest_asyncio.fixture(loop_scope="module")
async def store(tmp_path: Path):
    s = await SettlementStore.open(f"sqlite:///{tmp_path / 'fac.db'}")
    yield s
    await s.aclose()


async def test_garbage_after_broadcast_then_timeouts_gives_unresolved_then_settled(world, store, caplog):
    """The node accepts the tx but the answer is garbage and every later call times out → unresolved with
    the recorded hash (the chain in fact settled it); after the RPC heals the reconciler records settled."""
    net, proxy, flaky = world
    fac = facilitator_with_store(net, store, chain=flaky, receipt_timeout=2.0)
    req = offer(net, 4_000)
    p = await sign(req, payer_of(net))
    before = await net.token_balance(net.payee.address)
    proxy.modes = {"eth_sendRawTransaction": "forward_garbage"}
    proxy.then = {"*": "timeout"}
    try:
        r = await fac.settle(p, req)
    finally:
        proxy.modes, proxy.then = {}, None
    row = await store.get(sid_of(p, req))
    assert row is not None and row.state == "unresolved" and row.tx_hash
    assert (r.success, r.error_reason, r.transaction) == (False, "settlement_unresolved", row.tx_hash)
    assert warnings_about(caplog, row.id) == [f"settlement {row.id} unresolved"]  # one line, with the reason
    receipt = await net.chain.wait_for_receipt(row.tx_hash)  # the truth, read around the proxy
    assert receipt.status == 1
    stats = await fac.reconcile_once()
    assert stats["settled"] == 1
    row = await store.get(sid_of(p, req))
    assert row is not None and row.state == "settled" and row.tx_hash == receipt.transaction_hash
    again = await fac.settle(p, req)
    assert again.success and again.transaction == receipt.transaction_hash
    assert await net.token_balance(net.payee.address) == before + 4_000
    assert await authorization_uses(net, p) == [receipt.transaction_hash]


async def test_broadcast_lost_in_a_timeout_is_unresolved_then_rebroadcast(world, store):
    """eth_sendRawTransaction times out before reaching the node and the receipt calls answer garbage →
    unresolved (nothing moved, yet nothing is reported failed); once healed the reconciler re-broadcasts the
    recorded bytes and the payment settles once, with the hash that was recorded before sending."""
    net, proxy, flaky = world
    fac = facilitator_with_store(net, store, chain=flaky, receipt_timeout=2.0)
    req = offer(net, 5_000)
    p = await sign(req, payer_of(net))
    before = await net.token_balance(net.payee.address)
    proxy.modes = {"eth_sendRawTransaction": "timeout"}
    proxy.then = {"*": "garbage"}
    try:
        r = await fac.settle(p, req)
    finally:
        proxy.modes, proxy.then = {}, None
    row = await store.get(sid_of(p, req))
    assert row is not None and row.state == "unresolved"
    assert (r.success, r.error_reason, r.transaction) == (False, "settlement_unresolved", row.tx_hash)
    assert await net.chain.get_transaction_receipt(row.tx_hash) is None
    assert await net.token_balance(net.payee.address) == before
    stats = await fac.reconcile_once()
    assert stats["rebroadcast"] == 1
    await net.chain.wait_for_receipt(row.tx_hash)
    await fac.reconcile_once()
    done = await store.get(sid_of(p, req))
    assert done is not None and done.state == "settled" and done.tx_hash == row.tx_hash
    assert await net.token_balance(net.payee.address) == before + 5_000
    assert (await fac.settle(p, req)).transaction == row.tx_hash


async def test_chain_down_before_broadcast_fails_cleanly_and_a_retry_settles(world, store):
    """If the chain cannot be reached before anything is sent, settle says so (nothing was sent, nothing is
    recorded) and a retry after the RPC heals settles normally."""
    net, proxy, flaky = world
    fac = facilitator_with_store(net, store, chain=flaky, receipt_timeout=30.0)  # the retry's receipt: no fault
    req = offer(net, 6_000)
    p = await sign(req, payer_of(net))
    proxy.modes = {"*": "garbage"}
    try:
        r = await fac.settle(p, req)
    finally:
        proxy.modes = {}
    assert (r.success, r.error_reason, r.transaction) == (False, "unexpected_verify_error", "")
    assert await store.get(sid_of(p, req)) is None
    ok = await fac.settle(p, req)
    assert ok.success


class SlotTaker(RpcProxy):
    """Swallows the first ``eth_sendRawTransaction`` (never forwarded, answered 504) after giving its nonce to
    another transaction of the same key, mined: the recorded settlement transaction can never be included."""

    def __init__(self, upstream, key: bytes) -> None:
        super().__init__(upstream)
        self.key, self.taken = key, False

    async def _one_response(self, call):
        if call.get("method") == "eth_sendRawTransaction" and not self.taken:
            self.taken = True
            chain = self.upstream  # the devnet's own chain, around the proxy
            sender = TxSender(chain, self.key)
            lost = SignedTx.decode(bytes.fromhex(call["params"][0].removeprefix("0x")), sender.address)
            max_fee, tip = await sender.fees()
            other = sender.sign_with(to=sender.address, data=b"", value=0, gas=21_000, nonce=lost.nonce,
                                     max_fee=max_fee, tip=tip, chain_id=await chain.chain_id())
            await chain.send_raw_transaction(other.raw)
            await chain.wait_for_receipt(other.hash)
            return PlainTextResponse("late", status_code=504)
        return await super()._one_response(call)


async def test_a_lost_broadcast_whose_nonce_was_taken_is_signed_anew_within_the_settle(world, store):
    """The broadcast never reached the node and its nonce went to another transaction of the key: the settle
    signs the authorization anew at once (it is unused and valid) and answers settled with that transaction,
    one transfer on chain; before, it answered pending and left the row to the reconciler after the lease."""
    net, _proxy, _flaky = world
    taker = SlotTaker(net.chain, net.facilitator.private_key)
    async with serve_asgi(taker.app()) as url:
        chain = RpcChain(HttpTransport(url, timeout=30))  # the taker answers 504 itself, after a mined block
        fac = facilitator_with_store(net, store, chain=chain, receipt_timeout=10.0)
        req = offer(net, 7_000)
        p = await sign(req, payer_of(net))
        before = await net.token_balance(net.payee.address)
        r = await fac.settle(p, req)
        await chain.aclose()
    row = await store.get(sid_of(p, req))
    assert taker.taken
    assert row is not None and row.state == "settled", (r, row)
    assert r.success and r.transaction == row.tx_hash
    assert len(row.tx_hashes) == 2  # the lost one, then the one signed anew
    assert await authorization_uses(net, p) == [row.tx_hash]
    assert await net.token_balance(net.payee.address) == before + 7_000


async def test_a_failed_settlement_leaves_one_warning_with_its_id_state_and_reason(world, store, caplog):
    """A settlement transaction that reverts on chain (here: too little gas) is recorded failed, and the
    facilitator says so once in its log: settlement id, state, reason."""
    net, _proxy, _flaky = world
    fac = facilitator_with_store(net, store, gas_limit=30_000)
    req = offer(net, 8_000)
    p = await sign(req, payer_of(net))
    r = await fac.settle(p, req)
    sid = sid_of(p, req)
    row = await store.get(sid)
    assert row is not None and row.state == "failed" and not r.success
    assert warnings_about(caplog, sid) == [f"settlement {sid} failed"]
    line = next(x.getMessage() for x in caplog.records if sid in x.getMessage())
    assert "transaction_failed" in line and row.tx_hash in line


# ------------------------------------------------------------------------------------------------------------
# authorizations that expire while their transaction waits (anvil: its clock can be moved forward)
# ------------------------------------------------------------------------------------------------------------

EXPIRED = "invalid_exact_evm_payload_authorization_valid_before"


class HeldFirstBroadcast(RpcProxy):
    """Holds the first ``eth_sendRawTransaction`` (an RPC stall) until ``release`` is set, then forwards it."""

    def __init__(self, upstream) -> None:
        super().__init__(upstream)
        self.held, self.release = asyncio.Event(), asyncio.Event()

    async def _one_response(self, call):
        if call.get("method") == "eth_sendRawTransaction" and not self.held.is_set():
            self.held.set()
            await self.release.wait()
        return await super()._one_response(call)


@contextlib.asynccontextmanager
async def anvil_behind(proxy_class, *, rpc_timeout: float = 30.0, **kw):
    """(fresh anvil devnet, proxy in front of it, the facilitator's chain through the proxy, a clock the test
    moves forward with ``move(seconds)`` together with anvil's)."""
    net = await new_devnet("anvil")
    proxy = proxy_class(HttpTransport(net.extra["anvil"].url, timeout=30), **kw)
    shift = [0.0]

    async def move(seconds: float) -> None:
        shift[0] += seconds
        await net.chain.request("evm_increaseTime", [int(seconds)])  # the next block's time, no block yet

    try:
        async with serve_asgi(proxy.app()) as url:
            chain = RpcChain(HttpTransport(url, timeout=rpc_timeout))
            yield net, proxy, chain, (lambda: time.time() + shift[0]), move
            await chain.aclose()
    finally:
        await close_devnet(net)


@pytest.mark.anvil
async def test_an_authorization_that_expires_behind_a_stalled_send_is_not_broadcast(store):
    """A's broadcast stalls; B (60 s validity) and C are signed and recorded behind it; 120 s pass before the
    stall ends. B's turn comes after its validBefore: it is not broadcast (no gas burnt on a revert), it is
    recorded failed with the expired reason, and C goes out with the nonce B held — A and C settle."""
    async with anvil_behind(HeldFirstBroadcast) as (net, proxy, chain, clock, move):
        fac = facilitator_with_store(net, store, chain=chain, clock=clock)
        key = fac._nets[net.info.network].senders[0].address
        long, short = offer(net, 1_001, max_timeout_seconds=3600), offer(net, 1_002, max_timeout_seconds=60)
        req_c = offer(net, 1_003, max_timeout_seconds=3600)
        pa, pb, pc = [await sign(r, payer_of(net)) for r in (long, short, req_c)]
        paid_before = await net.token_balance(net.payer.address)
        a = asyncio.create_task(fac.settle(pa, long))
        await asyncio.wait_for(proxy.held.wait(), 30)
        b = asyncio.create_task(fac.settle(pb, short))
        c = asyncio.create_task(fac.settle(pc, req_c))

        async def both_recorded() -> bool:
            rows = [await store.get(sid_of(p, r)) for p, r in ((pb, short), (pc, req_c))]
            return all(row is not None and row.state == "submitted" for row in rows)

        await wait_until(both_recorded)  # in line behind A, each with a nonce
        await move(120)
        proxy.release.set()
        ra, rb, rc = await asyncio.gather(a, b, c)
        rows = [await store.get(sid_of(p, r)) for p, r in ((pa, long), (pb, short), (pc, req_c))]
        sends = proxy.calls["eth_sendRawTransaction"]
        key_nonce = await net.chain.get_transaction_count(key, "latest")
        b_uses = await authorization_uses(net, pb)
        paid = paid_before - await net.token_balance(net.payer.address)
    row_a, row_b, row_c = rows
    assert (rb.success, rb.error_reason, rb.transaction) == (False, EXPIRED, ""), rb
    assert row_b is not None and (row_b.state, row_b.error_reason) == ("failed", EXPIRED)
    assert ra.success and rc.success, (ra, rc)
    assert sends == 2  # A and C; B never reached the node
    assert row_a is not None and row_c is not None and row_c.tx_nonce == row_a.tx_nonce + 1  # no nonce gap
    assert key_nonce == row_a.tx_nonce + 2
    assert b_uses == []
    assert paid == 1_001 + 1_003


@pytest.mark.anvil
async def test_reconciler_sends_nothing_for_an_expired_lost_transaction_and_records_it_expired(store):
    """The broadcast never reached the node; by the next reconcile the authorization is past validBefore.
    The reconciler does not re-broadcast it (it would revert on chain), and once the chain's time is past
    validBefore with the authorization unused it records the settlement failed with the expired reason."""
    async with anvil_behind(RpcProxy, rpc_timeout=1.5, hang=4.0) as (net, proxy, chain, clock, move):
        fac = facilitator_with_store(net, store, chain=chain, clock=clock, receipt_timeout=2.0)
        key = fac._nets[net.info.network].senders[0].address
        req = offer(net, 1_004, max_timeout_seconds=60)
        p = await sign(req, payer_of(net))
        paid_before = await net.token_balance(net.payer.address)
        nonce_before = await net.chain.get_transaction_count(key, "latest")
        proxy.modes = {"eth_sendRawTransaction": "timeout"}  # swallowed: never forwarded
        try:
            r = await fac.settle(p, req)
        finally:
            proxy.modes = {}
        row = await store.get(sid_of(p, req))
        assert row is not None and row.state in ("submitted", "unresolved") and row.tx_hash, (r, row)
        sends = proxy.calls["eth_sendRawTransaction"]
        await move(120)
        first = await fac.reconcile_once()
        assert (first["rebroadcast"], first["replaced"], proxy.calls["eth_sendRawTransaction"]) == (0, 0, sends)
        await net.chain.request("evm_mine", [])  # the chain's time passes validBefore
        second = await fac.reconcile_once()
        done = await store.get(sid_of(p, req))
        assert second["failed"] == 1 and proxy.calls["eth_sendRawTransaction"] == sends
        assert done is not None and (done.state, done.error_reason) == ("failed", EXPIRED)
        assert await net.chain.get_transaction_receipt(row.tx_hash) is None
        assert await net.chain.get_transaction_count(key, "latest") == nonce_before  # no gas spent
        assert await net.token_balance(net.payer.address) == paid_before


@pytest.mark.anvil
async def test_reconciler_does_not_fee_bump_a_stuck_transaction_past_its_authorization(store):
    """A settlement transaction sits in the mempool (mining paused) past its authorization's validBefore: the
    reconciler does not replace it with higher fees (the replacement could only revert); it keeps watching."""
    async with anvil_behind(RpcProxy) as (net, proxy, chain, clock, move):
        fac = facilitator_with_store(net, store, chain=chain, clock=clock, receipt_timeout=1.0, stuck_after=0.0)
        req = offer(net, 1_005, max_timeout_seconds=60)
        p = await sign(req, payer_of(net))
        await net.chain.request("evm_setAutomine", [False])
        try:
            r = await fac.settle(p, req)
            row = await store.get(sid_of(p, req))
            assert row is not None and row.state == "submitted" and r.error_reason == "settlement_pending", (r, row)
            sends = proxy.calls["eth_sendRawTransaction"]
            await move(120)
            stats = await fac.reconcile_once()
            assert (stats["replaced"], stats["rebroadcast"]) == (0, 0) and proxy.calls["eth_sendRawTransaction"] == sends
            again = await store.get(sid_of(p, req))
            assert again is not None and again.tx_hashes == (row.tx_hash,)
        finally:
            await net.chain.request("evm_setAutomine", [True])
