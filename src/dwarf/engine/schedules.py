"""Schedule operations: create or change, read, list, pause, resume and delete schedules (docs/schedules.md).

Schedules live in shard 1's ``dwarf_schedules`` table whatever the shard count (``SCHEDULE_SHARD``): one
table to poll, read by every engine of a deployment. The flows a schedule starts are placed like any flow
created with an idempotency key, on the shard their key hashes to. The ticks themselves are run by each
engine's ``ScheduleTicker`` (``ticker.py``). Every operation checks its input before it writes, so a
refused call changes nothing; a change wakes the tickers here and, through the host, at the peers.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from dwarf.engine.clock import utc
from dwarf.engine.runtime import Runtime
from dwarf.engine.schedule_hints import SCHEDULE_SHARD
from dwarf.errors import BadRequestError, ConflictError, NotFoundError
from dwarf.store.base import Row, Store, Tx, TxFunction
from dwarf.workflow.durations import Duration
from dwarf.workflow.jsonvalue import check_text, checked_json_object
from dwarf.workflow.records import MAX_KEYED_URL_BYTES, FlowOptions
from dwarf.workflow.schedules import (
    NEVER,
    RESERVED_STATE_FIELDS,
    Schedule,
    ScheduleTiming,
    check_catch_up,
    check_schedule_name,
    options_document,
    options_from_document,
)

__all__ = [
    "SCHEDULE_SHARD",
    "delete_schedule",
    "get_schedule",
    "list_schedules",
    "pause_schedule",
    "resume_schedule",
    "schedule_of",
    "schedule_store",
    "upsert_schedule",
]

"""The shard whose ``dwarf_schedules`` table holds every schedule."""

_RESUME_ATTEMPTS = 8
"""How often a resume reads the schedule again after a concurrent change of its timing."""


def schedule_store(rt: Runtime) -> Store:
    """The store holding the schedules."""
    return rt.stores[SCHEDULE_SHARD - 1]


def _dumps(value: Any) -> str:
    # Sorted and compact: the upsert compares the stored text to tell whether anything changed.
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def _name(name: object) -> str:
    """A name to look a schedule up by: any text (an unknown one is NotFoundError); BadRequestError for a
    non-string."""
    if not isinstance(name, str):
        raise BadRequestError("the schedule name must be a string")
    check_text(name, "the schedule name")
    return name


def schedule_of(row: Row) -> Schedule:
    """The Schedule record of a ``dwarf_schedules`` row."""
    every_ms = int(row["every_ms"])
    paused = bool(int(row["paused"]))
    next_ms = int(row["next_tick_ms"])
    last_ms = int(row["last_tick_ms"])
    return Schedule(
        name=str(row["name"]),
        workflow_url=str(row["workflow_url"]),
        cron=str(row["cron"]),
        every=ScheduleTiming(every_ms=every_ms).every,
        timezone=str(row["timezone"]),
        catch_up=check_catch_up(row["catch_up"]),
        state=json.loads(row["state"]),
        options=options_from_document(json.loads(row["options"])),
        paused=paused,
        next_tick=None if paused or next_ms >= NEVER else utc(next_ms / 1000),
        last_tick=utc(last_ms / 1000) if last_ms else None,
        last_flow_key=str(row["last_flow_key"]),
        last_error=str(row["last_error"]),
        created_at=utc(row["created_at"]),
        updated_at=utc(row["updated_at"]),
    )


async def _database_ms(store: Store) -> int:
    """The database clock in milliseconds (the tickers' clock)."""
    rows = await store.read("database_now")
    return round(float(rows[0]["now"]) * 1000)


async def upsert_schedule(
    rt: Runtime,
    name: str,
    workflow_url: str,
    *,
    cron: str,
    every: Duration | None,
    state: Mapping[str, Any] | None,
    timezone: str,
    catch_up: str,
    options: FlowOptions | None,
) -> Schedule:
    """Create the schedule ``name`` or change it; see ``Engine.schedule``."""
    check_schedule_name(name)
    if not isinstance(workflow_url, str) or not workflow_url:
        raise BadRequestError("the workflow URL must be a non-empty string")
    check_text(workflow_url, "the workflow URL")
    if len(workflow_url.encode()) > MAX_KEYED_URL_BYTES:
        # Each flow is created with an idempotency key (see operations.create_flow).
        raise BadRequestError(f"a scheduled workflow URL must be at most {MAX_KEYED_URL_BYTES} bytes")
    timing = ScheduleTiming.of(cron, every, timezone)
    policy = check_catch_up(catch_up)
    initial = checked_json_object(state, "the schedule's state")
    reserved = [field for field in RESERVED_STATE_FIELDS if field in initial]
    if reserved:
        raise BadRequestError(
            f"the schedule's state cannot hold {', '.join(reserved)}: the engine sets them on each flow"
        )
    carried = options_document(options)
    if rt.host is not None:
        # An unknown or invalid workflow is refused now, not at every tick. (An engine without a host, the
        # CLI's, cannot tell: its ticks are checked by the engines that run them.)
        await rt.load_graph(workflow_url, carried.get("baggage"))
    store = schedule_store(rt)
    next_ms = timing.next_after(await _database_ms(store))
    rows = await store.write(
        "upsert_schedule",
        name=name,
        workflow_url=workflow_url,
        cron=timing.cron,
        every_ms=timing.every_ms,
        timezone=timing.timezone,
        catch_up=policy,
        state=_dumps(initial),
        options=_dumps(carried),
        next_tick_ms=next_ms,
    )
    if rows:
        rt.schedules_changed()
        return schedule_of(rows[0])
    return await get_schedule(rt, name)  # the same schedule again: nothing was written


async def get_schedule(rt: Runtime, name: str) -> Schedule:
    """The schedule ``name``; NotFoundError if there is none."""
    rows = await schedule_store(rt).read("get_schedule", name=_name(name))
    if not rows:
        raise NotFoundError("schedule not found")
    return schedule_of(rows[0])


async def list_schedules(rt: Runtime) -> list[Schedule]:
    """Every schedule, by name."""
    return [schedule_of(row) for row in await schedule_store(rt).read("list_schedules")]


async def pause_schedule(rt: Runtime, name: str) -> None:
    """Stop the schedule's ticks until it is resumed (pausing a paused schedule does nothing)."""
    store = schedule_store(rt)
    if await store.run(lambda tx: tx.execute("pause_schedule", name=_name(name))):
        rt.schedules_changed()
        return
    await get_schedule(rt, name)  # NotFoundError, or it was paused already


async def resume_schedule(rt: Runtime, name: str) -> None:
    """Let a paused schedule tick again from its next tick after now (resuming a running one does nothing).

    The next tick is computed from the timing read, and the update takes effect only while the timing is
    still that one: a concurrent change of it makes the resume read the schedule again.
    """
    store = schedule_store(rt)
    for _ in range(_RESUME_ATTEMPTS):
        rows = await store.read("get_schedule", name=_name(name))
        if not rows:
            raise NotFoundError("schedule not found")
        row = rows[0]
        if not int(row["paused"]):
            return
        timing = ScheduleTiming(str(row["cron"]), int(row["every_ms"]), str(row["timezone"]))
        next_ms = timing.next_after(await _database_ms(store))
        resumed = await store.run(_resume_statement(name, timing, next_ms))
        if resumed:
            rt.schedules_changed()
            return
    raise ConflictError("the schedule kept changing while it was being resumed; try again")


def _resume_statement(name: str, timing: ScheduleTiming, next_ms: int) -> TxFunction[int]:
    """The unit of work that resumes ``name`` at ``next_ms`` while its timing is still ``timing``."""

    async def resume(tx: Tx) -> int:
        return await tx.execute(
            "resume_schedule",
            name=name,
            next_tick_ms=next_ms,
            cron=timing.cron,
            every_ms=timing.every_ms,
            timezone=timing.timezone,
        )

    return resume


async def delete_schedule(rt: Runtime, name: str) -> None:
    """Remove the schedule (the flows it started stay); NotFoundError if there is none."""
    store = schedule_store(rt)
    if not await store.run(lambda tx: tx.execute("delete_schedule", name=_name(name))):
        raise NotFoundError("schedule not found")
    rt.schedules_changed()
