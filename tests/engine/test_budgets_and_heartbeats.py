"""Time budgets that hold whatever the task does, and leases kept alive by a heartbeat (hardening issue,
items 3 and 10).

A task that swallows its cancellation used to be committed "completed" with its late writes, or, running
past its lease, to be run again beside itself for ever. Now the attempt fails at its deadline and the
engine stops waiting; and a lease lasts a short period renewed while the task runs, so a dead replica's
steps come back within seconds while a live replica's long task is never run twice.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections import Counter
from typing import Any

from dwarf import Flow, FlowOptions, Status
from dwarf.engine import SchedulerTuning
from tests.engine.graphs import WAIT, Replicas, chain, proxy_with, until

BUDGET = 0.3


async def test_a_task_that_swallows_its_cancellation_fails_at_its_deadline_and_its_late_writes_are_dropped(
    make_engine: Any,
) -> None:
    returned = asyncio.Event()

    async def stubborn(flow: Flow) -> None:
        flow.set("early", 1)
        try:
            await asyncio.sleep(WAIT)
        except asyncio.CancelledError:
            pass  # swallowed: the task carries on
        await asyncio.sleep(3.0)
        flow.set("late", 1)
        returned.set()

    engine = await make_engine(proxy_with("stubborn", chain("Stubborn", "A"), A=stubborn))
    started = time.monotonic()
    key, outcome = await engine.run("stubborn", options=FlowOptions(time_budget=BUDGET), timeout=WAIT)
    assert time.monotonic() - started < BUDGET + 2.0  # not held by the task's extra three seconds
    assert outcome.status == Status.FAILED
    assert "exceeded its time budget" in outcome.error
    async with asyncio.timeout(WAIT):
        await returned.wait()
    [step] = await engine.history(key)
    assert step.status == Status.FAILED
    assert step.changes == {"early": 1}
    assert (await engine.snapshot(key)).state == {"early": 1}


async def test_a_task_that_never_ends_fails_at_its_deadline_and_never_runs_twice(make_engine: Any) -> None:
    runs: Counter[str] = Counter()
    release = asyncio.Event()

    async def endless(flow: Flow) -> None:
        runs["A"] += 1
        while not release.is_set():
            try:
                await asyncio.sleep(0.05)
            except asyncio.CancelledError:
                continue  # refuses to stop

    engine = await make_engine(
        proxy_with("endless", chain("Endless", "A"), A=endless),
        scheduler_tuning=SchedulerTuning(lease_period=0.4, idle_poll=0.05),
    )
    try:
        _, outcome = await engine.run("endless", options=FlowOptions(time_budget=BUDGET), timeout=WAIT)
        assert outcome.status == Status.FAILED
        await asyncio.sleep(1.0)  # several lease periods: nothing may claim the step again
        assert runs["A"] == 1
    finally:
        release.set()


async def test_a_blocking_sync_task_fails_at_its_deadline_without_holding_the_worker(
    make_engine: Any,
) -> None:
    release = threading.Event()

    def blocking(flow: Flow) -> None:
        release.wait(WAIT)
        flow.set("late", 1)

    engine = await make_engine(proxy_with("blocking", chain("Blocking", "A"), A=blocking))
    try:
        started = time.monotonic()
        _, outcome = await engine.run("blocking", options=FlowOptions(time_budget=BUDGET), timeout=WAIT)
        assert time.monotonic() - started < BUDGET + 2.0  # not held by the thread, blocked for 10 s
        assert outcome.status == Status.FAILED
        assert "exceeded its time budget" in outcome.error
    finally:
        release.set()


async def test_a_live_replicas_task_outlasting_many_lease_periods_runs_once(make_engine: Any) -> None:
    runs: Counter[str] = Counter()

    async def long_task(flow: Flow) -> None:
        runs["A"] += 1
        await asyncio.sleep(1.5)
        flow.set("done", True)

    proxy = proxy_with("long", chain("Long", "A"), A=long_task)
    short = SchedulerTuning(lease_period=0.3, idle_poll=0.05)  # five lease periods in one run of the task
    first = await make_engine(proxy, scheduler_tuning=short)
    await make_engine(proxy, scheduler_tuning=short)
    _, outcome = await first.run("long", timeout=WAIT)
    assert outcome.status == Status.COMPLETED, outcome.error
    assert outcome.state == {"done": True}
    assert runs["A"] == 1


async def test_cancelling_a_flow_stops_its_running_task_within_a_heartbeat(make_engine: Any) -> None:
    stopped = asyncio.Event()
    entered = asyncio.Event()

    async def long_task(flow: Flow) -> None:
        entered.set()
        try:
            await asyncio.sleep(WAIT)
        except asyncio.CancelledError:
            stopped.set()
            raise

    engine = await make_engine(
        proxy_with("long", chain("Long", "A"), A=long_task),
        scheduler_tuning=SchedulerTuning(lease_period=0.4),
    )
    key = await engine.create("long")
    async with asyncio.timeout(WAIT):
        await entered.wait()
    await engine.cancel(key, "no longer needed")
    async with asyncio.timeout(1.0):  # a heartbeat is every 0.1 s here
        await stopped.wait()
    assert (await engine.snapshot(key)).status == Status.CANCELLED


async def test_a_crashed_replicas_step_is_recovered_within_fifteen_seconds_by_default(fresh_dsn: str) -> None:
    """Default settings: the two-minute time budget no longer decides how long a dead worker's step waits."""
    runs: Counter[str] = Counter()
    assert SchedulerTuning().lease_period + 2 < 15

    async def hang_once(flow: Flow) -> None:
        runs["A"] += 1
        if runs["A"] == 1:
            await asyncio.Event().wait()
        flow.set("recovered", True)

    proxy = proxy_with("hang", chain("Hang", "A"), A=hang_once)
    async with Replicas(proxy, fresh_dsn) as replicas:
        doomed = await replicas.start()
        survivor = await replicas.start()
        key = await doomed.create("hang")
        await until(lambda: runs["A"] >= 1)
        if runs["A"] == 1 and survivor.busy_workers:
            # The survivor took the first run: crash it instead, the roles are symmetric.
            doomed, survivor = survivor, doomed
        crashed_at = time.monotonic()
        await doomed.abandon()
        outcome = await survivor.wait(key, timeout=20)
        recovered_after = time.monotonic() - crashed_at
    assert outcome.status == Status.COMPLETED
    assert outcome.state == {"recovered": True}
    assert runs["A"] == 2
    assert recovered_after < 15


async def test_a_step_that_keeps_losing_its_worker_fails_after_the_limit_instead_of_for_ever(
    fresh_dsn: str,
) -> None:
    """A task that takes its process down (a native crash, an OOM kill) is not claimed again for ever."""
    runs: Counter[str] = Counter()

    async def crash_the_worker(flow: Flow) -> None:
        runs["A"] += 1
        await asyncio.Event().wait()  # the replica is "killed" while this runs

    proxy = proxy_with("crashy", chain("Crashy", "A"), A=crash_the_worker)
    crashy = SchedulerTuning(lease_period=0.3, max_recoveries=2, idle_poll=0.05)
    async with Replicas(proxy, fresh_dsn) as replicas:
        key = ""
        for crash in range(2):
            replica = await replicas.start(scheduler_tuning=crashy)
            if not key:
                key = await replica.create("crashy")
            await until(lambda crash=crash: runs["A"] == crash + 1)
            await replica.abandon()
        survivor = await replicas.start(scheduler_tuning=crashy)
        outcome = await survivor.wait(key, timeout=WAIT)
        history = await survivor.history(key)
    assert runs["A"] == 2  # the first run and one recovery; the second recovery is not run
    assert outcome.status == Status.FAILED
    assert "lost its worker 2 times in a row" in outcome.error
    assert [step.status for step in history] == [Status.FAILED]
