"""Two `dwarf worker` processes on one PostgreSQL database share the flows; SIGTERM drains one of them.

The workers serve ``tests.process.worker_app:host`` with two workers each and the PostgreSQL signal relay;
the test creates flows from its own operations-only engine. Once both processes have run steps, one of
them gets SIGTERM while it is in the middle of a step: it must finish that step (no step runs twice),
exit 0 within its drain timeout, and the other must finish every flow.
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
import time
from collections import Counter
from pathlib import Path

import pytest

from dwarf import Engine, Status
from dwarf.hosts.pgnotify import PgNotifyRelay
from dwarf.hosts.relay import RelayHost
from tests.cli.test_console_script import SCRIPT, _env
from tests.engine.graphs import wait_until
from tests.process import worker_app

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
FLOWS = 20
DRAIN_TIMEOUT = 5.0
EXIT_MARGIN = 3.0
"""Seconds beyond the drain timeout a drained worker may take to exit (closing pools and the relay)."""
DEADLINE = 90.0


class Worker:
    """One `dwarf worker` process, its stderr in a file."""

    def __init__(self, name: str, dsn: str, directory: Path, markers: Path) -> None:
        self.name = name
        self.stderr_path = directory / f"{name}.stderr"
        with open(self.stderr_path, "w") as stderr:
            self.process = subprocess.Popen(
                [
                    str(SCRIPT), "worker", "tests.process.worker_app:host", "--dsn", dsn, "--workers", "2",
                    "--relay", "pg", "--health-port", "0", "--health-host", "127.0.0.1",
                    "--drain-timeout", str(DRAIN_TIMEOUT),
                ],
                cwd=ROOT, env={**_env(), worker_app.MARKERS_ENV: str(markers)},
                stdout=subprocess.DEVNULL, stderr=stderr, text=True,
            )  # fmt: skip
        self.markers = markers / f"{self.process.pid}.log"

    @property
    def pid(self) -> int:
        return self.process.pid

    def stderr(self) -> str:
        return self.stderr_path.read_text()

    def marks(self) -> list[str]:
        return self.markers.read_text().splitlines() if self.markers.exists() else []

    def mid_step(self) -> bool:
        """Whether a step of this worker started and has not ended."""
        counts = Counter(line.rsplit(" ", 1)[0] for line in self.marks())
        return any(count == 1 for count in counts.values())

    async def ready(self) -> None:
        """Wait for the ready line, then for /readyz to answer 200."""

        async def logged() -> bool:
            assert self.process.poll() is None, f"worker {self.name} exited:\n{self.stderr()}"
            return "dwarf.worker: ready" in self.stderr()

        await wait_until(logged, 30, interval=0.05)
        port = int(re.findall(r"health checks on port (\d+)", self.stderr())[0])
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET /readyz HTTP/1.1\r\nHost: probe\r\n\r\n")
        answer = await asyncio.wait_for(reader.read(), 10)
        writer.close()
        assert answer.startswith(b"HTTP/1.1 200 OK") and answer.endswith(b"ready\n"), answer

    async def exit_code(self, timeout: float) -> int:
        return await asyncio.to_thread(self.process.wait, timeout)

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)


@pytest.mark.parametrize("backend", ["postgres"], indirect=True)
async def test_two_workers_share_the_flows_and_one_drains_on_sigterm(fresh_dsn: str, tmp_path: Path) -> None:
    markers = tmp_path / "markers"
    markers.mkdir()
    workers = [Worker(name, fresh_dsn, tmp_path, markers) for name in ("a", "b")]
    first, second = workers
    try:
        for worker in workers:
            await worker.ready()
        host = RelayHost(worker_app.host, PgNotifyRelay(fresh_dsn))
        async with Engine(host=host, dsn=fresh_dsn, workers=0) as engine:
            keys = [await engine.create("relay", {"n": n}) for n in range(FLOWS)]

            async def both_busy_and_first_mid_step() -> bool:
                return all(worker.marks() for worker in workers) and first.mid_step()

            await wait_until(both_busy_and_first_mid_step, 30, interval=0.005)
            first.process.send_signal(signal.SIGTERM)
            signalled = time.monotonic()
            stopped = [(await engine.snapshot(key)).status for key in keys].count(Status.COMPLETED)
            assert stopped < FLOWS, "every flow had finished before the SIGTERM"

            assert await first.exit_code(DRAIN_TIMEOUT + EXIT_MARGIN) == 0, first.stderr()
            assert time.monotonic() - signalled < DRAIN_TIMEOUT + EXIT_MARGIN
            drained = re.findall(r"draining: SIGTERM; (\d+) running steps? get up to 5 s", first.stderr())
            assert drained and int(drained[0]) >= 1, first.stderr()
            assert "dwarf.worker: stopped" in first.stderr()
            assert second.process.poll() is None, second.stderr()

            async def all_completed() -> bool:
                statuses = [(await engine.snapshot(key)).status for key in keys]
                assert Status.FAILED not in statuses
                return statuses.count(Status.COMPLETED) == FLOWS

            await wait_until(all_completed, DEADLINE, interval=0.2)
            states = [(await engine.snapshot(key)).state for key in keys]

        pids = {state[f"{task}_pid"] for state in states for task in worker_app.TASKS}
        assert pids == {first.pid, second.pid}
        # A clean drain hands nothing back: the steps the SIGTERMed worker was running ended there, so
        # every step ran once, and each started step ended in the process that started it.
        executions = Counter(line for worker in workers for line in worker.marks())
        expected = {
            f"{n} {task} {event}"
            for n in range(FLOWS)
            for task in worker_app.TASKS
            for event in ("start", "end")
        }
        assert set(executions) == expected
        assert max(executions.values()) == 1
        for worker in workers:
            assert not worker.mid_step(), worker.name

        second.process.send_signal(signal.SIGTERM)
        assert await second.exit_code(DRAIN_TIMEOUT + EXIT_MARGIN) == 0, second.stderr()
    finally:
        for worker in workers:
            worker.kill()
    for worker in workers:
        phases = re.findall(r"dwarf\.worker: (\w+)", worker.stderr())
        assert phases == ["starting", "ready", "draining", "stopped"], worker.stderr()
        assert os.path.getsize(worker.stderr_path) < 10_000  # phase lines, no flood of engine records
