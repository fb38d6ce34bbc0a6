"""TestProxy (docs/testing.md#testproxy-reference):
the in-process Host — graph and task registries, the task decorator, sync handlers
run in a worker thread, the flow-stopped callback; and, since it is a LocalHost, LocalHost's behaviour
where the two used to differ (async detection, the pool's shutdown, failing callbacks, peer links)."""

from __future__ import annotations

import ast
import asyncio
import threading
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

from dwarf import BadRequestError, Engine, Flow, FlowOptions, FlowOutcome, Status, current_baggage
from dwarf.engine import TestProxy
from dwarf.hosts.local import LocalHost
from dwarf.testing import engine_factory
from dwarf.testing import test_name_for as isolated_name
from tests.engine.graphs import WAIT, chain, record_signals, until

ROOT = Path(__file__).resolve().parents[2]


def _proxy(*nodes: str) -> TestProxy:
    proxy = TestProxy()
    proxy.handle_graph("flow", chain("Flow", *nodes))
    return proxy


async def test_task_decorator_registers_the_handler(make_engine: Any) -> None:
    proxy = _proxy("A")

    @proxy.task("A")
    async def a(flow: Flow) -> None:
        flow.set("decorated", True)

    engine = await make_engine(proxy)
    _, outcome = await engine.run("flow", timeout=WAIT)
    assert outcome.state == {"decorated": True}


def test_task_decorator_returns_the_handler_unchanged() -> None:
    proxy = TestProxy()

    def handler(flow: Flow) -> None:
        pass

    assert proxy.task("A")(handler) is handler


async def test_sync_handler_runs_in_a_worker_thread(make_engine: Any) -> None:
    proxy = _proxy("A")
    threads: list[int] = []

    @proxy.task("A")
    def a(flow: Flow) -> None:
        threads.append(threading.get_ident())
        flow.set("sync", True)

    engine = await make_engine(proxy)
    _, outcome = await engine.run("flow", timeout=WAIT)
    assert outcome.state == {"sync": True}
    assert threads and threads[0] != threading.get_ident()


async def test_async_handler_runs_on_the_event_loop(make_engine: Any) -> None:
    proxy = _proxy("A")
    loops: list[Any] = []

    @proxy.task("A")
    async def a(flow: Flow) -> None:
        loops.append(asyncio.get_running_loop())

    engine = await make_engine(proxy)
    await engine.run("flow", timeout=WAIT)
    assert loops == [asyncio.get_running_loop()]


async def test_sync_handler_blocking_does_not_block_the_event_loop(make_engine: Any) -> None:
    proxy = _proxy("A")
    release = threading.Event()

    @proxy.task("A")
    def a(flow: Flow) -> None:
        release.wait(WAIT)

    engine = await make_engine(proxy)
    key = await engine.create("flow")
    await asyncio.sleep(0.1)
    # The loop still serves operations while the sync task blocks its thread.
    assert (await engine.snapshot(key)).status == Status.RUNNING
    release.set()
    assert (await engine.wait(key, timeout=WAIT)).status == Status.COMPLETED


async def test_sync_handler_sees_the_flow_baggage(make_engine: Any) -> None:
    proxy = _proxy("A")
    seen: list[Any] = []

    @proxy.task("A")
    def a(flow: Flow) -> None:
        seen.append(current_baggage())

    engine = await make_engine(proxy)
    await engine.run("flow", options=FlowOptions(baggage={"tenant": "acme"}), timeout=WAIT)
    assert seen == [{"tenant": "acme"}]


async def test_sync_handler_exception_fails_the_flow(make_engine: Any) -> None:
    proxy = _proxy("A")

    @proxy.task("A")
    def a(flow: Flow) -> None:
        raise ValueError("sync trouble")

    engine = await make_engine(proxy)
    _, outcome = await engine.run("flow", timeout=WAIT)
    assert (outcome.status, outcome.error) == (Status.FAILED, "sync trouble")


async def test_sync_and_async_handlers_mix_in_one_flow(make_engine: Any) -> None:
    proxy = _proxy("A", "B")

    @proxy.task("A")
    def a(flow: Flow) -> None:
        flow.set("n", 1)

    @proxy.task("B")
    async def b(flow: Flow) -> None:
        flow.set("n", flow.get_int("n") + 1)

    engine = await make_engine(proxy)
    _, outcome = await engine.run("flow", timeout=WAIT)
    assert outcome.state == {"n": 2}


async def test_unregistered_task_url_fails_the_flow(make_engine: Any) -> None:
    engine = await make_engine(_proxy("Missing"))
    _, outcome = await engine.run("flow", timeout=WAIT)
    assert outcome.status == Status.FAILED
    assert "Missing" in outcome.error


async def test_on_flow_stopped_is_called_for_flows_created_with_notify_on_stop(make_engine: Any) -> None:
    proxy = _proxy("A")
    proxy.handle_task("A", lambda flow: flow.set("x", 1))
    stopped: list[tuple[str, FlowOutcome]] = []
    proxy.on_flow_stopped(lambda key, outcome: stopped.append((key, outcome)))
    engine = await make_engine(proxy)
    await engine.run("flow", timeout=WAIT)
    noisy, outcome = await engine.run("flow", options=FlowOptions(notify_on_stop=True), timeout=WAIT)
    await until(lambda: bool(stopped))
    assert [key for key, _ in stopped] == [noisy]
    assert stopped[0][1].status == Status.COMPLETED
    assert stopped[0][1].state == outcome.state


# --- registration ---


async def test_registering_a_url_again_replaces_the_graph_and_the_handler(sqlite_engine: Any) -> None:
    proxy = _proxy("A")
    proxy.handle_task("A", lambda flow: flow.set("by", "first"))
    engine = await sqlite_engine(proxy)
    await engine.run("flow", timeout=WAIT)  # the first graph is loaded (and cached) here
    proxy.handle_graph("flow", chain("Flow", "B"))
    proxy.handle_task("B", lambda flow: flow.set("by", "first B"))
    proxy.handle_task("B", lambda flow: flow.set("by", "second B"))
    _, outcome = await engine.run("flow", timeout=WAIT)
    assert outcome.state == {"by": "second B"}


@pytest.mark.parametrize("register", ["handle_graph", "handle_task", "on_flow_stopped"])
def test_registering_something_unusable_is_a_bad_request(register: str) -> None:
    proxy = TestProxy()
    with pytest.raises(BadRequestError):
        if register == "on_flow_stopped":
            proxy.on_flow_stopped("not callable")  # type: ignore[arg-type]
        else:
            getattr(proxy, register)("url", "neither a graph nor callable")


@pytest.mark.parametrize("sync_threads", [0, -1, 1.5, True])
def test_sync_threads_must_be_a_positive_integer(sync_threads: Any) -> None:
    with pytest.raises(BadRequestError):
        TestProxy(sync_threads=sync_threads)


# --- handlers ---


async def test_an_async_callable_object_does_not_wait_for_a_pool_thread(sqlite_engine: Any) -> None:
    """It runs on the loop: with the only pool thread held by a sync task, it can still run."""
    proxy = TestProxy(sync_threads=1)
    proxy.handle_graph("block", chain("Block", "Block"))
    proxy.handle_graph("free", chain("Free", "Free"))
    holding, release = threading.Event(), threading.Event()

    def block(flow: Flow) -> None:
        holding.set()
        flow.set("released", release.wait(WAIT))

    class Free:
        async def __call__(self, flow: Flow) -> None:
            release.set()

    proxy.handle_task("Block", block)
    proxy.handle_task("Free", Free())
    engine = await sqlite_engine(proxy)
    blocked = await engine.create("block")
    await until(holding.is_set)
    await engine.run("free", timeout=WAIT)
    assert (await engine.wait(blocked, timeout=WAIT)).state == {"released": True}


async def test_the_sync_pool_closes_when_the_last_engine_using_the_proxy_stops(sqlite_engine: Any) -> None:
    proxy = _proxy("A")
    workers: list[threading.Thread] = []
    proxy.handle_task("A", lambda flow: workers.append(threading.current_thread()))
    first = await sqlite_engine(proxy)
    second = await sqlite_engine(proxy)
    await first.run("flow", timeout=WAIT)
    await first.shutdown()
    await second.run("flow", timeout=WAIT)
    assert all(worker.is_alive() for worker in workers)  # one engine still uses the pool
    await second.shutdown()
    await until(lambda: not any(worker.is_alive() for worker in workers))


# --- flow-stopped callbacks ---


async def test_a_failing_flow_stopped_callback_does_not_stop_the_others(sqlite_engine: Any) -> None:
    proxy = _proxy("A")
    proxy.handle_task("A", lambda flow: None)
    seen: list[str] = []

    async def broken(key: str, outcome: FlowOutcome) -> None:
        raise RuntimeError("callback bug")

    proxy.on_flow_stopped(broken)
    proxy.on_flow_stopped(lambda key, outcome: seen.append(key))
    engine = await sqlite_engine(proxy)
    key, _ = await engine.run("flow", options=FlowOptions(notify_on_stop=True), timeout=WAIT)
    await until(lambda: seen == [key])


async def test_a_sync_flow_stopped_callback_runs_in_a_worker_thread(sqlite_engine: Any) -> None:
    proxy = _proxy("A")
    proxy.handle_task("A", lambda flow: None)
    threads: list[int] = []
    proxy.on_flow_stopped(lambda key, outcome: threads.append(threading.get_ident()))
    engine = await sqlite_engine(proxy)
    await engine.run("flow", options=FlowOptions(notify_on_stop=True), timeout=WAIT)
    await until(lambda: bool(threads))
    assert threads[0] != threading.get_ident()


# --- peer links ---


async def test_engines_sharing_a_proxy_hear_each_other_without_add_peer(
    request: pytest.FixtureRequest,
) -> None:
    proxy = _proxy("A")
    proxy.handle_task("A", lambda flow: None)
    name = isolated_name(request.node.nodeid)
    runner = Engine(host=proxy, dsn="sqlite://:memory:", in_test=name)
    watcher = Engine(host=proxy, dsn="sqlite://:memory:", in_test=name, workers=0)
    async with runner, watcher:
        to_runner, to_watcher = record_signals(runner), record_signals(watcher)
        await runner.run("flow", timeout=WAIT)
        await until(lambda: "flow-stopped" in to_watcher)
        assert to_runner == []


async def test_add_peer_links_an_engine_whose_host_is_another(sqlite_engine: Any) -> None:
    proxy = _proxy("A")
    proxy.handle_task("A", lambda flow: None)
    runner = await sqlite_engine(proxy)
    watcher = await sqlite_engine(LocalHost(), workers=0)
    to_watcher = record_signals(watcher)
    proxy.add_peer(watcher)
    await runner.run("flow", timeout=WAIT)
    await until(lambda: "flow-stopped" in to_watcher)


async def test_add_peer_outside_an_event_loop_links_the_engine_once_it_started(sqlite_engine: Any) -> None:
    proxy = _proxy("A")
    proxy.handle_task("A", lambda flow: None)
    watcher = await sqlite_engine(LocalHost(), workers=0, start=False)
    await asyncio.to_thread(proxy.add_peer, watcher)  # a thread without a running loop
    await watcher.startup()
    to_watcher = record_signals(watcher)
    runner = await sqlite_engine(proxy)
    await runner.run("flow", timeout=WAIT)
    await until(lambda: "flow-stopped" in to_watcher)


# --- the module boundary ---


TESTPROXY_MODULE = "dwarf.engine.testproxy"


def _imported_modules(path: Path) -> set[str]:
    """The absolute names ``path`` imports: modules, ``from package import name`` targets, and string
    constants naming a module (``importlib.import_module``, ``monkeypatch.setattr`` targets)."""
    parts = path.relative_to(ROOT).with_suffix("").parts
    package = list(parts[1:-1] if parts[0] == "src" else parts[:-1])
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: resolved against the file's own package
                anchor = package[: len(package) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            names.add(base)
            names.update(f"{base}.{alias.name}" for alias in node.names)
        elif (
            isinstance(node, ast.Constant) and isinstance(node.value, str) and node.value.startswith("dwarf.")
        ):
            names.add(node.value)
    return names


def test_no_module_but_the_package_re_exports_imports_the_testproxy_module() -> None:
    """Production code must not depend on the test double: TestProxy is reached as dwarf.TestProxy or
    dwarf.engine.TestProxy, and the signal-sender contextvar lives in dwarf.engine.signals."""
    allowed = {
        ROOT / "src/dwarf/engine/testproxy.py",
        ROOT / "src/dwarf/__init__.py",
        ROOT / "src/dwarf/engine/__init__.py",
        Path(__file__).resolve(),  # names the module in a constant, to look for it
    }
    sources = [
        path
        for folder in ("src", "tests", "examples", "bench")
        for path in sorted((ROOT / folder).rglob("*.py"))
        if path not in allowed
    ]
    assert len(sources) > 50
    offenders = [
        str(path.relative_to(ROOT))
        for path in sources
        if any(
            name == TESTPROXY_MODULE or name.startswith(f"{TESTPROXY_MODULE}.")
            for name in _imported_modules(path)
        )
    ]
    assert offenders == []


@pytest_asyncio.fixture
async def sqlite_engine(request: pytest.FixtureRequest) -> AsyncIterator[Callable[..., Awaitable[Engine]]]:
    """Like ``make_engine`` on SQLite only: for tests whose subject is the host, not the database."""
    async with engine_factory(isolated_name(request.node.nodeid), dsn="sqlite://:memory:") as make:
        yield make
