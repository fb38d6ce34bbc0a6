"""State storage (docs/design.md#state-storage): a chain's steps store their input state as a reference to
the step before (a delta) once the state is large, and every reader rebuilds it; flow.append records only
the items. Checked through the public operations and against the rows themselves, on both backends."""

from __future__ import annotations

import json
from typing import Any

import pytest

from dwarf import END, Flow, Graph, Reducer, Status, StoreError
from dwarf.engine import Engine, TestProxy
from dwarf.engine.keys import parse_key
from dwarf.engine.states import MAX_DELTA_DEPTH
from dwarf.store.base import Row
from tests.engine.graphs import WAIT, steps_named

BIG = "x" * 12_000
"""A state field large enough (over states.DELTA_MIN_STATE_BYTES) that chains store deltas."""


def _loop_graph(name: str = "loop") -> Graph:
    graph = Graph(name)
    graph.add_task("Turn", "turn")
    graph.add_transition_goto("Turn", "Turn")
    graph.add_transition("Turn", END)
    return graph


def _loop_proxy(*, sleep: float = 0.0, item_bytes: int = 100, name: str = "loop") -> TestProxy:
    """``loop``: Turn appends one item to ``items`` and counts ``turn`` until it reaches ``target``."""
    proxy = TestProxy()
    proxy.handle_graph(name, _loop_graph(name))

    async def turn(flow: Flow) -> None:
        done = flow.get_int("turn")
        flow.append("items", f"{done:05d}" + "." * item_bytes)
        flow.set("turn", done + 1)
        if done + 1 < flow.get_int("target"):
            if sleep:
                flow.sleep(sleep)
            flow.goto("Turn")

    proxy.handle_task("turn", turn)
    return proxy


def _items(count: int, item_bytes: int = 100) -> list[str]:
    return [f"{n:05d}" + "." * item_bytes for n in range(count)]


async def _rows(engine: Engine, flow_key: str) -> list[Row]:
    parsed = parse_key(flow_key)
    store = engine.runtime.store(parsed.shard)
    return await store.read("flow_steps_by_id", flow_id=parsed.id)


async def test_a_growing_loop_stores_deltas_and_reads_back_whole(make_engine: Any) -> None:
    engine = await make_engine(_loop_proxy())
    key, outcome = await engine.run("loop", {"target": 40, "turn": 0, "big": BIG}, timeout=WAIT)
    assert outcome.status == Status.COMPLETED, outcome.error
    assert outcome.state["items"] == _items(40)
    rows = await _rows(engine, key)
    deltas = [row for row in rows if row["state"] == ""]
    # The entry step is whole; its successors refer back while the changes stay small beside the state.
    assert rows[0]["state"] != "" and len(deltas) >= 30
    for row in deltas:
        assert int(row["state_base"]) == int(row["predecessor_id"])
        assert 1 <= int(row["delta_depth"]) <= MAX_DELTA_DEPTH
    # Each step recorded its one item, not the list.
    assert all(json.loads(row["appends"]) == {"items": [_items(40)[n]]} for n, row in enumerate(rows))
    assert all("items" not in json.loads(row["changes"]) for row in rows)


async def test_history_and_step_rebuild_each_steps_state_and_show_appends_whole(make_engine: Any) -> None:
    engine = await make_engine(_loop_proxy())
    key, _ = await engine.run("loop", {"target": 25, "turn": 0, "big": BIG}, timeout=WAIT)
    history = await engine.history(key)
    assert len(history) == 25
    for n, step in enumerate(history):
        assert step.state == {"target": 25, "turn": n, "big": BIG, **({"items": _items(n)} if n else {})}
        # FlowStep.changes shows the appended field whole, as a set would have.
        assert step.changes == {"turn": n + 1, "items": _items(n + 1)}
        assert await engine.step(step.step_key) == step


async def test_cold_claims_rebuild_the_state_from_the_rows(make_engine: Any) -> None:
    # Each turn sleeps, so every step is claimed from the database rather than run inline.
    engine = await make_engine(_loop_proxy(sleep=0.001))
    key, outcome = await engine.run("loop", {"target": 30, "turn": 0, "big": BIG}, timeout=WAIT)
    assert outcome.status == Status.COMPLETED, outcome.error
    assert outcome.state == {"target": 30, "turn": 30, "big": BIG, "items": _items(30)}
    assert sum(1 for row in await _rows(engine, key) if row["state"] == "") >= 20


async def test_a_running_flows_snapshot_is_rebuilt(make_engine: Any) -> None:
    proxy = _loop_proxy(name="loop")
    graph = Graph("ask")
    graph.add_task("Turn", "turn")
    graph.add_task("Ask", "ask")
    graph.add_transition_switch("Turn", "Turn", "turn < target")
    graph.add_transition_switch("Turn", "Ask", "true")
    graph.add_transition("Ask", END)
    proxy.handle_graph("ask", graph)

    async def turn(flow: Flow) -> None:
        done = flow.get_int("turn")
        flow.append("items", f"{done:05d}" + "." * 100)
        flow.set("turn", done + 1)

    async def ask(flow: Flow) -> None:
        flow.append("log", "asked")
        answer = flow.interrupt({"question": "ok?"})
        flow.set("answer", answer.get("answer"))

    proxy.handle_task("turn", turn)
    proxy.handle_task("ask", ask)
    engine = await make_engine(proxy)
    key = await engine.create("ask", {"target": 20, "turn": 0, "big": BIG})
    outcome = await engine.wait(key, timeout=WAIT)
    assert outcome.status == Status.INTERRUPTED
    assert outcome.state["items"] == _items(20)
    [asking] = await steps_named(engine, key, "Ask")
    assert asking.state["items"] == _items(20) and asking.state["turn"] == 20
    await engine.resume(key, {"answer": "yes"})
    outcome = await engine.wait(key, timeout=WAIT)
    assert outcome.status == Status.COMPLETED, outcome.error
    # The step ran twice (before and after the interrupt); its item was appended once.
    assert outcome.state["log"] == ["asked"] and outcome.state["answer"] == "yes"


async def test_fork_from_a_delta_step_starts_from_its_rebuilt_state(make_engine: Any) -> None:
    engine = await make_engine(_loop_proxy())
    key, _ = await engine.run("loop", {"target": 30, "turn": 0, "big": BIG}, timeout=WAIT)
    before = await engine.history(key)
    step = before[17]
    [row] = [row for row in await _rows(engine, key) if int(row["step_id"]) == step.step_id]
    assert row["state"] == ""
    forked = await engine.fork(step.step_key, {"target": 20})
    outcome = await engine.wait(forked, timeout=WAIT)
    assert outcome.status == Status.COMPLETED, outcome.error
    assert outcome.state == {"target": 20, "turn": 20, "big": BIG, "items": _items(20)}
    history = await engine.history(forked)
    assert [s.state for s in history[:17]] == [s.state for s in before[:17]]
    # The copies' references point inside the fork; the original reads as it did.
    forked_ids = {int(row["step_id"]) for row in await _rows(engine, forked)}
    for row in await _rows(engine, forked):
        if row["state"] == "":
            assert int(row["state_base"]) in forked_ids
    assert await engine.history(key) == before


async def test_retried_attempts_keep_their_appended_items_once(make_engine: Any) -> None:
    proxy = TestProxy()
    graph = Graph("retry")
    graph.add_task("Work", "work")
    graph.add_transition("Work", END)
    proxy.handle_graph("retry", graph)

    async def work(flow: Flow) -> None:
        flow.append("log", f"attempt {flow.attempt}")
        if flow.attempt < 2:
            flow.retry(0.001, 1.0, 0.0, 0.0)
            return

    proxy.handle_task("work", work)
    engine = await make_engine(proxy)
    _, outcome = await engine.run("retry", {"big": BIG}, timeout=WAIT)
    assert outcome.status == Status.COMPLETED, outcome.error
    assert outcome.state["log"] == ["attempt 0", "attempt 1", "attempt 2"]


async def test_long_chains_take_a_whole_state_at_least_every_max_depth_steps(make_engine: Any) -> None:
    engine = await make_engine(_loop_proxy(item_bytes=1))
    # A big state and tiny appends: only the depth bound forces a new whole state.
    turns = MAX_DELTA_DEPTH + 60
    key, outcome = await engine.run("loop", {"target": turns, "turn": 0, "big": BIG * 4}, timeout=WAIT * 4)
    assert outcome.status == Status.COMPLETED, outcome.error
    assert len(outcome.state["items"]) == turns
    rows = await _rows(engine, key)
    assert max(int(row["delta_depth"]) for row in rows) == MAX_DELTA_DEPTH
    assert sum(1 for row in rows if row["state"] != "") >= 2


async def test_a_growing_state_is_stored_in_a_few_times_its_final_size(make_engine: Any) -> None:
    engine = await make_engine(_loop_proxy(item_bytes=1000))
    key, outcome = await engine.run("loop", {"target": 150, "turn": 0}, timeout=WAIT * 4)
    assert outcome.status == Status.COMPLETED, outcome.error
    final = len(json.dumps(outcome.state))
    stored = sum(
        len(row["state"]) + len(row["changes"]) + len(row["appends"]) for row in await _rows(engine, key)
    )
    # Whole states at every step would hold about turns / 2 times the final state (75 here).
    assert stored <= 6 * final, (stored, final)


async def test_fan_out_branches_append_once_each_under_the_append_reducer(make_engine: Any) -> None:
    proxy = TestProxy()
    graph = Graph("fan")
    graph.add_task("Split", "split")
    for branch in ("B", "C"):
        graph.add_task(branch, "work")
        graph.add_transition("Split", branch)
        graph.add_transition(branch, "Join")
    graph.add_task("Join", "join")
    graph.set_fan_in("Join")
    graph.add_transition("Join", END)
    graph.set_reducer("log", Reducer.APPEND)
    proxy.handle_graph("fan", graph)

    async def split(flow: Flow) -> None:
        flow.append("log", "split")
        flow.append("notes", "split")

    async def work(flow: Flow) -> None:
        flow.append("log", f"work {flow.get_int('n')}")
        flow.append("log", "again")
        # No reducer: the branch's whole list replaces the field (the last branch in order wins).
        flow.append("notes", "worked")

    async def join(flow: Flow) -> None:
        flow.append("log", "joined")

    proxy.handle_task("split", split)
    proxy.handle_task("work", work)
    proxy.handle_task("join", join)
    engine = await make_engine(proxy)
    _, outcome = await engine.run("fan", {"n": 1, "big": BIG}, timeout=WAIT)
    assert outcome.status == Status.COMPLETED, outcome.error
    assert outcome.state["log"] == ["split", "work 1", "again", "work 1", "again", "joined"]
    assert outcome.state["notes"] == ["split", "worked"]


async def test_a_state_refers_to_a_step_that_is_gone_fails_the_step_clearly(make_engine: Any) -> None:
    proxy = _loop_proxy(sleep=0.3)
    engine = await make_engine(proxy)
    key = await engine.create("loop", {"target": 50, "turn": 0, "big": BIG})
    parsed = parse_key(key)
    store = engine.runtime.store(parsed.shard)
    # Wait until the second step, a delta, is queued, then break its reference the way a hand edit would.
    for _ in range(200):
        rows = await store.read("flow_steps_by_id", flow_id=parsed.id)
        if len(rows) >= 2 and rows[-1]["state"] == "":
            break
        await _sleep(0.01)
    delta = rows[-1]

    async def point_elsewhere(tx: Any) -> None:
        await tx.execute(
            "remap_step_links",
            step_id=int(delta["step_id"]),
            predecessor_id=int(delta["predecessor_id"]),
            successor_id=0,
            lineage_id=0,
            fan_in_step_id=0,
            state_base=10**12,
        )

    await store.run(point_elsewhere)
    # The step fails instead of being claimed again for ever. Reading the flow's state now says the
    # database is damaged (a permanent StoreError) rather than inventing one.
    for _ in range(500):
        [flow] = await store.read("get_flow", flow_id=parsed.id)
        if flow["status"] != "running":
            break
        await _sleep(0.01)
    assert flow["status"] == "failed"
    assert "cannot be rebuilt" in flow["error"]
    with pytest.raises(StoreError, match="cannot be rebuilt"):
        await engine.snapshot(key)


async def _sleep(seconds: float) -> None:
    import asyncio

    await asyncio.sleep(seconds)
