"""Reading what a flow recorded: its outcome, and its steps as FlowStep records with navigation keys."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

from dwarf.engine.clock import optional_utc, utc
from dwarf.engine.keys import ParsedKey, format_key, tokens_match
from dwarf.engine.states import load_state, output_of
from dwarf.errors import NotFoundError
from dwarf.store.base import Store
from dwarf.store.rows import FlowRow, StepRow
from dwarf.workflow.records import FlowOutcome, FlowStep
from dwarf.workflow.reducers import materialize_appends
from dwarf.workflow.status import Status

__all__ = ["build_history", "load_outcome", "load_step", "step_record"]


def step_record(
    shard: int, row: StepRow, tokens: dict[int, str], output: dict[str, Any] | None = None
) -> FlowStep:
    """A FlowStep from a step's row, whose input state is loaded; ``tokens`` maps step ids to tokens for
    the navigation keys. ``output`` is the state after the step when the caller has it already.

    The record's changes show an appended field whole, as a ``set`` would have: FlowStep.changes keeps
    meaning "what this step wrote, field by field" whatever API the task wrote it with.
    """
    changes = row.changes
    if row.appends:
        changes = materialize_appends(changes, row.appends, output_of(row) if output is None else output)
    predecessor = row.predecessor_id
    successor = row.successor_id
    return FlowStep(
        step_key=format_key(shard, row.step_id, row.step_token),
        step_id=row.step_id,
        step_depth=row.step_depth,
        task_name=row.task_name,
        task_url=row.task_url,
        attempt=row.attempt,
        predecessor_id=predecessor,
        successor_id=successor,
        prev_key=format_key(shard, predecessor, tokens[predecessor]) if predecessor in tokens else "",
        next_key=format_key(shard, successor, tokens[successor]) if successor in tokens else "",
        subgraph=row.child_flow_id != 0,
        state=row.state if row.state is not None else {},
        changes=changes,
        interrupt_payload=row.interrupt_payload,
        status=Status(row.status),
        parked=row.parked,
        waited_signal=row.wait_signal or "",
        timeout_at=optional_utc(row.wake_at),
        error=row.error,
        created_at=utc(row.created_at),
        started_at=optional_utc(row.started_at),
        updated_at=utc(row.updated_at),
    )


async def build_history(store: Store, flow: FlowRow) -> list[FlowStep]:
    """Every step of the flow in depth order, then by id; steps that ran a child flow carry its history.

    Child flows are walked with an explicit stack so that nesting depth never meets Python's recursion limit.
    """
    top: list[FlowStep] = []
    pending: list[tuple[int, list[FlowStep], str]] = [(flow.flow_id, top, "")]
    while pending:
        flow_id, target, parent_key = pending.pop()
        rows = [StepRow.of(row) for row in await store.read("flow_steps", flow_id=flow_id)]
        states = await _with_states(store, rows)
        tokens = {row.step_id: row.step_token for row in rows}
        children = {int(c["flow_id"]): c for c in await store.read("child_flows_of_flow", flow_id=flow_id)}
        for index, row in enumerate(rows):
            loaded, output = states[row.step_id]
            record = step_record(store.shard, loaded, tokens, output)
            if index == 0 and parent_key and not record.prev_key:
                record.prev_key = parent_key
            child = children.get(row.child_flow_id)
            if child is not None:
                record.sub_workflow_url = child["workflow_url"]
                record.sub_workflow_name = child["workflow_name"]
                record.sub_flow_key = format_key(store.shard, int(child["flow_id"]), child["flow_token"])
                pending.append((int(child["flow_id"]), record.sub_history, record.step_key))
            target.append(record)
    return top


async def _with_states(store: Store, rows: Sequence[StepRow]) -> dict[int, tuple[StepRow, dict[str, Any]]]:
    """Each step with its input state loaded, and the state after it, by step id.

    A step stored as a reference takes its input from the output of the step it names, which comes
    earlier in id order: one pass rebuilds every state of the flow from its rows, with no further reads
    (and the states share their unchanged values, as the engine's own do). A reference to a step not in
    ``rows`` is loaded on its own.
    """
    result: dict[int, tuple[StepRow, dict[str, Any]]] = {}
    for row in sorted(rows, key=lambda row: row.step_id):
        if row.state is None:
            base = result.get(row.state_base)
            if base is not None:
                row = dataclasses.replace(row, state=base[1])
            else:
                row = await load_state(store, row)
        result[row.step_id] = (row, output_of(row))
    return result


async def load_step(store: Store, key: ParsedKey) -> FlowStep:
    """One step by its parsed key; NotFoundError for a wrong token or a deleted flow."""
    # The token is part of the lookup, so a wrong token on an existing id costs what an unknown id costs.
    rows = await store.read("get_step_with_flow_by_key", step_id=key.id, step_token=key.token)
    if not rows or int(rows[0]["purge_marked"]) or not tokens_match(key.token, rows[0]["step_token"]):
        raise NotFoundError("step not found")
    row = await load_state(store, StepRow.of(rows[0]))
    tokens: dict[int, str] = {}
    for neighbour in (row.predecessor_id, row.successor_id):
        if neighbour:
            found = await store.read("get_step", step_id=neighbour)
            if found:
                tokens[neighbour] = found[0]["step_token"]
    return step_record(store.shard, row, tokens)


async def load_outcome(store: Store, flow_id: int, row: FlowRow | None = None) -> FlowOutcome:
    """The flow's outcome as of now: its final state once completed, else its latest step's merged state.

    ``row`` is the flow's row when the caller has just read it; NotFoundError when the flow is gone.
    """
    if row is None:
        rows = await store.read("get_flow", flow_id=flow_id)
        if not rows:
            raise NotFoundError("flow not found")
        row = FlowRow.of(rows[0])
    status = Status(row.status)
    if status == Status.COMPLETED:
        state = row.final_state
    else:
        latest = await store.read("latest_step", flow_id=flow_id)
        state = {}
        if latest:
            state = output_of(await load_state(store, StepRow.of(latest[0])))
    payload = row.interrupt_payload if status == Status.INTERRUPTED else {}
    return FlowOutcome(
        status=status,
        state=state,
        error=row.error,
        interrupt_payload=payload,
        cancel_reason=row.cancel_reason,
    )
