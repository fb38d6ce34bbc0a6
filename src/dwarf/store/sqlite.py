"""The SQLite store: the embedded default, one database file (or an in-memory database in tests).

Each store owns one connection and one thread. A unit of work (see ``Store.run``) is queued to that
thread whole and runs there start to finish, its statements executing synchronously, so the engine's
loop never blocks on SQLite and units never interleave. Units that queue up while the thread is busy
commit together (group commit): each runs inside its own savepoint, so one that raises is rolled back
alone, and a single COMMIT makes the whole group durable before any caller hears back. Write groups
start with ``BEGIN IMMEDIATE`` so that another process on the same file waits on the busy timeout
instead of failing half-way; the database runs in WAL mode, where readers in other processes are never
blocked by the writer.

Failures: some errors (a full disk, an I/O error) make SQLite roll the whole transaction back by itself,
taking every unit of the group with it; those units hear a StoreError, never a success. The thread
outlives any failure, its own bugs included, because a dead thread would leave every later caller
(``close`` too) waiting for ever.
"""

from __future__ import annotations

import asyncio
import os
import queue
import random
import sqlite3
import threading
from typing import Any, TypeVar
from urllib.parse import parse_qs, quote, unquote, urlsplit

from dwarf.errors import BadRequestError, StoreError
from dwarf.store.base import (
    Row,
    Store,
    Tx,
    TxFunction,
    first_line,
    load_queries,
    migration_scripts,
    missing_migrations,
    split_statements,
)
from dwarf.store.statements import StatementName

__all__ = ["SQLiteStore", "parse_sqlite_dsn"]

T = TypeVar("T")

# julianday('now') has millisecond resolution; converting keeps every time in epoch seconds like PostgreSQL.
_NOW = "((julianday('now') - 2440587.5) * 86400.0)"
_BUSY_TIMEOUT_MS = 30_000
CLOSE_TIMEOUT = 2.0
"""Seconds ``close`` waits for the store's thread to finish what is queued (see close)."""
_SYNCHRONOUS_MODES = {"off", "normal", "full", "extra"}
_MEMORY = ":memory:"

# Primary result codes (the low byte of an extended code) of failures that may pass on their own: a lock
# held by another process, memory, I/O, a full disk. The rest (a malformed JSON text, a string or blob
# too big, a constraint, a corrupt file) fail again for the same work.
_TRANSIENT_CODES = frozenset(
    {
        sqlite3.SQLITE_BUSY,
        sqlite3.SQLITE_LOCKED,
        sqlite3.SQLITE_NOMEM,
        sqlite3.SQLITE_INTERRUPT,
        sqlite3.SQLITE_IOERR,
        sqlite3.SQLITE_FULL,
        sqlite3.SQLITE_PROTOCOL,
    }
)
# Of those, the ones that mean the database cannot work at all for now (lock waits are routine).
_OUTAGE_CODES = frozenset(
    {sqlite3.SQLITE_NOMEM, sqlite3.SQLITE_IOERR, sqlite3.SQLITE_FULL, sqlite3.SQLITE_PROTOCOL}
)


def parse_sqlite_dsn(dsn: str) -> tuple[str, dict[str, str]]:
    """Split ``sqlite:///path?opt=v`` (or ``sqlite://:memory:``) into a path and options."""
    parts = urlsplit(dsn)
    if parts.scheme not in {"sqlite", "sqlite3"}:
        raise BadRequestError(f"not an SQLite DSN: scheme {parts.scheme!r}")
    path = unquote(parts.netloc + parts.path)
    if path.startswith("/") and parts.netloc == "":
        # sqlite:///relative.db -> "relative.db"; sqlite:////abs.db -> "/abs.db"
        path = path[1:]
    if not path:
        raise BadRequestError("the SQLite DSN has no file path: use sqlite:///path")
    if path.startswith("file:"):
        # The store opens paths, not SQLite URI filenames; one would be taken as a file literally named
        # "file:...", created in the working directory.
        raise BadRequestError(f"the SQLite DSN names a URI filename ({path!r}): use sqlite:///path")
    options = {key: values[-1] for key, values in parse_qs(parts.query).items()}
    return path, options


def _read_write_uri(path: str) -> str:
    """An SQLite URI filename that opens ``path`` read-write and never creates it.

    The path is made absolute and percent-encoded ("?", "#" and "%" would otherwise end or escape it);
    the empty authority of ``file://`` keeps a path starting with "//" from being read as a host.
    """
    return f"file://{quote(os.path.abspath(path))}?mode=rw"


def _primary_code(error: BaseException) -> int:
    code = getattr(error, "sqlite_errorcode", None)
    return code & 0xFF if isinstance(code, int) else -1


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
    units_may_suspend = False
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

    async def open(self, *, migrate: bool = True) -> None:
        if self._thread is not None:
            return
        thread = threading.Thread(target=self._serve, name=f"dwarf-sqlite-{self.shard}", daemon=True)
        thread.start()
        self._thread = thread
        try:
            # An in-memory database is new and empty each time: it is always given the schema.
            await asyncio.to_thread(self._connect_and_migrate, migrate or self.path == _MEMORY)
        except BaseException:
            await self.close()
            raise

    async def close(self) -> None:
        thread, self._thread = self._thread, None
        if thread is None:
            return
        self._queue.put(None)
        # The thread closes the connection itself once it has drained the queue. It may be stuck in a
        # statement waiting for another process's lock (SQLite's busy wait cannot be interrupted, and
        # lasts up to the busy timeout): closing must not wait for that.
        await asyncio.to_thread(thread.join, CLOSE_TIMEOUT)
        if thread.is_alive():
            self.log.warning(
                "shard %d (%s): its thread is still waiting on the database; the store closes without it",
                self.shard,
                self.description,
                extra={"flow": ""},
            )

    async def run(self, work: TxFunction[T], *, write: bool = True) -> T:
        if self._thread is None or self._conn is None:
            raise RuntimeError("SQLite store is not open")
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()
        self._queue.put(_Unit(work, write, loop, future))
        # Cancelling the caller does not stop the unit of work: it commits or rolls back on its own.
        try:
            result = await future
        except StoreError as error:
            self.note_failure(error)
            raise
        if self._outage:
            self.note_success()
        return result

    def wrap(self, error: BaseException, what: str = "") -> StoreError:
        """The StoreError for a failure of the driver (raise it from ``error``)."""
        transient = _primary_code(error) in _TRANSIENT_CODES or isinstance(error, MemoryError)
        return self.store_error(error, transient=transient, what=what)

    def is_outage(self, cause: BaseException) -> bool:
        return _primary_code(cause) in _OUTAGE_CODES

    # --- everything below runs on the store's thread ---

    def _serve(self) -> None:
        while True:
            unit = self._queue.get()
            if unit is None:
                conn, self._conn = self._conn, None
                if conn is not None:
                    conn.close()
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
            try:
                self._run_group(group)
            except BaseException as error:
                self._survive(group, error)
            for unit in group:
                try:
                    unit.loop.call_soon_threadsafe(_deliver, unit.future, unit.result, unit.error)
                except RuntimeError:
                    pass  # the caller's loop is closed: nobody is waiting any more

    def _survive(self, group: list[_Unit], error: BaseException) -> None:
        """Fail every unit of a group whose handling broke unexpectedly, and leave no transaction open.

        A unit that had succeeded is failed too: whether its work committed is unknown, and reporting
        a success for work that may be lost is the one answer that must never be given.
        """
        self.log.error(
            "the SQLite thread of shard %d failed a commit group: %s",
            self.shard,
            first_line(error),
            exc_info=error,
            extra={"flow": ""},
        )
        for unit in group:
            if unit.error is None:
                unit.error = self.store_error(error, transient=True, what="the store's thread failed")
        conn = self._conn
        if conn is not None and conn.in_transaction:
            self._rollback(conn)

    def _run_group(self, group: list[_Unit]) -> None:
        conn = self._conn
        assert conn is not None
        pending = group
        while pending:
            pending = self._run_transaction(conn, pending)

    def _run_transaction(self, conn: sqlite3.Connection, units: list[_Unit]) -> list[_Unit]:
        """Run ``units`` in one transaction and set each one's outcome.

        Returns the units that never ran because SQLite rolled the transaction back under an earlier
        one: they deserve a transaction of their own.
        """
        if conn.in_transaction:
            self._rollback(conn)  # left open by a failed ROLLBACK: BEGIN would fail for ever otherwise
        try:
            conn.execute("BEGIN IMMEDIATE" if any(unit.write for unit in units) else "BEGIN")
        except sqlite3.Error as error:
            for unit in units:
                unit.error = self.wrap(error, "cannot begin a transaction")
            return []
        for index, unit in enumerate(units):
            self._run_unit(conn, unit)
            if not conn.in_transaction:
                self._lost(units[: index + 1], unit)
                return units[index + 1 :]
        try:
            conn.execute("COMMIT")
        except sqlite3.Error as error:
            self._rollback(conn)
            for unit in units:
                if unit.error is None:
                    unit.error = self.wrap(error, "commit failed")
        return []

    def _run_unit(self, conn: sqlite3.Connection, unit: _Unit) -> None:
        """Run one unit inside its own savepoint, undoing its changes alone if it raises."""
        try:
            conn.execute("SAVEPOINT unit")
        except sqlite3.Error as error:
            unit.error = self.wrap(error, "cannot open a savepoint")
            return
        try:
            unit.result = _run_to_completion(unit.work(_SQLiteTx(self, conn)))
        except BaseException as error:
            unit.error = error
            if conn.in_transaction:  # else SQLite already rolled the whole transaction back
                self._undo_unit(conn)
            return
        if not conn.in_transaction:
            return  # the unit swallowed an error that took the transaction with it: _lost tells it
        try:
            conn.execute("RELEASE unit")
        except sqlite3.Error as error:
            unit.error = self.wrap(error, "cannot release its savepoint")
            if conn.in_transaction:
                self._undo_unit(conn)

    def _undo_unit(self, conn: sqlite3.Connection) -> None:
        """Roll back the current unit's savepoint; if even that fails, the whole transaction."""
        try:
            conn.execute("ROLLBACK TO unit")
            conn.execute("RELEASE unit")
        except sqlite3.Error:
            self._rollback(conn)

    def _lost(self, units: list[_Unit], culprit: _Unit) -> None:
        """The transaction of ``units`` is gone (SQLite rolled it back itself, typically on a full disk or
        an I/O error, under ``culprit``): whatever those units did is lost, so none may report success."""
        cause: BaseException | None = culprit.error
        if isinstance(cause, StoreError) and cause.__cause__ is not None:
            cause = cause.__cause__
        for unit in units:
            if unit.error is not None:
                continue
            if cause is None:  # the culprit swallowed the error that ended the transaction
                failure = StoreError(
                    f"shard {self.shard} ({self.description}): rolled back with its commit group "
                    "(SQLite ended the transaction itself)"
                )
            else:
                failure = self.store_error(cause, transient=True, what="rolled back with its commit group")
            unit.error = failure

    @staticmethod
    def _rollback(conn: sqlite3.Connection) -> None:
        try:
            conn.execute("ROLLBACK")
        except sqlite3.Error:
            pass  # nothing to roll back any more, or the next group's BEGIN will try again

    # --- opening (on a worker thread, before the store's thread serves any unit) ---

    def _connect_and_migrate(self, migrate: bool) -> None:
        try:
            if migrate:
                conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
            else:
                conn = sqlite3.connect(
                    _read_write_uri(self.path), uri=True, isolation_level=None, check_same_thread=False
                )
        except sqlite3.Error as error:
            if not migrate and not os.path.exists(self.path):
                raise StoreError(
                    f"no dwarf database at {self.path}: the file does not exist (an engine with workers "
                    "creates it)",
                    transient=False,
                ) from error
            raise self.wrap(error, "cannot open the database") from error
        try:
            self._prepare(conn, migrate)
        except BaseException as error:
            conn.close()
            if isinstance(error, StoreError) or not isinstance(error, Exception):
                raise
            raise self.wrap(error, "cannot open the database") from error
        self._conn = conn

    def _prepare(self, conn: sqlite3.Connection, migrate: bool) -> None:
        conn.row_factory = _dict_row
        conn.execute(f"PRAGMA busy_timeout = {_BUSY_TIMEOUT_MS}")
        if not migrate:
            # Before anything that writes: switching to WAL would already change another program's file.
            self._check_schema(conn)
        if self.path != _MEMORY:
            conn.execute("PRAGMA journal_mode = WAL")
        conn.execute(f"PRAGMA synchronous = {self._synchronous}")
        conn.execute("PRAGMA foreign_keys = OFF")
        # LIKE must be case-sensitive as on PostgreSQL: list's search is a literal substring match.
        conn.execute("PRAGMA case_sensitive_like = ON")
        # The fair claim's random turn gaps (PostgreSQL computes them in SQL; SQLite may lack ln()).
        conn.create_function("dwarf_random_gap", 0, _random_gap, deterministic=False)
        if migrate:
            self._migrate(conn)

    def _check_schema(self, conn: sqlite3.Connection) -> None:
        """Refuse a database without dwarf's complete schema, changing nothing."""
        present = conn.execute(
            "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'dwarf_migrations'"
        ).fetchone()
        if present is None:
            raise StoreError(
                f"shard {self.shard} ({self.description}) holds no dwarf schema: start an engine with "
                "workers on it to create it",
                transient=False,
            )
        applied = {int(row["version"]) for row in conn.execute("SELECT version FROM dwarf_migrations")}
        missing = missing_migrations("sqlite", applied)
        if missing:
            raise StoreError(
                f"shard {self.shard} ({self.description}) holds an older dwarf schema (missing migration "
                f"{missing[0]}): start an engine with workers on it to migrate it",
                transient=False,
            )

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
            if conn.in_transaction:  # a full disk may have rolled it back already
                self._rollback(conn)
            raise


class _SQLiteTx(Tx):
    """Statements of one transaction, executed synchronously on the store's thread.

    A query of several statements runs them in order and answers with the first one that returned rows
    (or, for ``execute``, the row count of the first statement). Whatever the driver raises, binding
    errors included (an int beyond 64 bits, a lone surrogate), reaches the unit as a StoreError.
    """

    def __init__(self, store: SQLiteStore, conn: sqlite3.Connection) -> None:
        self._store = store
        self._conn = conn
        self._queries = store._queries

    async def fetch_all(self, query: StatementName, **params: Any) -> list[Row]:
        result: list[Row] | None = None
        for statement in self._queries[query]:
            try:
                rows: list[Row] = self._conn.execute(statement, params).fetchall()
            except Exception as error:  # only the driver runs in here
                raise self._store.wrap(error) from error
            if result is None and rows:
                result = rows
        return result or []

    async def execute(self, query: StatementName, **params: Any) -> int:
        counts = []
        for statement in self._queries[query]:
            try:
                counts.append(self._conn.execute(statement, params).rowcount)
            except Exception as error:  # only the driver runs in here
                raise self._store.wrap(error) from error
        return counts[0]
