"""L402 state, none of it per challenge: the master secret root keys derive from, and revoked tokens.

A token's root key is derived from the master secret and its identifier
(:func:`paywire.l402.macaroons.derive_root_key`), so minting writes nothing and an unpaid challenge costs no row. What is kept:

* the master secret, made once: beside a SQLite file as ``<file>.l402-key`` (mode 0600, never in the database
  file), in table ``l402_master`` on PostgreSQL (replicas on several machines share it);
* ``l402_revoked``: one row per revoked token under ``sha256(identifier)``, until the token's own expiry passes
  (checklist 100: a revoked token stops verifying);
* ``l402_root_keys``: the random root keys of tokens minted before keys were derived. Nothing is added to it any
  more; those tokens verify until they expire, and :meth:`L402Store.prune` deletes their rows after that.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
import secrets
import stat
from pathlib import Path
from typing import Final

from paywire.store.migrations import Repository, register

log = logging.getLogger("paywire.store")

COMPONENT = "l402"
TABLE = "l402_root_keys"  # tokens minted before root keys were derived
REVOKED = "l402_revoked"
MASTER = "l402_master"
KEY_FILE_SUFFIX: Final = ".l402-key"
_HEX_SECRET: Final = re.compile(r"[0-9a-f]{64}")

register(COMPONENT, [
    [
        f"""CREATE TABLE IF NOT EXISTS {TABLE} (
            key_id TEXT PRIMARY KEY,
            root_key {{blob}} NOT NULL,
            payment_hash TEXT NOT NULL,
            token_id TEXT NOT NULL,
            service TEXT NOT NULL,
            created_at {{real}} NOT NULL
        )""",
        f"CREATE INDEX IF NOT EXISTS {TABLE}_hash ON {TABLE} (payment_hash)",
    ],
    [
        f"""CREATE TABLE IF NOT EXISTS {REVOKED} (
            key_id TEXT PRIMARY KEY,
            expires_at {{real}},
            revoked_at {{real}} NOT NULL
        )""",
        f"""CREATE TABLE IF NOT EXISTS {MASTER} (
            id INTEGER PRIMARY KEY,
            secret {{blob}} NOT NULL,
            created_at {{real}} NOT NULL
        )""",
    ],
])


def key_file_secret(path: Path) -> bytes:
    """The 32-byte secret in ``path`` (64 hex characters), created once with mode 0600 if missing.

    Several processes may race to create it: each writes a private temporary file and links it into place; the
    first link wins and everyone reads the winner's secret.
    """
    try:
        return _read_key_file(path)
    except FileNotFoundError:
        pass
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}")
    _write_new(tmp)
    try:
        os.link(tmp, path)
    except FileExistsError:
        pass
    except OSError:  # a filesystem without hard links: create it in place (a racing reader may retry)
        with contextlib.suppress(FileExistsError):
            _write_new(path)
    finally:
        os.unlink(tmp)
    return _read_key_file(path)


def _write_new(path: Path) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.write(fd, secrets.token_hex(32).encode("ascii") + b"\n")
        os.fsync(fd)
    finally:
        os.close(fd)


def _read_key_file(path: Path) -> bytes:
    mode = stat.S_IMODE(os.stat(path).st_mode)
    if mode & 0o077:
        log.warning("paywire: %s is readable by other users (mode %o); whoever reads it can mint L402 tokens: "
                    "chmod 600 it", path, mode)
    text = path.read_text("ascii", errors="replace").strip().lower()
    if _HEX_SECRET.fullmatch(text) is None:
        raise ValueError(f"{path} does not hold an L402 master secret (64 hex characters); delete it to make a "
                         "new one (tokens sold so far stop verifying)")
    return bytes.fromhex(text)


class L402Store(Repository):
    """L402 state over a ``paywire.store.Database``: the master secret, revocations, pre-derivation root keys."""

    component = COMPONENT
    _master: bytes | None = None

    async def master_secret(self) -> bytes:
        """Made on first use, then the same for every process sharing this store."""
        if self._master is None:
            path = getattr(self.db, "path", None)
            if self.db.dialect == "sqlite" and isinstance(path, str):
                self._master = await asyncio.to_thread(key_file_secret, Path(path + KEY_FILE_SUFFIX))
            else:
                await self.db.execute(
                    f"INSERT INTO {MASTER} (id, secret, created_at) VALUES (1, ?, ?) ON CONFLICT (id) DO NOTHING",
                    (secrets.token_bytes(32), self.clock()))
                row = await self.db.fetchone(f"SELECT secret FROM {MASTER} WHERE id = 1")
                assert row is not None
                self._master = bytes(row["secret"])
        return self._master

    async def legacy_root_key(self, key_id: str) -> bytes | None:
        """The stored root key of a token minted before keys were derived."""
        row = await self.db.fetchone(f"SELECT root_key FROM {TABLE} WHERE key_id = ?", (key_id,))
        return bytes(row["root_key"]) if row else None

    async def put_legacy(self, key_id: str, root_key: bytes, *, payment_hash: str, token_id: str,
                         service: str) -> None:
        """What minting used to write (kept for tests of the upgrade path)."""
        await self.db.execute(
            f"INSERT INTO {TABLE} (key_id, root_key, payment_hash, token_id, service, created_at) "
            "VALUES (?, ?, ?, ?, ?, ?)", (key_id, root_key, payment_hash, token_id, service, self.clock()))

    async def is_revoked(self, key_id: str) -> bool:
        return await self.db.fetchone(f"SELECT 1 AS x FROM {REVOKED} WHERE key_id = ?", (key_id,)) is not None

    async def revoke(self, key_id: str, *, expires_at: float | None) -> bool:
        """Mark a token revoked (and drop its stored root key, if it has one); False if it already was."""
        added = await self.db.execute(
            f"INSERT INTO {REVOKED} (key_id, expires_at, revoked_at) VALUES (?, ?, ?) ON CONFLICT (key_id) DO NOTHING",
            (key_id, expires_at, self.clock()))
        await self.db.execute(f"DELETE FROM {TABLE} WHERE key_id = ?", (key_id,))
        return added == 1

    async def prune(self, *, now: float, service: str | None = None, token_ttl: float | None = None) -> int:
        """Delete revocations of tokens expired by ``now`` and, for ``service``, stored root keys older than
        ``token_ttl`` (their tokens have expired). Returns the number of rows deleted."""
        n = await self.db.execute(f"DELETE FROM {REVOKED} WHERE expires_at IS NOT NULL AND expires_at <= ?", (now,))
        if service is not None and token_ttl is not None:
            n += await self.db.execute(f"DELETE FROM {TABLE} WHERE service = ? AND created_at < ?",
                                       (service, now - token_ttl))
        return n
