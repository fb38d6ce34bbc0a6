"""Scale: wide fan-outs, many interrupts in one cohort, deep child-flow chains, mass purges and concurrent
thread continuations (docs/fan-out-and-subgraphs.md, docs/flows.md), on both backends.

Every wait is bounded; the bounds are generous multiples of what these runs take on a loaded CI machine.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

import dwarf.engine.listing
from dwarf import Flow, Query, Reducer, Status
from dwarf.engine import Engine, TestProxy
from tests.engine.graphs import WAIT, Gate, fan_out, for_each, noop, proxy_with, wait_until
from tests.engine.graphs_parallel import Runs, row_counts, single

SCALE_WAIT = 60.0
"""Upper bound (seconds) on a wait for work that spans thousands of steps."""


# --- a forEach of 1,000 elements ---------------------------------------------------------------------


async def test_a_for_each_of_a_thousand_elements_merges_exactly_at_a_single_fan_in(make_engine: Any) -> None:
    runs = Runs()
    # A permutation of 0..999, so that array order differs from numeric order (and from finish order).
    elements = [(i * 337) % 1000 for i in range(1000)]
    assert sorted(elements) == list(range(1000))

    async def work(flow: Flow) -> None:
        item = flow.get_int("item")
        flow.set("seen", [item])  # append: this branch's element
        flow.set("total", item)  # add: this branch's share

    async def join(flow: Flow) -> None:
        runs.count("Join")

    graph = for_each("Wide", reducers={"seen": Reducer.APPEND, "total": Reducer.ADD})
    engine = await make_engine(proxy_with("wide", graph, Split=noop, Work=work, Join=join))
    key, outcome = await engine.run("wide", {"items": elements, "seen": [], "total": 0}, timeout=SCALE_WAIT)
    assert outcome.status == Status.COMPLETED, outcome.error
    assert outcome.state["seen"] == elements
    assert outcome.state["total"] == sum(elements) == 499_500
    assert outcome.state["items"] == elements
    assert not {"item", "itemIndex", "itemCount"} & set(outcome.state)
    assert runs["Join"] == 1
    history = await engine.history(key)
    assert [step.task_name for step in history].count("Join") == 1
    assert [step.task_name for step in history].count("Work") == 1000


# --- every branch of a fan-out interrupts --------------------------------------------------------------


BRANCHES = [f"B{n}" for n in range(1, 6)]


async def test_every_branch_interrupting_is_answered_one_surfaced_interrupt_at_a_time(
    make_engine: Any,
) -> None:
    runs = Runs()

    def asking(branch: str) -> Any:
        async def ask(flow: Flow) -> None:
            answer = flow.interrupt({"branch": branch})["answer"]
            flow.set("answers", [answer])

        return ask

    async def join(flow: Flow) -> None:
        runs.count("J")

    handlers: dict[str, Any] = {branch: asking(branch) for branch in BRANCHES}
    graph = fan_out("Asking", BRANCHES)
    graph.set_reducer("answers", Reducer.APPEND)
    engine = await make_engine(proxy_with("asking", graph, A=noop, J=join, **handlers))
    key = await engine.create("asking", {"answers": []})

    async def all_parked() -> bool:
        steps = [s for s in await engine.history(key) if s.task_name in BRANCHES]
        return len(steps) == len(BRANCHES) and all(s.status == Status.INTERRUPTED for s in steps)

    await wait_until(all_parked)
    answered: list[str] = []
    for _ in BRANCHES:
        outcome = await engine.wait(key, timeout=WAIT)
        assert outcome.status == Status.INTERRUPTED, outcome
        snapshot = await engine.snapshot(key)
        assert snapshot.status == Status.INTERRUPTED
        assert snapshot.interrupt_payload == outcome.interrupt_payload
        branch = snapshot.interrupt_payload["branch"]
        assert branch in BRANCHES and branch not in answered, (branch, answered)
        answered.append(branch)
        await engine.resume(key, {"answer": f"answer for {branch}"})
        assert runs["J"] == 0 or len(answered) == len(BRANCHES)
    outcome = await engine.wait(key, timeout=WAIT)
    assert outcome.status == Status.COMPLETED, outcome.error
    assert sorted(answered) == BRANCHES
    # The fan-in merges in fan-out position order, whatever order the interrupts were answered in.
    assert outcome.state["answers"] == [f"answer for {branch}" for branch in BRANCHES]
    assert runs["J"] == 1


# --- a chain of child flows ten deep -------------------------------------------------------------------


DEPTH = 10
"""Child flows below the root: level 0 is the root's graph, level DEPTH the leaf's."""


def _deep_proxy(leaf: Any) -> TestProxy:
    """Graphs ``level0`` .. ``level{DEPTH}``, one task each; level k runs level k+1 as a child flow and
    returns its ``value`` (and the path it took); the leaf's task is ``leaf``."""
    proxy = TestProxy()
    for level in range(DEPTH + 1):
        proxy.handle_graph(f"level{level}", single(f"Level{level}", f"L{level}"))

    def level_task(level: int) -> Any:
        async def handler(flow: Flow) -> None:
            result = flow.subgraph(f"level{level + 1}", {"path": [*flow.get("path", []), level]})
            flow.set("value", result["value"])
            flow.set("path", result["path"])

        return handler

    for level in range(DEPTH):
        proxy.handle_task(f"L{level}", level_task(level))
    proxy.handle_task(f"L{DEPTH}", leaf)
    return proxy


async def test_a_child_flow_chain_ten_deep_returns_the_leafs_value_to_the_root(make_engine: Any) -> None:
    async def leaf(flow: Flow) -> None:
        flow.set("value", "from the leaf")
        flow.set("path", [*flow.get("path", []), DEPTH])

    engine = await make_engine(_deep_proxy(leaf))
    key, outcome = await engine.run("level0", timeout=SCALE_WAIT)
    assert outcome.status == Status.COMPLETED, outcome.error
    assert outcome.state == {"value": "from the leaf", "path": list(range(DEPTH + 1))}
    flows, _ = await engine.list(Query(include_subgraphs=True))
    assert len(flows) == DEPTH + 1
    assert all(summary.status == Status.COMPLETED for summary in flows)
    assert sum(summary.subgraph for summary in flows) == DEPTH

    [step] = await engine.history(key)
    nesting = 0
    while step.sub_history:
        assert step.subgraph and step.sub_workflow_url == f"level{nesting + 1}"
        [step] = step.sub_history
        nesting += 1
    assert nesting == DEPTH
    assert step.task_name == f"L{DEPTH}"
    assert step.changes["value"] == "from the leaf"
    assert (await engine.history_mermaid(key)).count("subgraph ") >= DEPTH


async def test_cancel_of_the_root_cancels_every_level_of_a_ten_deep_chain(make_engine: Any) -> None:
    gate = Gate()

    async def leaf(flow: Flow) -> None:
        await gate.pass_through()
        flow.set("value", "too late")

    engine = await make_engine(_deep_proxy(leaf))
    key = await engine.create("level0")
    try:
        await gate.wait_entered(SCALE_WAIT)
        await engine.cancel(key, "enough")
    finally:
        gate.open()
    outcome = await engine.wait(key, timeout=WAIT)
    assert outcome.status == Status.CANCELLED
    assert outcome.cancel_reason == "enough"

    async def all_cancelled() -> bool:
        flows, _ = await engine.list(Query(include_subgraphs=True))
        return len(flows) == DEPTH + 1 and all(summary.status == Status.CANCELLED for summary in flows)

    await wait_until(all_cancelled)
    await asyncio.sleep(0.2)  # the leaf's task finished after the cancel: nothing of it may surface
    flows, _ = await engine.list(Query(include_subgraphs=True))
    assert [summary.status for summary in flows] == [Status.CANCELLED] * (DEPTH + 1)
    leaf_flow = next(summary for summary in flows if summary.workflow_url == f"level{DEPTH}")
    assert "value" not in (await engine.snapshot(leaf_flow.flow_key)).state


# --- purging ten thousand flows ------------------------------------------------------------------------


PURGED = 10_000
CREATE_BATCH = 500
PURGE_WAIT = 300.0
"""Upper bound (seconds) on each phase of the purge test. Measured on a 2-CPU machine shared with other test
runs: SQLite ~15-30 s for the whole test; PostgreSQL ~75 s to create and complete the flows and ~50-85 s for
the ten purge calls (see the note on the test)."""


async def _create_completed_flows(engine: Engine, count: int) -> None:
    """``count`` completed flows of the one-step graph ``one``, created in concurrent batches."""
    async with asyncio.timeout(PURGE_WAIT):
        for start in range(0, count, CREATE_BATCH):
            batch = min(CREATE_BATCH, count - start)
            await asyncio.gather(*(engine.create("one", {"n": start + n}) for n in range(batch)))

    async def all_completed() -> bool:
        running, _ = await engine.list(Query(status="running", limit=1))
        return not running and await row_counts(engine) == (count, count)

    await wait_until(all_completed, timeout=PURGE_WAIT, interval=0.2)


@pytest.mark.slow
async def test_purging_ten_thousand_flows_in_a_loop_leaves_none(
    make_engine: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Slow on PostgreSQL: creating 10,000 flows takes most of a minute, and each purge call there takes
    seconds on a freshly filled table (mark_for_purge probes every candidate root for a running flow of its
    tree through the status index, whose 'running' entries include one dead entry per flow that ever ran,
    until autovacuum catches up: quadratic in the number of flows)."""
    monkeypatch.setattr(dwarf.engine.listing, "PURGE_LIMIT", 1000)
    engine = await make_engine(proxy_with("one", single("One", "A"), A=noop))
    started = time.monotonic()
    await _create_completed_flows(engine, PURGED)
    created = time.monotonic()

    total = calls = 0
    async with asyncio.timeout(PURGE_WAIT):
        while marked := await engine.purge(Query()):
            assert marked <= 1000
            total += marked
            calls += 1
            assert calls <= PURGED // 1000, "purge keeps finding flows"
    purged = time.monotonic()
    assert total == PURGED
    assert calls == PURGED // 1000
    assert (await engine.list(Query(include_subgraphs=True)))[0] == []

    async def reaped() -> bool:
        return await row_counts(engine) == (0, 0)

    await wait_until(reaped, timeout=PURGE_WAIT, interval=0.2)
    print(
        f"\n{PURGED} flows: created in {created - started:.1f}s, purged in {purged - created:.1f}s,"
        f" reaped {time.monotonic() - purged:.1f}s later"
    )


# --- concurrent continuations of one thread ------------------------------------------------------------


async def test_concurrent_continue_thread_calls_all_start_from_the_same_latest_completed_flow(
    make_engine: Any,
) -> None:
    gate = Gate()

    async def talk(flow: Flow) -> None:
        if flow.has("turn"):
            # Continuations wait here, so none of them completes (and becomes the thread's latest
            # completed flow) before every continue_thread call has returned.
            await gate.pass_through()
            flow.set("replies", [f"reply {flow.get_int('turn')}"])
        else:
            flow.set("replies", ["hello"])

    graph = single("Talk", "T")
    graph.set_reducer("log", Reducer.APPEND)
    graph.set_reducer("count", Reducer.ADD)
    engine = await make_engine(proxy_with("talk", graph, T=talk))
    thread, first = await engine.run("talk", {"log": ["start"], "count": 1, "topic": "scale"}, timeout=WAIT)
    assert first.status == Status.COMPLETED, first.error
    base = first.state
    assert base == {"log": ["start"], "count": 1, "topic": "scale", "replies": ["hello"]}

    additions = [{"log": [f"extra {n}"], "count": n, "turn": n} for n in range(1, 6)]
    try:
        keys = await asyncio.gather(*(engine.continue_thread(thread, extra) for extra in additions))
        assert len(set(keys)) == len(additions) and thread not in keys
        for key, extra in zip(keys, additions, strict=True):
            expected = {
                **base,
                "log": ["start", *extra["log"]],
                "count": 1 + extra["count"],
                "turn": extra["turn"],
            }
            [step] = await engine.history(key)
            assert step.state == expected, (key, step.state)
    finally:
        gate.open()
    for key, extra in zip(keys, additions, strict=True):
        outcome = await engine.wait(key, timeout=WAIT)
        assert outcome.status == Status.COMPLETED, outcome.error
        assert outcome.state["replies"] == [f"reply {extra['turn']}"]
        assert outcome.state["log"] == ["start", *extra["log"]]
    members, _ = await engine.list(Query(thread_key=thread))
    assert sorted(summary.flow_key for summary in members) == sorted([thread, *keys])
    assert {summary.thread_key for summary in members} == {thread}
