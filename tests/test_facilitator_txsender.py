"""Transaction sending for settlements: record-before-broadcast, the local nonce manager, several keys,
the fee cap, and stuck-transaction replacement (anvil; the embedded chain has no mempool to replace in)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
import pytest_asyncio
from eth_account import Account

from paywire.chain import RpcError
from paywire.chain.devkeys import dev_keys
from paywire.chain.tx import (
    FeeCapExceeded,
    RecordRefused,
    SenderPool,
    SignedTx,
    TooLate,
    TxSender,
    classify_send_error,
)
from paywire.errors import ChainError
from paywire.store.settlements import SettlementStore
from tests.helpers import close_devnet, new_devnet, offer, payer_of, sign
from tests.test_facilitator_helpers import authorization_uses, facilitator_with_store
from tests.test_facilitator_settle import sid_of

pytestmark = pytest.mark.asyncio(loop_scope="module")
KEYS = dev_keys(10)


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def emb():
    n = await new_devnet("embedded")
    yield n
    await close_devnet(n)


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def anvil_net():
    n = await new_devnet("anvil")
    yield n
    await close_devnet(n)


async def test_transaction_is_recorded_before_the_node_sees_it(emb):
    sender = TxSender(emb.chain, KEYS[4])
    seen: list[object] = []

    async def record(tx: SignedTx) -> bool:
        seen.append(await emb.chain.request("eth_getTransactionByHash", [tx.hash]))
        return True

    tx, error = await sender.send_recorded(Account.create().address, value=1, record=record)
    assert error is None and seen == [None]  # unknown to the node while we recorded it
    assert (await emb.chain.wait_for_receipt(tx.hash)).status == 1


async def test_refused_record_sends_nothing_and_keeps_the_nonce(emb):
    sender = TxSender(emb.chain, KEYS[4])
    start = await emb.chain.get_transaction_count(sender.address, "pending")

    async def refuse(tx: SignedTx) -> bool:
        return False

    with pytest.raises(RecordRefused):
        await sender.send_recorded(Account.create().address, value=1, record=refuse)
    assert await emb.chain.get_transaction_count(sender.address, "pending") == start
    tx, _ = await sender.send_recorded(Account.create().address, value=1)
    assert tx.nonce == start  # no gap was left behind


async def test_thirty_concurrent_sends_one_key_consecutive_nonces(emb):
    sender = TxSender(emb.chain, KEYS[5])
    start = await emb.chain.get_transaction_count(sender.address, "pending")
    to = Account.create().address
    txs = await asyncio.gather(*(sender.send_recorded(to, value=1) for _ in range(30)))
    assert sorted(t.nonce for t, _ in txs) == list(range(start, start + 30))
    receipts = await asyncio.gather(*(emb.chain.wait_for_receipt(t.hash) for t, _ in txs))
    assert all(r.status == 1 for r in receipts)
    assert await emb.chain.get_balance(to) == 30


async def test_stale_nonce_is_resynced_and_the_new_transaction_recorded_again(emb):
    key = KEYS[6]
    sender = TxSender(emb.chain, key)
    await emb.chain.wait_for_receipt(await sender.send(Account.create().address, value=1))
    await emb.chain.wait_for_receipt(await TxSender(emb.chain, key).send(Account.create().address, value=1))
    recorded: list[SignedTx] = []

    async def record(tx: SignedTx) -> bool:
        recorded.append(tx)
        return True

    tx, error = await sender.send_recorded(Account.create().address, value=1, record=record)
    assert error is None and len(recorded) == 2 and recorded[0].nonce + 1 == recorded[1].nonce == tx.nonce
    assert (await emb.chain.wait_for_receipt(tx.hash)).status == 1


class _HeldFirstBroadcast:
    """The embedded chain, whose first ``eth_sendRawTransaction`` is held until the test lets it go (a slow
    node), then answered by the chain or, with ``refuse``, refused as a node would refuse it."""

    def __init__(self, chain: object, *, refuse: bool = False) -> None:
        self._chain, self._refuse = chain, refuse
        self.sent: list[int] = []  # the nonce of every broadcast, in the order they reached the node
        self.held, self.release = asyncio.Event(), asyncio.Event()

    def __getattr__(self, name: str) -> object:
        return getattr(self._chain, name)

    async def send_raw_transaction(self, raw: bytes) -> str:
        self.sent.append(SignedTx.decode(raw, "").nonce)
        if len(self.sent) == 1:
            self.held.set()
            await self.release.wait()
            if self._refuse:
                raise RpcError(-32000, "insufficient funds for gas * price + value")
        return await self._chain.send_raw_transaction(raw)  # type: ignore[attr-defined, no-any-return]


async def _second_send_while_first_is_held(node: _HeldFirstBroadcast, sender: TxSender, to: str, in_time=None):
    recorded: list[int] = []
    second_recorded = asyncio.Event()

    async def record(tx: SignedTx) -> bool:
        recorded.append(tx.nonce)
        if len(recorded) == 2:
            second_recorded.set()
        return True

    first = asyncio.create_task(sender.send_recorded(to, value=1, record=record))
    await node.held.wait()
    second = asyncio.create_task(sender.send_recorded(to, value=1, record=record, in_time=in_time))
    # the key's next transaction is signed and recorded while the one before it is still on the wire
    await asyncio.wait_for(second_recorded.wait(), 30)
    return first, second, recorded


async def test_next_transaction_of_a_key_is_recorded_while_the_one_before_is_broadcast(emb):
    node = _HeldFirstBroadcast(emb.chain)
    sender = TxSender(node, KEYS[8])  # type: ignore[arg-type]
    start = await emb.chain.get_transaction_count(sender.address, "pending")
    to = Account.create().address
    first, second, recorded = await _second_send_while_first_is_held(node, sender, to)
    assert recorded == [start, start + 1]
    assert node.sent == [start]  # nothing else reached the node before the first broadcast was answered
    node.release.set()
    (t1, e1), (t2, e2) = await asyncio.gather(first, second)
    assert (e1, e2) == (None, None) and node.sent == [start, start + 1]  # broadcast in nonce order
    assert all(r.status == 1 for r in await asyncio.gather(*(emb.chain.wait_for_receipt(t.hash) for t in (t1, t2))))
    assert await emb.chain.get_balance(to) == 2


async def test_a_refused_broadcast_leaves_no_nonce_gap_behind_it(emb):
    node = _HeldFirstBroadcast(emb.chain, refuse=True)
    sender = TxSender(node, KEYS[9])  # type: ignore[arg-type]
    start = await emb.chain.get_transaction_count(sender.address, "pending")
    to = Account.create().address
    first, second, recorded = await _second_send_while_first_is_held(node, sender, to)
    node.release.set()
    with pytest.raises(RpcError):
        await first
    tx, error = await second
    assert error is None and tx.nonce == start  # signed again with the nonce the refused one did not use
    assert recorded == [start, start + 1, start]  # and recorded again before it was broadcast
    assert (await emb.chain.wait_for_receipt(tx.hash)).status == 1
    assert await emb.chain.get_balance(to) == 1
    assert await emb.chain.get_transaction_count(sender.address, "pending") == start + 1


async def test_a_send_too_late_at_its_turn_is_not_broadcast_and_the_next_takes_its_nonce(emb):
    """Three sends of one key behind a slow broadcast; when the second one's turn comes its ``in_time`` says
    no: it never reaches the node (``TooLate``) and the third goes out with the nonce it held — no gap."""
    node = _HeldFirstBroadcast(emb.chain)
    sender = TxSender(node, KEYS[5])  # type: ignore[arg-type]
    start = await emb.chain.get_transaction_count(sender.address, "pending")
    to = Account.create().address
    first, second, _recorded = await _second_send_while_first_is_held(node, sender, to, in_time=lambda: False)
    third = asyncio.create_task(sender.send_recorded(to, value=4))
    node.release.set()
    (t1, e1), (t3, e3) = await asyncio.gather(first, third)
    with pytest.raises(TooLate):
        await second
    assert (e1, e3, t1.nonce, t3.nonce) == (None, None, start, start + 1)
    assert node.sent == [start, start + 1]  # the late one was never broadcast
    assert all(r.status == 1 for r in await asyncio.gather(*(emb.chain.wait_for_receipt(t.hash) for t in (t1, t3))))
    assert await emb.chain.get_balance(to) == 1 + 4
    assert await emb.chain.get_transaction_count(sender.address, "pending") == start + 2


async def test_sender_pool_round_robin_prefers_idle_keys(emb):
    pool = SenderPool.from_keys(emb.chain, KEYS[6:10])
    assert [pool.next().address for _ in range(8)] == pool.addresses * 2
    pool.senders[1].in_flight = 3  # busy key is skipped while others are idle
    picks = {pool.next().address for _ in range(6)}
    assert pool.senders[1].address not in picks
    assert pool.for_address(pool.addresses[2].lower()) is pool.senders[2]


async def test_fee_cap(emb):
    fees = await emb.chain.fee_data()
    with pytest.raises(FeeCapExceeded):
        await TxSender(emb.chain, KEYS[7], max_fee_cap=max(fees.base_fee - 1, 0)).send(Account.create().address, value=1)
    cap = fees.base_fee + 1
    sender = TxSender(emb.chain, KEYS[7], max_fee_cap=cap)
    tx, _ = await sender.send_recorded(Account.create().address, value=1)
    assert tx.max_fee <= cap and tx.tip <= tx.max_fee


async def test_signed_tx_decodes_from_its_bytes(emb):
    sender = TxSender(emb.chain, KEYS[7])
    tx = sender.sign_with(to=emb.payee.address, data=b"\x01\x02", value=5, gas=50_000, nonce=7, max_fee=10**10,
                          tip=10**9, chain_id=31337)
    assert SignedTx.decode(tx.raw, sender.address) == tx


async def test_send_errors_are_classified():
    cases = {
        "already known": "known", "transaction already imported": "known",
        "nonce too low": "nonce_low", "nonce too low: next nonce 3, tx nonce 1": "nonce_low",
        "nonce too high": "nonce_high", "replacement transaction underpriced": "underpriced",
        "insufficient funds for gas * price + value": "rejected",
    }
    for message, kind in cases.items():
        assert classify_send_error(RpcError(-32000, message)) == kind, message
    assert classify_send_error(ChainError("no answer within 10s")) == "unknown"


async def test_replacement_is_refused_on_the_embedded_chain(emb):
    """The embedded chain executes transactions on arrival (no mempool): a replacement is 'nonce too low'."""
    sender = TxSender(emb.chain, KEYS[8])
    tx, _ = await sender.send_recorded(Account.create().address, value=1)
    with pytest.raises(RpcError) as info:
        await sender.replace(tx)
    assert classify_send_error(info.value) == "nonce_low"


@pytest.mark.anvil
async def test_stuck_transaction_is_replaced_on_anvil(anvil_net):
    """With mining paused the tx sits in the mempool; ``replace`` re-signs it at the same nonce with bumped
    fees; after mining only the replacement exists on chain."""
    chain = anvil_net.chain
    sender = TxSender(chain, KEYS[8])
    to = Account.create().address
    await chain.request("evm_setAutomine", [False])
    try:
        stuck, _ = await sender.send_recorded(to, value=7)
        recorded: list[SignedTx] = []

        async def record(tx: SignedTx) -> bool:
            recorded.append(tx)
            return True

        bumped, error = await sender.replace(stuck, record=record)
        assert error is None and recorded == [bumped]
        assert bumped.nonce == stuck.nonce and bumped.hash != stuck.hash
        assert bumped.max_fee >= stuck.max_fee * 1.1 and bumped.tip >= stuck.tip * 1.1
        await chain.request("evm_mine", [])
    finally:
        await chain.request("evm_setAutomine", [True])
    assert (await chain.wait_for_receipt(bumped.hash)).status == 1
    assert await chain.get_transaction_receipt(stuck.hash) is None
    assert await chain.get_balance(to) == 7


@pytest.mark.anvil
async def test_reconciler_replaces_a_stuck_settlement_on_anvil(anvil_net, tmp_path: Path):
    """A settlement stuck in the mempool answers settlement_pending with its hash; the reconciler replaces
    it (recorded before broadcast), and the record settles with the replacement's hash — money moved once."""
    net = anvil_net
    store = await SettlementStore.open(f"sqlite:///{tmp_path / 'fac.db'}")
    fac = facilitator_with_store(net, store, keys=[KEYS[9]], receipt_timeout=1.0, stuck_after=0.0)
    req = offer(net, 3_210)
    p = await sign(req, payer_of(net))
    before = await net.token_balance(net.payee.address)
    await net.chain.request("evm_setAutomine", [False])
    try:
        r = await fac.settle(p, req)
        row = await store.get(sid_of(p, req))
        assert row is not None and row.state == "submitted"
        assert (r.success, r.error_reason, r.transaction) == (False, "settlement_pending", row.tx_hash)
        stats = await fac.reconcile_once()
        assert stats["replaced"] == 1
        row2 = await store.get(sid_of(p, req))
        assert row2 is not None and row2.tx_hash != row.tx_hash and row2.tx_hashes == (row.tx_hash, row2.tx_hash)
        await net.chain.request("evm_mine", [])
    finally:
        await net.chain.request("evm_setAutomine", [True])
    await fac.reconcile_once()
    done = await store.get(sid_of(p, req))
    assert done is not None and done.state == "settled" and done.tx_hash == row2.tx_hash
    assert await authorization_uses(net, p) == [row2.tx_hash]
    assert await net.token_balance(net.payee.address) == before + 3_210
    await store.aclose()


async def test_reconciler_signs_anew_a_recorded_transaction_stranded_behind_a_nonce_gap(anvil_net, tmp_path: Path):
    """A send recorded with the nonce after one the node then refused, and the process died before signing it
    again: anvil would queue the stored bytes forever behind the empty slot. After a restart the reconciler
    signs anew (recorded over the stranded one) and the sale settles, money moved once."""
    net = anvil_net
    store = await SettlementStore.open(f"sqlite:///{tmp_path / 'fac.db'}")
    key = KEYS[2]
    doomed = facilitator_with_store(net, store, keys=[key])
    sender = doomed._nets[net.info.network].senders[0]
    start = await net.chain.get_transaction_count(sender.address, "pending")
    sender._nonce = sender._guess = start + 1  # as if a send ahead of it had taken nonce `start`
    record_tx = store.record_tx

    async def record_then_die(*args: object, **kw: object) -> bool:
        assert await record_tx(*args, **kw)  # type: ignore[arg-type]
        raise RuntimeError("killed after recording")  # in the process: nothing was broadcast

    store.record_tx = record_then_die  # type: ignore[method-assign]
    req = offer(net, 3_211)
    p = await sign(req, payer_of(net))
    before = await net.token_balance(net.payee.address)
    r = await doomed.settle(p, req)
    del store.record_tx
    stranded = await store.get(sid_of(p, req))
    assert stranded is not None and stranded.state == "submitted" and stranded.tx_nonce == start + 1, stranded
    assert r.error_reason == "settlement_pending"
    restarted = facilitator_with_store(net, store, keys=[key])  # same instance id; nonce read from the chain
    await restarted.reconcile_once()
    await restarted.reconcile_once()
    done = await store.get(sid_of(p, req))
    assert done is not None and done.state == "settled", done
    assert done.tx_hashes[0] == stranded.tx_hash and done.tx_hash != stranded.tx_hash
    assert await authorization_uses(net, p) == [done.tx_hash]
    assert await net.token_balance(net.payee.address) == before + 3_211
    await store.aclose()


async def test_local_signing_is_byte_identical_to_eth_account():
    """``sign_with`` (RLP + keccak + libsecp256k1) produces exactly eth_account's signed bytes and hash."""
    key = KEYS[3]
    sender = TxSender(None, key)  # type: ignore[arg-type]
    for to in ("0x70997970C51812dc3A010C7d01b50e0d17dc79C8", None):
        for data, nonce, value in ((b"", 0, 0), (b"\x01" * 300, 7, 123), (b"\xff", 2**40, 10**18)):
            tx = {"type": 2, "chainId": 84532, "gas": 100_000, "maxFeePerGas": 3 * 10**9,
                  "maxPriorityFeePerGas": 10**9, "value": value, "data": data, "nonce": nonce}
            if to:
                tx["to"] = to
            ref = Account.sign_transaction(tx, key)
            mine = sender.sign_with(to=to, data=data, value=value, gas=100_000, nonce=nonce, max_fee=3 * 10**9,
                                    tip=10**9, chain_id=84532)
            assert mine.raw == bytes(ref.raw_transaction) and mine.hash == "0x" + bytes(ref.hash).hex()


async def test_a_sender_s_address_is_its_key_s_whatever_form_the_key_takes() -> None:
    """TxSender derives its address itself (eth_account is not imported to start a facilitator): the same as
    eth_account's for a hex string with or without 0x and for bytes; a key of the wrong size is refused."""
    for key in dev_keys(3):
        want = Account.from_key(key).address
        for form in (key, "0x" + key.hex(), key.hex()):
            assert TxSender(None, form).address == want  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="32 bytes"):
        TxSender(None, b"\x01" * 31)  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        TxSender(None, b"\x00" * 32)  # type: ignore[arg-type]  # zero is not a valid secp256k1 key
