"""Values no store can hold (hardening issue, item 1): refused where they enter, never a poison step.

A lone surrogate, nesting deeper than ``MAX_JSON_DEPTH``, an int too long to write as text, or NUL in a
name stored in a plain column once made the step's commit fail, and the step ran again every lease period
for ever. Now the one check in ``check_json``/``check_text`` refuses them at ``set``, create, resume, fork,
continue_thread and graph building, and an outcome that still cannot be stored fails the step once.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from typing import Any

import pytest

from dwarf import END, BadRequestError, Flow, FlowOptions, Graph, InvalidGraphError, Status
from dwarf.workflow.jsonvalue import MAX_JSON_DEPTH
from tests.engine.graphs import WAIT, chain, graph_of, noop, proxy_with


def _nested(depth: int) -> list[Any]:
    value: list[Any] = []
    for _ in range(depth):
        value = [value]
    return value


UNSTORABLE = {
    "lone-surrogate": "x\udc00y",
    "surrogate-in-a-key": {"k\ud800": 1},
    "too-deep": _nested(MAX_JSON_DEPTH + 10),
    "int-of-5000-digits": 10**5000,
}


@pytest.mark.parametrize("value", UNSTORABLE.values(), ids=UNSTORABLE.keys())
async def test_a_task_setting_an_unstorable_value_fails_the_flow_once_with_a_clear_error(
    make_engine: Any, value: Any
) -> None:
    runs: Counter[str] = Counter()

    async def write(flow: Flow) -> None:
        runs["A"] += 1
        flow.set("v", value)

    engine = await make_engine(proxy_with("poison", chain("Poison", "A"), A=write))
    _, outcome = await engine.run("poison", timeout=WAIT)
    assert outcome.status == Status.FAILED
    assert "cannot be stored" in outcome.error
    assert runs["A"] == 1


async def test_an_outcome_the_database_refuses_fails_the_step_once_and_keeps_none_of_its_writes(
    make_engine: Any,
) -> None:
    """The safety net behind the check: a value that slipped past it fails the step, it does not loop."""
    runs: Counter[str] = Counter()

    async def sneak(flow: Flow) -> None:
        runs["A"] += 1
        flow.set("kept", "no")
        flow._changes["bad"] = "\udfff"  # bypasses set's check, as a gap in it would

    engine = await make_engine(proxy_with("sneak", chain("Sneak", "A", "B"), A=sneak, B=noop))
    key, outcome = await engine.run("sneak", {"in": 1}, timeout=WAIT)
    assert outcome.status == Status.FAILED
    assert "could not be stored" in outcome.error
    assert runs["A"] == 1
    assert outcome.state == {"in": 1}
    [step] = await engine.history(key)
    assert step.status == Status.FAILED and step.attempt == 0 and step.changes == {}


async def test_an_unstorable_outcome_is_routed_by_on_error_like_any_task_error(make_engine: Any) -> None:
    graph = graph_of("Routed", "A", "Handle")
    graph.add_transition("A", END)
    graph.add_transition_on_error("A", "Handle")
    graph.add_transition("Handle", END)

    async def sneak(flow: Flow) -> None:
        flow._changes["bad"] = "\ud800"

    async def handle(flow: Flow) -> None:
        flow.set("handled", flow.get("onErr")["error"])

    engine = await make_engine(proxy_with("routed", graph, A=sneak, Handle=handle))
    _, outcome = await engine.run("routed", timeout=WAIT)
    assert outcome.status == Status.COMPLETED, outcome.error
    assert "could not be stored" in outcome.state["handled"]


async def test_an_exception_message_with_nul_and_surrogates_is_recorded_escaped(make_engine: Any) -> None:
    async def fail(flow: Flow) -> None:
        raise RuntimeError("bad\x00byte and \ud800 half")

    engine = await make_engine(proxy_with("nul", chain("Nul", "A"), A=fail))
    key, outcome = await engine.run("nul", timeout=WAIT)
    assert outcome.status == Status.FAILED
    assert outcome.error == "bad\\x00byte and \\ud800 half"
    assert (await engine.history(key))[0].error == outcome.error


@pytest.mark.parametrize("value", UNSTORABLE.values(), ids=UNSTORABLE.keys())
async def test_create_with_unstorable_state_is_a_bad_request_with_nothing_written(
    make_engine: Any, value: Any
) -> None:
    engine = await make_engine(proxy_with("one", chain("One", "A"), A=noop))
    with pytest.raises(BadRequestError, match="cannot be stored"):
        await engine.create("one", {"v": value})
    with pytest.raises(BadRequestError, match="cannot be stored"):
        await engine.create("one", {}, FlowOptions(baggage={"v": value}))
    page, _ = await engine.list()
    assert page == []


async def test_resume_fork_and_continue_refuse_unstorable_state(make_engine: Any) -> None:
    async def ask(flow: Flow) -> None:
        flow.interrupt({"q": 1})

    engine = await make_engine(proxy_with("ask", chain("Ask", "A"), A=ask))
    key, outcome = await engine.run("ask", timeout=WAIT)
    assert outcome.status == Status.INTERRUPTED
    with pytest.raises(BadRequestError, match="cannot be stored"):
        await engine.resume(key, {"answer": "\ud800"})
    assert (await engine.snapshot(key)).status == Status.INTERRUPTED
    await engine.resume(key, {"answer": 1})
    assert (await engine.wait(key, timeout=WAIT)).status == Status.COMPLETED
    step_key = (await engine.history(key))[0].step_key
    with pytest.raises(BadRequestError, match="cannot be stored"):
        await engine.fork(step_key, {"deep": _nested(MAX_JSON_DEPTH + 1)})
    with pytest.raises(BadRequestError, match="cannot be stored"):
        await engine.continue_thread(key, {"n": 10**5000})
    page, _ = await engine.list()
    assert len(page) == 1


@pytest.mark.parametrize(
    "build",
    [
        lambda g: g.add_task("Bad\x00Node", "url"),
        lambda g: g.add_task("Node", "url\x00"),
        lambda g: g.add_task("Bad\ud800", "url"),
        lambda g: g.add_transition_for_each("A", "A", "items\x00", "item"),
    ],
    ids=["nul-in-node", "nul-in-url", "surrogate-in-node", "nul-in-for-each-field"],
)
def test_graph_names_no_store_can_hold_are_invalid_at_once(build: Any) -> None:
    graph = Graph("g")
    graph.add_task("A", "A")
    with pytest.raises(InvalidGraphError, match=r"NUL|surrogate"):
        build(graph)


def test_a_graph_from_json_with_a_nul_node_name_is_refused_when_loaded() -> None:
    document = chain("Nul", "A").to_json().replace('"A"', '"A\\u0000"')
    with pytest.raises(InvalidGraphError, match="NUL"):
        Graph.from_json(document)


@pytest.mark.parametrize(
    "options",
    [
        FlowOptions(fairness_key="tenant\x00"),
        FlowOptions(priority=2**63),
        FlowOptions(time_budget=1e30),
    ],
    ids=["nul-fairness-key", "priority-beyond-64-bits", "absurd-time-budget"],
)
async def test_options_no_store_can_hold_are_a_bad_request(make_engine: Any, options: FlowOptions) -> None:
    engine = await make_engine(proxy_with("one", chain("One", "A"), A=noop))
    with pytest.raises(BadRequestError):
        await engine.create("one", {}, options)


async def test_a_cancel_reason_or_workflow_url_with_nul_is_a_bad_request(make_engine: Any) -> None:
    gate = asyncio.Event()

    async def wait(flow: Flow) -> None:
        await gate.wait()

    engine = await make_engine(proxy_with("one", chain("One", "A"), A=wait))
    with pytest.raises(BadRequestError, match="NUL"):
        await engine.create("one\x00")
    key = await engine.create("one")
    with pytest.raises(BadRequestError, match="NUL"):
        await engine.cancel(key, "because\x00")
    await engine.cancel(key, "because")
    gate.set()
    assert (await engine.wait(key, timeout=WAIT)).status == Status.CANCELLED
