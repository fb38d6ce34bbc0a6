"""A replica killed with SIGKILL in the middle of a chain whose states are stored as deltas (see
docs/design.md#state-storage) loses nothing: the next worker rebuilds the interrupted step's state from
the rows, and the state shows every turn's item exactly once, in order."""

from __future__ import annotations

import asyncio
import json
import random
import time

import pytest

from dwarf import Engine, SchedulerTuning, Status
from dwarf.engine.keys import parse_key
from tests.process.harness import ReplicaOptions, ReplicaSet, wait_for_file
from tests.process.workloads import GROWING_BIG, growing_host

pytestmark = pytest.mark.slow

LEASE_PERIOD = 1.2


def _state(target: int, block_at: int = -1, turn_seconds: float = 0.0) -> str:
    return json.dumps({"turn": 0, "target": target, "blockAt": block_at, "turnSeconds": turn_seconds})


async def _delta_rows(engine: Engine, key: str) -> int:
    parsed = parse_key(key)
    rows = await engine.runtime.store(parsed.shard).read("flow_steps_by_id", flow_id=parsed.id)
    return sum(1 for row in rows if row["state"] == "")


async def test_sigkill_in_a_delta_chain_resumes_from_the_rebuilt_state(
    fresh_dsn: str, replica_set: ReplicaSet
) -> None:
    markers = replica_set.directory
    options = ReplicaOptions(
        fresh_dsn, "tests.process.workloads:growing_host", create="growing", extra=["--state", _state(60, 35)]
    )
    replica = replica_set.launch("doomed", options)
    key = await replica.read_line()
    await wait_for_file(markers / "turn-blocked", 30)
    await replica_set.kill("doomed")

    (markers / "growing-fast").write_text("")
    engine = Engine(
        host=growing_host(markers), dsn=fresh_dsn, scheduler_tuning=SchedulerTuning(lease_period=LEASE_PERIOD)
    )
    await engine.startup()
    try:
        # The blocked turn's step was a delta: this engine claims it cold and rebuilds its state.
        outcome = await engine.wait(key, timeout=30)
        assert outcome.status == Status.COMPLETED, outcome.error
        assert outcome.state["items"] == list(range(60))
        assert outcome.state["turn"] == 60 and outcome.state["big"] == GROWING_BIG
        history = await engine.history(key)
        assert [step.state.get("items", []) for step in history] == [list(range(n)) for n in range(60)]
        assert await _delta_rows(engine, key) >= 40
    finally:
        await engine.shutdown()


async def test_repeated_sigkills_during_a_delta_chain_apply_every_turn_once(
    fresh_dsn: str, replica_set: ReplicaSet
) -> None:
    markers = replica_set.directory
    turns = 150
    options = ReplicaOptions(
        fresh_dsn,
        "tests.process.workloads:growing_host",
        create="growing",
        extra=["--state", _state(turns, turn_seconds=0.02)],
    )
    replica = replica_set.launch("only", options)
    key = await replica.read_line()
    engine = Engine(host=growing_host(markers), dsn=fresh_dsn, workers=0)
    await engine.startup()
    try:
        rng = random.Random(11)
        for _ in range(4):
            # Kills land wherever the chain is: in a task, in a commit, between steps.
            await asyncio.sleep(rng.uniform(0.4, 1.2))
            if (await engine.snapshot(key)).status != Status.RUNNING:
                break
            await replica_set.restart("only")
        deadline = time.monotonic() + 90
        while (outcome := await engine.snapshot(key)).status == Status.RUNNING:
            assert time.monotonic() < deadline, replica_set.logs()
            await asyncio.sleep(0.1)
        assert outcome.status == Status.COMPLETED, outcome.error
        assert outcome.state["items"] == list(range(turns)), replica_set.logs()
        assert await _delta_rows(engine, key) >= turns // 2
    finally:
        await engine.shutdown()
    executions = sum(len(path.read_text().split()) for path in markers.glob("growing-*.log"))
    print(f"{turns} turns, {replica_set.kills} kills, {executions - turns} re-executions")
    assert replica_set.kills >= 2, "the chain ended before the kills: the test proved nothing"
