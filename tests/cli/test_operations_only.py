"""The CLI's engine only operates on flows: it never creates a database or dwarf's tables in one, so a
command pointed at the wrong database says so and leaves it as it was."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

from tests.cli.test_bad_invocations import _run


def _tables(path: Path) -> list[str]:
    with sqlite3.connect(path) as conn:
        return sorted(row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'"))


def test_another_applications_sqlite_database_is_refused_and_left_as_it_was(workdir: Path) -> None:
    other = workdir.parent / "shop.db"
    with sqlite3.connect(other) as conn:
        conn.execute("CREATE TABLE customers (id INTEGER PRIMARY KEY, name TEXT)")
        conn.execute("INSERT INTO customers (name) VALUES ('Ada')")
    result = _run(["list", "--dsn", f"sqlite:///{other}"], workdir)
    assert result.returncode == 1, result.stderr
    assert result.stderr.count("\n") == 1
    assert _tables(other) == ["customers"]


def test_an_empty_sqlite_file_is_refused_and_stays_empty(workdir: Path) -> None:
    empty = workdir.parent / "empty.db"
    empty.touch()
    result = _run(["list", "--dsn", f"sqlite:///{empty}"], workdir)
    assert result.returncode == 1, result.stderr
    assert _tables(empty) == []


async def test_an_empty_database_of_either_backend_is_refused_and_left_without_tables(
    backend: str, fresh_dsn: str, workdir: Path
) -> None:
    result = await asyncio.to_thread(_run, ["list", "--dsn", fresh_dsn], workdir)
    assert result.returncode == 1, result.stderr
    assert result.stderr.count("\n") == 1
    if backend == "sqlite":
        assert not Path(fresh_dsn.removeprefix("sqlite:///")).exists()
        return
    import psycopg

    async with await psycopg.AsyncConnection.connect(fresh_dsn) as conn:
        cursor = await conn.execute(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = 'public'"
        )
        assert await cursor.fetchall() == []
