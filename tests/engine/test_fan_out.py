"""Failures inside fan-outs (docs/fan-out-and-subgraphs.md#when-a-branch-fails-or-stops-short): a failing
branch cancels its siblings and fails the flow, onError inside a branch routes the error, and a branch
that dead-ends fails the flow naming the fan-in.

The happy paths of fan-out and fan-in (reducers, forEach bookkeeping, multi-match when, nesting, the
exactly-once join) are in ``test_fan_in.py``.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from dwarf import END, Flow, Reducer, Status
from tests.engine.graphs import WAIT, Gate, fan_out, for_each, graph_of, proxy_with, steps_named, wait_until


def _counted(calls: Counter[str], name: str, **values: Any) -> Any:
    async def handler(flow: Flow) -> None:
        calls[name] += 1
        for key, value in values.items():
            flow.set(key, value)

    return handler


def _gated(gate: Gate, calls: Counter[str], name: str, **values: Any) -> Any:
    async def handler(flow: Flow) -> None:
        calls[name] += 1
        for key, value in values.items():
            flow.set(key, value)
        await gate.pass_through()

    return handler


async def _failing_branch(calls: Counter[str]) -> Any:
    async def b(flow: Flow) -> None:
        calls["B"] += 1
        raise RuntimeError("branch B broke")

    return b


async def test_failing_branch_fails_the_flow_with_its_error(make_engine: Any) -> None:
    calls: Counter[str] = Counter()
    gate = Gate()
    proxy = proxy_with(
        "fan",
        fan_out(),
        A=_counted(calls, "A"),
        B=await _failing_branch(calls),
        C=_gated(gate, calls, "C", markC=True),
        J=_counted(calls, "J"),
    )
    engine = await make_engine(proxy)
    _, outcome = await engine.run("fan", timeout=WAIT)
    gate.open()
    assert outcome.status == Status.FAILED
    assert outcome.error == "branch B broke"
    assert calls["J"] == 0


async def test_failing_branch_cancels_its_running_sibling(make_engine: Any) -> None:
    calls: Counter[str] = Counter()
    gate = Gate()
    proxy = proxy_with(
        "fan",
        fan_out(),
        A=_counted(calls, "A"),
        B=await _failing_branch(calls),
        C=_gated(gate, calls, "C", markC=True),
        J=_counted(calls, "J"),
    )
    engine = await make_engine(proxy)
    key = await engine.create("fan")
    await gate.wait_entered()
    outcome = await engine.wait(key, timeout=WAIT)
    gate.open()

    async def sibling_finished() -> bool:
        return gate.passes == 1

    await wait_until(sibling_finished)
    await engine.wait(key, timeout=WAIT)
    [c_step] = await steps_named(engine, key, "C")
    assert outcome.status == Status.FAILED
    assert c_step.status == Status.CANCELLED
    assert (await engine.snapshot(key)).status == Status.FAILED
    assert await steps_named(engine, key, "J") == []


async def test_failing_branch_cancels_siblings_that_have_not_started(make_engine: Any) -> None:
    started: list[int] = []

    async def work(flow: Flow) -> None:
        started.append(flow.get_int("itemIndex"))
        if flow.get_int("itemIndex") == 0:
            raise RuntimeError("first element broke")

    proxy = proxy_with(
        "each", for_each(), Split=_counted(Counter(), "Split"), Work=work, Join=_counted(Counter(), "J")
    )
    engine = await make_engine(proxy, workers=1)
    key, outcome = await engine.run("each", {"items": [1, 2, 3, 4]}, timeout=WAIT)
    statuses = [step.status for step in await steps_named(engine, key, "Work")]
    assert outcome.status == Status.FAILED
    assert started == [0]
    assert statuses == [Status.FAILED, Status.CANCELLED, Status.CANCELLED, Status.CANCELLED]


def _on_error_in_branch() -> Any:
    graph = graph_of("BranchOnError", "A", "B", "C", "Handler", "J")
    graph.add_transition_fan_out("A", "B", "C")
    graph.add_transition_on_error("B", "Handler")
    graph.add_transition("B", "J")
    graph.add_transition("C", "J")
    graph.add_transition("Handler", "J")
    graph.set_fan_in("J")
    graph.add_transition("J", END)
    return graph


async def test_on_error_in_a_branch_routes_to_the_handler(make_engine: Any) -> None:
    calls: Counter[str] = Counter()
    gate = Gate()
    seen: list[Any] = []

    async def handler(flow: Flow) -> None:
        calls["Handler"] += 1
        seen.append(flow.get("onErr"))
        flow.set("handled", True)

    proxy = proxy_with(
        "fan",
        _on_error_in_branch(),
        A=_counted(calls, "A"),
        B=await _failing_branch(calls),
        C=_gated(gate, calls, "C", markC=True),
        Handler=handler,
        J=_counted(calls, "J", joined=True),
    )
    engine = await make_engine(proxy)
    _, outcome = await engine.run("fan", timeout=WAIT)
    gate.open()
    assert outcome.status == Status.COMPLETED
    assert seen == [{"error": "branch B broke"}]
    assert outcome.state["onErr"] == {"error": "branch B broke"}
    assert outcome.state["handled"] is True
    assert outcome.state["joined"] is True
    assert calls["J"] == 1


async def test_on_error_in_a_branch_cancels_its_siblings(make_engine: Any) -> None:
    calls: Counter[str] = Counter()
    gate = Gate()
    proxy = proxy_with(
        "fan",
        _on_error_in_branch(),
        A=_counted(calls, "A"),
        B=await _failing_branch(calls),
        C=_gated(gate, calls, "C", markC=True),
        Handler=_counted(calls, "Handler", handled=True),
        J=_counted(calls, "J", joined=True),
    )
    engine = await make_engine(proxy)
    key = await engine.create("fan")
    await gate.wait_entered()
    outcome = await engine.wait(key, timeout=WAIT)
    gate.open()
    [b_step] = await steps_named(engine, key, "B")
    [c_step] = await steps_named(engine, key, "C")
    assert outcome.status == Status.COMPLETED
    assert b_step.status == Status.COMPLETED
    assert c_step.status == Status.CANCELLED
    assert "markC" not in outcome.state


def _dead_end_graph() -> Any:
    graph = graph_of("DeadEnd", "A", "B", "C", "J")
    graph.add_transition_fan_out("A", "B", "C")
    graph.add_transition_when("B", "J", "ok == true")
    graph.add_transition("C", "J")
    graph.set_fan_in("J")
    graph.add_transition("J", END)
    return graph


async def test_branch_that_dead_ends_fails_the_flow_naming_the_fan_in(make_engine: Any) -> None:
    calls: Counter[str] = Counter()
    proxy = proxy_with(
        "dead",
        _dead_end_graph(),
        A=_counted(calls, "A"),
        B=_counted(calls, "B", ok=False),
        C=_counted(calls, "C"),
        J=_counted(calls, "J"),
    )
    engine = await make_engine(proxy)
    _, outcome = await engine.run("dead", timeout=WAIT)
    assert outcome.status == Status.FAILED
    assert "'J'" in outcome.error or '"J"' in outcome.error or " J" in outcome.error
    assert calls["J"] == 0


async def test_branch_that_dead_ends_lets_its_live_siblings_settle_first(make_engine: Any) -> None:
    calls: Counter[str] = Counter()
    gate = Gate()
    proxy = proxy_with(
        "dead",
        _dead_end_graph(),
        A=_counted(calls, "A"),
        B=_counted(calls, "B", ok=False),
        C=_gated(gate, calls, "C"),
        J=_counted(calls, "J"),
    )
    engine = await make_engine(proxy)
    key = await engine.create("dead")
    await gate.wait_entered()
    await wait_until(lambda: _b_done(engine, key))
    still = await engine.snapshot(key)
    gate.open()
    outcome = await engine.wait(key, timeout=WAIT)
    [c_step] = await steps_named(engine, key, "C")
    assert still.status == Status.RUNNING
    assert outcome.status == Status.FAILED
    assert c_step.status == Status.COMPLETED
    assert calls["J"] == 0


async def _b_done(engine: Any, key: str) -> bool:
    return any(step.status == Status.COMPLETED for step in await steps_named(engine, key, "B"))


async def test_dead_end_in_a_for_each_branch_fails_the_flow(make_engine: Any) -> None:
    graph = graph_of("EachDeadEnd", "Split", "Work", "Join")
    graph.add_transition_for_each("Split", "Work", "items", "item")
    graph.add_transition_when("Work", "Join", "item > 0")
    graph.set_fan_in("Join")
    graph.add_transition("Join", END)
    calls: Counter[str] = Counter()
    proxy = proxy_with(
        "each",
        graph,
        Split=_counted(calls, "Split"),
        Work=_counted(calls, "Work"),
        Join=_counted(calls, "Join"),
    )
    engine = await make_engine(proxy)
    _, outcome = await engine.run("each", {"items": [1, 0, 2]}, timeout=WAIT)
    assert outcome.status == Status.FAILED
    assert "Join" in outcome.error
    assert (calls["Work"], calls["Join"]) == (3, 0)


async def test_fan_in_reached_through_on_error_in_a_for_each_branch_merges_and_strips_bookkeeping(
    make_engine: Any,
) -> None:
    graph = graph_of("EachOnError", "Split", "Work", "Fix", "Join")
    graph.add_transition_for_each("Split", "Work", "items", "item")
    graph.add_transition("Work", "Join")
    graph.add_transition_on_error("Work", "Fix")
    graph.add_transition("Fix", "Join")
    graph.set_fan_in("Join")
    graph.set_reducer("seen", Reducer.APPEND)
    graph.add_transition("Join", END)
    join_inputs: list[dict[str, Any]] = []

    async def work(flow: Flow) -> None:
        flow.set("seen", flow.get_int("item"))
        if flow.get_int("item") == 2:
            raise RuntimeError("two is bad")

    async def join(flow: Flow) -> None:
        join_inputs.append(flow.snapshot())

    calls: Counter[str] = Counter()
    proxy = proxy_with(
        "each",
        graph,
        Split=_counted(calls, "Split"),
        Work=work,
        Fix=_counted(calls, "Fix", fixed=True),
        Join=join,
    )
    # One worker claims in creation order: the failing branch (element 2) runs first, so its siblings are
    # cancelled before they start and contribute nothing.
    engine = await make_engine(proxy, workers=1)
    _, outcome = await engine.run("each", {"items": [2, 1, 3], "seen": []}, timeout=WAIT)
    assert outcome.status == Status.COMPLETED, outcome.error
    assert len(join_inputs) == 1
    expected = {"items": [2, 1, 3], "seen": [2], "onErr": {"error": "two is bad"}, "fixed": True}
    assert join_inputs[0] == expected  # array restored, bookkeeping stripped, reducers
    assert outcome.state == expected
