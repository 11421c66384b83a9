"""On-chain anchors of checkpoints (issue 12, "optional anchoring"): real transactions on the embedded chain carry
the checkpoint's origin, size and root; reading them back catches a log rewritten (and re-signed with the log's
own key) after it was anchored."""

from __future__ import annotations

import asyncio

from audit_support import ORIGIN, event, verify_cli

from paywire.audit.anchor import Anchor, Anchorer, anchor_data, check_anchors, parse_anchor_data
from paywire.audit.note import Signer, sign_note
from paywire.audit.sequencer import CheckpointPolicy, Sequencer
from paywire.audit.store import CHECKPOINTS, AuditStore, enqueue
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


class _Watched(Anchorer):
    """The anchorer a running sequencer calls, reporting each call's outcome to the test."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.outcomes: asyncio.Queue[Anchor | None] = asyncio.Queue()

    async def anchor_if_due(self, *, force: bool = False) -> Anchor | None:
        anchor = await super().anchor_if_due(force=force)
        self.outcomes.put_nowait(anchor)
        return anchor


async def _next_anchor(anchorer: _Watched) -> Anchor:
    while True:
        anchor = await asyncio.wait_for(anchorer.outcomes.get(), 120)
        if anchor is not None:
            return anchor


async def test_a_running_sequencer_anchors_every_k_checkpoints(sqlite_url: str) -> None:
    net = await new_devnet("embedded")
    store = await AuditStore.open(sqlite_url)
    stop = asyncio.Event()
    try:
        key = Signer.generate(ORIGIN)
        anchorer = _Watched(store, TxSender(net.chain, net.facilitator.private_key), net.info.network, every=2)
        seq = Sequencer(store, key, batch=10, policy=CheckpointPolicy(every_entries=10, every_seconds=1e9),
                        anchorer=anchorer)
        for i in range(10):
            await store.enqueue(event(i))
        task = asyncio.ensure_future(seq.run(stop, idle=0.01))
        first = await _next_anchor(anchorer)
        assert first.size == 10, f"the first checkpoint is anchored by the running sequencer: {first}"
        async with store.db.transaction() as tx:  # one commit: the sequencer sees all 20 (2 checkpoints of 10)
            for i in range(10, 30):
                await enqueue(tx, event(i))
        second = await _next_anchor(anchorer)
        assert second.size == 30, f"two checkpoints later (every 2), the latest is anchored: {second}"
        stop.set()
        await task
        assert [a.size for a in await anchorer.anchors()] == [10, 30], "one anchor per 2 checkpoints"
        assert await check_anchors(store, net.chain) == (2, []), "the chain agrees with the stored checkpoints"
    finally:
        stop.set()
        await store.aclose()
        await close_devnet(net)
