"""The PostgreSQL store: psycopg 3 in async mode over a connection pool.

Statements are shared with SQLite where the SQL agrees; ``:name`` parameters are rewritten to psycopg's
``%(name)s`` once, at load time. Migrations run under a transaction-scoped advisory lock so that replicas
starting together apply each migration exactly once.

Opening starts with one direct connection, which fails within seconds with a plain explanation (a
missing database, a refused login, an unreachable server) where the pool would retry for half a minute
with a warning per attempt; that connection then migrates (or checks) the schema before the pool opens.
"""

from __future__ import annotations

import contextlib
import os
import re
import shlex
from typing import Any, TypeVar
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from dwarf._extras import POSTGRES, missing_extra

try:
    import psycopg
    import psycopg.errors
    from psycopg.conninfo import conninfo_to_dict
    from psycopg.rows import dict_row
    from psycopg_pool import AsyncConnectionPool
except ImportError as error:  # the core install has no PostgreSQL driver
    raise missing_extra(POSTGRES, "postgres", error) from error

from dwarf.errors import StoreError
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

__all__ = ["PostgresStore", "redact_dsn", "to_psycopg_params"]

T = TypeVar("T")

_NOW = "extract(epoch from clock_timestamp())"
# An arbitrary constant that namespaces our advisory lock; it must never change once deployed.
_MIGRATION_LOCK_ID = 0x6477_6172_6601
_TOKEN = re.compile(r"'(?:[^']|'')*'|::|:([a-zA-Z_][a-zA-Z0-9_]*)|%")
CONNECT_TIMEOUT = 5
"""Seconds the first connection of ``open`` may take before the server counts as unreachable."""
POOL_TIMEOUT = 30.0
"""Seconds to wait for a pooled connection (and for the pool's first one when it opens)."""
AUTOVACUUM_OFF_COST = (
    "measured beside 100,000 finished flows: tables up to twice their size, an idle poll taking 190 ms "
    "instead of 0.1 ms, and, before claims were bounded, linear3 at 30-45% of its speed"
)
"""What running without autovacuum was measured to cost (issue 14), quoted by the startup warning."""

# A failed connection carries no SQLSTATE (libpq reports the server's refusal as text), so the two
# refusals that retrying cannot cure are recognised by the server's English wording; anything else
# counts as the server being unreachable for now.
_MISSING_DATABASE = re.compile(r'database "[^"]*" does not exist')
_REFUSED_LOGIN = re.compile(
    r"password authentication failed|authentication failed|no password supplied|no pg_hba\.conf entry"
    r'|role "[^"]*" does not exist|permission denied for database|does not have CONNECT privilege'
)
# Driver failures a unit of work may meet that say nothing about the database being down.
_CONFLICTS = (
    psycopg.errors.TransactionRollback,
    psycopg.errors.LockNotAvailable,
    psycopg.errors.QueryCanceled,
)


def to_psycopg_params(sql: str) -> str:
    """Rewrite ``:name`` to ``%(name)s`` and escape ``%``, leaving string literals and ``::`` casts alone."""

    def replace(match: re.Match[str]) -> str:
        text = match.group(0)
        if text.startswith("'"):
            return text.replace("%", "%%")
        if text == "::":
            return text
        if text == "%":
            return "%%"
        return f"%({match.group(1)})s"

    return _TOKEN.sub(replace, sql)


def redact_dsn(dsn: str) -> str:
    """The DSN without its password (in the user part or as a ``password`` option), for messages."""
    parts = urlsplit(dsn)
    userinfo, at, hostport = parts.netloc.rpartition("@")
    netloc = parts.netloc
    if at and ":" in userinfo:
        # Rebuilt rather than searched for the password: the netloc holds it percent-encoded.
        netloc = f"{userinfo.split(':', 1)[0]}:***@{hostport}"
    query = parts.query
    pairs = parse_qsl(query, keep_blank_values=True)
    if any(key == "password" for key, _ in pairs):
        query = urlencode([(key, "***" if key == "password" else value) for key, value in pairs], safe="*")
    return urlunsplit(parts._replace(netloc=netloc, query=query))


def _is_transient(error: BaseException) -> bool:
    """Whether the same work may succeed later: an outage, a lock or deadlock, a pool timeout; not
    values the database refuses (DataError, a program limit) nor values the driver cannot send."""
    if isinstance(error, psycopg.Error):
        if isinstance(error, psycopg.DataError | psycopg.errors.ProgramLimitExceeded):
            return False
        return isinstance(error, psycopg.OperationalError | psycopg.InterfaceError)
    return isinstance(error, OSError | MemoryError)


class PostgresStore(Store):
    """One PostgreSQL database reached through a pool of async connections."""

    dialect = "postgres"

    def __init__(self, dsn: str, shard: int = 1, *, pool_size: int = 8) -> None:
        self.dsn = dsn
        self.shard = shard
        self.pool_size = max(1, pool_size)
        self._queries = {name: to_psycopg_params(sql) for name, sql in load_queries("postgres", _NOW).items()}
        self._pool: AsyncConnectionPool[psycopg.AsyncConnection[Row]] | None = None

    @property
    def description(self) -> str:
        return redact_dsn(self.dsn)

    async def open(self, *, migrate: bool = True) -> None:
        if self._pool is not None:
            return
        conn = await self._connect()
        try:
            async with conn:
                if migrate:
                    await self._migrate(conn)
                    await self._warn_without_autovacuum(conn)
                else:
                    await self._check_schema(conn)
        except psycopg.Error as error:
            what = "cannot migrate the schema" if migrate else "cannot read the schema"
            raise self.wrap(error, what) from error
        pool: AsyncConnectionPool[psycopg.AsyncConnection[Row]] = AsyncConnectionPool(
            self.dsn,
            min_size=1,
            max_size=self.pool_size,
            kwargs={"row_factory": dict_row, "autocommit": True},
            open=False,
            name=f"dwarf-shard-{self.shard}",
            timeout=POOL_TIMEOUT,
        )
        try:
            await pool.open(wait=True, timeout=POOL_TIMEOUT)
        except BaseException as error:
            await pool.close()
            if isinstance(error, psycopg.Error):
                raise self.wrap(error, "cannot open the connection pool") from error
            raise
        self._pool = pool

    async def _connect(self) -> psycopg.AsyncConnection[Row]:
        """One direct connection, or a StoreError that says plainly why there is none."""
        try:
            settings = conninfo_to_dict(self.dsn)
        except psycopg.Error as error:
            raise StoreError(
                f"shard {self.shard}: unusable PostgreSQL DSN {self.description}", transient=False
            ) from error
        options: dict[str, Any] = {"autocommit": True, "row_factory": dict_row}
        if "connect_timeout" not in settings:
            options["connect_timeout"] = CONNECT_TIMEOUT
        try:
            return await psycopg.AsyncConnection.connect(self.dsn, **options)
        except psycopg.Error as error:
            raise self._connect_error(error, settings) from error

    def _connect_error(self, error: psycopg.Error, settings: dict[str, Any]) -> StoreError:
        text = str(error)
        host = str(settings.get("host") or os.environ.get("PGHOST") or "localhost")
        port = str(settings.get("port") or os.environ.get("PGPORT") or "5432")
        user = str(settings.get("user") or os.environ.get("PGUSER") or "")
        database = str(settings.get("dbname") or os.environ.get("PGDATABASE") or user)
        where = f"shard {self.shard}: PostgreSQL at {host}:{port}"
        if _MISSING_DATABASE.search(text):
            return StoreError(
                f'{where} has no database "{database}" ({self.description}): create it first, with '
                f'createdb {shlex.quote(database)} or CREATE DATABASE "{database}"',
                transient=False,
            )
        if _REFUSED_LOGIN.search(text):
            return StoreError(
                f'{where} refused user "{user}" on database "{database}": {first_line(error)}',
                transient=False,
            )
        return StoreError(f"{where} is unreachable ({self.description}): {first_line(error)}", transient=True)

    async def _migrate(self, conn: psycopg.AsyncConnection[Row]) -> None:
        async with conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock(%s)", (_MIGRATION_LOCK_ID,))
            await conn.execute(
                "CREATE TABLE IF NOT EXISTS dwarf_migrations (version INTEGER PRIMARY KEY,"
                " name TEXT NOT NULL, applied_at TIMESTAMPTZ NOT NULL DEFAULT now())"
            )
            cursor = await conn.execute("SELECT version FROM dwarf_migrations")
            done = {row["version"] for row in await cursor.fetchall()}
            for version, name, script in migration_scripts("postgres"):
                if version in done:
                    continue
                for statement in split_statements(script):
                    await conn.execute(statement.encode())
                await conn.execute(
                    "INSERT INTO dwarf_migrations (version, name) VALUES (%s, %s)", (version, name)
                )

    async def _warn_without_autovacuum(self, conn: psycopg.AsyncConnection[Row]) -> None:
        """Log one WARNING when the server will never vacuum dwarf's tables by itself.

        Every step leaves dead row versions behind (inserted pending, leased, finished: none of these
        updates can be HOT, see migration 006), and index entries pointing at them. Only VACUUM removes
        them, and without ANALYZE the planner picks plans that visit them all at every call: the tables
        keep growing and the statements that look for work cost more as finished flows accumulate.
        Autovacuum is a server-wide setting (a database or a role cannot turn it on), hence a warning and
        not an error. Only engines with workers (``migrate``)
        ask: they are the ones that churn the tables, and an operations-only CLI run should not repeat
        the warning at every command.
        """
        try:
            cursor = await conn.execute(
                "SELECT current_setting('autovacuum') AS autovacuum,"
                " current_setting('track_counts') AS track_counts"
            )
            row = await cursor.fetchone()
        except psycopg.Error as error:
            raise self.wrap(error, "cannot read the server's autovacuum setting") from error
        if row is None:
            return
        if row["autovacuum"] != "on":
            why = "autovacuum off"
        elif row["track_counts"] != "on":
            # The autovacuum launcher decides from the statistics that track_counts collects.
            why = "track_counts off (autovacuum cannot run without it)"
        else:
            return
        self.log.warning(
            "shard %d (%s): the PostgreSQL server runs with %s: nothing removes the dead row versions that "
            "every step leaves in dwarf_steps and dwarf_flows, so claims slow down as finished flows "
            "accumulate (%s). Turn autovacuum on (autovacuum = on and track_counts = on in "
            "postgresql.conf, then SELECT pg_reload_conf()), or run VACUUM ANALYZE dwarf_steps, "
            "dwarf_flows regularly",
            self.shard,
            self.description,
            why,
            AUTOVACUUM_OFF_COST,
            extra={"flow": ""},
        )

    async def _check_schema(self, conn: psycopg.AsyncConnection[Row]) -> None:
        """Refuse a database without dwarf's complete schema, changing nothing."""
        cursor = await conn.execute("SELECT to_regclass('dwarf_migrations') IS NOT NULL AS present")
        row = await cursor.fetchone()
        if row is None or not row["present"]:
            raise StoreError(
                f"shard {self.shard} ({self.description}) holds no dwarf schema: start an engine with "
                "workers on it to create it",
                transient=False,
            )
        cursor = await conn.execute("SELECT version FROM dwarf_migrations")
        missing = missing_migrations("postgres", {int(row["version"]) for row in await cursor.fetchall()})
        if missing:
            raise StoreError(
                f"shard {self.shard} ({self.description}) holds an older dwarf schema (missing migration "
                f"{missing[0]}): start an engine with workers on it to migrate it",
                transient=False,
            )

    async def close(self) -> None:
        pool, self._pool = self._pool, None
        if pool is not None:
            await pool.close()

    async def run(self, work: TxFunction[T], *, write: bool = True) -> T:
        pool = self._pool
        if pool is None:
            raise RuntimeError("PostgreSQL store is not open")
        try:
            async with pool.connection() as conn, conn.transaction():
                result = await work(_PostgresTx(self, conn))
        except StoreError as error:
            await self.note_failure_async(error)
            raise
        except (psycopg.Error, OSError) as error:  # taking a connection, BEGIN, COMMIT
            failure = self.wrap(error)
            await self.note_failure_async(failure)
            raise failure from error
        if self._outage:
            self.note_success()
        return result

    async def read(self, query: StatementName, **params: Any) -> list[Row]:
        return await self._single(query, params)

    async def write(self, query: StatementName, **params: Any) -> list[Row]:
        return await self._single(query, params)

    async def _single(self, query: StatementName, params: dict[str, Any]) -> list[Row]:
        # One statement needs no BEGIN/COMMIT: on an autocommit connection it is its own transaction,
        # which saves two round trips.
        pool = self._pool
        if pool is None:
            raise RuntimeError("PostgreSQL store is not open")
        try:
            async with pool.connection() as conn:
                rows = await _PostgresTx(self, conn).fetch_all(query, **params)
        except StoreError as error:
            await self.note_failure_async(error)
            raise
        except (psycopg.Error, OSError) as error:
            failure = self.wrap(error)
            await self.note_failure_async(failure)
            raise failure from error
        if self._outage:
            self.note_success()
        return rows

    def wrap(self, error: BaseException, what: str = "") -> StoreError:
        """The StoreError for a failure of the driver (raise it from ``error``)."""
        return self.store_error(error, transient=_is_transient(error), what=what)

    def is_outage(self, cause: BaseException) -> bool:
        return _is_transient(cause) and not isinstance(cause, (*_CONFLICTS, MemoryError))

    async def note_failure_async(self, error: StoreError) -> None:
        """note_failure, and when the server seems gone, drop the pool's idle connections before the
        caller hears of the failure: a connection that sat idle through a restart is dead, and the first
        operation to take it after the restart would fail although the server is back."""
        self.note_failure(error)
        pool = self._pool
        cause = error.__cause__
        if pool is not None and isinstance(cause, psycopg.OperationalError) and self.is_outage(cause):
            with contextlib.suppress(Exception):
                await pool.check()

    async def resize(self, pool_size: int) -> None:
        self.pool_size = max(1, pool_size)
        if self._pool is not None:
            await self._pool.resize(min_size=1, max_size=self.pool_size)

    def pool_stats(self) -> dict[str, int]:
        """The pool's counters (size, idle, waiting...) for telemetry."""
        return dict(self._pool.get_stats()) if self._pool is not None else {}


class _PostgresTx(Tx):
    """Statements of one transaction on one connection. Whatever the driver raises, values it cannot
    send included (a NUL in text, a lone surrogate), reaches the unit as a StoreError."""

    def __init__(self, store: PostgresStore, conn: psycopg.AsyncConnection[Row]) -> None:
        self._store = store
        self._conn = conn
        self._queries = store._queries

    async def fetch_all(self, query: StatementName, **params: Any) -> list[Row]:
        sql = self._queries[query]
        try:
            cursor = await self._conn.execute(sql, params)
            # Not cursor.description: it builds a Column object per column of every result (a measurable
            # share of the CPU of a step); the raw result says as much.
            result = cursor.pgresult
            if result is None or not result.nfields:
                return []
            return await cursor.fetchall()
        except Exception as error:  # only the driver runs in here
            raise self._store.wrap(error) from error

    async def execute(self, query: StatementName, **params: Any) -> int:
        sql = self._queries[query]
        try:
            cursor = await self._conn.execute(sql, params)
        except Exception as error:  # only the driver runs in here
            raise self._store.wrap(error) from error
        return cursor.rowcount
