"""A thin async database layer: SQLite (default) or PostgreSQL, one API, SQL written with ``?`` placeholders.

Constraints that keep money safe (unique claims, compare-and-set transitions) live in the database, so they
hold across threads, processes and machines that share it.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import re
import sqlite3
import threading
from collections.abc import AsyncIterator, Callable, Coroutine, Sequence
from pathlib import Path
from typing import Any, Protocol, TypeVar

Row = dict[str, Any]
T = TypeVar("T")
Params = Sequence[Any]


class Executor(Protocol):
    """Runs statements; a ``Database`` or an open transaction."""

    dialect: str

    async def execute(self, sql: str, params: Params = ()) -> int:
        """Run one statement; returns the affected row count."""
        ...

    async def fetchone(self, sql: str, params: Params = ()) -> Row | None: ...

    async def fetchall(self, sql: str, params: Params = ()) -> list[Row]: ...


class Database(Executor, Protocol):
    url: str

    def transaction(self) -> contextlib.AbstractAsyncContextManager[Executor]:
        """A serializable-enough write transaction (SQLite ``BEGIN IMMEDIATE``; Postgres default + row locks)."""
        ...

    async def aclose(self) -> None: ...


# --------------------------------------------------------------------------------------------- SQLite


class _SqliteTx:
    """An open SQLite transaction: its own connection, driven from its own thread."""

    dialect = "sqlite"

    def __init__(self, conn: sqlite3.Connection, worker: concurrent.futures.ThreadPoolExecutor) -> None:
        self._conn = conn
        self._worker = worker

    async def _run(self, fn: Any, *args: Any) -> Any:
        return await asyncio.wrap_future(self._worker.submit(fn, *args))

    async def execute(self, sql: str, params: Params = ()) -> int:
        return int(await self._run(_sqlite_execute, self._conn, sql, params))

    async def fetchone(self, sql: str, params: Params = ()) -> Row | None:
        rows = await self._run(_sqlite_fetch, self._conn, sql, params)
        return rows[0] if rows else None

    async def fetchall(self, sql: str, params: Params = ()) -> list[Row]:
        return list(await self._run(_sqlite_fetch, self._conn, sql, params))


_PATH_LOCKS: dict[str, threading.Lock] = {}
_PATH_LOCKS_GUARD = threading.Lock()


def _path_lock(path: str) -> threading.Lock:
    key = str(Path(path).resolve())
    with _PATH_LOCKS_GUARD:
        return _PATH_LOCKS.setdefault(key, threading.Lock())


def _begin(conn: sqlite3.Connection, lock: threading.Lock) -> None:
    lock.acquire()
    try:
        conn.execute("BEGIN IMMEDIATE")
    except BaseException:
        lock.release()
        raise


def _end(conn: sqlite3.Connection, lock: threading.Lock, how: str) -> None:
    try:
        conn.execute(how)
    finally:
        lock.release()


def _sqlite_execute(conn: sqlite3.Connection, sql: str, params: Params) -> int:
    return conn.execute(sql, tuple(params)).rowcount


def _sqlite_fetch(conn: sqlite3.Connection, sql: str, params: Params) -> list[Row]:
    return [dict(r) for r in conn.execute(sql, tuple(params)).fetchall()]


class SyncExecutor:
    """An ``Executor`` over one SQLite connection whose coroutines finish without suspending (plain sqlite3 calls,
    in the caller's thread): a transaction body written against the async API runs synchronously (:func:`drive`),
    on the event loop when the write lock is free at once, else in one call on a transaction thread."""

    dialect = "sqlite"

    def __init__(self, conn: sqlite3.Connection) -> None:
        self._conn = conn

    async def execute(self, sql: str, params: Params = ()) -> int:
        return _sqlite_execute(self._conn, sql, params)

    async def fetchone(self, sql: str, params: Params = ()) -> Row | None:
        rows = _sqlite_fetch(self._conn, sql, params)
        return rows[0] if rows else None

    async def fetchall(self, sql: str, params: Params = ()) -> list[Row]:
        return _sqlite_fetch(self._conn, sql, params)


def drive(coro: Coroutine[Any, Any, T]) -> T:
    """Run a coroutine that never suspends (it awaits only a :class:`SyncExecutor`) to its result, without a loop."""
    try:
        coro.send(None)
    except StopIteration as done:
        result: T = done.value
        return result
    coro.close()
    raise RuntimeError("a synchronous SQLite transaction body tried to suspend")


INLINE_MISS: Any = object()
"""``SqliteDatabase.try_inline`` could not run the statement without waiting: run it the usual way."""
INLINE_MAX_PARAM = 64 * 1024  # larger values (recorded response bodies) are written from the worker thread
_SMALL = frozenset({int, float, type(None)})
_SIZED = (str, bytes)  # a tuple: ``str | bytes`` in the isinstance call would build a union object per parameter
INLINE_CHECKPOINT_EVERY = 200  # inline writes between two PASSIVE checkpoints run on the worker thread
_BUSY_CODES = (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED)


def _is_busy(exc: sqlite3.OperationalError) -> bool:
    return (getattr(exc, "sqlite_errorcode", 0) & 0xFF) in _BUSY_CODES


def _passive_checkpoint(conn: sqlite3.Connection) -> None:
    """Copy WAL frames into the database without waiting for anyone (the inline connection never does it)."""
    with contextlib.suppress(sqlite3.Error):
        conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()


class SqliteDatabase:
    """SQLite in WAL mode. Plain statements share one connection on one thread; each transaction gets its
    own connection and ``BEGIN IMMEDIATE``, so SQLite itself serializes writers across threads and processes."""

    dialect = "sqlite"

    def __init__(self, path: str | Path) -> None:
        if str(path) == ":memory:":
            raise ValueError("use a file for the SQLite store: claims must be visible to every connection")
        self.path = str(path)
        self.url = f"sqlite:///{self.path}"
        Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        self._setups: list[Callable[[sqlite3.Connection], None]] = []  # run on each new connection
        self._pool = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="paywire-sqlite")
        self._conn: sqlite3.Connection = self._pool.submit(self._connect).result()
        self._inline_lock = threading.Lock()
        self._inline: sqlite3.Connection | None = None
        self._tx_pool: concurrent.futures.ThreadPoolExecutor | None = None  # run_transaction's thread
        self._tx_conn: sqlite3.Connection | None = None
        self._inline_writes = 0
        try:
            self._inline = self._connect_inline()
        except sqlite3.Error:
            self._inline = None

    def _connect_inline(self) -> sqlite3.Connection | None:
        """The connection for :meth:`try_inline`: never waits for a lock (busy → the caller uses the worker
        thread) and never checkpoints on commit (checkpoints run on the worker thread). WAL databases only:
        there a commit with ``synchronous=NORMAL`` is a write to the WAL file, no fsync."""
        conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False, timeout=0.0)
        try:
            conn.row_factory = sqlite3.Row
            conn.execute("PRAGMA busy_timeout=0")
            mode = conn.execute("PRAGMA journal_mode").fetchone()[0]
            if str(mode).lower() != "wal":
                conn.close()
                return None
            conn.execute("PRAGMA synchronous=NORMAL")
            conn.execute("PRAGMA wal_autocheckpoint=0")
            for setup in self._setups:
                setup(conn)
        except BaseException:
            conn.close()
            raise
        return conn

    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False, timeout=30.0)
        conn.row_factory = sqlite3.Row
        conn.execute("PRAGMA busy_timeout=30000")
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")
        for setup in self._setups:
            setup(conn)
        return conn

    async def add_connection_setup(self, setup: Callable[[sqlite3.Connection], None]) -> None:
        """Run ``setup`` on every connection this database has open and opens from now on (functions and TEMP
        triggers are per connection: the audit log's triggers, see ``paywire.audit.triggers``)."""
        self._setups.append(setup)
        with self._inline_lock:
            if self._inline is not None:
                setup(self._inline)
        await self._run(setup, self._conn)
        if self._tx_pool is not None and self._tx_conn is not None:
            await asyncio.wrap_future(self._tx_pool.submit(setup, self._tx_conn))

    async def _run(self, fn: Any, *args: Any) -> Any:
        return await asyncio.wrap_future(self._pool.submit(fn, *args))

    async def execute(self, sql: str, params: Params = ()) -> int:
        return int(await self._run(_sqlite_execute, self._conn, sql, params))

    async def fetchone(self, sql: str, params: Params = ()) -> Row | None:
        rows = await self._run(_sqlite_fetch, self._conn, sql, params)
        return rows[0] if rows else None

    async def fetchall(self, sql: str, params: Params = ()) -> list[Row]:
        return list(await self._run(_sqlite_fetch, self._conn, sql, params))

    def try_inline(self, sql: str, params: Params = (), *, fetch: bool = False, write: bool = True,
                   rowid: bool = False) -> Any:
        """Run one short autocommit statement right here, in the caller's thread, if that needs no waiting:
        the rows (``fetch``), the inserted row's id (``rowid``: None when it inserted nothing) or the affected
        row count; :data:`INLINE_MISS` when another thread is using the inline connection, another connection or
        process holds the write lock (SQLite says busy at once, and a busy autocommit statement has done nothing,
        so running it again elsewhere is safe), a parameter is large, or the database is not in WAL mode.
        Callers then use :meth:`execute` / :meth:`fetchone`, which wait on the worker thread. Meant for point
        statements (primary or unique key) on an event loop.
        """
        conn = self._inline
        if conn is None:
            return INLINE_MISS
        for p in params:
            if type(p) in _SMALL:  # no length to check (most parameters: numbers, None)
                continue
            if isinstance(p, _SIZED) and len(p) > INLINE_MAX_PARAM:
                return INLINE_MISS
        if not self._inline_lock.acquire(blocking=False):
            return INLINE_MISS
        try:
            if self._inline is not conn:  # closed meanwhile
                return INLINE_MISS
            try:
                cur = conn.execute(sql, tuple(params))
                if fetch:
                    result: Any = [dict(r) for r in cur.fetchall()]
                elif rowid:
                    result = cur.lastrowid if cur.rowcount == 1 else None
                else:
                    result = cur.rowcount
            except sqlite3.OperationalError as exc:
                if _is_busy(exc):
                    return INLINE_MISS
                raise
            if write:
                self._count_inline_write()
            return result
        finally:
            self._inline_lock.release()

    def try_inline_tx(self, step: Callable[[sqlite3.Connection], T]) -> T | Any:
        """Run ``step(conn)`` in one ``BEGIN IMMEDIATE`` … ``COMMIT`` transaction right here, in the caller's
        thread, if that needs no waiting; :data:`INLINE_MISS` (with everything rolled back) when it would have to
        wait, for the same reasons as :meth:`try_inline`. ``step`` must be short and must not block: it runs on
        the caller's event loop. When this returns, the transaction is committed exactly as on any other
        connection (WAL, ``synchronous=NORMAL``: in the WAL file, safe from a crash of this process); the
        connection never checkpoints on commit (that would fsync here), the worker thread does it now and then.
        """
        conn = self._inline
        if conn is None:
            return INLINE_MISS
        if not self._inline_lock.acquire(blocking=False):
            return INLINE_MISS
        try:
            if self._inline is not conn:  # closed meanwhile
                return INLINE_MISS
            try:
                conn.execute("BEGIN IMMEDIATE")
            except sqlite3.OperationalError as exc:
                if _is_busy(exc):
                    return INLINE_MISS
                raise
            try:
                result = step(conn)
                conn.execute("COMMIT")
            except BaseException as exc:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                if isinstance(exc, sqlite3.OperationalError) and _is_busy(exc):
                    return INLINE_MISS
                raise
            self._count_inline_write()
            return result
        finally:
            self._inline_lock.release()

    def _count_inline_write(self) -> None:
        self._inline_writes += 1
        if self._inline_writes >= INLINE_CHECKPOINT_EVERY:
            self._inline_writes = 0
            self._pool.submit(_passive_checkpoint, self._conn)

    async def run_transaction(self, body: Callable[[Executor], Coroutine[Any, Any, T]]) -> T:
        """Run ``body`` — which must not suspend: it awaits only the executor it is given — as one write
        transaction in a single hop to this database's transaction thread and connection, which waits for the
        write lock (the way :func:`in_transaction` takes when :meth:`try_inline_tx` would have to wait)."""
        if self._tx_pool is None:
            self._tx_pool = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="paywire-sqlite-tx1")
        return await asyncio.wrap_future(self._tx_pool.submit(self._run_transaction, body))

    def _run_transaction(self, body: Callable[[Executor], Coroutine[Any, Any, T]]) -> T:
        if self._tx_conn is None:
            self._tx_conn = self._connect()
        conn, lock = self._tx_conn, _path_lock(self.path)
        _begin(conn, lock)
        try:
            result = drive(body(SyncExecutor(conn)))
        except BaseException:
            _end(conn, lock, "ROLLBACK")
            raise
        _end(conn, lock, "COMMIT")
        return result

    @contextlib.asynccontextmanager
    async def transaction(self) -> AsyncIterator[Executor]:
        # A dedicated thread per transaction: writers waiting for the lock never starve the shared pools.
        # Within this process they queue on a lock (fast hand-off); across processes SQLite's busy handler waits.
        worker = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="paywire-sqlite-tx")
        lock = _path_lock(self.path)
        tx: _SqliteTx | None = None
        try:
            conn = await asyncio.wrap_future(worker.submit(self._connect))
            tx = _SqliteTx(conn, worker)
            await tx._run(_begin, conn, lock)
            try:
                yield tx
            except BaseException:
                await tx._run(_end, conn, lock, "ROLLBACK")
                raise
            else:
                await tx._run(_end, conn, lock, "COMMIT")
        finally:
            if tx is not None:
                await tx._run(tx._conn.close)
            worker.shutdown(wait=False)

    async def aclose(self) -> None:
        with self._inline_lock:
            inline, self._inline = self._inline, None
        if inline is not None:
            inline.close()
        await self._run(self._conn.close)
        self._pool.shutdown(wait=False)
        pool, conn = self._tx_pool, self._tx_conn
        self._tx_pool = self._tx_conn = None
        if pool is not None:
            if conn is not None:
                await asyncio.wrap_future(pool.submit(conn.close))
            pool.shutdown(wait=False)


async def execute_point(db: Database, sql: str, params: Params = ()) -> int:
    """``db.execute`` for a short statement by key (claim, compare-and-set): on SQLite right here on the event
    loop when that needs no waiting (:meth:`SqliteDatabase.try_inline`, µs instead of a worker-thread hop),
    else the usual way. The database still decides every claim and compare-and-set; the commit is the same."""
    if isinstance(db, SqliteDatabase):
        n = db.try_inline(sql, params)
        if n is not INLINE_MISS:
            return int(n)
    return await db.execute(sql, params)


async def fetchone_point(db: Database, sql: str, params: Params = ()) -> Row | None:
    """``db.fetchone`` of one row by key, inline on SQLite when that needs no waiting (see :func:`execute_point`)."""
    if isinstance(db, SqliteDatabase):
        rows = db.try_inline(sql, params, fetch=True, write=False)
        if rows is not INLINE_MISS:
            return rows[0] if rows else None
    return await db.fetchone(sql, params)


# --------------------------------------------------------------------------------------------- PostgreSQL

_QMARK = re.compile(r"\?")


def _pg(sql: str) -> str:
    return _QMARK.sub("%s", sql.replace("%", "%%"))


class _PgTx:
    dialect = "postgres"

    def __init__(self, conn: Any) -> None:
        self._conn = conn

    async def execute(self, sql: str, params: Params = ()) -> int:
        cur = await self._conn.execute(_pg(sql), tuple(params))
        return int(cur.rowcount)

    async def fetchone(self, sql: str, params: Params = ()) -> Row | None:
        cur = await self._conn.execute(_pg(sql), tuple(params))
        row = await cur.fetchone()
        return dict(row) if row is not None else None

    async def fetchall(self, sql: str, params: Params = ()) -> list[Row]:
        cur = await self._conn.execute(_pg(sql), tuple(params))
        return [dict(r) for r in await cur.fetchall()]


class PostgresDatabase:
    """A psycopg 3 async pool; many processes and machines share one database."""

    dialect = "postgres"

    def __init__(self, url: str, *, min_size: int = 1, max_size: int = 10) -> None:
        self.url = url
        self._min, self._max = min_size, max_size
        self._pools: dict[asyncio.AbstractEventLoop, Any] = {}

    async def _pool(self) -> Any:
        loop = asyncio.get_running_loop()
        pool = self._pools.get(loop)
        if pool is None:
            from psycopg.rows import dict_row
            from psycopg_pool import AsyncConnectionPool

            pool = AsyncConnectionPool(self.url, min_size=self._min, max_size=self._max, open=False,
                                       kwargs={"row_factory": dict_row, "autocommit": True})
            await pool.open(wait=True, timeout=10)
            self._pools[loop] = pool
        return pool

    async def execute(self, sql: str, params: Params = ()) -> int:
        async with (await self._pool()).connection() as conn:
            return await _PgTx(conn).execute(sql, params)

    async def fetchone(self, sql: str, params: Params = ()) -> Row | None:
        async with (await self._pool()).connection() as conn:
            return await _PgTx(conn).fetchone(sql, params)

    async def fetchall(self, sql: str, params: Params = ()) -> list[Row]:
        async with (await self._pool()).connection() as conn:
            return await _PgTx(conn).fetchall(sql, params)

    @contextlib.asynccontextmanager
    async def transaction(self) -> AsyncIterator[Executor]:
        async with (await self._pool()).connection() as conn, conn.transaction():
            yield _PgTx(conn)

    async def aclose(self) -> None:
        pools, self._pools = self._pools, {}
        loop = asyncio.get_running_loop()
        for owner, pool in pools.items():
            if owner is loop:
                await pool.close()


async def in_transaction(db: Database, body: Callable[[Executor], Coroutine[Any, Any, T]], *,
                         inline: bool = True) -> T:
    """Run ``body`` in one write transaction and return its result: the one way to run a short transaction of
    several statements (a budget reservation, a ledger change and its audit event). On SQLite ``body`` must only
    await the executor it is given: it runs on the caller's thread when the write lock is free at once and
    ``inline`` (:meth:`SqliteDatabase.try_inline_tx`, no thread hop), else in one hop to the database's
    transaction thread, which waits for the lock (:meth:`SqliteDatabase.run_transaction`); elsewhere in
    :meth:`Database.transaction`. Either way it is committed when this returns."""
    if isinstance(db, SqliteDatabase):
        if inline:
            result = db.try_inline_tx(lambda conn: drive(body(SyncExecutor(conn))))
            if result is not INLINE_MISS:
                done: T = result
                return done
        return await db.run_transaction(body)
    async with db.transaction() as tx:
        return await body(tx)


def open_database(url: str) -> Database:
    """``sqlite:///path.db`` (or a bare path), ``sqlite:///:memory:``, or ``postgresql://…``."""
    if url.startswith(("postgresql://", "postgres://")):
        return PostgresDatabase(url)
    if url.startswith("sqlite:///"):
        return SqliteDatabase(url.removeprefix("sqlite:///"))
    if "://" in url:
        raise ValueError(f"unsupported store URL {url!r}: use sqlite:///file.db or postgresql://…")
    return SqliteDatabase(url)
