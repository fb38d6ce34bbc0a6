"""The claim under limits is serialized across connections (docs/limits.md): on PostgreSQL a second
claim waits at ``lock_limits`` for the first to commit, then reads the slots the first one took. Without
the lock both would see the same free slot (each skips the rows the other locked) and start a step each.
SQLite needs no lock of its own: its writers are serialized by BEGIN IMMEDIATE."""

from __future__ import annotations

import asyncio
from typing import Any

import psycopg
import pytest

from dwarf import Engine, FlowOptions, TestProxy
from dwarf.store.base import load_queries
from dwarf.store.postgres import to_psycopg_params
from tests.engine.graphs import chain, noop

NOW = "extract(epoch from clock_timestamp())"


@pytest.mark.parametrize("backend", ["postgres"], indirect=True)
async def test_a_claim_under_limits_waits_for_the_one_before_and_sees_its_slots(fresh_dsn: str) -> None:
    proxy = TestProxy()
    proxy.handle_graph("work", chain("Work", "W"))
    proxy.handle_task("W", noop)
    async with Engine(host=proxy, dsn=fresh_dsn):
        pass  # the schema
    engine = Engine(host=proxy, dsn=fresh_dsn, workers=0)  # creates steps but claims none
    await engine.startup()
    try:
        await engine.limit("a", concurrency=1)
        for _ in range(3):
            await engine.create("work", {}, FlowOptions(fairness_key="a"))
    finally:
        await engine.shutdown()
    queries = {name: to_psycopg_params(sql) for name, sql in load_queries("postgres", NOW).items()}

    async def claim(conn: psycopg.AsyncConnection[Any], token: str) -> list[Any]:
        await conn.execute(queries["lock_limits"])
        parameters = {"lease_token": token, "lease_seconds": 30, "limit": 3}
        return await (await conn.execute(queries["claim_limited_steps"], parameters)).fetchall()

    first = await psycopg.AsyncConnection.connect(fresh_dsn)
    second = await psycopg.AsyncConnection.connect(fresh_dsn)
    try:
        assert len(await claim(first, "first")) == 1  # the slot; the transaction stays open

        async def claim_and_commit() -> list[Any]:
            rows = await claim(second, "second")
            await second.commit()
            return rows

        later = asyncio.create_task(claim_and_commit())
        await asyncio.sleep(0.3)
        assert not later.done(), "the second claim did not wait for the first"
        await first.commit()
        assert await asyncio.wait_for(later, 10) == []  # the slot is taken: nothing more starts
    finally:
        await first.close()
        await second.close()
