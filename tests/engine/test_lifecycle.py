"""Engine configuration and lifecycle (docs/operations.md#settings, docs/operations.md#lifecycle): setters,
defaults, startup and shutdown."""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import pytest

from dwarf import (
    BadRequestError,
    EngineStateError,
    Flow,
    FlowOptions,
    Query,
    SchedulerTuning,
    Status,
    StoreError,
)
from dwarf.engine import Engine, TestProxy
from dwarf.store.base import Row
from tests.engine.graphs import WAIT, Gate, chain, for_each, noop, proxy_with


def _proxy() -> TestProxy:
    return proxy_with("one", chain("One", "A"), A=noop)


# --- defaults ---


def test_default_workers_is_64() -> None:
    assert Engine().settings["workers"] == 64


def test_default_workers_per_conn_is_8() -> None:
    assert Engine().settings["workers_per_conn"] == 8


def test_default_max_open_conns_is_8() -> None:
    assert Engine().settings["max_open_conns"] == 8


def test_default_time_budget_is_two_minutes() -> None:
    assert Engine().settings["time_budget"] == 120.0


def test_default_pool_size_is_eight_connections() -> None:
    assert Engine().pool_size == 8


def test_pool_size_is_workers_over_workers_per_conn_capped_by_max_open_conns() -> None:
    engine = Engine(workers=10, workers_per_conn=4)
    assert engine.pool_size == 3
    engine.set_max_open_conns(2)
    assert engine.pool_size == 2


async def test_default_priority_is_100(make_engine: Any) -> None:
    engine = await make_engine(_proxy())
    await engine.create("one")
    page, _ = await engine.list()
    assert [summary.priority for summary in page] == [100]


# --- construction-time and live setters ---

CONSTRUCTION_TIME_SETTERS: list[tuple[str, tuple[Any, ...]]] = [
    ("set_dsn", ("sqlite:///elsewhere.db",)),
    ("set_host", (TestProxy(),)),
    ("set_workers", (4,)),
    ("set_num_shards", (2,)),
    ("set_logger", (logging.getLogger("dwarf.test"),)),
    ("set_debug_logger", ()),
    ("set_meter_provider", (None,)),
    ("set_tracer_provider", (None,)),
    ("set_in_test", ("another_test",)),
]


async def test_every_construction_time_setter_raises_engine_state_error_after_startup(
    make_engine: Any,
) -> None:
    engine = await make_engine(_proxy())
    accepted = []
    for setter, args in CONSTRUCTION_TIME_SETTERS:
        try:
            getattr(engine, setter)(*args)
        except EngineStateError:
            continue
        accepted.append(setter)
    assert accepted == []


async def test_construction_time_setter_raises_engine_state_error_after_shutdown(make_engine: Any) -> None:
    engine = await make_engine(_proxy())
    await engine.shutdown()
    with pytest.raises(EngineStateError):
        engine.set_workers(4)


LIVE_SETTERS: list[tuple[str, tuple[Any, ...]]] = [
    ("set_max_open_conns", (3,)),
    ("set_workers_per_conn", (2,)),
    ("set_time_budget", (30.0,)),
    ("set_default_priority", (5,)),
]


async def test_live_setters_are_accepted_after_startup_and_the_engine_keeps_working(make_engine: Any) -> None:
    engine = await make_engine(_proxy())
    for setter, args in LIVE_SETTERS:
        getattr(engine, setter)(*args)
    _, outcome = await engine.run("one", timeout=WAIT)
    assert outcome.status == Status.COMPLETED


async def test_live_default_priority_applies_to_flows_created_afterwards(make_engine: Any) -> None:
    engine = await make_engine(_proxy())
    before = await engine.create("one")
    engine.set_default_priority(7)
    after = await engine.create("one")
    page, _ = await engine.list()
    priorities = {summary.flow_key: summary.priority for summary in page}
    assert priorities == {before: 100, after: 7}


async def test_live_time_budget_applies_to_flows_created_afterwards(make_engine: Any) -> None:
    async def slow(flow: Flow) -> None:
        await asyncio.sleep(5)

    engine = await make_engine(proxy_with("slow", chain("Slow", "S"), S=slow))
    engine.set_time_budget(0.3)
    _, outcome = await engine.run("slow", timeout=WAIT)
    assert outcome.status == Status.FAILED
    assert "time budget" in outcome.error


async def test_live_workers_per_conn_and_max_open_conns_change_the_pool_size_at_once(
    make_engine: Any,
) -> None:
    engine = await make_engine(_proxy())
    engine.set_workers_per_conn(16)
    assert engine.pool_size == 4
    engine.set_max_open_conns(1)
    assert engine.pool_size == 1


def test_engine_keywords_call_the_setters() -> None:
    logger = logging.getLogger("dwarf.test.keywords")
    proxy = TestProxy()
    engine = Engine(
        host=proxy,
        dsn="sqlite:///x.db",
        workers=10,
        workers_per_conn=2,
        max_open_conns=4,
        num_shards=1,
        time_budget=30,
        default_priority=7,
        logger=logger,
    )
    settings = engine.settings
    assert settings["host"] is proxy
    assert settings["dsn"] == "sqlite:///x.db"
    assert settings["workers"] == 10
    assert engine.pool_size == 4
    assert settings["time_budget"] == 30.0
    assert settings["default_priority"] == 7
    assert settings["logger"] is logger


async def test_engine_keywords_configure_a_working_engine(make_engine: Any) -> None:
    engine = await make_engine(_proxy(), workers=2, default_priority=9, time_budget=5)
    key, outcome = await engine.run("one", timeout=WAIT)
    page, _ = await engine.list()
    assert outcome.status == Status.COMPLETED
    assert [(s.flow_key, s.priority) for s in page] == [(key, 9)]


def test_engine_rejects_an_unknown_keyword() -> None:
    with pytest.raises(TypeError):
        Engine(no_such_setting=1)


# --- lifecycle ---


async def test_startup_twice_is_harmless(make_engine: Any) -> None:
    engine = await make_engine(_proxy())
    await engine.startup()
    _, outcome = await engine.run("one", timeout=WAIT)
    assert outcome.status == Status.COMPLETED


async def test_shutdown_twice_is_harmless(make_engine: Any) -> None:
    engine = await make_engine(_proxy())
    await engine.shutdown()
    await engine.shutdown()


async def test_shutdown_of_a_never_started_engine_is_harmless(make_engine: Any) -> None:
    engine = await make_engine(_proxy(), start=False)
    await engine.shutdown()
    await engine.shutdown()


async def test_async_context_manager_starts_and_stops_the_engine(make_engine: Any) -> None:
    engine = await make_engine(_proxy(), start=False)
    async with engine as entered:
        assert entered is engine
        _, outcome = await engine.run("one", timeout=WAIT)
        assert outcome.status == Status.COMPLETED
    with pytest.raises(EngineStateError):
        await engine.list()


def _operations(key: str) -> dict[str, Any]:
    """Every operation of the API as a zero-argument coroutine factory."""
    return {
        "create": lambda e: e.create("one"),
        "wait": lambda e: e.wait(key, timeout=1),
        "run": lambda e: e.run("one", timeout=1),
        "snapshot": lambda e: e.snapshot(key),
        "history": lambda e: e.history(key),
        "history_mermaid": lambda e: e.history_mermaid(key),
        "step": lambda e: e.step(key),
        "list": lambda e: e.list(Query()),
        "resume": lambda e: e.resume(key, {}),
        "cancel": lambda e: e.cancel(key),
        "continue_thread": lambda e: e.continue_thread(key),
        "fork": lambda e: e.fork(key),
        "delete": lambda e: e.delete(key),
        "purge": lambda e: e.purge(Query()),
        "fingerprint": lambda e: e.fingerprint(key),
        "shard_info": lambda e: e.shard_info(),
        "deliver_signal": lambda e: e.deliver_signal("doorbell", b'{"shard":1}'),
    }


async def _refusals(engine: Engine, key: str) -> list[str]:
    """The operations that did NOT raise EngineStateError."""
    failures = []
    for name, call in _operations(key).items():
        try:
            await call(engine)
        except EngineStateError:
            continue
        except Exception as error:
            failures.append(f"{name}: {type(error).__name__}: {error}")
        else:
            failures.append(f"{name}: no error")
    return failures


async def test_every_operation_on_a_never_started_engine_raises_engine_state_error(make_engine: Any) -> None:
    engine = await make_engine(_proxy(), start=False)
    assert await _refusals(engine, "1-1-AAAAAAAAAAAAAAAA") == []


async def test_every_operation_on_a_stopped_engine_raises_engine_state_error(make_engine: Any) -> None:
    engine = await make_engine(_proxy())
    key = await engine.create("one")
    await engine.wait(key, timeout=WAIT)
    await engine.shutdown()
    assert await _refusals(engine, key) == []


async def test_wait_in_progress_ends_with_engine_state_error_when_the_engine_stops(make_engine: Any) -> None:
    gate = Gate()

    async def blocked(flow: Flow) -> None:
        await gate.pass_through()

    engine = await make_engine(proxy_with("blocked", chain("Blocked", "B"), B=blocked))
    key = await engine.create("blocked")
    await gate.wait_entered()
    waiter = asyncio.ensure_future(engine.wait(key, timeout=WAIT))
    await asyncio.sleep(0.1)
    await engine.shutdown(drain_timeout=0)
    with pytest.raises(EngineStateError):
        await asyncio.wait_for(waiter, WAIT)


async def test_flow_options_time_budget_overrides_the_engine_default(make_engine: Any) -> None:
    async def slow(flow: Flow) -> None:
        await asyncio.sleep(0.6)

    engine = await make_engine(proxy_with("slow", chain("Slow", "S"), S=slow), time_budget=0.2)
    _, outcome = await engine.run("slow", options=FlowOptions(time_budget=5), timeout=WAIT)
    assert outcome.status == Status.COMPLETED


async def test_engine_runs_at_most_workers_steps_at_once(make_engine: Any) -> None:
    running = 0
    peak = 0

    async def work(flow: Flow) -> None:
        nonlocal running, peak
        running += 1
        peak = max(peak, running)
        await asyncio.sleep(0.05)
        running -= 1

    proxy = proxy_with("each", for_each(), Split=noop, Work=work, Join=noop)
    engine = await make_engine(proxy, workers=2)
    _, outcome = await engine.run("each", {"items": list(range(6))}, timeout=WAIT)
    assert outcome.status == Status.COMPLETED
    assert peak == 2


async def test_shutdown_with_nothing_running_is_prompt(make_engine: Any) -> None:
    """Shutdown wakes every loop (claimers, sweeps, tickers) instead of waiting for its next poll: with
    polls of a minute, anything that waited for one would take a minute. The bound leaves room for a
    loaded machine; the point is the order of magnitude, not the speed."""
    minute = SchedulerTuning(idle_poll=60.0, schedule_poll=60.0, retention_poll=60.0)
    engine = await make_engine(_proxy(), scheduler_tuning=minute)
    started = time.monotonic()
    await engine.shutdown()
    assert time.monotonic() - started < 5.0


# --- operations-only engines (workers=0) ---


async def test_an_engine_with_zero_workers_starts_without_a_host_and_reads_flows(fresh_dsn: str) -> None:
    gate = Gate()

    async def held(flow: Flow) -> None:
        await gate.pass_through()

    proxy = proxy_with("one", chain("One", "A"), A=held)
    async with Engine(host=proxy, dsn=fresh_dsn) as worker:
        key = await worker.create("one")
        async with Engine(workers=0, dsn=fresh_dsn) as inspector:
            page, _ = await inspector.list()
            assert [summary.flow_key for summary in page] == [key]
            await inspector.cancel(key, "from the inspector")
        gate.open()
        outcome = await worker.wait(key, timeout=10)
    assert outcome.status == Status.CANCELLED


async def _create_schema(dsn: str) -> None:
    """Start and stop an engine with workers: only such an engine creates the dwarf tables."""
    async with Engine(host=_proxy(), dsn=dsn):
        pass


async def test_an_engine_with_zero_workers_runs_no_steps(fresh_dsn: str) -> None:
    await _create_schema(fresh_dsn)
    async with Engine(host=_proxy(), workers=0, dsn=fresh_dsn) as engine:
        key = await engine.create("one")
        await asyncio.sleep(0.3)
        steps = await engine.history(key)
    assert [(step.task_name, step.status, step.started_at) for step in steps] == [("A", Status.PENDING, None)]


async def test_a_hostless_engine_cannot_create_flows(fresh_dsn: str) -> None:
    await _create_schema(fresh_dsn)
    async with Engine(workers=0, dsn=fresh_dsn) as engine:
        with pytest.raises(EngineStateError):
            await engine.create("one")


async def test_an_engine_with_zero_workers_creates_no_schema_in_a_database_without_one(
    fresh_dsn: str,
) -> None:
    """It only looks at dwarf databases: pointed at another application's database, it changes nothing."""
    with pytest.raises(StoreError, match=r"schema|tables|no dwarf database"):
        await Engine(workers=0, dsn=fresh_dsn).startup()
    await _create_schema(fresh_dsn)  # the database was left as it was: an engine with workers migrates it
    async with Engine(workers=0, dsn=fresh_dsn) as engine:
        assert await engine.list() == ([], "")


async def test_an_engine_with_workers_needs_a_host(fresh_dsn: str) -> None:
    with pytest.raises(EngineStateError):
        await Engine(dsn=fresh_dsn).startup()


# --- optional host lifecycle hooks ---


class _HookedProxy(TestProxy):
    """A TestProxy that records the engine lifecycle hooks (as a signal relay would use them)."""

    def __init__(self, fail_start: bool = False) -> None:
        super().__init__()
        self.calls: list[str] = []
        self._fail_start = fail_start

    async def engine_started(self, engine: Engine) -> None:
        self.calls.append("started")
        if self._fail_start:
            raise RuntimeError("relay unreachable")

    async def engine_stopped(self, engine: Engine) -> None:
        self.calls.append("stopped")


async def test_the_host_hears_when_its_engine_starts_and_stops(fresh_dsn: str) -> None:
    proxy = _HookedProxy()
    async with Engine(host=proxy, dsn=fresh_dsn):
        assert proxy.calls == ["started"]
    assert proxy.calls == ["started", "stopped"]


async def test_a_host_whose_start_hook_raises_aborts_the_startup(fresh_dsn: str) -> None:
    proxy = _HookedProxy(fail_start=True)
    engine = Engine(host=proxy, dsn=fresh_dsn)
    with pytest.raises(RuntimeError, match="relay unreachable"):
        await engine.startup()
    with pytest.raises(EngineStateError):
        await engine.list()


# --- scheduler tuning ---


@pytest.mark.parametrize(
    "fields",
    [{"idle_poll": 0}, {"lease_period": -1}, {"max_recoveries": 1.5}, {"error_backoff": float("nan")}],
    ids=["zero-poll", "negative-lease", "fractional-recoveries", "nan-backoff"],
)
def test_unusable_scheduler_tuning_is_a_bad_request(fields: dict[str, Any]) -> None:
    with pytest.raises(BadRequestError, match="scheduler tuning"):
        SchedulerTuning(**fields)


async def test_scheduler_tuning_applies_to_a_running_engine(make_engine: Any) -> None:
    engine = await make_engine(_proxy(), scheduler_tuning=SchedulerTuning(lease_period=5.0))
    assert engine.scheduler_tuning.lease_period == 5.0
    faster = SchedulerTuning(lease_period=1.0, idle_poll=0.1)
    engine.set_scheduler_tuning(faster)
    assert engine.scheduler_tuning is faster
    _, outcome = await engine.run("one", timeout=10)
    assert outcome.status == Status.COMPLETED
    with pytest.raises(BadRequestError):
        engine.set_scheduler_tuning({"lease_period": 1.0})  # type: ignore[arg-type]


def test_engine_settings_name_exactly_the_setters() -> None:
    """Each keyword of Engine(**settings) is a set_* method, and each setter is a typed keyword."""
    from typing import get_type_hints

    from dwarf.engine.settings import EngineSettings

    setters = {name.removeprefix("set_") for name in dir(Engine) if name.startswith("set_")}
    assert set(get_type_hints(EngineSettings)) == setters


async def test_a_claim_committing_as_the_engine_stops_hands_its_steps_back(fresh_dsn: str) -> None:
    """The claimer is cancelled by the shutdown after its claim committed but before it took the steps
    (the claim's answer is held back here): the steps are released, so the next engine runs them at
    once instead of after the 60-second lease the stopped engine took."""
    proxy = TestProxy()
    proxy.handle_graph("one", chain("one", "Only"))
    proxy.handle_task("Only", noop)
    committed = asyncio.Event()
    engine = Engine(host=proxy, dsn=fresh_dsn, scheduler_tuning=SchedulerTuning(lease_period=60.0))
    await engine.startup()
    try:
        store = engine.runtime.stores[0]
        write = store.write

        async def slow_to_answer(query: Any, **params: Any) -> list[Row]:
            rows = await write(query, **params)
            if query == "claim_due_steps" and rows:
                committed.set()
                await asyncio.sleep(0.5)  # the shutdown cancels the claimer meanwhile
            return rows

        store.write = slow_to_answer  # type: ignore[method-assign]
        key = await engine.create("one")
        async with asyncio.timeout(WAIT):
            await committed.wait()
    finally:
        await engine.shutdown(drain_timeout=0)
    async with Engine(host=proxy, dsn=fresh_dsn) as successor:
        outcome = await successor.wait(key, timeout=5.0)
    assert outcome.status == Status.COMPLETED
