"""The seller's ledger says which protocol carried each payment, and a ledger written before that column existed
is upgraded in place: its MPP rows (``payment_id = mpp:<challenge id>``) and L402 rows (scheme ``l402``) say so."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from paywire.store import migrations
from paywire.store.db import open_database
from paywire.store.payments import COMPONENT, TABLE, NewPayment, PaymentStore

_OLD_INSERT = (
    f"INSERT INTO {TABLE} (auth_key, payment_id, payload_hash, state, route, method, path, settle_mode, x402_version,"
    " scheme, network, asset, pay_to, amount, decimals, payload, requirements, created_at, updated_at)"
    " VALUES (?, ?, 'h', 'served', 'GET /x', 'GET', '/x', 'after', ?, ?, 'n', 'a', 'p', '1', 0, '{}', '{}', 1, 1)")


def _new(auth_key: str, protocol: str) -> NewPayment:
    return NewPayment(auth_key=auth_key, payment_id=None, payload_hash="h", route="GET /x", method="GET", path="/x",
                      settle_mode="after", x402_version=2, scheme="exact", network="eip155:1", asset="0xa",
                      pay_to="0xb", amount=1, decimals=6, payer=None, payload="{}", requirements="{}",
                      protocol=protocol)


async def test_upgrade_fills_the_protocol_of_rows_written_before_the_column(
        store_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    steps = migrations._REGISTRY[COMPONENT]
    assert len(steps) >= 3, "this test builds the ledger as it was before its third migration step"
    monkeypatch.setitem(migrations._REGISTRY, COMPONENT, steps[:2])
    db = open_database(store_url)
    try:
        await migrations.migrate(db, [COMPONENT])  # the previous schema, with rows the previous code wrote
        old: list[tuple[Any, ...]] = [
            ("x402-v2", "pid_0123456789abcdef", 2, "exact"),
            ("x402-v1", None, 1, "exact"),
            ("mpp-evm", "mpp:ch-evm", 2, "exact"),
            ("mpp-ln", "mpp:ch-ln", 2, "lightning"),
            ("l402:abc", None, 0, "l402"),
        ]
        for row in old:
            await db.execute(_OLD_INSERT, row)
        monkeypatch.setitem(migrations._REGISTRY, COMPONENT, steps)
        store = PaymentStore(db)
        await store.migrate()
        got = {r.auth_key: r.protocol for r in await store.sales()}
        assert got == {"x402-v2": "x402", "x402-v1": "x402", "mpp-evm": "mpp", "mpp-ln": "mpp", "l402:abc": "l402"}
        await store.migrate()  # idempotent
        assert {r.auth_key: r.protocol for r in await store.sales()} == got
    finally:
        await db.aclose()


async def test_upgrade_adds_an_empty_identity_to_old_rows(store_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """The fourth step (docs/identity.md) adds ``identity``: rows written before it have none."""
    steps = migrations._REGISTRY[COMPONENT]
    assert len(steps) >= 4, "the ledger has no identity step"
    monkeypatch.setitem(migrations._REGISTRY, COMPONENT, steps[:3])
    db = open_database(store_url)
    try:
        store = PaymentStore(db)
        await store.migrate()
        await db.execute(f"INSERT INTO {TABLE} (auth_key, payload_hash, state, route, method, path, settle_mode, "
                         "x402_version, scheme, network, asset, pay_to, amount, decimals, payload, requirements, "
                         "created_at, updated_at) VALUES ('old', 'h', 'served', 'r', 'GET', '/', 'after', 2, 'exact', "
                         "'eip155:1', '0xa', '0xb', '1', 6, '{}', '{}', 0, 0)")
        monkeypatch.setitem(migrations._REGISTRY, COMPONENT, steps)
        await store.migrate()
        rows = {r.auth_key: r.identity for r in await store.sales()}
        assert rows == {"old": None}, f"an old row got an identity: {rows}"
        new = await store.claim(dataclasses.replace(_new("k-id", "x402"), identity="did:pkh:eip155:1:0x" + "1" * 40),
                                "owner", 30.0)
        assert new is not None and (await store.get(new.id)).identity.startswith("did:pkh:"), "identity not stored"
    finally:
        await db.aclose()


async def test_a_claim_records_its_protocol(store_url: str) -> None:
    store = await PaymentStore.open(store_url)
    try:
        claimed = await store.claim(_new("k-mpp", "mpp"), "owner", 30.0)
        assert claimed is not None and claimed.protocol == "mpp"
        stored = await store.get(claimed.id)
        assert stored is not None and stored.protocol == "mpp"
        found = await store.find("k-mpp", None)
        assert found is not None and found.protocol == "mpp"
    finally:
        await store.aclose()


async def test_stale_settling_finds_only_abandoned_settling_rows_in_its_window(store_url: str) -> None:
    """``reconcile_pending``'s second source: ``settling`` rows whose owner's lease ran out, among the newest
    ``window`` rows; live ones, other states and rows before the window are left alone."""
    now = [1000.0]
    store = await PaymentStore.open(store_url)
    store.clock = lambda: now[0]
    try:
        await store.migrate()
        rows = {}
        for name, lease in (("old", 5.0), ("live", 60.0), ("claimed", 5.0), ("abandoned", 5.0), ("released", 5.0)):
            rec = await store.claim(_new(f"k-{name}", "x402"), f"o-{name}", lease, "claimed")
            assert rec is not None
            rows[name] = rec.id
            if name != "claimed":
                assert await store.update(rec.id, f"o-{name}", ["claimed"], state="settling")
        assert await store.update(rows["released"], "o-released", ["settling"], owner=None)
        now[0] += 10  # every 5 s lease is over; the 60 s one is not
        found = await store.stale_settling(limit=10)
        assert [r.id for r in found] == [rows["old"], rows["abandoned"], rows["released"]]
        assert [r.id for r in await store.stale_settling(window=3, limit=10)] == [rows["abandoned"],
                                                                                  rows["released"]]
        assert [r.id for r in await store.stale_settling(limit=1)] == [rows["old"]]
    finally:
        await store.aclose()
