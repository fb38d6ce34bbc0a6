"""Listing and purging by Query (docs/operations.md#listing-flows): one total order with a keyset cursor,
so paging lists every flow exactly once on both backends and across shards; tampered cursors and text
filters that no database can take (NUL) are bad requests that change nothing; search is literal."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import itertools
import json
import sqlite3
from collections.abc import AsyncIterator
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import psycopg
import pytest
import pytest_asyncio

from dwarf import BadRequestError, FlowOptions, Query, Status
from dwarf.engine import Engine, TestProxy
from dwarf.testing import test_name_for as _test_name_for
from tests.conftest import PG_DSN
from tests.engine.graphs import WAIT, chain, noop, proxy_with


def _proxy() -> TestProxy:
    return proxy_with("job", chain("Job", "Work"), Work=noop)


async def _every_page(engine: Engine, query: Query) -> list[str]:
    """The flow keys of every page of ``query``, following the cursor to the end."""
    keys: list[str] = []
    cursor = ""
    while True:
        page, cursor = await engine.list(Query(**{**vars(query), "cursor": cursor}))
        keys += [summary.flow_key for summary in page]
        if not cursor:
            return keys


async def _all_in_one_page(engine: Engine, **filters: Any) -> list[str]:
    page, cursor = await engine.list(Query(limit=1000, **filters))
    assert cursor == ""
    return [summary.flow_key for summary in page]


def _flow_id(key: str) -> int:
    return int(key.split("-")[1])


# --- databases the test can also reach behind the engine's back ---


@pytest_asyncio.fixture
async def shard_dsns(backend: str, tmp_path: Path, request: pytest.FixtureRequest) -> AsyncIterator[str]:
    """A DSN with ``%d`` naming three empty databases (shards 1..3) of ``backend``; removed afterwards."""
    if backend == "sqlite":
        yield f"sqlite:///{tmp_path}/flows_%d.db"
        return
    prefix = "dwarf_listing_" + hashlib.sha256(_test_name_for(request.node.nodeid).encode()).hexdigest()[:12]
    parts = urlsplit(PG_DSN)
    admin = parts._replace(path="/postgres").geturl()
    names = [f"{prefix}_{shard}" for shard in (1, 2, 3)]
    async with await psycopg.AsyncConnection.connect(admin, autocommit=True) as conn:
        for name in names:
            await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'.encode())
            await conn.execute(f'CREATE DATABASE "{name}"'.encode())
    try:
        yield parts._replace(path=f"/{prefix}_%d").geturl()
    finally:
        async with await psycopg.AsyncConnection.connect(admin, autocommit=True) as conn:
            for name in names:
                await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'.encode())


async def _raw(dsn: str, statement: str) -> None:
    """Run one statement on one database behind the engine's back."""
    if dsn.startswith("sqlite:///"):
        conn = sqlite3.connect(dsn.removeprefix("sqlite:///"), isolation_level=None)
        try:
            conn.execute(statement)
        finally:
            conn.close()
        return
    async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as pg:
        await pg.execute(statement.encode())


# --- one total order, every flow exactly once ---


@pytest.mark.parametrize("limit", [1, 4, 7, 100])
async def test_paging_lists_every_flow_once_where_ids_and_creation_times_disagree(
    shard_dsns: str, limit: int
) -> None:
    # What concurrent inserts do on PostgreSQL (ids from a sequence, created_at from the clock at insert),
    # made deterministic: creation times that run against the ids, with ties.
    dsn = shard_dsns.replace("%d", "1")
    # Workers: an operations-only engine does not create a database.
    async with Engine(host=_proxy(), dsn=dsn) as engine:
        created = [(await engine.run("job", timeout=WAIT))[0] for _ in range(24)]
        await _raw(dsn, "UPDATE dwarf_flows SET created_at = 1000000 + (flow_id * 7) % 5")
        order = sorted(created, key=lambda key: (-((_flow_id(key) * 7) % 5), -_flow_id(key)))
        assert await _every_page(engine, Query(limit=limit)) == order


@pytest.mark.parametrize("limit", [1, 5, 7, 100])
async def test_paging_across_shards_lists_every_flow_once_where_creation_times_tie(
    shard_dsns: str, limit: int
) -> None:
    async with Engine(host=_proxy(), dsn=shard_dsns, num_shards=3) as engine:
        created = [(await engine.run("job", timeout=WAIT))[0] for _ in range(30)]
        assert {int(key.split("-")[0]) for key in created} == {1, 2, 3}
        for shard in (1, 2, 3):
            # Every shard's flows share two creation times, against their ids' order.
            await _raw(
                shard_dsns.replace("%d", str(shard)),
                "UPDATE dwarf_flows SET created_at = 1000000 + flow_id % 2",
            )

        def place(key: str) -> tuple[int, int, int]:
            shard, flow_id = int(key.split("-")[0]), _flow_id(key)
            return (-(flow_id % 2), shard, -flow_id)

        assert await _every_page(engine, Query(limit=limit)) == sorted(created, key=place)


async def _create_concurrently(engines: list[Engine], count: int) -> list[str]:
    """``count`` flows created at once, spread over ``engines`` (replicas)."""
    return list(await asyncio.gather(*(engines[n % len(engines)].create("job") for n in range(count))))


def _newest_first(created: list[datetime]) -> bool:
    return all(a >= b for a, b in itertools.pairwise(created))


@pytest.mark.parametrize("limit", [7, 50, 100])
async def test_concurrently_created_flows_of_two_replicas_are_each_listed_once(
    make_engine: Any, limit: int
) -> None:
    proxy = _proxy()
    replicas = [await make_engine(proxy, workers=8, workers_per_conn=1) for _ in range(2)]
    created = await _create_concurrently(replicas, 600)
    paged = await _every_page(replicas[0], Query(limit=limit))
    assert len(paged) == 600 and set(paged) == set(created)
    assert paged == await _all_in_one_page(replicas[1])
    page, _ = await replicas[0].list(Query(limit=1000))
    assert _newest_first([summary.created_at for summary in page])


@pytest.mark.parametrize("limit", [7, 50])
async def test_concurrently_created_flows_of_three_shards_are_each_listed_once(
    make_engine: Any, limit: int
) -> None:
    proxy = _proxy()
    replicas = [await make_engine(proxy, num_shards=3, workers=6, workers_per_conn=1) for _ in range(2)]
    created = await _create_concurrently(replicas, 600)
    paged = await _every_page(replicas[1], Query(limit=limit))
    assert len(paged) == 600 and set(paged) == set(created)
    assert paged == await _all_in_one_page(replicas[0])


@pytest.mark.parametrize("num_shards", [1, 3])
async def test_flows_created_while_paging_are_never_listed_twice(make_engine: Any, num_shards: int) -> None:
    engine = await make_engine(_proxy(), num_shards=num_shards, workers=0)
    before = [await engine.create("job") for _ in range(20)]
    first, cursor = await engine.list(Query(limit=6))
    meanwhile = await _create_concurrently([engine], 15)
    keys = [summary.flow_key for summary in first]
    while cursor:
        page, cursor = await engine.list(Query(limit=6, cursor=cursor))
        keys += [summary.flow_key for summary in page]
    assert len(keys) == len(set(keys))
    assert set(before) <= set(keys) <= set(before) | set(meanwhile)


async def test_paging_with_filters_lists_each_matching_flow_once(make_engine: Any) -> None:
    engine = await make_engine(_proxy(), num_shards=3, workers=0)
    keys = [
        await engine.create("job", options=FlowOptions(fairness_key="even" if n % 2 == 0 else "odd"))
        for n in range(30)
    ]
    even = await _every_page(engine, Query(limit=4, fairness_key="even"))
    assert sorted(even) == sorted(keys[::2])
    assert even == await _all_in_one_page(engine, fairness_key="even")


async def test_the_last_page_has_no_cursor(make_engine: Any) -> None:
    engine = await make_engine(_proxy(), workers=0)
    for _ in range(6):
        await engine.create("job")
    first, cursor = await engine.list(Query(limit=3))
    assert len(first) == 3 and cursor
    second, cursor = await engine.list(Query(limit=3, cursor=cursor))
    assert len(second) == 3 and cursor == ""


# --- tampered cursors ---


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _cursor_of(body: Any) -> str:
    return _b64(json.dumps(body).encode())


TAMPERED_CURSORS = {
    "random text": "%%%not-a-cursor%%%",
    "bad base64 padding": "abcde",
    "non-ascii": "\u00e9t\u00e9",
    "very long": "A" * 1_000_000,
    "huge integer": _b64(b"9" * 5000),
    "huge integer in a field": _b64(b'{"c":1.5,"s":1,"i":' + b"9" * 5000 + b"}"),
    "deeply nested": _b64(b"[" * 100_000 + b"]" * 100_000),
    "nested within the length bound": _b64(b"[" * 70 + b"]" * 70),
    "a list": _cursor_of([1.5, 1, 1]),
    "a number": _cursor_of(12),
    "a string": _cursor_of("x"),
    "the old shard-to-id map": _cursor_of({"1": 5}),
    "old map with an infinite id": _b64(b'{"1":1e999}'),
    "old map with a NaN id": _b64(b'{"1":NaN}'),
    "missing field": _cursor_of({"c": 1.5, "s": 1}),
    "extra field": _cursor_of({"c": 1.5, "s": 1, "i": 1, "x": 0}),
    "nested value": _cursor_of({"c": [1.5], "s": 1, "i": 1}),
    "infinite time": _b64(b'{"c":1e999,"s":1,"i":1}'),
    "NaN time": _b64(b'{"c":NaN,"s":1,"i":1}'),
    "integer time": _cursor_of({"c": 15, "s": 1, "i": 1}),
    "string time": _cursor_of({"c": "1.5", "s": 1, "i": 1}),
    "negative shard": _cursor_of({"c": 1.5, "s": -1, "i": 1}),
    "shard zero": _cursor_of({"c": 1.5, "s": 0, "i": 1}),
    "absurd shard": _cursor_of({"c": 1.5, "s": 10**30, "i": 1}),
    "shard the engine lacks": _cursor_of({"c": 1.5, "s": 2, "i": 1}),
    "boolean shard": _cursor_of({"c": 1.5, "s": True, "i": 1}),
    "float shard": _cursor_of({"c": 1.5, "s": 1.0, "i": 1}),
    "id zero": _cursor_of({"c": 1.5, "s": 1, "i": 0}),
    "negative id": _cursor_of({"c": 1.5, "s": 1, "i": -5}),
    "id beyond 64 bits": _cursor_of({"c": 1.5, "s": 1, "i": 2**63}),
    "invalid UTF-8": _b64(b'{"c":1.5,"s":1,"i":1\xff}'),
    "NUL": "eyJjIjoxLjUsInMiOjEsImkiOjF9\x00",
}


@pytest.mark.parametrize("cursor", list(TAMPERED_CURSORS.values()), ids=list(TAMPERED_CURSORS))
async def test_a_tampered_cursor_is_a_bad_request(make_engine: Any, cursor: str) -> None:
    engine = await make_engine(_proxy(), workers=0)
    await engine.create("job")
    with pytest.raises(BadRequestError):
        await engine.list(Query(cursor=cursor))


@pytest.mark.parametrize("cursor", [b"abc", 12, ["x"]], ids=repr)
async def test_a_cursor_that_is_not_a_string_is_a_bad_request(make_engine: Any, cursor: Any) -> None:
    engine = await make_engine(_proxy(), workers=0)
    with pytest.raises(BadRequestError):
        await engine.list(Query(cursor=cursor))


async def test_a_well_formed_cursor_past_every_flow_gives_an_empty_last_page(make_engine: Any) -> None:
    engine = await make_engine(_proxy(), workers=0)
    await engine.create("job")
    assert await engine.list(Query(cursor=_cursor_of({"c": 1.5, "s": 1, "i": 1}))) == ([], "")


# --- NUL and literal search ---


def _query_with(field: str, value: Any) -> Query:
    query = Query()
    setattr(query, field, value)
    return query


TEXT_FILTERS = [
    "status",
    "workflow_url",
    "workflow_name",
    "thread_key",
    "task_name",
    "fairness_key",
    "search",
]


@pytest.mark.parametrize("field", TEXT_FILTERS)
async def test_a_nul_in_a_text_filter_of_list_is_a_bad_request(make_engine: Any, field: str) -> None:
    engine = await make_engine(_proxy(), workers=0)
    await engine.create("job", options=FlowOptions(fairness_key="tenant"))
    with pytest.raises(BadRequestError, match="NUL"):
        await engine.list(_query_with(field, "\x00"))


@pytest.mark.parametrize("field", TEXT_FILTERS)
async def test_purge_with_a_nul_in_a_text_filter_deletes_nothing(make_engine: Any, field: str) -> None:
    engine = await make_engine(_proxy())
    keys = [(await engine.run("job", timeout=WAIT))[0] for _ in range(3)]
    with pytest.raises(BadRequestError, match="NUL"):
        await engine.purge(_query_with(field, "job\x00x"))
    assert sorted(await _all_in_one_page(engine)) == sorted(keys)
    assert [(await engine.snapshot(key)).status for key in keys] == [Status.COMPLETED] * 3


async def test_a_non_string_text_filter_is_a_bad_request(make_engine: Any) -> None:
    engine = await make_engine(_proxy(), workers=0)
    with pytest.raises(BadRequestError, match="search must be a string"):
        await engine.list(Query(search=None))  # type: ignore[arg-type]


LITERALS = ["a%b", "a_b", "a!b", "a\\b", "a!%b", "a\\%b", "axb", "ab"]


@pytest.mark.parametrize(
    ("search", "matches"),
    [
        ("a%b", {"a%b"}),
        ("%", {"a%b", "a!%b", "a\\%b"}),
        ("a_b", {"a_b"}),
        ("_", {"a_b"}),
        ("a!b", {"a!b"}),
        ("!", {"a!b", "a!%b"}),
        ("!%", {"a!%b"}),
        ("a\\b", {"a\\b"}),
        ("\\", {"a\\b", "a\\%b"}),
        ("\\%", {"a\\%b"}),
        ("ab", {"ab"}),
    ],
    # Sorted: a set's repr follows string hashing, which differs between processes (pytest-xdist workers
    # must collect the same ids).
    ids=lambda value: repr(sorted(value) if isinstance(value, set) else value),
)
async def test_search_matches_wildcards_and_escapes_literally(
    make_engine: Any, search: str, matches: set[str]
) -> None:
    engine = await make_engine(_proxy(), workers=0)
    tenant_of = {await engine.create("job", options=FlowOptions(fairness_key=t)): t for t in LITERALS}
    found = await _all_in_one_page(engine, search=search)
    assert {tenant_of[key] for key in found} == matches


async def test_purge_by_a_search_with_wildcards_purges_only_literal_matches(make_engine: Any) -> None:
    engine = await make_engine(_proxy())
    tenant_of = {}
    for tenant in LITERALS:
        key, _ = await engine.run("job", options=FlowOptions(fairness_key=tenant), timeout=WAIT)
        tenant_of[key] = tenant
    assert await engine.purge(Query(search="%")) == 3
    assert {tenant_of[key] for key in await _all_in_one_page(engine)} == set(LITERALS) - {
        "a%b",
        "a!%b",
        "a\\%b",
    }
