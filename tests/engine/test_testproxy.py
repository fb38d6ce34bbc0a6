"""TestProxy (API.md): the in-process Host — graph and task registries, the task decorator, sync handlers
run in a worker thread, the flow-stopped callback."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

from dwarf import Flow, FlowOptions, FlowOutcome, Status, current_baggage
from dwarf.engine import TestProxy
from tests.engine.graphs import WAIT, chain, until


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
