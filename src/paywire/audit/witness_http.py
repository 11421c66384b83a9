"""The c2sp.org/tlog-witness protocol: a witness's ``POST /add-checkpoint`` (push: the log brings its
checkpoint and a consistency proof) and the log-side client that submits to it.

Status codes as the spec sets them: 404 unknown origin, 403 no valid signature by the log's key, 400 old size
above the checkpoint's, 409 old size is not the last size cosigned (body: that size, ``text/x.tlog.size``), 422
a proof that does not verify (or a fork); 200 with the cosignature lines. The check and the state update are
one step under a lock, and the state is persisted before answering.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence

from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

from paywire.audit import merkle
from paywire.audit.checkpoint import (
    FormatError,
    format_add_checkpoint,
    parse_add_checkpoint,
    parse_signed_checkpoint,
)
from paywire.audit.note import (
    Note,
    NoteError,
    Signature,
    Signer,
    Verifier,
    parse_signature_lines,
    verify_note,
)
from paywire.audit.store import AuditStore
from paywire.audit.witness_core import WitnessRefusal, WitnessState, check_and_cosign
from paywire.transport.keepalive import KeepAliveClient

SIZE_TYPE = "text/x.tlog.size"
_STATUS = {"unknown-log": 404, "bad-signature": 403, "shrunk": 400, "fork": 422, "inconsistent": 422}


def add_checkpoint_route(*, origin: str, log_keys: Sequence[Verifier], signer: Signer,
                         load: Callable[[], WitnessState | None], save: Callable[[WitnessState], None],
                         path: str = "/add-checkpoint") -> Route:
    """``POST /add-checkpoint`` for one log; ``load``/``save`` read and persist the witness's state."""
    lock = asyncio.Lock()

    async def add_checkpoint(request: Request) -> Response:
        try:
            old, proof, note_text = parse_add_checkpoint((await request.body()).decode())
            cp, _ = parse_signed_checkpoint(note_text)
        except (FormatError, UnicodeDecodeError) as exc:
            return PlainTextResponse(f"{exc}\n", status_code=400)
        if cp.origin != origin:
            return PlainTextResponse(f"unknown log {cp.origin!r}\n", status_code=404)
        if old > cp.size:
            return PlainTextResponse(f"old size {old} is above the checkpoint's {cp.size}\n", status_code=400)
        if cp.size == 0 and cp.root != merkle.EMPTY_ROOT:
            return PlainTextResponse("an empty tree has the empty root\n", status_code=422)
        async with lock:
            state = load()
            have = state.size if state is not None else 0
            if old != have:
                return PlainTextResponse(f"{have}\n", status_code=409, media_type=SIZE_TYPE)
            if old == 0 and proof:
                return PlainTextResponse("a proof from size 0 must be empty\n", status_code=422)
            try:
                done = await check_and_cosign(note_text, proof, state=state, log_keys=log_keys, signer=signer,
                                              origin=origin, now=int(time.time()))
            except WitnessRefusal as exc:
                return PlainTextResponse(f"{exc}\n", status_code=_STATUS.get(exc.kind, 422))
            save(done.state)
        return PlainTextResponse(done.signature.line)

    return Route(path, add_checkpoint, methods=["POST"])


class WitnessRejected(Exception):
    """The witness refused the checkpoint (HTTP status and its message)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"witness answered {status}: {message.strip()}")
        self.status = status


async def submit_checkpoint(store: AuditStore, client: KeepAliveClient, witness: Verifier, *,
                            old: int = 0, path: str = "/add-checkpoint") -> tuple[int, list[Signature]]:
    """Send the store's latest checkpoint to a tlog-witness; keep and return its verified cosignatures and the
    size it now holds. ``old``: the size this witness last cosigned, if known (a 409 tells it otherwise)."""
    note_text = await store.checkpoint()
    if note_text is None:
        raise LookupError("no checkpoint to submit yet")
    cp, note = parse_signed_checkpoint(note_text)
    bare = Note(note.text, tuple(s for s in note.signatures if s.name != witness.name)).format()
    for _ in range(2):
        proof = await store.consistency_proof(old, cp.size) if 0 < old < cp.size else []
        status, body = await client.send("POST", path, format_add_checkpoint(old, proof, bare).encode(),
                                         content_type="text/plain")
        if status == 409 and body.strip().isdigit():
            old = int(body.strip())
            continue
        if status != 200:
            raise WitnessRejected(status, body.decode(errors="replace"))
        try:
            sigs = parse_signature_lines(body.decode())
            verified = verify_note(Note(note.text, tuple(sigs)), [witness])
        except (NoteError, UnicodeDecodeError) as exc:
            raise WitnessRejected(status, f"unusable cosignature: {exc}") from None
        good = [s for s in sigs if any(v.verifier.key_id == s.key_id for v in verified)]
        await store.add_cosignatures(cp.size, good)
        return cp.size, good
    raise WitnessRejected(409, "the witness's size kept changing")
