"""The audit log's tables (component ``audit``) and the reads behind proofs, checkpoints and exports.

- ``audit_queue``: events not yet in the log. The paid path pays one INSERT here, inside its own transaction
  (:func:`enqueue`), so an event exists exactly when the change it records does. A row holds the event's canonical
  JSON (``entry``), or, for a seller ledger change queued by SQLite's trigger, the row's columns as the change left
  them (:data:`ROW_COLUMNS`), from which the sequencer writes the event (:mod:`paywire.audit.queue`).
- ``audit_log``: the sequenced log: ``seq`` (0, 1, 2, … without gaps), the entry and its leaf hash.
- ``audit_nodes``: every complete subtree hash above the leaves, keyed ``index << 6 | level``: a proof is one
  lookup of O(log n) keys.
- ``audit_head``: one row, the tree the sequencer last wrote (size, root) and its checkpoint schedule.
- ``audit_checkpoints`` (signed checkpoints by size) and ``audit_cosignatures`` (witness signature lines).
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import AsyncIterator, Iterable, Sequence
from dataclasses import dataclass

from paywire.audit import merkle
from paywire.audit.note import Signature, parse_note
from paywire.store.db import Executor, Row
from paywire.store.migrations import Repository, register

COMPONENT = "audit"
QUEUE, LOG, NODES, HEAD, CHECKPOINTS, COSIGNATURES = ("audit_queue", "audit_log", "audit_nodes", "audit_head",
                                                      "audit_checkpoints", "audit_cosignatures")

ROW_COLUMNS = ("instance", "record", "state", "previous", "error", "payment_id", "auth_key", "protocol", "scheme",
               "network", "asset", "pay_to", "amount", "payer", "route", "tx", "identity")
"""A queued seller event's columns (``audit_queue``, ``entry`` NULL): the instance, the ledger row's id and columns
as the change left them, the state it left and the error it set (NULL: none set); ``created_at`` is its time."""

register(COMPONENT, [[
    f"""CREATE TABLE IF NOT EXISTS {QUEUE} (
        id {{autoinc}},
        entry TEXT NOT NULL,
        created_at {{real}} NOT NULL
    )""",
    f"""CREATE TABLE IF NOT EXISTS {LOG} (
        seq {{autoinc}},
        leaf_hash {{blob}} NOT NULL,
        entry TEXT NOT NULL,
        created_at {{real}} NOT NULL
    )""",
    f"""CREATE TABLE IF NOT EXISTS {NODES} (
        node {{autoinc}},
        hash {{blob}} NOT NULL
    )""",
    f"""CREATE TABLE IF NOT EXISTS {HEAD} (
        id INTEGER PRIMARY KEY,
        size BIGINT NOT NULL,
        root {{blob}} NOT NULL,
        checkpoint_size BIGINT NOT NULL,
        checkpoint_at {{real}} NOT NULL
    )""",
    f"""CREATE TABLE IF NOT EXISTS {CHECKPOINTS} (
        size BIGINT PRIMARY KEY,
        root {{blob}} NOT NULL,
        note TEXT NOT NULL,
        created_at {{real}} NOT NULL
    )""",
    f"""CREATE TABLE IF NOT EXISTS {COSIGNATURES} (
        size BIGINT NOT NULL,
        witness TEXT NOT NULL,
        key_id TEXT NOT NULL,
        line TEXT NOT NULL,
        created_at {{real}} NOT NULL,
        PRIMARY KEY (size, witness, key_id)
    )""",
], [
    # SQLite: the queue without AUTOINCREMENT (no sqlite_sequence write per event on the paid path; a queue id only
    # orders rows until the sequencer takes them, so reusing one after the queue emptied is harmless)
    {"sqlite": f"CREATE TABLE {QUEUE}_new (id INTEGER PRIMARY KEY, entry TEXT NOT NULL, created_at REAL NOT NULL)",
     "postgres": "SELECT 1"},
    {"sqlite": f"INSERT INTO {QUEUE}_new (id, entry, created_at) SELECT id, entry, created_at FROM {QUEUE}",
     "postgres": "SELECT 1"},
    {"sqlite": f"DROP TABLE {QUEUE}", "postgres": "SELECT 1"},
    {"sqlite": f"ALTER TABLE {QUEUE}_new RENAME TO {QUEUE}", "postgres": "SELECT 1"},
], [
    # a seller ledger change's event as the row's columns (``entry`` NULL), copied by the SQLite trigger in the
    # change's statement; the sequencer writes the canonical JSON when it integrates (paywire.audit.queue)
    {"sqlite": f"CREATE TABLE {QUEUE}_new (id INTEGER PRIMARY KEY, entry TEXT, created_at REAL NOT NULL, "
               + ", ".join(f"{c} {'INTEGER' if c == 'record' else 'TEXT'}" for c in ROW_COLUMNS) + ")",
     "postgres": f"ALTER TABLE {QUEUE} ALTER COLUMN entry DROP NOT NULL"},
    {"sqlite": f"INSERT INTO {QUEUE}_new (id, entry, created_at) SELECT id, entry, created_at FROM {QUEUE}",
     "postgres": f"ALTER TABLE {QUEUE} "
                 + ", ".join(f"ADD COLUMN {c} {'BIGINT' if c == 'record' else 'TEXT'}" for c in ROW_COLUMNS)},
    {"sqlite": f"DROP TABLE {QUEUE}", "postgres": "SELECT 1"},
    {"sqlite": f"ALTER TABLE {QUEUE}_new RENAME TO {QUEUE}", "postgres": "SELECT 1"},
]])


def node_key(level: int, index: int) -> int:
    return index << 6 | level


async def enqueue(tx: Executor, event: bytes, *, now: float | None = None) -> None:
    """Queue one event on the caller's open transaction (or a ``Database``, autocommit): it is logged if and
    only if that transaction commits. One INSERT; ``event`` comes from :func:`paywire.audit.make_event`."""
    await tx.execute(f"INSERT INTO {QUEUE} (entry, created_at) VALUES (?, ?)",
                     (event.decode(), time.time() if now is None else now))


def _chunks(items: Sequence[tuple[object, ...]], per_row: int, limit: int = 900) -> Iterable[
        Sequence[tuple[object, ...]]]:
    step = max(1, limit // per_row)
    for i in range(0, len(items), step):
        yield items[i:i + step]


async def insert_rows(tx: Executor, table: str, columns: Sequence[str], rows: Sequence[tuple[object, ...]]) -> None:
    """Multi-row INSERTs (a few statements per batch instead of one per row)."""
    cols = ", ".join(columns)
    one = "(" + ", ".join("?" * len(columns)) + ")"
    for chunk in _chunks(rows, len(columns)):
        params = [v for row in chunk for v in row]
        await tx.execute(f"INSERT INTO {table} ({cols}) VALUES " + ", ".join([one] * len(chunk)), params)


async def fetch_nodes(ex: Executor, ids: Iterable[merkle.NodeId], *, entry: int | None = None
                      ) -> dict[merkle.NodeId, bytes]:
    """Stored hashes of nodes ``(level, index)`` in one query (level 0 from the log's leaf hashes). With
    ``entry``, that log row's entry comes back too, under the key ``(-1, entry)``."""
    wanted = set(ids)
    leaves = sorted({i for lvl, i in wanted if lvl == 0} | ({entry} if entry is not None else set()))
    inner = sorted(node_key(lvl, i) for lvl, i in wanted if lvl > 0)
    parts, params = [], []
    if leaves:
        parts.append(f"SELECT seq AS k, leaf_hash AS h, entry AS e FROM {LOG} WHERE seq IN "
                     f"({', '.join('?' * len(leaves))})")
        params += leaves
    if inner:
        parts.append(f"SELECT node AS k, hash AS h, NULL AS e FROM {NODES} WHERE node IN "
                     f"({', '.join('?' * len(inner))})")
        params += inner
    out: dict[merkle.NodeId, bytes] = {}
    if parts:
        for r in await ex.fetchall(" UNION ALL ".join(parts), params):
            k = int(r["k"])
            if r["e"] is not None:
                out[(0, k)] = bytes(r["h"])
                if k == entry:
                    e = r["e"]
                    out[(-1, k)] = e.encode() if isinstance(e, str) else bytes(e)
            else:
                out[(k & 63, k >> 6)] = bytes(r["h"])
    missing = wanted - out.keys()
    if missing:
        raise LookupError(f"the audit store lacks tree nodes {sorted(missing)[:4]}")
    return out


@dataclass(frozen=True, slots=True)
class Head:
    size: int
    root: bytes
    checkpoint_size: int
    checkpoint_at: float


@dataclass(frozen=True, slots=True)
class LogRow:
    seq: int
    leaf_hash: bytes
    entry: bytes


class AuditStore(Repository):
    """Reads and writes the audit tables over a ``paywire.store.Database``."""

    component = COMPONENT

    async def enqueue(self, event: bytes, tx: Executor | None = None) -> None:
        """Queue ``event`` on ``tx`` (the caller's transaction) or on its own."""
        await enqueue(tx if tx is not None else self.db, event, now=self.clock())

    async def head(self, ex: Executor | None = None) -> Head:
        row = await (ex or self.db).fetchone(
            f"SELECT size, root, checkpoint_size, checkpoint_at FROM {HEAD} WHERE id = 1")
        if row is None:
            return Head(0, merkle.EMPTY_ROOT, 0, 0.0)
        return Head(int(row["size"]), bytes(row["root"]), int(row["checkpoint_size"]), float(row["checkpoint_at"]))

    async def queued(self) -> int:
        row = await self.db.fetchone(f"SELECT COUNT(*) AS n FROM {QUEUE}")
        return int(row["n"]) if row else 0

    async def size(self) -> int:
        return (await self.head()).size

    async def entry(self, seq: int) -> LogRow | None:
        row = await self.db.fetchone(f"SELECT seq, leaf_hash, entry FROM {LOG} WHERE seq = ?", (seq,))
        return _log_row(row) if row else None

    async def entries(self, start: int = 0, *, page: int = 2000) -> AsyncIterator[LogRow]:
        """Log rows in sequence order from ``start``, read in pages (streaming)."""
        after = start - 1
        while True:
            rows = await self.db.fetchall(
                f"SELECT seq, leaf_hash, entry FROM {LOG} WHERE seq > ? ORDER BY seq LIMIT ?", (after, page))
            for row in rows:
                yield _log_row(row)
            if len(rows) < page:
                return
            after = int(rows[-1]["seq"])

    async def find(self, text: str, *, limit: int = 50) -> list[LogRow]:
        """Entries whose JSON contains ``"text"`` as a whole string value (a payment, settlement or tx id)."""
        quoted = json_string(text).replace("!", "!!").replace("%", "!%").replace("_", "!_")
        rows = await self.db.fetchall(
            f"SELECT seq, leaf_hash, entry FROM {LOG} WHERE entry LIKE ? ESCAPE '!' ORDER BY seq LIMIT ?",
            ("%" + quoted + "%", limit))
        return [_log_row(r) for r in rows]

    # ------------------------------------------------------------------ checkpoints

    async def checkpoint(self, size: int | None = None) -> str | None:
        """The signed checkpoint of ``size`` (default: the latest) with every stored cosignature (one query)."""
        pick = (f"SELECT size, note FROM {CHECKPOINTS} ORDER BY size DESC LIMIT 1" if size is None
                else f"SELECT size, note FROM {CHECKPOINTS} WHERE size = ?")
        rows = await self.db.fetchall(
            f"SELECT c.note AS note, s.line AS line FROM ({pick}) c LEFT JOIN {COSIGNATURES} s ON s.size = c.size "
            "ORDER BY s.witness, s.key_id", () if size is None else (size,))
        if not rows:
            return None
        return str(rows[0]["note"]) + "".join(str(r["line"]) for r in rows if r["line"] is not None)

    async def checkpoints(self) -> list[str]:
        """Every stored checkpoint (with its cosignatures), smallest first."""
        rows = await self.db.fetchall(f"SELECT size, note FROM {CHECKPOINTS} ORDER BY size")
        cosigs: dict[int, list[str]] = {}
        for r in await self.db.fetchall(f"SELECT size, line FROM {COSIGNATURES} ORDER BY size, witness, key_id"):
            cosigs.setdefault(int(r["size"]), []).append(str(r["line"]))
        return [str(r["note"]) + "".join(cosigs.get(int(r["size"]), [])) for r in rows]

    async def add_cosignatures(self, size: int, signatures: Sequence[Signature]) -> int:
        """Keep witness signature lines for the checkpoint of ``size`` (the caller verified them)."""
        added = 0
        for sig in signatures:
            added += await self.db.execute(
                f"INSERT INTO {COSIGNATURES} (size, witness, key_id, line, created_at) VALUES (?, ?, ?, ?, ?) "
                "ON CONFLICT DO NOTHING", (size, sig.name, sig.key_id.hex(), sig.line, self.clock()))
        return added

    # ------------------------------------------------------------------ proofs

    async def node_hashes(self, keys: Sequence[int]) -> dict[int, bytes]:
        """Stored interior nodes by key (``node_key(level, index)``), read in chunks."""
        out: dict[int, bytes] = {}
        for i in range(0, len(keys), 900):
            part = keys[i:i + 900]
            rows = await self.db.fetchall(
                f"SELECT node, hash FROM {NODES} WHERE node IN ({', '.join('?' * len(part))})", part)
            out.update({int(r["node"]): bytes(r["hash"]) for r in rows})
        return out

    async def stored_nodes(self, ids: Iterable[merkle.NodeId]) -> dict[merkle.NodeId, bytes]:
        """The stored hashes of ``ids`` that exist (missing ones are left out)."""
        wanted = list(ids)
        try:
            return await fetch_nodes(self.db, wanted)
        except LookupError:
            out: dict[merkle.NodeId, bytes] = {}
            for i in wanted:
                with contextlib.suppress(LookupError):
                    out.update(await fetch_nodes(self.db, [i]))
            return out

    async def inclusion_proof(self, index: int, size: int) -> list[bytes]:
        return (await self.entry_and_proof(index, size))[1]

    async def entry_and_proof(self, index: int, size: int) -> tuple[bytes, list[bytes]]:
        """Entry ``index`` and its inclusion proof in the tree of ``size``, in one query."""
        ranges = merkle.inclusion_ranges(index, size)
        nodes = await fetch_nodes(self.db, merkle.nodes_for(ranges), entry=index)
        if (-1, index) not in nodes:
            raise LookupError(f"no audit entry {index}")
        return nodes[(-1, index)], [merkle.range_hash(lo, hi, nodes) for lo, hi in ranges]

    async def consistency_proof(self, old: int, new: int) -> list[bytes]:
        ranges = merkle.consistency_ranges(old, new)
        nodes = await fetch_nodes(self.db, merkle.nodes_for(ranges))
        return [merkle.range_hash(lo, hi, nodes) for lo, hi in ranges]

    async def root_at(self, size: int) -> bytes:
        """The root hash of the tree's first ``size`` leaves, from stored nodes."""
        if size == 0:
            return merkle.EMPTY_ROOT
        return merkle.range_hash(0, size, await fetch_nodes(self.db, merkle.range_nodes(0, size)))


def _log_row(row: Row) -> LogRow:
    entry = row["entry"]
    return LogRow(int(row["seq"]), bytes(row["leaf_hash"]),
                  entry.encode() if isinstance(entry, str) else bytes(entry))


def json_string(text: str) -> str:
    import json

    return json.dumps(text, ensure_ascii=False)


def signed_checkpoint_size(note_text: str) -> int:
    """The size line of a signed checkpoint (no verification)."""
    return int(parse_note(note_text).text.split("\n")[1])
