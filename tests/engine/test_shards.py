"""Flows spread over several databases (docs/design.md#shards-and-placement): every operation finds a
flow by its key's shard, listing and purging span the shards, related flows stay together, and a dead shard is
reported and skipped without breaking the others."""

from __future__ import annotations

import collections
from typing import Any
from urllib.parse import urlsplit

import psycopg
import pytest

from dwarf import Flow, Query, Status
from dwarf.engine import Engine, TestProxy
from tests.engine.graphs import WAIT, chain, for_each, incrementer, proxy_with

SHARDS = 3


def _shard_of(key: str) -> int:
    return int(key.split("-", 1)[0])


def _proxy() -> TestProxy:
    proxy = proxy_with("count", chain("count", "A", "B"), A=incrementer(), B=incrementer())

    async def ask(flow: Flow) -> None:
        answer = flow.interrupt({"question": "go on?"})
        flow.set("answer", answer.get("answer", ""))

    proxy.handle_graph("ask", chain("ask", "Ask"))
    proxy.handle_task("Ask", ask)

    async def parent(flow: Flow) -> None:
        result = flow.subgraph("count", {"count": 10})
        flow.set("child_count", result["count"])

    proxy.handle_graph("parent", chain("parent", "Parent"))
    proxy.handle_task("Parent", parent)
    proxy.handle_graph("fan", for_each("fan"))
    proxy.handle_task("Split", incrementer("splits"))
    proxy.handle_task("Work", incrementer("work"))
    proxy.handle_task("Join", incrementer("joins"))
    return proxy


async def _sharded(make_engine: Any, **settings: Any) -> Engine:
    engine: Engine = await make_engine(_proxy(), num_shards=SHARDS, **settings)
    return engine


async def test_new_flows_are_spread_over_every_shard(make_engine: Any) -> None:
    engine = await _sharded(make_engine)
    keys = [await engine.create("count") for _ in range(60)]
    placed = collections.Counter(_shard_of(key) for key in keys)
    # Uniform placement: each shard's chance of getting none of 60 flows is (2/3)^60, about 3e-11.
    assert sorted(placed) == [1, 2, 3]  # shards are numbered from 1 (0 means "any" in a Query)
    for key in keys:
        assert (await engine.wait(key, timeout=WAIT)).state == {"count": 2}


async def test_every_operation_finds_a_flow_on_its_own_shard(make_engine: Any) -> None:
    engine = await _sharded(make_engine)
    keys = [await engine.create("ask") for _ in range(12)]
    assert len({_shard_of(key) for key in keys}) > 1
    for key in keys:
        outcome = await engine.wait(key, timeout=WAIT)
        assert outcome.status == Status.INTERRUPTED
        assert (await engine.snapshot(key)).interrupt_payload == {"question": "go on?"}
        steps = await engine.history(key)
        assert (await engine.step(steps[0].step_key)).task_name == "Ask"
        await engine.resume(key, {"answer": key[-4:]})
    for key in keys:
        outcome = await engine.wait(key, timeout=WAIT)
        assert (outcome.status, outcome.state["answer"]) == (Status.COMPLETED, key[-4:])


async def test_a_key_naming_a_shard_the_engine_does_not_have_is_not_found(make_engine: Any) -> None:
    from dwarf import NotFoundError

    engine = await _sharded(make_engine)
    key = await engine.create("count")
    foreign = f"{SHARDS + 4}-{key.split('-', 1)[1]}"
    with pytest.raises(NotFoundError):
        await engine.snapshot(foreign)


async def test_listing_pages_through_every_shard_once(make_engine: Any) -> None:
    engine = await _sharded(make_engine)
    keys = {await engine.create("count") for _ in range(31)}
    for key in keys:
        await engine.wait(key, timeout=WAIT)
    seen: list[str] = []
    cursor = ""
    for _ in range(20):
        page, cursor = await engine.list(Query(limit=7, cursor=cursor))
        assert len(page) <= 7
        seen += [summary.flow_key for summary in page]
        if not cursor:
            break
    assert sorted(seen) == sorted(keys)
    only_one, _ = await engine.list(Query(shard=1, limit=100))
    assert {_shard_of(summary.flow_key) for summary in only_one} <= {1}
    assert len(only_one) == sum(_shard_of(key) == 1 for key in keys)


async def test_purge_removes_matching_flows_from_every_shard(make_engine: Any) -> None:
    engine = await _sharded(make_engine)
    done = [await engine.create("count") for _ in range(15)]
    for key in done:
        await engine.wait(key, timeout=WAIT)
    waiting = [await engine.create("ask") for _ in range(6)]
    for key in waiting:
        await engine.wait(key, timeout=WAIT)
    assert await engine.purge(Query(status="completed")) == 15
    page, _ = await engine.list(Query(limit=100))
    assert sorted(summary.flow_key for summary in page) == sorted(waiting)


async def test_child_flows_forks_and_thread_continuations_stay_on_their_flows_shard(make_engine: Any) -> None:
    engine = await _sharded(make_engine)
    parents = [await engine.create("parent") for _ in range(6)]
    for key in parents:
        outcome = await engine.wait(key, timeout=WAIT)
        assert outcome.state["child_count"] == 12
        steps = await engine.history(key)
        forked = await engine.fork(steps[0].step_key)
        assert _shard_of(forked) == _shard_of(key)
        assert (await engine.wait(forked, timeout=WAIT)).state["child_count"] == 12
    threaded = [await engine.create("count") for _ in range(6)]
    for key in threaded:
        await engine.wait(key, timeout=WAIT)
    page, _ = await engine.list(Query(workflow_url="count", limit=100))
    thread_of = {summary.flow_key: summary.thread_key for summary in page}
    for key in threaded:
        follow_up = await engine.continue_thread(thread_of[key])
        assert _shard_of(follow_up) == _shard_of(key)
        assert (await engine.wait(follow_up, timeout=WAIT)).state == {"count": 4}
    children, _ = await engine.list(Query(include_subgraphs=True, limit=1000))
    by_shard = collections.Counter(_shard_of(s.flow_key) for s in children if s.subgraph)
    parents_by_shard = collections.Counter(_shard_of(key) for key in parents)
    # Each parent ran one child, and so did each fork of a parent: twice the parents' count per shard.
    assert by_shard == collections.Counter({shard: 2 * n for shard, n in parents_by_shard.items()})


async def test_fan_out_and_fan_in_complete_on_every_shard(make_engine: Any) -> None:
    engine = await _sharded(make_engine)
    keys = [await engine.create("fan", {"items": list(range(8))}) for _ in range(9)]
    for key in keys:
        outcome = await engine.wait(key, timeout=WAIT)
        assert (outcome.status, outcome.state["joins"]) == (Status.COMPLETED, 1)


async def test_shard_info_reports_every_shards_size(make_engine: Any) -> None:
    engine = await _sharded(make_engine)
    keys = [await engine.create("count") for _ in range(20)]
    for key in keys:
        await engine.wait(key, timeout=WAIT)
    info = await engine.shard_info()
    assert [summary.shard for summary in info] == [1, 2, 3]
    assert all(summary.error == "" for summary in info)
    assert sum(summary.flows for summary in info) == 20
    assert sum(summary.steps for summary in info) == 40
    placed = collections.Counter(_shard_of(key) for key in keys)
    assert [summary.flows for summary in info] == [placed[1], placed[2], placed[3]]


async def test_a_dead_shard_is_reported_and_skipped_while_the_others_work(
    make_engine: Any, backend: str
) -> None:
    if backend != "postgres":
        pytest.skip("killing one shard's database server-side needs PostgreSQL")
    engine = await _sharded(make_engine)
    first, second = (urlsplit(store.dsn) for store in engine.runtime.stores[:2])  # type: ignore[attr-defined]
    dead_database = second.path.lstrip("/")  # shard 2
    admin = first._replace(path="/postgres").geturl()
    async with await psycopg.AsyncConnection.connect(admin, autocommit=True) as conn:
        await conn.execute(f'DROP DATABASE "{dead_database}" WITH (FORCE)'.encode())
    info = await engine.shard_info()
    assert [bool(summary.error) for summary in info] == [False, True, False]
    keys = [await engine.create("count") for _ in range(30)]
    assert {_shard_of(key) for key in keys} == {1, 3}
    for key in keys:
        assert (await engine.wait(key, timeout=WAIT)).state == {"count": 2}
