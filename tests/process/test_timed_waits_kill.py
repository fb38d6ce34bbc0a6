"""Deadlines and timed waits outlive their worker (docs/waits.md#durability): the only worker process is
SIGKILLed while flows run towards a deadline, sit in a timed interrupt or wait for a signal with a
timeout; every one of those times passes while no worker is up. Two fresh workers then start side by
side: each deadline cancels its flow, each timed wait ends with {"timedOut": true}, exactly once, and
the flows that got a signal in time are untouched by the race."""

from __future__ import annotations

import asyncio
import collections
import time

import pytest

from dwarf import DEADLINE_REASON, Engine, FlowOptions, FlowOutcome, Status, WaitReason
from tests.engine.graphs import wait_until
from tests.process.harness import ReplicaOptions, ReplicaSet, wait_for_outcome
from tests.process.workloads import waits_host

pytestmark = pytest.mark.slow

FLOWS = 4
"""Flows of each kind: running into a deadline, in a timed interrupt, in a timed signal wait."""
TIMER = 2.0
"""Seconds from a flow's create (deadline) or park (timed wait) until its timer: the flows must be
parked and the worker killed well before it."""
DEADLINE = 30.0


def correlation(key: str) -> str:
    return "-".join(key.split("-")[:2])


async def test_timers_that_pass_while_the_only_worker_is_dead_fire_once_on_the_next_workers(
    fresh_dsn: str, replica_set: ReplicaSet
) -> None:
    markers = replica_set.directory
    async with Engine(host=waits_host(markers), dsn=fresh_dsn):
        pass  # the schema first: the engine below has no workers, so it never creates one
    options = ReplicaOptions(fresh_dsn, "tests.process.workloads:waits_host", workers=8)
    replica_set.launch("worker", options)
    client = Engine(host=waits_host(markers), dsn=fresh_dsn, workers=0)
    await client.startup()
    try:
        # Timers count from now on: create them once the worker is known to claim.
        probe = await client.create("probe")
        assert (await wait_for_outcome(client, probe, DEADLINE)).status == Status.COMPLETED
        started = time.monotonic()
        doomed = [await client.create("doomed", options=FlowOptions(deadline=TIMER)) for _ in range(FLOWS)]
        asking = [await client.create("asking", {"timeout": TIMER}) for _ in range(FLOWS)]
        paying = [await client.create("paying", {"timeout": TIMER}) for _ in range(FLOWS)]
        answered = await client.create("paying", {"timeout": TIMER})

        async def all_parked() -> bool:
            blocked = {path.name.split("-", 1)[1].rsplit("-", 1)[0] for path in markers.glob("doomed-*")}
            if blocked != {correlation(key) for key in doomed}:
                return False
            for key in asking:
                if (await client.snapshot(key)).status != Status.INTERRUPTED:
                    return False
            for key in [*paying, answered]:
                if not any(wait.reason == WaitReason.SIGNAL for wait in await client.why(key)):
                    return False
            return True

        await wait_until(all_parked, DEADLINE, interval=0.05)
        await client.signal(answered, "paid", {"paid": True})
        assert (await wait_for_outcome(client, answered, DEADLINE)).state["wentOn"] == "answered"
        assert time.monotonic() - started < TIMER - 0.3, "the flows parked too late for the test to mean much"
        await replica_set.kill("worker")

        # No worker runs: the times pass and nothing moves.
        await asyncio.sleep(max(0.0, started + TIMER + 0.5 - time.monotonic()))
        for key in doomed:
            assert (await client.snapshot(key)).status == Status.RUNNING
        for key in asking:
            assert (await client.snapshot(key)).status == Status.INTERRUPTED

        replica_set.launch("first", options)
        replica_set.launch("second", options)
        for key in doomed:
            outcome = await wait_for_outcome(client, key, DEADLINE)
            assert outcome.status == Status.CANCELLED and outcome.cancel_reason == DEADLINE_REASON, outcome
        for key in [*asking, *paying]:
            outcome = await _completed(client, key)
            assert outcome.state["wentOn"] == "expired", outcome
        await asyncio.sleep(0.5)  # a second firing, were there one, would have run its task by now
    finally:
        await client.shutdown()

    runs = [path.name for pattern in ("expired-*", "answered-*") for path in markers.glob(pattern)]
    went_on = collections.Counter(name.rsplit("-", 1)[0] for name in runs)
    expected = {f"expired-{correlation(key)}": 1 for key in [*asking, *paying]}
    expected[f"answered-{correlation(answered)}"] = 1
    assert dict(went_on) == expected, replica_set.logs()
    for key in doomed:
        cancels = replica_set.count_in_engine_logs(f"flow {correlation(key)} cancelled: its deadline passed")
        assert cancels == 1, replica_set.logs()
    assert replica_set.count_in_engine_logs("timed out") == 2 * FLOWS, replica_set.logs()


async def _completed(client: Engine, key: str) -> FlowOutcome:
    """The outcome once the flow completed (an interrupted flow stops ``wait_for_outcome`` too early)."""
    found: list[FlowOutcome] = []

    async def done() -> bool:
        found[:] = [await client.snapshot(key)]
        return found[0].status == Status.COMPLETED

    await wait_until(done, DEADLINE, interval=0.05)
    return found[0]
