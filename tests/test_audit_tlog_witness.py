"""The c2sp.org/tlog-witness `add-checkpoint` protocol over real HTTP: the log pushes checkpoints with
consistency proofs, the witness answers with its cosignature or the status code the spec assigns."""

from __future__ import annotations

import base64

from audit_support import ORIGIN, event, truncate
from starlette.applications import Starlette

from paywire.audit.checkpoint import format_add_checkpoint
from paywire.audit.note import COSIGNATURE_V1, Signer, sign_note
from paywire.audit.ops import verify_store
from paywire.audit.sequencer import CheckpointPolicy, Sequencer
from paywire.audit.store import AuditStore
from paywire.audit.witness_core import WitnessState
from paywire.audit.witness_http import WitnessRejected, add_checkpoint_route, submit_checkpoint
from paywire.serving import serve_asgi
from paywire.transport.keepalive import KeepAliveClient


async def _grow(store: AuditStore, seq: Sequencer, start: int, count: int, amount: str = "1000") -> None:
    for i in range(start, start + count):
        await store.enqueue(event(i, amount=amount))
    await seq.drain()
    await seq.integrate(force_checkpoint=True)


async def test_add_checkpoint_cosigns_extensions_and_answers_each_error_as_specified(sqlite_url: str) -> None:
    store = await AuditStore.open(sqlite_url)
    log_key = Signer.generate(ORIGIN)
    w_key = Signer.generate("witness.example/w1", sig_type=COSIGNATURE_V1)
    saved: list[WitnessState] = []
    route = add_checkpoint_route(origin=ORIGIN, log_keys=[log_key.verifier], signer=w_key,
                                 load=lambda: saved[-1] if saved else None, save=saved.append)
    seq = Sequencer(store, log_key, batch=50, policy=CheckpointPolicy(every_entries=1000))
    try:
        async with serve_asgi(Starlette(routes=[route])) as url:
            client = KeepAliveClient(url)
            await _grow(store, seq, 0, 13)
            size, sigs = await submit_checkpoint(store, client, w_key.verifier)
            assert (size, len(sigs)) == (13, 1), "the first checkpoint is cosigned"
            await _grow(store, seq, 13, 20)
            size, sigs = await submit_checkpoint(store, client, w_key.verifier)  # learns old=13 from a 409
            assert size == 33 and saved[-1].size == 33, "the next one after the 409 tells the old size"
            report = await verify_store(store, [log_key.verifier], witness_keys=[w_key.verifier],
                                        cosignatures_required=1)
            assert report.ok and report.witnessed_size == 33, f"cosignatures kept and valid: {report.findings}"

            note = await store.checkpoint(33)
            assert note is not None
            bare = note.split("\n\n")[0] + "\n\n" + note.split("\n\n")[1].split("\n")[0] + "\n"

            async def post(body: str) -> tuple[int, str]:
                status, raw = await client.send("POST", "/add-checkpoint", body.encode(), content_type="text/plain")
                return status, raw.decode()

            status, body = await post(format_add_checkpoint(13, [], bare))
            assert (status, body) == (409, "33\n"), f"a stale old size is a 409 naming the witness's size: {body}"
            status, _ = await post(format_add_checkpoint(40, [], bare))
            assert status == 400, "an old size above the checkpoint is a 400"
            other = (await sign_note("elsewhere.example/log\n1\n" + base64.b64encode(bytes(32)).decode() + "\n",
                                     [Signer.generate("elsewhere.example/log")])).format()
            status, _ = await post(format_add_checkpoint(0, [], other))
            assert status == 404, "an unknown origin is a 404"
            forged = (await sign_note(bare.split("\n\n")[0] + "\n", [Signer.generate(ORIGIN)])).format()
            status, _ = await post(format_add_checkpoint(33, [], forged))
            assert status == 403, "a checkpoint not signed by the log's key is a 403"
            status, _ = await post("garbage")
            assert status == 400, "a malformed body is a 400"

            await truncate(store, 20)
            await _grow(store, Sequencer(store, log_key, batch=50), 20, 20, amount="1")
            try:
                await submit_checkpoint(store, client, w_key.verifier, old=33)
            except WitnessRejected as exc:
                assert exc.status == 422, f"a rewritten history is a 422: {exc}"
            else:
                raise AssertionError("the witness cosigned a rewritten history")
            assert saved[-1].size == 33, "the witness still holds the last good checkpoint"
            await client.aclose()
    finally:
        await store.aclose()



async def test_push_witness_command_keeps_cosignatures_and_fails_loudly_on_a_rewrite(sqlite_url: str) -> None:
    """``paywire audit push-witness`` (the log side of tlog-witness) as an operator runs it."""
    import asyncio

    from typer.testing import CliRunner

    from paywire.cli.main import app as cli

    store = await AuditStore.open(sqlite_url)
    log_key = Signer.generate(ORIGIN)
    w_key = Signer.generate("witness.example/w2", sig_type=COSIGNATURE_V1)
    saved: list[WitnessState] = []
    route = add_checkpoint_route(origin=ORIGIN, log_keys=[log_key.verifier], signer=w_key,
                                 load=lambda: saved[-1] if saved else None, save=saved.append)
    seq = Sequencer(store, log_key, batch=50, policy=CheckpointPolicy(every_entries=1000))
    try:
        async with serve_asgi(Starlette(routes=[route])) as url:
            def push() -> tuple[int, str]:
                r = CliRunner().invoke(cli, ["audit", "push-witness", "--store", sqlite_url, "--witness", url,
                                             "--witness-key", w_key.verifier.vkey, "--once"])
                return r.exit_code, r.output

            await _grow(store, seq, 0, 9)
            code, out = await asyncio.to_thread(push)
            assert code == 0 and "cosigned size 9" in out, f"the checkpoint is pushed and cosigned:\n{out}"
            await _grow(store, seq, 9, 5)
            code, out = await asyncio.to_thread(push)  # a fresh process: learns the witness's size from a 409
            assert code == 0 and "cosigned size 14" in out, f"the next one too:\n{out}"
            report = await verify_store(store, [log_key.verifier], witness_keys=[w_key.verifier],
                                        cosignatures_required=1)
            assert report.ok and report.witnessed_size == 14, f"the cosignatures are kept: {report.findings}"

            await truncate(store, 5)
            await _grow(store, Sequencer(store, log_key, batch=50), 5, 12, amount="1")
            code, out = await asyncio.to_thread(push)
            assert code == 3 and "REFUSED" in out, f"a rewritten log is refused loudly (exit 3):\n{out}"
            assert saved[-1].size == 14, "the witness still holds the last good checkpoint"
    finally:
        await store.aclose()
