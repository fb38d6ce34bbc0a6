"""SyncEngine: the blocking facade runs the engine on a loop in its own thread, offers every operation
under the same name and signature, keeps exception types, serves many threads at once, and refuses calls
from a running event loop instead of deadlocking."""

from __future__ import annotations

import asyncio
import inspect
import os
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import pytest

from dwarf import (
    EngineStateError,
    Flow,
    NotFoundError,
    Query,
    Status,
    StoreError,
)
from dwarf.engine import Engine
from dwarf.hosts.local import LocalHost
from dwarf.sync import SyncEngine
from dwarf.testing import test_name_for as isolated_name
from tests.engine.graphs import WAIT, chain, record_signals, until

SyncMaker = Callable[..., SyncEngine]

OPERATIONS = [
    "create",
    "wait",
    "run",
    "snapshot",
    "history",
    "history_mermaid",
    "step",
    "list",
    "resume",
    "cancel",
    "continue_thread",
    "fork",
    "delete",
    "purge",
    "fingerprint",
    "shard_info",
    "deliver_signal",
    "set_max_open_conns",
    "set_workers_per_conn",
    "set_time_budget",
    "set_default_priority",
    "schedule",
    "get_schedule",
    "list_schedules",
    "pause_schedule",
    "resume_schedule",
    "delete_schedule",
]


@contextmanager
def sync_engines(dsn: str, test_name: str) -> Iterator[SyncMaker]:
    """Build SyncEngines on the isolated databases of ``test_name``; shut them down on exit."""
    engines: list[SyncEngine] = []

    def make(host: Any, *, start: bool = True, **settings: Any) -> SyncEngine:
        engine = SyncEngine(host=host, dsn=dsn, in_test=test_name, **settings)
        engines.append(engine)
        if start:
            engine.startup()
        return engine

    try:
        yield make
    finally:
        for engine in reversed(engines):
            engine.shutdown(drain_timeout=1.0)


@pytest.fixture
def make_sync(backend: str, request: pytest.FixtureRequest) -> Iterator[SyncMaker]:
    """SyncEngines on this test's databases of ``backend``."""
    dsn = os.environ.get("DWARF_TEST_DSN", "") if backend == "postgres" else "sqlite://:memory:"
    with sync_engines(dsn, isolated_name(request.node.nodeid)) as make:
        yield make


@pytest.fixture
def sqlite_sync(request: pytest.FixtureRequest) -> Iterator[SyncMaker]:
    """SyncEngines on SQLite only, for tests whose subject is the facade rather than the database."""
    with sync_engines("sqlite://:memory:", isolated_name(request.node.nodeid)) as make:
        yield make


def counting_host() -> LocalHost:
    """``count``: A then B, each adding 1 to ``n``; ``ask``: one step that interrupts for an answer."""
    host = LocalHost()
    host.add_workflow("count", chain("Count", "A", "B"))
    host.add_task("A", lambda flow: flow.set("n", flow.get_int("n") + 1))
    host.add_task("B", lambda flow: flow.set("n", flow.get_int("n") + 1))
    host.add_workflow("ask", chain("Ask", "Ask"))

    @host.task("Ask")
    def ask(flow: Flow) -> None:
        flow.set("answer", flow.interrupt({"question": "go?"})["answer"])

    return host


# --- the surface ---


@pytest.mark.parametrize("name", OPERATIONS)
def test_every_operation_has_a_blocking_twin_with_the_same_parameters(name: str) -> None:
    blocking = inspect.signature(getattr(SyncEngine, name)).parameters
    original = inspect.signature(getattr(Engine, name)).parameters
    assert [(p.name, p.kind, p.default) for p in blocking.values()] == [
        (p.name, p.kind, p.default) for p in original.values()
    ]
    assert not inspect.iscoroutinefunction(getattr(SyncEngine, name))


def test_an_unknown_setting_is_refused_at_construction() -> None:
    with pytest.raises(TypeError, match="colour"):
        SyncEngine(colour="blue")


# --- operations ---


def test_run_returns_the_key_and_the_outcome(make_sync: SyncMaker) -> None:
    engine = make_sync(counting_host())
    key, outcome = engine.run("count", {"n": 40}, timeout=WAIT)
    assert outcome.status == Status.COMPLETED
    assert outcome.state == {"n": 42}
    assert engine.snapshot(key) == outcome


def test_create_then_wait(make_sync: SyncMaker) -> None:
    engine = make_sync(counting_host())
    key = engine.create("count")
    assert engine.wait(key, timeout=WAIT).state == {"n": 2}
    assert [step.task_name for step in engine.history(key)] == ["A", "B"]


def test_interrupt_and_resume(make_sync: SyncMaker) -> None:
    engine = make_sync(counting_host())
    key, parked = engine.run("ask", timeout=WAIT)
    assert (parked.status, parked.interrupt_payload) == (Status.INTERRUPTED, {"question": "go?"})
    engine.resume(key, {"answer": "yes"})
    assert engine.wait(key, timeout=WAIT).state == {"answer": "yes"}


def test_exceptions_keep_their_types(make_sync: SyncMaker) -> None:
    engine = make_sync(counting_host())
    with pytest.raises(NotFoundError):
        engine.create("no-such-workflow")
    with pytest.raises(NotFoundError):
        engine.snapshot("1-999-nope")


def test_a_run_that_times_out_raises_timeout_error_with_the_flow_key(sqlite_sync: SyncMaker) -> None:
    engine = sqlite_sync(counting_host())
    with pytest.raises(TimeoutError) as raised:
        engine.run("ask", timeout=0.0)
    key = raised.value.flow_key  # type: ignore[attr-defined]
    assert engine.wait(key, timeout=WAIT).status == Status.INTERRUPTED


def test_operations_on_stopped_flows_list_fork_cancel_delete_purge(sqlite_sync: SyncMaker) -> None:
    engine = sqlite_sync(counting_host())
    done, _ = engine.run("count", timeout=WAIT)
    parked, _ = engine.run("ask", timeout=WAIT)
    page, cursor = engine.list(Query(status="completed"))
    assert ([summary.flow_key for summary in page], cursor) == ([done], "")
    b_step = engine.history(done)[1]
    assert engine.step(b_step.step_key).task_name == "B"
    forked = engine.fork(b_step.step_key, {"n": 100})
    assert engine.wait(forked, timeout=WAIT).state == {"n": 101}
    engine.cancel(parked, "changed my mind")
    assert engine.snapshot(parked).cancel_reason == "changed my mind"
    engine.delete(done)
    with pytest.raises(NotFoundError):
        engine.snapshot(done)
    assert engine.purge(Query(status="cancelled")) == 1


def test_threads_fingerprints_mermaid_and_shard_info(sqlite_sync: SyncMaker) -> None:
    engine = sqlite_sync(counting_host())
    first, _ = engine.run("count", timeout=WAIT)
    thread_key = engine.list()[0][0].thread_key
    second = engine.continue_thread(thread_key, {"n": 10})
    assert engine.wait(second, timeout=WAIT).state == {"n": 12}
    assert engine.fingerprint(first)[1] == "completed"
    assert engine.history_mermaid(first).startswith("flowchart")
    assert [shard.error for shard in engine.shard_info()] == [""]


def test_schedules_through_the_blocking_twins(sqlite_sync: SyncMaker) -> None:
    engine = sqlite_sync(counting_host(), workers=0)
    created = engine.schedule("hourly", "count", cron="@hourly", state={"n": 10})
    assert created.timing == "cron @hourly (UTC)" and created.state == {"n": 10}
    engine.pause_schedule("hourly")
    assert engine.get_schedule("hourly").paused
    engine.resume_schedule("hourly")
    assert [schedule.name for schedule in engine.list_schedules()] == ["hourly"]
    engine.delete_schedule("hourly")
    with pytest.raises(NotFoundError):
        engine.get_schedule("hourly")


def test_live_settings_apply_before_and_after_startup(sqlite_sync: SyncMaker) -> None:
    engine = sqlite_sync(counting_host(), start=False)
    engine.set_time_budget(5)
    engine.startup()
    engine.set_max_open_conns(2)
    engine.set_default_priority(7)
    engine.run("count", timeout=WAIT)
    assert engine.list()[0][0].priority == 7


# --- threads and event loops ---


def test_eight_threads_can_use_one_engine_at_once(make_sync: SyncMaker) -> None:
    engine = make_sync(counting_host())
    barrier = threading.Barrier(8, timeout=WAIT)
    results: list[tuple[str, Any]] = []
    errors: list[BaseException] = []

    def client(n: int) -> None:
        try:
            barrier.wait()
            key, outcome = engine.run("count", {"n": n * 10}, timeout=WAIT)
            results.append((key, outcome.state["n"]))
        except BaseException as error:
            errors.append(error)

    threads = [threading.Thread(target=client, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(WAIT * 2)
    assert errors == []
    assert sorted(n for _, n in results) == [n * 10 + 2 for n in range(8)]
    assert len({key for key, _ in results}) == 8


def test_a_call_from_a_running_event_loop_is_refused(sqlite_sync: SyncMaker) -> None:
    engine = sqlite_sync(counting_host())

    async def inside_a_loop() -> None:
        engine.create("count")

    with pytest.raises(EngineStateError, match=r"asyncio\.to_thread"):
        asyncio.run(inside_a_loop())


def test_an_async_task_calling_its_own_sync_engine_fails_instead_of_deadlocking(
    sqlite_sync: SyncMaker,
) -> None:
    host = LocalHost()
    host.add_workflow("self", chain("Self", "Peek"))
    engines: list[SyncEngine] = []

    @host.task("Peek")
    async def peek(flow: Flow) -> None:
        engines[0].snapshot(flow.flow_key)

    engines.append(sqlite_sync(host))
    _, outcome = engines[0].run("self", timeout=WAIT)
    assert outcome.status == Status.FAILED
    assert "running event loop" in outcome.error


def test_a_sync_task_may_call_the_engine_that_runs_it(sqlite_sync: SyncMaker) -> None:
    host = LocalHost()
    host.add_workflow("self", chain("Self", "Peek"))
    engines: list[SyncEngine] = []

    @host.task("Peek")
    def peek(flow: Flow) -> None:
        flow.set("status_seen", engines[0].snapshot(flow.flow_key).status.value)

    engines.append(sqlite_sync(host))
    _, outcome = engines[0].run("self", timeout=WAIT)
    assert outcome.state == {"status_seen": "running"}


# --- lifecycle ---


def test_calls_before_startup_raise_engine_state_error(sqlite_sync: SyncMaker) -> None:
    engine = sqlite_sync(counting_host(), start=False)
    with pytest.raises(EngineStateError, match="not started"):
        engine.create("count")


def test_shutdown_is_idempotent_and_later_calls_raise_engine_state_error(make_sync: SyncMaker) -> None:
    engine = make_sync(counting_host())
    engine.run("count", timeout=WAIT)
    engine.shutdown()
    engine.shutdown()
    with pytest.raises(EngineStateError, match="stopped"):
        engine.create("count")
    with pytest.raises(EngineStateError, match="restarted"):
        engine.startup()


def test_shutdown_releases_a_wait_blocked_in_another_thread(sqlite_sync: SyncMaker) -> None:
    host = LocalHost()
    host.add_workflow("slow", chain("Slow", "Hold"))
    release = threading.Event()
    host.add_task("Hold", lambda flow: release.wait(WAIT))
    engine = sqlite_sync(host)
    key = engine.create("slow")
    raised: list[BaseException] = []
    waiting = threading.Thread(target=lambda: _record_error(raised, lambda: engine.wait(key)))
    waiting.start()
    try:
        engine.shutdown(drain_timeout=0)
    finally:
        release.set()
    waiting.join(WAIT)
    assert not waiting.is_alive()
    assert [type(error) for error in raised] == [EngineStateError]


def test_the_context_manager_starts_and_stops_the_engine(request: pytest.FixtureRequest) -> None:
    name = isolated_name(request.node.nodeid)
    with SyncEngine(host=counting_host(), dsn="sqlite://:memory:", in_test=name) as engine:
        _, outcome = engine.run("count", timeout=WAIT)
        assert outcome.status == Status.COMPLETED
    with pytest.raises(EngineStateError):
        engine.snapshot("1-1-x")


def test_a_failed_startup_can_be_retried() -> None:
    engine = SyncEngine(host=LocalHost(), dsn="sqlite:///nonexistent-directory/sub/flows.db")
    for _ in range(2):
        with pytest.raises(StoreError, match="cannot open the database"):
            engine.startup()
    with pytest.raises(EngineStateError, match="not started"):
        engine.snapshot("1-1-x")
    engine.shutdown()


async def test_a_sync_engine_and_an_async_engine_sharing_a_host_signal_each_other(
    fresh_dsn: str,
) -> None:
    host = counting_host()
    async with Engine(host=host, dsn=fresh_dsn):
        pass  # only an engine with workers creates the dwarf tables
    watcher = Engine(host=host, dsn=fresh_dsn, workers=0)
    await watcher.startup()
    received = record_signals(watcher)
    runner = SyncEngine(host=host, dsn=fresh_dsn)
    try:
        await asyncio.to_thread(runner.startup)
        key, _ = await asyncio.to_thread(runner.run, "count", None, None, WAIT)
        assert (await watcher.wait(key, timeout=WAIT)).status == Status.COMPLETED
        await until(lambda: "flow-stopped" in received)
    finally:
        await asyncio.to_thread(runner.shutdown)
        await watcher.shutdown()


def _record_error(errors: list[BaseException], call: Callable[[], Any]) -> None:
    try:
        call()
    except BaseException as error:
        errors.append(error)


def test_sync_engine_reencodes_with_its_codecs() -> None:
    from dwarf import ZlibCodec
    from dwarf.engine.reencode import ReencodeReport

    name = isolated_name("sync_reencode")
    with SyncEngine(workers=0, dsn="sqlite://:memory:", in_test=name, codec=ZlibCodec()) as engine:
        assert engine.reencode() == ReencodeReport()
