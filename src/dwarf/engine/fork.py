"""Fork: replay a stopped flow up to a step in a new flow and re-run that step with overrides.

The chosen step may sit in the root flow or in a child flow at any depth. For each flow on the way
from the root down to the step's flow, the fork gets a new flow holding copies of the steps that ran
before the *pivot* (the step that started the next child flow down, or the chosen step itself in the
last flow). The pivots of the upper flows are copied parked on the fork's copy of their child; the
chosen step is queued again with the overrides applied to its input. The original flows are only read.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from dwarf.engine.completion import ABANDONED, ABANDONED_UNCOUNTED, ARRIVED
from dwarf.engine.creation import FlowPolicy, insert_flow
from dwarf.engine.flowinfo import FlowInfo, dumps
from dwarf.engine.keys import new_token
from dwarf.engine.states import StoredState, load_state_in
from dwarf.store.base import Row, Tx
from dwarf.store.rows import StepRow, parse_json
from dwarf.workflow.graph import Graph
from dwarf.workflow.reducers import apply_changes
from dwarf.workflow.status import Status

__all__ = ["fork_chain"]


async def fork_chain(
    tx: Tx,
    shard: int,
    chain: Sequence[Row],
    target: Row,
    overrides: Mapping[str, Any],
    policy: FlowPolicy,
    trace_parents: Sequence[str] = (),
) -> list[FlowInfo]:
    """Copy ``chain`` (flow rows, root first, ending with ``target``'s flow) up to the pivots; re-queue
    ``target`` with ``overrides``. Returns the new flows, root first. ``trace_parents`` are the span
    contexts of the new flows (telemetry), in the same order."""
    created: list[FlowInfo] = []
    parent_flow_id = parent_step_id = root_flow_id = 0
    for level, flow in enumerate(chain):
        last = level == len(chain) - 1
        pivot = target if last else await _parking_step(tx, chain[level + 1])
        info = await insert_flow(
            tx,
            shard,
            Graph.from_json(flow["graph"]),
            flow["workflow_url"],
            {},
            policy,
            parent_flow_id=parent_flow_id,
            parent_step_id=parent_step_id,
            root_flow_id=root_flow_id,
            forked_from_step_id=int(target["step_id"]) if level == 0 else 0,
            with_entry_step=False,
            trace_parent=trace_parents[level] if level < len(trace_parents) else "",
        )
        created.append(info)
        root_flow_id = root_flow_id or info.flow_id
        clones = await _clone_prefix(tx, info, flow, pivot, policy)
        predecessor = clones.get(int(pivot["predecessor_id"]), 0)
        if last:
            pivot_id = await _requeue(tx, info, pivot, predecessor, overrides, policy, clones)
        else:
            pivot_id = int(
                await tx.fetch_value(
                    "clone_parked_step",
                    source_step_id=int(pivot["step_id"]),
                    flow_id=info.flow_id,
                    step_token=new_token(),
                    priority=policy.priority,
                    fairness_key=policy.fairness_key,
                    fairness_weight=policy.fairness_weight,
                    predecessor_id=predecessor,
                    lineage_id=clones.get(int(pivot["lineage_id"]), 0),
                    child_flow_id=0,
                    state_base=clones.get(int(pivot["state_base"]), 0),
                )
            )
            await _keep_state(tx, pivot, pivot_id, clones)
        await _remap(tx, clones, pivot, pivot_id)
        if level > 0:
            await tx.execute("set_step_child", step_id=parent_step_id, child_flow_id=info.flow_id)
        parent_flow_id, parent_step_id = info.flow_id, pivot_id
    return created


async def _parking_step(tx: Tx, child: Row) -> Row:
    row = await tx.fetch_one("get_step", step_id=int(child["parent_step_id"]))
    assert row is not None
    return row


def _cohort_plan(rows: Sequence[Row], pivot: Row) -> tuple[list[Row], list[int]]:
    """Which steps of a flow a fork copies, and which of those run again.

    Every step shallower than the pivot is copied. When the pivot sits inside cohorts, the other branches
    of each enclosing cohort are copied whole too (nested cohorts included), so that the cohorts can
    still join: siblings keep the work they completed, and siblings that the original cancelled or
    failed run again. The pivot's own branch is copied only up to the pivot.
    """
    depth = int(pivot["step_depth"])
    parent_of = {int(r["step_id"]): int(r["lineage_id"]) for r in rows}
    ordinal_of = {int(r["step_id"]): int(r["fan_out_ordinal"]) for r in rows}

    def branches(step_id: int) -> dict[int, int]:
        """For each cohort enclosing a step: the spawn's id -> the position of the step's branch in it."""
        path: dict[int, int] = {}
        lineage = parent_of.get(step_id, 0)
        while lineage:
            path[lineage] = ordinal_of[step_id]
            step_id, lineage = lineage, parent_of.get(lineage, 0)
        return path

    own = branches(int(pivot["step_id"]))
    kept: list[Row] = []
    requeue: list[int] = []
    for row in rows:
        path = branches(int(row["step_id"]))
        sibling = any(spawn in path and path[spawn] != ordinal for spawn, ordinal in own.items())
        if sibling or int(row["step_depth"]) < depth:
            kept.append(row)
        if sibling and row["status"] in (Status.CANCELLED.value, Status.FAILED.value):
            requeue.append(int(row["step_id"]))
    return kept, requeue


async def _clone_prefix(tx: Tx, info: FlowInfo, flow: Row, pivot: Row, policy: FlowPolicy) -> dict[int, int]:
    rows = await tx.fetch_all("flow_steps_by_id", flow_id=int(flow["flow_id"]))
    prefix, requeue = _cohort_plan(rows, pivot)
    clones: dict[int, int] = {}
    for source in prefix:
        clones[int(source["step_id"])] = int(
            await tx.fetch_value(
                "clone_step",
                source_step_id=int(source["step_id"]),
                flow_id=info.flow_id,
                step_token=new_token(),
                priority=policy.priority,
                fairness_key=policy.fairness_key,
                fairness_weight=policy.fairness_weight,
            )
        )
    # Links are remapped once every clone exists (they may point forward).
    for source in prefix:
        clone_id = clones[int(source["step_id"])]
        await tx.execute(
            "remap_step_links",
            step_id=clone_id,
            predecessor_id=clones.get(int(source["predecessor_id"]), 0),
            successor_id=clones.get(int(source["successor_id"]), 0),
            lineage_id=clones.get(int(source["lineage_id"]), 0),
            fan_in_step_id=clones.get(int(source["fan_in_step_id"]), 0),
            state_base=clones.get(int(source["state_base"]), 0),
        )
        await _keep_state(tx, source, clone_id, clones)
    for step_id in requeue:
        await tx.execute("requeue_step", step_id=clones[step_id])
    await _recount_cohorts(tx, rows, prefix, clones, requeue)
    return clones


async def _keep_state(tx: Tx, source: Row, clone_id: int, clones: Mapping[int, int]) -> None:
    """A copy refers to the copy of the step its source's state referred to (remapped with its links);
    should the fork not have copied that step, the copy stores its state whole instead."""
    base = int(source["state_base"])
    if source["state"] or base in clones:
        return
    loaded = await load_state_in(tx, StepRow.of(source))
    assert loaded.state is not None
    await tx.execute("set_step_state", step_id=clone_id, **StoredState.whole(loaded.state).columns())


async def _recount_cohorts(
    tx: Tx, rows: Sequence[Row], kept: Sequence[Row], clones: Mapping[int, int], requeued: Sequence[int]
) -> None:
    """Recompute the arrivals of copied spawns whose cohort the fork left unfinished."""
    kept_ids = {int(r["step_id"]) for r in kept}
    again = set(requeued)
    for spawn in kept:
        size = int(spawn["cohort_size"])
        if not size:
            continue
        spawn_id = int(spawn["step_id"])
        members = [r for r in rows if int(r["lineage_id"]) == spawn_id and int(r["arrived"])]
        # Members that arrived on their own rows (3, 4) are not in the spawn's count yet; their copies
        # are (clone_step copies them as counted), so the copied spawn needs recounting.
        counted = [r for r in members if int(r["arrived"]) in (ARRIVED, ABANDONED)]
        # Branches that went straight into the join never had a step: they count as they did.
        immediate = int(spawn["cohort_arrivals"]) - len(counted)
        arrived = [r for r in members if int(r["step_id"]) in kept_ids and int(r["step_id"]) not in again]
        if len(arrived) == len(members) == len(counted):
            continue
        await tx.execute(
            "set_cohort_counts",
            step_id=clones[spawn_id],
            arrivals=immediate + len(arrived),
            failures=sum(1 for r in arrived if int(r["arrived"]) in (ABANDONED, ABANDONED_UNCOUNTED)),
        )


async def _remap(tx: Tx, clones: dict[int, int], pivot: Row, pivot_id: int) -> None:
    """Point the copied predecessor of the pivot at the pivot's copy."""
    predecessor = clones.get(int(pivot["predecessor_id"]))
    if predecessor:
        await tx.execute("remap_successor", step_id=predecessor, successor_id=pivot_id)


async def _requeue(
    tx: Tx,
    info: FlowInfo,
    target: Row,
    predecessor: int,
    overrides: Mapping[str, Any],
    policy: FlowPolicy,
    clones: Mapping[int, int],
) -> int:
    source = await load_state_in(tx, StepRow.of(target))
    assert source.state is not None
    state = apply_changes(source.state, overrides)
    lineage = clones.get(int(target["lineage_id"]), 0)
    carry: Any = {}
    if lineage:
        previous = await tx.fetch_one("get_step", step_id=int(target["predecessor_id"]))
        if previous is not None and int(previous["lineage_id"]) == int(target["lineage_id"]):
            carry = parse_json(previous["carry"])
    return int(
        await tx.fetch_value(
            "insert_step",
            flow_id=info.flow_id,
            step_token=new_token(),
            step_depth=int(target["step_depth"]),
            task_name=target["task_name"],
            task_url=target["task_url"],
            **StoredState.whole(state).columns(),
            changes="{}",
            carry=dumps(carry),
            status=Status.PENDING.value,
            attempt=0,
            time_budget_ms=policy.time_budget_ms,
            priority=policy.priority,
            fairness_key=policy.fairness_key,
            fairness_weight=policy.fairness_weight,
            predecessor_id=predecessor,
            lineage_id=lineage,
            fan_out_ordinal=int(target["fan_out_ordinal"]),
            delay=0.0,
        )
    )
