"""Reusable graph builders and small helpers for the engine tests.

Task URLs are the node names themselves, so ``proxy.handle_task("B", ...)`` serves node ``B``. Every wait
in the engine tests is bounded: ``WAIT`` seconds for a flow that should stop promptly.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import replace
from types import TracebackType
from typing import Any

from dwarf import END, Flow, FlowStep, Graph, Reducer, Status
from dwarf.engine import Engine, SchedulerTuning, TestProxy

WAIT = 10.0
"""Upper bound (seconds) on any wait for a flow that is expected to stop soon."""

Handler = Callable[[Flow], Awaitable[None]]


def graph_of(name: str, *nodes: str) -> Graph:
    """A graph with the given task nodes (URL = node name) and no transitions yet."""
    graph = Graph(name)
    for node in nodes:
        graph.add_task(node, node)
    return graph


def chain(name: str, *nodes: str) -> Graph:
    """``nodes[0] -> nodes[1] -> ... -> END``."""
    graph = graph_of(name, *nodes)
    graph.add_transition_chain(*nodes, END)
    return graph


def fan_out(name: str = "FanOut", branches: Iterable[str] = ("B", "C"), join: str = "J") -> Graph:
    """``A`` fans out to every branch; the branches meet at fan-in ``join``; then END."""
    names = list(branches)
    graph = graph_of(name, "A", *names, join)
    graph.add_transition_fan_out("A", *names)
    for branch in names:
        graph.add_transition(branch, join)
    graph.set_fan_in(join)
    graph.add_transition(join, END)
    return graph


def for_each(
    name: str = "ForEach", field: str = "items", as_: str = "item", reducers: dict[str, Reducer] | None = None
) -> Graph:
    """``Split`` runs one ``Work`` branch per element of ``field``; they meet at fan-in ``Join``; END."""
    graph = graph_of(name, "Split", "Work", "Join")
    graph.add_transition_for_each("Split", "Work", field, as_)
    graph.add_transition("Work", "Join")
    graph.set_fan_in("Join")
    graph.add_transition("Join", END)
    for state_field, reducer in (reducers or {}).items():
        graph.set_reducer(state_field, reducer)
    return graph


async def noop(flow: Flow) -> None:
    """A task that changes nothing."""


def setter(**values: Any) -> Handler:
    """A task that sets the given fields."""

    async def handler(flow: Flow) -> None:
        for key, value in values.items():
            flow.set(key, value)

    return handler


def incrementer(field: str = "count") -> Handler:
    """A task that increments an integer field: the state then counts the task's committed executions."""

    async def handler(flow: Flow) -> None:
        flow.set(field, flow.get_int(field) + 1)

    return handler


def tracer(calls: list[str], name: str, field: str = "trail") -> Handler:
    """A task that appends ``name`` to the Python list ``calls`` and to the state list ``field``."""

    async def handler(flow: Flow) -> None:
        calls.append(name)
        flow.set(field, [*flow.get(field, []), name])

    return handler


def failing(message: str) -> Handler:
    """A task that raises RuntimeError(message)."""

    async def handler(flow: Flow) -> None:
        raise RuntimeError(message)

    return handler


class Gate:
    """An asyncio event a task can block on, recording that it started.

    ``entered`` is set when a task reaches the gate; the task then waits until ``open()`` (or until the
    bound ``hold`` seconds pass, so that nothing in a test can hang forever).
    """

    def __init__(self, hold: float = WAIT) -> None:
        self.entered = asyncio.Event()
        self._open = asyncio.Event()
        self._hold = hold
        self.passes = 0

    def open(self) -> None:
        self._open.set()

    async def pass_through(self) -> None:
        self.entered.set()
        async with asyncio.timeout(self._hold):
            await self._open.wait()
        self.passes += 1

    async def task(self, flow: Flow) -> None:
        """A task handler that only passes through the gate."""
        await self.pass_through()

    async def wait_entered(self, timeout: float = WAIT) -> None:
        async with asyncio.timeout(timeout):
            await self.entered.wait()


async def wait_until(
    condition: Callable[[], Awaitable[bool]], timeout: float = WAIT, interval: float = 0.02
) -> None:
    """Poll ``condition`` until it holds; TimeoutError after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not await condition():
        if time.monotonic() > deadline:
            raise TimeoutError("condition not met in time")
        await asyncio.sleep(interval)


async def until(condition: Callable[[], bool], timeout: float = WAIT) -> None:
    """Poll a plain (non-async) ``condition`` until it holds; TimeoutError after ``timeout`` seconds."""

    async def holds() -> bool:
        return condition()

    await wait_until(holds, timeout, interval=0.01)


async def not_refused(cases: dict[str, Any], error: type[Exception]) -> list[str]:
    """Run each zero-argument coroutine factory; return the cases that did not raise ``error`` (a bad-input
    test asserts the list is empty)."""
    accepted = []
    for case, call in cases.items():
        try:
            await call()
        except error:
            continue
        except Exception as other:
            accepted.append(f"{case}: {type(other).__name__}: {other}")
        else:
            accepted.append(f"{case}: no error")
    return accepted


async def steps_named(engine: Engine, flow_key: str, task_name: str) -> list[FlowStep]:
    """The history entries of ``task_name`` in a flow."""
    return [step for step in await engine.history(flow_key) if step.task_name == task_name]


async def wait_for_step(
    engine: Engine, flow_key: str, task_name: str, status: Status, timeout: float = WAIT
) -> FlowStep:
    """Wait until a step of ``task_name`` has ``status``; return it."""
    found: list[FlowStep] = []

    async def reached() -> bool:
        found[:] = [s for s in await steps_named(engine, flow_key, task_name) if s.status == status]
        return bool(found)

    await wait_until(reached, timeout)
    return found[0]


def proxy_with(url: str, graph: Graph, **handlers: Handler | Callable[[Flow], None]) -> TestProxy:
    """A TestProxy serving ``graph`` at ``url`` and each handler at the task URL of its keyword."""
    proxy = TestProxy()
    proxy.handle_graph(url, graph)
    for task_url, handler in handlers.items():
        proxy.handle_task(task_url, handler)
    return proxy


class Replicas:
    """Engines on one shared database (a DSN that outlives them), built and shut down by the test.

    For restart and crash tests: ``make_engine``'s in-test databases are dropped when their last engine
    stops, so tests that stop one engine and start the next use ``fresh_dsn`` and this helper instead::

        async with Replicas(proxy, fresh_dsn) as replicas:
            first = await replicas.start()
            ...
            await first.shutdown(drain_timeout=0)
            second = await replicas.start()
    """

    def __init__(self, host: Any, dsn: str) -> None:
        self._host = host
        self._dsn = dsn
        self._engines: list[Engine] = []

    async def start(self, *, lease_period: float | None = None, **settings: Any) -> Engine:
        """A started engine on the shared database; ``lease_period`` shortens how long a claim holds a step
        without renewal (so that a crashed replica's steps come back quickly)."""
        if lease_period is not None:
            tuning = settings.pop("scheduler_tuning", SchedulerTuning())
            settings["scheduler_tuning"] = replace(tuning, lease_period=lease_period)
        engine = Engine(host=self._host, dsn=self._dsn, **settings)
        self._engines.append(engine)
        await engine.startup()
        return engine

    async def __aenter__(self) -> Replicas:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        for engine in reversed(self._engines):
            await engine.shutdown(drain_timeout=0)


def record_signals(engine: Engine) -> list[str]:
    """Spy on the signals handed to ``engine`` (the ops, in order), still delivering each one."""
    received: list[str] = []
    deliver = engine.deliver_signal

    async def recording(op: str, payload: bytes) -> None:
        received.append(op)
        await deliver(op, payload)

    engine.deliver_signal = recording  # type: ignore[method-assign]
    return received
