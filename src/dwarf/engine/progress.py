"""How flows are getting on: why one flow is not moving (``Engine.why``) and what flows did lately
(``Engine.activity``). Both are reads that run only when asked (a ``dwarf show``, a dashboard page), never
on a step's path.

``why`` costs one grouped read of the flow's unfinished steps (through the flow's step index, like a
fingerprint), one point read per group for its oldest step, and, for a queue, one count of the due steps
ahead bounded by ``AHEAD_LIMIT``. ``activity`` reads at most ``ACTIVITY_LIMIT`` of the newest root flows of
each shard through the creation-time index, and aggregates them in the database.
"""

from __future__ import annotations

import time
from typing import Any

from dwarf.engine.clock import optional_utc, utc
from dwarf.engine.keys import format_key
from dwarf.engine.runtime import Runtime
from dwarf.errors import BadRequestError
from dwarf.store.base import Row, Store
from dwarf.store.rows import PARKED_ON_SIGNAL, FlowRow
from dwarf.workflow.durations import Duration, to_seconds
from dwarf.workflow.limits import Limit
from dwarf.workflow.progress import AHEAD_LIMIT, FlowActivity, FlowWait, WaitReason
from dwarf.workflow.status import FLOW_STATUSES, Status

__all__ = ["ACTIVITY_LIMIT", "MAX_ACTIVITY_WINDOW", "MAX_WAIT_GROUPS", "flow_activity", "flow_waits"]

MAX_WAIT_GROUPS = 50
"""Ways of waiting ``why`` reports at most (a group is one task in one state; flows have a handful)."""
ACTIVITY_LIMIT = 50_000
"""Root flows of one shard that ``activity`` counts at most: the newest ones of the window."""
MAX_ACTIVITY_WINDOW = 366 * 86400.0
"""The longest window ``activity`` looks back over (a year)."""
MAX_ACTIVITY_BUCKETS = 1000


async def flow_waits(rt: Runtime, flow_key: str) -> list[FlowWait]:
    """Why the flow is not moving; see ``Engine.why``.

    Each ``FlowWait`` is one way of waiting shared by steps at one task: running on a worker, queued
    behind ``ahead`` due steps or held back by its ``limit`` (docs/limits.md), sleeping until ``until``,
    waiting for a retry (``attempt``) at ``until``, interrupted since ``since`` (until ``until`` with a
    timeout), waiting for a signal (``signal_name``), or waiting on a child flow (``child_flow_key``); a
    running flow with nothing to run is ``stalled``. One grouped read of the flow's unfinished steps, a
    point read per group, and for a queue the limits of its keys and a count bounded by ``AHEAD_LIMIT``:
    call it when someone looks.
    """
    store, flow = await rt.resolve(flow_key)
    status = Status(flow.status)
    if status.is_terminal:
        return []
    groups = await store.read("flow_open_steps", flow_id=flow.flow_id, limit=MAX_WAIT_GROUPS)
    waits = [await _wait_of(store, group) for group in groups]
    if status == Status.INTERRUPTED and not any(w.reason == WaitReason.INTERRUPTED for w in waits):
        # The interrupt a child flow raised surfaces on this flow: say which step asked.
        surfaced = await _interrupt_surfaced(store, flow)
        if surfaced is not None:
            waits.insert(0, surfaced)
    if not waits:
        waits.append(FlowWait(WaitReason.STALLED, steps=0, since=utc(flow.updated_at)))
    return waits


async def _wait_of(store: Store, group: Row) -> FlowWait:
    """The wait one group of flow_open_steps describes, its oldest step looked up for key and error."""
    found = await store.read("get_step", step_id=int(group["first_step_id"]))
    first: Row = found[0] if found else {}
    wait = FlowWait(
        _reason(group),
        task_name=str(group["task_name"]),
        steps=int(group["steps"]),
        step_key=format_key(store.shard, int(first["step_id"]), first["step_token"]) if first else "",
    )
    reason = wait.reason
    if reason == WaitReason.RUNNING:
        wait.since = utc(group["started"]) if group["started"] is not None else None
    elif reason == WaitReason.QUEUED:
        wait.since = utc(group["changed"])
        wait.limit = await _limit_holding(store, first) if first else None
        if wait.limit is not None:
            wait.reason = WaitReason.LIMITED
        else:
            wait.ahead = await _due_ahead(store, int(group["priority"]), int(group["first_step_id"]))
    elif reason in (WaitReason.SLEEPING, WaitReason.RETRYING):
        wait.until = utc(group["due"])
        wait.since = utc(group["changed"])
        if reason == WaitReason.RETRYING:
            wait.attempt = int(group["attempt"])
            wait.error = str(first.get("error", ""))
    elif reason in (WaitReason.INTERRUPTED, WaitReason.SIGNAL):
        wait.since = utc(group["changed"])
        wait.until = optional_utc(group["wake_at"])
        wait.signal_name = str(group["wait_signal"] or "")
    elif reason == WaitReason.CHILD_FLOW:
        wait.since = utc(group["changed"])
        child_id = int(first.get("child_flow_id", 0) or 0)
        if child_id:
            rows = await store.read("get_flow", flow_id=child_id)
            if rows and not int(rows[0]["purge_marked"]):
                child = rows[0]
                wait.child_flow_key = format_key(store.shard, child_id, child["flow_token"])
                wait.child_workflow_name = str(child["workflow_name"] or child["workflow_url"])
    else:
        wait.since = utc(group["changed"])
    return wait


async def _limit_holding(store: Store, step: Row) -> Limit | None:
    """The limit of the step's fairness key or task URL that is at its limit now, if one is (two
    primary-key lookups, and a count of the key's running steps under the limit)."""
    rows = await store.read("limits_of_step", fairness_key=step["fairness_key"], task_url=step["task_url"])
    for limit in (Limit.of(row, store.shard) for row in rows):
        if limit.at_limit:
            return limit
    return None


def _reason(group: Row) -> WaitReason:
    status = str(group["status"])
    if status == "running":
        return WaitReason.RUNNING
    if status == "interrupted":
        return WaitReason.INTERRUPTED
    if status == "pending":
        if not int(group["later"]):
            return WaitReason.QUEUED
        return WaitReason.RETRYING if int(group["retried"]) else WaitReason.SLEEPING
    # "created": a step parked on the child flow it started (or is about to start, in a fork), or on a
    # signal (parked = 2, 013_timed_waits.sql).
    if int(group["parked"]) == PARKED_ON_SIGNAL:
        return WaitReason.SIGNAL
    if int(group["on_child"]) or int(group["parked"]):
        return WaitReason.CHILD_FLOW
    return WaitReason.STALLED


async def _due_ahead(store: Store, priority: int, step_id: int) -> int:
    rows = await store.read("due_steps_ahead", priority=priority, step_id=step_id, limit=AHEAD_LIMIT)
    return int(rows[0]["ahead"]) if rows else 0


async def _interrupt_surfaced(store: Store, flow: FlowRow) -> FlowWait | None:
    if not flow.surfaced_step_id:
        return None
    rows = await store.read("get_step", step_id=flow.surfaced_step_id)
    if not rows or rows[0]["status"] != "interrupted":
        return None
    step = rows[0]
    return FlowWait(
        WaitReason.INTERRUPTED,
        task_name=str(step["task_name"]),
        step_key=format_key(store.shard, int(step["step_id"]), step["step_token"]),
        since=utc(step["updated_at"]),
        until=optional_utc(step["wake_at"]),
    )


async def flow_activity(rt: Runtime, window: Duration, buckets: int) -> FlowActivity:
    """Root flows created in the last ``window``, by status and over time; see ``Engine.activity``."""
    seconds = to_seconds(window, what="window")
    if not 0 < seconds <= MAX_ACTIVITY_WINDOW:
        raise BadRequestError(f"window must be more than 0 and at most {MAX_ACTIVITY_WINDOW:g} seconds")
    if isinstance(buckets, bool) or not isinstance(buckets, int) or not 1 <= buckets <= MAX_ACTIVITY_BUCKETS:
        raise BadRequestError(f"buckets must be an integer from 1 to {MAX_ACTIVITY_BUCKETS}")
    since = time.time() - seconds
    bucket = seconds / buckets
    activity = FlowActivity(
        since=utc(since),
        bucket_seconds=bucket,
        started=[0] * buckets,
        completed=[0] * buckets,
        failed=[0] * buckets,
        cancelled=[0] * buckets,
    )
    stopped: dict[Status, list[int]] = {
        Status.COMPLETED: activity.completed,
        Status.FAILED: activity.failed,
        Status.CANCELLED: activity.cancelled,
    }
    for store in rt.stores:
        rows = await store.read("flow_activity", since=since, bucket=bucket, limit=ACTIVITY_LIMIT)
        counted = 0
        for row in rows:
            flows = int(row["flows"])
            counted += flows
            status = _flow_status(row["status"])
            if status is None:
                continue
            activity.counts[status] += flows
            activity.started[_slot(row["created_slot"], buckets)] += flows
            if status in stopped:
                stopped[status][_slot(row["updated_slot"], buckets)] += flows
        activity.capped = activity.capped or counted >= ACTIVITY_LIMIT
    return activity


def _flow_status(value: Any) -> Status | None:
    try:
        status = Status(value)
    except ValueError:
        return None
    return status if status in FLOW_STATUSES else None


def _slot(value: Any, buckets: int) -> int:
    """A slot number clamped to the chart (a clock a little ahead or behind the database's)."""
    return min(max(int(value), 0), buckets - 1)
