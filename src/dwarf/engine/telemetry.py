"""Telemetry: every OpenTelemetry instrument and span the engine emits, owned by one object per engine.

The engine builds a ``Telemetry`` at startup from the providers it was given (or the OpenTelemetry
globals). A provider that is the API's no-op (or the global proxy no SDK was installed behind) turns its
signal off entirely: no meter or tracer is even created, and every hook the engine calls returns at its
first check, so an engine without an SDK pays one function call per event.

Metrics. Counters and histograms are recorded inline by the hooks below; their attribute dicts are
built once per distinct value and reused. The gauges are observable: their callbacks run on the metric
reader's thread and only read values the engine keeps in memory. The pending-steps gauge needs a count
from the database, so a collection only *asks* for a refresh, which the shard's claimer performs on its
next loop turn (``wants_pending``/``set_pending``); an engine that no reader collects from never runs
that query. Instruments are shared by every engine on one MeterProvider, because the SDK answers a
second registration of a name with the first instrument (and drops the second one's callbacks).

Traces. A flow's span starts when the flow is inserted and ends when it reaches a terminal status. Its
context is stored on the flow row (``trace_parent``, W3C ``traceparent`` text), so that a task span, run
by any replica at any later time, nests under it; a child flow's span starts under the task span that
spawned it. Flows outlive processes: when a flow ends in a process that did not start its span (another
replica, or after a restart), there is no span object left to end, and a stand-in span is emitted from
the flow's creation time under the stored context (attribute ``dwarf.flow.stand_in``).

Spans, metric attributes and log records carry only the token-free correlation id ``{shard}-{id}``
(``keys.correlation_id``), never a key: a key is a bearer capability and telemetry is widely readable.
"""

from __future__ import annotations

import contextlib
import time
import weakref
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from opentelemetry import context as otel_context
from opentelemetry import metrics, trace
from opentelemetry.metrics import CallbackOptions, Counter, Histogram, Meter, MeterProvider, Observation
from opentelemetry.trace import (
    NonRecordingSpan,
    NoOpTracerProvider,
    ProxyTracerProvider,
    Span,
    SpanContext,
    SpanKind,
    StatusCode,
    TraceFlags,
    Tracer,
    TracerProvider,
)

from dwarf.engine.keys import correlation_id
from dwarf.workflow.status import TERMINAL_STATUSES, Status

if TYPE_CHECKING:
    from dwarf.engine.flowinfo import FlowInfo
    from dwarf.store.rows import StepRow
from dwarf.store.base import Row, Store

__all__ = [
    "COMPLETED",
    "FAILED",
    "INTERRUPTED",
    "LOST_LEASE",
    "PARKED",
    "RETRIED",
    "TaskRun",
    "Telemetry",
    "format_traceparent",
    "parse_traceparent",
    "trace_id_of",
]

SCOPE = "dwarf"

# The outcomes of one task run, the ``outcome`` attribute of dwarf_steps_executed and of task spans.
COMPLETED = "completed"
FAILED = "failed"
RETRIED = "retried"
INTERRUPTED = "interrupted"
PARKED = "parked"  # the task started a child flow and waits for it
LOST_LEASE = "lost_lease"  # the outcome was discarded: another worker or a cancel took the step

# Seconds, from a millisecond (a no-op task on SQLite) to the default 2-minute time budget and beyond.
_STEP_BUCKETS = (
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
    120.0, 300.0, 900.0, 3600.0,
)  # fmt: skip
# Flows may wait on people (interrupts) or long sleeps: up to a week.
_FLOW_BUCKETS = (
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0,
    14400.0, 86400.0, 604800.0,
)  # fmt: skip
# Open flow spans kept per engine. A flow whose span is evicted (or that never stops here) is reported by
# a stand-in span if it stops later; the bound only caps memory for flows parked for a long time.
_OPEN_FLOW_SPANS = 10_000
_ATTRIBUTE_CACHE = 4096

Attributes = Mapping[str, str | int]


def format_traceparent(context: SpanContext) -> str:
    """The W3C ``traceparent`` text of a span context ("" for an invalid one)."""
    if not context.is_valid:
        return ""
    return f"00-{context.trace_id:032x}-{context.span_id:016x}-{int(context.trace_flags):02x}"


def parse_traceparent(text: str) -> SpanContext | None:
    """The remote span context stored as ``traceparent`` text, or None when it is empty or malformed."""
    parts = text.split("-")
    if (
        len(parts) != 4
        or parts[0] != "00"
        or len(parts[1]) != 32
        or len(parts[2]) != 16
        or len(parts[3]) != 2
    ):
        return None
    try:
        trace_id, span_id, flags = int(parts[1], 16), int(parts[2], 16), int(parts[3], 16)
    except ValueError:
        return None
    context = SpanContext(trace_id, span_id, is_remote=True, trace_flags=TraceFlags(flags))
    return context if context.is_valid else None


def trace_id_of(trace_parent: str) -> str:
    """The trace id (32 hex digits) of a stored ``traceparent``; "" when there is none (no tracer at
    create) or it is malformed. What ``FlowSummary.trace_id`` shows, to find the flow's trace."""
    parsed = parse_traceparent(trace_parent) if trace_parent else None
    return "" if parsed is None else f"{parsed.trace_id:032x}"


def _parent_context(trace_parent: str) -> otel_context.Context | None:
    parsed = parse_traceparent(trace_parent)
    return None if parsed is None else trace.set_span_in_context(NonRecordingSpan(parsed))


def _live_meter_provider(provider: Any) -> MeterProvider | None:
    """The provider to record with, or None when it would record nothing."""
    provider = provider if provider is not None else metrics.get_meter_provider()
    if isinstance(provider, metrics.NoOpMeterProvider):
        return None
    # Until an SDK is installed globally, the global is a private proxy class; resolving it once at startup
    # (like the reference) keeps the hot path free of a lookup per event. Set globals before startup.
    if type(provider).__name__ == "_ProxyMeterProvider":
        return None
    return provider if isinstance(provider, MeterProvider) else None


def _live_tracer_provider(provider: Any) -> TracerProvider | None:
    provider = provider if provider is not None else trace.get_tracer_provider()
    if isinstance(provider, NoOpTracerProvider | ProxyTracerProvider):
        return None
    return provider if isinstance(provider, TracerProvider) else None


class _Instruments:
    """The instruments of one MeterProvider, and the engines whose state its gauges report."""

    def __init__(self, meter: Meter) -> None:
        self.sources: weakref.WeakSet[Telemetry] = weakref.WeakSet()
        counter = meter.create_counter
        self.flows_created: Counter = counter(
            "dwarf_flows_created", unit="{flow}", description="Flows created (root and child flows)."
        )
        self.flows_stopped: Counter = counter(
            "dwarf_flows_stopped",
            unit="{flow}",
            description="Flows that stopped: completed, failed, cancelled, or interrupted (a pause).",
        )
        self.steps_executed: Counter = counter(
            "dwarf_steps_executed",
            unit="{step}",
            description="Task runs, by outcome.",
        )
        self.retries: Counter = counter(
            "dwarf_retries", unit="{retry}", description="Retries tasks asked for."
        )
        self.sleeps: Counter = counter("dwarf_sleeps", unit="{sleep}", description="Sleeps tasks asked for.")
        self.interrupts: Counter = counter(
            "dwarf_interrupts", unit="{interrupt}", description="Steps parked by an interrupt."
        )
        self.lease_recoveries: Counter = counter(
            "dwarf_lease_recoveries",
            unit="{step}",
            description="Steps put back in the queue after their worker's lease expired.",
        )
        self.wedge_repairs: Counter = counter(
            "dwarf_wedge_repairs",
            unit="{step}",
            description="Stuck steps a sweep repaired; anything but 0 points at an engine bug.",
        )
        self.signals_sent: Counter = counter(
            "dwarf_signals_sent", unit="{signal}", description="Signals handed to the host for peer replicas."
        )
        self.signals_received: Counter = counter(
            "dwarf_signals_received", unit="{signal}", description="Signals delivered from peer replicas."
        )
        self.fan_in_merges: Counter = counter(
            "dwarf_fan_in_merges",
            unit="{merge}",
            description="Cohorts whose branches were merged at their join.",
        )
        self.task_duration = _histogram(
            meter, "dwarf_task_duration", "Time inside Host.execute_task per task run.", _STEP_BUCKETS
        )
        self.step_latency = _histogram(
            meter,
            "dwarf_step_latency",
            "From a step's creation to the commit that completed or failed it (queueing, retries included).",
            _STEP_BUCKETS,
        )
        self.claim_latency = _histogram(
            meter, "dwarf_claim_latency", "Round trip of one claim statement.", _STEP_BUCKETS
        )
        self.flow_duration = _histogram(
            meter, "dwarf_flow_duration", "From a flow's creation to its terminal status.", _FLOW_BUCKETS
        )
        meter.create_observable_gauge(
            "dwarf_steps_pending",
            callbacks=[self._observe_pending],
            unit="{step}",
            description="Due steps waiting for a worker, per shard and priority (refreshed per collection).",
        )
        meter.create_observable_gauge(
            "dwarf_pool_in_use",
            callbacks=[self._observe_pool_in_use],
            unit="{connection}",
            description="Database connections checked out of the pool, per shard (PostgreSQL).",
        )
        meter.create_observable_gauge(
            "dwarf_pool_size",
            callbacks=[self._observe_pool_size],
            unit="{connection}",
            description="Database connections open in the pool, per shard (PostgreSQL).",
        )
        meter.create_observable_gauge(
            "dwarf_workers_busy",
            callbacks=[self._observe_workers],
            unit="{worker}",
            description="Workers running a step.",
        )

    # The callbacks run on the reader's thread: they read engine memory only, never the database.

    def _observe_pending(self, options: CallbackOptions) -> Iterable[Observation]:
        merged: dict[tuple[int, int], int] = {}
        for source in list(self.sources):
            for key, count in source.pending_counts().items():
                # Engines sharing a database count the same rows: report the freshest view, not a sum.
                merged[key] = max(merged.get(key, 0), count)
        return [Observation(count, {"shard": s, "priority": p}) for (s, p), count in sorted(merged.items())]

    def _observe_pool_in_use(self, options: CallbackOptions) -> Iterable[Observation]:
        return self._pool_observations(
            lambda stats: stats.get("pool_size", 0) - stats.get("pool_available", 0)
        )

    def _observe_pool_size(self, options: CallbackOptions) -> Iterable[Observation]:
        return self._pool_observations(lambda stats: stats.get("pool_size", 0))

    def _pool_observations(self, value: Callable[[Mapping[str, int]], int]) -> list[Observation]:
        totals: dict[int, int] = {}
        for source in list(self.sources):
            for shard, stats in source.pool_stats():
                totals[shard] = totals.get(shard, 0) + max(0, value(stats))
        return [Observation(total, {"shard": shard}) for shard, total in sorted(totals.items())]

    def _observe_workers(self, options: CallbackOptions) -> Iterable[Observation]:
        busy = sum(source.busy_workers() for source in list(self.sources))
        return [Observation(busy)] if self.sources else []


def _histogram(meter: Meter, name: str, description: str, buckets: Sequence[float]) -> Histogram:
    try:
        return meter.create_histogram(
            name, unit="s", description=description, explicit_bucket_boundaries_advisory=buckets
        )
    except TypeError:  # opentelemetry-api older than 1.23 has no bucket advisory
        return meter.create_histogram(name, unit="s", description=description)


_instruments_by_provider: weakref.WeakKeyDictionary[MeterProvider, _Instruments] = weakref.WeakKeyDictionary()


def _instruments_for(provider: MeterProvider) -> _Instruments:
    try:
        found = _instruments_by_provider.get(provider)
    except TypeError:  # a provider that cannot be weakly referenced: no sharing
        return _Instruments(provider.get_meter(SCOPE))
    if found is None:
        found = _instruments_by_provider[provider] = _Instruments(provider.get_meter(SCOPE))
    return found


class TaskRun:
    """One task run being observed: its span (None when tracing is off) and how long the task took."""

    __slots__ = ("elapsed", "span")

    def __init__(self, span: Span | None) -> None:
        self.span = span
        self.elapsed = 0.0

    @contextlib.contextmanager
    def running(self) -> Iterator[None]:
        """Time the host's ``execute_task``, with the task span current so the host's spans nest under it."""
        started = time.perf_counter()
        try:
            if self.span is None:
                yield
            else:
                # Park (interrupt, subgraph) is a BaseException and no error: the outcome sets the status.
                with trace.use_span(self.span, record_exception=False, set_status_on_exception=False):
                    yield
        finally:
            self.elapsed = time.perf_counter() - started


class Telemetry:
    """The instruments, tracer and span bookkeeping of one engine.

    ``Telemetry()`` (no providers) is the off switch: every hook returns at once.
    """

    def __init__(
        self,
        meter_provider: MeterProvider | None = None,
        tracer_provider: TracerProvider | None = None,
    ) -> None:
        self._m: _Instruments | None = _instruments_for(meter_provider) if meter_provider else None
        self._tracer: Tracer | None = tracer_provider.get_tracer(SCOPE) if tracer_provider else None
        self._stores: list[Store] = []
        self._busy: Callable[[], int] = _no_workers
        # Pending gauge: the last counts per shard, and per shard when a refresh is due (set by collections).
        self._pending: dict[int, dict[int, int]] = {}
        self._pending_due: dict[int, float] = {}
        self._last_collect = 0.0
        self._seen_bands: set[tuple[int, int]] = set()
        self._attributes: dict[tuple[tuple[str, str | int], ...], Attributes] = {}
        self._open_flows: OrderedDict[tuple[int, int], Span] = OrderedDict()
        self._flow_contexts: dict[str, otel_context.Context | None] = {}
        # Root flow -> its child flows with open spans, so that cancelling a tree ends every span of it.
        self._children: OrderedDict[tuple[int, int], list[int]] = OrderedDict()

    @classmethod
    def from_settings(cls, meter_provider: Any, tracer_provider: Any) -> Telemetry:
        """Resolve the engine's provider settings (None = the OpenTelemetry globals)."""
        return cls(_live_meter_provider(meter_provider), _live_tracer_provider(tracer_provider))

    @property
    def metrics_enabled(self) -> bool:
        return self._m is not None

    @property
    def tracing_enabled(self) -> bool:
        return self._tracer is not None

    def attach(self, stores: Sequence[Store], busy_workers: Callable[[], int]) -> None:
        """Start reporting the gauges of a started engine."""
        if self._m is None:
            return
        self._stores = list(stores)
        self._busy = busy_workers
        self._m.sources.add(self)

    def close(self) -> None:
        """Stop reporting gauges (the provider outlives the engine) and drop references to the stores."""
        if self._m is not None:
            self._m.sources.discard(self)
        self._stores = []
        self._busy = _no_workers
        self._pending.clear()
        self._pending_due.clear()
        self._seen_bands.clear()

    def _attrs(self, *pairs: tuple[str, str | int]) -> Attributes:
        """The attribute dict of (name, value) pairs, built once and reused rather than per event."""
        found = self._attributes.get(pairs)
        if found is None:
            found = dict(pairs)
            if len(self._attributes) < _ATTRIBUTE_CACHE:
                self._attributes[pairs] = found
        return found

    # --- flows ---

    def open_flow_span(self, workflow_url: str, parent: Span | str | None = None) -> tuple[Span | None, str]:
        """Start the span of a flow about to be inserted; return it and the ``trace_parent`` to store.

        ``parent``: the task span that spawns a child flow, a stored ``traceparent``, or None for the
        caller's current context (a root flow is a child of whatever span is current where it is created).
        """
        tracer = self._tracer
        if tracer is None:
            return None, ""
        if isinstance(parent, str):
            context = _parent_context(parent)
        elif parent is not None:
            context = trace.set_span_in_context(parent)
        else:
            context = None
        span = tracer.start_span(
            f"flow {workflow_url}",
            context=context,
            kind=SpanKind.INTERNAL,
            attributes={"dwarf.workflow": workflow_url},
        )
        trace_parent = format_traceparent(span.get_span_context())
        if not trace_parent:
            return None, ""
        return span, trace_parent

    def open_fork_spans(self, workflow_urls: Sequence[str]) -> list[tuple[Span | None, str]]:
        """The spans of the flows a fork creates, root first: the root under the caller's context, the
        child flows under the root (the task spans that would be their parents never ran in the fork)."""
        if self._tracer is None:
            return [(None, "")] * len(workflow_urls)
        root = self.open_flow_span(workflow_urls[0])
        return [root] + [self.open_flow_span(url, root[1]) for url in workflow_urls[1:]]

    def flow_created(self, info: FlowInfo, span: Span | None) -> None:
        """A flow was committed; ``span`` is the one ``open_flow_span`` returned for it."""
        m = self._m
        if m is not None:
            m.flows_created.add(1, self._attrs(("workflow", info.workflow_url)))
        if span is None:
            return
        span.set_attribute("dwarf.flow", info.correlation_id)
        if info.parent_flow_id:
            span.set_attribute("dwarf.parent_flow", correlation_id(info.shard, info.parent_flow_id))
        key = (info.shard, info.flow_id)
        self._open_flows[key] = span
        if len(self._open_flows) > _OPEN_FLOW_SPANS:
            self._open_flows.popitem(last=False)
        if info.root_flow_id != info.flow_id:
            self._children.setdefault((info.shard, info.root_flow_id), []).append(info.flow_id)
            if len(self._children) > _OPEN_FLOW_SPANS:
                self._children.popitem(last=False)

    def flow_stopped(self, info: FlowInfo, status: Status) -> None:
        """A flow stopped (terminal, or interrupted); cancel reports the root of the cancelled tree."""
        m = self._m
        if m is not None:
            m.flows_stopped.add(1, self._attrs(("workflow", info.workflow_url), ("status", status.value)))
            if status in TERMINAL_STATUSES:
                elapsed = max(0.0, time.time() - info.created_at)
                m.flow_duration.record(
                    elapsed, self._attrs(("workflow", info.workflow_url), ("status", status.value))
                )
        if self._tracer is not None:
            self._end_flow_span(info, status)

    def _end_flow_span(self, info: FlowInfo, status: Status) -> None:
        key = (info.shard, info.flow_id)
        if status not in TERMINAL_STATUSES:
            open_span = self._open_flows.get(key)
            if open_span is not None:
                open_span.add_event("interrupted")
            return
        span = self._open_flows.pop(key, None)
        if span is None:
            span = self._stand_in_span(info)
        if span is not None:
            _finish_flow_span(span, status)
        if info.parent_flow_id:
            return
        # The rest of the tree stops with its root (a cancel reports only the root).
        for child_id in self._children.pop(key, ()):
            child = self._open_flows.pop((info.shard, child_id), None)
            if child is not None:
                _finish_flow_span(child, status)

    def _stand_in_span(self, info: FlowInfo) -> Span | None:
        context = _parent_context(info.trace_parent)
        if context is None or self._tracer is None:
            return None
        return self._tracer.start_span(
            f"flow {info.workflow_url}",
            context=context,
            kind=SpanKind.INTERNAL,
            start_time=int(info.created_at * 1e9),
            attributes={
                "dwarf.workflow": info.workflow_url,
                "dwarf.flow": info.correlation_id,
                "dwarf.flow.stand_in": True,
            },
        )

    # --- steps ---

    def _flow_context(self, trace_parent: str) -> otel_context.Context | None:
        """The parent context of a flow's task spans, parsed once per flow rather than once per step."""
        context = self._flow_contexts.get(trace_parent)
        if context is None:
            context = _parent_context(trace_parent)
            if len(self._flow_contexts) >= _OPEN_FLOW_SPANS:
                self._flow_contexts.clear()
            self._flow_contexts[trace_parent] = context
        return context

    def start_task(self, info: FlowInfo, step: StepRow) -> TaskRun | None:
        """Observe one task run: None when telemetry is off (the engine then skips every step hook)."""
        if self._m is None and self._tracer is None:
            return None
        span = None
        if self._tracer is not None and info.trace_parent:
            task = step.task_name
            span = self._tracer.start_span(
                f"task {task}",
                context=self._flow_context(info.trace_parent),
                kind=SpanKind.INTERNAL,
                attributes={
                    "dwarf.flow": info.correlation_id,
                    "dwarf.step": correlation_id(info.shard, step.step_id),
                    "dwarf.task": task,
                    "dwarf.attempt": step.attempt,
                },
            )
        return TaskRun(span)

    def step_committed(
        self,
        run: TaskRun,
        step: StepRow,
        outcome: str,
        *,
        slept: bool = False,
        error: str = "",
    ) -> None:
        """The outcome of a task run was committed (or, for ``LOST_LEASE``, discarded)."""
        span = run.span
        if span is not None:
            span.set_attribute("dwarf.outcome", outcome)
            if outcome == FAILED:
                span.set_status(StatusCode.ERROR, error)
            span.end()
        m = self._m
        if m is None:
            return
        task = step.task_name
        per_task = self._attrs(("task", task))
        m.steps_executed.add(1, self._attrs(("task", task), ("outcome", outcome)))
        m.task_duration.record(run.elapsed, per_task)
        if outcome == RETRIED:
            m.retries.add(1, per_task)
        elif outcome == INTERRUPTED:
            m.interrupts.add(1, per_task)
        elif outcome in (COMPLETED, FAILED):
            m.step_latency.record(max(0.0, time.time() - step.created_at), per_task)
        if slept:
            m.sleeps.add(1, per_task)

    def fan_in_merged(self, merges: int) -> None:
        """Cohorts whose branches a committed transaction merged at their join."""
        m = self._m
        if m is not None and merges:
            m.fan_in_merges.add(merges)

    def end_task(self, run: TaskRun, reason: str) -> None:
        """End a task span whose outcome was never committed (shutdown, or a failure of the engine)."""
        if run.span is not None and run.span.is_recording():
            run.span.set_status(StatusCode.ERROR, reason)
            run.span.end()

    # --- scheduling ---

    def claimed(self, shard: int, started: float) -> None:
        """A claim statement returned; ``started`` is its ``time.perf_counter()`` start."""
        m = self._m
        if m is not None:
            m.claim_latency.record(time.perf_counter() - started, self._attrs(("shard", shard)))

    def leases_recovered(self, shard: int, count: int) -> None:
        m = self._m
        if m is not None and count:
            m.lease_recoveries.add(count, self._attrs(("shard", shard)))

    def wedge_repaired(self, count: int = 1) -> None:
        m = self._m
        if m is not None and count:
            m.wedge_repairs.add(count)

    def signal_sent(self, op: str) -> None:
        m = self._m
        if m is not None:
            m.signals_sent.add(1, self._attrs(("op", op)))

    def signal_received(self, op: str) -> None:
        m = self._m
        if m is not None:
            m.signals_received.add(1, self._attrs(("op", op)))

    # --- the pending gauge ---

    def wants_pending(self, shard: int) -> bool:
        """Whether a metrics collection asked for a fresh count of ``shard``'s due steps."""
        due = self._pending_due.get(shard)
        return due is not None and time.monotonic() >= due

    def set_pending(self, shard: int, rows: Iterable[Row]) -> None:
        """Store a fresh count (rows of priority, pending) for the next collection."""
        self._pending_due.pop(shard, None)
        self._pending[shard] = {int(row["priority"]): int(row["pending"]) for row in rows}

    def pending_counts(self) -> dict[tuple[int, int], int]:
        """The last counts per (shard, priority), and a request for a refresh before the next collection.

        A band that emptied is reported as 0 rather than dropped, so that dashboards see it drain.
        """
        now = time.monotonic()
        # Refresh late in the collection interval (three quarters of the last gap between collections),
        # so the next collection reads a recent count while the database is asked at most once per
        # collection. With no interval known yet, refresh at once.
        gap = now - self._last_collect if self._last_collect else 0.0
        self._last_collect = now
        for store in self._stores:
            self._pending_due[store.shard] = now + 0.75 * gap
        counts: dict[tuple[int, int], int] = {}
        for shard, bands in list(self._pending.items()):
            for priority, count in list(bands.items()):
                counts[(shard, priority)] = count
        for key in self._seen_bands:
            counts.setdefault(key, 0)
        self._seen_bands.update(counts)
        return counts

    def pool_stats(self) -> list[tuple[int, Mapping[str, int]]]:
        """(shard, psycopg pool counters) of the stores that have a pool."""
        result = []
        for store in list(self._stores):
            stats = getattr(store, "pool_stats", None)
            if stats is not None:
                result.append((store.shard, stats()))
        return result

    def busy_workers(self) -> int:
        return self._busy()


def _finish_flow_span(span: Span, status: Status) -> None:
    span.set_attribute("dwarf.status", status.value)
    if status == Status.FAILED:
        span.set_status(StatusCode.ERROR, "the flow failed")
    span.end()


def _no_workers() -> int:
    return 0
