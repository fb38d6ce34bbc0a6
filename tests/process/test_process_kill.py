"""A replica killed with SIGKILL in the middle of a step loses nothing and applies nothing twice.

The replica runs in its own OS process. After the kill, a fresh engine on the same database recovers
the step once its lease expires and completes the flow; the state shows each task's effect exactly once.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from dwarf import Engine
from tests.process.replica import LEASE_MARGIN, build_host

ROOT = Path(__file__).resolve().parents[2]


async def _wait_for_file(path: Path, timeout: float) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not path.exists():
        if loop.time() > deadline:
            raise TimeoutError(f"{path} did not appear")
        await asyncio.sleep(0.05)


async def _kill_replica_mid_step(dsn: str, markers: Path) -> str:
    """Start a replica process that creates a flow, SIGKILL it while task B runs; return the flow key."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    replica = subprocess.Popen(
        [sys.executable, "-m", "tests.process.replica", dsn, str(markers), "create"],
        stdout=subprocess.PIPE,
        text=True,
        cwd=ROOT,
        env=env,
    )
    try:
        assert replica.stdout is not None
        key = (await asyncio.to_thread(replica.stdout.readline)).strip()
        assert key, "the replica printed no flow key"
        await _wait_for_file(markers / "b-started", 30)
        replica.send_signal(signal.SIGKILL)
        await asyncio.to_thread(replica.wait, 10)
    finally:
        if replica.poll() is None:
            replica.kill()
            replica.wait()
    return key


async def test_sigkill_mid_step_recovers_with_one_execution(fresh_dsn: str, tmp_path: Path) -> None:
    key = await _kill_replica_mid_step(fresh_dsn, tmp_path)

    (tmp_path / "b-fast").write_text("")
    engine = Engine(host=build_host(tmp_path), dsn=fresh_dsn)
    await engine.startup()
    try:
        assert engine._scheduler is not None
        engine._scheduler.lease_margin = LEASE_MARGIN
        outcome = await engine.wait(key, timeout=30)
        assert outcome.status == "completed"
        assert outcome.state == {"aRuns": 1, "bRuns": 1, "cRuns": 1}
        steps = await engine.history(key)
        assert [step.task_name for step in steps] == ["A", "B", "C"]
        assert all(step.status == "completed" for step in steps)
    finally:
        await engine.shutdown()


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
async def test_sqlite_file_survives_sigkill_of_its_only_replica(fresh_dsn: str, tmp_path: Path) -> None:
    key = await _kill_replica_mid_step(fresh_dsn, tmp_path)
    # The database file (with its WAL) opens cleanly and still knows the flow.
    engine = Engine(host=build_host(tmp_path), dsn=fresh_dsn, workers=1)
    await engine.startup()
    try:
        snapshot = await engine.snapshot(key)
        assert snapshot.status == "running"
        assert snapshot.state.get("aRuns") == 1
    finally:
        await engine.shutdown(drain_timeout=0)
