"""A stalled replica that outlives its lease commits nothing once it wakes up (docs/design.md#leases).

Two ways to stall: the replica's process is paused with SIGSTOP between finishing a task and
committing it, or the server process behind its database connection is paused while the commit is on
its way. Either way another replica recovers the step after the lease expired and finishes the flow;
when the stalled one resumes, its commit carries a lease token that is no longer the step's, so the
database rejects it, and the flow's persisted state is that of the rescuing execution alone.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from dwarf import Engine, FlowOutcome, Status
from tests.engine.graphs import until
from tests.process.harness import (
    Replica,
    ReplicaOptions,
    ReplicaSet,
    is_stopped,
    wait_for_file,
    wait_for_log,
    wait_for_outcome,
)
from tests.process.pgcluster import ThrowawayPostgres
from tests.process.workloads import stalling_host

pytestmark = pytest.mark.slow

BUDGET = 1.0
"""The flow's time budget; the replicas' leases last 1.2 s without renewal."""
WAIT = 30.0
WORKLOAD = "tests.process.workloads:stalling_host"
LOST_LEASE = "lost its lease; its outcome was discarded"


def _stalling_replica(replica_set: ReplicaSet, dsn: str, state: dict[str, object]) -> Replica:
    """A one-worker replica that creates a ``stall`` flow with ``state`` and runs its first Work step."""
    options = ReplicaOptions(
        dsn,
        WORKLOAD,
        workers=1,
        create="stall",
        extra=["--state", json.dumps(state), "--time-budget", str(BUDGET)],
    )
    return replica_set.launch("stalled", options)


async def _assert_rescued_once(engine: Engine, key: str, outcome: FlowOutcome, rescuer: Replica) -> None:
    assert outcome.status == Status.COMPLETED, outcome.error
    # The rescuer's execution is the one persisted: one run of each task, Work's by the rescuer's process.
    assert outcome.state["ranBy"] == rescuer.pid
    assert (outcome.state["workRuns"], outcome.state["afterRuns"]) == (1, 1)
    history = await engine.history(key)
    assert [(step.task_name, step.status, step.attempt) for step in history] == [
        ("Work", Status.COMPLETED, 0),
        ("After", Status.COMPLETED, 0),
    ]


async def test_paused_replica_commits_nothing_after_another_replica_recovered_its_step(
    fresh_dsn: str, replica_set: ReplicaSet
) -> None:
    markers = replica_set.directory
    stalled = _stalling_replica(replica_set, fresh_dsn, {"holdSeconds": 0.05, "stopSelf": True})
    key = await stalled.read_line()
    await wait_for_file(markers / "work-started", WAIT)
    # The task finished its work and paused its own process: the commit of that work is pending.
    await until(lambda: is_stopped(stalled.pid), WAIT)

    rescuer = replica_set.launch("rescuer", ReplicaOptions(fresh_dsn, WORKLOAD, workers=1))
    engine = Engine(host=stalling_host(markers), dsn=fresh_dsn, workers=0)
    await engine.startup()
    try:
        outcome = await wait_for_outcome(engine, key, WAIT)
        await _assert_rescued_once(engine, key, outcome, rescuer)
        fingerprint = await engine.fingerprint(key)

        stalled.resume()
        await wait_for_log(stalled, LOST_LEASE, WAIT)
        assert await engine.fingerprint(key) == fingerprint
        await _assert_rescued_once(engine, key, await engine.snapshot(key), rescuer)
    finally:
        await engine.shutdown()


async def test_replica_whose_database_connection_stalls_loses_its_lease_and_commits_nothing(
    throwaway_postgres: ThrowawayPostgres, replica_set: ReplicaSet
) -> None:
    markers: Path = replica_set.directory
    dsn = throwaway_postgres.create_database("stall")
    stalled = _stalling_replica(replica_set, f"{dsn}?application_name=dwarf-stalled", {"holdSeconds": 0.3})
    key = await stalled.read_line()
    await wait_for_file(markers / "work-started", WAIT)
    # Pause the server processes of the replica's connections while its task still runs: they are idle
    # (no transaction, no locks), and the commit the task's end sends will wait behind the pause.
    backends = throwaway_postgres.backend_pids("dwarf-stalled")
    assert backends, "the stalled replica has no connection to pause"
    for pid in backends:
        throwaway_postgres.pause_process(pid)
    try:
        rescuer = replica_set.launch("rescuer", ReplicaOptions(dsn, WORKLOAD, workers=1))
        engine = Engine(host=stalling_host(markers), dsn=dsn, workers=0)
        await engine.startup()
        try:
            outcome = await wait_for_outcome(engine, key, WAIT)
            await _assert_rescued_once(engine, key, outcome, rescuer)
            fingerprint = await engine.fingerprint(key)
            assert stalled.alive(), "the stalled replica died instead of waiting on its connection"
            assert LOST_LEASE not in stalled.log_text()

            for pid in backends:
                throwaway_postgres.resume_process(pid)
            await wait_for_log(stalled, LOST_LEASE, WAIT)
            assert await engine.fingerprint(key) == fingerprint
            await _assert_rescued_once(engine, key, await engine.snapshot(key), rescuer)
        finally:
            await engine.shutdown()
    finally:
        for pid in backends:
            throwaway_postgres.resume_process(pid)
