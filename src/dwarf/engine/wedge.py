"""Wedge sweeps: find parked steps and flows that nothing can move any more, and repair them.

The engine's transitions are written so that wedges cannot happen: a child flow wakes its parked parent
in the transaction that ends it, and a flow stops in the transaction that finishes its last step. The
sweep is defence in depth against a bug or a hand-edited database. It looks only at rows untouched for
``min_age`` seconds (so it never races a transition in flight), repairs through the same guarded
statements the normal path uses (a concurrent repair by a peer replica changes nothing twice), logs each
repair as an error and counts it in ``dwarf_wedge_repairs``: a non-zero count points at a bug to find.

Three wedges are known:

- a parent step parked on a child flow that already ended, or that no longer exists: the parent is woken
  with the child's result, or with its error;
- a flow still marked running with no step that could move it: it surfaces its parked interrupt if it
  has one, and otherwise fails with an error saying so (its parent, if any, hears of the failure);
- a child flow still running (or interrupted) after its calling step was cancelled, because the replica
  that cancelled the step died before its follow-up (``Runtime.cancel_orphans``) ran: the child and its
  own children are cancelled.

A complete cohort that nobody joined (its last member's replica died right after committing) is not a
wedge: the claimers look for those on every quiet poll (Scheduler._join_stranded).
"""

from __future__ import annotations

import functools
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

from dwarf.engine.completion import Effects, surface_interrupt
from dwarf.engine.keys import correlation_id
from dwarf.store.base import Row, Store, Tx
from dwarf.store.rows import parse_json
from dwarf.workflow.status import Status

if TYPE_CHECKING:
    from dwarf.engine.runtime import Runtime

__all__ = ["sweep_wedges"]

WEDGE_WINDOW = 2000
"""Flows the sweep looks at per read (see _scan_flows)."""
WEDGED_FLOW_ERROR = "the flow could not make progress (no step left to run); the wedge sweep failed it"


async def sweep_wedges(rt: Runtime, store: Store, min_age: float) -> int:
    """Repair the wedges of one shard that have been still for ``min_age`` seconds; return the count."""
    repaired = 0
    for park in await store.read("wedged_subgraph_parks", min_age=min_age):
        if await store.run(functools.partial(_wake_parked_parent, park=park)):
            repaired += 1
            _log(rt, store, park["flow_id"], "its step was parked on a child flow that had ended")
            rt.ring(store.shard)
    wedged, orphaned = await _scan_flows(store, min_age)
    for flow in wedged:
        effects = Effects()
        stopped = await store.run(functools.partial(_unstick_flow, flow=flow, effects=effects))
        if stopped is None:
            continue
        repaired += 1
        _log(rt, store, flow["flow_id"], f"it was running with no step left; now {stopped.value}")
        info = await rt.flow_info(store, int(flow["flow_id"]))
        if info is not None:
            effects.woken.append(info.flow_id)
            await rt.after_commit(info, effects)
    for root_flow_id in sorted(orphaned):
        cancelled = await rt.cancel_orphans(store.shard, root_flow_id)
        if cancelled:
            repaired += 1
            _log(rt, store, root_flow_id, f"{cancelled} child flows ran on after their calling step ended")
    rt.telemetry.wedge_repaired(repaired)
    return repaired


async def _windows(store: Store, status: Status) -> AsyncIterator[tuple[int, int]]:
    """The flow ids of ``status`` as ranges ``(after, upto]`` of WEDGE_WINDOW flows each.

    The sweep reads each window's flows in a read of its own, so other work interleaves with a sweep over
    a large backlog (every queued flow is running) instead of waiting for one long read.
    """
    after = 0
    while True:
        window = await store.read("flows_window", status=status.value, after=after, batch=WEDGE_WINDOW)
        upto = window[0]["upto"] if window else None
        if upto is None:
            return
        yield after, int(upto)
        after = int(upto)


async def _scan_flows(store: Store, min_age: float) -> tuple[list[Row], set[int]]:
    """One pass over the running flows, then the interrupted ones, window by window: the running flows
    that nothing can move, and the trees holding a child flow whose calling step ended ``min_age``
    seconds ago or more (its commit's follow-up, ``cancel_orphans``, was lost)."""
    wedged: list[Row] = []
    roots: set[int] = set()
    for status in (Status.RUNNING, Status.INTERRUPTED):
        async for after, upto in _windows(store, status):
            if status == Status.RUNNING:
                wedged += await store.read("wedged_running_flows", after=after, upto=upto, min_age=min_age)
            rows = await store.read(
                "orphaned_flow_roots", status=status.value, after=after, upto=upto, min_age=min_age
            )
            roots.update(int(row["root_flow_id"]) for row in rows)
    return wedged, roots


async def _wake_parked_parent(tx: Tx, park: Row) -> bool:
    status = park["child_status"]
    if status == Status.COMPLETED.value:
        result: str | None = park["child_state"] or "{}"
        error = ""
    else:
        result = None
        if status is None:
            error = "the child flow no longer exists"
        elif status == Status.CANCELLED.value:
            error = park["child_cancel_reason"] or "the child flow was cancelled"
        else:
            error = park["child_error"] or "the child flow failed"
    count = await tx.execute(
        "wake_parent_step", step_id=park["step_id"], subgraph_result=result, subgraph_error=error
    )
    return count == 1


async def _unstick_flow(tx: Tx, flow: Row, effects: Effects) -> Status | None:
    flow_id = int(flow["flow_id"])
    interrupted_step_id = int(flow["interrupted_step_id"])
    if interrupted_step_id:
        step = await tx.fetch_one("get_step", step_id=interrupted_step_id)
        payload: dict[str, Any] = parse_json(step["interrupt_payload"]) if step else {}
        await surface_interrupt(tx, flow_id, payload, interrupted_step_id, effects)
        effects.stopped = Status.INTERRUPTED
        return Status.INTERRUPTED
    if await tx.execute("fail_wedged_flow", flow_id=flow_id, error=WEDGED_FLOW_ERROR) != 1:
        return None
    effects.stopped = Status.FAILED
    if flow["parent_flow_id"]:
        count = await tx.execute(
            "wake_parent_step",
            step_id=flow["parent_step_id"],
            subgraph_result=None,
            subgraph_error=WEDGED_FLOW_ERROR,
        )
        effects.new_work = count == 1
    return Status.FAILED


def _log(rt: Runtime, store: Store, flow_id: Any, what: str) -> None:
    flow = correlation_id(store.shard, int(flow_id))
    rt.log.error("wedge sweep repaired flow %s: %s", flow, what, extra={"flow": flow})
