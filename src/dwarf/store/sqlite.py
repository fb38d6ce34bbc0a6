"""The SQLite store: the embedded default, one database file (or an in-memory database in tests).

Each store owns one connection and one thread running its own small event loop. A unit of work (see
``Store.run``) is shipped to that thread whole and runs there start to finish, statements executing
synchronously: one thread hop per transaction, the engine's loop never blocks on SQLite, and two units
of work never interleave (they do not suspend, so the store's loop runs them one after the other).
Write transactions start with ``BEGIN IMMEDIATE`` so that another process on the same file waits on the
busy timeout instead of failing half-way; the database runs in WAL mode, where readers in other
processes are never blocked by the writer.
"""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from concurrent.futures import Future
from typing import Any, TypeVar
from urllib.parse import parse_qs, unquote, urlsplit

from dwarf.errors import BadRequestError
from dwarf.store.base import Row, Store, Tx, TxFunction, load_queries, migration_scripts, split_statements

__all__ = ["SQLiteStore", "parse_sqlite_dsn"]

T = TypeVar("T")

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
    """One SQLite database driven by its own thread."""

    dialect = "sqlite"

    def __init__(self, path: str, shard: int = 1, *, synchronous: str = "normal") -> None:
        if synchronous.lower() not in _SYNCHRONOUS_MODES:
            raise BadRequestError(f"unknown SQLite synchronous mode {synchronous!r}")
        self.path = path
        self.shard = shard
        self._synchronous = synchronous.lower()
        self._queries = {name: split_statements(sql) for name, sql in load_queries("sqlite", _NOW).items()}
        self._conn: sqlite3.Connection | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._in_transaction = False

    @property
    def description(self) -> str:
        return f"sqlite:{self.path}"

    async def open(self) -> None:
        if self._thread is not None:
            return
        ready: Future[asyncio.AbstractEventLoop] = Future()
        thread = threading.Thread(
            target=self._serve, args=(ready,), name=f"dwarf-sqlite-{self.shard}", daemon=True
        )
        thread.start()
        self._loop = await asyncio.wrap_future(ready)
        self._thread = thread
        try:
            await self._submit(self._connect_and_migrate())
        except BaseException:
            await self.close()
            raise

    async def close(self) -> None:
        loop, thread = self._loop, self._thread
        self._loop = self._thread = None
        if loop is None or thread is None:
            return
        try:
            await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(self._disconnect(), loop))
        finally:
            loop.call_soon_threadsafe(loop.stop)
            await asyncio.to_thread(thread.join)

    async def run(self, work: TxFunction[T], *, write: bool = True) -> T:
        result: T = await self._submit(self._run_unit(work, write))
        return result

    async def _submit(self, coroutine: Any) -> Any:
        loop = self._loop
        if loop is None:
            coroutine.close()
            raise RuntimeError("SQLite store is not open")
        # Cancelling the caller does not stop the unit of work: it commits or rolls back on its own.
        return await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(coroutine, loop))

    # --- everything below runs on the store's thread ---

    def _serve(self, ready: Future[asyncio.AbstractEventLoop]) -> None:
        loop = asyncio.new_event_loop()
        asyncio.set_event_loop(loop)
        ready.set_result(loop)
        try:
            loop.run_forever()
        finally:
            loop.close()

    async def _connect_and_migrate(self) -> None:
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

    async def _disconnect(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    async def _run_unit(self, work: TxFunction[T], write: bool) -> T:
        conn = self._conn
        if conn is None:
            raise RuntimeError("SQLite store is not open")
        if self._in_transaction:
            # Only possible if a unit of work suspended on something other than its Tx.
            raise RuntimeError("a unit of work suspended inside an SQLite transaction")
        self._in_transaction = True
        try:
            conn.execute("BEGIN IMMEDIATE" if write else "BEGIN")
            try:
                result = await work(_SQLiteTx(conn, self._queries))
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")
            return result
        finally:
            self._in_transaction = False


class _SQLiteTx(Tx):
    """Statements of one transaction, executed synchronously on the store's thread.

    A query of several statements runs them in order and answers with the first one that returned rows
    (or, for ``execute``, the row count of the first statement).
    """

    def __init__(self, conn: sqlite3.Connection, queries: dict[str, list[str]]) -> None:
        self._conn = conn
        self._queries = queries

    async def fetch_all(self, query: str, **params: Any) -> list[Row]:
        result: list[Row] | None = None
        for statement in self._queries[query]:
            rows: list[Row] = self._conn.execute(statement, params).fetchall()
            if result is None and rows:
                result = rows
        return result or []

    async def execute(self, query: str, **params: Any) -> int:
        counts = [self._conn.execute(statement, params).rowcount for statement in self._queries[query]]
        return counts[0]
