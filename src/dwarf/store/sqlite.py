"""The SQLite store: the embedded default, one database file (or an in-memory database in tests).

All work on a database goes through one connection owned by one dedicated thread, so the event loop never
blocks on SQLite and statements never race. Write transactions start with ``BEGIN IMMEDIATE`` so that a
second process on the same file waits on the busy timeout instead of failing half-way through; the
database runs in WAL mode, where readers in other processes are never blocked by the writer.
"""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from dwarf.errors import BadRequestError
from dwarf.store.base import (
    AbstractTxContext,
    Row,
    Store,
    Tx,
    load_queries,
    migration_scripts,
    split_statements,
)

__all__ = ["SQLiteStore", "parse_sqlite_dsn"]

# julianday('now') has millisecond resolution; converting keeps every time in epoch seconds like PostgreSQL.
_NOW = "((julianday('now') - 2440587.5) * 86400.0)"
_BUSY_TIMEOUT_MS = 30_000
_SYNCHRONOUS_MODES = {"off", "normal", "full", "extra"}


def parse_sqlite_dsn(dsn: str) -> tuple[str, dict[str, str]]:
    """Split ``sqlite:///path?opt=v`` (or ``sqlite://:memory:``) into a path and options."""
    parts = urlsplit(dsn)
    if parts.scheme not in {"sqlite", "sqlite3"}:
        raise BadRequestError(f"not an SQLite DSN: scheme {parts.scheme!r}")
    path = unquote(parts.netloc + parts.path)
    if path.startswith("/") and parts.netloc == "":
        # sqlite:///relative.db -> "/relative.db"; sqlite:////abs.db -> "//abs.db"
        path = path[1:]
    if not path:
        raise BadRequestError("SQLite DSN has no file path")
    options = {key: values[-1] for key, values in parse_qs(parts.query).items()}
    return path, options


def _dict_row(cursor: sqlite3.Cursor, row: tuple[Any, ...]) -> Row:
    return {column[0]: value for column, value in zip(cursor.description, row, strict=True)}


class SQLiteStore(Store):
    """One SQLite database driven by a single worker thread."""

    dialect = "sqlite"

    def __init__(self, path: str, shard: int = 1, *, synchronous: str = "normal") -> None:
        if synchronous.lower() not in _SYNCHRONOUS_MODES:
            raise BadRequestError(f"unknown SQLite synchronous mode {synchronous!r}")
        self.path = path
        self.shard = shard
        self._synchronous = synchronous.lower()
        self._queries = load_queries("sqlite", _NOW)
        self._executor: ThreadPoolExecutor | None = None
        self._conn: sqlite3.Connection | None = None
        # One transaction at a time: statements of two transactions must never interleave on the one
        # connection. The lock is created lazily so a store can be built outside a running loop.
        self._lock: asyncio.Lock | None = None
        self._thread_ident = 0

    @property
    def description(self) -> str:
        return f"sqlite:{self.path}"

    async def open(self) -> None:
        if self._executor is not None:
            return
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"dwarf-sqlite-{self.shard}")
        self._lock = asyncio.Lock()
        await self._call(self._connect_and_migrate)

    async def close(self) -> None:
        executor, self._executor = self._executor, None
        if executor is None:
            return
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(executor, self._disconnect)
        executor.shutdown(wait=True)

    def transaction(self, *, write: bool = True) -> AbstractTxContext:
        return _SQLiteTxContext(self, write)

    async def read(self, query: str, **params: Any) -> list[Row]:
        return await self._single(query, params, write=False)

    async def write(self, query: str, **params: Any) -> list[Row]:
        return await self._single(query, params, write=True)

    async def _single(self, query: str, params: dict[str, Any], *, write: bool) -> list[Row]:
        # A one-statement transaction makes a single trip to the store's thread instead of three.
        lock = self._lock
        if lock is None:
            raise RuntimeError("SQLite store is not open")
        async with lock:
            rows: list[Row] = await asyncio.shield(self._call(self._run_alone, query, params, write))
            return rows

    async def _call(self, fn: Any, *args: Any) -> Any:
        if self._executor is None:
            raise RuntimeError("SQLite store is not open")
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, fn, *args)

    # --- everything below runs on the store's thread ---

    def _connect_and_migrate(self) -> None:
        self._thread_ident = threading.get_ident()
        conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        conn.row_factory = _dict_row
        conn.execute(f"PRAGMA busy_timeout = {_BUSY_TIMEOUT_MS}")
        if self.path != ":memory:":
            conn.execute("PRAGMA journal_mode = WAL")
        conn.execute(f"PRAGMA synchronous = {self._synchronous}")
        conn.execute("PRAGMA foreign_keys = OFF")
        # LIKE must be case-sensitive as on PostgreSQL: list's search is a literal substring match.
        conn.execute("PRAGMA case_sensitive_like = ON")
        self._conn = conn
        self._migrate(conn)

    def _migrate(self, conn: sqlite3.Connection) -> None:
        # BEGIN IMMEDIATE takes the database's write lock, so two processes migrating the same file at once
        # run one after the other and the second sees the first one's rows in dwarf_migrations.
        conn.execute("BEGIN IMMEDIATE")
        try:
            conn.execute(
                "CREATE TABLE IF NOT EXISTS dwarf_migrations ("
                " version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at REAL NOT NULL)"
            )
            done = {row["version"] for row in conn.execute("SELECT version FROM dwarf_migrations")}
            for version, name, script in migration_scripts("sqlite"):
                if version in done:
                    continue
                for statement in split_statements(script):
                    conn.execute(statement)
                conn.execute(
                    f"INSERT INTO dwarf_migrations (version, name, applied_at) VALUES (?, ?, {_NOW})",
                    (version, name),
                )
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise

    def _disconnect(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def _run(self, query: str, params: dict[str, Any]) -> tuple[list[Row], int]:
        assert self._conn is not None
        cursor = self._conn.execute(self._queries[query], params)
        rows = cursor.fetchall()
        return rows, cursor.rowcount

    def _run_alone(self, query: str, params: dict[str, Any], write: bool) -> list[Row]:
        self._begin(write)
        try:
            rows, _ = self._run(query, params)
        except BaseException:
            self._end(False)
            raise
        self._end(True)
        return rows

    def _run_first(self, write: bool, query: str, params: dict[str, Any]) -> tuple[list[Row], int]:
        self._begin(write)
        return self._run(query, params)

    def _begin(self, write: bool) -> None:
        assert self._conn is not None
        self._conn.execute("BEGIN IMMEDIATE" if write else "BEGIN")

    def _end(self, commit: bool) -> None:
        assert self._conn is not None
        if not self._conn.in_transaction:
            return
        self._conn.execute("COMMIT" if commit else "ROLLBACK")


class _SQLiteTx(Tx):
    """Statements of one transaction. BEGIN travels with the first statement to save a thread hop."""

    def __init__(self, store: SQLiteStore, write: bool) -> None:
        self._store = store
        self._write = write
        self.begun = False

    async def _send(self, query: str, params: dict[str, Any]) -> tuple[list[Row], int]:
        store = self._store
        if not self.begun:
            self.begun = True
            result = await store._call(store._run_first, self._write, query, params)
        else:
            result = await store._call(store._run, query, params)
        return result  # type: ignore[no-any-return]

    async def fetch_all(self, query: str, **params: Any) -> list[Row]:
        rows, _ = await self._send(query, params)
        return rows

    async def execute(self, query: str, **params: Any) -> int:
        _, count = await self._send(query, params)
        return count


class _SQLiteTxContext(AbstractTxContext):
    def __init__(self, store: SQLiteStore, write: bool) -> None:
        self._store = store
        self._write = write
        self._tx: _SQLiteTx | None = None

    async def __aenter__(self) -> Tx:
        lock = self._store._lock
        if lock is None:
            raise RuntimeError("SQLite store is not open")
        await lock.acquire()
        self._tx = _SQLiteTx(self._store, self._write)
        return self._tx

    async def __aexit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        lock = self._store._lock
        assert lock is not None
        try:
            if self._tx is not None and self._tx.begun:
                # Shielded: a cancelled caller must still end the transaction, or the connection stays in it.
                await asyncio.shield(self._store._call(self._store._end, exc_type is None))
        finally:
            lock.release()
