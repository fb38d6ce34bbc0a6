"""Routing on the engine (docs/graphs.md#transitions):
plain, chain, when, switch, goto, END and dead ends, end to end."""

from __future__ import annotations

from typing import Any

from dwarf import END, Flow, Status
from tests.engine.graphs import WAIT, chain, graph_of, proxy_with, setter, tracer


async def test_plain_transition_runs_the_next_task_on_the_merged_state(make_engine: Any) -> None:
    graph = graph_of("Plain", "A", "B")
    graph.add_transition("A", "B")
    graph.add_transition("B", END)

    async def b(flow: Flow) -> None:
        flow.set("y", flow.get_int("x") + 1)

    engine = await make_engine(proxy_with("plain", graph, A=setter(x=1), B=b))
    _, outcome = await engine.run("plain", {"seed": True}, timeout=WAIT)
    assert outcome.status == Status.COMPLETED
    assert outcome.state == {"seed": True, "x": 1, "y": 2}


async def test_chain_runs_its_tasks_in_order(make_engine: Any) -> None:
    calls: list[str] = []
    handlers = {name: tracer(calls, name) for name in ("A", "B", "C")}
    engine = await make_engine(proxy_with("chain", chain("Chain", "A", "B", "C"), **handlers))
    _, outcome = await engine.run("chain", timeout=WAIT)
    assert outcome.state["trail"] == ["A", "B", "C"]
    assert calls == ["A", "B", "C"]


async def test_when_fires_only_the_matching_transition(make_engine: Any) -> None:
    # Two when transitions make A a potential fan-out source, so the graph needs a fan-in where they meet.
    graph = graph_of("When", "A", "Big", "Small", "J")
    graph.add_transition_when("A", "Big", "x > 10")
    graph.add_transition_when("A", "Small", "x <= 10")
    graph.add_transition("Big", "J")
    graph.add_transition("Small", "J")
    graph.set_fan_in("J")
    graph.add_transition("J", END)
    calls: list[str] = []
    handlers = {name: tracer(calls, name) for name in ("A", "Big", "Small", "J")}
    engine = await make_engine(proxy_with("when", graph, **handlers))
    _, outcome = await engine.run("when", {"x": 42}, timeout=WAIT)
    assert outcome.status == Status.COMPLETED
    assert outcome.state["trail"] == ["A", "Big", "J"]
    assert calls == ["A", "Big", "J"]


async def test_when_evaluates_the_state_merged_with_the_tasks_own_changes(make_engine: Any) -> None:
    graph = graph_of("WhenChanges", "A", "Next")
    graph.add_transition_when("A", "Next", "ready == true")
    graph.add_transition("Next", END)
    engine = await make_engine(proxy_with("when", graph, A=setter(ready=True), Next=setter(reached=True)))
    _, outcome = await engine.run("when", {"ready": False}, timeout=WAIT)
    assert outcome.state == {"ready": True, "reached": True}


async def test_when_with_no_match_completes_the_flow_at_the_source(make_engine: Any) -> None:
    graph = graph_of("NoMatch", "A", "B")
    graph.add_transition_when("A", "B", "x > 10")
    graph.add_transition("B", END)
    calls: list[str] = []
    engine = await make_engine(proxy_with("nomatch", graph, A=tracer(calls, "A"), B=tracer(calls, "B")))
    key, outcome = await engine.run("nomatch", {"x": 1}, timeout=WAIT)
    assert outcome.status == Status.COMPLETED
    assert outcome.state == {"x": 1, "trail": ["A"]}
    assert [step.task_name for step in await engine.history(key)] == ["A"]


async def test_switch_fires_only_the_first_true_case(make_engine: Any) -> None:
    graph = graph_of("Switch", "A", "First", "Second", "Default")
    graph.add_transition_switch("A", "First", "x > 1")
    graph.add_transition_switch("A", "Second", "x > 0")
    graph.add_transition_switch("A", "Default", "true")
    for node in ("First", "Second", "Default"):
        graph.add_transition(node, END)
    calls: list[str] = []
    handlers = {name: tracer(calls, name) for name in ("A", "First", "Second", "Default")}
    engine = await make_engine(proxy_with("switch", graph, **handlers))
    _, outcome = await engine.run("switch", {"x": 5}, timeout=WAIT)
    assert outcome.state["trail"] == ["A", "First"]
    assert calls == ["A", "First"]


async def test_switch_falls_through_to_a_later_case_when_earlier_ones_are_false(make_engine: Any) -> None:
    graph = graph_of("Switch", "A", "First", "Default")
    graph.add_transition_switch("A", "First", "x > 1")
    graph.add_transition_switch("A", "Default", "true")
    graph.add_transition("First", END)
    graph.add_transition("Default", END)
    calls: list[str] = []
    handlers = {name: tracer(calls, name) for name in ("A", "First", "Default")}
    engine = await make_engine(proxy_with("switch", graph, **handlers))
    _, outcome = await engine.run("switch", {"x": 0}, timeout=WAIT)
    assert outcome.state["trail"] == ["A", "Default"]


async def test_switch_with_no_true_case_completes_the_flow(make_engine: Any) -> None:
    graph = graph_of("SwitchNone", "A", "B")
    graph.add_transition_switch("A", "B", "x > 1")
    graph.add_transition("B", END)
    calls: list[str] = []
    engine = await make_engine(proxy_with("switch", graph, A=tracer(calls, "A"), B=tracer(calls, "B")))
    _, outcome = await engine.run("switch", {"x": 0}, timeout=WAIT)
    assert outcome.status == Status.COMPLETED
    assert outcome.state == {"x": 0, "trail": ["A"]}
    assert calls == ["A"]


def _goto_graph() -> Any:
    graph = graph_of("Goto", "A", "Jump", "Walk")
    graph.add_transition_goto("A", "Jump")
    graph.add_transition("A", "Walk")
    graph.add_transition("Jump", END)
    graph.add_transition("Walk", END)
    return graph


async def test_goto_replaces_the_evaluation_of_transitions(make_engine: Any) -> None:
    calls: list[str] = []

    async def a(flow: Flow) -> None:
        calls.append("A")
        flow.goto("Jump")

    engine = await make_engine(
        proxy_with("goto", _goto_graph(), A=a, Jump=tracer(calls, "Jump"), Walk=tracer(calls, "Walk"))
    )
    _, outcome = await engine.run("goto", timeout=WAIT)
    assert outcome.status == Status.COMPLETED
    assert calls == ["A", "Jump"]


async def test_goto_transition_never_fires_by_evaluation(make_engine: Any) -> None:
    calls: list[str] = []
    engine = await make_engine(
        proxy_with(
            "goto",
            _goto_graph(),
            A=tracer(calls, "A"),
            Jump=tracer(calls, "Jump"),
            Walk=tracer(calls, "Walk"),
        )
    )
    _, outcome = await engine.run("goto", timeout=WAIT)
    assert outcome.status == Status.COMPLETED
    assert calls == ["A", "Walk"]


async def test_goto_to_an_unregistered_target_fails_the_step_and_the_flow(make_engine: Any) -> None:
    calls: list[str] = []

    async def a(flow: Flow) -> None:
        flow.set("before", True)
        flow.goto("Walk")  # Walk is a plain successor, not a goto transition of A

    engine = await make_engine(
        proxy_with("goto", _goto_graph(), A=a, Jump=tracer(calls, "Jump"), Walk=tracer(calls, "Walk"))
    )
    key, outcome = await engine.run("goto", timeout=WAIT)
    assert outcome.status == Status.FAILED
    assert "Walk" in outcome.error
    [step] = await engine.history(key)
    assert step.status == Status.FAILED
    assert calls == []


async def test_goto_to_an_unregistered_target_routes_via_on_error(make_engine: Any) -> None:
    graph = graph_of("GotoOnError", "A", "B", "Handler")
    graph.add_transition("A", "B")
    graph.add_transition_on_error("A", "Handler")
    graph.add_transition("B", END)
    graph.add_transition("Handler", END)

    async def a(flow: Flow) -> None:
        flow.goto("Nowhere")

    calls: list[str] = []
    engine = await make_engine(
        proxy_with("goto", graph, A=a, B=tracer(calls, "B"), Handler=tracer(calls, "Handler"))
    )
    _, outcome = await engine.run("goto", timeout=WAIT)
    assert outcome.status == Status.COMPLETED
    assert calls == ["Handler"]
    assert "Nowhere" in outcome.state["onErr"]["error"]


async def test_goto_end_completes_the_flow(make_engine: Any) -> None:
    graph = graph_of("GotoEnd", "A", "B")
    graph.add_transition_goto("A", END)
    graph.add_transition("A", "B")
    graph.add_transition("B", END)

    async def a(flow: Flow) -> None:
        flow.set("done", True)
        flow.goto(END)

    calls: list[str] = []
    engine = await make_engine(proxy_with("gotoend", graph, A=a, B=tracer(calls, "B")))
    _, outcome = await engine.run("gotoend", timeout=WAIT)
    assert outcome.status == Status.COMPLETED
    assert outcome.state == {"done": True}
    assert calls == []


async def test_transition_to_end_completes_the_flow_with_the_final_state(make_engine: Any) -> None:
    engine = await make_engine(proxy_with("end", chain("End", "A"), A=setter(result="ok")))
    _, outcome = await engine.run("end", {"input": 1}, timeout=WAIT)
    assert outcome.status == Status.COMPLETED
    assert outcome.state == {"input": 1, "result": "ok"}


async def test_deleted_field_is_absent_from_the_next_steps_input(make_engine: Any) -> None:
    async def a(flow: Flow) -> None:
        flow.delete("secret")

    seen: list[dict[str, Any]] = []

    async def b(flow: Flow) -> None:
        seen.append(flow.snapshot())

    engine = await make_engine(proxy_with("del", chain("Del", "A", "B"), A=a, B=b))
    _, outcome = await engine.run("del", {"secret": "x", "kept": 1}, timeout=WAIT)
    assert seen == [{"kept": 1}]
    assert outcome.state == {"kept": 1}
