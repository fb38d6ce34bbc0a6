"""Chaos: hundreds of mixed flows end exactly right while replicas are SIGKILLed and the server restarts.

Three replica processes run 500 flows of the mixed workload (chains, forEach fan-outs into reducing
fan-ins, subgraph calls, retries with backoff, durable sleeps: tests/process/mixed.py) on a private
PostgreSQL server. Meanwhile a controller SIGKILLs a random replica every 1-3 s and starts a fresh one in
its place, and once, mid-run, crash-restarts the server (``pg_ctl restart -m immediate``: open
transactions are lost and the server recovers from its write-ahead log). Afterwards every flow must have
ended within the deadline, with exactly the state its input implies and one step per task in its history
(one fan-in per cohort, one child flow per call), although the kills made some tasks run more than once.
The test prints a summary; ``DWARF_CHAOS_SEED`` varies the inputs and the kill schedule.
"""

from __future__ import annotations

import asyncio
import os
import random
import time

import pytest

from dwarf import Engine, Query
from tests.process.harness import ReplicaOptions, ReplicaSet, kill_randomly
from tests.process.mixed import (
    check_flows,
    count_reexecutions,
    create_flows,
    mixed_host,
    plan_flows,
    wait_for_stopped,
)
from tests.process.pgcluster import ThrowawayPostgres

pytestmark = pytest.mark.slow

SEED = int(os.environ.get("DWARF_CHAOS_SEED", "20240611"))
"""Seeds the flows' inputs and the kill schedule (the timing of a run is never reproducible)."""
FLOWS = 500
REPLICAS = 3
WORKERS = 8
BUDGET = 3.0
"""Each flow's time budget: far above a task's 5-50 ms, so that only crashes make a step run again."""
LEASE_PERIOD = 3.5
KILL_GAP = (1.0, 3.0)
RESTART_WHEN_ENDED = FLOWS * 3 // 10
"""The server restarts once this many flows have ended: well into the run, with most still to go."""
DEADLINE = 150.0
"""Seconds from the last flow's creation within which every flow must have ended."""


async def test_mixed_flows_end_exactly_right_while_replicas_die_and_the_server_restarts(
    throwaway_postgres: ThrowawayPostgres, replica_set: ReplicaSet, capsys: pytest.CaptureFixture[str]
) -> None:
    started = time.monotonic()
    dsn = throwaway_postgres.create_database("chaos")
    markers = replica_set.directory
    plans = plan_flows(FLOWS, SEED)
    async with Engine(host=mixed_host(markers), dsn=dsn):
        pass  # the schema first: the inspecting engine below has no workers, so it never creates one
    options = ReplicaOptions(
        dsn, "tests.process.mixed:mixed_host", workers=WORKERS, lease_period=LEASE_PERIOD, idle_poll=0.2
    )
    for number in range(REPLICAS):
        replica_set.launch(f"replica-{number}", options)
    # The test's own engine runs nothing: it creates the flows and inspects them.
    engine = Engine(host=mixed_host(markers), dsn=dsn, workers=0)
    await engine.startup()
    stop_killing = asyncio.Event()
    killer = asyncio.create_task(kill_randomly(replica_set, random.Random(SEED), KILL_GAP, stop_killing))
    try:
        keys = await create_flows(engine, plans, BUDGET)
        deadline = time.monotonic() + DEADLINE
        await wait_for_stopped(engine, RESTART_WHEN_ENDED, deadline)
        await asyncio.to_thread(throwaway_postgres.restart, "immediate")
        await wait_for_stopped(engine, FLOWS, deadline)
        stop_killing.set()
        await killer
        problems = await check_flows(engine, keys, plans)
        every_flow, _ = await engine.list(Query(include_subgraphs=True, limit=1000))
    finally:
        stop_killing.set()
        killer.cancel()
        await engine.shutdown()
    elapsed = time.monotonic() - started
    reexecutions = count_reexecutions(markers)
    recoveries = replica_set.count_in_engine_logs("lease expired; queued again")
    with capsys.disabled():  # the summary belongs in every test log, not only in failures
        print(
            f"\nchaos (seed {SEED}): {FLOWS} flows on {REPLICAS} replicas, {replica_set.kills} kills, "
            f"1 server restart, {reexecutions} task re-executions, {recoveries} lease recoveries, "
            f"{elapsed:.1f}s"
        )

    assert not problems, f"{len(problems)} flows went wrong:\n" + "\n".join(problems[:20])
    calls = sum(plan.kind == "subgraph" for plan in plans)
    assert len(every_flow) == FLOWS + calls, "a child flow was started twice (or lost)"
    assert reexecutions > 0, "no kill landed while a step ran: the test proved nothing"
