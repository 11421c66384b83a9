"""`paywire facilitator` as real processes: a fleet of two on one PostgreSQL settles a payment once, and an
instance SIGKILLed right after broadcasting recovers the outcome on restart.

The chain is shared by every process: anvil, or the embedded chain served over HTTP by ``JsonRpcServer``
from the test process.
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import httpx
import pytest
import pytest_asyncio

from paywire.chain import EmbeddedChain, JsonRpcServer, RpcChain
from paywire.chain.devkeys import dev_keys
from paywire.devnet import setup_devnet
from paywire.store.settlements import SettlementStore
from tests.helpers import CHAIN_KINDS, close_devnet, new_devnet, offer, payer_of, sign
from tests.test_facilitator_helpers import FacilitatorProcess, authorization_uses, wait_until, write_config
from tests.test_facilitator_settle import body, sid_of

pytestmark = pytest.mark.asyncio(loop_scope="module")
KEYS = ["0x" + k.hex() for k in dev_keys(10)]

# The paywire CLI with a fault injected into the EVM rail: the process SIGKILLs itself right after its first
# settlement transaction was recorded and broadcast (before it learns the outcome).
CRASH_AFTER_SEND = [sys.executable, "-c", """
import os, signal
from paywire.chain.rail import EvmRail
from paywire.cli.main import main

send = EvmRail.send

async def send_then_die(self, *args, **kwargs):
    sent = await send(self, *args, **kwargs)
    os.kill(os.getpid(), signal.SIGKILL)
    return sent

EvmRail.send = send_then_die
main()
"""]


@pytest_asyncio.fixture(loop_scope="module", scope="module", params=CHAIN_KINDS)
async def served(request):
    """(devnet, JSON-RPC URL every process can use)."""
    if request.param == "anvil":
        net = await new_devnet("anvil")
        yield net, net.info.rpc_url
        await close_devnet(net)
        return
    node = EmbeddedChain()
    server = JsonRpcServer(node)
    url = server.start()
    net = await setup_devnet(RpcChain(node), rpc_url=url)
    yield net, url
    server.stop()
    await net.chain.aclose()


async def _start(*procs: FacilitatorProcess) -> list[str]:
    return list(await asyncio.gather(*(asyncio.to_thread(p.start) for p in procs)))


@pytest.mark.postgres
async def test_two_processes_on_one_postgres_settle_fifty_requests_once(served, pg_url, tmp_path: Path):
    """Fleet mode: 50 concurrent /settle of one payment spread over two facilitator processes sharing one
    PostgreSQL → exactly one on-chain transfer and 50 identical answers; either instance serves the record."""
    net, rpc = served
    procs = [
        FacilitatorProcess(["--config", str(write_config(
            tmp_path / f"{name}.toml", network=net.info.network, rpc=rpc, keys=[key], store=pg_url,
            instance_id=name))])
        for name, key in (("fac-a", KEYS[6]), ("fac-b", KEYS[7]))
    ]
    try:
        urls = await _start(*procs)
        req = offer(net, 9_999)
        p = await sign(req, payer_of(net))
        before = await net.token_balance(net.payee.address)
        async with httpx.AsyncClient(timeout=90) as http:
            rs = await asyncio.gather(*(http.post(urls[i % 2] + "/settle", json=body(p, req)) for i in range(50)))
            assert {r.status_code for r in rs} == {200}, [r.text for r in rs if r.status_code != 200][:3]
            answers = [r.json() for r in rs]
            assert all(a == answers[0] for a in answers), {str(a) for a in answers}
            assert answers[0]["success"] is True
            tx = answers[0]["transaction"]
            records = [(await http.get(f"{u}/settlements/{sid_of(p, req)}")).json() for u in urls]
        assert records[0] == records[1] and records[0]["state"] == "settled" and records[0]["transaction"] == tx
        assert records[0]["owner"] in ("fac-a", "fac-b")
        assert await authorization_uses(net, p) == [tx]
        assert await net.token_balance(net.payee.address) == before + 9_999
    finally:
        for proc in procs:
            proc.stop()


async def test_sigkill_right_after_broadcast_is_recovered_on_restart(served, store_url, tmp_path: Path):
    """A facilitator killed (SIGKILL) right after broadcasting: the row it recorded before sending is
    'submitted'; the restarted process reconciles it into 'settled' with the very same tx hash, and a
    repeated /settle answers that hash. On SQLite and PostgreSQL."""
    net, rpc = served
    config = write_config(tmp_path / "fac.toml", network=net.info.network, rpc=rpc, keys=[KEYS[8]],
                          store=store_url)
    req = offer(net, 7_654)
    p = await sign(req, payer_of(net))
    before = await net.token_balance(net.payee.address)
    doomed = FacilitatorProcess(["--config", str(config)], command=CRASH_AFTER_SEND)
    (url,) = await _start(doomed)
    try:
        async with httpx.AsyncClient(timeout=60) as http:
            with pytest.raises(httpx.TransportError):
                await http.post(url + "/settle", json=body(p, req))
        assert await asyncio.to_thread(doomed.wait_exit) == -9  # SIGKILL
    finally:
        doomed.stop()
    store = await SettlementStore.open(store_url)
    try:
        row = await store.get(sid_of(p, req))
        assert row is not None and row.state == "submitted" and row.tx_hash and row.raw_tx
        sent = row.tx_hash
    finally:
        await store.aclose()

    restarted = FacilitatorProcess(["--config", str(config)])
    (url,) = await _start(restarted)
    try:
        async with httpx.AsyncClient(timeout=60) as http:
            async def settled() -> dict | None:
                rec = (await http.get(f"{url}/settlements/{sid_of(p, req)}")).json()
                return rec if rec["state"] == "settled" else None

            rec = await wait_until(settled, timeout=60, interval=0.25)
            assert rec["transaction"] == sent
            again = (await http.post(url + "/settle", json=body(p, req))).json()
            assert again["success"] is True and again["transaction"] == sent
            metrics = (await http.get(url + "/metrics")).text
        assert 'paywire_facilitator_reconciled_total{outcome="settled"} 1' in metrics
        receipt = await net.chain.get_transaction_receipt(sent)
        assert receipt is not None and receipt.status == 1
        assert await authorization_uses(net, p) == [sent]
        assert await net.token_balance(net.payee.address) == before + 7_654
    finally:
        restarted.stop()
