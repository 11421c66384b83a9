"""The log's HTTP side (Starlette routes under ``/audit``): what witnesses, monitors and payers fetch.

- ``GET /audit/checkpoint``: the latest signed checkpoint with its cosignatures (``text/plain``);
- ``GET /audit/consistency?old=N&new=M``: the consistency proof, one base64 hash per line;
- ``GET /audit/proof/{seq}``: the c2sp.org/tlog-proof of one entry (the entry in its ``extra`` line);
- ``GET /audit/proofs?subject=ID``: JSON ``{"proofs": [...]}``, the tlog-proofs of the checkpointed entries naming
  ``ID`` (a transaction hash, payment or settlement id: the ``subject`` of a receipt's audit reference), at most
  :data:`MAX_PROOFS`; 409 when the entries naming it are not in a checkpoint yet;
- ``GET /audit/tile/<L>/<N>[.p/<W>]`` and ``GET /audit/tile/entries/<N>[.p/<W>]``: the log as C2SP tlog-tiles
  (:mod:`paywire.audit.tiles`; with ``/audit/checkpoint`` the prefix is ``/audit``);
- ``POST /audit/cosignature?size=N``: a witness returns its cosignature lines for the checkpoint of size N;
  kept only if they verify against a configured witness key.
"""

from __future__ import annotations

import base64
from collections.abc import Sequence

from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from paywire.audit import merkle
from paywire.audit.note import (
    COSIGNATURE_V1,
    Note,
    NoteError,
    Verifier,
    parse_note,
    parse_signature_lines,
    verify_note,
)
from paywire.audit.ops import NotYetCheckpointed, prove
from paywire.audit.store import AuditStore
from paywire.audit.tiles import parse_tile_path, read_tile

NOTE_TYPE = "text/plain; charset=utf-8"
MAX_PROOFS = 20
MAX_SUBJECT = 200


def _int(request: Request, name: str) -> int:
    raw = request.query_params.get(name, "")
    if not raw.isdigit():
        raise ValueError(f"query parameter {name} must be a non-negative integer")
    return int(raw)


def audit_routes(store: AuditStore, *, witness_keys: Sequence[Verifier] = (), prefix: str = "/audit") -> list[Route]:
    """The routes; mount them in the seller's or facilitator's app (or serve them alone)."""
    witnesses = [w for w in witness_keys if w.sig_type == COSIGNATURE_V1]

    async def checkpoint(request: Request) -> Response:
        note = await store.checkpoint()
        if note is None:
            return PlainTextResponse("no checkpoint yet\n", status_code=404)
        return Response(note, media_type=NOTE_TYPE, headers={"Cache-Control": "no-store"})

    async def consistency(request: Request) -> Response:
        try:
            old, new = _int(request, "old"), _int(request, "new")
            head = await store.head()
            if new > head.size:
                raise merkle.ProofError(f"the log has {head.size} entries, not {new}")
            proof = await store.consistency_proof(old, new)
        except ValueError as exc:
            return PlainTextResponse(f"{exc}\n", status_code=400)
        except LookupError as exc:  # tree nodes missing from the store
            return PlainTextResponse(f"{exc}\n", status_code=404)
        return Response("".join(base64.b64encode(h).decode() + "\n" for h in proof), media_type=NOTE_TYPE)

    async def proof(request: Request) -> Response:
        raw = request.path_params["seq"]
        if not raw.isdigit():
            return PlainTextResponse("the sequence number must be a non-negative integer\n", status_code=400)
        try:
            p = await prove(store, int(raw))
        except NotYetCheckpointed as exc:
            return PlainTextResponse(f"{exc}\n", status_code=409)
        except LookupError as exc:
            return PlainTextResponse(f"{exc}\n", status_code=404)
        return Response(p.text_with_entry(), media_type=NOTE_TYPE)

    async def proofs(request: Request) -> Response:
        subject = request.query_params.get("subject", "")
        if not subject or len(subject) > MAX_SUBJECT:
            return PlainTextResponse(f"give ?subject= (1 to {MAX_SUBJECT} characters)\n", status_code=400)
        found, texts = await store.find(subject, limit=MAX_PROOFS), []
        for row in found:
            try:
                texts.append((await prove(store, row.seq)).text_with_entry())
            except NotYetCheckpointed:
                continue
        if found and not texts:
            return PlainTextResponse("logged, but not in a checkpoint yet: ask again shortly\n", status_code=409)
        if not found:
            return PlainTextResponse(f"no logged entry names {subject!r} (yet)\n", status_code=404)
        return JSONResponse({"proofs": texts}, headers={"Cache-Control": "no-store"})

    async def tile(request: Request) -> Response:
        try:
            data = await read_tile(store, parse_tile_path(request.path_params["path"]))
        except LookupError as exc:  # TileNotFound, or nodes missing from the store
            return PlainTextResponse(f"{exc}\n", status_code=404)
        return Response(data, media_type="application/octet-stream",
                        headers={"Cache-Control": "public, max-age=31536000, immutable"})

    async def cosignature(request: Request) -> Response:
        try:
            size = _int(request, "size")
            sigs = parse_signature_lines((await request.body()).decode())
        except (ValueError, UnicodeDecodeError) as exc:
            return PlainTextResponse(f"{exc}\n", status_code=400)
        note_text = await store.checkpoint(size)
        if note_text is None:
            return PlainTextResponse(f"no checkpoint of size {size}\n", status_code=404)
        try:
            body = parse_note(note_text).text
            verified = verify_note(Note(body, tuple(sigs)), witnesses)
        except NoteError as exc:
            return PlainTextResponse(f"cosignature refused: {exc}\n", status_code=403)
        good = {(v.verifier.name, v.verifier.key_id) for v in verified}
        added = await store.add_cosignatures(size, [s for s in sigs if (s.name, s.key_id) in good])
        return PlainTextResponse(f"kept {added}\n")

    return [
        Route(f"{prefix}/checkpoint", checkpoint, methods=["GET"]),
        Route(f"{prefix}/consistency", consistency, methods=["GET"]),
        Route(f"{prefix}/proof/{{seq}}", proof, methods=["GET"]),
        Route(f"{prefix}/proofs", proofs, methods=["GET"]),
        Route(f"{prefix}/tile/{{path:path}}", tile, methods=["GET"]),
        Route(f"{prefix}/cosignature", cosignature, methods=["POST"]),
    ]


def audit_app(store: AuditStore, *, witness_keys: Sequence[Verifier] = ()) -> object:
    """A Starlette app serving only the audit routes."""
    from starlette.applications import Starlette

    return Starlette(routes=audit_routes(store, witness_keys=witness_keys))
