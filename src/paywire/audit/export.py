"""Exported logs: JSON Lines a third party verifies with nothing but the public keys.

Line 1 is ``{"type": "header", "origin": …, "size": …, "from": …}``; then one ``{"type": "checkpoint", "note": …}``
per stored checkpoint (with its cosignatures); then ``{"type": "entry", "seq": …, "entry": …}`` in sequence
order. An export can resume from a sequence number (``from``): checkpoints are repeated, entries start there.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from typing import Any, TextIO

from paywire.audit.note import Verifier
from paywire.audit.verifier import LogVerifier, Report


def header_line(origin: str | None, size: int, start: int) -> str:
    return json.dumps({"type": "header", "origin": origin, "size": size, "from": start}) + "\n"


def checkpoint_line(note: str) -> str:
    return json.dumps({"type": "checkpoint", "note": note}, ensure_ascii=False) + "\n"


def entry_line(seq: int, entry: bytes) -> str:
    return json.dumps({"type": "entry", "seq": seq, "entry": entry.decode()}, ensure_ascii=False) + "\n"


def read_export(lines: Iterable[str]) -> Iterator[dict[str, Any]]:
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            item = json.loads(line)
        except ValueError as exc:
            raise ValueError(f"line {n} of the export is not JSON: {exc}") from None
        if not isinstance(item, dict) or item.get("type") not in ("header", "checkpoint", "entry"):
            raise ValueError(f"line {n} of the export is not a header, checkpoint or entry")
        yield item


def verify_export(f: TextIO, log_keys: list[Verifier], *, witness_keys: list[Verifier] | None = None,
                  cosignatures_required: int = 0, origin: str | None = None,
                  extra_checkpoints: Iterable[tuple[str, str]] = ()) -> Report:
    """Verify an export read from ``f`` (checkpoints come before entries in the file)."""
    v = LogVerifier(log_keys, witness_keys=witness_keys or [], cosignatures_required=cosignatures_required,
                    origin=origin)
    for note, source in extra_checkpoints:
        v.add_checkpoint(note, source=source)
    for item in read_export(f):
        if item["type"] == "checkpoint":
            v.add_checkpoint(str(item["note"]), source="exported")
        elif item["type"] == "entry":
            v.add_entry(int(item["seq"]), str(item["entry"]).encode(), None)
        elif int(item.get("from") or 0) != 0:
            raise ValueError("this export starts at a later sequence number: verify needs the whole log")
    return v.finish()
