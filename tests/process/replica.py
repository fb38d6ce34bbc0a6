"""A replica process for the process-kill tests: runs an engine on a DSN until it is killed.

Usage: python -m tests.process.replica DSN MARKER_DIR [create]

With ``create`` it starts one flow of the ``killable`` graph and prints its key. Task B writes
``MARKER_DIR/b-started`` and then blocks, unless ``MARKER_DIR/b-fast`` exists: the test kills the process
while B blocks, then lets a fresh engine finish the flow.
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

from dwarf import END, Engine, Flow, FlowOptions, Graph, TestProxy

LEASE_MARGIN = 0.2
TIME_BUDGET = 1.0


def killable_graph() -> Graph:
    graph = Graph("killable")
    for name in ("A", "B", "C"):
        graph.add_task(name, f"killable/{name.lower()}")
    graph.add_transition_chain("A", "B", "C", END)
    return graph


def build_host(markers: Path) -> TestProxy:
    host = TestProxy()
    host.handle_graph("killable", killable_graph())

    @host.task("killable/a")
    async def a(flow: Flow) -> None:
        flow.set("aRuns", flow.get_int("aRuns") + 1)

    @host.task("killable/b")
    async def b(flow: Flow) -> None:
        flow.set("bRuns", flow.get_int("bRuns") + 1)
        if not (markers / "b-fast").exists():
            (markers / "b-started").write_text(flow.step_key)
            await asyncio.sleep(3600)

    @host.task("killable/c")
    async def c(flow: Flow) -> None:
        flow.set("cRuns", flow.get_int("cRuns") + 1)

    return host


async def run(dsn: str, markers: Path, create: bool) -> None:
    engine = Engine(host=build_host(markers), dsn=dsn)
    await engine.startup()
    assert engine._scheduler is not None
    engine._scheduler.lease_margin = LEASE_MARGIN
    if create:
        key = await engine.create("killable", {}, FlowOptions(time_budget=TIME_BUDGET))
        print(key, flush=True)
    await asyncio.Event().wait()  # until killed


if __name__ == "__main__":
    asyncio.run(run(sys.argv[1], Path(sys.argv[2]), len(sys.argv) > 3 and sys.argv[3] == "create"))
