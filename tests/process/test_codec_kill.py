"""SIGKILL while steps write encoded state (docs/codecs.md): replicas whose values are compressed and
encrypted are killed at random points of a chain whose states are stored as deltas, one of them after a
key rotation; a new engine with the same keys finishes the flow, every step ran exactly once in the
state, every history reads, and the database holds no plaintext of the flow's secret."""

from __future__ import annotations

import asyncio
import json
import random

import pytest

from dwarf import Engine, SchedulerTuning, Status
from tests.engine.test_codecs import raw_text
from tests.process.harness import ReplicaOptions, ReplicaSet
from tests.process.workloads import GROWING_BIG, codec_rotated, growing_host

pytestmark = pytest.mark.slow

SECRET = "SSN-987-65-4321"


async def test_sigkills_while_steps_write_encoded_state_lose_nothing(
    fresh_dsn: str, replica_set: ReplicaSet
) -> None:
    markers = replica_set.directory
    turns = 120
    state = {"turn": 0, "target": turns, "blockAt": -1, "turnSeconds": 0.02, "owner": SECRET}
    first_key = ReplicaOptions(
        fresh_dsn,
        "tests.process.workloads:growing_host",
        create="growing",
        extra=["--state", json.dumps(state), "--codec", "tests.process.workloads:codec_first_key"],
    )
    replica = replica_set.launch("only", first_key)
    key = await replica.read_line()
    rotated = ReplicaOptions(
        fresh_dsn,
        "tests.process.workloads:growing_host",
        extra=["--codec", "tests.process.workloads:codec_rotated"],
    )
    observer = Engine(host=growing_host(markers), dsn=fresh_dsn, workers=0, codec=codec_rotated(markers))
    await observer.startup()
    try:
        rng = random.Random(5)
        for kill in range(4):
            # Kills land wherever the chain is: in a task, in an encoding commit, between steps.
            await asyncio.sleep(rng.uniform(0.4, 0.9))
            assert (await observer.snapshot(key)).status == Status.RUNNING, "the flow ended before the kills"
            if kill < 2:
                await replica_set.restart("only")
            else:
                # From the third life on, replicas encrypt with the rotated key (k1 still decrypts).
                await replica_set.kill("only")
                replica_set.launch("only", rotated)
        await asyncio.sleep(rng.uniform(0.4, 0.9))
        assert (await observer.snapshot(key)).status == Status.RUNNING, "the flow ended before the last kill"
        await replica_set.kill("only")
    finally:
        await observer.shutdown()

    # A new engine with the same keys finishes the flow and reads everything back.
    engine = Engine(
        host=growing_host(markers),
        dsn=fresh_dsn,
        codec=codec_rotated(markers),
        scheduler_tuning=SchedulerTuning(lease_period=1.2),
    )
    await engine.startup()
    try:
        outcome = await engine.wait(key, timeout=60)
        assert outcome.status == Status.COMPLETED, f"{outcome.error}\n{replica_set.logs()}"
        assert outcome.state["items"] == list(range(turns)), replica_set.logs()
        assert outcome.state["owner"] == SECRET and outcome.state["big"] == GROWING_BIG
        history = await engine.history(key)
        assert [step.state.get("items", []) for step in history] == [list(range(n)) for n in range(turns)]
        stored = await raw_text(engine)
        assert SECRET not in stored and GROWING_BIG[:50] not in stored
        assert "aesgcm.k1:" in stored and "aesgcm.k2:" in stored
        assert (await engine.reencode()).unreadable == 0
        assert "aesgcm.k1:" not in await raw_text(engine)
    finally:
        await engine.shutdown()
    assert replica_set.kills >= 5
