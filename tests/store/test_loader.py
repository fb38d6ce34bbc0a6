"""The named-statement loader and its helpers (``dwarf.store.base``), and how each dialect binds parameters.

Covered: parsing ``-- name:`` files, a dialect's statements overriding the shared ones, ``{_fragment}`` and
``{now}`` expansion, ``split_statements``, PostgreSQL's ``:name`` to ``%(name)s`` rewrite (checked as text
and, when a server is configured, through psycopg), SQLite's binding of ``:name`` by the store, and the
migration scripts of both dialects. Assertions about the real .sql files are derived from the files, so
that they keep holding as statements are added, and fail when the loader stops doing its job.
"""

from __future__ import annotations

import re
import sqlite3
from collections.abc import AsyncIterator
from importlib import resources
from typing import cast
from urllib.parse import urlsplit

import pytest
import pytest_asyncio

from dwarf.errors import StoreError
from dwarf.store.base import (
    _parse_query_file,
    load_queries,
    migration_scripts,
    missing_migrations,
    split_statements,
)
from dwarf.store.postgres import to_psycopg_params
from dwarf.store.sqlite import SQLiteStore
from dwarf.store.statements import StatementName
from tests.conftest import PG_AVAILABLE, PG_DSN, REQUIRE_PG

DIALECTS = ["sqlite", "postgres"]
# A stand-in for the database clock that cannot occur in the files by accident.
NOW = "NOW_EXPRESSION()"
# The test query of ``sqlite_store``: not one of dwarf's statements, hence the cast.
TWO = cast(StatementName, "two")
_FRAGMENT = re.compile(r"\{(_[a-z][a-z0-9_]*)\}")


def query_file(name: str) -> dict[str, str]:
    """One of the packaged query files, parsed (the shared ``queries.sql`` or a dialect's)."""
    return _parse_query_file((resources.files("dwarf.store") / name).read_text(encoding="utf-8"))


def expand(sql: str, fragments: dict[str, str]) -> str:
    """What the loader should make of ``sql``: fragments spliced in (and those they splice in), then
    ``{now}`` replaced."""
    return _spliced(sql, fragments).replace("{now}", NOW)


def _spliced(sql: str, fragments: dict[str, str]) -> str:
    """``sql`` with its fragments spliced in, nested ones too."""
    while _FRAGMENT.search(sql):
        sql = _FRAGMENT.sub(lambda match: fragments[match.group(1)], sql)
    return sql


# --- _parse_query_file ---


def test_parse_splits_on_headers_and_drops_comments_preamble_and_the_final_semicolon() -> None:
    text = (
        "-- A preamble about the file; it belongs to no statement.\n"
        "SELECT 'preamble'\n"
        "\n"
        "-- name: first\n"
        "-- What the first statement does.\n"
        "SELECT 1\n"
        "  -- an indented comment line\n"
        "  FROM t;\n"
        "\n"
        "--name:_piece\n"
        "a = :a\n"
        "-- name: multi\n"
        "UPDATE t SET a = 1;\n"
        "SELECT 'a;b' AS x;\n"
    )
    assert _parse_query_file(text) == {
        "first": "SELECT 1\n  FROM t",
        "_piece": "a = :a",
        # Only the trailing ";" goes: the statements of a multi-statement query keep theirs.
        "multi": "UPDATE t SET a = 1;\nSELECT 'a;b' AS x",
    }


def test_parse_refuses_a_name_defined_twice() -> None:
    with pytest.raises(ValueError, match="'twice'"):
        _parse_query_file("-- name: twice\nSELECT 1\n-- name: other\nSELECT 2\n-- name: twice\nSELECT 3\n")


# --- load_queries ---


def test_a_dialect_statement_overrides_the_shared_one() -> None:
    shared, postgres = query_file("queries.sql"), query_file("queries_postgres.sql")
    fragments = {name: sql for name, sql in {**shared, **postgres}.items() if name.startswith("_")}
    overridden = set(shared) & set(postgres)
    # A real override: the shared version (enough for SQLite) takes no row lock, PostgreSQL's does.
    assert "get_flow_for_update" in overridden
    loaded = load_queries("postgres", NOW)
    for name in overridden:
        assert shared[name] != postgres[name], name
        assert loaded[name] == expand(postgres[name], fragments), name
    assert loaded["get_flow_for_update"].endswith("FOR UPDATE")
    # Where a dialect has no version of its own, the shared one is used.
    assert load_queries("sqlite", NOW)["get_flow_for_update"] == expand(
        shared["get_flow_for_update"], fragments
    )


@pytest.mark.parametrize("dialect", DIALECTS)
def test_fragments_are_spliced_in_and_not_statements(dialect: str) -> None:
    raw = {**query_file("queries.sql"), **query_file(f"queries_{dialect}.sql")}
    fragments = {name: sql for name, sql in raw.items() if name.startswith("_")}
    assert fragments, "the files define no fragment: this test checks nothing"
    loaded = load_queries(dialect, NOW)
    assert set(loaded) == {name for name in raw if not name.startswith("_")}
    users = [name for name in loaded if _FRAGMENT.search(raw[name])]
    assert users, "no statement uses a fragment: this test checks nothing"
    for name in users:
        for fragment in _FRAGMENT.findall(raw[name]):
            assert expand(fragments[fragment], fragments) in loaded[name], (name, fragment)
    nested = [name for name, sql in fragments.items() if _FRAGMENT.search(sql)]
    assert nested, "no fragment splices in another: nesting is not checked"
    leftovers = sorted(name for name, sql in loaded.items() if "{_" in sql)
    assert leftovers == []


@pytest.mark.parametrize("dialect", DIALECTS)
def test_now_is_replaced_everywhere(dialect: str) -> None:
    raw = {**query_file("queries.sql"), **query_file(f"queries_{dialect}.sql")}
    fragments = {name: sql for name, sql in raw.items() if name.startswith("_")}
    loaded = load_queries(dialect, NOW)
    assert [name for name, sql in loaded.items() if "{now}" in sql] == []
    for name, sql in loaded.items():
        # Every {now} of the statement and of the fragments it uses (nested ones too) becomes one NOW.
        expected = _spliced(raw[name], fragments).count("{now}")
        assert sql.count(NOW) == expected, name
    assert any(NOW in sql for sql in loaded.values())


# --- split_statements ---


def test_split_statements_splits_at_line_ends_only() -> None:
    script = (
        "-- a migration; its comment lines go\n"
        "CREATE TABLE t (a TEXT DEFAULT 'x;y');\n"
        "INSERT INTO t VALUES ('1'); INSERT INTO t VALUES ('2');   \n"
        "\n"
        "-- a comment that ends in a semicolon;\n"
        ";\n"
        "CREATE INDEX i ON t (a)\n"
    )
    assert split_statements(script) == [
        "CREATE TABLE t (a TEXT DEFAULT 'x;y')",
        "INSERT INTO t VALUES ('1'); INSERT INTO t VALUES ('2')",
        "CREATE INDEX i ON t (a)",
    ]
    assert split_statements("-- nothing but comments;\n\n;\n") == []


def test_the_sqlite_queries_split_into_complete_statements() -> None:
    """SQLite's own tokenizer agrees that no piece the store runs was cut inside a statement or literal."""
    pieces = {name: split_statements(sql) for name, sql in load_queries("sqlite", NOW).items()}
    assert len(pieces["finish_and_continue"]) == 3  # a real multi-statement query
    for name, statements in pieces.items():
        assert statements, name
        for statement in statements:
            assert sqlite3.complete_statement(statement + ";"), (name, statement)


# --- PostgreSQL parameters ---


@pytest.mark.parametrize(
    ("sql", "expected"),
    [
        ("WHERE flow_id = :flow_id AND x = :flow_id", "WHERE flow_id = %(flow_id)s AND x = %(flow_id)s"),
        ("(b.value ->> 'ordinal')::integer", "(b.value ->> 'ordinal')::integer"),
        (":step_ids::json", "%(step_ids)s::json"),
        ("a % b LIKE '50%'", "a %% b LIKE '50%%'"),
        # Inside a string literal, :name is text (a doubled quote does not end the literal).
        ("SELECT ':flow_id', 'it''s :x', :y", "SELECT ':flow_id', 'it''s :x', %(y)s"),
    ],
)
def test_to_psycopg_params(sql: str, expected: str) -> None:
    assert to_psycopg_params(sql) == expected


def test_the_postgres_statements_hold_only_what_the_rewrite_understands() -> None:
    """to_psycopg_params knows '...' literals and :: casts only. A double-quoted identifier, a dollar-quoted
    or E'...' string, or a comment inside a statement would have :name or % rewritten inside it (or a quote
    paired wrongly): none of our statements may hold one, and every :name must become a parameter."""
    for name, sql in load_queries("postgres", NOW).items():
        for construct in ('"', "$", "E'", "\\", "--", "/*"):
            assert construct not in sql, (name, construct)
        rewritten = to_psycopg_params(sql)
        assert re.search(r"(?<![:\w]):[a-zA-Z_]", re.sub(r"'(?:[^']|'')*'", "''", rewritten)) is None, name
        assert set(re.findall(r"%\((\w+)\)s", rewritten)) == set(
            re.findall(r"(?<![:\w]):([a-zA-Z_]\w*)", re.sub(r"'(?:[^']|'')*'", "''", sql))
        ), name


async def test_psycopg_runs_a_rewritten_statement_as_written() -> None:
    if not PG_AVAILABLE:
        if REQUIRE_PG:
            pytest.fail("DWARF_REQUIRE_POSTGRES=1 but PostgreSQL (DWARF_TEST_DSN) is not reachable")
        pytest.skip("PostgreSQL not configured (set DWARF_TEST_DSN)")
    import psycopg
    from psycopg.rows import dict_row

    sql = to_psycopg_params(
        "SELECT '50%' AS pct, ':n' AS literal, CAST(:n AS integer)::text AS n, :n % 7 AS m"
    )
    admin = urlsplit(PG_DSN)._replace(path="/postgres").geturl()
    async with await psycopg.AsyncConnection.connect(admin, autocommit=True, row_factory=dict_row) as conn:
        cursor = await conn.execute(sql, {"n": 40, "unused": 1})
        assert await cursor.fetchall() == [{"pct": "50%", "literal": ":n", "n": "40", "m": 5}]


# --- SQLite parameters, as the store binds them ---


@pytest_asyncio.fixture
async def sqlite_store() -> AsyncIterator[SQLiteStore]:
    """An open in-memory SQLite store with a two-statement test query, ``two``."""
    store = SQLiteStore(":memory:")
    await store.open()
    store._queries[TWO] = split_statements("SELECT :a AS a, ':b' AS literal WHERE :a > 0;\nSELECT :b AS b")
    try:
        yield store
    finally:
        await store.close()


async def test_sqlite_gives_every_statement_the_whole_parameter_dict(sqlite_store: SQLiteStore) -> None:
    # Each statement of a query uses its own subset of the parameters: the others are ignored, and the
    # answer is the rows of the first statement that returns any.
    assert await sqlite_store.read(TWO, a=1, b=2) == [{"a": 1, "literal": ":b"}]
    assert await sqlite_store.read(TWO, a=0, b=2) == [{"b": 2}]
    assert await sqlite_store.read("get_flow", flow_id=1, not_a_parameter="x") == []


async def test_sqlite_binding_failures_are_store_errors(sqlite_store: SQLiteStore) -> None:
    with pytest.raises(StoreError) as missing:
        await sqlite_store.read(TWO, a=1)
    assert isinstance(missing.value.__cause__, sqlite3.ProgrammingError)
    assert ":b" in str(missing.value)
    assert not missing.value.transient  # the same call fails the same way every time
    with pytest.raises(StoreError) as too_big:
        await sqlite_store.read(TWO, a=2**64, b=1)
    assert isinstance(too_big.value.__cause__, OverflowError)
    assert not too_big.value.transient


# --- migrations ---


@pytest.mark.parametrize("dialect", DIALECTS)
def test_migrations_are_numbered_from_one_without_gaps(dialect: str) -> None:
    scripts = migration_scripts(dialect)
    versions = [version for version, _, _ in scripts]
    assert versions == list(range(1, len(scripts) + 1))
    for version, name, script in scripts:
        assert name.startswith(f"{version:03d}_") and name.endswith(".sql"), name
        assert split_statements(script), name


def test_both_dialects_have_the_same_migrations() -> None:
    sqlite = {version for version, _, _ in migration_scripts("sqlite")}
    postgres = {version for version, _, _ in migration_scripts("postgres")}
    assert sqlite == postgres


@pytest.mark.parametrize("dialect", DIALECTS)
def test_missing_migrations_names_exactly_the_absent_ones(dialect: str) -> None:
    names = {version: name for version, name, _ in migration_scripts(dialect)}
    assert len(names) >= 2
    assert missing_migrations(dialect, set()) == list(names.values())
    assert missing_migrations(dialect, set(names)) == []
    # Versions unknown to this code (a newer engine migrated the database) are no concern of its own.
    assert missing_migrations(dialect, set(names) | {len(names) + 1}) == []
    last = max(names)
    assert missing_migrations(dialect, set(names) - {1, last}) == [names[1], names[last]]
