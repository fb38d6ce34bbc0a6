"""Human in the loop: interrupts, interrupted cohort members, resume and cancel
(docs/flows.md#interrupts-and-resume, docs/fan-out-and-subgraphs.md#interrupts-inside-branches)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from dwarf import BadRequestError, ConflictError, Flow, Reducer, Status
from dwarf.engine import TestProxy
from tests.engine.graphs import (
    WAIT,
    Gate,
    chain,
    for_each,
    noop,
    proxy_with,
    steps_named,
    wait_for_step,
    wait_until,
)
from tests.engine.graphs_parallel import Runs, calls_subgraph, child_summaries, single


def _asking(runs: Runs | None = None, payload: dict[str, Any] | None = None) -> Any:
    """A task that records ``before`` and then asks; the answer goes into ``answer``."""

    async def ask(flow: Flow) -> None:
        if runs is not None:
            runs.count("Ask")
        flow.set("before", True)
        data = flow.interrupt(payload or {"question": "approve?"})
        flow.set("answer", data.get("answer"))

    return ask


def _ask_proxy(runs: Runs | None = None) -> TestProxy:
    return proxy_with("ask", chain("Ask", "Ask", "After"), Ask=_asking(runs), After=noop)


async def test_interrupt_parks_the_flow_as_interrupted_with_the_payload(make_engine: Any) -> None:
    engine = await make_engine(_ask_proxy())
    key, outcome = await engine.run("ask", {"x": 1}, timeout=WAIT)
    assert outcome.status == Status.INTERRUPTED
    assert outcome.interrupt_payload == {"question": "approve?"}
    snapshot = await engine.snapshot(key)
    assert snapshot.status == Status.INTERRUPTED
    assert snapshot.interrupt_payload == {"question": "approve?"}
    [step] = await engine.history(key)
    assert step.status == Status.INTERRUPTED
    assert step.interrupt_payload == {"question": "approve?"}


async def test_resume_re_runs_the_step_and_interrupt_returns_the_data_without_merging_it(
    make_engine: Any,
) -> None:
    runs = Runs()
    engine = await make_engine(_ask_proxy(runs))
    key, _ = await engine.run("ask", {"x": 1}, timeout=WAIT)
    await engine.resume(key, {"answer": "yes", "note": "not state"})
    outcome = await engine.wait(key, timeout=WAIT)
    assert outcome.status == Status.COMPLETED, outcome.error
    assert outcome.state == {"x": 1, "before": True, "answer": "yes"}
    assert runs["Ask"] == 2


async def test_changes_made_before_interrupting_are_kept(make_engine: Any) -> None:
    seen: list[Any] = []

    async def ask(flow: Flow) -> None:
        seen.append(flow.get("before"))
        flow.set("before", "written before asking")
        flow.interrupt({})

    engine = await make_engine(proxy_with("keep", single("Keep", "Ask"), Ask=ask))
    key, _ = await engine.run("keep", timeout=WAIT)
    assert (await engine.snapshot(key)).state == {"before": "written before asking"}
    await engine.resume(key, {})
    outcome = await engine.wait(key, timeout=WAIT)
    assert outcome.state == {"before": "written before asking"}
    assert seen == [None, "written before asking"]


async def test_resume_of_a_running_flow_is_a_conflict(make_engine: Any) -> None:
    gate = Gate()

    async def blocked(flow: Flow) -> None:
        await gate.pass_through()

    engine = await make_engine(proxy_with("blocked", single("Blocked", "B"), B=blocked))
    key = await engine.create("blocked")
    await gate.wait_entered()
    try:
        with pytest.raises(ConflictError):
            await engine.resume(key, {})
    finally:
        gate.open()
    assert (await engine.wait(key, timeout=WAIT)).status == Status.COMPLETED


async def test_resume_of_a_completed_flow_is_a_conflict(make_engine: Any) -> None:
    engine = await make_engine(proxy_with("done", single("Done", "A"), A=noop))
    key, _ = await engine.run("done", timeout=WAIT)
    with pytest.raises(ConflictError):
        await engine.resume(key, {})


async def test_concurrent_resumes_apply_exactly_once(make_engine: Any) -> None:
    runs = Runs()
    engine = await make_engine(_ask_proxy(runs))
    key, _ = await engine.run("ask", timeout=WAIT)
    results = await asyncio.gather(
        *(engine.resume(key, {"answer": n}) for n in range(5)), return_exceptions=True
    )
    assert sum(1 for r in results if r is None) == 1
    assert [type(r) for r in results if r is not None] == [ConflictError] * 4
    outcome = await engine.wait(key, timeout=WAIT)
    assert outcome.status == Status.COMPLETED
    winner = results.index(None)
    assert outcome.state["answer"] == winner
    assert runs["Ask"] == 2


async def test_interrupt_in_a_child_surfaces_at_the_root_and_resuming_the_root_resumes_the_leaf(
    make_engine: Any,
) -> None:
    proxy = TestProxy()
    proxy.handle_graph("root", single("Root", "CallMid"))
    proxy.handle_graph("mid", single("Mid", "CallLeaf"))
    proxy.handle_graph("leaf", single("Leaf", "Ask"))
    proxy.handle_task("CallMid", calls_subgraph("mid"))
    proxy.handle_task("CallLeaf", calls_subgraph("leaf"))
    proxy.handle_task("Ask", _asking(payload={"from": "leaf"}))
    engine = await make_engine(proxy)
    key, outcome = await engine.run("root", timeout=WAIT)
    assert outcome.status == Status.INTERRUPTED
    assert outcome.interrupt_payload == {"from": "leaf"}
    await engine.resume(key, {"answer": 42})
    outcome = await engine.wait(key, timeout=WAIT)
    assert outcome.status == Status.COMPLETED, outcome.error
    assert outcome.state["result"]["result"] == {"before": True, "answer": 42}


async def test_interrupt_in_a_fan_out_branch_parks_the_flow_and_resume_continues_to_the_fan_in(
    make_engine: Any,
) -> None:
    runs = Runs()

    async def work(flow: Flow) -> None:
        if flow.get_int("item") == 2:
            flow.set("total", flow.interrupt({"item": 2})["value"])
        else:
            flow.set("total", flow.get_int("item"))

    async def join(flow: Flow) -> None:
        runs.count("Join")

    graph = for_each("Branchy", reducers={"total": Reducer.ADD})
    engine = await make_engine(proxy_with("branchy", graph, Split=noop, Work=work, Join=join))
    key, outcome = await engine.run("branchy", {"items": [1, 2, 3], "total": 0}, timeout=WAIT)
    assert outcome.status == Status.INTERRUPTED
    assert outcome.interrupt_payload == {"item": 2}
    assert runs["Join"] == 0
    await engine.resume(key, {"value": 100})
    outcome = await engine.wait(key, timeout=WAIT)
    assert outcome.status == Status.COMPLETED, outcome.error
    assert outcome.state == {"items": [1, 2, 3], "total": 104}
    assert runs["Join"] == 1


async def test_two_interrupting_branches_are_surfaced_one_at_a_time(make_engine: Any) -> None:
    answers: dict[int, Any] = {}

    async def work(flow: Flow) -> None:
        item = flow.get_int("item")
        if item == 1:
            # The first branch asks last, so the interrupt surfaced first is the second branch's.
            await asyncio.sleep(0.3)
        answers[item] = flow.interrupt({"item": item})["answer"]

    engine = await make_engine(proxy_with("two", for_each("Two"), Split=noop, Work=work, Join=noop))
    key = await engine.create("two", {"items": [1, 2]})
    await wait_for_step(engine, key, "Work", Status.INTERRUPTED)

    async def both_parked() -> bool:
        return [s.status for s in await steps_named(engine, key, "Work")] == [Status.INTERRUPTED] * 2

    await wait_until(both_parked)
    first = await engine.wait(key, timeout=WAIT)
    assert first.status == Status.INTERRUPTED
    assert first.interrupt_payload == {"item": 2}
    await engine.resume(key, {"answer": "for 2"})
    second = await engine.wait(key, timeout=WAIT)
    assert second.status == Status.INTERRUPTED
    assert second.interrupt_payload == {"item": 1}
    await engine.resume(key, {"answer": "for 1"})
    outcome = await engine.wait(key, timeout=WAIT)
    assert outcome.status == Status.COMPLETED, outcome.error
    assert answers == {1: "for 1", 2: "for 2"}


async def test_two_interrupting_branches_need_two_resumes(make_engine: Any) -> None:
    async def work(flow: Flow) -> None:
        if flow.get_int("item") == 2:
            # The branches ask in element order (the reverse order is the test above).
            await asyncio.sleep(0.2)
        flow.set("answers", [flow.interrupt({"item": flow.get_int("item")})["answer"]])

    graph = for_each("Both", reducers={"answers": Reducer.APPEND})
    engine = await make_engine(proxy_with("both", graph, Split=noop, Work=work, Join=noop))
    key = await engine.create("both", {"items": [1, 2]})

    async def both_parked() -> bool:
        return [s.status for s in await steps_named(engine, key, "Work")] == [Status.INTERRUPTED] * 2

    await wait_until(both_parked)
    payloads = []
    for answer in ("a", "b"):
        outcome = await engine.wait(key, timeout=WAIT)
        assert outcome.status == Status.INTERRUPTED
        payloads.append(outcome.interrupt_payload["item"])
        await engine.resume(key, {"answer": answer})
    outcome = await engine.wait(key, timeout=WAIT)
    assert outcome.status == Status.COMPLETED, outcome.error
    assert payloads == [1, 2]
    assert outcome.state["answers"] == ["a", "b"]


async def test_cancel_of_an_interrupted_flow_cancels_it_and_its_parked_step(make_engine: Any) -> None:
    engine = await make_engine(_ask_proxy())
    key, _ = await engine.run("ask", timeout=WAIT)
    await engine.cancel(key, "no answer")
    outcome = await engine.wait(key, timeout=WAIT)
    assert outcome.status == Status.CANCELLED
    assert outcome.cancel_reason == "no answer"
    assert [step.status for step in await engine.history(key)] == [Status.CANCELLED]
    with pytest.raises(ConflictError):
        await engine.resume(key, {})


async def test_a_later_step_interrupts_afresh_after_a_resume(make_engine: Any) -> None:
    def asking(name: str) -> Any:
        async def ask(flow: Flow) -> None:
            flow.set(name, flow.interrupt({"step": name})["answer"])

        return ask

    engine = await make_engine(
        proxy_with("twice", chain("Twice", "A1", "A2"), A1=asking("A1"), A2=asking("A2"))
    )
    key, outcome = await engine.run("twice", timeout=WAIT)
    assert outcome.interrupt_payload == {"step": "A1"}
    await engine.resume(key, {"answer": 1})
    outcome = await engine.wait(key, timeout=WAIT)
    assert outcome.status == Status.INTERRUPTED
    assert outcome.interrupt_payload == {"step": "A2"}
    await engine.resume(key, {"answer": 2})
    outcome = await engine.wait(key, timeout=WAIT)
    assert outcome.status == Status.COMPLETED
    assert outcome.state == {"A1": 1, "A2": 2}


async def test_cancel_of_a_root_whose_child_is_interrupted_cancels_the_child(make_engine: Any) -> None:
    proxy = TestProxy()
    proxy.handle_graph("root", single("Root", "Call"))
    proxy.handle_graph("leaf", single("Leaf", "Ask"))
    proxy.handle_task("Call", calls_subgraph("leaf"))
    proxy.handle_task("Ask", _asking())
    engine = await make_engine(proxy)
    key, outcome = await engine.run("root", timeout=WAIT)
    assert outcome.status == Status.INTERRUPTED
    await engine.cancel(key)
    assert (await engine.wait(key, timeout=WAIT)).status == Status.CANCELLED
    [child] = await child_summaries(engine)
    assert child.status == Status.CANCELLED
    [call] = await engine.history(key)
    assert [step.status for step in call.sub_history] == [Status.CANCELLED]


async def test_a_failing_sibling_of_an_interrupted_branch_fails_the_flow(make_engine: Any) -> None:
    async def work(flow: Flow) -> None:
        if flow.get_int("item") == 1:
            flow.interrupt({"item": 1})
        await asyncio.sleep(0.2)
        raise RuntimeError("the second branch broke")

    engine = await make_engine(proxy_with("mixed", for_each("Mixed"), Split=noop, Work=work, Join=noop))
    key, outcome = await engine.run("mixed", {"items": [1, 2]}, timeout=WAIT)
    assert outcome.status == Status.INTERRUPTED
    await wait_for_step(engine, key, "Work", Status.FAILED)

    async def failed() -> bool:
        return (await engine.snapshot(key)).status == Status.FAILED

    await wait_until(failed, timeout=1)
    outcome = await engine.wait(key, timeout=WAIT)
    assert outcome.error == "the second branch broke"
    assert sorted(step.status for step in await steps_named(engine, key, "Work")) == sorted(
        [Status.CANCELLED, Status.FAILED]
    )


async def test_resume_with_data_that_is_not_json_is_a_bad_request(make_engine: Any) -> None:
    engine = await make_engine(_ask_proxy())
    key, _ = await engine.run("ask", timeout=WAIT)
    with pytest.raises(BadRequestError):
        await engine.resume(key, {"answer": {1, 2}})
    outcome = await engine.snapshot(key)
    assert outcome.status == Status.INTERRUPTED
    await engine.resume(key, {"answer": "fine"})
    assert (await engine.wait(key, timeout=WAIT)).state["answer"] == "fine"
