"""On-chain anchors of checkpoints (issue 12, "optional anchoring"): real transactions on the embedded chain carry
the checkpoint's origin, size and root; reading them back catches a log rewritten (and re-signed with the log's
own key) after it was anchored."""

from __future__ import annotations

import asyncio

from audit_support import ORIGIN, event, verify_cli

from paywire.audit.anchor import Anchorer, anchor_data, check_anchors, parse_anchor_data
from paywire.audit.note import Signer, sign_note
from paywire.audit.sequencer import CheckpointPolicy, Sequencer
from paywire.audit.store import CHECKPOINTS, AuditStore
from paywire.chain.server import make_app
from paywire.chain.tx import TxSender
from paywire.serving import serve_asgi
from tests.helpers import close_devnet, new_devnet


def test_anchor_calldata_round_trips() -> None:
    data = anchor_data(ORIGIN, 1234, bytes(range(32)))
    assert parse_anchor_data(data) == (ORIGIN, 1234, bytes(range(32)))


async def test_anchors_are_real_transactions_and_catch_a_rewrite(sqlite_url: str) -> None:
    net = await new_devnet("embedded")
    store = await AuditStore.open(sqlite_url)
    try:
        key = Signer.generate(ORIGIN)
        seq = Sequencer(store, key, batch=10, policy=CheckpointPolicy(every_entries=10, every_seconds=1e9))
        anchorer = Anchorer(store, TxSender(net.chain, net.facilitator.private_key), net.info.network, every=2)
        for i in range(10):
            await store.enqueue(event(i))
        await seq.drain()
        first = await anchorer.anchor_if_due()
        assert first is not None and first.size == 10, "the first checkpoint is anchored"
        for i in range(10, 20):
            await store.enqueue(event(i))
        await seq.drain()
        assert await anchorer.anchor_if_due() is None, "one more checkpoint: not due yet (every 2)"
        for i in range(20, 30):
            await store.enqueue(event(i))
        await seq.drain()
        second = await anchorer.anchor_if_due()
        assert second is not None and second.size == 30, "two more: the latest one is anchored"
        receipt = await net.chain.get_transaction_receipt(second.tx_hash)
        assert receipt is not None and receipt.status == 1, "a mined transaction"

        assert await check_anchors(store, net.chain) == (2, []), "the chain agrees with the stored checkpoints"
        async with serve_asgi(make_app(net.chain.transport)) as rpc:  # the node as a verifier reaches it
            code, out = await asyncio.to_thread(verify_cli, "--store", sqlite_url, "--key", key.verifier.vkey,
                                                "--anchor-rpc", rpc)
        assert code == 0 and "anchors: 2 on-chain anchors agree" in out, f"paywire audit verify --anchor-rpc:\n{out}"

        # the operator rewrites history and re-signs the checkpoint of size 30 with the log's own key
        forged = (await sign_note(f"{ORIGIN}\n30\n{'A' * 43}=\n", [key])).format()
        await store.db.execute(f"UPDATE {CHECKPOINTS} SET note = ? WHERE size = 30", (forged,))
        checked, problems = await check_anchors(store, net.chain)
        assert checked == 2 and len(problems) == 1 and "rewritten after it was anchored" in problems[0], problems
    finally:
        await store.aclose()
        await close_devnet(net)
