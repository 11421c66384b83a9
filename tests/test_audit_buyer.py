"""The buyer's spend ledger is audited: the policy's refusal, the budget reserved with the payment signed (its
payload digest, never the key; one change for a plain x402 ``exact`` payment, signed before the reservation
commits) and the budget committed each queue one event in the change's transaction; the log
verifies against ``buyer_payments`` and names a receipt edited without its event. Real seller, real chain."""

from __future__ import annotations

import json

import pytest

from paywire.audit.note import Signer
from paywire.audit.ops import verify_store
from paywire.audit.sequencer import Sequencer
from paywire.audit.store import QUEUE, AuditStore
from paywire.audit.wiring import enable_audit
from paywire.client import PaymentRefused, x402_client
from paywire.client.config import BuyerConfig
from paywire.store import open_database
from paywire.store.spend import SpendLedger
from tests.test_buyer_e2e import Env, env  # noqa: F401 - the module's paid servers on the embedded chain

pytestmark = pytest.mark.asyncio(loop_scope="module")


async def test_buyer_ledger_changes_are_audited(env: Env, store_url: str) -> None:  # noqa: F811
    ledger = SpendLedger(open_database(store_url), env.net.payer.address)
    try:
        await ledger.ensure_schema()
        await enable_audit(ledger, "buyer", "agent-1")
        async with x402_client(env.wallet(), env.policy(max_per_payment="$0.10", daily="$5"),
                               store=ledger) as client:
            paid = await client.get(env.url + "/cheap")
            assert paid.status_code == 200, "the buyer pays a cheap resource"
            with pytest.raises(PaymentRefused):
                await client.get(env.url + "/dear")
        store = AuditStore(ledger.db)
        events = [json.loads(r["entry"]) for r in await store.db.fetchall(f"SELECT entry FROM {QUEUE} ORDER BY id")]
        kinds = [e["kind"] for e in events]
        assert kinds == ["payment.signed", "budget.committed", "policy.refused"], \
            f"one event per ledger change (reserved and signed in one transaction): {kinds}"
        signed, committed, refused = events[0], events[1], events[2]
        assert signed["subject"]["payload_hash"], "the signed payment is recorded by its payload digest"
        assert signed["previous"] is None, f"a new row, reserved and signed at once: {signed}"
        assert "signature" not in json.dumps(signed), "never the signature or the key"
        assert committed["subject"]["tx_hash"], "the committed budget names the settlement transaction"
        assert committed["previous"] == "reserved:signed", "and the state it left"
        assert refused["data"]["rule"] == "max_per_payment", f"the refusal names its rule: {refused['data']}"

        signer = Signer.generate("paywire.example/buyer-test")
        seq = Sequencer(store, signer)
        await seq.drain()
        await seq.integrate(force_checkpoint=True)
        report = await verify_store(store, [signer.verifier])
        assert report.ok, f"the log agrees with the buyer's ledger: {[str(f) for f in report.findings]}"

        rid = committed["subject"]["record"]
        await store.db.execute("UPDATE buyer_payments SET amount = '1' WHERE id = ?", (rid,))
        report = await verify_store(store, [signer.verifier])
        first = report.first()
        assert first is not None and first.seq == 1, f"the edited receipt is named at its latest event: {first}"
        assert "buyer_payments row" in first.why, f"and the ledger: {first}"
    finally:
        await ledger.aclose()
        await ledger.db.aclose()


async def test_buyer_audit_is_a_config_switch(env: Env, sqlite_url: str, monkeypatch: pytest.MonkeyPatch) -> None:  # noqa: F811
    """``PAYWIRE_BUYER_AUDIT`` (``BuyerConfig.audit``) turns the buyer's audit trail on: no code change."""
    monkeypatch.setenv("PAYWIRE_BUYER_AUDIT", "agent-env-1")
    monkeypatch.setenv("PAYWIRE_BUYER_STORE", sqlite_url)
    config = BuyerConfig.load()
    assert config.audit == "agent-env-1", "the environment sets it"
    async with x402_client(env.wallet(), env.policy(max_per_payment="$0.10", daily="$5"), config=config) as client:
        assert (await client.get(env.url + "/cheap")).status_code == 200, "the buyer pays"
    db = open_database(sqlite_url)
    try:
        events = [json.loads(r["entry"]) for r in await db.fetchall(f"SELECT entry FROM {QUEUE} ORDER BY id")]
    finally:
        await db.aclose()
    assert [e["kind"] for e in events] == ["config.buyer_started", "payment.signed", "budget.committed"], \
        f"the policy in force, then each ledger change's event: {[e['kind'] for e in events]}"
    assert {e["instance"] for e in events} == {"agent-env-1"}, "under the configured instance name"
    policy = events[0]["data"]["policy"]
    assert policy["max_per_payment"] and policy["daily"] and policy["per_host"] is None, \
        f"the config event records the policy's limits: {policy}"
    assert policy["account"].lower() == env.net.payer.address.lower(), "and whose policy it is"
