"""Telemetry (docs/observability.md): metrics, spans and logs, read back through the OpenTelemetry SDK's
in-memory reader and exporter and a logger of the test's own.

Every test builds its own MeterProvider and TracerProvider and hands them to the engine with the
``meter_provider=``/``tracer_provider=`` settings; nothing here touches the OpenTelemetry globals (the
test of the globals runs in a subprocess).
"""

from __future__ import annotations

import asyncio
import logging
import os
import subprocess
import sys
import textwrap
from collections import Counter as Tally
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.metrics import NoOpMeterProvider
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import NoOpTracerProvider, StatusCode

from dwarf import Flow, FlowOptions, FlowStep, Query, Status
from dwarf.engine import SchedulerTuning, TestProxy
from dwarf.engine.keys import TOKEN_LENGTH
from dwarf.engine.telemetry import format_traceparent, parse_traceparent
from tests.engine.graphs import (
    WAIT,
    Gate,
    Replicas,
    chain,
    failing,
    fan_out,
    incrementer,
    noop,
    proxy_with,
    until,
)
from tests.engine.graphs_parallel import calls_subgraph, single

ROOT = Path(__file__).resolve().parents[2]


class Sdk:
    """An SDK MeterProvider with an in-memory reader and a TracerProvider with an in-memory exporter."""

    def __init__(self) -> None:
        self.reader = InMemoryMetricReader()
        self.meter_provider = MeterProvider(metric_readers=[self.reader])
        self.exporter = InMemorySpanExporter()
        self.tracer_provider = TracerProvider()
        self.tracer_provider.add_span_processor(SimpleSpanProcessor(self.exporter))

    def settings(self) -> dict[str, Any]:
        return {"meter_provider": self.meter_provider, "tracer_provider": self.tracer_provider}

    def metrics(self) -> dict[str, list[Any]]:
        """Every metric's data points by instrument name (one collection)."""
        found: dict[str, list[Any]] = {}
        data = self.reader.get_metrics_data()
        for resource in data.resource_metrics if data else ():
            for scope in resource.scope_metrics:
                for metric in scope.metrics:
                    found.setdefault(metric.name, []).extend(metric.data.data_points)
        return found

    def values(self, name: str) -> dict[frozenset[tuple[str, Any]], Any]:
        """Sum/gauge values (histograms: sample counts) of one instrument by attribute set."""
        points = self.metrics().get(name, [])
        return {
            frozenset(p.attributes.items()): getattr(p, "value", getattr(p, "count", None)) for p in points
        }

    def value(self, name: str, **attributes: Any) -> Any:
        return self.values(name).get(frozenset(attributes.items()), 0)

    def spans(self) -> list[ReadableSpan]:
        return list(self.exporter.get_finished_spans())

    def spans_named(self, name: str) -> list[ReadableSpan]:
        return [span for span in self.spans() if span.name == name]

    def shutdown(self) -> None:
        self.meter_provider.shutdown()
        self.tracer_provider.shutdown()


@pytest.fixture
def sdk() -> Iterator[Sdk]:
    made = Sdk()
    yield made
    made.shutdown()


def _parent_id(span: ReadableSpan) -> int | None:
    return span.parent.span_id if span.parent is not None else None


def _span_id(span: ReadableSpan) -> int:
    context = span.get_span_context()
    assert context is not None
    return context.span_id


async def _interrupting(flow: Flow) -> None:
    flow.set("answer", flow.interrupt({"question": "approve?"}))


async def _retry_once(flow: Flow) -> None:
    if flow.attempt == 0 and flow.retry(0, 1.0, 0, 0):
        return
    flow.set("attempts", flow.attempt + 1)


async def _sleepy(flow: Flow) -> None:
    flow.sleep(0.05)


def _tree_proxy(b_gate: Gate | None = None) -> TestProxy:
    """Workflow ``tree``: A fans out to B and C, which meet at fan-in J; B runs workflow ``child`` (X)."""
    proxy = proxy_with("tree", fan_out("Tree", ("B", "C"), "J"), A=noop, C=noop, J=noop, X=incrementer())
    proxy.handle_graph("child", single("Child", "X"))
    proxy.handle_task("B", calls_subgraph("child", input_field="input"))
    return proxy


# --- metrics ---


async def test_a_linear_flow_counts_one_flow_and_three_completed_steps(make_engine: Any, sdk: Sdk) -> None:
    proxy = proxy_with("line", chain("Line", "A", "B", "C"), A=noop, B=noop, C=noop)
    engine = await make_engine(proxy, **sdk.settings())
    _, outcome = await engine.run("line", timeout=WAIT)
    assert outcome.status == Status.COMPLETED
    await until(lambda: sdk.value("dwarf_flows_stopped", workflow="line", status="completed") == 1)
    assert sdk.value("dwarf_flows_created", workflow="line") == 1
    assert sdk.values("dwarf_steps_executed") == {
        frozenset({("task", node), ("outcome", "completed")}): 1 for node in "ABC"
    }
    assert sdk.values("dwarf_task_duration") == {frozenset({("task", node)}): 1 for node in "ABC"}
    assert sdk.values("dwarf_step_latency") == {frozenset({("task", node)}): 1 for node in "ABC"}
    assert sdk.value("dwarf_flow_duration", workflow="line", status="completed") == 1
    assert sdk.value("dwarf_claim_latency", shard=1) >= 1
    for absent in ("dwarf_retries", "dwarf_interrupts", "dwarf_fan_in_merges", "dwarf_lease_recoveries"):
        assert absent not in sdk.metrics()


async def test_histograms_are_in_seconds(make_engine: Any, sdk: Sdk) -> None:
    async def slow(flow: Flow) -> None:
        await asyncio.sleep(0.05)

    engine = await make_engine(proxy_with("slow", chain("Slow", "S"), S=slow), **sdk.settings())
    await engine.run("slow", timeout=WAIT)
    await until(lambda: "dwarf_flow_duration" in sdk.metrics())
    [task] = sdk.metrics()["dwarf_task_duration"]
    assert 0.05 <= task.sum < 5.0
    [flow] = sdk.metrics()["dwarf_flow_duration"]
    assert 0.05 <= flow.sum < 5.0


async def test_a_failing_task_counts_a_failed_step_and_a_failed_flow(make_engine: Any, sdk: Sdk) -> None:
    proxy = proxy_with("boom", chain("Boom", "A", "B"), A=noop, B=failing("kaput"))
    engine = await make_engine(proxy, **sdk.settings())
    _, outcome = await engine.run("boom", timeout=WAIT)
    assert outcome.status == Status.FAILED
    await until(lambda: sdk.value("dwarf_flows_stopped", workflow="boom", status="failed") == 1)
    assert sdk.value("dwarf_steps_executed", task="B", outcome="failed") == 1
    assert sdk.value("dwarf_steps_executed", task="A", outcome="completed") == 1
    assert sdk.value("dwarf_flow_duration", workflow="boom", status="failed") == 1


async def test_a_retry_counts_a_retried_run_and_a_retry(make_engine: Any, sdk: Sdk) -> None:
    engine = await make_engine(proxy_with("flaky", chain("Flaky", "F"), F=_retry_once), **sdk.settings())
    _, outcome = await engine.run("flaky", timeout=WAIT)
    assert outcome.state == {"attempts": 2}
    await until(lambda: sdk.value("dwarf_flows_stopped", workflow="flaky", status="completed") == 1)
    assert sdk.value("dwarf_retries", task="F") == 1
    assert sdk.value("dwarf_steps_executed", task="F", outcome="retried") == 1
    assert sdk.value("dwarf_steps_executed", task="F", outcome="completed") == 1
    # End-to-end latency is recorded once, when the step finally completes.
    assert sdk.value("dwarf_step_latency", task="F") == 1
    assert sdk.value("dwarf_task_duration", task="F") == 2


async def test_a_sleep_is_counted(make_engine: Any, sdk: Sdk) -> None:
    proxy = proxy_with("nap", chain("Nap", "Z", "A"), Z=_sleepy, A=noop)
    engine = await make_engine(proxy, **sdk.settings())
    await engine.run("nap", timeout=WAIT)
    assert sdk.value("dwarf_sleeps", task="Z") == 1


async def test_an_interrupt_and_resume_count_an_interrupted_stop_then_a_completion(
    make_engine: Any, sdk: Sdk
) -> None:
    engine = await make_engine(proxy_with("ask", chain("Ask", "Q"), Q=_interrupting), **sdk.settings())
    key = await engine.create("ask")
    assert (await engine.wait(key, timeout=WAIT)).status == Status.INTERRUPTED
    await until(lambda: sdk.value("dwarf_flows_stopped", workflow="ask", status="interrupted") == 1)
    assert sdk.value("dwarf_interrupts", task="Q") == 1
    assert sdk.value("dwarf_steps_executed", task="Q", outcome="interrupted") == 1
    # An interrupt is a pause, not an end: no flow duration yet.
    assert "dwarf_flow_duration" not in sdk.metrics()
    await engine.resume(key, {"ok": True})
    assert (await engine.wait(key, timeout=WAIT)).status == Status.COMPLETED
    await until(lambda: sdk.value("dwarf_flows_stopped", workflow="ask", status="completed") == 1)
    assert sdk.value("dwarf_steps_executed", task="Q", outcome="completed") == 1
    assert sdk.value("dwarf_flow_duration", workflow="ask", status="completed") == 1


async def test_a_fan_out_counts_one_merge_and_a_subgraph_counts_a_parked_run(
    make_engine: Any, sdk: Sdk
) -> None:
    engine = await make_engine(_tree_proxy(), **sdk.settings())
    _, outcome = await engine.run("tree", {"input": {}}, timeout=WAIT)
    assert outcome.status == Status.COMPLETED, outcome.error
    await until(lambda: sdk.value("dwarf_flows_stopped", workflow="tree", status="completed") == 1)
    assert sdk.value("dwarf_fan_in_merges") == 1
    assert sdk.value("dwarf_flows_created", workflow="tree") == 1
    assert sdk.value("dwarf_flows_created", workflow="child") == 1
    assert sdk.value("dwarf_flows_stopped", workflow="child", status="completed") == 1
    assert sdk.value("dwarf_steps_executed", task="B", outcome="parked") == 1
    assert sdk.values("dwarf_steps_executed") == {
        frozenset({("task", "A"), ("outcome", "completed")}): 1,
        frozenset({("task", "B"), ("outcome", "parked")}): 1,
        frozenset({("task", "B"), ("outcome", "completed")}): 1,
        frozenset({("task", "C"), ("outcome", "completed")}): 1,
        frozenset({("task", "J"), ("outcome", "completed")}): 1,
        frozenset({("task", "X"), ("outcome", "completed")}): 1,
    }


async def test_a_cancel_counts_a_cancelled_flow_and_the_orphaned_run_as_a_lost_lease(
    make_engine: Any, sdk: Sdk
) -> None:
    gate = Gate()

    async def blocked(flow: Flow) -> None:
        await gate.pass_through()

    engine = await make_engine(proxy_with("stuck", chain("Stuck", "S"), S=blocked), **sdk.settings())
    key = await engine.create("stuck")
    await gate.wait_entered()
    await engine.cancel(key, "enough")
    gate.open()
    await until(lambda: sdk.value("dwarf_steps_executed", task="S", outcome="lost_lease") == 1)
    assert sdk.value("dwarf_flows_stopped", workflow="stuck", status="cancelled") == 1
    assert sdk.value("dwarf_flow_duration", workflow="stuck", status="cancelled") == 1


async def test_replicas_count_the_signals_they_send_and_receive(make_engine: Any, sdk: Sdk) -> None:
    proxy = proxy_with("line", chain("Line", "A"), A=noop)
    first = await make_engine(proxy, **sdk.settings())
    await make_engine(proxy, **sdk.settings())
    await first.run("line", timeout=WAIT)
    await until(lambda: sdk.value("dwarf_signals_received", op="flow-stopped") >= 1)
    assert sdk.value("dwarf_signals_sent", op="doorbell") >= 1
    assert sdk.value("dwarf_signals_sent", op="flow-stopped") >= 1
    assert sdk.value("dwarf_signals_received", op="doorbell") >= 1


async def test_a_recovered_lease_is_counted_and_logged_at_info_with_its_flow(
    fresh_dsn: str, sdk: Sdk
) -> None:
    hang = asyncio.Event()
    calls = Tally[str]()
    records: list[logging.LogRecord] = []

    async def hang_once(flow: Flow) -> None:
        calls["H"] += 1
        if calls["H"] == 1:
            hang.set()
            await asyncio.Event().wait()

    proxy = proxy_with("hang", chain("Hang", "H"), H=hang_once)
    async with Replicas(proxy, fresh_dsn) as replicas:
        first = await replicas.start(lease_period=0.7)
        key = await first.create("hang", options=FlowOptions(time_budget=0.3))
        await asyncio.wait_for(hang.wait(), WAIT)
        await first.abandon()
        second = await replicas.start(lease_period=0.7, logger=_collecting_logger(records), **sdk.settings())
        assert (await second.wait(key, timeout=WAIT)).status == Status.COMPLETED
    assert sdk.value("dwarf_lease_recoveries", shard=1) == 1
    flow = _correlation(key)
    assert any(
        r.levelno == logging.INFO and "lease expired" in r.getMessage() and r.flow == flow for r in records
    )


async def test_the_pending_gauge_counts_due_steps_per_shard_and_priority(make_engine: Any, sdk: Sdk) -> None:
    gate = Gate()

    async def blocked(flow: Flow) -> None:
        await gate.pass_through()

    proxy = proxy_with("wait", chain("Wait", "W"), W=blocked)
    engine = await make_engine(
        proxy, workers=1, scheduler_tuning=SchedulerTuning(idle_poll=0.05), **sdk.settings()
    )
    await engine.create("wait")
    await gate.wait_entered()
    for _ in range(3):
        await engine.create("wait")
    for _ in range(2):
        await engine.create("wait", options=FlowOptions(priority=5))
    expected = {
        frozenset({("shard", 1), ("priority", 100)}): 3,
        frozenset({("shard", 1), ("priority", 5)}): 2,
    }
    # A collection asks for a count; the claimer makes it on its next turn; a later collection reports it.
    await until(lambda: sdk.values("dwarf_steps_pending") == expected)
    assert sdk.values("dwarf_workers_busy") == {frozenset(): 1}
    gate.open()
    drained = dict.fromkeys(expected, 0)
    # A band that emptied reports 0 instead of vanishing.
    await until(lambda: sdk.values("dwarf_steps_pending") == drained)


async def test_the_pending_gauge_queries_only_when_collected_and_once_per_collection(
    make_engine: Any, sdk: Sdk
) -> None:
    engine = await make_engine(
        proxy_with("line", chain("Line", "A"), A=noop),
        scheduler_tuning=SchedulerTuning(idle_poll=0.02),
        **sdk.settings(),
    )
    store = engine.runtime.stores[0]
    queries: list[str] = []
    original = store.read

    async def spy(query: str, **params: Any) -> Any:
        queries.append(query)
        return await original(query, **params)

    store.read = spy
    await asyncio.sleep(0.3)
    assert "count_due_steps" not in queries
    sdk.metrics()
    await until(lambda: "count_due_steps" in queries)
    await asyncio.sleep(0.3)
    assert queries.count("count_due_steps") == 1


async def test_the_pool_gauges_report_postgres_connections(make_engine: Any, sdk: Sdk, backend: str) -> None:
    engine = await make_engine(proxy_with("line", chain("Line", "A"), A=noop), **sdk.settings())
    await engine.run("line", timeout=WAIT)
    size = sdk.values("dwarf_pool_size")
    in_use = sdk.values("dwarf_pool_in_use")
    if backend == "sqlite":
        assert size == {} and in_use == {}
        return
    assert size[frozenset({("shard", 1)})] >= 1
    assert 0 <= in_use[frozenset({("shard", 1)})] <= size[frozenset({("shard", 1)})]


async def test_an_engine_stops_reporting_gauges_at_shutdown(make_engine: Any, sdk: Sdk) -> None:
    engine = await make_engine(proxy_with("line", chain("Line", "A"), A=noop), **sdk.settings())
    assert "dwarf_workers_busy" in sdk.metrics()
    await engine.shutdown()
    assert "dwarf_workers_busy" not in sdk.metrics()


# --- traces ---


async def test_the_span_tree_of_a_fan_out_with_a_subgraph(make_engine: Any, sdk: Sdk) -> None:
    engine = await make_engine(_tree_proxy(), **sdk.settings())
    request_tracer = sdk.tracer_provider.get_tracer("test")
    with request_tracer.start_as_current_span("request") as request:
        key = await engine.create("tree", {"input": {}})
    assert (await engine.wait(key, timeout=WAIT)).status == Status.COMPLETED
    await until(lambda: len(sdk.spans_named("flow tree")) == 1)

    [flow] = sdk.spans_named("flow tree")
    [child_flow] = sdk.spans_named("flow child")
    tasks = {(s.name, s.attributes["dwarf.outcome"]): s for s in sdk.spans() if s.name.startswith("task ")}
    assert sorted(tasks) == [
        ("task A", "completed"),
        ("task B", "completed"),
        ("task B", "parked"),
        ("task C", "completed"),
        ("task J", "completed"),
        ("task X", "completed"),
    ]
    # A root flow's span is a child of the caller's span; everything shares its trace.
    assert _parent_id(flow) == request.get_span_context().span_id
    assert {s.context.trace_id for s in sdk.spans()} == {request.get_span_context().trace_id}
    for name in ("task A", "task B", "task C", "task J"):
        for (task, _), span in tasks.items():
            if task == name:
                assert _parent_id(span) == _span_id(flow), name
    # The child flow hangs under the task run that started it; its tasks under the child flow.
    assert _parent_id(child_flow) == _span_id(tasks[("task B", "parked")])
    assert _parent_id(tasks[("task X", "completed")]) == _span_id(child_flow)

    flow_id = _correlation(key)
    assert flow.attributes["dwarf.flow"] == flow_id
    assert flow.attributes["dwarf.status"] == "completed"
    assert child_flow.attributes["dwarf.parent_flow"] == flow_id
    assert tasks[("task A", "completed")].attributes["dwarf.flow"] == flow_id
    assert tasks[("task X", "completed")].attributes["dwarf.flow"] == child_flow.attributes["dwarf.flow"]
    # The flow span covers the whole flow.
    assert flow.start_time <= min(s.start_time for s in tasks.values())
    assert flow.end_time >= max(s.end_time for s in tasks.values())


async def test_the_flow_span_context_is_stored_on_the_flow_row(make_engine: Any, sdk: Sdk) -> None:
    engine = await make_engine(proxy_with("line", chain("Line", "A"), A=noop), **sdk.settings())
    key, _ = await engine.run("line", timeout=WAIT)
    await until(lambda: len(sdk.spans_named("flow line")) == 1)
    [flow] = sdk.spans_named("flow line")
    _, row = await engine.runtime.resolve(key)
    assert row.trace_parent == format_traceparent(flow.get_span_context())
    assert parse_traceparent(row.trace_parent).span_id == _span_id(flow)


async def test_a_failed_task_and_flow_have_error_status(make_engine: Any, sdk: Sdk) -> None:
    engine = await make_engine(proxy_with("boom", chain("Boom", "B"), B=failing("kaput")), **sdk.settings())
    await engine.run("boom", timeout=WAIT)
    await until(lambda: len(sdk.spans_named("flow boom")) == 1)
    [task] = sdk.spans_named("task B")
    assert task.status.status_code == StatusCode.ERROR
    assert task.status.description == "kaput"
    [flow] = sdk.spans_named("flow boom")
    assert flow.status.status_code == StatusCode.ERROR
    assert flow.attributes["dwarf.status"] == "failed"


async def test_an_interrupted_flow_keeps_one_span_across_the_resume(make_engine: Any, sdk: Sdk) -> None:
    engine = await make_engine(proxy_with("ask", chain("Ask", "Q"), Q=_interrupting), **sdk.settings())
    key = await engine.create("ask")
    await engine.wait(key, timeout=WAIT)
    assert sdk.spans_named("flow ask") == []
    await engine.resume(key, {"ok": True})
    await engine.wait(key, timeout=WAIT)
    await until(lambda: len(sdk.spans_named("flow ask")) == 1)
    [flow] = sdk.spans_named("flow ask")
    assert [event.name for event in flow.events] == ["interrupted"]
    runs = sdk.spans_named("task Q")
    assert [s.attributes["dwarf.outcome"] for s in runs] == ["interrupted", "completed"]
    assert all(_parent_id(s) == _span_id(flow) for s in runs)
    assert [s.attributes["dwarf.attempt"] for s in runs] == [0, 0]


async def test_the_host_runs_tasks_inside_the_task_span(make_engine: Any, sdk: Sdk) -> None:
    host_tracer = sdk.tracer_provider.get_tracer("host")

    async def async_task(flow: Flow) -> None:
        with host_tracer.start_as_current_span("host async work"):
            pass

    def sync_task(flow: Flow) -> None:  # runs in a worker thread
        with host_tracer.start_as_current_span("host sync work"):
            pass

    proxy = proxy_with("line", chain("Line", "A", "S"), A=async_task, S=sync_task)
    engine = await make_engine(proxy, **sdk.settings())
    await engine.run("line", timeout=WAIT)
    await until(lambda: len(sdk.spans_named("flow line")) == 1)
    [async_work] = sdk.spans_named("host async work")
    [sync_work] = sdk.spans_named("host sync work")
    assert _parent_id(async_work) == _span_id(sdk.spans_named("task A")[0])
    assert _parent_id(sync_work) == _span_id(sdk.spans_named("task S")[0])


async def test_cancelling_a_tree_ends_the_spans_of_its_child_flows(make_engine: Any, sdk: Sdk) -> None:
    gate = Gate()

    async def blocked(flow: Flow) -> None:
        await gate.pass_through()

    proxy = proxy_with("parent", single("Parent", "Call"), Call=calls_subgraph("child"), X=blocked)
    proxy.handle_graph("child", single("Child", "X"))
    engine = await make_engine(proxy, **sdk.settings())
    key = await engine.create("parent")
    await gate.wait_entered()
    await engine.cancel(key)
    gate.open()
    await until(lambda: len(sdk.spans_named("task X")) == 1)
    [parent] = sdk.spans_named("flow parent")
    [child] = sdk.spans_named("flow child")
    assert parent.attributes["dwarf.status"] == child.attributes["dwarf.status"] == "cancelled"
    assert sdk.spans_named("task X")[0].attributes["dwarf.outcome"] == "lost_lease"


async def test_a_flow_that_ends_in_another_process_gets_a_stand_in_span(fresh_dsn: str, sdk: Sdk) -> None:
    proxy = proxy_with("ask", chain("Ask", "Q"), Q=_interrupting)
    async with Replicas(proxy, fresh_dsn) as replicas:
        first = await replicas.start(**sdk.settings())
        key = await first.create("ask")
        await first.wait(key, timeout=WAIT)
        [asked] = sdk.spans_named("task Q")
        await first.shutdown()
        # A new process: same database, new providers; the first one's open flow span is gone with it.
        later = Sdk()
        second = await replicas.start(**later.settings())
        await second.resume(key)
        await second.wait(key, timeout=WAIT)
        await until(lambda: len(later.spans_named("flow ask")) == 1)
    [stand_in] = later.spans_named("flow ask")
    [answered] = later.spans_named("task Q")
    later.shutdown()
    assert stand_in.attributes["dwarf.flow.stand_in"] is True
    assert stand_in.attributes["dwarf.flow"] == _correlation(key)
    # It starts when the flow was created and sits in the flow's trace, next to the task runs.
    assert stand_in.start_time <= asked.start_time
    assert stand_in.context.trace_id == asked.context.trace_id == answered.context.trace_id
    assert _parent_id(stand_in) == _parent_id(asked) == _parent_id(answered)


async def test_a_fork_gets_its_own_flow_span(make_engine: Any, sdk: Sdk) -> None:
    proxy = proxy_with("line", chain("Line", "A", "B"), A=incrementer(), B=incrementer())
    engine = await make_engine(proxy, **sdk.settings())
    key, _ = await engine.run("line", timeout=WAIT)
    [_, second_step] = await engine.history(key)
    forked = await engine.fork(second_step.step_key, {"count": 10})
    assert (await engine.wait(forked, timeout=WAIT)).state == {"count": 11}
    await until(lambda: len(sdk.spans_named("flow line")) == 2)
    fork_span = next(
        s for s in sdk.spans_named("flow line") if s.attributes["dwarf.flow"] == _correlation(forked)
    )
    [rerun] = [s for s in sdk.spans_named("task B") if s.attributes["dwarf.flow"] == _correlation(forked)]
    assert _parent_id(rerun) == _span_id(fork_span)


# --- no keys anywhere ---


def _collecting_logger(records: list[logging.LogRecord]) -> logging.Logger:
    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record)

    logger = logging.getLogger(f"dwarf.test.telemetry.{len(records)}.{id(records)}")
    logger.setLevel(logging.DEBUG)
    logger.propagate = False
    logger.handlers = [Collect()]
    return logger


def _correlation(key: str) -> str:
    shard, row_id, _ = key.split("-", 2)
    return f"{shard}-{row_id}"


def _step_keys(steps: list[FlowStep]) -> list[str]:
    keys = []
    for step in steps:
        keys.append(step.step_key)
        keys.extend(_step_keys(step.sub_history))
    return keys


async def test_no_key_or_token_appears_in_any_span_metric_or_log(make_engine: Any, sdk: Sdk) -> None:
    records: list[logging.LogRecord] = []
    proxy = _tree_proxy()
    gate = Gate()

    async def blocked(flow: Flow) -> None:
        await gate.pass_through()

    proxy.handle_graph("boom", chain("Boom", "A", "F"))
    proxy.handle_task("F", failing("kaput"))
    proxy.handle_graph("ask", chain("Ask", "Q"))
    proxy.handle_task("Q", _interrupting)
    proxy.handle_graph("flaky", chain("Flaky", "R"))
    proxy.handle_task("R", _retry_once)
    proxy.handle_graph("stuck", chain("Stuck", "S"))
    proxy.handle_task("S", blocked)
    engine = await make_engine(proxy, logger=_collecting_logger(records), **sdk.settings())

    keys = [
        (await engine.run("tree", {"input": {}}, timeout=WAIT))[0],
        (await engine.run("boom", timeout=WAIT))[0],
        (await engine.run("flaky", timeout=WAIT))[0],
    ]
    asked = await engine.create("ask")
    await engine.wait(asked, timeout=WAIT)
    await engine.resume(asked, {"ok": True})
    await engine.wait(asked, timeout=WAIT)
    stuck = await engine.create("stuck")
    await gate.wait_entered()
    await engine.cancel(stuck)
    gate.open()
    keys += [asked, stuck]
    children, _ = await engine.list(Query(include_subgraphs=True))
    keys += [summary.flow_key for summary in children]
    for key in list(keys):
        keys += _step_keys(await engine.history(key))
    await until(
        lambda: any(r.getMessage().startswith("step") and "lost its lease" in r.getMessage() for r in records)
    )
    await until(lambda: len(sdk.spans_named("flow tree")) == 1)

    tokens = {key.split("-", 2)[2] for key in keys}
    assert all(len(token) == TOKEN_LENGTH for token in tokens)
    assert len(keys) > 15
    formatter = logging.Formatter("%(flow)s %(levelname)s %(message)s")
    texts = [span.to_json() for span in sdk.spans()]
    texts.append(sdk.reader.get_metrics_data().to_json())
    for record in records:
        texts.append(formatter.format(record))
        texts.append(repr(record.__dict__))
    assert records and sdk.spans()
    for text in texts:
        for secret in (*keys, *tokens):
            assert secret not in text
    # Every record carries the flow's correlation id (empty for records about the engine as a whole).
    assert all(hasattr(record, "flow") for record in records)
    step_records = [r for r in records if r.getMessage().startswith("step ")]
    assert step_records and all(r.flow for r in step_records)
    assert {_correlation(key) for key in keys[:5]} <= {r.flow for r in records}


async def test_per_step_records_are_debug_and_a_lost_lease_is_info(make_engine: Any) -> None:
    records: list[logging.LogRecord] = []
    proxy = proxy_with("line", chain("Line", "A", "B"), A=noop, B=noop)
    engine = await make_engine(proxy, logger=_collecting_logger(records))
    key, _ = await engine.run("line", timeout=WAIT)
    flow = _correlation(key)
    await until(lambda: any(r.getMessage() == f"flow {flow} completed" for r in records))
    mine = [r for r in records if r.flow == flow]
    assert {r.levelno for r in mine} == {logging.DEBUG}
    steps = [r.getMessage() for r in mine if r.getMessage().startswith("step ")]
    assert len(steps) == 2 and all(message.endswith(": completed") for message in steps)

    gate = Gate()

    async def blocked(flow: Flow) -> None:
        await gate.pass_through()

    proxy.handle_graph("stuck", chain("Stuck", "S"))
    proxy.handle_task("S", blocked)
    stuck = await engine.create("stuck")
    await gate.wait_entered()
    await engine.cancel(stuck)
    gate.open()
    await until(lambda: any("lost its lease" in r.getMessage() for r in records))
    [lost] = [r for r in records if "lost its lease" in r.getMessage()]
    assert lost.levelno == logging.INFO
    assert lost.flow == _correlation(stuck)


# --- no provider ---


@pytest.mark.parametrize("providers", ["unset", "no-op"])
async def test_without_a_provider_the_engine_records_nothing(
    make_engine: Any, backend: str, providers: str
) -> None:
    settings: dict[str, Any] = {}
    if providers == "no-op":
        settings = {"meter_provider": NoOpMeterProvider(), "tracer_provider": NoOpTracerProvider()}
    engine = await make_engine(proxy_with("line", chain("Line", "A"), A=noop), **settings)
    key, outcome = await engine.run("line", timeout=WAIT)
    assert outcome.status == Status.COMPLETED
    assert not engine.runtime.telemetry.metrics_enabled
    assert not engine.runtime.telemetry.tracing_enabled
    assert engine.runtime.telemetry.start_task(None, None) is None  # type: ignore[arg-type]
    _, row = await engine.runtime.resolve(key)
    assert row.trace_parent == ""


def test_the_globals_are_used_when_set_and_no_sdk_is_touched_when_not(tmp_path: Path) -> None:
    script = textwrap.dedent(
        """
        import asyncio, sys
        from dwarf import END, Engine, Graph, TestProxy

        async def noop(flow):
            pass

        def engine():
            graph = Graph("one")
            graph.add_task("A", "A")
            graph.add_transition("A", END)
            proxy = TestProxy()
            proxy.handle_graph("one", graph)
            proxy.handle_task("A", noop)
            engine = Engine(host=proxy)
            engine.set_in_test("globals")
            return engine

        async def main():
            async with engine() as plain:
                await plain.run("one", timeout=10)
                telemetry = plain.runtime.telemetry
                assert not telemetry.metrics_enabled and not telemetry.tracing_enabled
            assert not any(name.startswith("opentelemetry.sdk") for name in sys.modules), "SDK imported"

            from opentelemetry import metrics, trace
            from opentelemetry.sdk.metrics import MeterProvider
            from opentelemetry.sdk.metrics.export import InMemoryMetricReader
            from opentelemetry.sdk.trace import TracerProvider
            from opentelemetry.sdk.trace.export import SimpleSpanProcessor
            from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

            reader, exporter = InMemoryMetricReader(), InMemorySpanExporter()
            metrics.set_meter_provider(MeterProvider(metric_readers=[reader]))
            tracer_provider = TracerProvider()
            tracer_provider.add_span_processor(SimpleSpanProcessor(exporter))
            trace.set_tracer_provider(tracer_provider)
            async with engine() as traced:
                await traced.run("one", timeout=10)
            assert "flow one" in [span.name for span in exporter.get_finished_spans()]
            names = [m.name for rm in reader.get_metrics_data().resource_metrics
                     for sm in rm.scope_metrics for m in sm.metrics]
            assert "dwarf_flows_created" in names, names
            print("ok")

        asyncio.run(main())
        """
    )
    env = dict(os.environ)
    env.pop("DWARF_TEST_DSN", None)
    for name in list(env):
        if name.startswith("OTEL_"):
            del env[name]
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT / "src"), env.get("PYTHONPATH", "")]))
    result = subprocess.run(
        [sys.executable, "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"


def test_traceparent_text_round_trips_and_rejects_garbage() -> None:
    text = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    parsed = parse_traceparent(text)
    assert parsed is not None and parsed.is_remote
    assert format_traceparent(parsed) == text
    for bad in (
        "",
        "garbage",
        "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331",
        "00-" + "0" * 32 + "-" + "0" * 16 + "-01",
        "00-zzf7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
    ):
        assert parse_traceparent(bad) is None


async def test_a_flow_summary_carries_the_trace_id_of_its_flow_span(make_engine: Any, sdk: Sdk) -> None:
    engine = await make_engine(_tree_proxy(), **sdk.settings())
    _, outcome = await engine.run("tree", timeout=WAIT)
    assert outcome.status == Status.COMPLETED
    [root_span] = sdk.spans_named("flow tree")
    trace_id = f"{root_span.context.trace_id:032x}"
    flows, _ = await engine.list(Query(include_subgraphs=True))
    # The child flow's span is in its parent's trace: one trace id for the whole tree.
    assert {(flow.subgraph, flow.trace_id) for flow in flows} == {(False, trace_id), (True, trace_id)}


async def test_without_a_tracer_the_trace_id_is_empty(make_engine: Any) -> None:
    engine = await make_engine(_tree_proxy(), tracer_provider=NoOpTracerProvider())
    await engine.run("tree", timeout=WAIT)
    flows, _ = await engine.list(Query(include_subgraphs=True))
    assert len(flows) == 2 and {flow.trace_id for flow in flows} == {""}
