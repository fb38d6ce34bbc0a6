"""A replica killed with SIGKILL in the middle of a step loses nothing and applies nothing twice.

The replicas run in their own OS processes. After a kill, an engine on the same database recovers the
step once its lease expires and completes the flow; the state shows each task's effect exactly once.
"""

from __future__ import annotations

import asyncio
import random
import time
from pathlib import Path

import pytest

from dwarf import Engine, SchedulerTuning
from tests.engine.graphs import wait_until
from tests.process.harness import ReplicaOptions, ReplicaSet, wait_for_file
from tests.process.mixed import (
    check_flows,
    count_reexecutions,
    count_stopped,
    create_flows,
    mixed_host,
    plan_flows,
    wait_for_stopped,
)
from tests.process.workloads import killable_host

pytestmark = pytest.mark.slow

LEASE_PERIOD = 1.2
"""How long a claim holds a step without renewal: short, so a killed replica's steps come back quickly."""


async def test_sigkill_mid_step_recovers_with_one_execution(fresh_dsn: str, replica_set: ReplicaSet) -> None:
    markers = replica_set.directory
    replica = replica_set.launch(
        "doomed",
        ReplicaOptions(fresh_dsn, "tests.process.workloads:killable_host", create="killable"),
    )
    key = await replica.read_line()
    await wait_for_file(markers / "b-started", 30)
    await replica_set.kill("doomed")

    (markers / "b-fast").write_text("")
    engine = Engine(
        host=killable_host(markers),
        dsn=fresh_dsn,
        scheduler_tuning=SchedulerTuning(lease_period=LEASE_PERIOD),
    )
    await engine.startup()
    try:
        outcome = await engine.wait(key, timeout=30)
        assert outcome.status == "completed"
        assert outcome.state == {"aRuns": 1, "bRuns": 1, "cRuns": 1}
        steps = await engine.history(key)
        assert [step.task_name for step in steps] == ["A", "B", "C"]
        assert all(step.status == "completed" for step in steps)
    finally:
        await engine.shutdown()


SQLITE_FLOWS = 40
SQLITE_KILLS = 5
"""At most this many: the kills stop early when every flow has ended."""
SQLITE_BUDGET = 1.0
SQLITE_DEADLINE = 90.0


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
async def test_sqlite_file_survives_repeated_sigkill_of_its_only_replica(
    fresh_dsn: str, replica_set: ReplicaSet
) -> None:
    markers = replica_set.directory
    plans = plan_flows(SQLITE_FLOWS, seed=7)
    async with Engine(host=mixed_host(markers), dsn=fresh_dsn):
        pass  # the schema first: the inspecting engine below has no workers, so it never creates one
    options = ReplicaOptions(fresh_dsn, "tests.process.mixed:mixed_host", workers=8, lease_period=1.3)
    replica_set.launch("only", options)
    # This engine only creates and inspects flows; the replica process runs them all.
    engine = Engine(host=mixed_host(markers), dsn=fresh_dsn, workers=0)
    await engine.startup()
    try:
        keys = await create_flows(engine, plans, SQLITE_BUDGET)
        rng = random.Random(3)
        for _ in range(SQLITE_KILLS):
            # Kill only once this process has started running steps, so that the kill lands mid-step.
            started = markers / f"executions-{replica_set['only'].pid}.log"

            async def running_or_all_ended(started: Path = started) -> bool:
                return started.exists() or await count_stopped(engine) == len(plans)

            await wait_until(running_or_all_ended, 30)
            if not started.exists():
                break
            await asyncio.sleep(rng.uniform(0.1, 0.5))
            await replica_set.restart("only")
        await wait_for_stopped(engine, len(plans), time.monotonic() + SQLITE_DEADLINE)
        problems = await check_flows(engine, keys, plans)
    finally:
        await engine.shutdown()
    assert not problems, "\n".join(problems[:20]) + "\n" + replica_set.logs()
    reexecutions = count_reexecutions(markers)
    print(f"{len(plans)} flows, {replica_set.kills} kills, {reexecutions} re-executions")
    assert reexecutions > 0, "no kill landed while a step ran: the test proved nothing"
