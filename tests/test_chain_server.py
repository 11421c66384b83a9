"""JsonRpcServer (embedded chain over HTTP) used by plain web3.py, and HttpTransport failure modes."""

from __future__ import annotations

import asyncio
import http.server
import json
import threading
import time
from collections.abc import Iterator

import httpx
import pytest
from eth_abi.abi import encode as abi_encode
from eth_account import Account
from web3 import Web3
from web3.exceptions import ContractLogicError
from web3.providers.rpc import HTTPProvider

from paywire.chain import EmbeddedChain, HttpTransport, JsonRpcServer, RpcChain, TxSender
from paywire.chain.rpc import RpcError, error_from_rpc
from paywire.errors import ChainError, ChainRevert


def initcode(runtime: bytes) -> bytes:
    return bytes([0x60, len(runtime), 0x60, 12, 0x60, 0, 0x39, 0x60, len(runtime), 0x60, 0, 0xF3]) + runtime


def reverting(data: bytes) -> bytes:
    return bytes([0x60, len(data), 0x60, 12, 0x60, 0, 0x39, 0x60, len(data), 0x60, 0, 0xFD]) + data


BOOM_DATA = bytes.fromhex("08c379a0") + abi_encode(["string"], ["boom"])
BOOM_INIT = initcode(reverting(BOOM_DATA))


@pytest.fixture
def served() -> Iterator[tuple[EmbeddedChain, str]]:
    node = EmbeddedChain(chain_id=31337)
    server = JsonRpcServer(node)
    try:
        url = server.start()
        yield node, url
    finally:
        server.stop()
        node.close()


def test_web3_http_provider_against_embedded_chain(served: tuple[EmbeddedChain, str]) -> None:
    node, url = served
    assert url.startswith("http://127.0.0.1:") and not url.endswith(":8545")
    w3 = Web3(HTTPProvider(url))
    assert w3.is_connected()
    assert w3.eth.chain_id == 31337
    assert w3.eth.block_number == 0

    # a raw EIP-1559 transaction signed by the client
    key = node.private_keys[1]
    me = Account.from_key(key).address
    to = Account.create().address
    latest = w3.eth.get_block("latest")
    tip = w3.eth.max_priority_fee
    signed = Account.sign_transaction(
        {
            "type": 2, "chainId": w3.eth.chain_id, "nonce": w3.eth.get_transaction_count(me, "pending"),
            "to": to, "value": 12345, "gas": 21000,
            "maxFeePerGas": 2 * latest["baseFeePerGas"] + tip, "maxPriorityFeePerGas": tip,
        },
        key,
    )
    tx_hash = w3.eth.send_raw_transaction(signed.raw_transaction)
    receipt = w3.eth.wait_for_transaction_receipt(tx_hash, timeout=60, poll_latency=0.05)
    assert receipt["status"] == 1
    assert w3.eth.get_balance(to) == 12345
    block = w3.eth.get_block(receipt["blockNumber"], full_transactions=True)
    assert block["transactions"][0]["hash"] == tx_hash
    assert block["timestamp"] <= time.time()

    # web3's own transaction building (eth_estimateGas, fee history, eth_sendTransaction)
    tx_hash2 = w3.eth.send_transaction({"from": node.accounts[0], "to": to, "value": 1})
    assert w3.eth.wait_for_transaction_receipt(tx_hash2, timeout=60, poll_latency=0.05)["status"] == 1
    assert w3.eth.get_balance(to) == 12346

    # deploy and call a reverting contract: the revert reason passes through the server
    deploy = w3.eth.send_transaction({"from": node.accounts[0], "data": BOOM_INIT})
    boom = w3.eth.wait_for_transaction_receipt(deploy, timeout=60, poll_latency=0.05)["contractAddress"]
    assert w3.eth.get_code(boom) == reverting(BOOM_DATA)
    with pytest.raises(ContractLogicError, match="boom"):
        w3.eth.call({"to": boom, "data": "0x"})
    logs = w3.eth.get_logs({"fromBlock": 0, "toBlock": "latest"})
    assert logs == []
    fee_history = w3.eth.fee_history(2, "latest", [25, 75])
    assert len(fee_history["baseFeePerGas"]) == 3


async def test_rpc_chain_over_server_normalizes_reverts(served: tuple[EmbeddedChain, str]) -> None:
    node, url = served
    chain = RpcChain(HttpTransport(url))
    try:
        assert await chain.chain_id() == 31337
        sender = TxSender(chain, node.private_keys[0])
        boom = await sender.deploy(BOOM_INIT)
        with pytest.raises(ChainRevert) as info:
            await chain.call(boom, b"")
        assert info.value.reason == "boom" and info.value.data == BOOM_DATA
        receipt = await chain.wait_for_receipt(await sender.send(boom, b"", gas=60_000))
        assert receipt.status == 0
        with pytest.raises(RpcError) as err:
            await chain.request("eth_nope", [])
        assert err.value.code == -32601
    finally:
        await chain.aclose()


def test_batch_and_protocol_errors(served: tuple[EmbeddedChain, str]) -> None:
    _node, url = served
    with httpx.Client(timeout=5) as client:
        batch = client.post(url, json=[
            {"jsonrpc": "2.0", "id": 1, "method": "eth_chainId", "params": []},
            {"jsonrpc": "2.0", "id": "b", "method": "eth_blockNumber"},
            {"jsonrpc": "2.0", "id": 3, "method": "eth_nope", "params": []},
            {"jsonrpc": "2.0", "method": "eth_chainId", "params": []},  # notification: no answer
            {"id": 5},
        ]).json()
        assert batch[0] == {"jsonrpc": "2.0", "id": 1, "result": "0x7a69"}
        assert batch[1] == {"jsonrpc": "2.0", "id": "b", "result": "0x0"}
        assert batch[2]["error"]["code"] == -32601
        assert batch[3]["error"]["code"] == -32600 and batch[3]["id"] == 5
        assert len(batch) == 4
        assert client.post(url, content=b"{not json").json()["error"]["code"] == -32700
        assert client.post(url, json=[]).json()["error"]["code"] == -32600
        bad = client.post(url, json={"jsonrpc": "2.0", "id": 9, "method": "eth_getBalance", "params": {}}).json()
        assert bad["error"]["code"] == -32602
        assert client.get(url).status_code == 200


def test_oversized_bodies_are_refused_without_being_read(served: tuple[EmbeddedChain, str]) -> None:
    """Issue 11 item 2: the devnet JSON-RPC server bounds bodies too (announced or chunked)."""
    from paywire.chain.server import MAX_BODY

    _node, url = served
    with httpx.Client(timeout=30) as client:
        announced = client.post(url, content=b" " * (MAX_BODY + 1))
        assert announced.status_code == 413, "an announced body over the limit is refused"

        def chunks() -> Iterator[bytes]:
            for _ in range(MAX_BODY // 65536 + 2):
                yield b" " * 65536

        chunked = client.post(url, content=chunks())
        assert chunked.status_code == 413, "a chunked body is cut at the limit"
        small = client.post(url, json={"jsonrpc": "2.0", "id": 1, "method": "eth_chainId", "params": []})
        assert small.json()["result"] == "0x7a69", "a normal request still works after"


def test_server_stops_and_releases_port() -> None:
    node = EmbeddedChain()
    try:
        with JsonRpcServer(node) as server:
            url = server.url
            assert httpx.post(url, json={"jsonrpc": "2.0", "id": 1, "method": "eth_chainId"}).status_code == 200
        with pytest.raises(httpx.TransportError):
            httpx.post(url, json={"jsonrpc": "2.0", "id": 1, "method": "eth_chainId"}, timeout=2)
    finally:
        node.close()


# ---------------------------------------------------------------------------------------------------------
# HttpTransport against a misbehaving server
# ---------------------------------------------------------------------------------------------------------


class _BadHandler(http.server.BaseHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass

    def _send(self, status: int, body: bytes, ctype: str = "application/json") -> None:
        self.send_response(status)
        self.send_header("content-type", ctype)
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_POST(self) -> None:
        length = int(self.headers.get("content-length", "0"))
        request = json.loads(self.rfile.read(length))
        path = self.path
        if path == "/garbage":
            self._send(200, b"<html>definitely not json</html>", "text/html")
        elif path == "/sleep":
            time.sleep(3)
            self._send(200, json.dumps({"jsonrpc": "2.0", "id": request["id"], "result": "0x1"}).encode())
        elif path == "/array":
            self._send(200, b"[1, 2, 3]")
        elif path == "/noresult":
            self._send(200, json.dumps({"jsonrpc": "2.0", "id": request["id"]}).encode())
        elif path == "/wrongid":
            self._send(200, json.dumps({"jsonrpc": "2.0", "id": 987654, "result": "0x1"}).encode())
        elif path == "/500":
            self._send(500, b"internal server error", "text/plain")
        elif path == "/revert-message-only":
            err = {"code": -32000, "message": "execution reverted: FiatTokenV2: authorization is expired"}
            self._send(200, json.dumps({"jsonrpc": "2.0", "id": request["id"], "error": err}).encode())
        elif path == "/nonce":
            err = {"code": -32000, "message": "nonce too low"}
            self._send(200, json.dumps({"jsonrpc": "2.0", "id": request["id"], "error": err}).encode())
        elif path == "/badhex":
            self._send(200, json.dumps({"jsonrpc": "2.0", "id": request["id"], "result": "banana"}).encode())
        else:
            self._send(404, b"{}")


@pytest.fixture(scope="module")
def bad_server() -> Iterator[str]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _BadHandler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


@pytest.mark.parametrize(
    ("path", "match"),
    [
        ("/garbage", "non-JSON"),
        ("/array", "malformed"),
        ("/noresult", "neither result nor error"),
        ("/wrongid", "does not match"),
        ("/500", "HTTP 500"),
    ],
)
async def test_http_transport_garbage_is_chain_error(bad_server: str, path: str, match: str) -> None:
    transport = HttpTransport(bad_server + path, timeout=30)
    try:
        with pytest.raises(ChainError, match=match) as info:
            await transport.request("eth_chainId", [])
        assert not isinstance(info.value, ChainRevert)
    finally:
        await transport.aclose()


async def test_http_transport_timeout_is_chain_error(bad_server: str) -> None:
    transport = HttpTransport(bad_server + "/sleep", timeout=0.5)
    started = time.monotonic()
    try:
        with pytest.raises(ChainError, match=r"within 0\.5s"):
            await transport.request("eth_chainId", [])
    finally:
        await transport.aclose()
    assert time.monotonic() - started < 2.5


async def test_http_transport_unreachable_and_bad_values(bad_server: str) -> None:
    import socket

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{s.getsockname()[1]}"
    chain = RpcChain(HttpTransport(dead, timeout=2))
    with pytest.raises(ChainError, match="unreachable"):
        await chain.block_number()
    await chain.aclose()

    chain = RpcChain(HttpTransport(bad_server + "/badhex", timeout=30))
    with pytest.raises(ChainError, match="hex quantity"):
        await chain.block_number()
    await chain.aclose()


async def test_error_objects_are_classified(bad_server: str) -> None:
    chain = RpcChain(HttpTransport(bad_server + "/revert-message-only", timeout=30))
    with pytest.raises(ChainRevert) as info:
        await chain.call("0x" + "11" * 20, b"")
    assert info.value.reason == "FiatTokenV2: authorization is expired"
    await chain.aclose()

    chain = RpcChain(HttpTransport(bad_server + "/nonce", timeout=30))
    with pytest.raises(RpcError) as err:
        await chain.send_raw_transaction(b"\x02")
    assert err.value.code == -32000 and err.value.message == "nonce too low"
    assert not isinstance(err.value, ChainRevert)
    await chain.aclose()

    # anvil/geth style: code 3 with data; hardhat style: nested data object
    revert = error_from_rpc({"code": 3, "message": "execution reverted: boom", "data": "0x" + BOOM_DATA.hex()})
    assert isinstance(revert, ChainRevert) and revert.reason == "boom" and revert.data == BOOM_DATA
    nested = error_from_rpc({"code": -32603, "message": "Error: VM Exception while processing transaction: "
                             "reverted with reason string 'boom'", "data": {"data": "0x" + BOOM_DATA.hex()}})
    assert isinstance(nested, ChainRevert) and nested.reason == "boom"
    assert isinstance(error_from_rpc("garbage"), ChainError)


async def test_http_transport_usable_from_two_event_loops(served: tuple[EmbeddedChain, str]) -> None:
    _node, url = served
    transport = HttpTransport(url)
    assert await transport.request("eth_chainId", []) == "0x7a69"

    def other_loop() -> str:
        async def run() -> str:
            return str(await transport.request("eth_chainId", []))

        return asyncio.run(run())

    assert await asyncio.to_thread(other_loop) == "0x7a69"
    await transport.aclose()
