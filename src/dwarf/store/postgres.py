"""The PostgreSQL store: psycopg 3 in async mode over a connection pool.

Statements are shared with SQLite where the SQL agrees; ``:name`` parameters are rewritten to psycopg's
``%(name)s`` once, at load time. Migrations run under a transaction-scoped advisory lock so that replicas
starting together apply each migration exactly once.
"""

from __future__ import annotations

import re
from typing import Any, TypeVar
from urllib.parse import urlsplit, urlunsplit

import psycopg
from psycopg.rows import dict_row
from psycopg_pool import AsyncConnectionPool

from dwarf.store.base import (
    Row,
    Store,
    Tx,
    TxFunction,
    load_queries,
    migration_scripts,
    split_statements,
)

__all__ = ["PostgresStore", "redact_dsn", "to_psycopg_params"]

T = TypeVar("T")

_NOW = "extract(epoch from clock_timestamp())"
# An arbitrary constant that namespaces our advisory lock; it must never change once deployed.
_MIGRATION_LOCK_ID = 0x6477_6172_6601
_TOKEN = re.compile(r"'(?:[^']|'')*'|::|:([a-zA-Z_][a-zA-Z0-9_]*)|%")


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
    """The DSN without its password, for messages."""
    parts = urlsplit(dsn)
    if parts.password is None:
        return dsn
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@")
    return urlunsplit(parts._replace(netloc=netloc))


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

    async def open(self) -> None:
        if self._pool is not None:
            return
        pool: AsyncConnectionPool[psycopg.AsyncConnection[Row]] = AsyncConnectionPool(
            self.dsn,
            min_size=1,
            max_size=self.pool_size,
            kwargs={"row_factory": dict_row, "autocommit": True},
            open=False,
            name=f"dwarf-shard-{self.shard}",
            timeout=30.0,
        )
        await pool.open(wait=True, timeout=30.0)
        self._pool = pool
        try:
            await self._migrate()
        except BaseException:
            await self.close()
            raise

    async def _migrate(self) -> None:
        assert self._pool is not None
        async with self._pool.connection() as conn, conn.transaction():
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

    async def close(self) -> None:
        pool, self._pool = self._pool, None
        if pool is not None:
            await pool.close()

    async def run(self, work: TxFunction[T], *, write: bool = True) -> T:
        pool = self._pool
        if pool is None:
            raise RuntimeError("PostgreSQL store is not open")
        async with pool.connection() as conn, conn.transaction():
            return await work(_PostgresTx(conn, self._queries))

    async def read(self, query: str, **params: Any) -> list[Row]:
        return await self._single(query, params)

    async def write(self, query: str, **params: Any) -> list[Row]:
        return await self._single(query, params)

    async def _single(self, query: str, params: dict[str, Any]) -> list[Row]:
        # One statement needs no BEGIN/COMMIT: on an autocommit connection it is its own transaction,
        # which saves two round trips.
        pool = self._pool
        if pool is None:
            raise RuntimeError("PostgreSQL store is not open")
        async with pool.connection() as conn:
            return await _PostgresTx(conn, self._queries).fetch_all(query, **params)

    async def resize(self, pool_size: int) -> None:
        self.pool_size = max(1, pool_size)
        if self._pool is not None:
            await self._pool.resize(min_size=1, max_size=self.pool_size)

    def pool_stats(self) -> dict[str, int]:
        """The pool's counters (size, idle, waiting...) for telemetry."""
        return dict(self._pool.get_stats()) if self._pool is not None else {}


class _PostgresTx(Tx):
    def __init__(self, conn: psycopg.AsyncConnection[Row], queries: dict[str, str]) -> None:
        self._conn = conn
        self._queries = queries

    async def fetch_all(self, query: str, **params: Any) -> list[Row]:
        cursor = await self._conn.execute(self._queries[query], params)
        # Not cursor.description: it builds a Column object per column of every result (a measurable
        # share of the CPU of a step); the raw result says as much.
        result = cursor.pgresult
        if result is None or not result.nfields:
            return []
        return await cursor.fetchall()

    async def execute(self, query: str, **params: Any) -> int:
        cursor = await self._conn.execute(self._queries[query], params)
        return cursor.rowcount
