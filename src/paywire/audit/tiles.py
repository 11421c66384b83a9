"""C2SP tlog-tiles: the log as static resources (``<prefix>/tile/<L>/<N>[.p/<W>]`` and
``<prefix>/tile/entries/<N>[.p/<W>]``), read from the store's leaf hashes and stored subtree nodes.

A tile at level ``L``, index ``N`` holds the hashes of the complete subtrees of height ``8L`` numbered
``N*256 … N*256+W-1``: the log's leaf hashes at level 0, stored nodes above. An entry bundle holds the entries of
level-0 tile ``N``, each prefixed by its length as a big-endian uint16. A tile is served only once the tree holds
all of it, so a served tile never changes.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from paywire.audit.store import LOG, AuditStore, fetch_nodes

WIDTH = 256
HEIGHT = 8
_PART = re.compile(r"^(?:x\d{3}/)*\d{3}$")


class TileNotFound(LookupError):
    """A malformed tile path, or a tile the tree does not (yet) hold."""


@dataclass(frozen=True, slots=True)
class TilePath:
    level: int  # -1: an entry bundle
    index: int
    width: int  # 256 for a full tile

    @property
    def full(self) -> bool:
        return self.width == WIDTH


def parse_tile_path(path: str) -> TilePath:
    """``"1/x001/234.p/7"`` → level 1, index 1234, width 7; ``"entries/000"`` → an entry bundle."""
    head, _, rest = path.partition("/")
    if head == "entries":
        level = -1
    elif head.isdigit() and (head == "0" or not head.startswith("0")) and int(head) <= 63:
        level = int(head)
    else:
        raise TileNotFound(f"not a tile level: {head!r}")
    width = WIDTH
    if ".p/" in rest:
        rest, _, w = rest.partition(".p/")
        if not w.isdigit() or w.startswith("0") or not 1 <= int(w) <= 255:
            raise TileNotFound(f"not a partial tile width: {w!r}")
        width = int(w)
    if not _PART.match(rest):
        raise TileNotFound(f"not a tile index: {rest!r}")
    return TilePath(level, int(rest.replace("x", "").replace("/", "")), width)


def tile_path(tile: TilePath) -> str:
    """The path of a tile (inverse of :func:`parse_tile_path`)."""
    digits = f"{tile.index:03d}"
    digits = "0" * (-len(digits) % 3) + digits
    parts = [digits[i:i + 3] for i in range(0, len(digits), 3)]
    n = "/".join([*("x" + p for p in parts[:-1]), parts[-1]])
    head = "entries" if tile.level < 0 else str(tile.level)
    return f"{head}/{n}" + ("" if tile.full else f".p/{tile.width}")


def _check_available(tile: TilePath, size: int) -> None:
    level = max(tile.level, 0)
    span = WIDTH ** level  # entries under one hash of the tile
    if (tile.index * WIDTH + tile.width) * span > size:
        raise TileNotFound(f"the log ({size} entries) does not hold tile {tile_path(tile)} yet")


async def read_tile(store: AuditStore, tile: TilePath) -> bytes:
    """The tile's bytes (concatenated hashes) or the entry bundle."""
    head = await store.head()
    _check_available(tile, head.size)
    first = tile.index * WIDTH
    if tile.level < 0:
        rows = await store.db.fetchall(f"SELECT seq, entry FROM {LOG} WHERE seq >= ? AND seq < ? ORDER BY seq",
                                       (first, first + tile.width))
        if len(rows) != tile.width:
            raise TileNotFound(f"the store lacks entries of bundle {tile_path(tile)}")
        out = bytearray()
        for r in rows:
            e = r["entry"]
            raw = e.encode() if isinstance(e, str) else bytes(e)
            if len(raw) > 0xFFFF:
                raise TileNotFound(f"entry {r['seq']} is longer than an entry bundle can hold")
            out += len(raw).to_bytes(2, "big") + raw
        return bytes(out)
    ids = [(tile.level * HEIGHT, first + i) for i in range(tile.width)]
    nodes = await fetch_nodes(store.db, ids)
    return b"".join(nodes[i] for i in ids)
