"""A schedule ticking every quarter second on two replica processes that keep dying: each one kills
itself right after one of its ticks' flows was committed and before the schedule moved on (the workload's
doing), and the test SIGKILLs one at random moments besides. Afterwards every tick from the first on has
exactly one flow, and each flow ran once: none lost, none doubled
(docs/schedules.md#exactly-one-flow-per-tick)."""

from __future__ import annotations

import asyncio
import collections
import random
import time
from datetime import datetime

import pytest

from dwarf import Engine, Query, Status
from tests.engine.graphs import wait_until
from tests.process.harness import ReplicaOptions, ReplicaSet, wait_for_outcome
from tests.process.workloads import SCHEDULE_CHAOS, schedule_host

pytestmark = pytest.mark.slow

EVERY = 0.25
CHAOS_SECONDS = 4.0
CHAOS_LIMIT = 40.0
"""The chaos goes on past ``CHAOS_SECONDS`` until a replica has killed itself mid-tick, up to this: on a
loaded machine a replica process takes seconds to start, and outside kills may take every one of them
down before its first tick."""
KILL_GAP = (0.6, 1.4)
"""Seconds between the SIGKILLs the test sends from outside, besides the replicas' own."""
DEADLINE = 60.0


def _ms(text: str) -> int:
    return round(datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp() * 1000)


def _relaunch_dead(replica_set: ReplicaSet, options: ReplicaOptions) -> None:
    for name in replica_set.names:
        if not replica_set[name].alive():
            replica_set.launch(name, options)


async def test_schedule_ticks_survive_replicas_killed_mid_tick(
    fresh_dsn: str, replica_set: ReplicaSet
) -> None:
    markers = replica_set.directory
    async with Engine(host=schedule_host(markers), dsn=fresh_dsn):
        pass  # the schema first: the inspecting engine below has no workers, so it never creates one
    (markers / SCHEDULE_CHAOS).write_text("")
    options = ReplicaOptions(
        fresh_dsn, "tests.process.workloads:dying_schedule_host", extra=["--schedule-poll", "0.5"]
    )
    for name in ("a", "b"):
        replica_set.launch(name, options)
    inspector = Engine(host=schedule_host(markers), dsn=fresh_dsn, workers=0)
    await inspector.startup()
    try:
        created = await inspector.schedule("chaos", "ticked", every=EVERY, catch_up="all")
        assert created.next_tick is not None
        rng = random.Random(16)
        started = time.monotonic()
        next_kill = started + rng.uniform(*KILL_GAP)

        def chaos_goes_on() -> bool:
            elapsed = time.monotonic() - started
            if elapsed < CHAOS_SECONDS:
                return True
            return elapsed < CHAOS_LIMIT and not any(markers.glob("self-killed-*"))

        while chaos_goes_on():
            _relaunch_dead(replica_set, options)
            if time.monotonic() >= next_kill:
                await replica_set.kill(rng.choice(replica_set.names))
                next_kill = time.monotonic() + rng.uniform(*KILL_GAP)
            await asyncio.sleep(0.05)
        (markers / SCHEDULE_CHAOS).unlink()
        calm_from = time.time()
        _relaunch_dead(replica_set, options)

        async def caught_up() -> bool:
            last = (await inspector.get_schedule("chaos")).last_tick
            return last is not None and last.timestamp() > calm_from + 2 * EVERY

        try:
            await wait_until(caught_up, DEADLINE, interval=0.1)
        except TimeoutError:
            raise AssertionError(f"the schedule did not catch up\n{replica_set.logs()}") from None
        await inspector.pause_schedule("chaos")
        await asyncio.sleep(0.5)  # a tick being created at the pause may still add its flow

        page, _ = await inspector.list(Query(workflow_url="ticked", limit=1000))
        ticks: dict[int, list[str]] = collections.defaultdict(list)
        for summary in page:
            outcome = await wait_for_outcome(inspector, summary.flow_key, DEADLINE)
            assert outcome.status == Status.COMPLETED, outcome
            assert outcome.state["runs"] == 1, outcome.state
            ticks[_ms(outcome.state["scheduledAt"])].append(summary.flow_key)
    finally:
        await inspector.shutdown()
    doubled = {tick: keys for tick, keys in ticks.items() if len(keys) > 1}
    assert not doubled, f"ticks with more than one flow: {doubled}\n{replica_set.logs()}"
    first = round(created.next_tick.timestamp() * 1000)
    step = round(EVERY * 1000)
    expected = list(range(first, max(ticks) + step, step))
    missing = sorted(set(expected) - set(ticks))
    assert not missing, f"ticks without a flow: {missing}\n{replica_set.logs()}"
    assert sorted(ticks) == expected
    # Each replica that killed itself did so right after a create that the schedule had not recorded.
    self_kills = len(list(markers.glob("self-killed-*")))
    print(
        f"{len(ticks)} ticks, {self_kills} replicas killed mid-tick, {replica_set.kills} killed from outside"
    )
    assert self_kills >= 1, "no replica died mid-tick: the test proved nothing"
    assert replica_set.kills >= 1
