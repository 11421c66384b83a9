"""An ``upto`` settlement survives a SIGKILLed facilitator: a real ``paywire facilitator`` process is killed at
one step of its first settlement — claimed (nothing signed), recorded (signed, never broadcast), sent (broadcast,
receipt not read) — and restarted with the same instance id on the same SQLite file; the seller's repeated
``/settle`` completes the sale with the charged amount (not the maximum), exactly once, through Permit2.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from pathlib import Path

import httpx
import pytest
import pytest_asyncio

from paywire.evm.signer import LocalSigner
from paywire.facilitator.client import HttpFacilitatorClient
from paywire.schemes.evm_upto.client import UptoEvmClient
from paywire.store.settlements import SettlementStore
from paywire.x402.models import PaymentPayload, PaymentRequirements
from tests.test_facilitator_helpers import FacilitatorProcess, permit2_devnet_served, write_config
from tests.test_facilitator_recovery import CRASH_AT, KEYS, POINTS
from tests.test_facilitator_settle import body

pytestmark = pytest.mark.asyncio(loop_scope="module")
MAXIMUM, CHARGE = 50_000, 3_000
WINDOW = 120  # the authorization is signed before two facilitator processes start: room for a busy machine


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def served():
    async with permit2_devnet_served() as served_net:
        yield served_net


@pytest.mark.parametrize("point", POINTS)
async def test_killed_facilitator_finishes_the_upto_sale_with_the_charged_amount(served, tmp_path: Path,
                                                                                point: str) -> None:
    net, rpc = served
    key = KEYS[8]
    store_url = f"sqlite:///{tmp_path / 'fac.db'}"
    config = write_config(tmp_path / "fac.toml", network=net.info.network, rpc=rpc, keys=[key], store=store_url,
                          reconcile_interval=5, instance_id="fac-a")
    req = PaymentRequirements(scheme="upto", network=net.info.network, amount=MAXIMUM, asset=net.info.token,
                              pay_to=net.payee.address, max_timeout_seconds=WINDOW,
                              extra={"assetTransferMethod": "permit2",
                                     "facilitatorAddress": LocalSigner(key).address})
    p = PaymentPayload(accepted=req, payload=await UptoEvmClient(LocalSigner(net.payer.private_key))
                       .create_payload(req))
    charged = dataclasses.replace(req, amount=CHARGE)  # settle-time requirements: the actual charge
    before = await net.token_balance(net.payee.address)
    doomed = FacilitatorProcess(["--config", str(config)], command=CRASH_AT, env={"CRASH_AT": point})
    try:
        url = await asyncio.to_thread(doomed.start)
        async with httpx.AsyncClient(timeout=60) as http:
            with pytest.raises(httpx.TransportError):
                await http.post(url + "/settle", json=body(p, charged))
        assert await asyncio.to_thread(doomed.wait_exit) == -9, "the facilitator was not SIGKILLed"
    finally:
        doomed.stop()
    restarted = FacilitatorProcess(["--config", str(config)])
    try:
        url = await asyncio.to_thread(restarted.start)
        seller = HttpFacilitatorClient(url, timeout=30)
        try:
            answer = await seller.settle(p, charged)
            deadline = time.time() + WINDOW
            while not answer.success and answer.error_reason == "settlement_pending" and time.time() < deadline:
                await asyncio.sleep(0.5)
                answer = await seller.settle(p, charged)
            assert answer.success, f"the sale was not completed: {answer}"
            again = await seller.settle(p, charged)
            assert (again.success, again.transaction) == (True, answer.transaction), f"a repeat differs: {again}"
        finally:
            await seller.aclose()
    finally:
        restarted.stop()
    assert await net.token_balance(net.payee.address) - before == CHARGE, "the charged amount did not move once"
    store = await SettlementStore.open(store_url)
    try:
        rows = await store.open_rows(limit=10)
        assert rows == [], f"open settlements left behind: {rows}"
    finally:
        await store.aclose()
