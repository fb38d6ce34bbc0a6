"""LocalHost: decorator-registered workflows and tasks, the bounded sync-handler pool, flow-stopped
callbacks, and peer signals between the engines it serves and through a relay to other processes."""

from __future__ import annotations

import asyncio
import functools
import threading
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
import pytest_asyncio

from dwarf import (
    END,
    BadRequestError,
    Flow,
    FlowOptions,
    FlowOutcome,
    Graph,
    InvalidGraphError,
    NotFoundError,
    Retry,
    Status,
    current_baggage,
)
from dwarf.engine import Engine, TestProxy
from dwarf.hosts.local import LocalHost
from dwarf.testing import engine_factory
from dwarf.testing import test_name_for as isolated_name
from tests.engine.graphs import WAIT, chain, fan_out, record_signals, until
from tests.workflow.test_flow import make_flow


@pytest_asyncio.fixture
async def sqlite_engine(request: pytest.FixtureRequest) -> AsyncIterator[Callable[..., Awaitable[Engine]]]:
    """Like ``make_engine`` on SQLite only: for tests whose subject is the host, not the database."""
    async with engine_factory(isolated_name(request.node.nodeid), dsn="sqlite://:memory:") as make:
        yield make


def _host_with_chain(*nodes: str, url: str = "flow") -> LocalHost:
    host = LocalHost()
    host.add_workflow(url, chain("Flow", *nodes))
    return host


class FakeRelay:
    """One process's end of an in-memory signal bus: what ``publish`` sends, every other end receives."""

    def __init__(self, bus: list[FakeRelay]) -> None:
        self.bus = bus
        bus.append(self)
        self.deliver: Callable[[str, bytes], Awaitable[None]] | None = None
        self.starts = 0
        self.closes = 0
        self.fail_start = False

    async def start(self, deliver: Callable[[str, bytes], Awaitable[None]]) -> None:
        if self.fail_start:
            raise ConnectionError("relay unreachable")
        self.starts += 1
        self.deliver = deliver

    async def publish(self, op: str, payload: bytes) -> None:
        for other in self.bus:
            if other is not self and other.deliver is not None:
                await other.deliver(op, payload)

    async def close(self) -> None:
        self.closes += 1
        self.deliver = None


# --- registration ---


async def test_decorated_workflow_and_task_run_a_flow(make_engine: Any) -> None:
    host = LocalHost()

    @host.workflow("checkout")
    def checkout() -> Graph:
        graph = Graph("checkout")
        graph.add_task("Charge", "charge")
        graph.add_transition("Charge", END)
        return graph

    @host.task("charge")
    async def charge(flow: Flow) -> None:
        flow.set("charged", flow.get_int("amount"))

    engine = await make_engine(host)
    _, outcome = await engine.run("checkout", {"amount": 42}, timeout=WAIT)
    assert outcome.status == Status.COMPLETED
    assert outcome.state == {"amount": 42, "charged": 42}


def test_decorators_return_the_function_unchanged() -> None:
    host = LocalHost()

    def handler(flow: Flow) -> None:
        pass

    def factory() -> Graph:
        return chain("Flow", "A")

    assert host.task("a")(handler) is handler
    assert host.workflow("w")(factory) is factory


async def test_a_graph_object_can_be_registered_directly(sqlite_engine: Any) -> None:
    host = _host_with_chain("A")
    host.add_task("A", lambda flow: flow.set("done", True))
    engine = await sqlite_engine(host)
    _, outcome = await engine.run("flow", timeout=WAIT)
    assert outcome.state == {"done": True}


async def test_the_workflow_factory_is_called_once_for_many_flows(sqlite_engine: Any) -> None:
    host = LocalHost()
    calls: list[int] = []

    @host.workflow("flow")
    def build() -> Graph:
        calls.append(1)
        return chain("Flow", "A")

    host.add_task("A", lambda flow: None)
    engine = await sqlite_engine(host)
    for _ in range(3):
        await engine.run("flow", timeout=WAIT)
    assert calls == [1]


async def test_an_invalid_graph_from_a_factory_fails_create_and_is_not_cached(sqlite_engine: Any) -> None:
    host = LocalHost()
    attempts: list[int] = []

    @host.workflow("flow")
    def build() -> Graph:
        attempts.append(1)
        graph = Graph("Broken")
        graph.add_task("A", "A")
        graph.add_transition("A", "Nowhere")
        return graph

    engine = await sqlite_engine(host)
    for _ in range(2):
        with pytest.raises(InvalidGraphError):
            await engine.create("flow")
    assert attempts == [1, 1]


async def test_a_factory_returning_something_else_than_a_graph_fails_create(sqlite_engine: Any) -> None:
    host = LocalHost()
    host.add_workflow("flow", lambda: {"not": "a graph"})  # type: ignore[arg-type, return-value]
    engine = await sqlite_engine(host)
    with pytest.raises(InvalidGraphError, match="dict"):
        await engine.create("flow")


async def test_an_unknown_workflow_url_is_not_found(sqlite_engine: Any) -> None:
    engine = await sqlite_engine(LocalHost())
    with pytest.raises(NotFoundError):
        await engine.create("nowhere")


async def test_an_unknown_task_url_fails_the_flow_naming_the_url(sqlite_engine: Any) -> None:
    engine = await sqlite_engine(_host_with_chain("Missing"))
    _, outcome = await engine.run("flow", timeout=WAIT)
    assert outcome.status == Status.FAILED
    assert "'Missing'" in outcome.error


@pytest.mark.parametrize("kind", ["task", "workflow"])
def test_registering_a_url_twice_is_a_bad_request(kind: str) -> None:
    host = LocalHost()
    register: Callable[[str, Any], None] = host.add_task if kind == "task" else host.add_workflow
    register("x", lambda *args: chain("Flow", "A"))
    with pytest.raises(BadRequestError, match="already registered"):
        register("x", lambda *args: chain("Flow", "A"))


@pytest.mark.parametrize("max_threads", [0, -1, 1.5, True])
def test_max_threads_must_be_a_positive_integer(max_threads: Any) -> None:
    with pytest.raises(BadRequestError):
        LocalHost(max_threads=max_threads)


def test_a_relay_without_the_relay_methods_is_rejected() -> None:
    with pytest.raises(BadRequestError, match="relay has no"):
        LocalHost(relay=object())  # type: ignore[arg-type]


# --- handlers ---


async def test_sync_handlers_run_in_a_worker_thread_and_see_the_baggage(make_engine: Any) -> None:
    host = _host_with_chain("A")
    seen: list[Any] = []

    @host.task("A")
    def a(flow: Flow) -> None:
        seen.append((threading.get_ident(), current_baggage()))
        flow.set("sync", True)

    engine = await make_engine(host)
    _, outcome = await engine.run("flow", options=FlowOptions(baggage={"tenant": "t1"}), timeout=WAIT)
    assert outcome.state == {"sync": True}
    assert seen[0][0] != threading.get_ident()
    assert seen[0][1] == {"tenant": "t1"}


async def test_an_async_callable_object_runs_on_the_event_loop(sqlite_engine: Any) -> None:
    host = _host_with_chain("A")
    loop = asyncio.get_running_loop()

    class Handler:
        async def __call__(self, flow: Flow) -> None:
            flow.set("same_loop", asyncio.get_running_loop() is loop)

    host.add_task("A", Handler())
    engine = await sqlite_engine(host)
    _, outcome = await engine.run("flow", timeout=WAIT)
    assert outcome.state == {"same_loop": True}


class _Release:
    """An async callable object that sets an event."""

    def __init__(self, event: threading.Event) -> None:
        self.event = event

    async def __call__(self, flow: Flow) -> None:
        self.event.set()


@pytest.mark.parametrize(
    "wrapping", ["callable object", "partial of a callable object", "partial of a function"]
)
async def test_an_async_handler_however_wrapped_does_not_wait_for_a_pool_thread(
    sqlite_engine: Any, wrapping: str
) -> None:
    """It runs on the loop: with the only pool thread held by a sync task, it can still run."""
    host = LocalHost(max_threads=1)
    host.add_workflow("block", chain("Block", "Block"))
    host.add_workflow("free", chain("Free", "Free"))
    holding, release = threading.Event(), threading.Event()

    def block(flow: Flow) -> None:
        holding.set()
        flow.set("released", release.wait(WAIT))

    async def set_event(flow: Flow, event: threading.Event) -> None:
        event.set()

    handlers: dict[str, Callable[[], Any]] = {
        "callable object": lambda: _Release(release),
        "partial of a callable object": lambda: functools.partial(_Release(release)),
        "partial of a function": lambda: functools.partial(set_event, event=release),
    }
    host.add_task("Block", block)
    host.add_task("Free", handlers[wrapping]())
    engine = await sqlite_engine(host)
    blocked = await engine.create("block")
    await until(holding.is_set)
    await engine.run("free", timeout=WAIT)
    assert (await engine.wait(blocked, timeout=WAIT)).state == {"released": True}


async def test_a_raising_handler_fails_the_flow_with_its_message(sqlite_engine: Any) -> None:
    host = _host_with_chain("A")

    @host.task("A")
    def a(flow: Flow) -> None:
        raise ValueError("card declined")

    engine = await sqlite_engine(host)
    _, outcome = await engine.run("flow", timeout=WAIT)
    assert (outcome.status, outcome.error) == (Status.FAILED, "card declined")


async def test_max_threads_bounds_how_many_sync_handlers_run_at_once(sqlite_engine: Any) -> None:
    host = LocalHost(max_threads=2)
    host.add_workflow("wide", fan_out("Wide", branches=[f"B{i}" for i in range(6)]))
    lock = threading.Condition()
    started = [0]
    running = [0]
    peak = [0]

    def busy(flow: Flow) -> None:
        with lock:
            started[0] += 1
            running[0] += 1
            peak[0] = max(peak[0], running[0])
            lock.notify_all()
            # Without the bound all six branches would be in here together; with it, two wait out the
            # pause and make room for the next two.
            lock.wait_for(lambda: started[0] >= 6, timeout=0.3)
            running[0] -= 1

    for node in ["A", "J", *(f"B{i}" for i in range(6))]:
        host.add_task(node, busy)
    engine = await sqlite_engine(host)
    _, outcome = await engine.run("wide", timeout=WAIT)
    assert outcome.status == Status.COMPLETED
    assert peak[0] == 2


async def test_the_thread_pool_outlives_one_of_several_engines_and_is_renewed_after_the_last(
    sqlite_engine: Any,
) -> None:
    host = _host_with_chain("A")
    host.add_task("A", lambda flow: flow.set("thread", threading.current_thread().name))
    first = await sqlite_engine(host)
    second = await sqlite_engine(host)
    await first.run("flow", timeout=WAIT)
    await first.shutdown()
    _, outcome = await second.run("flow", timeout=WAIT)
    assert outcome.status == Status.COMPLETED
    await second.shutdown()
    third = await sqlite_engine(host)
    _, outcome = await third.run("flow", timeout=WAIT)
    assert outcome.status == Status.COMPLETED
    assert outcome.state["thread"].startswith("dwarf-task")


# --- flow-stopped callbacks ---


async def test_flow_stopped_callbacks_sync_and_async_see_the_outcome(make_engine: Any) -> None:
    host = _host_with_chain("A")
    host.add_task("A", lambda flow: flow.set("done", True))
    seen: list[tuple[str, str, FlowOutcome]] = []
    host.on_flow_stopped(lambda key, outcome: seen.append(("sync", key, outcome)))

    async def record(key: str, outcome: FlowOutcome) -> None:
        seen.append(("async", key, outcome))

    host.on_flow_stopped(record)
    engine = await make_engine(host)
    quiet, _ = await engine.run("flow", timeout=WAIT)
    key, _ = await engine.run("flow", options=FlowOptions(notify_on_stop=True), timeout=WAIT)
    await until(lambda: len(seen) == 2)
    assert sorted(kind for kind, _, _ in seen) == ["async", "sync"]
    assert all(seen_key == key and o.state == {"done": True} for _, seen_key, o in seen)
    assert quiet != key


async def test_a_failing_flow_stopped_callback_does_not_stop_the_others(sqlite_engine: Any) -> None:
    host = _host_with_chain("A")
    host.add_task("A", lambda flow: None)
    seen: list[str] = []

    def broken(key: str, outcome: FlowOutcome) -> None:
        raise RuntimeError("callback bug")

    host.on_flow_stopped(broken)
    host.on_flow_stopped(lambda key, outcome: seen.append(key))
    engine = await sqlite_engine(host)
    key, _ = await engine.run("flow", options=FlowOptions(notify_on_stop=True), timeout=WAIT)
    await until(lambda: seen == [key])


# --- peer signals ---


async def test_engines_sharing_a_host_receive_each_others_signals_but_not_their_own(
    make_engine: Any,
) -> None:
    host = _host_with_chain("A")
    host.add_task("A", lambda flow: None)
    runner = await make_engine(host)
    watcher = await make_engine(host, workers=0)
    to_runner, to_watcher = record_signals(runner), record_signals(watcher)
    await runner.run("flow", timeout=WAIT)
    await until(lambda: "flow-stopped" in to_watcher)
    assert to_runner == []


async def test_signals_reach_another_process_through_the_relay(make_engine: Any) -> None:
    bus: list[FakeRelay] = []
    hosts = []
    for _ in range(2):
        host = LocalHost(relay=FakeRelay(bus))
        host.add_workflow("flow", chain("Flow", "A"))
        host.add_task("A", lambda flow: None)
        hosts.append(host)
    runner = await make_engine(hosts[0])
    watcher = await make_engine(hosts[1], workers=0)
    to_watcher = record_signals(watcher)
    key = await runner.create("flow")
    assert (await watcher.wait(key, timeout=WAIT)).status == Status.COMPLETED
    await until(lambda: "flow-stopped" in to_watcher)
    assert "doorbell" in to_watcher


async def test_the_relay_starts_with_the_first_engine_and_closes_with_the_last(sqlite_engine: Any) -> None:
    relay = FakeRelay([])
    host = LocalHost(relay=relay)
    first = await sqlite_engine(host, workers=0)
    second = await sqlite_engine(host, workers=0)
    assert (relay.starts, relay.closes) == (1, 0)
    await first.shutdown()
    assert relay.closes == 0
    await second.shutdown()
    assert (relay.starts, relay.closes) == (1, 1)


async def test_a_relay_that_cannot_start_aborts_the_engine_startup(sqlite_engine: Any) -> None:
    relay = FakeRelay([])
    relay.fail_start = True
    engine = await sqlite_engine(LocalHost(relay=relay), workers=0, start=False)
    with pytest.raises(ConnectionError):
        await engine.startup()
    assert relay.closes == 1


# --- task references, derived URLs, serves (docs/hosts.md#localhost) ---


def test_the_decorator_without_a_url_registers_the_qualified_name_and_refuses_a_taken_one() -> None:
    host = LocalHost()

    @host.task
    def plan(flow: Flow) -> None:
        pass

    qualified = "test_the_decorator_without_a_url_registers_the_qualified_name_and_refuses_a_taken_one"
    assert host.serves(f"{qualified}.<locals>.plan") is True
    with pytest.raises(BadRequestError, match="already registered"):
        host.task()(plan)


def test_a_url_cannot_be_derived_from_a_lambda_or_a_partial() -> None:
    host = LocalHost()
    for handler in (lambda flow: None, functools.partial(print)):
        with pytest.raises(BadRequestError, match="cannot derive a task URL"):
            host.task()(handler)
        with pytest.raises(BadRequestError, match="cannot derive a task URL"):
            host.task(handler)


def test_serves_answers_none_until_a_task_is_registered() -> None:
    host = LocalHost()
    host.add_workflow("flow", chain("Flow", "A"))
    assert host.serves("A") is None  # a host that only publishes workflows cannot tell
    host.add_task("A", lambda flow: None)
    assert (host.serves("A"), host.serves("B")) == (True, False)


def test_a_subclass_that_runs_tasks_its_own_way_cannot_tell() -> None:
    class Dispatching(LocalHost):
        async def execute_task(self, task_url: str, flow: Flow) -> None:
            if not task_url.startswith("remote/"):
                await super().execute_task(task_url, flow)

    host = Dispatching()
    host.add_task("local", lambda flow: None)
    assert (host.serves("remote/x"), host.serves("nowhere")) == (None, None)


async def test_create_refuses_a_graph_naming_a_task_the_host_does_not_serve(sqlite_engine: Any) -> None:
    host = _host_with_chain("Plan", "Act")
    host.add_task("Plan", lambda flow: None)
    engine = await sqlite_engine(host)
    with pytest.raises(InvalidGraphError, match=r"serves no task for node\(s\) 'Act' \('Act'\)"):
        await engine.create("flow")
    summaries, _ = await engine.list()
    assert summaries == []  # nothing written
    host.add_task("Act", lambda flow: None)
    _, outcome = await engine.run("flow", timeout=WAIT)
    assert outcome.status == Status.COMPLETED


# --- retry policies (docs/tasks.md#a-retry-policy-per-task) ---


def _carrier(attempt: int = 0) -> Flow:
    return make_flow({}, attempt=attempt)


async def test_execute_task_schedules_the_policys_retry_and_reraises() -> None:
    host = LocalHost()

    @host.task("flaky", retry=Retry(attempts=3, initial_delay=2, backoff=3))
    async def flaky(flow: Flow) -> None:
        raise ConnectionError("down")

    for attempt, delay in ((0, 2.0), (1, 6.0), (2, None)):
        flow = _carrier(attempt)
        with pytest.raises(ConnectionError):
            await host.execute_task("flaky", flow)
        assert flow.retry_delay == delay


async def test_a_sync_handler_is_retried_too_and_success_schedules_nothing() -> None:
    host = LocalHost()
    failures = [RuntimeError("once")]

    @host.task("sync", retry=Retry(initial_delay=0.5))
    def sync(flow: Flow) -> None:
        if failures:
            raise failures.pop()

    flow = _carrier()
    with pytest.raises(RuntimeError):
        await host.execute_task("sync", flow)
    assert flow.retry_delay == 0.5
    flow = _carrier(1)
    await host.execute_task("sync", flow)
    assert flow.retry_delay is None
    host.close()


async def test_an_explicit_flow_retry_takes_precedence_over_the_policy() -> None:
    host = LocalHost()

    @host.task("gives-up", retry=Retry(attempts=5))
    async def gives_up(flow: Flow) -> None:
        if not flow.retry(1, 1, 0, 0.001):  # a horizon already passed: False
            raise RuntimeError("decided to fail")

    @host.task("own-delay", retry=Retry(attempts=5, initial_delay=30))
    async def own_delay(flow: Flow) -> None:
        flow.retry(7, 1, 0, 0)
        raise RuntimeError("retry in 7s")

    flow = _carrier()
    with pytest.raises(RuntimeError, match="decided to fail"):
        await host.execute_task("gives-up", flow)
    assert flow.retry_delay is None and flow.retry_asked
    flow = _carrier()
    with pytest.raises(RuntimeError):
        await host.execute_task("own-delay", flow)
    assert flow.retry_delay == 7.0


async def test_errors_outside_retry_on_or_in_give_up_on_are_not_retried() -> None:
    host = LocalHost()
    errors: list[Exception] = []

    async def raise_next(flow: Flow) -> None:
        raise errors.pop()

    host.add_task("narrow", raise_next, retry=Retry(retry_on=(ConnectionError,)))
    for error, retried in (
        (ValueError("bad input"), False),
        (ConnectionResetError("reset"), True),
        (BadRequestError("not JSON"), False),
    ):
        errors.append(error)
        flow = _carrier()
        with pytest.raises(type(error)):
            await host.execute_task("narrow", flow)
        assert (flow.retry_delay is not None) is retried, error


def test_a_retry_policy_must_be_a_retry() -> None:
    with pytest.raises(BadRequestError, match="must be a Retry"):
        LocalHost().add_task("x", lambda flow: None, retry={"attempts": 3})  # type: ignore[arg-type]


def test_registering_again_without_a_policy_drops_the_old_one() -> None:
    proxy = TestProxy()
    proxy.handle_task("x", lambda flow: None, retry=Retry())
    proxy.handle_task("x", lambda flow: None)
    assert "x" not in proxy._retries

    @proxy.task("x", retry=Retry(attempts=2))  # the decorator replaces, as handle_task does
    def again(flow: Flow) -> None:
        pass

    assert proxy._retries["x"] == Retry(attempts=2)
