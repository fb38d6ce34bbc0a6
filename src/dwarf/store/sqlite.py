"""The SQLite store: the embedded default, one database file (or an in-memory database in tests).

Each store owns one connection and one thread. A unit of work (see ``Store.run``) is queued to that
thread whole and runs there start to finish, its statements executing synchronously, so the engine's
loop never blocks on SQLite and units never interleave. Units that queue up while the thread is busy
commit together (group commit): each runs inside its own savepoint, so one that raises is rolled back
alone, and a single COMMIT makes the whole group durable before any caller hears back. Write groups
start with ``BEGIN IMMEDIATE`` so that another process on the same file waits on the busy timeout
instead of failing half-way; the database runs in WAL mode, where readers in other processes are never
blocked by the writer.
"""

from __future__ import annotations

import asyncio
import queue
import random
import sqlite3
import threading
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


def _random_gap() -> float:
    """An exponentially distributed random gap of mean 1 (a turn increment of the fair claim)."""
    return random.expovariate(1.0)


def _dict_row(cursor: sqlite3.Cursor, row: tuple[Any, ...]) -> Row:
    return {column[0]: value for column, value in zip(cursor.description, row, strict=True)}


class _Unit:
    """A unit of work waiting for the store's thread, and where to deliver its outcome."""

    __slots__ = ("error", "future", "loop", "result", "work", "write")

    def __init__(self, work: Any, write: bool, loop: asyncio.AbstractEventLoop, future: Any) -> None:
        self.work = work
        self.write = write
        self.loop = loop
        self.future = future
        self.result: Any = None
        self.error: BaseException | None = None


def _deliver(future: asyncio.Future[Any], result: Any, error: BaseException | None) -> None:
    if future.done():  # the caller was cancelled; the work committed (or not) regardless
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(result)


def _run_to_completion(coroutine: Any) -> Any:
    """Drive a unit of work that never suspends (its Tx answers synchronously) to its result."""
    try:
        coroutine.send(None)
    except StopIteration as stop:
        return stop.value
    coroutine.close()
    raise RuntimeError("a unit of work suspended inside an SQLite transaction")


class SQLiteStore(Store):
    """One SQLite database driven by its own thread, committing queued units of work in groups."""

    dialect = "sqlite"
    # Units that arrived while the thread was busy commit together, each inside its own savepoint; the
    # cap bounds how long the first of them waits for the shared COMMIT.
    max_group = 64

    def __init__(self, path: str, shard: int = 1, *, synchronous: str = "normal") -> None:
        if synchronous.lower() not in _SYNCHRONOUS_MODES:
            raise BadRequestError(f"unknown SQLite synchronous mode {synchronous!r}")
        self.path = path
        self.shard = shard
        self._synchronous = synchronous.lower()
        self._queries = {name: split_statements(sql) for name, sql in load_queries("sqlite", _NOW).items()}
        self._conn: sqlite3.Connection | None = None
        self._queue: queue.SimpleQueue[_Unit | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None

    @property
    def description(self) -> str:
        return f"sqlite:{self.path}"

    async def open(self) -> None:
        if self._thread is not None:
            return
        thread = threading.Thread(target=self._serve, name=f"dwarf-sqlite-{self.shard}", daemon=True)
        thread.start()
        self._thread = thread
        try:
            await asyncio.to_thread(self._connect_and_migrate)
        except BaseException:
            await self.close()
            raise

    async def close(self) -> None:
        thread, self._thread = self._thread, None
        if thread is None:
            return
        self._queue.put(None)
        await asyncio.to_thread(thread.join)
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    async def run(self, work: TxFunction[T], *, write: bool = True) -> T:
        if self._thread is None or self._conn is None:
            raise RuntimeError("SQLite store is not open")
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()
        self._queue.put(_Unit(work, write, loop, future))
        # Cancelling the caller does not stop the unit of work: it commits or rolls back on its own.
        return await future

    # --- everything below runs on the store's thread ---

    def _serve(self) -> None:
        while True:
            unit = self._queue.get()
            if unit is None:
                return
            group = [unit]
            while len(group) < self.max_group:
                try:
                    more = self._queue.get_nowait()
                except queue.Empty:
                    break
                if more is None:
                    self._queue.put(None)  # stop after this group
                    break
                group.append(more)
            self._run_group(group)

    def _run_group(self, group: list[_Unit]) -> None:
        conn = self._conn
        assert conn is not None
        write = any(unit.write for unit in group)
        commit_error: BaseException | None = None
        try:
            conn.execute("BEGIN IMMEDIATE" if write else "BEGIN")
        except BaseException as error:
            commit_error = error
        else:
            for unit in group:
                conn.execute("SAVEPOINT unit")
                try:
                    unit.result = _run_to_completion(unit.work(_SQLiteTx(conn, self._queries)))
                except BaseException as error:
                    unit.error = error
                    conn.execute("ROLLBACK TO unit")
                conn.execute("RELEASE unit")
            try:
                conn.execute("COMMIT")
            except BaseException as error:
                commit_error = error
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
        for unit in group:
            outcome = commit_error if commit_error is not None and unit.error is None else unit.error
            try:
                unit.loop.call_soon_threadsafe(_deliver, unit.future, unit.result, outcome)
            except RuntimeError:
                pass  # the caller's loop is closed: nobody is waiting any more

    def _connect_and_migrate(self) -> None:
        conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        conn.row_factory = _dict_row
        conn.execute(f"PRAGMA busy_timeout = {_BUSY_TIMEOUT_MS}")
        if self.path != ":memory:":
            conn.execute("PRAGMA journal_mode = WAL")
        conn.execute(f"PRAGMA synchronous = {self._synchronous}")
        conn.execute("PRAGMA foreign_keys = OFF")
        # LIKE must be case-sensitive as on PostgreSQL: list's search is a literal substring match.
        conn.execute("PRAGMA case_sensitive_like = ON")
        # The fair claim's random turn gaps (PostgreSQL computes them in SQL; SQLite may lack ln()).
        conn.create_function("dwarf_random_gap", 0, _random_gap, deterministic=False)
        self._migrate(conn)
        self._conn = conn

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
