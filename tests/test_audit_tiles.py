"""C2SP tlog-tiles paths and availability (the tiles' contents are checked by Go's tlog in
tests/test_audit_go_interop.py)."""

from __future__ import annotations

import asyncio

import pytest
from audit_support import event

from paywire.audit import merkle
from paywire.audit.note import Signer
from paywire.audit.sequencer import Sequencer
from paywire.audit.store import AuditStore
from paywire.audit.tiles import TileNotFound, TilePath, parse_tile_path, read_tile, tile_path


def test_tile_paths_follow_the_spec() -> None:
    assert parse_tile_path("0/x001/x234/067") == TilePath(0, 1234067, 256), "the spec's example index"
    assert parse_tile_path("entries/000.p/7") == TilePath(-1, 0, 7), "a partial entry bundle"
    assert tile_path(TilePath(2, 1234067, 17)) == "2/x001/x234/067.p/17"
    for bad in ("00/000", "64/000", "0/1", "0/x01/000", "0/000.p/0", "0/000.p/256", "0/000.p/07", "data/000",
                "0/0000"):
        with pytest.raises(TileNotFound):
            parse_tile_path(bad)


def test_tiles_hold_the_trees_hashes_and_only_what_it_holds(sqlite_url: str) -> None:
    async def run() -> None:
        store = await AuditStore.open(sqlite_url)
        try:
            for i in range(300):
                await store.enqueue(event(i))
            await Sequencer(store, Signer.generate("paywire.example/tiles")).drain()
            leaves = [merkle.leaf_hash(row.entry) async for row in store.entries()]
            full = await read_tile(store, parse_tile_path("0/000"))
            assert full == b"".join(leaves[:256]), "level 0: the leaf hashes"
            assert await read_tile(store, parse_tile_path("0/001.p/44")) == b"".join(leaves[256:300])
            assert await read_tile(store, parse_tile_path("1/000.p/1")) == merkle.root_of(leaves[:256]), \
                "level 1: the hash of each full level-0 tile"
            bundle = await read_tile(store, parse_tile_path("entries/001.p/2"))
            first = (await store.entry(256)).entry  # type: ignore[union-attr]
            assert bundle.startswith(len(first).to_bytes(2, "big") + first), "entries, uint16-length prefixed"
            for missing in ("0/001", "0/001.p/45", "1/000.p/2", "entries/001"):
                with pytest.raises(TileNotFound):
                    await read_tile(store, parse_tile_path(missing))
        finally:
            await store.aclose()

    asyncio.run(run())
