"""Every timeout the API takes bounds the caller's wait, whatever the database does (hardening issue,
item 8): ``wait`` with a timeout and ``shutdown`` with its drain timeout return on time while the database
is locked by someone else, instead of when it answers again."""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest

from dwarf import Engine, Flow
from tests.engine.graphs import WAIT, chain, proxy_with, until


@asynccontextmanager
async def _database_locked(dsn: str) -> AsyncIterator[None]:
    """Hold the database so that the engine's statements wait: SQLite's write lock (the store's one thread
    then sits in its busy timeout, and every unit queued behind it waits too), PostgreSQL's table locks."""
    if dsn.startswith("sqlite"):
        conn = sqlite3.connect(dsn.removeprefix("sqlite:///"), isolation_level=None)
        conn.execute("BEGIN IMMEDIATE")
        try:
            yield
        finally:
            conn.execute("ROLLBACK")
            conn.close()
        return
    import psycopg

    async with await psycopg.AsyncConnection.connect(dsn) as conn:
        await conn.execute("LOCK TABLE dwarf_flows, dwarf_steps IN ACCESS EXCLUSIVE MODE")
        try:
            yield
        finally:
            await conn.rollback()


def _blocking_host() -> Any:
    entered = asyncio.Event()

    async def hold(flow: Flow) -> None:
        entered.set()
        await asyncio.sleep(WAIT)

    proxy = proxy_with("hold", chain("Hold", "A"), A=hold)
    proxy.entered = entered  # type: ignore[attr-defined]
    return proxy


async def test_wait_with_a_timeout_returns_on_time_while_the_database_is_locked(fresh_dsn: str) -> None:
    proxy = _blocking_host()
    engine = Engine(host=proxy, dsn=fresh_dsn)
    await engine.startup()
    try:
        key = await engine.create("hold")
        await until(proxy.entered.is_set)
        async with _database_locked(fresh_dsn):
            await asyncio.sleep(1.2)  # the claimer's next poll now waits on the lock, ahead of our reads
            started = time.monotonic()
            with pytest.raises(TimeoutError):
                await engine.wait(key, timeout=1)
            assert time.monotonic() - started < 2.0
    finally:
        await engine.shutdown(drain_timeout=0)


async def test_shutdown_is_bounded_by_its_drain_timeout_while_the_database_is_locked(fresh_dsn: str) -> None:
    proxy = _blocking_host()
    engine = Engine(host=proxy, dsn=fresh_dsn)
    await engine.startup()
    try:
        for _ in range(4):
            await engine.create("hold")
        await until(proxy.entered.is_set)
        async with _database_locked(fresh_dsn):
            await asyncio.sleep(1.2)
            started = time.monotonic()
            await engine.shutdown(drain_timeout=0.5)
            elapsed = time.monotonic() - started
    finally:
        await engine.shutdown(drain_timeout=0)
    # The drain timeout, then a bounded hand-back of the four running steps and closing the store.
    assert elapsed < 0.5 + 8.0
