"""A replica holding every slot of a concurrency limit is SIGKILLed: its slots come back when its leases
expire, not before, and no replica exceeds the limit meanwhile (docs/limits.md).

The doomed replica runs the limited key's first steps, which block; a steady replica then gets more
work of that key and of an unlimited key. While the doomed replica lives, and after its death until its
leases lapse, the steady replica starts nothing of the limited key; then it runs the recovered steps and
the rest, never more at once than the limit. The database's own count (``list_limits``), sampled all
along, never exceeds the limit either.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from dwarf import Engine, FlowOptions, Status
from tests.engine.graphs import wait_until
from tests.process.harness import ReplicaOptions, ReplicaSet, wait_for_outcome
from tests.process.workloads import limited_host

pytestmark = pytest.mark.slow

LIMIT = 2
DEADLINE = 60.0
LEASE_PERIOD = 1.2


@dataclass
class Run:
    """One run of the limited task, from the replicas' shared log."""

    key: str
    pid: int
    entered: float
    exited: float | None
    step_key: str


def _runs(markers: Path) -> list[Run]:
    log = markers / "limited.log"
    lines = log.read_text().splitlines() if log.exists() else []
    runs: dict[tuple[int, str], Run] = {}
    for line in lines:
        event, key, pid, moment, step_key = line.split()
        if event == "enter":
            runs[(int(pid), step_key)] = Run(key, int(pid), float(moment), None, step_key)
        else:
            runs[(int(pid), step_key)].exited = float(moment)
    return list(runs.values())


def _most_at_once(runs: list[Run], end_of_dead: float) -> int:
    """The most runs live at one moment; a run that never exited ended when its process died."""
    events = []
    for run in runs:
        events += [(run.entered, 1), (run.exited if run.exited is not None else end_of_dead, -1)]
    most = live = 0
    for _, change in sorted(events, key=lambda event: (event[0], event[1])):
        live += change
        most = max(most, live)
    return most


async def test_a_killed_replicas_slots_come_back_only_when_its_leases_expire(
    fresh_dsn: str, replica_set: ReplicaSet
) -> None:
    markers = replica_set.directory
    async with Engine(host=limited_host(markers), dsn=fresh_dsn):
        pass  # the schema first: the inspecting engine below has no workers, so it never creates one
    engine = Engine(host=limited_host(markers), dsn=fresh_dsn, workers=0)
    await engine.startup()
    sampler: asyncio.Task[int] | None = None
    try:
        await engine.limit("lim", concurrency=LIMIT)

        async def create(key: str, **state: object) -> str:
            options = FlowOptions(fairness_key=key, time_budget=DEADLINE)
            return await engine.create("limited", {"key": key, "holdSeconds": 0.1, **state}, options)

        async def most_running() -> int:
            """Sample the database's count of the key's running steps until cancelled; the most seen."""
            most = 0
            try:
                while True:
                    [limit] = await engine.list_limits()
                    most = max(most, limit.running)
                    await asyncio.sleep(0.02)
            except asyncio.CancelledError:
                return most

        sampler = asyncio.create_task(most_running())
        options = ReplicaOptions(fresh_dsn, "tests.process.workloads:limited_host", lease_period=LEASE_PERIOD)
        doomed = replica_set.launch("doomed", options)
        blocked = [await create("lim", block=True) for _ in range(LIMIT + 1)]

        async def doomed_holds_every_slot() -> bool:
            return len([run for run in _runs(markers) if run.pid == doomed.pid]) == LIMIT

        await wait_until(doomed_holds_every_slot, DEADLINE)
        steady = replica_set.launch("steady", options)
        later = [await create("lim") for _ in range(4)]
        free = [await create("free") for _ in range(4)]
        for key in free:  # the unlimited key runs while the limited one is full
            assert (await wait_for_outcome(engine, key, DEADLINE)).status == Status.COMPLETED
        await asyncio.sleep(0.3)
        assert not [run for run in _runs(markers) if run.key == "lim" and run.pid != doomed.pid]

        killed_at = time.time()
        await replica_set.kill("doomed")
        (markers / "limited-unblock").write_text("")
        for key in blocked + later:
            outcome = await wait_for_outcome(engine, key, DEADLINE)
            assert outcome.status == Status.COMPLETED, (outcome, replica_set.logs())
        sampler.cancel()
        most_in_database = await sampler
        sampler = None
    finally:
        if sampler is not None:
            sampler.cancel()
        await engine.shutdown()

    runs = [run for run in _runs(markers) if run.key == "lim"]
    steady_runs = [run for run in runs if run.pid == steady.pid]
    assert len(steady_runs) == len(blocked) + len(later), replica_set.logs()
    # The dead replica's slots stayed taken until its leases lapsed: a lease renewed every 0.3 s and
    # lasting 1.2 s lapses at least 0.9 s after the kill. Nothing of the key started on the steady
    # replica before then; the blocked steps ran again there (their runs count both attempts).
    first_after = min(run.entered for run in steady_runs)
    assert first_after >= killed_at + 0.5, (first_after - killed_at, replica_set.logs())
    assert _most_at_once(runs, end_of_dead=killed_at) <= LIMIT
    assert most_in_database <= LIMIT
    print(
        f"first start of the limited key after the kill: +{first_after - killed_at:.2f} s; "
        f"most running in the database: {most_in_database}"
    )
