"""A replica SIGKILLed while its retention pass marks flows and its reaper deletes them: the next engine
finishes the purge, and no flow whose retention has not run out (or that has none, or has not ended)
loses a row (docs/operations.md#retention)."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from dwarf import Engine, FlowOptions, NotFoundError, Query, SchedulerTuning, Status, TestProxy
from tests.engine.graphs import wait_until
from tests.engine.graphs_parallel import row_counts
from tests.process.harness import ReplicaOptions, ReplicaSet
from tests.process.workloads import retention_graphs

pytestmark = pytest.mark.slow

DUE = 40
"""Flows whose retention (RETAIN seconds) runs out before the replica starts."""
GRACE = 5
"""Flows created with delete_on_completion: due once the grace window (RETAIN seconds) is over."""
KEPT = 8
"""Flows of each kind that must stay: a retention of an hour, none, and interrupted ones (retain_for=0)."""
RETAIN = 1.0
REAPED_BEFORE_KILL = 20
"""Step rows the doomed replica deletes before it is killed (it marks two flows per 50 ms, and deletes
one row per 10 ms: a pass over every due flow takes more than a second)."""
DEADLINE = 30.0


def _host() -> TestProxy:
    host = TestProxy()
    retention_graphs(host)
    return host


async def _make_flows(dsn: str) -> tuple[list[str], dict[str, int]]:
    """The doomed flows' keys, and the kept flows' keys with their step counts."""
    engine = Engine(
        host=_host(),
        dsn=dsn,
        workers=8,
        deletion_grace=RETAIN,
        scheduler_tuning=SchedulerTuning(retention_poll=3600),
    )
    await engine.startup()
    # This engine must not purge them itself: its pass sleeps an hour, and what it ends does not wake it.
    engine.runtime.retention.note = lambda shard, seconds: None  # type: ignore[method-assign]
    try:
        due = [await engine.create("retained", options=FlowOptions(retain_for=RETAIN)) for _ in range(DUE)]
        options = FlowOptions(delete_on_completion=True)
        due += [await engine.create("retained", options=options) for _ in range(GRACE)]
        kept = [await engine.create("retained", options=FlowOptions(retain_for=3600)) for _ in range(KEPT)]
        kept += [await engine.create("retained") for _ in range(KEPT)]
        asking = [await engine.create("ask", options=FlowOptions(retain_for=0)) for _ in range(KEPT)]
        for key in due + kept:
            assert (await engine.wait(key, timeout=DEADLINE)).status == Status.COMPLETED
        for key in asking:
            assert (await engine.wait(key, timeout=DEADLINE)).status == Status.INTERRUPTED
    finally:
        await engine.shutdown()
    steps = {key: 3 for key in kept} | {key: 1 for key in asking}
    return due, steps


async def _visible(engine: Engine, keys: list[str]) -> int:
    """How many of ``keys`` are still listed (not marked for the reaper)."""
    wanted = set(keys)
    page, _ = await engine.list(Query(workflow_url="retained", limit=1000))
    return sum(1 for summary in page if summary.flow_key in wanted)


async def test_sigkill_during_a_retention_purge_loses_no_unexpired_flow(
    fresh_dsn: str, replica_set: ReplicaSet
) -> None:
    due, kept = await _make_flows(fresh_dsn)
    started = time.monotonic()
    all_rows = (len(due) + len(kept), 3 * len(due) + sum(kept.values()))
    kept_rows = (len(kept), sum(kept.values()))
    watcher = Engine(host=_host(), dsn=fresh_dsn, workers=0)  # reads only: no retention pass of its own
    await watcher.startup()
    try:
        assert await row_counts(watcher) == all_rows
        await asyncio.sleep(max(0.0, RETAIN + 0.2 - (time.monotonic() - started)))
        replica_set.launch("doomed", ReplicaOptions(fresh_dsn, "tests.process.workloads:retention_host"))
        seen: dict[str, Any] = {}

        async def in_flight() -> bool:
            # Rows already reaped, and due flows not even marked yet: the kill lands between decisions.
            _, steps = await row_counts(watcher)
            seen.update(steps=steps, unmarked=await _visible(watcher, due))
            return steps <= all_rows[1] - REAPED_BEFORE_KILL and 0 < seen["unmarked"] < len(due)

        await wait_until(in_flight, DEADLINE, interval=0.01)
        await replica_set.kill("doomed")
        print(f"killed with {seen['unmarked']} due flows unmarked and {seen['steps']} step rows left")
        assert await row_counts(watcher) != kept_rows, "the kill came after the purge: it proved nothing"
    finally:
        await watcher.shutdown()

    engine = Engine(
        host=_host(), dsn=fresh_dsn, workers=1, scheduler_tuning=SchedulerTuning(retention_poll=0.1)
    )
    await engine.startup()
    try:

        async def purged() -> bool:
            return await row_counts(engine) == kept_rows

        await wait_until(purged, DEADLINE)
        for key in due:
            with pytest.raises(NotFoundError):
                await engine.snapshot(key)
        for key, steps in kept.items():
            assert len(await engine.history(key)) == steps
            assert (await engine.snapshot(key)).status in {Status.COMPLETED, Status.INTERRUPTED}
    finally:
        await engine.shutdown()
