"""Typed rows: a flow or a step as the engine reads it, converted once where it leaves the database.

Drivers hand rows back as dicts whose values depend on the dialect (SQLite gives ints where PostgreSQL
gives ints or floats, JSON columns are text). ``FlowRow.of`` and ``StepRow.of`` turn a whole-table row
(``SELECT *`` or ``RETURNING *``) into a frozen record: ids and counters as ints, times as floats, flags
as bools, and the JSON columns the engine reads decoded. The flow's graph stays text: parsing it is the
flow-info cache's job, once per flow and worker. Statements that select a few columns keep returning
plain ``Row`` dicts.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

from dwarf.store.base import Row
from dwarf.store.encoded import encoded_value_error

_T = TypeVar("_T")

if TYPE_CHECKING:
    from typing_extensions import dataclass_transform

    @dataclass_transform(frozen_default=True)
    def _record(cls: type[_T]) -> type[_T]:
        """Frozen for the type checker, which then refuses any assignment to a field."""
        ...

else:

    def _record(cls):
        # Not frozen at run time: a frozen dataclass's __init__ sets each field through
        # object.__setattr__, which made building the 44 fields of a step row cost three times as much,
        # several microseconds of every step (a step builds a few rows).
        return dataclass(slots=True)(cls)


__all__ = ["PARKED_ON_CHILD", "PARKED_ON_SIGNAL", "FlowRow", "StepRow", "parse_failure", "parse_json"]

# The ``parked`` column of a step in status 'created': waiting on the child flow it started, or on a
# signal (013_timed_waits.sql). 0 for every other step.
PARKED_ON_CHILD = 1
PARKED_ON_SIGNAL = 2


def _json(text: str | None) -> Any:
    """A JSON column's value; None for SQL NULL, and for '' (a delta's state: 008_state_deltas.sql)."""
    if text == "{}":
        return {}  # most JSON columns of most rows: not worth a parse
    if text == "null":
        return None
    try:
        return json.loads(text) if text else None
    except ValueError:
        raise parse_failure(text) from None


def parse_json(text: str) -> Any:
    """A JSON column's text parsed; CodecError for a value encoded by codecs this engine cannot undo."""
    try:
        return json.loads(text)
    except ValueError:
        raise parse_failure(text) from None


def parse_failure(text: Any) -> Exception:
    """The error for a JSON column that does not parse: the CodecError of an encoded value (see
    store/encoded.py), else the parser's own error. Costs nothing until a parse failed."""
    error = encoded_value_error(text) if isinstance(text, str) else None
    if error is not None:
        return error
    try:
        json.loads(text)
    except (TypeError, ValueError) as failure:
        return failure
    return ValueError("not a JSON column")


def _time(value: Any) -> float | None:
    return None if value is None else float(value)


@_record
class FlowRow:
    """A dwarf_flows row."""

    flow_id: int
    flow_token: str
    workflow_url: str
    workflow_name: str
    graph: str
    baggage: Any
    status: str
    parent_flow_id: int
    parent_step_id: int
    root_flow_id: int
    thread_id: int
    thread_token: str
    forked_from_step_id: int
    notify_on_stop: bool
    delete_on_completion: bool
    final_state: dict[str, Any]
    error: str
    cancel_reason: str
    interrupt_payload: dict[str, Any]
    surfaced_step_id: int
    priority: int
    fairness_key: str
    fairness_weight: float
    time_budget_ms: int
    trace_parent: str
    version: int
    purge_marked: bool
    created_at: float
    started_at: float | None
    updated_at: float
    deadline: float | None
    """When the flow is cancelled unless it stopped before (013_timed_waits.sql); None for no deadline."""
    # Seconds the flow is kept after it fails or is cancelled / after it completes; None for ever. The
    # time its retention runs out, once it ended (014_retention.sql).
    retain_for: float | None
    retain_completed_for: float | None
    purge_after: float | None

    @classmethod
    def of(cls, row: Row) -> FlowRow:
        """The record of a whole dwarf_flows row."""
        return cls(
            flow_id=int(row["flow_id"]),
            flow_token=row["flow_token"],
            workflow_url=row["workflow_url"],
            workflow_name=row["workflow_name"],
            graph=row["graph"],
            baggage=_json(row["baggage"]),
            status=row["status"],
            parent_flow_id=int(row["parent_flow_id"]),
            parent_step_id=int(row["parent_step_id"]),
            root_flow_id=int(row["root_flow_id"]),
            thread_id=int(row["thread_id"]),
            thread_token=row["thread_token"],
            forked_from_step_id=int(row["forked_from_step_id"]),
            notify_on_stop=bool(row["notify_on_stop"]),
            delete_on_completion=bool(row["delete_on_completion"]),
            final_state=_json(row["final_state"]) or {},
            error=row["error"],
            cancel_reason=row["cancel_reason"],
            interrupt_payload=_json(row["interrupt_payload"]) or {},
            surfaced_step_id=int(row["surfaced_step_id"]),
            priority=int(row["priority"]),
            fairness_key=row["fairness_key"],
            fairness_weight=float(row["fairness_weight"]),
            time_budget_ms=int(row["time_budget_ms"]),
            trace_parent=row["trace_parent"],
            version=int(row["version"]),
            purge_marked=bool(row["purge_marked"]),
            created_at=float(row["created_at"]),
            started_at=_time(row["started_at"]),
            updated_at=float(row["updated_at"]),
            deadline=_time(row["deadline"]),
            retain_for=_time(row["retain_for"]),
            retain_completed_for=_time(row["retain_completed_for"]),
            purge_after=_time(row["purge_after"]),
        )


@_record
class StepRow:
    """A dwarf_steps row (the lease columns, which only statements compare, are left out)."""

    step_id: int
    flow_id: int
    step_token: str
    step_depth: int
    task_name: str
    task_url: str
    state: dict[str, Any] | None
    """The input state; None when the row stores it as the output of step ``state_base`` (a delta: see
    ``engine/states.py``), until the engine rebuilds it."""
    changes: dict[str, Any]
    appends: dict[str, list[Any]]
    """Items the task appended to array fields (``Flow.append``), applied after ``changes``."""
    state_base: int
    delta_depth: int
    delta_bytes: int
    snapshot_bytes: int
    interrupt_payload: dict[str, Any]
    status: str
    error: str
    attempt: int
    time_budget_ms: int
    priority: int
    fairness_key: str
    fairness_weight: float
    predecessor_id: int
    successor_id: int
    lineage_id: int
    fan_out_ordinal: int
    cohort_size: int
    cohort_arrivals: int
    cohort_failures: int
    carry: dict[str, Any]
    arrived: int
    for_each_as: str
    join_target: str
    fan_in_step_id: int
    parked: bool
    child_flow_id: int
    resume_data: Any
    """The data of a resume (None until the step is resumed)."""
    subgraph_result: Any
    """The final state of the child flow this step waited on (None unless it completed)."""
    subgraph_error: str
    wait_signal: str | None
    """The signal the step waits (or waited) for (013_timed_waits.sql); None for none."""
    wake_at: float | None
    """When its timed interrupt or signal wait times out; None without a timeout."""
    not_before: float
    version: int
    recoveries: int
    limit_slot: bool
    """Whether the step, while it runs, holds a slot of a concurrency limit (012_limits.sql)."""
    created_at: float
    started_at: float | None
    updated_at: float

    @classmethod
    def of(cls, row: Row, state: dict[str, Any] | None = None) -> StepRow:
        """The record of a whole dwarf_steps row; ``state`` is the input state when the caller holds it
        already (its column is then not parsed)."""
        return cls(
            step_id=int(row["step_id"]),
            flow_id=int(row["flow_id"]),
            step_token=row["step_token"],
            step_depth=int(row["step_depth"]),
            task_name=row["task_name"],
            task_url=row["task_url"],
            # '' is a delta's state (008_state_deltas.sql): not JSON, and not an empty state either.
            state=_json(row["state"]) if state is None else state,
            changes=_json(row["changes"]) or {},
            appends=_json(row["appends"]) or {},
            state_base=int(row["state_base"]),
            delta_depth=int(row["delta_depth"]),
            delta_bytes=int(row["delta_bytes"]),
            snapshot_bytes=int(row["snapshot_bytes"]),
            interrupt_payload=_json(row["interrupt_payload"]) or {},
            status=row["status"],
            error=row["error"],
            attempt=int(row["attempt"]),
            time_budget_ms=int(row["time_budget_ms"]),
            priority=int(row["priority"]),
            fairness_key=row["fairness_key"],
            fairness_weight=float(row["fairness_weight"]),
            predecessor_id=int(row["predecessor_id"]),
            successor_id=int(row["successor_id"]),
            lineage_id=int(row["lineage_id"]),
            fan_out_ordinal=int(row["fan_out_ordinal"]),
            cohort_size=int(row["cohort_size"]),
            cohort_arrivals=int(row["cohort_arrivals"]),
            cohort_failures=int(row["cohort_failures"]),
            carry=_json(row["carry"]) or {},
            arrived=int(row["arrived"]),
            for_each_as=row["for_each_as"],
            join_target=row["join_target"],
            fan_in_step_id=int(row["fan_in_step_id"]),
            parked=bool(row["parked"]),
            child_flow_id=int(row["child_flow_id"]),
            resume_data=_json(row["resume_data"]),
            subgraph_result=_json(row["subgraph_result"]),
            subgraph_error=row["subgraph_error"],
            wait_signal=row["wait_signal"],
            wake_at=_time(row["wake_at"]),
            not_before=float(row["not_before"]),
            version=int(row["version"]),
            recoveries=int(row["recoveries"]),
            limit_slot=bool(row["limit_slot"]),
            created_at=float(row["created_at"]),
            started_at=_time(row["started_at"]),
            updated_at=float(row["updated_at"]),
        )
