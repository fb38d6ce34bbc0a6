"""Replica OS processes for crash tests: launching, killing, pausing and restarting them, with deadlines.

A test owns one ``ReplicaSet`` (the ``replica_set`` fixture), which kills every process it launched when
the test ends, whatever the outcome. A replica runs ``tests.process.replica`` with a workload module (see
that script); each launch gets its own stderr and engine log files in the set's directory so that a
failing test can show what a replica said before it died.
"""

from __future__ import annotations

import asyncio
import os
import random
import signal
import subprocess
import sys
from dataclasses import dataclass, field, replace
from pathlib import Path

from dwarf import Engine, FlowOutcome, Status
from tests.engine.graphs import wait_until

ROOT = Path(__file__).resolve().parents[2]

PROCESS_WAIT = 10.0
"""Seconds a killed or signalled process gets to change state before the test gives up on it."""


async def wait_for_file(path: Path, timeout: float) -> None:
    """Wait until ``path`` exists; TimeoutError naming it after ``timeout`` seconds."""

    async def exists() -> bool:
        return path.exists()

    try:
        await wait_until(exists, timeout, interval=0.02)
    except TimeoutError:
        raise TimeoutError(f"{path} did not appear within {timeout:g}s") from None


async def wait_for_outcome(engine: Engine, flow_key: str, timeout: float) -> FlowOutcome:
    """The outcome once the flow stopped, polling (``Engine.wait`` would hear late of a flow that another
    process ran: without a signal relay between processes it falls back to a slow poll).
    """
    found: list[FlowOutcome] = []

    async def stopped() -> bool:
        found[:] = [await engine.snapshot(flow_key)]
        return found[0].status in {Status.COMPLETED, Status.FAILED, Status.CANCELLED, Status.INTERRUPTED}

    await wait_until(stopped, timeout, interval=0.05)
    return found[0]


async def wait_for_log(replica: Replica, text: str, timeout: float) -> None:
    """Wait until the replica's engine log contains ``text``."""

    async def logged() -> bool:
        return text in replica.log_text()

    try:
        await wait_until(logged, timeout, interval=0.05)
    except TimeoutError:
        raise TimeoutError(f"replica {replica.name} did not log {text!r}: {replica.log_text()}") from None


def is_stopped(pid: int) -> bool:
    """Whether the process is paused by a stop signal (state ``T`` in /proc)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    # The command name in parentheses may contain spaces; the state follows the last ")".
    return stat.rsplit(")", 1)[1].split()[0] in {"T", "t"}


@dataclass
class ReplicaOptions:
    """How to launch one replica; kept so that a killed replica restarts the same way."""

    dsn: str
    workload: str
    workers: int = 4
    # How long a claim holds a step without renewal (the engine default is 10 s; short here so that a
    # killed replica's steps come back quickly).
    lease_period: float = 1.2
    idle_poll: float = 0.1
    create: str = ""
    extra: list[str] = field(default_factory=list)


class Replica:
    """One launched replica process."""

    def __init__(
        self, name: str, options: ReplicaOptions, process: subprocess.Popen[str], stem: Path
    ) -> None:
        self.name = name
        self.options = options
        self.process = process
        self.log = stem.with_name(f"{stem.name}.engine.log")
        self.stderr = stem.with_name(f"{stem.name}.stderr")

    @property
    def pid(self) -> int:
        return self.process.pid

    def alive(self) -> bool:
        return self.process.poll() is None

    async def read_line(self, timeout: float = PROCESS_WAIT) -> str:
        """The next line the replica prints (a created flow's key), stripped; TimeoutError if none comes."""
        assert self.process.stdout is not None, "launch with create=... to read the replica's output"
        async with asyncio.timeout(timeout):
            line = await asyncio.to_thread(self.process.stdout.readline)
        if not line:
            stderr = self.stderr.read_text() if self.stderr.exists() else ""
            raise RuntimeError(f"replica {self.name} exited before printing:\n{stderr}")
        return line.strip()

    async def kill(self) -> None:
        """SIGKILL, as a crash: no cleanup, no lease release. Works on a stopped process too."""
        if self.alive():
            self.process.send_signal(signal.SIGKILL)
        await asyncio.to_thread(self.process.wait, PROCESS_WAIT)

    def resume(self) -> None:
        """SIGCONT: a paused replica (one that stopped itself, see workloads.stalling_host) carries on."""
        self.process.send_signal(signal.SIGCONT)

    def log_text(self) -> str:
        return self.log.read_text() if self.log.exists() else ""


class ReplicaSet:
    """The replica processes of one test; ``close`` kills them all (the fixture calls it on teardown)."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.directory.mkdir(parents=True, exist_ok=True)
        self._replicas: dict[str, Replica] = {}
        self._every: list[Replica] = []
        self.kills = 0
        self.launches = 0

    def launch(self, name: str, options: ReplicaOptions) -> Replica:
        """Start a replica process named ``name`` (replacing the record of a dead one of that name)."""
        old = self._replicas.get(name)
        assert old is None or not old.alive(), f"replica {name} is still running"
        self.launches += 1
        stem = self.directory / f"{name}-{self.launches}"
        command = [
            sys.executable,
            "-m",
            "tests.process.replica",
            "--dsn",
            options.dsn,
            "--markers",
            str(self.directory),
            "--workload",
            options.workload,
            "--workers",
            str(options.workers),
            "--lease-period",
            str(options.lease_period),
            "--idle-poll",
            str(options.idle_poll),
            "--log",
            f"{stem}.engine.log",
            *(["--create", options.create] if options.create else []),
            *options.extra,
        ]
        with open(f"{stem}.stderr", "w") as stderr:
            process = subprocess.Popen(
                command,
                stdout=subprocess.PIPE if options.create else subprocess.DEVNULL,
                stderr=stderr,
                text=True,
                cwd=ROOT,
                env={**os.environ, "PYTHONPATH": str(ROOT)},
            )
        replica = Replica(name, options, process, stem)
        self._replicas[name] = replica
        self._every.append(replica)
        return replica

    def __getitem__(self, name: str) -> Replica:
        return self._replicas[name]

    @property
    def names(self) -> list[str]:
        return list(self._replicas)

    async def kill(self, name: str) -> None:
        await self._replicas[name].kill()
        self.kills += 1

    async def restart(self, name: str) -> Replica:
        """Kill the replica with SIGKILL and launch a fresh process in its place, configured the same.

        The fresh process never creates a flow: a ``create`` option is for the first launch only.
        """
        old = self._replicas[name]
        await self.kill(name)
        return self.launch(name, replace(old.options, create=""))

    def count_in_engine_logs(self, text: str) -> int:
        """How often ``text`` occurs in the engine logs of every launch."""
        return sum(path.read_text().count(text) for path in self.directory.glob("*.engine.log"))

    def logs(self) -> str:
        """Every launch's engine log and stderr, for a failure message."""
        parts = []
        for path in sorted(self.directory.glob("*.engine.log")) + sorted(self.directory.glob("*.stderr")):
            text = path.read_text().strip()
            if text:
                parts.append(f"--- {path.name}\n{text[-3000:]}")
        return "\n".join(parts)

    async def close(self) -> None:
        for replica in self._every:
            if replica.alive():
                replica.process.send_signal(signal.SIGKILL)
        for replica in self._every:
            try:
                await asyncio.to_thread(replica.process.wait, PROCESS_WAIT)
            finally:
                if replica.process.stdout is not None:
                    replica.process.stdout.close()


async def kill_randomly(
    replicas: ReplicaSet,
    rng: random.Random,
    gap: tuple[float, float],
    stop: asyncio.Event,
) -> None:
    """Until ``stop`` is set: every ``gap`` seconds (uniformly random in the range) SIGKILL a random
    replica and start a fresh one in its place.
    """
    while not stop.is_set():
        try:
            async with asyncio.timeout(rng.uniform(*gap)):
                await stop.wait()
            return
        except TimeoutError:
            pass
        await replicas.restart(rng.choice(replicas.names))
