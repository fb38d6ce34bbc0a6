"""Steps that start together read their flows together (engine/flowinfo.py FlowReads).

A backlog drains breadth-first, so more flows are in flight than the FlowInfo cache holds and every step
misses it; the misses of one turn of the loop must cost one statement, not one each, and a flow that is
gone, a damaged row or a cancelled caller must not disturb the others.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import pytest

from dwarf.engine import Engine, TestProxy
from dwarf.engine.flowinfo import FlowInfo
from dwarf.engine.runtime import Runtime
from dwarf.store.base import Store
from tests.engine.graphs import chain
from tests.engine.test_wedges import _id, _raw


def _proxy() -> TestProxy:
    proxy = TestProxy()
    proxy.handle_graph("one", chain("one", "Noop"))

    async def noop(flow: Any) -> None:
        return None

    proxy.handle_task("Noop", noop)
    return proxy


def _count_reads(store: Store, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The names of the statements ``store.read`` runs from now on."""
    names: list[str] = []
    original = store.read

    async def counting(query: Any, **params: Any) -> Any:
        names.append(query)
        return await original(query, **params)

    monkeypatch.setattr(store, "read", counting)
    return names


async def _schema(dsn: str) -> None:
    """Migrate the database: an engine of 0 workers (which runs nothing here) never creates a schema."""
    async with Engine(host=_proxy(), dsn=dsn):
        pass


@contextlib.asynccontextmanager
async def _uncached_flows(dsn: str, count: int) -> AsyncIterator[tuple[Runtime, Store, list[int]]]:
    """An engine of 0 workers holding ``count`` new flows that its FlowInfo cache does not hold."""
    await _schema(dsn)
    async with Engine(host=_proxy(), dsn=dsn, workers=0) as engine:
        rt = engine.runtime
        store = rt.stores[0]
        ids = [_id(await engine.create("one")) for _ in range(count)]
        for flow_id in ids:
            rt.flow_cache.discard(store.shard, flow_id)
        yield rt, store, ids


async def test_misses_of_one_turn_are_read_in_one_statement(
    fresh_dsn: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with _uncached_flows(fresh_dsn, 40) as (rt, store, ids):
        reads = _count_reads(store, monkeypatch)
        infos = await asyncio.gather(*(rt.flow_info(store, flow_id) for flow_id in ids + ids[:5]))
        assert reads == ["get_flows"]
        assert [info.flow_id for info in infos if info is not None] == ids + ids[:5]
        assert all(isinstance(info, FlowInfo) for info in infos)
        # Cached now: asking again reads nothing, and the flows of one workflow share one parsed graph.
        assert await rt.flow_info(store, ids[0]) is infos[0]
        assert reads == ["get_flows"]
        assert len({id(info.graph) for info in infos if info is not None}) == 1


async def test_a_gone_flow_a_damaged_row_and_a_cancelled_caller_touch_only_themselves(
    fresh_dsn: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with _uncached_flows(fresh_dsn, 3) as (rt, store, (healthy, damaged, cancelled)):
        await _raw(fresh_dsn, f"UPDATE dwarf_flows SET graph = 'not json' WHERE flow_id = {damaged}")
        gone = max(healthy, damaged, cancelled) + 1000
        asks = [
            asyncio.ensure_future(rt.flow_info(store, flow_id))
            for flow_id in (healthy, damaged, cancelled, gone)
        ]
        await asyncio.sleep(0)  # every caller is waiting for the one read
        asks[2].cancel()
        results = await asyncio.gather(*asks, return_exceptions=True)
        assert isinstance(results[0], FlowInfo) and results[0].flow_id == healthy
        assert isinstance(results[1], Exception) and not isinstance(results[1], asyncio.CancelledError)
        assert isinstance(results[2], asyncio.CancelledError)
        assert results[3] is None
        # The cancelled caller's flow was read and cached all the same.
        assert rt.flow_cache.get(store.shard, cancelled) is not None


async def test_a_failed_read_fails_every_caller_of_the_turn_and_the_next_one_reads_again(
    fresh_dsn: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with _uncached_flows(fresh_dsn, 3) as (rt, store, ids):
        original = store.read

        async def failing(query: Any, **params: Any) -> Any:
            raise OSError("the disk went away")

        monkeypatch.setattr(store, "read", failing)
        results = await asyncio.gather(*(rt.flow_info(store, i) for i in ids), return_exceptions=True)
        assert all(isinstance(result, OSError) for result in results)
        monkeypatch.setattr(store, "read", original)
        infos = await asyncio.gather(*(rt.flow_info(store, i) for i in ids))
        assert [info.flow_id for info in infos if info is not None] == ids
