"""Stores opened directly, without an engine, and the test-only statements the store tests run on them.

A store runs named statements only; these tests give it a few of their own (a ``notes`` table and the
PRAGMA that caps an SQLite database's size) next to dwarf's, so that they exercise the store's
transaction handling without depending on the engine's schema.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio

from dwarf.store.base import Store, split_statements
from dwarf.store.sqlite import SQLiteStore

TEST_QUERIES = {
    "make_notes": "CREATE TABLE IF NOT EXISTS notes (body TEXT NOT NULL)",
    "add_note": "INSERT INTO notes (body) VALUES (:body)",
    "notes": "SELECT body FROM notes ORDER BY body",
    "add_number": "INSERT INTO notes (body) VALUES (CAST(CAST(:number AS BIGINT) AS TEXT))",
    "lock_note": "SELECT body FROM notes WHERE body = :body FOR UPDATE",
    "parse_json": "SELECT json(:text) AS value",
    "jsonb": "SELECT CAST(:text AS JSONB) AS value",
    "freeze_size": "PRAGMA max_page_count = 1",  # clamped to the current size: no growth at all
    "lift_size_limit": "PRAGMA max_page_count = 1073741823",
    "short_busy_timeout": "PRAGMA busy_timeout = 50",
    "sleep": "SELECT pg_sleep(10)",
}


def add_test_queries(store: Store) -> None:
    """Teach ``store`` the statements of TEST_QUERIES (before or after it opens)."""
    if isinstance(store, SQLiteStore):
        store._queries.update({name: split_statements(sql) for name, sql in TEST_QUERIES.items()})
    else:
        from dwarf.store.postgres import PostgresStore, to_psycopg_params

        assert isinstance(store, PostgresStore)
        store._queries.update({name: to_psycopg_params(sql) for name, sql in TEST_QUERIES.items()})


async def make_notes(store: Store) -> None:
    await store.run(lambda tx: tx.execute("make_notes"))


async def notes(store: Store) -> list[str]:
    return [row["body"] for row in await store.read("notes")]


def sqlite_dsn(path: Path) -> str:
    return f"sqlite:///{path}"


@pytest_asyncio.fixture
async def store(backend: str, fresh_dsn: str) -> AsyncIterator[Store]:
    """An open, migrated store on an empty database of ``backend``, with the test statements and a
    ``notes`` table; closed afterwards."""
    from dwarf.store.shards import StoreSpec, build_store

    opened = build_store(StoreSpec(fresh_dsn, fresh_dsn, False), 1, 2)
    add_test_queries(opened)
    await opened.open()
    try:
        await make_notes(opened)
        yield opened
    finally:
        await opened.close()


@pytest.fixture
def store_log(caplog: pytest.LogCaptureFixture) -> logging.Logger:
    """A logger whose records ``caplog`` captures, for ``Store.log``."""
    logger = logging.getLogger("tests.store")
    logger.setLevel(logging.DEBUG)
    caplog.set_level(logging.DEBUG, logger="tests.store")
    return logger
