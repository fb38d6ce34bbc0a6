"""Child flows (docs/fan-out-and-subgraphs.md#subgraphs-calling-a-workflow): history, list, cancel, delete
and resume on child keys."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from dwarf import (
    END,
    BadRequestError,
    ConflictError,
    Flow,
    FlowOptions,
    Query,
    Reducer,
    Status,
    SubgraphError,
    current_baggage,
)
from dwarf.engine import TestProxy
from tests.engine.graphs import WAIT, Gate, chain, failing, for_each, graph_of, noop, setter, wait_until
from tests.engine.graphs_parallel import (
    Runs,
    calls_subgraph,
    child_summaries,
    single,
    summaries,
    wait_for_status,
)


def _parent_and_child(child_handler: Any, parent_handler: Any | None = None) -> TestProxy:
    """Workflow ``parent`` (node Call, which runs ``child``) and workflow ``child`` (node Child)."""
    proxy = TestProxy()
    proxy.handle_graph("parent", single("Parent", "Call"))
    proxy.handle_graph("child", single("ChildFlow", "Child"))
    proxy.handle_task("Call", parent_handler or calls_subgraph("child", input_field="input"))
    proxy.handle_task("Child", child_handler)
    return proxy


async def test_child_starts_with_exactly_the_input_and_returns_its_final_state(make_engine: Any) -> None:
    seen: list[dict[str, Any]] = []

    async def child(flow: Flow) -> None:
        seen.append(flow.snapshot())
        flow.set("doubled", flow.get_int("n") * 2)

    engine = await make_engine(_parent_and_child(child))
    _, outcome = await engine.run("parent", {"input": {"n": 21}, "secret": "parent only"}, timeout=WAIT)
    assert outcome.status == Status.COMPLETED, outcome.error
    assert seen == [{"n": 21}]
    assert outcome.state == {"input": {"n": 21}, "secret": "parent only", "result": {"n": 21, "doubled": 42}}


async def test_parent_step_parks_and_re_runs_when_the_child_completes(make_engine: Any) -> None:
    runs = Runs()
    child_gate = Gate()

    async def call(flow: Flow) -> None:
        runs.count("Call")
        flow.set("result", flow.subgraph("child", {}))

    async def child(flow: Flow) -> None:
        await child_gate.pass_through()
        flow.set("done", True)

    engine = await make_engine(_parent_and_child(child, call))
    key = await engine.create("parent")
    await child_gate.wait_entered()
    assert runs["Call"] == 1
    [parked] = [step for step in await engine.history(key) if step.task_name == "Call"]
    assert parked.parked
    assert parked.subgraph
    child_gate.open()
    outcome = await engine.wait(key, timeout=WAIT)
    assert outcome.status == Status.COMPLETED
    assert outcome.state == {"result": {"done": True}}
    assert runs["Call"] == 2


async def test_child_inherits_the_parents_baggage(make_engine: Any) -> None:
    seen: list[Any] = []

    async def child(flow: Flow) -> None:
        seen.append(current_baggage())

    engine = await make_engine(_parent_and_child(child))
    _, outcome = await engine.run("parent", options=FlowOptions(baggage={"tenant": "acme"}), timeout=WAIT)
    assert outcome.status == Status.COMPLETED
    assert seen == [{"tenant": "acme"}]


async def test_failed_child_raises_subgraph_error_that_the_parent_can_handle(make_engine: Any) -> None:
    async def call(flow: Flow) -> None:
        try:
            flow.subgraph("child", {})
        except SubgraphError as error:
            flow.set("handled", str(error))

    engine = await make_engine(_parent_and_child(failing("the child broke"), call))
    _, outcome = await engine.run("parent", timeout=WAIT)
    assert outcome.status == Status.COMPLETED, outcome.error
    assert "the child broke" in outcome.state["handled"]


async def test_failed_child_fails_the_parent_with_the_childs_error_when_uncaught(make_engine: Any) -> None:
    engine = await make_engine(_parent_and_child(failing("the child broke")))
    _, outcome = await engine.run("parent", timeout=WAIT)
    assert outcome.status == Status.FAILED
    assert "the child broke" in outcome.error
    [child] = await child_summaries(engine)
    assert child.status == Status.FAILED


async def test_subgraphs_nest_three_levels_deep(make_engine: Any) -> None:
    proxy = TestProxy()
    for level in range(4):
        proxy.handle_graph(f"level{level}", single(f"Level{level}", f"L{level}"))

    def level_task(level: int) -> Any:
        async def handler(flow: Flow) -> None:
            path = [*flow.get("path", []), f"in{level}"]
            if level < 3:
                path = flow.subgraph(f"level{level + 1}", {"path": path})["path"]
            flow.set("path", [*path, f"out{level}"])

        return handler

    for level in range(4):
        proxy.handle_task(f"L{level}", level_task(level))
    engine = await make_engine(proxy)
    key, outcome = await engine.run("level0", timeout=WAIT)
    assert outcome.status == Status.COMPLETED, outcome.error
    assert outcome.state["path"] == ["in0", "in1", "in2", "in3", "out3", "out2", "out1", "out0"]
    assert len(await child_summaries(engine)) == 3
    history = await engine.history(key)
    depth = 0
    while history:
        [step] = history
        history = step.sub_history
        depth += 1
    assert depth == 4


async def test_child_key_is_refused_by_cancel_delete_and_resume_with_bad_request(make_engine: Any) -> None:
    gate = Gate()

    async def child(flow: Flow) -> None:
        await gate.pass_through()

    engine = await make_engine(_parent_and_child(child))
    key = await engine.create("parent")
    try:
        await gate.wait_entered()
        [summary] = await child_summaries(engine)
        operations = {
            "cancel": lambda: engine.cancel(summary.flow_key),
            "delete": lambda: engine.delete(summary.flow_key),
            "resume": lambda: engine.resume(summary.flow_key, {}),
        }
        for name, operation in operations.items():
            with pytest.raises(BadRequestError):
                await operation()
                pytest.fail(f"{name} of a child key did not raise BadRequestError")
    finally:
        gate.open()
    outcome = await engine.wait(key, timeout=WAIT)
    assert outcome.status == Status.COMPLETED


async def test_cancel_of_the_root_cancels_the_child(make_engine: Any) -> None:
    gate = Gate()

    async def child(flow: Flow) -> None:
        await gate.pass_through()

    engine = await make_engine(_parent_and_child(child))
    key = await engine.create("parent")
    await gate.wait_entered()
    [summary] = await child_summaries(engine)
    await engine.cancel(key, "stop it")
    gate.open()
    outcome = await engine.wait(key, timeout=WAIT)
    assert outcome.status == Status.CANCELLED
    await wait_for_status(engine, summary.flow_key, Status.CANCELLED)
    [summary] = await child_summaries(engine)
    assert summary.status == Status.CANCELLED


async def test_history_nests_the_child_under_the_parking_step(make_engine: Any) -> None:
    proxy = _parent_and_child(noop)
    proxy.handle_graph("child", chain("ChildFlow", "Child", "Child2"))
    proxy.handle_task("Child2", noop)
    engine = await make_engine(proxy)
    key, outcome = await engine.run("parent", timeout=WAIT)
    assert outcome.status == Status.COMPLETED
    [call] = await engine.history(key)
    assert call.task_name == "Call"
    assert call.subgraph
    assert call.sub_workflow_url == "child"
    assert call.sub_workflow_name == "ChildFlow"
    assert [step.task_name for step in call.sub_history] == ["Child", "Child2"]
    assert all(step.status == Status.COMPLETED for step in call.sub_history)


async def test_history_gives_the_key_of_each_child_flow(make_engine: Any) -> None:
    engine = await make_engine(_parent_and_child(noop))
    key, _ = await engine.run("parent", timeout=WAIT)
    [call] = await engine.history(key)
    children, _ = await engine.list(Query(include_subgraphs=True))
    assert call.sub_flow_key in {summary.flow_key for summary in children if summary.subgraph}
    child = await engine.snapshot(call.sub_flow_key)
    assert child.status == Status.COMPLETED
    assert [step.step_key for step in await engine.history(call.sub_flow_key)] == [
        step.step_key for step in call.sub_history
    ]


async def test_list_excludes_children_unless_include_subgraphs(make_engine: Any) -> None:
    engine = await make_engine(_parent_and_child(noop))
    key, _ = await engine.run("parent", timeout=WAIT)
    assert [s.flow_key for s in await summaries(engine)] == [key]
    everything = await summaries(engine, Query(include_subgraphs=True))
    assert len(everything) == 2
    [child] = [s for s in everything if s.flow_key != key]
    assert child.subgraph
    assert child.workflow_url == "child"
    assert not next(s for s in everything if s.flow_key == key).subgraph


async def test_unknown_child_workflow_fails_the_parent_step_with_not_found(make_engine: Any) -> None:
    proxy = _parent_and_child(noop, calls_subgraph("no-such-workflow"))
    engine = await make_engine(proxy)
    key, outcome = await engine.run("parent", timeout=WAIT)
    assert outcome.status == Status.FAILED
    assert "not found" in outcome.error.lower()
    assert "no-such-workflow" in outcome.error
    [call] = await engine.history(key)
    assert call.status == Status.FAILED
    assert await child_summaries(engine) == []


async def test_history_mermaid_draws_the_child_as_a_subgraph_block(make_engine: Any) -> None:
    engine = await make_engine(_parent_and_child(noop))
    key, _ = await engine.run("parent", timeout=WAIT)
    diagram = await engine.history_mermaid(key)
    lines = [line.strip() for line in diagram.splitlines()]
    blocks = [line for line in lines if line.startswith("subgraph ")]
    assert len(blocks) == 1
    assert "ChildFlow" in blocks[0]
    assert "end" in lines


async def test_child_runs_on_the_parents_shard_and_priority(make_engine: Any) -> None:
    engine = await make_engine(_parent_and_child(noop))
    key, _ = await engine.run(
        "parent", options=FlowOptions(priority=7, fairness_key="tenant-a"), timeout=WAIT
    )
    [child] = await child_summaries(engine)
    assert child.flow_key.split("-")[0] == key.split("-")[0]
    assert (child.priority, child.fairness_key) == (7, "tenant-a")


async def test_parent_waits_for_the_child_before_running_on(make_engine: Any) -> None:
    runs = Runs()
    gate = Gate()

    async def child(flow: Flow) -> None:
        runs.count("Child")
        await gate.pass_through()

    async def after(flow: Flow) -> None:
        runs.count("After")

    proxy = _parent_and_child(child)
    proxy.handle_graph("parent", chain("Parent", "Call", "After"))
    proxy.handle_task("After", after)
    engine = await make_engine(proxy)
    key = await engine.create("parent")
    await gate.wait_entered()

    async def child_running() -> bool:
        return [s.status for s in await child_summaries(engine)] == [Status.RUNNING]

    await wait_until(child_running)
    assert runs["After"] == 0
    gate.open()
    assert (await engine.wait(key, timeout=WAIT)).status == Status.COMPLETED
    assert runs.order == ["Child", "After"]


async def test_fan_out_branches_each_run_a_child_and_the_fan_in_merges_their_results(
    make_engine: Any,
) -> None:
    async def work(flow: Flow) -> None:
        result = flow.subgraph("child", {"n": flow.get_int("item")})
        flow.set("total", result["squared"])

    async def child(flow: Flow) -> None:
        flow.set("squared", flow.get_int("n") ** 2)

    proxy = TestProxy()
    proxy.handle_graph("parent", for_each("Squares", reducers={"total": Reducer.ADD}))
    proxy.handle_graph("child", single("Square", "Child"))
    for name, handler in {"Split": noop, "Work": work, "Join": noop, "Child": child}.items():
        proxy.handle_task(name, handler)
    engine = await make_engine(proxy)
    _, outcome = await engine.run("parent", {"items": [1, 2, 3], "total": 0}, timeout=WAIT)
    assert outcome.status == Status.COMPLETED, outcome.error
    assert outcome.state == {"items": [1, 2, 3], "total": 14}
    assert len(await child_summaries(engine)) == 3


async def test_a_child_graph_whose_host_fails_to_load_it_fails_the_parent_step_once(make_engine: Any) -> None:
    """Not an engine failure that re-runs the step every lease period: the task's own error."""
    runs = Runs()

    class FailingChildHost(TestProxy):
        async def load_graph(self, workflow_url: str) -> Any:
            if workflow_url == "child":
                raise RuntimeError("the graph service answered 503")
            return await super().load_graph(workflow_url)

    async def call(flow: Flow) -> None:
        runs.count("Call")
        flow.subgraph("child", {})

    proxy = FailingChildHost()
    proxy.handle_graph("parent", single("Parent", "Call"))
    proxy.handle_task("Call", call)
    engine = await make_engine(proxy)
    _, outcome = await engine.run("parent", timeout=WAIT)
    assert outcome.status == Status.FAILED
    assert outcome.error == "the graph service answered 503"
    assert runs.counts["Call"] == 1


def _branches_with_a_child(calls: Any, child: Any, grandchild: Any = None) -> TestProxy:
    """``parent``: one forEach branch per item; ``Work`` runs ``calls`` (item "call") or fails when the
    test says so (item "fail"). ``child`` runs ``child``; ``grandchild`` runs ``grandchild``."""
    proxy = TestProxy()
    proxy.handle_graph("parent", for_each("Branches"))
    proxy.handle_graph("child", single("ChildFlow", "Child"))
    proxy.handle_graph("grandchild", single("GrandchildFlow", "Grandchild"))
    for name, handler in {"Split": noop, "Work": calls, "Join": noop, "Child": child}.items():
        proxy.handle_task(name, handler)
    if grandchild is not None:
        proxy.handle_task("Grandchild", grandchild)
    return proxy


def _call_or_fail(child_gate: Gate, error: str) -> Any:
    """``Work`` of ``_branches_with_a_child``: item "call" runs the child flow; any other item raises
    ``error`` once the child's task has started."""

    async def work(flow: Flow) -> None:
        if flow.get_str("item") == "call":
            flow.set("result", flow.subgraph("child", {}))
            return
        await child_gate.wait_entered()
        raise RuntimeError(error)

    return work


async def test_a_branch_that_fails_the_flow_cancels_the_child_flow_a_sibling_was_waiting_on(
    make_engine: Any,
) -> None:
    """Docs/fan-out-and-subgraphs.md#trees-of-flows: nothing would read the child's result any more, so
    it is cancelled (not left running, which kept the tree from ever being deleted)."""
    child_gate = Gate()

    async def child(flow: Flow) -> None:
        await child_gate.pass_through()
        flow.set("done", True)

    engine = await make_engine(
        _branches_with_a_child(_call_or_fail(child_gate, "the other branch broke"), child)
    )
    _, outcome = await engine.run("parent", {"items": ["call", "fail"]}, timeout=WAIT)
    assert outcome.status == Status.FAILED
    assert "the other branch broke" in outcome.error
    [summary] = await child_summaries(engine)
    await wait_for_status(engine, summary.flow_key, Status.CANCELLED)
    child_gate.open()  # the child's task ends now: its commit is refused, its flow stays cancelled
    cancelled = await engine.snapshot(summary.flow_key)
    assert cancelled.status == Status.CANCELLED
    assert "ended without it" in cancelled.cancel_reason


async def test_the_cancel_reaches_an_interrupted_grandchild_and_frees_the_tree_for_delete(
    make_engine: Any,
) -> None:
    """A child waiting on its own child, which waits for an answer: the failure of a sibling branch
    cancels both generations, and the failed root's tree can be deleted."""
    fail_now = asyncio.Event()

    async def work(flow: Flow) -> None:
        if flow.get_str("item") == "call":
            flow.set("result", flow.subgraph("child", {}))
            return
        async with asyncio.timeout(WAIT):
            await fail_now.wait()
        raise RuntimeError("the other branch broke")

    async def child(flow: Flow) -> None:
        flow.set("inner", flow.subgraph("grandchild", {}))

    async def grandchild(flow: Flow) -> None:
        flow.set("answer", flow.interrupt({"question": "go on?"}))

    engine = await make_engine(_branches_with_a_child(work, child, grandchild))
    key = await engine.create("parent", {"items": ["call", "fail"]})

    async def grandchild_waits() -> bool:
        flows = await child_summaries(engine)
        return any(f.workflow_url == "grandchild" and f.status == Status.INTERRUPTED for f in flows)

    await wait_until(grandchild_waits)
    assert (await engine.snapshot(key)).status == Status.INTERRUPTED  # the interrupt surfaced at the root
    fail_now.set()
    await wait_for_status(engine, key, Status.FAILED)
    for summary in await child_summaries(engine):
        await wait_for_status(engine, summary.flow_key, Status.CANCELLED)
    with pytest.raises(ConflictError):
        await engine.resume(key, {"answer": "too late"})
    await engine.delete(key)
    assert await child_summaries(engine) == []


async def test_a_branch_routed_by_on_error_cancels_the_child_flow_of_its_cancelled_sibling(
    make_engine: Any,
) -> None:
    """onError cancels the failing branch's siblings and the flow goes on: the child flow a sibling
    waited on is cancelled with it."""
    child_gate = Gate()

    async def child(flow: Flow) -> None:
        await child_gate.pass_through()

    proxy = _branches_with_a_child(_call_or_fail(child_gate, "handled elsewhere"), child)
    graph = graph_of("Recovering", "Split", "Work", "Join", "Recover")
    graph.add_transition_for_each("Split", "Work", "items", "item")
    graph.add_transition("Work", "Join")
    graph.add_transition_on_error("Work", "Recover")
    graph.set_fan_in("Join")
    graph.add_transition("Join", END)
    graph.add_transition("Recover", "Join")
    proxy.handle_graph("parent", graph)
    proxy.handle_task("Recover", setter(recovered=True))
    engine = await make_engine(proxy)
    _, outcome = await engine.run("parent", {"items": ["call", "fail"]}, timeout=WAIT)
    assert outcome.status == Status.COMPLETED, outcome
    assert outcome.state["recovered"] is True
    [summary] = await child_summaries(engine)
    await wait_for_status(engine, summary.flow_key, Status.CANCELLED)
    child_gate.open()
