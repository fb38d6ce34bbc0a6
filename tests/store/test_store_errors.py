"""What callers of a store see when the database fails: a StoreError naming the database (never its
password), saying whether the same work may succeed later, with the driver's exception attached; what a
unit of work raises on purpose, and cancellation, pass through untouched; an outage is logged once."""

from __future__ import annotations

import asyncio
import logging
import sqlite3
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import psycopg
import psycopg.errors
import pytest

from dwarf import ConflictError, StoreError
from dwarf.store.base import Store, Tx
from dwarf.store.postgres import redact_dsn
from dwarf.store.sqlite import SQLiteStore
from tests.engine.graphs import until
from tests.store.conftest import add_test_queries, notes

BIG = "x" * 200_000


class _LeaseLost(Exception):
    """Stands for an exception of the engine's own raised inside a unit (like its LeaseLostError)."""


async def _refused(store: Store, query: str, **params: Any) -> StoreError:
    with pytest.raises(StoreError) as raised:
        await store.write(query, **params)
    error = raised.value
    assert store.description in str(error)
    assert error.__cause__ is not None
    return error


# --- values the database refuses: never worth retrying ---


async def test_an_int_beyond_64_bits_is_a_permanent_store_error(store: Store) -> None:
    error = await _refused(store, "add_number", number=10**30)
    assert error.transient is False
    assert isinstance(error.__cause__, OverflowError | psycopg.DataError)


async def test_text_with_a_lone_surrogate_is_a_permanent_store_error(store: Store) -> None:
    error = await _refused(store, "add_note", body="half a pair: \ud800")
    assert error.transient is False
    assert isinstance(error.__cause__, UnicodeEncodeError)


async def test_a_nul_character_in_postgresql_text_is_a_permanent_store_error(
    store: Store, backend: str
) -> None:
    if backend != "postgres":
        pytest.skip("SQLite text holds NUL")
    error = await _refused(store, "add_note", body="nul \x00 inside")
    assert error.transient is False


async def test_json_the_database_cannot_take_is_a_permanent_store_error(store: Store, backend: str) -> None:
    if backend == "sqlite":
        error = await _refused(store, "parse_json", text='{"open": ')
        assert "malformed JSON" in str(error)
    else:
        error = await _refused(store, "jsonb", text='{"nul": "\\u0000"}')
        assert isinstance(error.__cause__, psycopg.errors.UntranslatableCharacter)
    assert error.transient is False


async def test_a_refused_value_changes_nothing_and_the_store_keeps_working(store: Store) -> None:
    async def add_two(tx: Tx) -> None:
        await tx.execute("add_note", body="kept back")
        await tx.execute("add_number", number=10**30)

    with pytest.raises(StoreError):
        await store.run(add_two)
    await store.write("add_note", body="fine")
    assert await notes(store) == ["fine"]


# --- what units raise on purpose, and cancellation ---


@pytest.mark.parametrize("raised", [ConflictError("not now"), _LeaseLost("the lease went elsewhere")])
async def test_an_exception_a_unit_raises_on_purpose_passes_through_unchanged(
    store: Store, raised: Exception
) -> None:
    async def work(tx: Tx) -> None:
        await tx.execute("add_note", body="rolled back")
        raise raised

    with pytest.raises(type(raised)) as caught:
        await store.run(work)
    assert caught.value is raised
    assert await notes(store) == []


async def test_cancelling_a_caller_cancels_it_and_is_not_wrapped(store: Store, backend: str) -> None:
    query = "sleep" if backend == "postgres" else "notes"
    call = asyncio.ensure_future(store.read(query))
    await asyncio.sleep(0.2 if backend == "postgres" else 0)
    call.cancel()
    with pytest.raises(asyncio.CancelledError):
        await call
    assert await notes(store) == []  # and the store still serves


# --- failures that may pass: worth retrying ---


async def test_a_deadlock_is_a_transient_store_error(store: Store, backend: str) -> None:
    if backend != "postgres":
        pytest.skip("SQLite serialises writers: it cannot deadlock")
    await store.write("add_note", body="a")
    await store.write("add_note", body="b")
    both_locked = asyncio.Barrier(2)

    def locker(first: str, second: str) -> Any:
        async def work(tx: Tx) -> None:
            await tx.fetch_all("lock_note", body=first)
            await both_locked.wait()
            await tx.fetch_all("lock_note", body=second)

        return work

    outcomes = await asyncio.gather(
        store.run(locker("a", "b")), store.run(locker("b", "a")), return_exceptions=True
    )
    failures = [outcome for outcome in outcomes if isinstance(outcome, BaseException)]
    assert len(failures) == 1
    assert isinstance(failures[0], StoreError) and failures[0].transient is True
    assert isinstance(failures[0].__cause__, psycopg.errors.DeadlockDetected)


async def test_a_database_locked_by_another_process_is_a_transient_store_error(
    store: Store, backend: str
) -> None:
    if backend != "sqlite":
        pytest.skip("SQLite's file lock")
    assert isinstance(store, SQLiteStore)
    await store.write("short_busy_timeout")
    other = sqlite3.connect(store.path, isolation_level=None)
    try:
        other.execute("BEGIN IMMEDIATE")
        error = await _refused(store, "add_note", body="waits in vain")
        assert error.transient is True
        assert "locked" in str(error)
    finally:
        other.close()
    await store.write("add_note", body="after")
    assert await notes(store) == ["after"]


async def test_no_free_pooled_connection_in_time_is_a_transient_store_error(
    fresh_dsn: str, backend: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    if backend != "postgres":
        pytest.skip("only PostgreSQL has a pool")
    import dwarf.store.postgres as postgres

    monkeypatch.setattr(postgres, "POOL_TIMEOUT", 0.3)
    store = postgres.PostgresStore(fresh_dsn, pool_size=1)
    add_test_queries(store)
    await store.open()
    held, release = asyncio.Event(), asyncio.Event()

    async def hold(tx: Tx) -> None:  # keeps the only connection busy
        await tx.fetch_all("ping")
        held.set()
        await release.wait()

    holder = asyncio.ensure_future(store.run(hold))
    try:
        await held.wait()
        error = await _refused(store, "ping")
        assert error.transient is True
    finally:
        release.set()
        await holder
        await store.close()


async def test_the_password_of_the_dsn_never_appears_in_a_store_error(fresh_dsn: str, backend: str) -> None:
    if backend != "postgres":
        pytest.skip("SQLite DSNs hold no password")
    from dwarf.store.postgres import PostgresStore

    # Trust authentication ignores the password: the store opens and a statement fails.
    parts = urlsplit(fresh_dsn)
    dsn = parts._replace(netloc=f"{parts.username}:s3cr%40t@{parts.hostname}:{parts.port}").geturl()
    store = PostgresStore(dsn)
    add_test_queries(store)
    await store.open()
    try:
        error = await _refused(store, "add_note", body="\x00")
    finally:
        await store.close()
    assert "s3cr" not in str(error)


def test_redacting_a_dsn_hides_a_percent_encoded_password_and_a_password_option() -> None:
    assert redact_dsn("postgresql://ada:p%40ss%3Aword@db:5432/flows") == "postgresql://ada:***@db:5432/flows"
    redacted = redact_dsn("postgresql://ada@db/flows?password=hunter2&sslmode=require")
    assert "hunter2" not in redacted and "sslmode=require" in redacted
    assert redact_dsn("postgresql://ada@db/flows") == "postgresql://ada@db/flows"


# --- outages are logged once, not per failure ---


def _messages(caplog: pytest.LogCaptureFixture) -> list[tuple[int, str]]:
    return [
        (record.levelno, record.getMessage()) for record in caplog.records if record.name == "tests.store"
    ]


async def test_a_full_disk_is_logged_once_and_its_end_once(
    tmp_path: Path, store_log: logging.Logger, caplog: pytest.LogCaptureFixture
) -> None:
    store = SQLiteStore(str(tmp_path / "outage.db"), shard=3)
    add_test_queries(store)
    store.log = store_log
    await store.open()
    try:
        await store.write("make_notes")
        await store.write("freeze_size")
        for _ in range(3):
            with pytest.raises(StoreError):
                await store.write("add_note", body=BIG)
        await store.write("lift_size_limit")
        await store.write("add_note", body=BIG)
        await store.write("add_note", body="again")
    finally:
        await store.close()
    assert _messages(caplog) == [
        (logging.WARNING, f"shard 3 (sqlite:{store.path}) unreachable: database or disk is full"),
        (logging.INFO, "shard 3 reachable again"),
    ]


async def test_a_refused_value_is_not_logged_as_an_outage(
    store: Store, store_log: logging.Logger, caplog: pytest.LogCaptureFixture
) -> None:
    store.log = store_log
    with pytest.raises(StoreError):
        await store.write("add_number", number=10**30)
    await store.write("add_note", body="fine")
    assert _messages(caplog) == []


async def _kill_connections(dsn: str) -> None:
    """Terminate every session on the database of ``dsn`` (what a server restart does to a pool)."""
    parts = urlsplit(dsn)
    admin = parts._replace(path="/postgres").geturl()
    async with await psycopg.AsyncConnection.connect(admin, autocommit=True) as conn:
        await conn.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s",
            (parts.path.lstrip("/"),),
        )


async def _pool_has_an_idle_connection(store: Any) -> None:
    await until(lambda: store.pool_stats().get("pool_available", 0) >= 1)


async def test_lost_postgresql_connections_are_logged_once_and_the_recovery_once(
    store: Store, backend: str, fresh_dsn: str, store_log: logging.Logger, caplog: pytest.LogCaptureFixture
) -> None:
    if backend != "postgres":
        pytest.skip("killing server sessions needs PostgreSQL")
    store.log = store_log
    for _ in range(2):
        await _pool_has_an_idle_connection(store)
        await _kill_connections(fresh_dsn)
        with pytest.raises(StoreError) as raised:
            await store.read("notes")
        assert raised.value.transient is True
    await _pool_has_an_idle_connection(store)
    await store.read("notes")
    await store.read("notes")
    messages = _messages(caplog)
    assert [level for level, _ in messages] == [logging.WARNING, logging.INFO]
    assert messages[0][1].startswith(f"shard 1 ({store.description}) unreachable: ")
    assert messages[1][1] == "shard 1 reachable again"
