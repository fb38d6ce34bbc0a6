"""A PostgreSQL server that goes away (hardening issue, item 8): the caller's timeouts still hold.

``wait(timeout=...)`` answers on time, ``shutdown()`` returns in about its drain timeout instead of
waiting on every connection attempt, and once the server is back the engine carries on where it was.
"""

from __future__ import annotations

import asyncio
import time

import pytest

from dwarf import Flow, Status, StoreError
from dwarf.engine import Engine
from tests.engine.graphs import WAIT, chain, proxy_with, until
from tests.process.pgcluster import ThrowawayPostgres

pytestmark = pytest.mark.slow


def _holding_proxy(entered: list[str], release: asyncio.Event) -> object:
    async def hold(flow: Flow) -> None:
        entered.append(flow.flow_key)
        await release.wait()

    return proxy_with("hold", chain("Hold", "A"), A=hold)


async def test_wait_and_shutdown_keep_their_bounds_while_the_server_is_down(
    throwaway_postgres: ThrowawayPostgres,
) -> None:
    dsn = throwaway_postgres.create_database("down")
    entered: list[str] = []
    release = asyncio.Event()
    engine = Engine(host=_holding_proxy(entered, release), dsn=dsn)
    await engine.startup()
    try:
        keys = [await engine.create("hold") for _ in range(4)]
        await until(lambda: len(entered) == 4)
        throwaway_postgres.halt()
        started = time.monotonic()
        # On time, and typed: the timeout, or the store's own error when the database refuses at once.
        with pytest.raises((TimeoutError, StoreError)) as raised:
            await engine.wait(keys[0], timeout=1)
        assert time.monotonic() - started < 2.5
        assert not isinstance(raised.value, StoreError) or raised.value.transient
        started = time.monotonic()
        await engine.shutdown(drain_timeout=1)
        elapsed = time.monotonic() - started
    finally:
        release.set()
        await engine.shutdown(drain_timeout=0)
    # The drain timeout, a bounded hand-back of the four running steps, and closing the pool.
    assert elapsed < 1 + 5  # measured: 3.0 s (it was 30 s per unfinished step)


async def test_flows_go_on_once_the_server_is_back(throwaway_postgres: ThrowawayPostgres) -> None:
    dsn = throwaway_postgres.create_database("back")
    entered: list[str] = []
    release = asyncio.Event()
    engine = Engine(host=_holding_proxy(entered, release), dsn=dsn)
    await engine.startup()
    try:
        key = await engine.create("hold")
        await until(lambda: len(entered) == 1)
        throwaway_postgres.halt()
        release.set()  # the task ends while the server is down: its commit fails, the step runs again
        await asyncio.sleep(1.0)
        throwaway_postgres.start_again()
        outcome = await engine.wait(key, timeout=WAIT * 3)
    finally:
        await engine.shutdown(drain_timeout=0)
    assert outcome.status == Status.COMPLETED
