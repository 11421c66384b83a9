"""An RPC that times out or answers garbage never turns a settlement into a false success or failure: the
answer is ``settlement_unresolved`` with the tx hash, the record is ``unresolved``, and the reconciler
finishes it once the chain answers again. A tiny misbehaving JSON-RPC proxy sits in front of the real
(embedded) chain; the test reads the truth from the chain directly."""

from __future__ import annotations

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
from tests.helpers import offer, payer_of, sign
from tests.test_facilitator_helpers import RpcProxy, authorization_uses, facilitator_with_store
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
    fac = facilitator_with_store(net, store, chain=flaky, receipt_timeout=2.0)
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
        chain = RpcChain(HttpTransport(url, timeout=1.5))
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
