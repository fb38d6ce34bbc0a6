"""Engine operations (docs/operations.md): wait, run, snapshot, history, step, mermaid, list, cancel,
fingerprint and shard_info.

Resume (trunk and branch interrupts) is covered in ``test_interrupts.py``, continue_thread and the
thread_key filter in ``test_threads.py``, include_subgraphs in ``test_subgraphs.py``.
"""

from __future__ import annotations

import asyncio
import itertools
import re
from datetime import UTC
from typing import Any

import pytest

from dwarf import ConflictError, Flow, FlowOptions, Query, Status
from dwarf.engine import Engine, TestProxy
from tests.engine.graphs import (
    WAIT,
    Gate,
    chain,
    failing,
    noop,
    proxy_with,
    setter,
    wait_until,
)


def _gated_chain(gate: Gate) -> TestProxy:
    """Chain A -> B -> C where B blocks at ``gate``; A sets a=1, B b=2, C c=3."""

    async def b(flow: Flow) -> None:
        flow.set("b", 2)
        await gate.pass_through()

    return proxy_with("gated", _abc(), A=setter(a=1), B=b, C=setter(c=3))


def _abc() -> Any:
    return chain("Gated", "A", "B", "C")


def _interrupting() -> TestProxy:
    async def ask(flow: Flow) -> None:
        flow.set("asked", True)
        answer = flow.interrupt({"question": "approve?"})
        flow.set("answer", answer.get("approved"))

    return proxy_with("ask", chain("Ask", "Ask", "Done"), Ask=ask, Done=setter(done=True))


# --- wait and run ---


async def test_wait_timeout_raises_timeout_error_and_leaves_the_flow_running(make_engine: Any) -> None:
    gate = Gate()
    engine = await make_engine(_gated_chain(gate))
    key = await engine.create("gated")
    with pytest.raises(TimeoutError):
        await engine.wait(key, timeout=0.2)
    assert (await engine.snapshot(key)).status == Status.RUNNING
    gate.open()
    assert (await engine.wait(key, timeout=WAIT)).status == Status.COMPLETED


async def test_run_timeout_error_carries_the_flow_key(make_engine: Any) -> None:
    gate = Gate()
    engine = await make_engine(_gated_chain(gate))
    with pytest.raises(TimeoutError) as caught:
        await engine.run("gated", timeout=0.2)
    key = caught.value.flow_key  # type: ignore[attr-defined]
    assert (await engine.snapshot(key)).status == Status.RUNNING
    gate.open()
    assert (await engine.wait(key, timeout=WAIT)).state == {"a": 1, "b": 2, "c": 3}


async def test_wait_returns_at_once_for_a_stopped_flow(make_engine: Any) -> None:
    engine = await make_engine(proxy_with("one", chain("One", "A"), A=setter(x=1)))
    key, first = await engine.run("one", timeout=WAIT)
    again = await engine.wait(key, timeout=0.5)
    assert again == first


async def test_wait_returns_when_the_flow_is_interrupted(make_engine: Any) -> None:
    engine = await make_engine(_interrupting())
    _, outcome = await engine.run("ask", timeout=WAIT)
    assert outcome.status == Status.INTERRUPTED
    assert outcome.interrupt_payload == {"question": "approve?"}


# --- snapshot ---


async def test_snapshot_of_a_running_flow_shows_the_current_merged_state(make_engine: Any) -> None:
    gate = Gate()
    engine = await make_engine(_gated_chain(gate))
    key = await engine.create("gated", {"input": 0})
    await gate.wait_entered()
    snapshot = await engine.snapshot(key)
    gate.open()
    assert snapshot.status == Status.RUNNING
    assert snapshot.state == {"input": 0, "a": 1}


async def test_snapshot_of_a_completed_flow_is_its_outcome(make_engine: Any) -> None:
    engine = await make_engine(proxy_with("one", chain("One", "A"), A=setter(x=1)))
    key, outcome = await engine.run("one", {"input": 0}, timeout=WAIT)
    snapshot = await engine.snapshot(key)
    assert snapshot == outcome
    assert snapshot.state == {"input": 0, "x": 1}


async def test_snapshot_of_a_failed_flow_carries_the_error(make_engine: Any) -> None:
    engine = await make_engine(proxy_with("bad", chain("Bad", "A"), A=failing("broken")))
    key, _ = await engine.run("bad", timeout=WAIT)
    snapshot = await engine.snapshot(key)
    assert (snapshot.status, snapshot.error) == (Status.FAILED, "broken")


# --- history, step, mermaid ---


async def test_history_lists_the_steps_in_depth_order(make_engine: Any) -> None:
    gate = Gate()
    gate.open()
    engine = await make_engine(_gated_chain(gate))
    key, _ = await engine.run("gated", {"input": 0}, timeout=WAIT)
    history = await engine.history(key)
    assert [(s.task_name, s.step_depth, s.status) for s in history] == [
        ("A", 1, Status.COMPLETED),
        ("B", 2, Status.COMPLETED),
        ("C", 3, Status.COMPLETED),
    ]


async def test_history_records_each_steps_input_state_and_changes(make_engine: Any) -> None:
    gate = Gate()
    gate.open()
    engine = await make_engine(_gated_chain(gate))
    key, _ = await engine.run("gated", {"input": 0}, timeout=WAIT)
    history = await engine.history(key)
    assert [(s.state, s.changes) for s in history] == [
        ({"input": 0}, {"a": 1}),
        ({"input": 0, "a": 1}, {"b": 2}),
        ({"input": 0, "a": 1, "b": 2}, {"c": 3}),
    ]


async def test_history_prev_and_next_keys_link_consecutive_steps(make_engine: Any) -> None:
    gate = Gate()
    gate.open()
    engine = await make_engine(_gated_chain(gate))
    key, _ = await engine.run("gated", timeout=WAIT)
    a, b, c = await engine.history(key)
    assert (a.prev_key, a.next_key) == ("", b.step_key)
    assert (b.prev_key, b.next_key) == (a.step_key, c.step_key)
    assert (c.prev_key, c.next_key) == (b.step_key, "")
    assert (b.predecessor_id, b.successor_id) == (a.step_id, c.step_id)


async def test_history_timestamps_are_timezone_aware_utc(make_engine: Any) -> None:
    engine = await make_engine(proxy_with("one", chain("One", "A"), A=noop))
    key, _ = await engine.run("one", timeout=WAIT)
    [step] = await engine.history(key)
    assert step.created_at.tzinfo == UTC
    assert step.updated_at.tzinfo == UTC
    assert step.started_at is not None and step.started_at >= step.created_at


async def test_step_returns_the_step_of_a_step_key(make_engine: Any) -> None:
    gate = Gate()
    gate.open()
    engine = await make_engine(_gated_chain(gate))
    key, _ = await engine.run("gated", timeout=WAIT)
    history = await engine.history(key)
    for expected in history:
        assert await engine.step(expected.step_key) == expected


async def test_step_key_of_a_step_is_the_key_its_task_saw(make_engine: Any) -> None:
    seen: list[str] = []

    async def record(flow: Flow) -> None:
        seen.append(flow.step_key)

    engine = await make_engine(proxy_with("one", chain("One", "A"), A=record))
    key, _ = await engine.run("one", timeout=WAIT)
    step = await engine.step(seen[0])
    assert step.task_name == "A"
    assert [s.step_key for s in await engine.history(key)] == seen


async def test_history_mermaid_has_one_node_per_step(make_engine: Any) -> None:
    gate = Gate()
    gate.open()
    engine = await make_engine(_gated_chain(gate))
    key, _ = await engine.run("gated", timeout=WAIT)
    history = await engine.history(key)
    diagram = await engine.history_mermaid(key)
    assert diagram.startswith("flowchart")
    nodes = re.findall(r"^\s+(s\d+)\[", diagram, flags=re.MULTILINE)
    assert sorted(nodes) == sorted(f"s{step.step_id}" for step in history)
    for first, second in itertools.pairwise(history):
        assert f"s{first.step_id} --> s{second.step_id}" in diagram


# --- list ---


async def _flows(engine: Engine, query: Query | None = None) -> list[str]:
    page, _ = await engine.list(query)
    return [summary.flow_key for summary in page]


def _catalogue() -> TestProxy:
    """Graphs with distinct URLs, names and outcomes for the list filters."""
    proxy = TestProxy()
    proxy.handle_graph("ok", chain("OkFlow", "A", "B"))
    proxy.handle_graph("bad", chain("BadFlow", "Fail"))
    proxy.handle_graph("ask", chain("AskFlow", "Ask"))
    proxy.handle_task("A", noop)
    proxy.handle_task("B", noop)
    proxy.handle_task("Fail", failing("kaput"))

    async def ask(flow: Flow) -> None:
        flow.interrupt({})

    proxy.handle_task("Ask", ask)
    return proxy


async def _stopped(engine: Engine, url: str, options: FlowOptions | None = None) -> str:
    key = await engine.create(url, options=options)
    await engine.wait(key, timeout=WAIT)
    return key


async def test_list_returns_flows_newest_first(make_engine: Any) -> None:
    engine = await make_engine(_catalogue())
    keys = [await engine.create("ok") for _ in range(3)]
    assert await _flows(engine) == keys[::-1]


async def test_list_summary_describes_the_flow(make_engine: Any) -> None:
    engine = await make_engine(_catalogue())
    key = await _stopped(engine, "ok", FlowOptions(priority=3, fairness_key="tenant-1"))
    [summary] = (await engine.list())[0]
    assert summary.flow_key == key
    assert summary.thread_key == key
    assert (summary.workflow_url, summary.workflow_name) == ("ok", "OkFlow")
    assert (summary.status, summary.task_name, summary.error) == (Status.COMPLETED, "B", "")
    assert (summary.priority, summary.fairness_key, summary.subgraph) == (3, "tenant-1", False)
    assert summary.created_at.tzinfo == UTC


async def test_list_filters_by_status(make_engine: Any) -> None:
    engine = await make_engine(_catalogue())
    ok = await _stopped(engine, "ok")
    bad = await _stopped(engine, "bad")
    ask = await _stopped(engine, "ask")
    assert await _flows(engine, Query(status="completed")) == [ok]
    assert await _flows(engine, Query(status="failed")) == [bad]
    assert await _flows(engine, Query(status="interrupted")) == [ask]


async def test_list_filters_by_workflow_url(make_engine: Any) -> None:
    engine = await make_engine(_catalogue())
    ok = await _stopped(engine, "ok")
    await _stopped(engine, "bad")
    assert await _flows(engine, Query(workflow_url="ok")) == [ok]


async def test_list_filters_by_workflow_name(make_engine: Any) -> None:
    engine = await make_engine(_catalogue())
    await _stopped(engine, "ok")
    bad = await _stopped(engine, "bad")
    assert await _flows(engine, Query(workflow_name="BadFlow")) == [bad]


async def test_list_filters_by_task_name_of_the_latest_step(make_engine: Any) -> None:
    engine = await make_engine(_catalogue())
    ok = await _stopped(engine, "ok")
    await _stopped(engine, "bad")
    assert await _flows(engine, Query(task_name="B")) == [ok]
    assert await _flows(engine, Query(task_name="A")) == []


async def test_list_filters_by_fairness_key(make_engine: Any) -> None:
    engine = await make_engine(_catalogue())
    mine = await _stopped(engine, "ok", FlowOptions(fairness_key="tenant-1"))
    await _stopped(engine, "ok", FlowOptions(fairness_key="tenant-2"))
    await _stopped(engine, "ok")
    assert await _flows(engine, Query(fairness_key="tenant-1")) == [mine]


async def test_list_filters_by_priority(make_engine: Any) -> None:
    engine = await make_engine(_catalogue())
    urgent = await _stopped(engine, "ok", FlowOptions(priority=7))
    default = await _stopped(engine, "ok")
    assert await _flows(engine, Query(priority=7)) == [urgent]
    assert await _flows(engine, Query(priority=100)) == [default]


async def test_list_filters_by_age(make_engine: Any) -> None:
    engine = await make_engine(_catalogue())
    old = await engine.create("ok")
    await asyncio.sleep(0.4)
    new = await engine.create("ok")
    assert await _flows(engine, Query(older_than=0.2)) == [old]
    assert await _flows(engine, Query(newer_than=0.2)) == [new]


async def test_list_filters_by_shard(make_engine: Any) -> None:
    engine = await make_engine(_catalogue())
    key = await engine.create("ok")
    assert await _flows(engine, Query(shard=1)) == [key]


async def test_list_search_matches_a_substring_of_the_workflow_name(make_engine: Any) -> None:
    engine = await make_engine(_catalogue())
    await _stopped(engine, "ok")
    bad = await _stopped(engine, "bad")
    assert await _flows(engine, Query(search="adFl")) == [bad]


async def test_list_search_matches_the_error(make_engine: Any) -> None:
    engine = await make_engine(_catalogue())
    await _stopped(engine, "ok")
    bad = await _stopped(engine, "bad")
    assert await _flows(engine, Query(search="kaput")) == [bad]


async def test_list_search_treats_percent_and_underscore_literally(make_engine: Any) -> None:
    # Each search text, the workflow name it must find, and a lookalike its wildcard reading would find.
    cases = {"50%_off": ("50%_off", "500xoff"), "a_b": ("a_b", "aXb"), "x%": ("x%y", "xyz")}
    proxy = TestProxy()
    proxy.handle_task("A", noop)
    for index, (literal, lookalike) in enumerate(cases.values()):
        proxy.handle_graph(f"literal{index}", chain(literal, "A"))
        proxy.handle_graph(f"lookalike{index}", chain(lookalike, "A"))
    engine = await make_engine(proxy)
    matches = {}
    for index, search in enumerate(cases):
        matches[search] = [await engine.create(f"literal{index}")]
        await engine.create(f"lookalike{index}")
    found = {search: await _flows(engine, Query(search=search)) for search in cases}
    assert found == matches


async def test_list_limit_caps_the_page_and_returns_a_cursor(make_engine: Any) -> None:
    engine = await make_engine(_catalogue())
    keys = [await engine.create("ok") for _ in range(5)]
    page, cursor = await engine.list(Query(limit=2))
    assert [s.flow_key for s in page] == keys[:-3:-1]
    assert cursor != ""


async def test_list_page_holding_the_last_flow_has_an_empty_cursor(make_engine: Any) -> None:
    engine = await make_engine(_catalogue())
    keys = [await engine.create("ok") for _ in range(3)]
    page, cursor = await engine.list(Query(limit=3))
    assert [s.flow_key for s in page] == keys[::-1]
    assert cursor == ""


async def test_list_cursor_pages_never_skip_or_repeat_while_flows_are_inserted(make_engine: Any) -> None:
    engine = await make_engine(_catalogue())
    originals = [await engine.create("ok") for _ in range(7)]
    seen: list[str] = []
    cursor = ""
    for _ in range(10):
        page, cursor = await engine.list(Query(limit=3, cursor=cursor))
        seen.extend(summary.flow_key for summary in page)
        # New flows arrive between page fetches: they are newer than the cursor, so no page shows them.
        await engine.create("ok")
        await engine.create("ok")
        if not cursor:
            break
    assert seen == originals[::-1]


async def test_list_cursor_pages_keep_the_filter(make_engine: Any) -> None:
    engine = await make_engine(_catalogue())
    wanted = []
    for index in range(6):
        options = FlowOptions(fairness_key="even" if index % 2 == 0 else "odd")
        key = await engine.create("ok", options=options)
        if index % 2 == 0:
            wanted.append(key)
    seen: list[str] = []
    cursor = ""
    for _ in range(5):
        page, cursor = await engine.list(Query(fairness_key="even", limit=2, cursor=cursor))
        seen.extend(summary.flow_key for summary in page)
        if not cursor:
            break
    assert seen == wanted[::-1]


# --- cancel ---


async def test_cancel_of_a_running_flow_cancels_it_with_the_reason(make_engine: Any) -> None:
    gate = Gate()
    engine = await make_engine(_gated_chain(gate))
    key = await engine.create("gated")
    await gate.wait_entered()
    await engine.cancel(key, "no longer needed")
    outcome = await engine.wait(key, timeout=WAIT)
    gate.open()
    assert (outcome.status, outcome.cancel_reason) == (Status.CANCELLED, "no longer needed")


async def test_cancel_discards_the_outcome_of_the_step_that_was_running(make_engine: Any) -> None:
    gate = Gate()
    calls: list[str] = []

    async def c(flow: Flow) -> None:
        calls.append("C")

    async def b(flow: Flow) -> None:
        flow.set("b", 2)
        await gate.pass_through()

    engine = await make_engine(proxy_with("gated", _abc(), A=setter(a=1), B=b, C=c))
    key = await engine.create("gated")
    await gate.wait_entered()
    await engine.cancel(key)
    gate.open()
    await wait_until(lambda: _passed(gate))
    await asyncio.sleep(0.2)
    history = await engine.history(key)
    assert (await engine.snapshot(key)).status == Status.CANCELLED
    assert [(s.task_name, s.status) for s in history] == [("A", Status.COMPLETED), ("B", Status.CANCELLED)]
    assert calls == []


async def _passed(gate: Gate) -> bool:
    return gate.passes > 0


async def test_cancel_of_a_terminal_flow_is_a_conflict(make_engine: Any) -> None:
    engine = await make_engine(_catalogue())
    completed = await _stopped(engine, "ok")
    failed = await _stopped(engine, "bad")
    for key in (completed, failed):
        with pytest.raises(ConflictError):
            await engine.cancel(key)


async def test_cancel_of_a_cancelled_flow_is_a_conflict(make_engine: Any) -> None:
    engine = await make_engine(_interrupting())
    key, _ = await engine.run("ask", timeout=WAIT)
    await engine.cancel(key)
    with pytest.raises(ConflictError):
        await engine.cancel(key)


# --- fingerprint ---


async def test_fingerprint_is_stable_while_nothing_changes(make_engine: Any) -> None:
    engine = await make_engine(_interrupting())
    key, _ = await engine.run("ask", timeout=WAIT)
    first = await engine.fingerprint(key)
    second = await engine.fingerprint(key)
    assert first == second
    assert first[1] == "interrupted"


async def test_fingerprint_changes_when_a_step_is_added(make_engine: Any) -> None:
    gate = Gate()
    engine = await make_engine(_gated_chain(gate))
    key = await engine.create("gated")
    await gate.wait_entered()
    before = await engine.fingerprint(key)
    gate.open()
    await engine.wait(key, timeout=WAIT)
    after = await engine.fingerprint(key)
    assert before[0] != after[0]
    assert after[1] == "completed"


async def test_fingerprint_changes_when_a_step_changes(make_engine: Any) -> None:
    engine = await make_engine(_interrupting())
    key, _ = await engine.run("ask", timeout=WAIT)
    before = await engine.fingerprint(key)
    await engine.cancel(key)
    after = await engine.fingerprint(key)
    assert before[0] != after[0]
    assert after[1] == "cancelled"


async def test_fingerprint_of_a_completed_flow_never_changes(make_engine: Any) -> None:
    engine = await make_engine(_catalogue())
    key = await _stopped(engine, "ok")
    first = await engine.fingerprint(key)
    await _stopped(engine, "ok")
    assert await engine.fingerprint(key) == first


# --- shard_info ---


async def test_shard_info_reports_the_shard_and_its_row_counts(make_engine: Any) -> None:
    engine = await make_engine(_catalogue())
    await _stopped(engine, "ok")
    await _stopped(engine, "bad")
    [shard] = await engine.shard_info()
    assert (shard.shard, shard.error) == (1, "")
    assert (shard.flows, shard.steps) == (2, 3)
    assert shard.latency_ms >= 0


# --- baggage ---


async def test_baggage_is_visible_to_the_host_while_the_flow_runs(make_engine: Any) -> None:
    from dwarf import current_baggage

    seen: list[Any] = []

    class BaggageHost(TestProxy):
        async def load_graph(self, workflow_url: str) -> Any:
            seen.append(("load", current_baggage()))
            return await super().load_graph(workflow_url)

    async def task(flow: Flow) -> None:
        seen.append(("task", current_baggage()))

    proxy = BaggageHost()
    proxy.handle_graph("one", chain("One", "A"))
    proxy.handle_task("A", task)
    engine = await make_engine(proxy)
    await engine.run("one", options=FlowOptions(baggage={"tenant": "acme"}), timeout=WAIT)
    assert seen == [("load", {"tenant": "acme"}), ("task", {"tenant": "acme"})]
