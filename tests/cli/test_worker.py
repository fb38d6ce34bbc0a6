"""`dwarf worker`, ``Engine.serve`` and ``SyncEngine.serve``: running an application's tasks as a service.

- the command line: options, environment variables and their defaults; every bad MODULE:HOST or option
  value is a usage error (exit code 2, one line on stderr); what stops a worker from starting exits 1;
- the health endpoints through the phases: /healthz 200 throughout, /readyz 200 only while ready and the
  shards answer, 503 while starting and draining;
- serving stops on an Event, on a cancellation, and (in a subprocess) on SIGTERM, draining running steps;
- the installed `dwarf worker` in a subprocess on SQLite: ready, runs a flow, SIGTERM, exit 0.

The process test of two workers on one PostgreSQL database is tests/process/test_dwarf_worker.py.
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from dwarf import Engine, SchedulerTuning, Status
from dwarf.cli import worker
from dwarf.cli.worker import WorkerOptions, load_host_reference
from dwarf.engine import settings
from dwarf.engine.serving import Phase, Service
from dwarf.errors import BadRequestError, EngineStateError, StoreError
from dwarf.hosts.local import LocalHost
from dwarf.sync import SyncEngine
from tests.cli import worker_hosts
from tests.cli.conftest import invoke
from tests.cli.test_console_script import SCRIPT, _env
from tests.engine.graphs import WAIT, until, wait_until

ROOT = Path(__file__).resolve().parents[2]
HOSTS = "tests.cli.worker_hosts"
PROCESS_WAIT = 30.0
"""Seconds a worker process gets to start, or to stop after a signal."""


# --- the command line ---


@pytest.fixture
def captured(monkeypatch: pytest.MonkeyPatch) -> list[WorkerOptions]:
    """The options `dwarf worker` hands to ``run_worker``, which is replaced so that nothing runs."""
    seen: list[WorkerOptions] = []
    monkeypatch.setattr(worker, "run_worker", seen.append)
    for name in list(os.environ):
        if name.startswith("DWARF_") and name != "DWARF_TEST_DSN":
            monkeypatch.delenv(name)
    return seen


def test_defaults_are_the_engines(captured: list[WorkerOptions]) -> None:
    result = invoke("worker", f"{HOSTS}:host")
    assert result.exit_code == 0, result.stderr
    assert captured == [WorkerOptions(reference=f"{HOSTS}:host", dsn="sqlite:///dwarf.db")]
    assert worker.DEFAULT_WORKERS == settings.DEFAULT_WORKERS
    assert worker.DEFAULT_DRAIN_TIMEOUT == settings.DEFAULT_DRAIN_TIMEOUT


def test_every_option(captured: list[WorkerOptions]) -> None:
    result = invoke(
        "worker", f"{HOSTS}:build_host",
        "--dsn", "postgresql://app@db.internal/flows_%d", "--shards", "4", "--workers", "16",
        "--relay", "nats", "--nats-url", "nats://a:4222,nats://b:4222", "--health-port", "8081",
        "--health-host", "127.0.0.1", "--drain-timeout", "1m30s", "--log-level", "debug",
    )  # fmt: skip
    assert result.exit_code == 0, result.stderr
    assert captured == [
        WorkerOptions(
            reference=f"{HOSTS}:build_host",
            dsn="postgresql://app@db.internal/flows_%d",
            shards=4,
            workers=16,
            relay=worker.Relay.NATS,
            nats_url="nats://a:4222,nats://b:4222",
            health_port=8081,
            health_host="127.0.0.1",
            drain_timeout=90.0,
            log_level="debug",
        )
    ]


def test_environment_variables_set_the_options(captured: list[WorkerOptions]) -> None:
    env = {
        "DWARF_DSN": "postgresql://app@db/flows",
        "DWARF_WORKERS": "8",
        "DWARF_RELAY": "pg",
        "DWARF_HEALTH_PORT": "9000",
        "DWARF_DRAIN_TIMEOUT": "30",
        "DWARF_LOG_LEVEL": "warning",
    }
    result = invoke("worker", f"{HOSTS}:host", env=env)
    assert result.exit_code == 0, result.stderr
    [options] = captured
    assert (options.dsn, options.workers, options.relay, options.health_port) == (
        "postgresql://app@db/flows", 8, worker.Relay.PG, 9000
    )  # fmt: skip
    assert (options.drain_timeout, options.log_level) == (30.0, "warning")


def _one_error_line(stderr: str) -> str:
    lines = stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), stderr
    return lines[0]


@pytest.mark.parametrize(
    ("args", "named"),
    [
        (["--workers", "0"], "--workers"),
        (["--relay", "kafka"], "--relay"),
        (["--drain-timeout", "soon"], "--drain-timeout"),
        (["--health-port", "70000"], "--health-port"),
        (["--log-level", "loud"], "--log-level"),
        (["--dsn", ""], "--dsn"),
        (["--dsn", "mysql://db/flows"], "--dsn"),
    ],
    ids=lambda value: " ".join(value) if isinstance(value, list) else value,
)
def test_bad_option_values_are_usage_errors(
    captured: list[WorkerOptions], args: list[str], named: str
) -> None:
    result = invoke("worker", f"{HOSTS}:host", *args)
    assert result.exit_code == 2
    assert named in _one_error_line(result.stderr)
    assert captured == []


@pytest.mark.parametrize(
    ("reference", "says"),
    [
        (HOSTS, "is not MODULE:HOST"),
        (":host", "is not MODULE:HOST"),
        (f"{HOSTS}:", "is not MODULE:HOST"),
        ("tests.cli.no_such_module:host", "cannot import 'tests.cli.no_such_module'"),
        (f"{HOSTS}:missing", "has no attribute 'missing'"),
        (f"{HOSTS}:NOT_A_HOST", "is a int, not a host"),
        (f"{HOSTS}:returns_no_host", "is a str, not a host"),
        (f"{HOSTS}:needs_arguments", "needs arguments"),
    ],
)
def test_a_bad_reference_is_one_line_and_exit_code_2(reference: str, says: str, tmp_path: Path) -> None:
    dsn = f"sqlite:///{tmp_path / 'flows.db'}"
    result = invoke("worker", reference, "--dsn", dsn)
    assert result.exit_code == 2
    line = _one_error_line(result.stderr)
    assert "MODULE:HOST" in line and says in line, line
    assert result.stdout == ""
    assert not (tmp_path / "flows.db").exists()


def test_the_installed_command_reports_a_bad_reference_the_same_way(tmp_path: Path) -> None:
    result = subprocess.run(
        [str(SCRIPT), "worker", "tests.cli.no_such_module:host", "--dsn", f"sqlite:///{tmp_path / 'f.db'}"],
        cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=PROCESS_WAIT,
    )  # fmt: skip
    assert (result.returncode, result.stdout) == (2, "")
    assert "cannot import 'tests.cli.no_such_module'" in _one_error_line(result.stderr)


def test_a_pg_relay_needs_a_postgresql_database(tmp_path: Path) -> None:
    result = invoke("worker", f"{HOSTS}:host", "--relay", "pg", "--dsn", f"sqlite:///{tmp_path / 'f.db'}")
    assert result.exit_code == 2
    assert "--relay" in _one_error_line(result.stderr)
    assert not (tmp_path / "f.db").exists()


def test_a_host_is_an_object_a_function_or_a_class_returning_one() -> None:
    assert load_host_reference(f"{HOSTS}:host") is worker_hosts.host
    built = load_host_reference(f"{HOSTS}:build_host")
    assert isinstance(built, LocalHost) and built is not worker_hosts.host
    assert isinstance(load_host_reference(f"{HOSTS}:GreetingHost"), worker_hosts.GreetingHost)


def test_an_unreachable_database_exits_1() -> None:
    result = invoke("worker", f"{HOSTS}:host", "--dsn", "postgresql://postgres:pw@127.0.0.1:1/flows")
    assert result.exit_code == 1
    line = _one_error_line(result.stderr)
    assert "127.0.0.1:1" in line and "pw" not in line


def test_a_health_port_in_use_exits_1(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = invoke(
            "worker", f"{HOSTS}:host", "--dsn", f"sqlite:///{tmp_path / 'f.db'}",
            "--health-host", "127.0.0.1", "--health-port", str(port),
        )  # fmt: skip
    assert result.exit_code == 1
    assert f"cannot listen for health checks on 127.0.0.1:{port}" in _one_error_line(result.stderr)


# --- the health endpoints ---


async def http(port: int, request: str = "GET /readyz HTTP/1.1") -> tuple[int, str]:
    """Send one request to the health server; the status code and the body."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(f"{request}\r\nHost: probe\r\nUser-Agent: test\r\n\r\n".encode())
        await writer.drain()
        answer = (await asyncio.wait_for(reader.read(), WAIT)).decode()
    finally:
        writer.close()
    head, _, body = answer.partition("\r\n\r\n")
    return int(head.split()[1]), body


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _engine(tmp_path: Path, host: object, **settings: object) -> Engine:
    return Engine(host=host, dsn=f"sqlite:///{tmp_path / 'flows.db'}", workers=2, **settings)  # type: ignore[arg-type]


async def _outcome_elsewhere(tmp_path: Path, flow_key: str) -> tuple[str, dict[str, object]]:
    """The flow's status and state, read by an operations-only engine once the served one stopped."""
    async with Engine(dsn=f"sqlite:///{tmp_path / 'flows.db'}", workers=0) as reader:
        outcome = await reader.snapshot(flow_key)
    return outcome.status, outcome.state


async def test_readyz_follows_the_phases_and_healthz_answers_throughout(tmp_path: Path) -> None:
    host = worker_hosts.SlowStartHost()
    # The claimer polls rarely, so that a shard marked unreachable below stays so until the test looks.
    engine = _engine(tmp_path, host, scheduler_tuning=SchedulerTuning(idle_poll=30))
    service = Service(engine, health_port=0, health_host="127.0.0.1", handle_signals=False)
    assert service.health is not None
    running = asyncio.create_task(service.run())
    try:
        await until(lambda: service.health is not None and service.health.port != 0)
        port = service.health.port
        assert await http(port, "GET /healthz HTTP/1.1") == (200, "alive\n")
        assert await http(port) == (503, "starting\n")

        host.release.set()
        await until(lambda: service.phase == Phase.READY)
        assert await http(port) == (200, "ready\n")
        assert await http(port, "GET /readyz?verbose=1 HTTP/1.0") == (200, "ready\n")
        assert await http(port, "HEAD /readyz HTTP/1.1") == (200, "")

        store = engine.runtime.stores[0]
        # A claim that succeeds marks the shard healthy again; one may land between the flag and the
        # request (a doorbell at startup), so the flag is set again before each of a few requests.
        answers = []
        for _ in range(5):
            store.healthy = False
            answers.append(await http(port))
            if answers[-1][0] == 503:
                break
        assert answers[-1] == (503, "shard 1 unreachable\n"), answers
        assert await http(port, "GET /healthz HTTP/1.1") == (200, "alive\n")
        store.healthy = True

        assert (await http(port, "GET /metrics HTTP/1.1"))[0] == 404
        assert (await http(port, "POST /readyz HTTP/1.1"))[0] == 405
        assert (await http(port, "nonsense"))[0] == 400

        key = await engine.create("greet", {"pause": 0.5})
        await until(lambda: engine.busy_workers == 1)
        service.request_stop("the test")
        await until(lambda: service.phase == Phase.DRAINING)
        assert await http(port) == (503, "draining\n")
        assert await http(port, "GET /healthz HTTP/1.1") == (200, "alive\n")
        await asyncio.wait_for(running, WAIT)
    finally:
        host.release.set()
        service.request_stop()
        await asyncio.wait_for(running, WAIT)
    assert service.phase == Phase.STOPPED
    with pytest.raises(OSError):
        await http(port)
    status, state = await _outcome_elsewhere(tmp_path, key)
    assert status == Status.COMPLETED and state["greeting"] == "hello, you"


async def test_a_client_that_sends_nothing_does_not_hold_the_server(tmp_path: Path) -> None:
    service = Service(_engine(tmp_path, worker_hosts.build_host()), health_port=0, health_host="127.0.0.1")
    running = asyncio.create_task(service.run())
    try:
        await until(lambda: service.phase == Phase.READY)
        assert service.health is not None
        _, silent = await asyncio.open_connection("127.0.0.1", service.health.port)
        assert await http(service.health.port) == (200, "ready\n")
        silent.close()
    finally:
        service.request_stop()
        await asyncio.wait_for(running, WAIT)


# --- Engine.serve and SyncEngine.serve ---


def _phases(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [record.getMessage() for record in caplog.records if record.name == "dwarf.worker"]


async def test_serve_runs_flows_until_the_event_is_set(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="dwarf.worker")
    before = signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)
    engine = _engine(tmp_path, worker_hosts.build_host())
    stop = asyncio.Event()
    serving = asyncio.create_task(engine.serve(stop, drain_timeout=3))

    async def started() -> bool:
        try:
            engine.runtime  # noqa: B018
        except EngineStateError:
            return False
        return True

    await wait_until(started)
    _, outcome = await engine.run("greet", {"name": "Ada"}, timeout=WAIT)
    assert outcome.state["greeting"] == "hello, Ada"
    assert not serving.done()
    stop.set()
    await asyncio.wait_for(serving, WAIT)
    with pytest.raises(EngineStateError):
        engine.runtime  # noqa: B018
    assert (signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)) == before
    phases = _phases(caplog)
    assert [line.split(":")[0] for line in phases] == ["starting", "ready", "draining", "stopped"]
    assert phases[0] == "starting: 2 workers, 1 shard"
    assert phases[2].startswith("draining: stop requested; 0 running steps get up to 3 s")


async def test_a_drain_ends_after_its_timeout_and_hands_the_step_back(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="dwarf.worker")
    blocking = worker_hosts.Blocking()
    engine = _engine(tmp_path, blocking.host)
    stop = asyncio.Event()
    serving = asyncio.create_task(engine.serve(stop, drain_timeout=0.3, handle_signals=False))
    try:
        await until(lambda: any(line.startswith("ready") for line in _phases(caplog)))
        key = await engine.create("greet")
        await asyncio.wait_for(blocking.started.wait(), WAIT)
        began = time.monotonic()
        stop.set()
        await asyncio.wait_for(serving, WAIT)
        assert time.monotonic() - began < 3.0
    finally:
        blocking.release.set()
        stop.set()
        await asyncio.wait_for(serving, WAIT)
    assert any("1 running step get up to 0.3 s" in line for line in _phases(caplog))
    status, _ = await _outcome_elsewhere(tmp_path, key)
    assert status == Status.RUNNING  # handed back for another worker, not failed


async def test_cancelling_serve_drains_first(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="dwarf.worker")
    engine = _engine(tmp_path, worker_hosts.build_host())
    serving = asyncio.create_task(engine.serve(handle_signals=False))
    await until(lambda: any(line.startswith("ready") for line in _phases(caplog)))
    serving.cancel()
    with pytest.raises(asyncio.CancelledError):
        await serving
    with pytest.raises(EngineStateError):
        engine.runtime  # noqa: B018
    assert any(line.startswith("draining: cancelled") for line in _phases(caplog))
    assert _phases(caplog)[-1].startswith("stopped")


async def test_serve_refuses_unknown_options_and_bad_ports_before_starting(tmp_path: Path) -> None:
    engine = _engine(tmp_path, worker_hosts.build_host())
    with pytest.raises(TypeError, match="'drain'"):
        await engine.serve(drain=3)  # type: ignore[call-arg]
    for port in (-1, 65536, True, "80"):
        with pytest.raises(BadRequestError, match="health port"):
            await engine.serve(health_port=port)  # type: ignore[arg-type]
    assert not (tmp_path / "flows.db").exists()


async def test_a_failed_start_is_logged_as_stopped_and_raised(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="dwarf.worker")
    engine = Engine(host=worker_hosts.build_host(), dsn="postgresql://postgres@127.0.0.1:1/flows")
    with pytest.raises(StoreError, match=r"127\.0\.0\.1:1"):
        await engine.serve(handle_signals=False)
    assert _phases(caplog) == ["starting: 64 workers, 1 shard", "stopped: the engine did not start"]


def test_sync_serve_runs_until_the_event_is_set(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="dwarf.worker")
    before = signal.getsignal(signal.SIGTERM)
    engine = SyncEngine(host=worker_hosts.build_host(), dsn=f"sqlite:///{tmp_path / 'flows.db'}", workers=2)
    stop = threading.Event()
    outcomes: list[object] = []

    port = _free_port()

    def client() -> None:
        deadline = time.monotonic() + WAIT
        while time.monotonic() < deadline:
            try:
                outcomes.append(engine.run("greet", {"name": "Grace"}, timeout=WAIT)[1].state["greeting"])
                break
            except EngineStateError:  # not started yet
                time.sleep(0.02)
        outcomes.append(asyncio.run(http(port)))
        stop.set()

    thread = threading.Thread(target=client)
    thread.start()
    engine.serve(stop, drain_timeout=2, health_port=port, health_host="127.0.0.1")
    thread.join(WAIT)
    assert outcomes == ["hello, Grace", (200, "ready\n")]
    with pytest.raises(EngineStateError):
        engine.snapshot("1-1-AAAAAAAAAAAAAAAA")
    assert signal.getsignal(signal.SIGTERM) == before
    assert [line.split(":")[0] for line in _phases(caplog)] == ["starting", "ready", "draining", "stopped"]


SERVE_SCRIPT = """
import asyncio, logging, sys
from dwarf import Engine
from dwarf.sync import SyncEngine
from tests.cli.worker_hosts import build_host

logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(name)s: %(message)s")
flavour, dsn = sys.argv[1], sys.argv[2]
if flavour == "async":
    asyncio.run(Engine(host=build_host(), dsn=dsn, workers=2).serve(drain_timeout=5))
else:
    SyncEngine(host=build_host(), dsn=dsn, workers=2).serve(drain_timeout=5)
print("served", flush=True)
"""


async def _read_until(stream: asyncio.StreamReader, pattern: str, seen: list[str]) -> re.Match[str]:
    """Lines of ``stream`` (kept in ``seen``) until one matches ``pattern``."""
    async with asyncio.timeout(PROCESS_WAIT):
        while True:
            line = (await stream.readline()).decode()
            if not line:
                raise AssertionError(f"the process ended before {pattern!r}:\n{''.join(seen)}")
            seen.append(line)
            if found := re.search(pattern, line):
                return found


async def _running_step(dsn: str, key: str) -> None:
    """Wait until the flow's first step runs (another process claimed it)."""
    async with Engine(dsn=dsn, workers=0) as reader:

        async def claimed() -> bool:
            return (await reader.history(key))[0].status == Status.RUNNING

        await wait_until(claimed, PROCESS_WAIT, interval=0.05)


async def _create(dsn: str, state: dict[str, object]) -> str:
    async with Engine(host=worker_hosts.build_host(), dsn=dsn, workers=0) as creator:
        return await creator.create("greet", state)


@pytest.mark.parametrize("flavour", ["async", "sync"])
async def test_serve_drains_and_returns_on_sigterm_in_a_process(flavour: str, tmp_path: Path) -> None:
    dsn = f"sqlite:///{tmp_path / 'flows.db'}"
    script = tmp_path / "serve.py"
    script.write_text(SERVE_SCRIPT)
    process = await asyncio.create_subprocess_exec(
        sys.executable, str(script), flavour, dsn, cwd=tmp_path,
        env={**_env(), "PYTHONPATH": str(ROOT)}, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip
    seen: list[str] = []
    try:
        assert process.stderr is not None and process.stdout is not None
        await _read_until(process.stderr, r"dwarf.worker: ready", seen)
        key = await _create(dsn, {"pause": 1.0})
        await _running_step(dsn, key)
        process.send_signal(signal.SIGTERM)
        await _read_until(process.stderr, r"draining: SIGTERM; 1 running step get up to 5 s", seen)
        await _read_until(process.stderr, r"dwarf.worker: stopped", seen)
        assert await asyncio.wait_for(process.wait(), PROCESS_WAIT) == 0
        assert (await process.stdout.read()).decode() == "served\n"
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    async with Engine(dsn=dsn, workers=0) as reader:
        outcome = await reader.snapshot(key)
    assert outcome.status == Status.COMPLETED  # the running step finished during the drain
    assert outcome.state["pid"] == process.pid


async def test_the_installed_worker_serves_until_sigterm_and_exits_0(tmp_path: Path) -> None:
    dsn = f"sqlite:///{tmp_path / 'flows.db'}"
    process = await asyncio.create_subprocess_exec(
        str(SCRIPT), "worker", f"{HOSTS}:host", "--dsn", dsn, "--workers", "2", "--health-port", "0",
        "--health-host", "127.0.0.1", "--drain-timeout", "5s",
        cwd=ROOT, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip
    seen: list[str] = []
    try:
        assert process.stderr is not None and process.stdout is not None
        ready = await _read_until(
            process.stderr, r"ready: claiming steps \(health checks on port (\d+)\)", seen
        )
        port = int(ready.group(1))
        assert await http(port) == (200, "ready\n")
        key = await _create(dsn, {"name": "Ada"})
        async with Engine(dsn=dsn, workers=0) as reader:

            async def completed() -> bool:
                return (await reader.snapshot(key)).status == Status.COMPLETED

            await wait_until(completed, PROCESS_WAIT, interval=0.05)
            assert (await reader.snapshot(key)).state == {
                "name": "Ada",
                "pid": process.pid,
                "greeting": "hello, Ada",
            }
        process.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(process.wait(), PROCESS_WAIT) == 0
        seen += (await process.stderr.read()).decode().splitlines(keepends=True)
        assert (await process.stdout.read()) == b""
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    phases = [line.split("dwarf.worker: ", 1)[1].split(":")[0] for line in seen if "dwarf.worker: " in line]
    assert phases == ["starting", "ready", "draining", "stopped"], "".join(seen)
    assert all(re.match(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} INFO dwarf\.worker: ", line) for line in seen)
