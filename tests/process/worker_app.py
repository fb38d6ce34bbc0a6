"""The application that tests/process/test_dwarf_worker.py serves with `dwarf worker`.

The workflow ``relay`` is a chain of three tasks. Each takes ``STEP_SECONDS``, records the id of the process
that ran it in the state (``<task>_pid``) and appends ``<flow n> <task> start`` and ``... end`` lines to a
file per process in the directory named by ``WORKER_APP_MARKERS``: the test reads there which worker is in
the middle of a step, and that no step ran twice.
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

from dwarf import END, Flow, Graph
from dwarf.hosts.local import LocalHost

MARKERS_ENV = "WORKER_APP_MARKERS"
TASKS = ("First", "Second", "Third")
STEP_SECONDS = 0.5

host = LocalHost()


@host.workflow("relay")
def relay_graph() -> Graph:
    graph = Graph("relay")
    for name in TASKS:
        graph.add_task(name, f"relay/{name.lower()}")
    graph.add_transition_chain(*TASKS, END)
    return graph


def _mark(flow: Flow, task: str, event: str) -> None:
    markers = Path(os.environ[MARKERS_ENV])
    with open(markers / f"{os.getpid()}.log", "a") as log:
        log.write(f"{flow.get_int('n')} {task} {event}\n")


def _task(name: str) -> None:
    async def run(flow: Flow) -> None:
        _mark(flow, name, "start")
        await asyncio.sleep(STEP_SECONDS)
        flow.set(f"{name}_pid", os.getpid())
        _mark(flow, name, "end")

    host.add_task(f"relay/{name.lower()}", run)


for _name in TASKS:
    _task(_name)
