"""How the CLI shows records: rich tables and trees for people, plain JSON documents for scripts.

Every time is shown in UTC ISO 8601 form with a ``Z`` suffix, in both forms of output.
"""

from __future__ import annotations

import dataclasses
import enum
import json
import os
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import typer
from rich.console import Console, Group, RenderableType
from rich.json import JSON
from rich.table import Table
from rich.text import Text
from rich.tree import Tree

from dwarf.workflow.limits import Limit
from dwarf.workflow.progress import FlowWait
from dwarf.workflow.records import FlowOutcome, FlowStep, FlowSummary, ShardSummary
from dwarf.workflow.schedules import Schedule
from dwarf.workflow.status import TERMINAL_STATUSES, Status

__all__ = [
    "console",
    "echo_json",
    "flows_table",
    "history_tree",
    "iso",
    "jsonable",
    "outcome_view",
    "schedule_view",
    "schedules_table",
    "shards_table",
    "status_text",
    "step_view",
    "waits_json",
]

_PIPE_WIDTH = 1000
_TIME_WIDTH = len("2024-05-01T12:00:00Z")
_STATUS_STYLE = {
    Status.COMPLETED: "green",
    Status.FAILED: "red",
    Status.CANCELLED: "magenta",
    Status.INTERRUPTED: "yellow",
    Status.RUNNING: "cyan",
    Status.PENDING: "blue",
    Status.CREATED: "blue",
}


def console(*, stderr: bool = False) -> Console:
    """A console on the current stdout (or stderr); made per call so that redirected streams are honoured."""
    out = Console(stderr=stderr, highlight=False, soft_wrap=False)
    if not out.is_terminal and "COLUMNS" not in os.environ:
        # Piped output goes to grep, less or a file: never cut a key or a time to fit 80 columns. Tables
        # and trees take only the width their content needs.
        out.width = _PIPE_WIDTH
    return out


def iso(moment: datetime | None) -> str:
    """``2024-05-01T12:00:00.123456Z``; "" for no time."""
    if moment is None:
        return ""
    text = moment.astimezone(UTC).isoformat()
    return text.removesuffix("+00:00") + "Z"


def _short_iso(moment: datetime | None) -> str:
    """A table's time: to the second, still UTC ISO."""
    if moment is None:
        return ""
    return moment.astimezone(UTC).replace(microsecond=0).isoformat().removesuffix("+00:00") + "Z"


def jsonable(value: Any) -> Any:
    """Records, enums and datetimes turned into plain JSON values (dataclasses become objects)."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: jsonable(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, datetime):
        return iso(value)
    if isinstance(value, timedelta):
        return value.total_seconds()
    if isinstance(value, Mapping):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    return value


def echo_json(document: Any) -> None:
    """Print one JSON document on stdout, bypassing rich so that nothing is wrapped or highlighted."""
    typer.echo(json.dumps(jsonable(document), indent=2, ensure_ascii=False))


def status_text(status: Status) -> Text:
    """A status word in its colour."""
    return Text(str(status), style=_STATUS_STYLE.get(status, ""))


def _parked(step: FlowStep) -> bool:
    """Waiting for a child flow: shown as such only while the step has not ended."""
    return step.parked and step.status not in TERMINAL_STATUSES


def waits_json(waits: Sequence[FlowWait]) -> list[dict[str, Any]]:
    """``Engine.why``'s waits as JSON objects, each with its one-line ``text`` as ``dwarf show`` prints it."""
    return [{**jsonable(wait), "text": wait.describe()} for wait in waits]


def flows_table(flows: Sequence[FlowSummary], waits: Mapping[str, Sequence[FlowWait]] | None = None) -> Table:
    """One row per flow: key, workflow URL, status, current task, creation time, and why it stopped (or,
    with ``waits`` from ``Engine.why``, why it is not moving)."""
    table = Table(show_edge=False, pad_edge=False, header_style="bold")
    # Keys and times are never cut (a cut key cannot be pasted into the next command); prose columns fold.
    key_width = max((len(flow.flow_key) for flow in flows), default=8)
    table.add_column("flow key", no_wrap=True, min_width=key_width)
    table.add_column("workflow", overflow="fold")
    table.add_column("status", no_wrap=True, min_width=len("interrupted"))
    table.add_column("task", overflow="fold")
    table.add_column("created (UTC)", no_wrap=True, min_width=_TIME_WIDTH)
    table.add_column("note", overflow="fold")
    for flow in flows:
        note = flow.error or (f"cancelled: {flow.cancel_reason}" if flow.cancel_reason else "")
        if flow.status == Status.INTERRUPTED and not note:
            note = f"interrupted since {_short_iso(flow.updated_at)}"
        if waits is not None and flow.flow_key in waits:
            note = "; ".join(wait.describe() for wait in waits[flow.flow_key]) or note
        workflow = flow.workflow_url or flow.workflow_name
        if flow.subgraph:
            workflow += " (child)"
        table.add_row(
            flow.flow_key,
            Text(workflow),
            status_text(flow.status),
            Text(flow.task_name),
            _short_iso(flow.created_at),
            Text(note),
        )
    return table


def _fields(rows: Iterable[tuple[str, RenderableType | str]]) -> Table:
    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="bold", no_wrap=True)
    grid.add_column()
    for name, value in rows:
        grid.add_row(name, Text(value) if isinstance(value, str) else value)
    return grid


def _json_block(value: Any) -> JSON:
    return JSON(json.dumps(value, ensure_ascii=False), indent=2)


def outcome_view(flow_key: str, outcome: FlowOutcome, waits: Sequence[FlowWait] = ()) -> RenderableType:
    """A flow's outcome: status, why it is not moving (``Engine.why``), the reason it stopped, the
    interrupt payload, the state."""
    rows: list[tuple[str, RenderableType | str]] = [
        ("flow", flow_key),
        ("status", status_text(outcome.status)),
    ]
    for index, wait in enumerate(waits):
        text = wait.describe()
        if wait.child_flow_key:
            text += f": dwarf show {wait.child_flow_key}"
        rows.append(("waiting" if index == 0 else "", text))
    if outcome.error:
        rows.append(("error", outcome.error))
    if outcome.cancel_reason:
        rows.append(("cancel reason", outcome.cancel_reason))
    if outcome.status == Status.INTERRUPTED:
        rows.append(("interrupt", _json_block(outcome.interrupt_payload)))
    rows.append(("state", _json_block(outcome.state)))
    return _fields(rows)


def step_view(step: FlowStep) -> RenderableType:
    """Everything about one step: identity, status, neighbours, times, input state and changes."""
    status: RenderableType = status_text(step.status)
    if _parked(step):
        status = Text.assemble(status_text(step.status), " (parked)")
    rows: list[tuple[str, RenderableType | str]] = [
        ("step", step.step_key),
        ("task", step.task_name),
        ("task url", step.task_url or "-"),
        ("status", status),
        ("attempt", str(step.attempt)),
        ("depth", str(step.step_depth)),
        ("previous", step.prev_key or "-"),
        ("next", step.next_key or "-"),
        ("created", iso(step.created_at)),
        ("started", iso(step.started_at) or "-"),
        ("updated", iso(step.updated_at)),
    ]
    if step.subgraph:
        rows.append(("child flow", step.sub_workflow_name or step.sub_workflow_url or "yes"))
    if step.error:
        rows.append(("error", step.error))
    if step.interrupt_payload:
        rows.append(("interrupt", _json_block(step.interrupt_payload)))
    rows.append(("input state", _json_block(step.state)))
    rows.append(("changes", _json_block(step.changes)))
    return _fields(rows)


def _step_label(step: FlowStep, with_changes: bool) -> RenderableType:
    label = Text.assemble(
        (step.task_name, "bold"),
        "  ",
        status_text(step.status),
        (" (parked)" if _parked(step) else ""),
        (f"  attempt {step.attempt}" if step.attempt > 0 else ""),
        ("  " + step.step_key, "dim"),
        ("  " + _short_iso(step.created_at), "dim"),
    )
    extra: list[RenderableType] = []
    if step.error:
        extra.append(Text(f"error: {step.error}", style="red"))
    if step.interrupt_payload and step.status == Status.INTERRUPTED:
        extra.append(Text("interrupt: " + json.dumps(step.interrupt_payload, ensure_ascii=False)))
    if with_changes and step.changes:
        extra.append(Text("changes: " + json.dumps(step.changes, ensure_ascii=False), style="dim"))
    return Group(label, *extra) if extra else label


def history_tree(flow_key: str, steps: Sequence[FlowStep], *, with_changes: bool = False) -> Tree:
    """The steps in depth order; a step that ran a child flow holds the child's steps as its branch."""
    root = Tree(Text.assemble(("flow ", "bold"), flow_key), guide_style="dim")
    # An explicit stack, so that deeply nested child flows do not recurse on the Python stack.
    pending: list[tuple[Tree, Sequence[FlowStep]]] = [(root, steps)]
    while pending:
        parent, level = pending.pop()
        for step in level:
            node = parent.add(_step_label(step, with_changes))
            if step.sub_history:
                title = step.sub_workflow_name or step.sub_workflow_url
                child = node.add(Text.assemble(("child flow ", "italic"), (title, "italic")))
                pending.append((child, step.sub_history))
    return root


def shards_table(shards: Sequence[ShardSummary]) -> Table:
    """One row per shard: its size and ping latency, or the error that made it unreachable."""
    table = Table(show_edge=False, pad_edge=False, header_style="bold")
    table.add_column("shard", justify="right")
    table.add_column("flows", justify="right")
    table.add_column("steps", justify="right")
    table.add_column("latency ms", justify="right")
    table.add_column("error")
    for shard in shards:
        if shard.error:
            table.add_row(str(shard.shard), "-", "-", "-", Text(shard.error, style="red"))
        else:
            table.add_row(str(shard.shard), str(shard.flows), str(shard.steps), str(shard.latency_ms), "")
    return table


def _schedule_state(schedule: Schedule) -> Text:
    return Text("paused", style="yellow") if schedule.paused else Text("active", style="green")


def schedules_table(schedules: Sequence[Schedule]) -> Table:
    """One row per schedule: name, workflow, timing, whether it is paused, its next and last tick, the last
    flow it started (its key, to paste into `dwarf show`) or why the last tick started none."""
    table = Table(show_edge=False, pad_edge=False, header_style="bold")
    table.add_column("name", overflow="fold")
    table.add_column("workflow", overflow="fold")
    table.add_column("timing", overflow="fold")
    table.add_column("state", no_wrap=True)
    table.add_column("next tick (UTC)", no_wrap=True, min_width=_TIME_WIDTH)
    table.add_column("last tick (UTC)", no_wrap=True, min_width=_TIME_WIDTH)
    table.add_column("last flow", no_wrap=True)
    for schedule in schedules:
        last: Text = Text(schedule.last_flow_key)
        if schedule.last_error:
            last = Text(f"error: {schedule.last_error}", style="red")
        table.add_row(
            Text(schedule.name),
            Text(schedule.workflow_url),
            Text(f"{schedule.timing}, catch up {schedule.catch_up}"),
            _schedule_state(schedule),
            _short_iso(schedule.next_tick) or "-",
            _short_iso(schedule.last_tick) or "-",
            last,
        )
    return table


def schedule_view(schedule: Schedule) -> RenderableType:
    """Everything about one schedule: timing, catch-up, state, next and last tick, last flow and error,
    the initial state and flow options of its flows."""
    rows: list[tuple[str, RenderableType | str]] = [
        ("schedule", schedule.name),
        ("workflow", schedule.workflow_url),
        ("timing", schedule.timing),
        ("catch up", schedule.catch_up),
        ("state", _schedule_state(schedule)),
        ("next tick", iso(schedule.next_tick) or "-"),
        ("last tick", iso(schedule.last_tick) or "-"),
        ("last flow", schedule.last_flow_key or "-"),
    ]
    if schedule.last_error:
        rows.append(("last error", Text(schedule.last_error, style="red")))
    rows.append(("created", iso(schedule.created_at)))
    rows.append(("updated", iso(schedule.updated_at)))
    options = {
        field.name: value
        for field in dataclasses.fields(schedule.options)
        if (value := getattr(schedule.options, field.name)) != field.default
    }
    if options:
        rows.append(("flow options", _json_block(jsonable(options))))
    rows.append(("flow state", _json_block(schedule.state)))
    return _fields(rows)


def limits_table(limits: Sequence[Limit]) -> Table:
    """One row per limit and shard: what it allows, and how close its key is to it now."""
    table = Table(show_edge=False, pad_edge=False, header_style="bold")
    for column in ("shard", "scope", "key", "concurrency", "running", "rate/s", "burst", "tokens"):
        table.add_column(column, justify="right" if column not in ("scope", "key") else "left")
    for limit in limits:
        table.add_row(
            str(limit.shard),
            limit.scope.value,
            limit.key,
            "-" if limit.concurrency is None else f"{limit.concurrency:,}",
            "-" if limit.concurrency is None else f"{limit.running:,}",
            "-" if limit.rate is None else f"{limit.rate:g}",
            "-" if limit.burst is None else f"{limit.burst:,}",
            "-" if limit.rate is None else f"{int(limit.tokens):,}",
        )
    return table
