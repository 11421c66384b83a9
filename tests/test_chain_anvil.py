"""anvil from npm (@foundry-rs/anvil-linux-amd64@1.7.1) behind the same RpcChain API. Real processes only."""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import time

import pytest
from eth_abi.abi import encode as abi_encode
from eth_account import Account

from paywire.chain import Anvil, RpcChain, TxSender, connect, ensure_anvil
from paywire.chain.anvil import ANVIL_VERSION
from paywire.errors import ChainError, ChainRevert

pytestmark = [
    pytest.mark.anvil,
    pytest.mark.skipif(
        shutil.which("npm") is None and not os.environ.get("PAYWIRE_ANVIL"),
        reason="npm is not on PATH, so anvil cannot be installed from @foundry-rs/anvil-linux-amd64",
    ),
]


def initcode(runtime: bytes) -> bytes:
    return bytes([0x60, len(runtime), 0x60, 12, 0x60, 0, 0x39, 0x60, len(runtime), 0x60, 0, 0xF3]) + runtime


def reverting(data: bytes) -> bytes:
    return bytes([0x60, len(data), 0x60, 12, 0x60, 0, 0x39, 0x60, len(data), 0x60, 0, 0xFD]) + data


BOOM_DATA = bytes.fromhex("08c379a0") + abi_encode(["string"], ["boom"])


def _port_open(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0


@pytest.fixture(scope="module")
def anvil_binary() -> str:
    binary = ensure_anvil()  # first run: npm install into ./.paywire/npm (or $PAYWIRE_HOME/npm)
    assert binary.name == "anvil" and binary.parent.name == "bin"
    return str(binary)


async def test_install_is_pinned_and_idempotent(anvil_binary: str) -> None:
    import subprocess

    assert await asyncio.to_thread(ensure_anvil) == ensure_anvil()
    out = subprocess.run([anvil_binary, "--version"], capture_output=True, text=True, check=True).stdout
    if not os.environ.get("PAYWIRE_ANVIL"):
        assert ANVIL_VERSION in out


async def test_anvil_random_port_chain_id_transfer_and_clean_stop(anvil_binary: str) -> None:
    anvil = Anvil(chain_id=4242, binary=anvil_binary)
    url = await anvil.start()
    port = anvil.port
    pid = anvil.pid
    assert port is not None and pid is not None
    assert url == f"http://127.0.0.1:{port}"
    try:
        chain = anvil.chain()
        assert await chain.chain_id() == 4242
        assert anvil.accounts[0] == "0xf39Fd6e51aad88F6F4ce6aB8827279cffFb92266"
        assert await chain.get_balance(anvil.accounts[0]) == 10_000 * 10**18
        to = Account.create().address
        sender = TxSender(chain, anvil.private_keys[0])
        receipt = await chain.wait_for_receipt(await sender.send(to, value=10**15), timeout=60)
        assert receipt.status == 1 and receipt.gas_used == 21000
        assert await chain.get_balance(to) == 10**15
        assert await chain.block_timestamp() <= time.time() + 1
    finally:
        await anvil.stop()
    assert anvil.pid is None
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
    assert not _port_open(port)
    await anvil.stop()  # idempotent


async def test_revert_normalization_matches_embedded(anvil_binary: str) -> None:
    async with Anvil(binary=anvil_binary) as anvil:
        chain = anvil.chain()
        sender = TxSender(chain, anvil.private_keys[1])
        boom = await sender.deploy(initcode(reverting(BOOM_DATA)))
        with pytest.raises(ChainRevert) as info:
            await chain.call(boom, b"")
        assert info.value.reason == "boom" and info.value.data == BOOM_DATA
        with pytest.raises(ChainRevert, match="boom"):
            await chain.estimate_gas({"from": sender.address, "to": boom})
        receipt = await chain.wait_for_receipt(await sender.send(boom, b"", gas=60_000), timeout=60)
        assert receipt.status == 0
        hashes = await asyncio.gather(*(sender.send(sender.address, value=1) for _ in range(20)))
        receipts = await asyncio.gather(*(chain.wait_for_receipt(h, timeout=60) for h in hashes))
        assert all(r.status == 1 for r in receipts)


async def test_block_time_mode(anvil_binary: str) -> None:
    async with Anvil(chain_id=31337, block_time=0.5, binary=anvil_binary) as anvil:
        chain = anvil.chain()
        first = await chain.block_number()
        deadline = time.monotonic() + 60  # two 0.5 s blocks with no transaction; bounded only against a hang
        while await chain.block_number() < first + 2:
            assert time.monotonic() < deadline, "anvil mined no blocks in block-time mode"
            await asyncio.sleep(0.1)


async def test_connect_anvil_ties_process_to_chain(anvil_binary: str) -> None:
    chain: RpcChain = await connect("anvil", chain_id=5151)
    url = getattr(chain.transport, "url", "")
    port = int(url.rsplit(":", 1)[1])
    assert await chain.chain_id() == 5151
    assert _port_open(port)
    await chain.aclose()
    assert not _port_open(port)
    with pytest.raises(ChainError):
        await chain.block_number()


async def test_bad_arguments_fail_fast(anvil_binary: str) -> None:
    anvil = Anvil(binary=anvil_binary, extra_args=["--no-such-flag"], startup_timeout=10)
    with pytest.raises(ChainError, match="exited"):
        await anvil.start()
    assert anvil.pid is None
