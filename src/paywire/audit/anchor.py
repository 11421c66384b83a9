"""On-chain anchors of checkpoints: every K checkpoints, a transaction whose calldata carries the log's origin,
the checkpoint's size and its root hash, sent by the anchoring key to itself (no contract needed). Once mined,
the anchor is a timestamped public commitment nobody holding the log key can take back: a history rewritten
later disagrees with it. :func:`check_anchors` reads each recorded anchor's transaction back from the chain and
compares it with the stored checkpoint of that size (``paywire audit verify --anchor-rpc URL``).

Calldata: ``b"paywire-audit-anchor/v1\\n" ‖ origin ‖ b"\\n" ‖ size (8 bytes, big-endian) ‖ root (32 bytes)``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from paywire.audit.checkpoint import parse_signed_checkpoint
from paywire.audit.store import CHECKPOINTS, AuditStore
from paywire.store.migrations import register

MAGIC = b"paywire-audit-anchor/v1\n"
ANCHORS = "audit_anchors"

register("audit_anchor", [[
    f"""CREATE TABLE IF NOT EXISTS {ANCHORS} (
        size BIGINT PRIMARY KEY,
        network TEXT NOT NULL,
        tx_hash TEXT NOT NULL,
        block_number BIGINT NOT NULL,
        created_at {{real}} NOT NULL
    )""",
]])


def anchor_data(origin: str, size: int, root: bytes) -> bytes:
    """The calldata of the anchor of a checkpoint."""
    if len(root) != 32:
        raise ValueError("a root hash is 32 bytes")
    return MAGIC + origin.encode() + b"\n" + size.to_bytes(8, "big") + root


def parse_anchor_data(data: bytes) -> tuple[str, int, bytes]:
    """(origin, size, root) of anchor calldata; ``ValueError`` if it is not one."""
    if not data.startswith(MAGIC) or len(data) < len(MAGIC) + 1 + 40:
        raise ValueError("not a paywire audit anchor")
    origin, size, root = data[len(MAGIC):-41], data[-40:-32], data[-32:]
    if data[-41:-40] != b"\n":
        raise ValueError("not a paywire audit anchor")
    return origin.decode(), int.from_bytes(size, "big"), root


@dataclass(frozen=True, slots=True)
class Anchor:
    size: int
    network: str
    tx_hash: str
    block_number: int


class Anchorer:
    """Anchors ``store``'s checkpoints with ``sender`` (a ``paywire.chain.tx.TxSender``) on ``network``: the
    latest checkpoint once ``every`` checkpoints were signed since the last anchor (and the first one)."""

    def __init__(self, store: AuditStore, sender: Any, network: str, *, every: int = 10) -> None:
        self.store, self.sender, self.network, self.every = store, sender, network, max(1, every)

    async def anchors(self) -> list[Anchor]:
        await _migrate(self.store)
        rows = await self.store.db.fetchall(f"SELECT size, network, tx_hash, block_number FROM {ANCHORS} "
                                            "ORDER BY size")
        return [Anchor(int(r["size"]), str(r["network"]), str(r["tx_hash"]), int(r["block_number"])) for r in rows]

    async def anchor_if_due(self, *, force: bool = False) -> Anchor | None:
        """Send (and wait for) the anchor of the latest checkpoint if one is due; the anchor, or None."""
        done = await self.anchors()
        last = done[-1].size if done else 0
        row = await self.store.db.fetchone(f"SELECT COUNT(*) AS n, MAX(size) AS top FROM {CHECKPOINTS} "
                                           "WHERE size > ?", (last,))
        if row is None or not row["n"] or (not force and done and int(row["n"]) < self.every):
            return None
        note = await self.store.checkpoint(int(row["top"]))
        assert note is not None
        cp, _ = parse_signed_checkpoint(note)
        receipt = await self.sender.send_and_wait(self.sender.address, anchor_data(cp.origin, cp.size, cp.root))
        if receipt.status != 1:
            raise RuntimeError(f"the anchor transaction {receipt.transaction_hash} reverted")
        anchor = Anchor(cp.size, self.network, receipt.transaction_hash, receipt.block_number)
        await self.store.db.execute(f"INSERT INTO {ANCHORS} (size, network, tx_hash, block_number, created_at) "
                                    "VALUES (?, ?, ?, ?, ?)", (anchor.size, anchor.network, anchor.tx_hash,
                                                               anchor.block_number, time.time()))
        return anchor


async def _migrate(store: AuditStore) -> None:
    from paywire.store.migrations import migrate

    await migrate(store.db, ["audit_anchor"])


async def check_anchors(store: AuditStore, chain: Any, *, network: str | None = None) -> tuple[int, list[str]]:
    """Read every recorded anchor back from ``chain``: the number checked and what disagrees (a transaction that
    is missing, not mined, not from an anchor, or whose origin, size or root differ from the stored checkpoint
    of that size — a log rewritten after it was anchored)."""
    await _migrate(store)
    problems: list[str] = []
    rows = await store.db.fetchall(f"SELECT size, network, tx_hash FROM {ANCHORS} ORDER BY size")
    checked = 0
    for r in rows:
        if network is not None and r["network"] != network:
            continue
        checked += 1
        size, tx_hash = int(r["size"]), str(r["tx_hash"])
        tx = await chain.request("eth_getTransactionByHash", [tx_hash])
        receipt = await chain.get_transaction_receipt(tx_hash)
        if not tx or receipt is None or receipt.status != 1:
            problems.append(f"anchor of size {size}: transaction {tx_hash} is not mined on {r['network']}")
            continue
        raw = tx.get("input") or tx.get("data") or "0x"
        try:
            origin, at, root = parse_anchor_data(bytes.fromhex(str(raw).removeprefix("0x")))
        except ValueError as exc:
            problems.append(f"anchor of size {size}: transaction {tx_hash}: {exc}")
            continue
        note = await store.checkpoint(size)
        if note is None:
            problems.append(f"anchor of size {size}: the store has no checkpoint of that size (deleted?)")
            continue
        cp, _ = parse_signed_checkpoint(note)
        if (origin, at, root) != (cp.origin, cp.size, cp.root):
            problems.append(f"anchor of size {size}: the chain says root {root.hex()[:16]}… of {origin!r} at "
                            f"size {at}, the stored checkpoint root {cp.root.hex()[:16]}…: the log was rewritten "
                            f"after it was anchored (transaction {tx_hash})")
    return checked, problems
