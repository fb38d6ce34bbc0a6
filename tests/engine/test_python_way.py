"""Workflows written the Python way, end to end on both backends: task references, retry policies, typed
state and the early refusals (docs/graphs.md#nodes-and-urls, docs/tasks.md#a-retry-policy-per-task,
docs/tasks.md#typed-state, docs/graphs.md#strict-graphs, docs/hosts.md#localhost)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pytest

from dwarf import (
    END,
    Flow,
    FlowOptions,
    Graph,
    InvalidGraphError,
    Retry,
    Status,
    TestProxy,
)
from tests.engine.graphs import WAIT, chain, steps_named, wait_until

FAST = Retry(attempts=3, initial_delay=0.01, backoff=1.0)


def _flaky(failures: int, calls: list[int]) -> Any:
    async def handler(flow: Flow) -> None:
        calls.append(flow.attempt)
        flow.append("attempts", flow.attempt)
        if flow.attempt < failures:
            raise ConnectionError(f"unavailable on attempt {flow.attempt}")
        flow.set("done", True)

    return handler


# --- task references ---


async def test_a_graph_built_from_task_references_runs_and_keeps_the_urls(make_engine: Any) -> None:
    proxy = TestProxy()

    @proxy.task("plans/draft")
    async def draft(flow: Flow) -> None:
        flow.set("plan", ["a", "b"])

    @proxy.task
    def act(flow: Flow) -> None:
        flow.set("acted", len(flow.get("plan", [])))

    graph = Graph("Agent")
    graph.add_task("Draft", draft)
    graph.add_task("Act", act)
    graph.add_transition_chain("Draft", "Act", END)
    proxy.handle_graph("agent", graph)
    engine = await make_engine(proxy)
    key, outcome = await engine.run("agent", timeout=WAIT)
    assert outcome.status == Status.COMPLETED and outcome.state["acted"] == 2
    assert [step.task_name for step in await engine.history(key)] == ["Draft", "Act"]
    urls = {node.name: node.url for node in graph.nodes}
    assert urls == {
        "Draft": "plans/draft",
        "Act": "test_a_graph_built_from_task_references_runs_and_keeps_the_urls.<locals>.act",
    }
    # History shows the URL each step ran at, derived or given.
    assert {step.task_name: step.task_url for step in await engine.history(key)} == urls


# --- retry policies ---


async def test_a_retry_policy_runs_the_task_again_until_it_succeeds(make_engine: Any) -> None:
    calls: list[int] = []
    proxy = TestProxy()
    proxy.handle_graph("flaky", chain("Flaky", "Call"))
    proxy.handle_task("Call", _flaky(2, calls), retry=FAST)
    engine = await make_engine(proxy)
    key, outcome = await engine.run("flaky", timeout=WAIT)
    assert outcome.status == Status.COMPLETED
    assert calls == [0, 1, 2]
    assert outcome.state["attempts"] == [0, 1, 2]  # each attempt sees what the one before wrote
    [step] = await engine.history(key)
    assert (step.attempt, step.status, step.error) == (2, Status.COMPLETED, "")


async def test_exhausted_attempts_fail_the_flow_with_the_last_error(make_engine: Any) -> None:
    calls: list[int] = []
    proxy = TestProxy()
    proxy.handle_graph("flaky", chain("Flaky", "Call"))
    proxy.handle_task("Call", _flaky(10, calls), retry=FAST)
    engine = await make_engine(proxy)
    key, outcome = await engine.run("flaky", timeout=WAIT)
    assert outcome.status == Status.FAILED
    assert outcome.error == "unavailable on attempt 2"
    assert calls == [0, 1, 2]
    [step] = await engine.history(key)
    assert (step.attempt, step.status) == (2, Status.FAILED)


async def test_exhausted_attempts_are_routed_by_on_error(make_engine: Any) -> None:
    calls: list[int] = []
    graph = Graph("Guarded")
    graph.add_task("Call", "Call")
    graph.add_task("Fallback", "Fallback")
    graph.add_transition("Call", END)
    graph.add_transition_on_error("Call", "Fallback")
    graph.add_transition("Fallback", END)
    proxy = TestProxy()
    proxy.handle_graph("guarded", graph)
    proxy.handle_task("Call", _flaky(10, calls), retry=Retry(attempts=2, initial_delay=0))
    proxy.handle_task("Fallback", lambda flow: flow.set("fellBack", flow.get("onErr")["error"]))
    engine = await make_engine(proxy)
    _, outcome = await engine.run("guarded", timeout=WAIT)
    assert outcome.status == Status.COMPLETED
    assert outcome.state["fellBack"] == "unavailable on attempt 1"
    assert calls == [0, 1]


async def test_a_waiting_retry_shows_the_attempts_error_and_counts_attempts(make_engine: Any) -> None:
    calls: list[int] = []
    proxy = TestProxy()
    proxy.handle_graph("slow", chain("Slow", "Call"))
    proxy.handle_task("Call", _flaky(10, calls), retry=Retry(attempts=5, initial_delay=60))
    engine = await make_engine(proxy)
    key = await engine.create("slow")

    async def retried() -> bool:
        steps = await engine.history(key)
        return bool(steps) and steps[0].attempt == 1

    await wait_until(retried)
    [step] = await engine.history(key)
    assert (step.status, step.error) == (Status.PENDING, "unavailable on attempt 0")
    assert calls == [0]  # the next attempt waits its delay (60 s), not run at once
    await engine.cancel(key)


async def test_a_task_that_decides_with_flow_retry_is_not_retried_by_the_policy(make_engine: Any) -> None:
    calls: list[int] = []

    async def decides(flow: Flow) -> None:
        calls.append(flow.attempt)
        if flow.retry(0, 1, 0, 0.000001):  # the horizon has passed: gives up
            return
        raise RuntimeError("gave up")

    proxy = TestProxy()
    proxy.handle_graph("decides", chain("Decides", "Call"))
    proxy.handle_task("Call", decides, retry=Retry(attempts=5, initial_delay=0))
    engine = await make_engine(proxy)
    _, outcome = await engine.run("decides", timeout=WAIT)
    assert (outcome.status, outcome.error, calls) == (Status.FAILED, "gave up", [0])


# --- typed state ---


@dataclass
class Order:
    sku: str
    qty: int
    note: str | None = None


async def test_typed_state_reads_and_writes_back_only_what_changed(make_engine: Any) -> None:
    proxy = TestProxy()

    @proxy.task("orders/double", retry=FAST)
    def double(flow: Flow) -> None:
        order = flow.state_as(Order)
        order.qty *= 2
        flow.set_from(order)

    graph = Graph("Orders")
    graph.add_task("Double", double)
    graph.add_transition("Double", END)
    proxy.handle_graph("orders", graph)
    engine = await make_engine(proxy)
    key, outcome = await engine.run("orders", {"sku": "pen", "qty": 2.0, "other": 1}, timeout=WAIT)
    assert outcome.state == {"sku": "pen", "qty": 4, "other": 1}
    [step] = await engine.history(key)
    assert step.changes == {"qty": 4}

    # A state that does not fit fails the step at once (no retry can fix the state) with every problem.
    key, outcome = await engine.run("orders", {"qty": "two"}, timeout=WAIT)
    assert outcome.status == Status.FAILED
    assert outcome.error == (
        "the state does not fit Order: field 'sku' is missing; field 'qty' must be an integer, not a string"
    )
    [step] = await engine.history(key)
    assert step.attempt == 0


# --- typos caught early ---


async def test_create_refuses_a_graph_with_a_task_the_host_does_not_serve(make_engine: Any) -> None:
    graph = chain("Typo", "Plan", "Act")
    graph.add_task("Act", "Actt")  # the typo
    proxy = TestProxy()
    proxy.handle_graph("typo", graph)
    proxy.handle_task("Plan", lambda flow: None)
    proxy.handle_task("Act", lambda flow: None)
    engine = await make_engine(proxy)
    with pytest.raises(InvalidGraphError) as caught:
        await engine.create("typo")
    assert "workflow 'typo'" in str(caught.value) and "'Act' ('Actt')" in str(caught.value)
    assert caught.value.status_code == 400
    assert (await engine.list())[0] == []  # nothing written


async def test_continue_thread_and_subgraphs_check_the_graph_too(make_engine: Any) -> None:
    proxy = TestProxy()
    proxy.handle_graph("parent", chain("Parent", "Spawn"))
    proxy.handle_graph("child", chain("Child", "Missing"))
    proxy.handle_task("Spawn", lambda flow: flow.set("child", flow.subgraph("child")))
    engine = await make_engine(proxy)
    _, outcome = await engine.run("parent", timeout=WAIT)
    assert outcome.status == Status.FAILED  # the child's graph is refused: the spawning task's error
    assert "serves no task for node(s) 'Missing' ('Missing')" in outcome.error

    proxy.handle_graph("thread", chain("Thread", "Spawn"))
    proxy.handle_task("Spawn", lambda flow: flow.set("ran", True))
    key, outcome = await engine.run("thread", timeout=WAIT)
    assert outcome.status == Status.COMPLETED
    proxy.handle_graph("thread", chain("Thread", "Missing"))
    with pytest.raises(InvalidGraphError, match="'Missing'"):
        await engine.continue_thread(key)


async def test_a_host_that_cannot_tell_lets_the_flow_fail_at_the_task(make_engine: Any) -> None:
    proxy = TestProxy()  # no task at all: it may only start flows that others run
    proxy.handle_graph("remote", chain("Remote", "Elsewhere"))
    engine = await make_engine(proxy)
    _, outcome = await engine.run("remote", options=FlowOptions(), timeout=WAIT)
    assert outcome.status == Status.FAILED
    assert "no task is registered for 'Elsewhere'" in outcome.error


# --- strict graphs ---


def _strict_router() -> Graph:
    graph = Graph("Router", strict=True)
    graph.add_task("Review", "Review")
    graph.add_task("Approve", "Approve")
    graph.add_task("Split", "Split")
    graph.add_task("Work", "Work")
    graph.add_task("Join", "Join")
    graph.add_transition_switch("Review", "Approve", "approved")
    graph.add_transition_switch("Review", END, "true")
    graph.add_transition("Approve", "Split")
    graph.add_transition_for_each("Split", "Work", "items", "item")
    graph.add_transition("Work", "Join")
    graph.set_fan_in("Join")
    graph.add_transition("Join", END)
    return graph


async def test_a_strict_graph_fails_a_when_on_a_missing_field_and_a_for_each_on_a_missing_array(
    make_engine: Any,
) -> None:
    proxy = TestProxy()
    proxy.handle_graph("router", _strict_router())
    proxy.handle_task("Review", lambda flow: flow.set("aproved", True))  # the typo, written by the task
    for node in ("Approve", "Split", "Work", "Join"):
        proxy.handle_task(node, lambda flow: None)
    engine = await make_engine(proxy)
    key, outcome = await engine.run("router", timeout=WAIT)
    assert outcome.status == Status.FAILED
    assert "reads field 'approved', which the state does not have" in outcome.error
    [review] = await steps_named(engine, key, "Review")
    assert review.status == Status.FAILED

    proxy.handle_task("Review", lambda flow: flow.set("approved", True))
    _, outcome = await engine.run("router", timeout=WAIT)
    assert outcome.status == Status.FAILED
    assert "forEach of 'Split' over 'items': the state has no field 'items'" in outcome.error

    _, outcome = await engine.run("router", {"items": [1, 2]}, timeout=WAIT)
    assert outcome.status == Status.COMPLETED


async def test_a_strict_routing_error_is_routed_by_on_error(make_engine: Any) -> None:
    graph = Graph("Guarded", strict=True)
    graph.add_task("Check", "Check")
    graph.add_task("Fix", "Fix")
    graph.add_transition_when("Check", END, "ok")
    graph.add_transition_on_error("Check", "Fix")
    graph.add_transition("Fix", END)
    proxy = TestProxy()
    proxy.handle_graph("guarded", graph)
    proxy.handle_task("Check", lambda flow: None)
    proxy.handle_task("Fix", lambda flow: flow.set("fixed", True))
    engine = await make_engine(proxy)
    _, outcome = await engine.run("guarded", timeout=WAIT)
    assert outcome.status == Status.COMPLETED and outcome.state["fixed"] is True
    assert "reads field 'ok'" in outcome.state["onErr"]["error"]
