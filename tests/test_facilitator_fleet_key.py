"""A facilitator fleet names one key to clients: two real ``paywire facilitator`` processes sharing PostgreSQL, each
with its own gas key and the same ``fleet_key``, answer ``/supported`` with the same upto ``facilitatorAddress``
and batch-settlement ``receiverAuthorizer``; an upto payment bound to that key (read from one instance) is
verified and settled by the other, once, with the charged amount (token balances asserted)."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

from paywire.chain.devkeys import dev_keys
from paywire.devnet import Devnet
from paywire.evm.signer import LocalSigner
from paywire.facilitator.client import HttpFacilitatorClient
from paywire.schemes.evm_upto.client import UptoEvmClient
from paywire.x402.models import PaymentPayload, PaymentRequirements
from tests.test_facilitator_helpers import FacilitatorProcess, permit2_devnet_served, write_config

pytestmark = pytest.mark.asyncio(loop_scope="module")
KEYS = ["0x" + k.hex() for k in dev_keys(10)]
MAXIMUM, CHARGE = 50_000, 7_000


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def served() -> AsyncIterator[tuple[Devnet, str]]:
    async with permit2_devnet_served() as served_net:
        yield served_net


def kind(supported: Any, scheme: str, network: str) -> dict[str, Any]:
    return next(dict(k.extra or {}) for k in supported.kinds if k.scheme == scheme and k.network == network)


async def test_two_instances_name_the_fleet_key_and_settle_each_others_upto(
        served: tuple[Devnet, str], pg_url: str, tmp_path: Path) -> None:
    net, rpc = served
    fleet = LocalSigner(bytes.fromhex(KEYS[7][2:])).address
    procs = []
    for name, own in (("a", KEYS[5]), ("b", KEYS[6])):
        cfg = write_config(tmp_path / f"fac-{name}.toml", network=net.info.network, rpc=rpc, keys=[own],
                           store=pg_url, instance_id=f"fac-{name}")
        with cfg.open("a") as f:  # the network table comes last: the fleet key joins the instance's own gas key
            f.write(f'fleet_key = "{KEYS[7]}"\n')
        procs.append(FacilitatorProcess(["--config", str(cfg)]))
    urls = await asyncio.gather(*(asyncio.to_thread(p.start) for p in procs))
    clients = [HttpFacilitatorClient(u, timeout=30) for u in urls]
    try:
        supported = await asyncio.gather(*(c.supported() for c in clients))
        network = net.info.network
        named = [kind(s, "upto", network)["facilitatorAddress"] for s in supported]
        assert named == [fleet, fleet], f"the instances name different upto keys: {named}"
        authorizers = [kind(s, "batch-settlement", network)["receiverAuthorizer"] for s in supported]
        assert authorizers == [fleet, fleet], f"the instances name different receiver authorizers: {authorizers}"

        # the seller read instance A's /supported; the payment is verified and settled by instance B
        req = PaymentRequirements(scheme="upto", network=network, amount=MAXIMUM, asset=net.info.token,
                                  pay_to=net.payee.address, max_timeout_seconds=60,
                                  extra={"assetTransferMethod": "permit2", **kind(supported[0], "upto", network)})
        p = PaymentPayload(accepted=req, payload=await UptoEvmClient(LocalSigner(net.payer.private_key))
                           .create_payload(req))
        before = await net.token_balance(net.payee.address)
        verdict = await clients[1].verify(p, req)
        assert verdict.is_valid, verdict
        charged = dataclasses.replace(req, amount=CHARGE)
        answer = await clients[1].settle(p, charged)
        assert answer.success, answer
        again = await clients[0].settle(p, charged)  # the other instance answers the recorded outcome
        assert (again.success, again.transaction) == (True, answer.transaction), again
        assert await net.token_balance(net.payee.address) - before == CHARGE, "the charge did not move once"
    finally:
        for c in clients:
            await c.aclose()
        for proc in procs:
            proc.stop()
