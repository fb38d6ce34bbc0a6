"""Fork (docs/flows.md#fork): replaying a stopped flow up to a step and re-running that step with
overrides."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from dwarf import (
    END,
    ConflictError,
    Flow,
    FlowOptions,
    Graph,
    NotFoundError,
    Reducer,
    Status,
    current_baggage,
)
from dwarf.engine import Engine, TestProxy
from tests.engine.graphs import WAIT, Gate, chain, for_each, noop, proxy_with, steps_named
from tests.engine.graphs_parallel import Runs, calls_subgraph, child_summaries, summaries


async def _double(flow: Flow) -> None:
    flow.set("y", flow.get_int("x") * 2)


async def _plus_one(flow: Flow) -> None:
    flow.set("z", flow.get_int("y") + 1)


def _abc_proxy(runs: Runs | None = None) -> TestProxy:
    """Workflow ``abc``: A (noop) -> B (y = 2x) -> C (z = y + 1) -> END."""

    def counted(name: str, handler: Any) -> Any:
        async def run(flow: Flow) -> None:
            if runs is not None:
                runs.count(name)
            await handler(flow)

        return run

    return proxy_with(
        "abc",
        chain("ABC", "A", "B", "C"),
        A=counted("A", noop),
        B=counted("B", _double),
        C=counted("C", _plus_one),
    )


async def _step_key(engine: Engine, flow_key: str, task_name: str) -> str:
    [step] = await steps_named(engine, flow_key, task_name)
    return step.step_key


async def test_fork_re_runs_from_the_step_with_overrides(make_engine: Any) -> None:
    runs = Runs()
    engine = await make_engine(_abc_proxy(runs))
    key, outcome = await engine.run("abc", {"x": 1}, timeout=WAIT)
    assert outcome.state == {"x": 1, "y": 2, "z": 3}
    forked = await engine.fork(await _step_key(engine, key, "B"), {"x": 10})
    assert forked != key
    outcome = await engine.wait(forked, timeout=WAIT)
    assert outcome.status == Status.COMPLETED, outcome.error
    assert outcome.state == {"x": 10, "y": 20, "z": 21}
    assert runs.order == ["A", "B", "C", "B", "C"]
    history = await engine.history(forked)
    assert [(s.task_name, s.status) for s in history] == [("A", Status.COMPLETED)] + [
        (name, Status.COMPLETED) for name in ("B", "C")
    ]
    assert history[0].next_key == history[1].step_key
    assert history[1].prev_key == history[0].step_key


async def test_fork_leaves_the_original_flow_untouched(make_engine: Any) -> None:
    engine = await make_engine(_abc_proxy())
    key, _ = await engine.run("abc", {"x": 1}, timeout=WAIT)
    before = (await engine.snapshot(key), await engine.history(key), await engine.fingerprint(key))
    forked = await engine.fork(await _step_key(engine, key, "B"), {"x": 10})
    await engine.wait(forked, timeout=WAIT)
    after = (await engine.snapshot(key), await engine.history(key), await engine.fingerprint(key))
    assert after == before


async def test_fork_of_a_running_flow_is_a_conflict(make_engine: Any) -> None:
    gate = Gate()

    async def blocked(flow: Flow) -> None:
        await gate.pass_through()

    engine = await make_engine(proxy_with("blocked", chain("Blocked", "A", "B"), A=noop, B=blocked))
    key = await engine.create("blocked")
    try:
        await gate.wait_entered()
        with pytest.raises(ConflictError):
            await engine.fork(await _step_key(engine, key, "A"), {})
    finally:
        gate.open()
    await engine.wait(key, timeout=WAIT)
    assert len(await summaries(engine)) == 1


async def test_fork_of_an_interrupted_flow_is_a_conflict(make_engine: Any) -> None:
    async def ask(flow: Flow) -> None:
        flow.interrupt({"question": "?"})

    engine = await make_engine(proxy_with("ask", chain("Ask", "A", "B"), A=noop, B=ask))
    key, outcome = await engine.run("ask", timeout=WAIT)
    assert outcome.status == Status.INTERRUPTED
    with pytest.raises(ConflictError):
        await engine.fork(await _step_key(engine, key, "A"), {})


async def test_fork_of_a_failed_flow_re_runs_the_failed_step(make_engine: Any) -> None:
    async def picky(flow: Flow) -> None:
        if not flow.get_bool("ok"):
            raise RuntimeError("not ok")
        flow.set("done", True)

    engine = await make_engine(proxy_with("picky", chain("Picky", "A", "P"), A=noop, P=picky))
    key, outcome = await engine.run("picky", timeout=WAIT)
    assert outcome.status == Status.FAILED
    forked = await engine.fork(await _step_key(engine, key, "P"), {"ok": True})
    outcome = await engine.wait(forked, timeout=WAIT)
    assert outcome.status == Status.COMPLETED, outcome.error
    assert outcome.state == {"ok": True, "done": True}
    assert (await engine.snapshot(key)).status == Status.FAILED


async def test_fork_of_a_fork(make_engine: Any) -> None:
    engine = await make_engine(_abc_proxy())
    key, _ = await engine.run("abc", {"x": 1}, timeout=WAIT)
    fork1 = await engine.fork(await _step_key(engine, key, "B"), {"x": 10})
    await engine.wait(fork1, timeout=WAIT)
    fork2 = await engine.fork(await _step_key(engine, fork1, "C"), {"y": 1000})
    outcome = await engine.wait(fork2, timeout=WAIT)
    assert outcome.status == Status.COMPLETED, outcome.error
    assert outcome.state == {"x": 10, "y": 1000, "z": 1001}
    assert [s.task_name for s in await engine.history(fork2)] == ["A", "B", "C"]
    assert (await engine.snapshot(fork1)).state == {"x": 10, "y": 20, "z": 21}


async def test_fork_from_a_fan_in_step_after_a_cohort(make_engine: Any) -> None:
    runs = Runs()

    async def work(flow: Flow) -> None:
        runs.count("Work")
        flow.set("total", flow.get_int("item"))

    async def join(flow: Flow) -> None:
        runs.count("Join")
        flow.set("doubled", flow.get_int("total") * 2)

    graph = for_each("Sum", reducers={"total": Reducer.ADD})
    engine = await make_engine(proxy_with("sum", graph, Split=noop, Work=work, Join=join))
    key, outcome = await engine.run("sum", {"items": [1, 2, 3], "total": 0}, timeout=WAIT)
    assert outcome.state["doubled"] == 12
    forked = await engine.fork(await _step_key(engine, key, "Join"), {"total": 100})
    outcome = await engine.wait(forked, timeout=WAIT)
    assert outcome.status == Status.COMPLETED, outcome.error
    assert outcome.state == {"items": [1, 2, 3], "total": 100, "doubled": 200}
    assert runs.counts == {"Work": 3, "Join": 2}
    history = await engine.history(forked)
    assert [s.task_name for s in history] == ["Split", "Work", "Work", "Work", "Join"]
    assert all(s.status == Status.COMPLETED for s in history)


def _bad_two_proxy() -> TestProxy:
    """Split [1, 2, 3] -> Work each (fails on 2 unless "fixed") -> Join; total/seen are add/append."""
    graph = Graph("bad-two")
    for name in ("Split", "Work", "Join"):
        graph.add_task(name, name)
    graph.add_transition_for_each("Split", "Work", "items", "item")
    graph.add_transition("Work", "Join")
    graph.set_fan_in("Join")
    graph.add_transition("Join", END)
    graph.set_reducer("total", Reducer.ADD)
    graph.set_reducer("seen", Reducer.APPEND)
    proxy = TestProxy()
    proxy.handle_graph("bad-two", graph)

    async def split(flow: Flow) -> None:
        flow.set("items", [1, 2, 3])

    async def work(flow: Flow) -> None:
        item = flow.get_int("item")
        if item == 2 and not flow.get_bool("fixed"):
            raise ValueError("two is bad")
        flow.set("total", item * 10)
        flow.set("seen", [item])

    proxy.handle_task("Split", split)
    proxy.handle_task("Work", work)
    proxy.handle_task("Join", noop)
    return proxy


async def test_fork_from_a_failed_branch_re_runs_it_and_its_cancelled_siblings(make_engine: Any) -> None:
    engine = await make_engine(_bad_two_proxy())
    key, failed = await engine.run("bad-two", {"total": 0}, timeout=WAIT)
    assert failed.status == Status.FAILED
    bad = next(s for s in await steps_named(engine, key, "Work") if s.state.get("item") == 2)
    forked = await engine.fork(bad.step_key, {"fixed": True})
    outcome = await engine.wait(forked, timeout=WAIT)
    assert outcome.status == Status.COMPLETED, outcome.error
    # Reducers apply in fan-out order whatever ran first: the cancelled third branch ran again.
    assert outcome.state["total"] == 60
    assert outcome.state["seen"] == [1, 2, 3]
    assert (await engine.snapshot(key)).status == Status.FAILED


async def test_fork_from_a_completed_branch_keeps_its_siblings_work(make_engine: Any) -> None:
    engine = await make_engine(_bad_two_proxy())
    key, done = await engine.run("bad-two", {"total": 0, "fixed": True}, timeout=WAIT)
    assert done.state["seen"] == [1, 2, 3]
    third = next(s for s in await steps_named(engine, key, "Work") if s.state.get("item") == 3)
    forked = await engine.fork(third.step_key, {"item": 30})
    outcome = await engine.wait(forked, timeout=WAIT)
    assert outcome.state["total"] == 10 + 20 + 300
    assert outcome.state["seen"] == [1, 2, 30]
    history = await engine.history(forked)
    assert [s.task_name for s in history].count("Work") == 3
    assert [s.task_name for s in history].count("Join") == 1


async def test_fork_of_a_bad_step_key_is_not_found(make_engine: Any) -> None:
    engine = await make_engine(_abc_proxy())
    key, _ = await engine.run("abc", {"x": 1}, timeout=WAIT)
    real = await _step_key(engine, key, "B")
    shard, step_id, token = real.split("-", 2)
    other_token = "A" * 16 if token != "A" * 16 else "B" * 16
    bad_keys = {
        "malformed": "not-a-key",
        "unknown id": f"{shard}-999999-{token}",
        "wrong token": f"{shard}-{step_id}-{other_token}",
        "flow token": f"{shard}-{step_id}-{key.split('-', 2)[2]}",
    }
    for what, bad in bad_keys.items():
        with pytest.raises(NotFoundError):
            await engine.fork(bad, {})
            pytest.fail(f"fork of a step key with a {what} did not raise NotFoundError")
    assert len(await summaries(engine)) == 1


async def test_fork_inherits_scheduling_and_baggage(make_engine: Any) -> None:
    baggage: list[Any] = []

    async def b(flow: Flow) -> None:
        baggage.append(current_baggage())

    engine = await make_engine(proxy_with("ab", chain("AB", "A", "B"), A=noop, B=b))
    options = FlowOptions(priority=7, fairness_key="tenant-a", baggage={"tenant": "acme"})
    key, _ = await engine.run("ab", options=options, timeout=WAIT)
    forked = await engine.fork(await _step_key(engine, key, "B"), {})
    await engine.wait(forked, timeout=WAIT)
    [summary] = [s for s in await summaries(engine) if s.flow_key == forked]
    assert (summary.priority, summary.fairness_key) == (7, "tenant-a")
    assert baggage == [{"tenant": "acme"}, {"tenant": "acme"}]


async def test_fork_does_not_inherit_notify_on_stop(make_engine: Any) -> None:
    notified: list[str] = []
    proxy = _abc_proxy()
    proxy.on_flow_stopped(lambda key, outcome: notified.append(key))
    engine = await make_engine(proxy)
    key, _ = await engine.run("abc", {"x": 1}, options=FlowOptions(notify_on_stop=True), timeout=WAIT)
    forked = await engine.fork(await _step_key(engine, key, "B"), {"x": 2})
    assert (await engine.wait(forked, timeout=WAIT)).status == Status.COMPLETED
    await asyncio.sleep(0.2)  # a notification would be delivered right after the stop
    assert notified == [key]


async def test_fork_does_not_inherit_delete_on_completion(make_engine: Any) -> None:
    async def picky(flow: Flow) -> None:
        if not flow.get_bool("ok"):
            raise RuntimeError("not ok")

    engine = await make_engine(proxy_with("picky", chain("Picky", "A", "P"), A=noop, P=picky))
    # A failed flow is kept even with delete_on_completion, so it can be forked.
    key, outcome = await engine.run("picky", options=FlowOptions(delete_on_completion=True), timeout=WAIT)
    assert outcome.status == Status.FAILED
    forked = await engine.fork(await _step_key(engine, key, "P"), {"ok": True})
    assert (await engine.wait(forked, timeout=WAIT)).status == Status.COMPLETED
    await asyncio.sleep(0.2)  # a deletion would happen right after the stop
    assert (await engine.snapshot(forked)).state == {"ok": True}


async def test_fork_from_a_step_inside_a_child_flow_clones_the_tree(make_engine: Any) -> None:
    proxy = TestProxy()
    proxy.handle_graph("parent", chain("Parent", "Call"))
    proxy.handle_graph("child", chain("ChildFlow", "B"))
    proxy.handle_task("Call", calls_subgraph("child"))
    proxy.handle_task("B", _double)
    engine = await make_engine(proxy)
    key, outcome = await engine.run("parent", {"x": 1}, timeout=WAIT)
    assert outcome.state["result"] == {"x": 1, "y": 2}
    [call] = await engine.history(key)
    forked = await engine.fork(call.sub_history[0].step_key, {"x": 5})
    roots = [s.flow_key for s in await summaries(engine) if s.flow_key != key]
    assert len(roots) == 1
    outcome = await engine.wait(roots[0], timeout=WAIT)
    assert outcome.status == Status.COMPLETED, outcome.error
    assert outcome.state["result"] == {"x": 5, "y": 10}
    assert forked in {roots[0], *[s.flow_key for s in await child_summaries(engine)]}
    assert (await engine.snapshot(key)).state["result"] == {"x": 1, "y": 2}


async def test_fork_of_the_step_that_ran_a_child_runs_a_new_child(make_engine: Any) -> None:
    proxy = TestProxy()
    proxy.handle_graph("parent", chain("Parent", "A", "Call"))
    proxy.handle_graph("child", chain("ChildFlow", "B"))
    proxy.handle_task("A", noop)
    proxy.handle_task("Call", calls_subgraph("child"))
    proxy.handle_task("B", _double)
    engine = await make_engine(proxy)
    key, outcome = await engine.run("parent", {"x": 1}, timeout=WAIT)
    assert outcome.state["result"] == {"x": 1, "y": 2}
    forked = await engine.fork(await _step_key(engine, key, "Call"), {"x": 5})
    outcome = await engine.wait(forked, timeout=WAIT)
    assert outcome.status == Status.COMPLETED, outcome.error
    assert outcome.state == {"x": 5, "result": {"x": 5, "y": 10}}
    assert len(await child_summaries(engine)) == 2
    call = (await engine.history(forked))[-1]
    assert [step.state for step in call.sub_history] == [{"x": 5}]


async def test_fork_inside_a_child_flow_started_from_a_fan_out_branch(make_engine: Any) -> None:
    child = Graph("square")
    child.add_task("Square", "Square")
    child.add_transition("Square", END)
    graph = Graph("squares")
    for name in ("Split", "Work", "Join"):
        graph.add_task(name, name)
    graph.add_transition_for_each("Split", "Work", "items", "item")
    graph.add_transition("Work", "Join")
    graph.set_fan_in("Join")
    graph.add_transition("Join", END)
    graph.set_reducer("total", Reducer.ADD)
    proxy = TestProxy()
    proxy.handle_graph("squares", graph)
    proxy.handle_graph("square", child)

    async def split(flow: Flow) -> None:
        flow.set("items", [1, 2, 3])

    async def work(flow: Flow) -> None:
        result = flow.subgraph("square", {"n": flow.get_int("item")})
        flow.set("total", result["sq"])

    async def square(flow: Flow) -> None:
        flow.set("sq", flow.get_int("n") ** 2 + flow.get_int("bonus"))

    proxy.handle_task("Split", split)
    proxy.handle_task("Work", work)
    proxy.handle_task("Square", square)
    proxy.handle_task("Join", noop)
    engine = await make_engine(proxy)
    key, done = await engine.run("squares", {"total": 0}, timeout=WAIT)
    assert done.state["total"] == 1 + 4 + 9
    second = next(s for s in await steps_named(engine, key, "Work") if s.state.get("item") == 2)
    leaf = second.sub_history[0]
    forked = await engine.fork(leaf.step_key, {"bonus": 100})
    outcome = await engine.wait(forked, timeout=WAIT)
    assert outcome.status == Status.COMPLETED, outcome.error
    assert outcome.state["total"] == 1 + 104 + 9
    assert (await engine.snapshot(key)).state["total"] == 14
