"""The embedded py-evm chain, through the one RpcChain API. Real chain, no mocks."""

from __future__ import annotations

import asyncio
import concurrent.futures
import itertools
import os
import time
from collections.abc import AsyncIterator

import pytest
from eth_abi.abi import encode as abi_encode
from eth_account import Account

from paywire.chain import (
    Chain,
    EmbeddedChain,
    RpcChain,
    TxSender,
    connect,
    decode_revert_reason,
    embedded_chain,
    register_custom_errors,
)
from paywire.chain.rpc import RpcError
from paywire.errors import ChainError, ChainRevert

# ---------------------------------------------------------------------------------------------------------
# hand-assembled contracts
# ---------------------------------------------------------------------------------------------------------


def initcode(runtime: bytes, prefix: bytes = b"") -> bytes:
    """Run ``prefix`` as constructor code, then return ``runtime`` as the contract's code."""
    offset = len(prefix) + 12
    assert len(runtime) < 256 and offset < 256
    copy_and_return = bytes([0x60, len(runtime), 0x60, offset, 0x60, 0, 0x39, 0x60, len(runtime), 0x60, 0, 0xF3])
    return prefix + copy_and_return + runtime


def reverting(data: bytes) -> bytes:
    """Runtime that always reverts with ``data``."""
    return bytes([0x60, len(data), 0x60, 12, 0x60, 0, 0x39, 0x60, len(data), 0x60, 0, 0xFD]) + data


def error_string(reason: str) -> bytes:
    return bytes.fromhex("08c379a0") + abi_encode(["string"], [reason])


# returns (CHAINID now, CHAINID seen by the mined deployment transaction, stored in slot 0)
CHAINID_INIT = initcode(bytes.fromhex("46600052600054602052604060" "00f3"), prefix=bytes.fromhex("46600055"))
TIMESTAMP_INIT = initcode(bytes.fromhex("4260005260206000f3"))  # returns block.timestamp
BOOM_INIT = initcode(reverting(error_string("boom")))
TOPIC = bytes.fromhex("aa" * 32)
# LOG2(topic0=TOPIC, topic1=msg.sender) with data = calldata
LOGGER_INIT = initcode(bytes.fromhex("3660006000373" "37f") + TOPIC + bytes.fromhex("366000a200"))


@pytest.fixture
async def node() -> AsyncIterator[EmbeddedChain]:
    node = await asyncio.to_thread(EmbeddedChain)
    try:
        yield node
    finally:
        await node.aclose()


@pytest.fixture
def chain(node: EmbeddedChain) -> RpcChain:
    return RpcChain(node)


@pytest.fixture
def sender(chain: RpcChain, node: EmbeddedChain) -> TxSender:
    return TxSender(chain, node.private_keys[0])


async def block_ts(chain: RpcChain, number: int) -> int:
    return await chain.block_timestamp(number)


# ---------------------------------------------------------------------------------------------------------
# chain id
# ---------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("chain_id", [31337, 84532])
async def test_chain_id_is_the_same_everywhere(chain_id: int) -> None:
    chain, node = await embedded_chain(chain_id)
    try:
        assert await chain.chain_id() == chain_id
        assert await chain.request("net_version", []) == str(chain_id)
        sender = TxSender(chain, node.private_keys[0])
        address = await sender.deploy(CHAINID_INIT)
        out = await chain.call(address, b"")
        live, at_deploy = int.from_bytes(out[:32], "big"), int.from_bytes(out[32:], "big")
        assert live == chain_id  # CHAINID in eth_call
        assert at_deploy == chain_id  # CHAINID inside a mined transaction
        # EIP-155: a transaction signed for another chain is refused
        other = Account.sign_transaction(
            {"type": 2, "chainId": chain_id + 1, "nonce": 1, "gas": 21000, "to": address,
             "maxFeePerGas": 10**10, "maxPriorityFeePerGas": 1}, node.private_keys[0],
        )
        with pytest.raises(RpcError, match="chain id"):
            await chain.send_raw_transaction(bytes(other.raw_transaction))
    finally:
        await chain.aclose()


async def test_connect_embedded_satisfies_chain_protocol() -> None:
    chain: Chain = await connect("embedded", chain_id=1337)
    try:
        assert await chain.chain_id() == 1337
        assert await chain.block_number() == 0
    finally:
        await chain.aclose()
    with pytest.raises(ChainError, match="closed"):
        await chain.block_number()


# ---------------------------------------------------------------------------------------------------------
# accounts, funding, basic reads
# ---------------------------------------------------------------------------------------------------------


async def test_dev_accounts_match_anvil_and_funding() -> None:
    facilitator = Account.create()
    payee = "0x" + os.urandom(20).hex()
    chain, node = await embedded_chain(funded={facilitator.key.hex(): 3 * 10**18, payee: 7})
    try:
        assert node.accounts[0] == "0xf39Fd6e51aad88F6F4ce6aB8827279cffFb92266"
        assert await chain.get_balance(node.accounts[0]) == 10_000 * 10**18
        assert await chain.get_balance(facilitator.address) == 3 * 10**18
        assert await chain.get_balance(payee) == 7
        # the funded key pays its own gas
        tx_hash = await TxSender(chain, facilitator.key).send(payee, value=5)
        receipt = await chain.wait_for_receipt(tx_hash)
        assert receipt.status == 1 and receipt.gas_used == 21000
        assert await chain.get_balance(payee) == 12
        # and funding later works too
        late = Account.create().address
        await node.fund(late, 10**15)
        assert await chain.get_balance(late) == 10**15
    finally:
        await chain.aclose()


async def test_reads_fee_data_code_history(chain: RpcChain, sender: TxSender) -> None:
    fees = await chain.fee_data()
    assert fees.base_fee == 10**9 and fees.max_priority_fee == 10**9 and fees.gas_price > 0
    address = await sender.deploy(TIMESTAMP_INIT)
    assert await chain.get_code(address) == bytes.fromhex("4260005260206000f3")
    assert await chain.get_code(sender.address) == b""
    history = await chain.request("eth_feeHistory", ["0x2", "latest", [50]])
    assert len(history["baseFeePerGas"]) == 3 and len(history["reward"]) == 2
    block = await chain.get_block("latest", full_transactions=True)
    assert int(block["baseFeePerGas"], 16) > 0
    assert block["transactions"][0]["type"] == "0x2"
    assert await chain.request("eth_getBlockByNumber", ["0x99", False]) is None
    assert await chain.get_transaction_receipt("0x" + "00" * 32) is None


# ---------------------------------------------------------------------------------------------------------
# timestamps
# ---------------------------------------------------------------------------------------------------------


async def test_block_timestamp_tracks_wall_clock_after_idle(chain: RpcChain, sender: TxSender) -> None:
    await asyncio.sleep(2.0)
    tx_hash = await sender.send(sender.address, value=1)
    now = time.time()
    receipt = await chain.wait_for_receipt(tx_hash)
    ts = await block_ts(chain, receipt.block_number)
    assert ts >= int(now) - 1
    assert ts <= time.time()


async def test_block_timestamps_never_ahead_of_wall_clock(chain: RpcChain, sender: TxSender) -> None:
    hashes = [await sender.send(sender.address, value=1) for _ in range(10)]
    seen: dict[int, int] = {}
    for tx_hash in hashes:
        receipt = await chain.wait_for_receipt(tx_hash)
        assert receipt.status == 1
        ts = await block_ts(chain, receipt.block_number)
        assert ts <= time.time(), "block timestamp ahead of wall clock"
        seen[receipt.block_number] = ts
    numbers = sorted(seen)
    assert all(seen[a] < seen[b] for a, b in itertools.pairwise(numbers))
    assert len(numbers) < 10, "transactions arriving within one second are batched into one block"


async def test_mined_transactions_see_their_blocks_timestamp_and_prevrandao(
    chain: RpcChain, sender: TxSender
) -> None:
    # constructor stores PREVRANDAO in slot 0 and TIMESTAMP in slot 1; runtime returns both
    prefix = bytes.fromhex("44600055" "42600155")
    runtime = bytes.fromhex("60005460005260015460205260406000f3")
    await chain.wait_for_receipt(await sender.send(sender.address, value=1))  # next block is "busy" second
    address = await sender.deploy(initcode(runtime, prefix))  # estimated on pending, then mined
    out = await chain.call(address, b"")
    block = await chain.get_block("latest")
    assert out[:32] == bytes.fromhex(block["mixHash"][2:]) != bytes(32)
    assert int.from_bytes(out[32:], "big") == int(block["timestamp"], 16)


async def test_calls_execute_at_now(chain: RpcChain, sender: TxSender) -> None:
    address = await sender.deploy(TIMESTAMP_INIT)
    await asyncio.sleep(2.0)
    before = int(time.time())
    latest = await chain.block_timestamp()
    seen = int.from_bytes(await chain.call(address, b""), "big")
    assert seen >= latest and seen >= before
    assert seen <= time.time()


# ---------------------------------------------------------------------------------------------------------
# reverts
# ---------------------------------------------------------------------------------------------------------


async def test_revert_reason_from_call_and_estimate(chain: RpcChain, sender: TxSender) -> None:
    boom = await sender.deploy(BOOM_INIT)
    with pytest.raises(ChainRevert) as info:
        await chain.call(boom, b"\x01\x02")
    assert info.value.reason == "boom"
    assert info.value.data == error_string("boom")
    with pytest.raises(ChainRevert) as info2:
        await chain.estimate_gas({"from": sender.address, "to": boom})
    assert info2.value.reason == "boom"
    with pytest.raises(ChainRevert, match="boom"):
        await sender.send(boom, b"")  # estimation refuses to send a doomed transaction


async def test_reverting_transaction_is_mined_with_status_0(chain: RpcChain, sender: TxSender) -> None:
    boom = await sender.deploy(BOOM_INIT)
    tx_hash = await sender.send(boom, b"", gas=100_000)
    receipt = await chain.wait_for_receipt(tx_hash)
    assert receipt.status == 0
    assert 21000 < receipt.gas_used < 100_000
    # the nonce was consumed: the next send works
    receipt2 = await chain.wait_for_receipt(await sender.send(sender.address, value=1))
    assert receipt2.status == 1


async def test_custom_error_and_panic_reasons(chain: RpcChain, sender: TxSender) -> None:
    selector = bytes.fromhex("deadbeef")
    custom = await sender.deploy(initcode(reverting(selector + b"\0" * 32)))
    with pytest.raises(ChainRevert) as info:
        await chain.call(custom, b"")
    assert info.value.reason == "0xdeadbeef"
    register_custom_errors("PaywireTestOnlyError(uint256)")
    from eth_utils.crypto import keccak

    named = keccak(text="PaywireTestOnlyError(uint256)")[:4] + b"\0" * 32
    assert decode_revert_reason(named) == "PaywireTestOnlyError"
    panic = bytes.fromhex("4e487b71") + (0x11).to_bytes(32, "big")
    panicking = await sender.deploy(initcode(reverting(panic)))
    with pytest.raises(ChainRevert) as info2:
        await chain.call(panicking, b"")
    assert info2.value.reason == "Panic(0x11)"
    assert decode_revert_reason(b"") == ""


# ---------------------------------------------------------------------------------------------------------
# transactions, nonces, logs
# ---------------------------------------------------------------------------------------------------------


async def test_raw_eip1559_transaction_and_pending_nonce(chain: RpcChain, node: EmbeddedChain) -> None:
    key = node.private_keys[1]
    me = Account.from_key(key).address
    fees = await chain.fee_data()
    start = await chain.get_transaction_count(me, "pending")
    hashes = []
    for i in range(3):
        signed = Account.sign_transaction(
            {"type": 2, "chainId": 31337, "nonce": start + i, "gas": 21000, "to": node.accounts[2], "value": 1,
             "maxFeePerGas": 2 * fees.base_fee + fees.max_priority_fee,
             "maxPriorityFeePerGas": fees.max_priority_fee},
            key,
        )
        hashes.append(await chain.send_raw_transaction(bytes(signed.raw_transaction)))
        assert await chain.get_transaction_count(me, "pending") == start + i + 1
    receipts = [await chain.wait_for_receipt(h) for h in hashes]
    assert all(r.status == 1 for r in receipts)
    assert await chain.get_transaction_count(me, "latest") == start + 3
    # a duplicate nonce is refused with a geth-style message
    stale = Account.sign_transaction(
        {"type": 2, "chainId": 31337, "nonce": start, "gas": 21000, "to": node.accounts[2], "value": 2,
         "maxFeePerGas": 10**10, "maxPriorityFeePerGas": 1}, key,
    )
    with pytest.raises(RpcError, match="nonce too low"):
        await chain.send_raw_transaction(bytes(stale.raw_transaction))


async def test_logs_and_filters(chain: RpcChain, sender: TxSender) -> None:
    logger = await sender.deploy(LOGGER_INIT)
    flt = await chain.request("eth_newFilter", [{"address": logger}])
    receipt = await chain.wait_for_receipt(await sender.send(logger, b"hello"))
    assert receipt.status == 1 and len(receipt.logs) == 1
    entry = receipt.logs[0]
    assert entry.address == logger and entry.data == b"hello"
    assert entry.topics == (TOPIC, bytes(12) + bytes.fromhex(sender.address[2:]))
    logs = await chain.get_logs(address=logger, topics=[TOPIC])
    assert logs == [entry]
    assert await chain.get_logs(address=logger, topics=[None, [b"\x01" * 32]]) == []
    assert await chain.get_logs(topics=[TOPIC], from_block=receipt.block_number + 1) == []
    receipt2 = await chain.wait_for_receipt(await sender.send(logger, b"again"))
    assert receipt2.block_number > receipt.block_number
    changes = await chain.request("eth_getFilterChanges", [flt])
    assert [c["transactionHash"] for c in changes] == [receipt.transaction_hash, receipt2.transaction_hash]
    assert await chain.request("eth_getFilterChanges", [flt]) == []
    assert await chain.request("eth_uninstallFilter", [flt]) is True


async def test_send_transaction_from_dev_account(chain: RpcChain, node: EmbeddedChain) -> None:
    to = Account.create().address
    tx_hash = await chain.request("eth_sendTransaction", [{"from": node.accounts[3], "to": to, "value": "0x5"}])
    receipt = await chain.wait_for_receipt(tx_hash)
    assert receipt.status == 1 and await chain.get_balance(to) == 5
    tx = await chain.request("eth_getTransactionByHash", [tx_hash])
    assert tx["from"] == node.accounts[3] and tx["blockNumber"] == hex(receipt.block_number)


async def test_unknown_method_and_bad_params(chain: RpcChain) -> None:
    with pytest.raises(RpcError) as info:
        await chain.request("eth_doesNotExist", [])
    assert info.value.code == -32601
    with pytest.raises(RpcError) as info2:
        await chain.request("eth_getBalance", ["0x1234"])
    assert info2.value.code == -32602


# ---------------------------------------------------------------------------------------------------------
# concurrency
# ---------------------------------------------------------------------------------------------------------


async def test_txsender_20_concurrent_sends(chain: RpcChain, node: EmbeddedChain) -> None:
    sender = TxSender(chain, node.private_keys[4])
    to = Account.create().address
    hashes = await asyncio.gather(*(sender.send(to, value=i + 1) for i in range(20)))
    assert len(set(hashes)) == 20
    receipts = await asyncio.gather(*(chain.wait_for_receipt(h) for h in hashes))
    assert all(r.status == 1 for r in receipts)
    assert await chain.get_balance(to) == sum(range(1, 21))
    assert await chain.get_transaction_count(sender.address, "latest") == 20
    txs = [await chain.request("eth_getTransactionByHash", [h]) for h in hashes]
    nonces = sorted(int(tx["nonce"], 16) for tx in txs)
    assert nonces == list(range(20))


async def test_txsender_resyncs_after_outside_nonce_use(chain: RpcChain, node: EmbeddedChain) -> None:
    key = node.private_keys[5]
    sender = TxSender(chain, key)
    await chain.wait_for_receipt(await sender.send(node.accounts[0], value=1))  # counter now 1
    # someone else uses nonce 1 with the same key
    other = TxSender(chain, key)
    await chain.wait_for_receipt(await other.send(node.accounts[0], value=1))
    # sender's counter is stale (1); it must recover from "nonce too low" transparently
    receipt = await chain.wait_for_receipt(await sender.send(node.accounts[0], value=1))
    assert receipt.status == 1
    assert await chain.get_transaction_count(sender.address, "latest") == 3


async def test_concurrent_use_from_two_threads(node: EmbeddedChain) -> None:
    to = Account.create().address

    def worker(key: bytes) -> list[int]:
        async def run() -> list[int]:
            chain = RpcChain(node)  # shares the node; do not close it here
            sender = TxSender(chain, key)
            hashes = await asyncio.gather(*(sender.send(to, value=1) for _ in range(5)))
            return [(await chain.wait_for_receipt(h)).status for h in hashes]

        return asyncio.run(run())

    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        futures = [pool.submit(worker, node.private_keys[6]), pool.submit(worker, node.private_keys[7])]
        # the main loop keeps using the chain at the same time
        chain = RpcChain(node)
        for _ in range(10):
            assert await chain.chain_id() == 31337
            await chain.block_number()
            await asyncio.sleep(0.01)
        results = [f.result(timeout=30) for f in futures]
    assert results == [[1] * 5, [1] * 5]
    assert await RpcChain(node).get_balance(to) == 10
