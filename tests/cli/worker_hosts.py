"""Hosts for tests/cli/test_worker.py: what `dwarf worker MODULE:HOST` references, right and wrong.

``host`` serves the workflow ``greet`` (Greet -> END): Greet waits ``pause`` seconds (0 unless the state
says), then records the process id that ran it and a greeting. ``blocking_host()`` builds a host whose
Greet waits until the test lets it go, for drains caught in the act.
"""

from __future__ import annotations

import asyncio
import os
from typing import Any

from dwarf import END, Flow, Graph
from dwarf.hosts.local import LocalHost


def greet_graph() -> Graph:
    graph = Graph("greet")
    graph.add_task("Greet", "greet")
    graph.add_transition("Greet", END)
    return graph


async def greet(flow: Flow) -> None:
    await asyncio.sleep(float(flow.get("pause", 0)))
    flow.set("pid", os.getpid())
    flow.set("greeting", f"hello, {flow.get('name', 'you')}")


def build_host() -> LocalHost:
    """A fresh host serving ``greet``: a zero-argument function returning a host is a valid reference."""
    built = LocalHost()
    built.add_workflow("greet", greet_graph)
    built.add_task("greet", greet)
    return built


host = build_host()


class GreetingHost(LocalHost):
    """A host class whose constructor takes no arguments: also a valid reference (called once)."""

    def __init__(self) -> None:
        super().__init__()
        self.add_workflow("greet", greet_graph)
        self.add_task("greet", greet)


class Blocking:
    """A host whose Greet waits for ``release``; ``started`` is set once a Greet runs."""

    def __init__(self) -> None:
        self.host = LocalHost()
        self.started = asyncio.Event()
        self.release = asyncio.Event()
        self.host.add_workflow("greet", greet_graph)

        @self.host.task("greet")
        async def wait_for_release(flow: Flow) -> None:
            self.started.set()
            await self.release.wait()
            flow.set("greeting", "released")


class SlowStartHost(LocalHost):
    """A host whose ``engine_started`` hook waits for ``release``: the engine stays starting meanwhile."""

    def __init__(self) -> None:
        super().__init__()
        self.add_workflow("greet", greet_graph)
        self.add_task("greet", greet)
        self.release = asyncio.Event()

    async def engine_started(self, engine: Any) -> None:
        await self.release.wait()
        await super().engine_started(engine)


NOT_A_HOST = 42
"""Neither a host nor callable."""


def returns_no_host() -> str:
    """Callable, but what it returns is no host."""
    return "a string"


def needs_arguments(name: str) -> LocalHost:
    """A factory that cannot be called with no arguments."""
    return LocalHost()
