"""Opening a store: a PostgreSQL database that is missing or unreachable is explained at once, and an
operations-only store (``migrate=False``) creates neither a database file nor a schema."""

from __future__ import annotations

import asyncio
import logging
import socket
import sqlite3
import uuid
from pathlib import Path
from urllib.parse import urlsplit

import psycopg
import pytest

from dwarf import BadRequestError, StoreError
from dwarf.store.base import Store
from dwarf.store.postgres import PostgresStore
from dwarf.store.shards import open_stores, release_stores, resolve_specs
from dwarf.store.sqlite import SQLiteStore, parse_sqlite_dsn
from tests.conftest import PG_AVAILABLE, PG_DSN

NO_HANG = 10.0

needs_postgres = pytest.mark.skipif(not PG_AVAILABLE, reason="PostgreSQL not configured (set DWARF_TEST_DSN)")


def _server_dsn(database: str, *, password: str = "", port: int | None = None, user: str = "") -> str:
    parts = urlsplit(PG_DSN)
    user = user or parts.username or "postgres"
    secret = f":{password}" if password else ""
    return parts._replace(
        netloc=f"{user}{secret}@{parts.hostname}:{port or parts.port or 5432}", path=f"/{database}"
    ).geturl()


async def _open_fails(store: Store, **options: bool) -> StoreError:
    async with asyncio.timeout(NO_HANG):
        with pytest.raises(StoreError) as raised:
            await store.open(**options)
    await store.close()
    return raised.value


# --- PostgreSQL: the first connection explains itself ---


@needs_postgres
async def test_a_missing_postgresql_database_is_named_with_how_to_create_it(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    database = f"dwarf_missing_{uuid.uuid4().hex[:8]}"
    error = await _open_fails(PostgresStore(_server_dsn(database, password="s3cret")))
    assert error.transient is False
    assert f'no database "{database}"' in str(error)
    assert f"createdb {database}" in str(error)
    assert "s3cret" not in str(error)
    assert isinstance(error.__cause__, psycopg.OperationalError)
    assert [record for record in caplog.records if record.levelno >= logging.WARNING] == []


@needs_postgres
async def test_an_unreachable_postgresql_server_is_a_transient_store_error_naming_host_and_port() -> None:
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    error = await _open_fails(PostgresStore(_server_dsn("flows", port=port)))
    assert error.transient is True
    assert f"127.0.0.1:{port} is unreachable" in str(error)


@needs_postgres
async def test_a_login_the_postgresql_server_refuses_is_a_permanent_store_error() -> None:
    error = await _open_fails(PostgresStore(_server_dsn("postgres", user="dwarf_nobody")))
    assert error.transient is False
    assert 'refused user "dwarf_nobody"' in str(error)


# --- operations-only stores create nothing ---


async def test_an_operations_only_store_does_not_create_a_missing_sqlite_file(tmp_path: Path) -> None:
    path = tmp_path / "absent.db"
    error = await _open_fails(SQLiteStore(str(path)), migrate=False)
    assert error.transient is False
    assert f"no dwarf database at {path}" in str(error)
    assert list(tmp_path.iterdir()) == []


async def test_an_operations_only_store_leaves_another_programs_sqlite_database_untouched(
    tmp_path: Path,
) -> None:
    path = tmp_path / "shop.db"
    with sqlite3.connect(path) as other:
        other.execute("CREATE TABLE customers (name TEXT)")
    before = path.read_bytes()
    error = await _open_fails(SQLiteStore(str(path)), migrate=False)
    assert error.transient is False
    assert "holds no dwarf schema" in str(error)
    assert path.read_bytes() == before  # no table added, not even switched to WAL


async def test_an_operations_only_store_refuses_an_older_dwarf_schema(fresh_dsn: str) -> None:
    specs = resolve_specs(fresh_dsn, 1, "")
    stores = await open_stores(specs, 1)
    await stores[0].write("ping")  # a statement of dwarf's: the schema is there
    await release_stores(specs, stores)
    await _forget_last_migration(fresh_dsn)
    with pytest.raises(StoreError, match="older dwarf schema") as raised:
        await open_stores(specs, 1, migrate=False)
    assert raised.value.transient is False


async def _forget_last_migration(dsn: str) -> None:
    statement = "DELETE FROM dwarf_migrations WHERE version = (SELECT max(version) FROM dwarf_migrations)"
    if dsn.startswith("sqlite"):
        with sqlite3.connect(parse_sqlite_dsn(dsn)[0]) as conn:
            conn.execute(statement)
        return
    async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
        await conn.execute(statement)


async def test_an_operations_only_store_refuses_an_empty_database_and_creates_no_schema(
    fresh_dsn: str,
) -> None:
    specs = resolve_specs(fresh_dsn, 1, "")
    if fresh_dsn.startswith("sqlite"):
        sqlite3.connect(parse_sqlite_dsn(fresh_dsn)[0]).close()  # an empty file, as `touch` leaves it
    with pytest.raises(StoreError, match="holds no dwarf schema") as raised:
        await open_stores(specs, 1, migrate=False)
    assert raised.value.transient is False
    stores = await open_stores(specs, 1)  # a migrating store finds nothing half-made
    await release_stores(specs, stores)


async def test_an_operations_only_store_works_on_a_dwarf_database(fresh_dsn: str) -> None:
    specs = resolve_specs(fresh_dsn, 1, "")
    await release_stores(specs, await open_stores(specs, 1))
    stores = await open_stores(specs, 1, migrate=False)
    try:
        assert await stores[0].read("ping")
    finally:
        await release_stores(specs, stores)


async def test_an_operations_only_store_opens_a_path_with_uri_special_characters(tmp_path: Path) -> None:
    path = tmp_path / "odd ?#%25 name.db"
    migrating = SQLiteStore(str(path))
    await migrating.open()
    await migrating.close()
    reading = SQLiteStore(str(path))
    await reading.open(migrate=False)
    try:
        assert await reading.read("ping")
    finally:
        await reading.close()
    assert sorted(entry.name for entry in tmp_path.iterdir() if entry.suffix == ".db") == [path.name]


async def test_test_databases_are_migrated_even_for_an_operations_only_engine(backend: str) -> None:
    dsn = PG_DSN if backend == "postgres" else "sqlite://:memory:"
    specs = resolve_specs(dsn, 1, f"ops-only-{uuid.uuid4().hex}")
    stores = await open_stores(specs, 1, migrate=False)
    try:
        assert await stores[0].read("ping")
    finally:
        await release_stores(specs, stores)


async def test_the_logger_given_to_open_stores_becomes_each_stores_log(fresh_dsn: str) -> None:
    logger = logging.getLogger("tests.store.given")
    specs = resolve_specs(fresh_dsn, 1, "")
    stores = await open_stores(specs, 1, log=logger)
    try:
        assert stores[0].log is logger
    finally:
        await release_stores(specs, stores)


# --- SQLite DSNs ---


@pytest.mark.parametrize(
    "dsn", ["sqlite://", "sqlite:///", "sqlite:///file:flows.db", "sqlite:///file:x.db?mode=ro"]
)
def test_an_sqlite_dsn_without_a_plain_path_is_refused(dsn: str) -> None:
    with pytest.raises(BadRequestError, match="use sqlite:///path"):
        parse_sqlite_dsn(dsn)
