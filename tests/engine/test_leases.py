"""Leases (docs/design.md#leases): a dead worker's step is re-claimed after its lease expires,
and a worker that lost its lease commits nothing, so persisted state reflects exactly one execution.

Leases are shrunk to keep the tests quick: a claim holds a step for 0.7 s without renewal (set right
after startup, before any claim); a live worker renews its leases every quarter of that.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from typing import Any

from dwarf import Flow, FlowOptions, SchedulerTuning, Status
from tests.engine.graphs import WAIT, Replicas, chain, proxy_with, until

BUDGET = 0.5
LEASE = 0.7


async def test_step_of_a_crashed_worker_is_recovered_after_lease_expiry_with_one_execution(
    fresh_dsn: str,
) -> None:
    calls: Counter[str] = Counter()
    starts: list[float] = []

    def task(name: str) -> Any:
        async def handler(flow: Flow) -> None:
            calls[name] += 1
            flow.set("count", flow.get_int("count") + 1)
            if name == "B":
                starts.append(time.monotonic())
                if calls[name] == 1:
                    await asyncio.Event().wait()  # never returns: the worker "hangs" until it crashes

        return handler

    proxy = proxy_with("hang", chain("Hang", "A", "B", "C"), A=task("A"), B=task("B"), C=task("C"))
    async with Replicas(proxy, fresh_dsn) as replicas:
        first = await replicas.start(lease_period=LEASE)
        key = await first.create("hang", options=FlowOptions(time_budget=BUDGET))
        await until(lambda: calls["B"] == 1)
        await first.abandon()
        second = await replicas.start(lease_period=LEASE)
        outcome = await second.wait(key, timeout=WAIT)
    assert outcome.status == Status.COMPLETED
    assert outcome.state == {"count": 3}
    assert calls == {"A": 1, "B": 2, "C": 1}
    # Not re-claimed before the lease expired.
    assert starts[1] - starts[0] >= LEASE - 0.05


async def test_recovered_step_appears_once_in_history(fresh_dsn: str) -> None:
    calls: Counter[str] = Counter()

    async def hang_once(flow: Flow) -> None:
        calls["A"] += 1
        flow.set("count", flow.get_int("count") + 1)
        if calls["A"] == 1:
            await asyncio.Event().wait()

    proxy = proxy_with("hang", chain("Hang", "A"), A=hang_once)
    async with Replicas(proxy, fresh_dsn) as replicas:
        first = await replicas.start(lease_period=LEASE)
        key = await first.create("hang", options=FlowOptions(time_budget=BUDGET))
        await until(lambda: calls["A"] == 1)
        await first.abandon()
        second = await replicas.start(lease_period=LEASE)
        outcome = await second.wait(key, timeout=WAIT)
        history = await second.history(key)
    assert outcome.state == {"count": 1}
    assert [(step.task_name, step.status, step.changes) for step in history] == [
        ("A", Status.COMPLETED, {"count": 1})
    ]


async def test_worker_that_lost_its_lease_commits_nothing(make_engine: Any) -> None:
    calls: Counter[str] = Counter()
    first_run_over = asyncio.Event()

    async def slow_once(flow: Flow) -> None:
        calls["A"] += 1
        run = calls["A"]
        flow.set("runner", run)
        if run == 1:
            try:
                # Outlives the lease (0.2 s) and a poll interval by far, but not the budget.
                await asyncio.sleep(1.5)
            finally:
                first_run_over.set()

    # A worker whose renewals stalled: its 0.2 s lease lapses while the task still runs. It looks for
    # expired leases often, so the re-claim beats the first run.
    stalled = SchedulerTuning(lease_period=0.2, heartbeat_interval=3600.0, idle_poll=0.1)
    engine = await make_engine(proxy_with("slow", chain("Slow", "A"), A=slow_once), scheduler_tuning=stalled)
    key = await engine.create("slow", options=FlowOptions(time_budget=5.0))
    outcome = await engine.wait(key, timeout=WAIT)
    async with asyncio.timeout(WAIT):
        await first_run_over.wait()
    await asyncio.sleep(0.2)  # let the stale worker try to commit
    history = await engine.history(key)
    assert outcome.state == {"runner": 2}
    assert (await engine.snapshot(key)).state == {"runner": 2}
    assert [(step.status, step.changes) for step in history] == [(Status.COMPLETED, {"runner": 2})]
    assert calls["A"] == 2


async def test_a_busy_replica_still_recovers_a_dead_replicas_steps(fresh_dsn: str) -> None:
    calls: Counter[str] = Counter()
    recovered_at: list[float] = []

    async def hang_once(flow: Flow) -> None:
        calls["Hang"] += 1
        if calls["Hang"] == 1:
            await asyncio.Event().wait()
        recovered_at.append(time.monotonic())

    async def busy(flow: Flow) -> None:
        await asyncio.sleep(0.02)

    proxy = proxy_with("hang", chain("Hang", "Hang"), Hang=hang_once)
    proxy.handle_graph("busy", chain("Busy", "Busy"))
    proxy.handle_task("Busy", busy)
    async with Replicas(proxy, fresh_dsn) as replicas:
        first = await replicas.start(lease_period=LEASE)
        key = await first.create("hang", options=FlowOptions(time_budget=BUDGET))
        await until(lambda: calls["Hang"] == 1)
        await first.abandon()
        crashed_at = time.monotonic()
        # One worker and a backlog that keeps every claim full: the claimer never goes idle.
        second = await replicas.start(lease_period=LEASE, workers=1)
        backlog = [await second.create("busy") for _ in range(150)]
        outcome = await second.wait(key, timeout=WAIT)
        statuses = [(await second.snapshot(k)).status for k in backlog]
        busy_left = sum(status != Status.COMPLETED for status in statuses)
    assert outcome.status == Status.COMPLETED
    # Recovered within a poll interval or so of the lease's expiry, while the backlog was still queued.
    assert recovered_at[0] - crashed_at < LEASE + 2.5
    assert busy_left > 0
