"""Timers: flow deadlines and the ends of timed waits, fired by whichever engine sees them first.

Three things wait for a time (013_timed_waits.sql, docs/waits.md): a root flow's deadline
(``FlowOptions.deadline``), a timed interrupt (``flow.interrupt(..., timeout=...)``) and a timed signal
wait (``flow.wait_for_signal(..., timeout=...)``). Each is a column on the row that waits, in a partial
index that holds only the rows waiting for a time, so none of it costs a step anything. The claimer of
each shard fires them (``Scheduler``):

- when it knows one is due (``LocalTimers`` in the runtime): this engine set it (a commit's
  ``Effects.timers``, a create's deadline) or read it from the database;
- on its idle poll, which reads the earliest timers with the rest of ``next_wake_time``;
- once per poll interval while busy (``next_timer``), so that the timers of a replica that died are
  found by the others: a timer is a row, not a promise of a process.

Firing is safe on any number of engines at once. A deadline cancels the tree through ``cancel_tree``,
which locks the root and stops only a flow that has not stopped: of engines racing, one cancels, the
others meet a ConflictError and do nothing. A timed wait is ended under the root's lock by a conditional
update of the step, the same lock and the same guard that ``Engine.resume`` and ``Engine.signal`` take:
of a timeout and an answer racing, exactly one wins. Each pass handles at most ``TIMER_BATCH`` timers of
each kind, so a burst of them never holds the claimer up for long.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Coroutine
from typing import TYPE_CHECKING, Any

from dwarf.engine.completion import Effects
from dwarf.engine.flowinfo import dumps
from dwarf.engine.keys import correlation_id
from dwarf.engine.operations import resume_parked_step
from dwarf.engine.tree_writes import LOCK_TIMEOUT, cancel_tree, run_tree_write
from dwarf.errors import ConflictError, NotFoundError, StoreError
from dwarf.store.base import Row, Store, Tx
from dwarf.workflow.flow import TIMED_OUT
from dwarf.workflow.records import DEADLINE_REASON
from dwarf.workflow.status import TERMINAL_STATUSES, Status

if TYPE_CHECKING:
    from dwarf.engine.runtime import Runtime

__all__ = ["TIMER_BATCH", "fire_due_timers", "timer_delay"]

TIMER_BATCH = 32
"""Timers of each kind one pass fires at most; a full batch makes the claimer come back at once."""

_TIMED_OUT_DATA = dumps({TIMED_OUT: True})


async def fire_due_timers(rt: Runtime, store: Store) -> tuple[int, bool]:
    """Fire the due timers of ``store``: (how many this engine fired, whether more may be due).

    A timer whose firing fails is logged and left for the next pass; the others still fire.
    """
    fired = 0
    deadlines = await store.read("due_deadlines", limit=TIMER_BATCH)
    for row in deadlines:
        flow_id = int(row["flow_id"])
        if await _guarded(rt, store, flow_id, _cancel_for_deadline(rt, store, flow_id)):
            fired += 1
    wakeups = await store.read("due_wakeups", limit=TIMER_BATCH)
    for row in wakeups:
        if await _guarded(rt, store, int(row["root_flow_id"]), _end_timed_wait(rt, store, row)):
            fired += 1
    return fired, len(deadlines) == TIMER_BATCH or len(wakeups) == TIMER_BATCH


def timer_delay(row: Row) -> float | None:
    """Seconds until the earliest timer of a ``next_timer`` or ``next_wake_time`` row; None for none."""
    times = [float(row[column]) for column in ("next_deadline", "next_wakeup") if row[column] is not None]
    return min(times) - float(row["now"]) if times else None


async def _guarded(rt: Runtime, store: Store, flow_id: int, firing: Coroutine[Any, Any, bool]) -> bool:
    """Await one timer's firing; a failure is logged (an outage quietly: the store reported it) and
    counts as not fired, so that the pass goes on with the next timer."""
    try:
        return await firing
    except asyncio.CancelledError:
        raise
    except Exception as error:
        task = asyncio.current_task()
        if task is not None and task.cancelling():
            # A driver turned the engine's stop into an error (psycopg's QueryCanceled): stop, not go on.
            raise asyncio.CancelledError from error
        flow = correlation_id(store.shard, flow_id)
        transient = isinstance(error, StoreError) and error.transient
        rt.log.log(
            logging.DEBUG if transient else logging.WARNING,
            "a timer of flow %s could not fire (the next pass tries again): %s",
            flow,
            error,
            extra={"flow": flow},
        )
        return False


async def _cancel_for_deadline(rt: Runtime, store: Store, flow_id: int) -> bool:
    """Cancel a root flow and its tree because its deadline passed; False when it stopped first (or
    another engine cancelled it)."""
    try:
        await run_tree_write(store, lambda tx: cancel_tree(tx, flow_id, DEADLINE_REASON), "a deadline")
    except (ConflictError, NotFoundError):
        return False
    flow = correlation_id(store.shard, flow_id)
    rt.log.info("flow %s cancelled: its deadline passed", flow, extra={"flow": flow})
    info = await rt.flow_info(store, flow_id)
    if info is not None:
        await rt.flow_stopped(info, Status.CANCELLED)
    return True


async def _end_timed_wait(rt: Runtime, store: Store, row: Row) -> bool:
    """Resume a parked step whose timed wait ended with ``{"timedOut": true}``; False when an answer
    (a resume, a signal) or a cancel came first."""
    effects = Effects()
    work = functools.partial(
        _time_out_step,
        root_flow_id=int(row["root_flow_id"]),
        step_id=int(row["step_id"]),
        interrupted=row["status"] == Status.INTERRUPTED.value,
        effects=effects,
    )
    if not await run_tree_write(store, work, "a timed wait's end"):
        return False
    flow = correlation_id(store.shard, int(row["root_flow_id"]))
    rt.log.info(
        "step %s of flow %s: its %s timed out",
        correlation_id(store.shard, int(row["step_id"])),
        flow,
        "interrupt" if row["status"] == Status.INTERRUPTED.value else "signal wait",
        extra={"flow": flow},
    )
    rt.ring(store.shard)
    for woken in effects.woken:
        rt.wake(store.shard, woken)
    return True


async def _time_out_step(
    tx: Tx, *, root_flow_id: int, step_id: int, interrupted: bool, effects: Effects
) -> bool:
    # The root's lock first, as resume and signal take it; later locks (the tree's flows, which a step
    # commit may hold) wait only briefly, so that in a lock cycle this write is the one that retries.
    root = await tx.fetch_one("get_flow_for_update", flow_id=root_flow_id)
    await tx.fetch_all("set_lock_timeout", lock_timeout=LOCK_TIMEOUT)
    if root is None or Status(root["status"]) in TERMINAL_STATUSES:
        # The tree stopped (or is being purged) and left this step parked: nothing waits for it any more,
        # and it must leave the timers' index rather than come due again at every pass.
        await tx.execute("cancel_step", step_id=step_id)
        return False
    if not interrupted:
        return await tx.execute("wake_signal_waiter", step_id=step_id, resume_data=_TIMED_OUT_DATA) == 1
    parked = await tx.fetch_all("tree_interrupted_steps", root_flow_id=root_flow_id)
    chosen = next((p for p in parked if int(p["step_id"]) == step_id), None)
    if chosen is None:
        return False  # resumed (or cancelled) since the timer was read
    await resume_parked_step(tx, root_flow_id, parked, chosen, {TIMED_OUT: True}, effects)
    return True
