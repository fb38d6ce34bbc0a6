"""Threads (docs/flows.md#threads-and-continue_thread): create with thread_key, continue_thread, list by
thread_key."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from dwarf import Flow, FlowOptions, FlowOutcome, NotFoundError, Query, Reducer, Status, current_baggage
from dwarf.engine import Engine, TestProxy
from tests.engine.graphs import WAIT, failing, noop, proxy_with, wait_until
from tests.engine.graphs_parallel import single, summaries


def _turn_proxy(handler: Any = noop) -> TestProxy:
    """Workflow ``turn``: one task ``Turn``; ``log`` appends and ``count`` adds across continuations."""
    graph = single("Turn", "Turn")
    graph.set_reducer("log", Reducer.APPEND)
    graph.set_reducer("count", Reducer.ADD)
    return proxy_with("turn", graph, Turn=handler)


async def _thread_of(engine: Engine, flow_key: str) -> str:
    [summary] = [s for s in await summaries(engine) if s.flow_key == flow_key]
    return summary.thread_key


async def test_a_flow_is_its_own_thread_by_default(make_engine: Any) -> None:
    engine = await make_engine(_turn_proxy())
    key, _ = await engine.run("turn", timeout=WAIT)
    thread = await _thread_of(engine, key)
    assert [s.flow_key for s in await summaries(engine, Query(thread_key=thread))] == [key]


async def test_flow_options_thread_key_joins_an_existing_thread(make_engine: Any) -> None:
    engine = await make_engine(_turn_proxy())
    first, _ = await engine.run("turn", timeout=WAIT)
    thread = await _thread_of(engine, first)
    second, _ = await engine.run("turn", options=FlowOptions(thread_key=thread), timeout=WAIT)
    other, _ = await engine.run("turn", timeout=WAIT)
    assert await _thread_of(engine, second) == thread
    assert await _thread_of(engine, other) != thread
    assert [s.flow_key for s in await summaries(engine, Query(thread_key=thread))] == [second, first]


async def test_unknown_thread_key_is_not_found(make_engine: Any) -> None:
    engine = await make_engine(_turn_proxy())
    first, _ = await engine.run("turn", timeout=WAIT)
    shard, flow_id, _ = first.split("-", 2)
    for thread_key in (f"{shard}-999999-{'A' * 16}", "not a key", f"{shard}-{flow_id}-{'A' * 16}"):
        with pytest.raises(NotFoundError):
            await engine.create("turn", options=FlowOptions(thread_key=thread_key))
    assert len(await summaries(engine)) == 1


async def test_continue_thread_starts_from_the_final_state_merged_with_reducers(make_engine: Any) -> None:
    seen: list[dict[str, Any]] = []

    async def turn(flow: Flow) -> None:
        seen.append(flow.snapshot())
        flow.set("turns", flow.get_int("turns") + 1)

    engine = await make_engine(_turn_proxy(turn))
    first, _ = await engine.run("turn", {"log": ["a"], "count": 1, "topic": "x"}, timeout=WAIT)
    thread = await _thread_of(engine, first)
    second = await engine.continue_thread(thread, {"log": ["b"], "count": 2, "topic": "y"})
    outcome = await engine.wait(second, timeout=WAIT)
    assert outcome.status == Status.COMPLETED
    assert seen[1] == {"log": ["a", "b"], "count": 3, "topic": "y", "turns": 1}
    assert outcome.state == {"log": ["a", "b"], "count": 3, "topic": "y", "turns": 2}


async def test_continuation_belongs_to_the_thread(make_engine: Any) -> None:
    engine = await make_engine(_turn_proxy())
    first, _ = await engine.run("turn", timeout=WAIT)
    thread = await _thread_of(engine, first)
    second = await engine.continue_thread(thread)
    await engine.wait(second, timeout=WAIT)
    assert await _thread_of(engine, second) == thread
    assert [s.flow_key for s in await summaries(engine, Query(thread_key=thread))] == [second, first]


async def test_continue_thread_continues_from_the_latest_completed_flow(make_engine: Any) -> None:
    async def turn(flow: Flow) -> None:
        if flow.get_bool("fail"):
            raise RuntimeError("this turn fails")
        flow.set("log", [flow.get_int("count")])

    engine = await make_engine(_turn_proxy(turn))
    first, _ = await engine.run("turn", {"count": 1}, timeout=WAIT)
    thread = await _thread_of(engine, first)
    second = await engine.continue_thread(thread, {"count": 10})
    assert (await engine.wait(second, timeout=WAIT)).state == {"count": 11, "log": [11]}
    failed = await engine.continue_thread(thread, {"count": 100, "fail": True})
    assert (await engine.wait(failed, timeout=WAIT)).status == Status.FAILED
    third = await engine.continue_thread(thread, {"count": 1000})
    outcome = await engine.wait(third, timeout=WAIT)
    assert outcome.state == {"count": 1011, "log": [1011]}


async def test_continue_thread_inherits_priority_and_fairness(make_engine: Any) -> None:
    engine = await make_engine(_turn_proxy())
    options = FlowOptions(priority=7, fairness_key="tenant-a", fairness_weight=2.0)
    first, _ = await engine.run("turn", options=options, timeout=WAIT)
    second = await engine.continue_thread(await _thread_of(engine, first))
    await engine.wait(second, timeout=WAIT)
    [summary] = [s for s in await summaries(engine) if s.flow_key == second]
    assert (summary.priority, summary.fairness_key) == (7, "tenant-a")


async def test_continue_thread_inherits_the_baggage(make_engine: Any) -> None:
    seen: list[Any] = []

    async def turn(flow: Flow) -> None:
        seen.append(current_baggage())

    engine = await make_engine(_turn_proxy(turn))
    first, _ = await engine.run("turn", options=FlowOptions(baggage={"tenant": "acme"}), timeout=WAIT)
    second = await engine.continue_thread(await _thread_of(engine, first))
    await engine.wait(second, timeout=WAIT)
    assert seen == [{"tenant": "acme"}, {"tenant": "acme"}]


async def test_continue_thread_inherits_the_time_budget(make_engine: Any) -> None:
    async def turn(flow: Flow) -> None:
        if flow.get_bool("slow"):
            await asyncio.sleep(2)

    engine = await make_engine(_turn_proxy(turn), time_budget=30)
    first, _ = await engine.run("turn", options=FlowOptions(time_budget=0.3), timeout=WAIT)
    second = await engine.continue_thread(await _thread_of(engine, first), {"slow": True})
    outcome = await engine.wait(second, timeout=WAIT)
    assert outcome.status == Status.FAILED
    assert "time budget" in outcome.error


async def test_continue_thread_inherits_notify_on_stop(make_engine: Any) -> None:
    notified: list[tuple[str, FlowOutcome]] = []
    proxy = _turn_proxy()
    proxy.on_flow_stopped(lambda key, outcome: notified.append((key, outcome)))
    engine = await make_engine(proxy)
    first, _ = await engine.run("turn", options=FlowOptions(notify_on_stop=True), timeout=WAIT)
    second = await engine.continue_thread(await _thread_of(engine, first))
    await engine.wait(second, timeout=WAIT)

    async def both_notified() -> bool:
        return len(notified) == 2

    await wait_until(both_notified)
    assert [key for key, _ in notified] == [first, second]
    assert notified[1][1].status == Status.COMPLETED


async def test_continue_thread_without_a_completed_flow_is_not_found(make_engine: Any) -> None:
    engine = await make_engine(_turn_proxy(failing("boom")))
    first, outcome = await engine.run("turn", timeout=WAIT)
    assert outcome.status == Status.FAILED
    with pytest.raises(NotFoundError):
        await engine.continue_thread(await _thread_of(engine, first))
    assert len(await summaries(engine)) == 1


async def test_continue_thread_of_an_unknown_thread_is_not_found(make_engine: Any) -> None:
    engine = await make_engine(_turn_proxy())
    with pytest.raises(NotFoundError):
        await engine.continue_thread("1-424242-AAAAAAAAAAAAAAAA")


async def test_list_by_thread_key_returns_only_that_threads_flows(make_engine: Any) -> None:
    engine = await make_engine(_turn_proxy())
    a1, _ = await engine.run("turn", timeout=WAIT)
    b1, _ = await engine.run("turn", timeout=WAIT)
    thread_a, thread_b = await _thread_of(engine, a1), await _thread_of(engine, b1)
    a2 = await engine.continue_thread(thread_a)
    await engine.wait(a2, timeout=WAIT)
    b2, _ = await engine.run("turn", options=FlowOptions(thread_key=thread_b), timeout=WAIT)
    a3 = await engine.continue_thread(thread_a)
    await engine.wait(a3, timeout=WAIT)
    assert [s.flow_key for s in await summaries(engine, Query(thread_key=thread_a))] == [a3, a2, a1]
    assert [s.flow_key for s in await summaries(engine, Query(thread_key=thread_b))] == [b2, b1]


async def test_continue_thread_accepts_the_key_of_a_later_flow_of_the_thread(make_engine: Any) -> None:
    engine = await make_engine(_turn_proxy())
    first, _ = await engine.run("turn", {"count": 1}, timeout=WAIT)
    second = await engine.continue_thread(await _thread_of(engine, first), {"count": 1})
    await engine.wait(second, timeout=WAIT)
    third = await engine.continue_thread(second, {"count": 1})
    outcome = await engine.wait(third, timeout=WAIT)
    assert outcome.state == {"count": 3}
    assert await _thread_of(engine, third) == await _thread_of(engine, first)
