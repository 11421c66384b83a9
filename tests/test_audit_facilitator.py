"""The facilitator's settlement records are audited: two instances racing on one payment write one settlement
and exactly one event per change (claimed, transaction recorded, settled), in the change's transaction; the log
verifies against ``paywire_settlements`` and names a row edited without its event. Real embedded chain, SQLite
and PostgreSQL."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator

import pytest
import pytest_asyncio

from paywire.audit.note import Signer
from paywire.audit.ops import verify_store
from paywire.audit.sequencer import Sequencer
from paywire.audit.store import QUEUE, AuditStore
from paywire.audit.wiring import enable_audit
from paywire.devnet import Devnet
from paywire.evm.signer import LocalSigner
from paywire.store.settlements import SettlementStore
from tests.helpers import close_devnet, new_devnet, offer, payer_of, sign
from tests.test_facilitator_helpers import facilitator_with_store
from tests.test_facilitator_settle import KEYS, sid_of

pytestmark = pytest.mark.asyncio(loop_scope="module")


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def net() -> AsyncIterator[Devnet]:
    n = await new_devnet("embedded")
    yield n
    await close_devnet(n)


async def test_two_audited_instances_log_each_settlement_change_once(net: Devnet, store_url: str) -> None:
    a = await SettlementStore.open(store_url, instance_id="fac-a")
    b = await SettlementStore.open(store_url, instance_id="fac-b")
    try:
        await enable_audit(a, "facilitator", "fac-a")
        await enable_audit(b, "facilitator", "fac-b")
        fa = facilitator_with_store(net, a, keys=[KEYS[6]])
        fb = facilitator_with_store(net, b, keys=[KEYS[7]])
        req = offer(net, 1_357)
        p = await sign(req, payer_of(net))
        results = await asyncio.gather(*((fa if i % 2 else fb).settle(p, req) for i in range(12)))
        assert all(r.success for r in results), "every racing settle answers success"
        sid = sid_of(p, req)

        store = AuditStore(a.db)
        events = [json.loads(r["entry"]) for r in await store.db.fetchall(f"SELECT entry FROM {QUEUE} ORDER BY id")]
        mine = [e for e in events if e["subject"].get("settlement_id") == sid]
        assert [e["kind"] for e in mine] == ["settlement.claimed", "settlement.tx_recorded", "settlement.settled"], \
            f"one event per change of the settlement, whoever made it: {[e['kind'] for e in mine]}"
        assert mine[1]["data"]["raw_tx_digest"].startswith("sha256:"), "the raw transaction is logged as a digest"
        assert mine[2]["subject"]["tx_hash"] == results[0].transaction.lower(), "the settled event names the tx"
        assert mine[2]["previous"] == "submitted", "and the state it left"
        assert {e["instance"] for e in mine} <= {"fac-a", "fac-b"}, "each event names the instance that wrote it"

        signer = Signer.generate("paywire.example/facilitator-test")
        seq = Sequencer(store, signer)
        await seq.drain()
        await seq.integrate(force_checkpoint=True)
        report = await verify_store(store, [signer.verifier])
        assert report.ok, f"the log agrees with the settlements: {[str(f) for f in report.findings]}"

        await store.db.execute("UPDATE paywire_settlements SET pay_to = ? WHERE id = ?", ("0x" + "ee" * 20, sid))
        report = await verify_store(store, [signer.verifier])
        first = report.first()
        assert first is not None and first.seq == report.size - 1, \
            f"the edited settlement is named at its latest event (the last one logged): {first}"
        assert "paywire_settlements row" in first.why, f"and the ledger row is named: {first}"
    finally:
        await a.aclose()
        await b.aclose()


async def test_an_audited_facilitator_records_its_keys_at_start(tmp_path) -> None:
    """Configuration events: the signer addresses and kinds in force, so a rotated key shows between two starts."""
    from paywire.facilitator.config import FacilitatorConfig
    from paywire.facilitator.service import FacilitatorService

    config = FacilitatorConfig(devnet=True, store=f"sqlite:///{tmp_path / 'fac.db'}", audit=True,
                               audit_verdict_interval=3600)
    service = await FacilitatorService.start(config)
    try:
        rows = await service.store.db.fetchall(f"SELECT entry FROM {QUEUE} ORDER BY id")
        events = [json.loads(r["entry"]) for r in rows]
        assert [e["kind"] for e in events] == ["config.facilitator_started"], f"one config event: {events}"
        signers = events[0]["data"]["supported"]["signers"]
        want = {a.lower() for s in service.facilitator.supported().signers.values() for a in s}
        assert want and {a.lower() for s in signers.values() for a in s} == want, \
            f"it names the facilitator's signing addresses: {signers}"
        assert events[0]["subject"]["settings_digest"].startswith("sha256:"), "and their digest, to compare starts"

        # verify verdicts are tallies: 30 refused verifies (unpaid, free to send) add no event until the interval
        net = service.devnet
        req = offer(net)
        broke = await sign(req, LocalSigner(b"\x11" * 32))
        for _ in range(30):
            assert not (await service.facilitator.verify(broke, req)).is_valid
        assert (await service.facilitator.verify(await sign(req, payer_of(net)), req)).is_valid
        count = await service.store.db.fetchone(f"SELECT COUNT(*) AS n FROM {QUEUE}")
        assert count is not None and count["n"] == 1, "verdicts do not add an event each"
        await service.facilitator.verdicts.flush()  # the interval passed (or the service stops)
        rows = await service.store.db.fetchall(f"SELECT entry FROM {QUEUE} ORDER BY id")
        summary = json.loads(rows[-1]["entry"])
        assert len(rows) == 2 and summary["kind"] == "facilitator.verify_summary", "one summary event"
        tallies = {(v[1], v[2]) for v in summary["data"]["verdicts"]}
        assert ("valid", 1) in tallies and summary["data"]["total"] == 31, f"it counts every verdict: {summary}"
        assert any(n == 30 and v != "valid" for v, n in tallies), f"the refusals by reason: {tallies}"
    finally:
        await service.aclose()


async def test_a_reconciler_rebroadcast_is_an_event_and_a_plain_note_is_not(tmp_path) -> None:
    from paywire.store.settlements import SettlementStore

    store = await SettlementStore.open(f"sqlite:///{tmp_path / 'fac.db'}", instance_id="fac-r")
    try:
        await enable_audit(store, "facilitator", "fac-r")
        ok, row = await store.claim(network="eip155:1", asset="0x" + "aa" * 20, payer="0x" + "bb" * 20,
                                    nonce="0x" + "01" * 32, requirements_digest="d", request={}, amount=5,
                                    pay_to="0x" + "cc" * 20, lease_seconds=30)
        assert ok
        await store.note(row.id, "waiting for the node")  # an observation, not a money event
        await store.note(row.id, "transaction re-broadcast by the reconciler", kind="settlement.rebroadcast")
        rows = await store.db.fetchall(f"SELECT entry FROM {QUEUE} ORDER BY id")
        kinds = [json.loads(r["entry"])["kind"] for r in rows]
        assert kinds == ["settlement.claimed", "settlement.rebroadcast"], f"the reconciler's action is logged: {kinds}"
        last = json.loads(rows[-1]["entry"])
        assert last["previous"] == "verified" and last["data"]["state"] == "verified", "it leaves the state as is"
    finally:
        await store.aclose()
