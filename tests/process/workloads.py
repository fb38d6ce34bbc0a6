"""Small workloads of the crash tests: graphs and tasks whose behaviour a test steers with marker files.

Each ``*_host`` function takes the marker directory shared by the test and its replica processes and
returns the replica's host (``tests.process.replica --workload tests.process.workloads:killable_host``).
"""

from __future__ import annotations

import asyncio
import os
import random
import signal
import time
import uuid
from pathlib import Path
from typing import Any

from dwarf import END, Flow, Graph, TestProxy

KILLABLE_BUDGET = 1.0
"""Time budget of a killable flow: with the replicas' lease margin its lease lasts ~1.2 s."""


def killable_graph() -> Graph:
    graph = Graph("killable")
    for name in ("A", "B", "C"):
        graph.add_task(name, f"killable/{name.lower()}")
    graph.add_transition_chain("A", "B", "C", END)
    return graph


def killable_host(markers: Path) -> TestProxy:
    """Chain A -> B -> C, each counting its runs in state. B writes ``b-started`` and then blocks, unless
    ``b-fast`` exists: a test kills the process while B blocks, then lets a fresh engine finish the flow.
    """
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


def stall_graph() -> Graph:
    graph = Graph("stall")
    graph.add_task("Work", "stall/work")
    graph.add_task("After", "stall/after")
    graph.add_transition_chain("Work", "After", END)
    return graph


def _first_to_claim(path: Path) -> bool:
    """True for exactly one caller across all processes: the one that created ``path``."""
    try:
        os.close(os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
    except FileExistsError:
        return False
    return True


def stalling_host(markers: Path) -> TestProxy:
    """Chain Work -> After. Work records which process ran it (``ranBy``: the pid) and counts runs.

    The first execution of Work anywhere writes ``work-started`` (holding its pid), waits
    ``holdSeconds`` (from the state) and, when the state says ``stopSelf``, pauses its own process with
    SIGSTOP as its last act: the task's work is done, and the engine's commit of it is pending behind
    the pause. Later executions (the rescue on another replica) run straight through.
    """
    host = TestProxy()
    host.handle_graph("stall", stall_graph())

    @host.task("stall/work")
    async def work(flow: Flow) -> None:
        flow.set("ranBy", os.getpid())
        flow.set("workRuns", flow.get_int("workRuns") + 1)
        if not _first_to_claim(markers / "work-first-run"):
            return
        (markers / "work-started").write_text(str(os.getpid()))
        await asyncio.sleep(flow.get_float("holdSeconds"))
        if flow.get_bool("stopSelf"):
            os.kill(os.getpid(), signal.SIGSTOP)

    @host.task("stall/after")
    async def after(flow: Flow) -> None:
        flow.set("afterRuns", flow.get_int("afterRuns") + 1)

    return host


GROWING_BIG = "x" * 12_000
"""A state field large enough that the growing flow's steps store their states as deltas."""


def growing_graph() -> Graph:
    graph = Graph("growing")
    graph.add_task("Turn", "growing/turn")
    graph.add_transition_goto("Turn", "Turn")
    graph.add_transition("Turn", END)
    return graph


def growing_host(markers: Path) -> TestProxy:
    """One node looping on itself: each turn appends its number to ``items`` (flow.append) and counts
    ``turn`` up to ``target``, so the chain's states are deltas (``big`` makes the state large).

    The turn numbered ``blockAt`` (from the state; -1 for none) writes ``turn-blocked`` and blocks,
    unless ``growing-fast`` exists; every turn sleeps ``turnSeconds`` (from the state) and logs its
    execution to ``growing-<pid>.log``, so a test can kill a replica while the chain runs.
    """
    host = TestProxy()
    host.handle_graph("growing", growing_graph())

    @host.task("growing/turn")
    async def turn(flow: Flow) -> None:
        done = flow.get_int("turn")
        with (markers / f"growing-{os.getpid()}.log").open("a") as log:
            log.write(f"{done}\n")
        if done == flow.get_int("blockAt") and not (markers / "growing-fast").exists():
            (markers / "turn-blocked").write_text(flow.step_key)
            await asyncio.sleep(3600)
        await asyncio.sleep(flow.get_float("turnSeconds"))
        if not flow.has("big"):
            flow.set("big", GROWING_BIG)
        flow.append("items", done)
        flow.set("turn", done + 1)
        if done + 1 < flow.get_int("target"):
            flow.goto("Turn")

    return host


def keyed_graph() -> Graph:
    graph = Graph("keyed")
    graph.add_task("Work", "keyed/work")
    graph.add_transition("Work", END)
    return graph


def keyed_host(markers: Path) -> TestProxy:
    """One task that counts its runs (``runs``) and takes ``workSeconds`` (from the state): the flows of
    the idempotent-create race, which replicas create with ``--keyed-creates``."""
    host = TestProxy()
    host.handle_graph("keyed", keyed_graph())

    @host.task("keyed/work")
    async def work(flow: Flow) -> None:
        flow.set("runs", flow.get_int("runs") + 1)
        await asyncio.sleep(flow.get_float("workSeconds"))

    return host


SCHEDULE_CHAOS = "schedule-chaos"
"""While this marker exists, a ``dying_schedule_host`` replica SIGKILLs itself right after one of its
ticks' flows was created, before the schedule moved on to its next tick."""


def schedule_host(markers: Path) -> TestProxy:
    """``ticked``: one task counting its runs, the flows of the schedule-kill test."""
    host = TestProxy()
    host.handle_graph("ticked", _one_task_graph("ticked", "ticked/mark"))

    @host.task("ticked/mark")
    async def mark(flow: Flow) -> None:
        flow.set("runs", flow.get_int("runs") + 1)

    return host


def dying_schedule_host(markers: Path) -> TestProxy:
    """``schedule_host`` for replica processes only: while ``SCHEDULE_CHAOS`` exists, the process kills
    itself right after its 1st to 3rd tick's flow was created (committed), before the ticker moves the
    schedule on: the window in which an engine's death must neither lose the tick nor double it.

    The kill comes from a wrapper around the ticker's ``create_flow``, installed in this process only.
    """
    from dwarf.engine import ticker

    create = ticker.create_flow
    fatal = random.Random(os.getpid()).randint(1, 3)
    created = 0

    async def create_then_die(*args: Any, **kwargs: Any) -> str:
        nonlocal created
        key = await create(*args, **kwargs)
        if (markers / SCHEDULE_CHAOS).exists():
            created += 1
            if created == fatal:
                (markers / f"self-killed-{os.getpid()}").write_text(key)
                os.kill(os.getpid(), signal.SIGKILL)
        return key

    ticker.create_flow = create_then_die  # type: ignore[assignment]
    return schedule_host(markers)


def waits_host(markers: Path) -> TestProxy:
    """Timers that must fire after a crash (docs/waits.md): ``probe`` (one quick task, to know a worker
    claims), ``doomed`` (a task that writes ``doomed-<flow>-<pid>`` and blocks: created with a deadline),
    ``asking`` (an interrupt with the timeout ``timeout`` from the state) and ``paying`` (a wait for the
    signal "paid" with that timeout). After a timed wait the ``Expired`` or ``Answered`` task writes
    ``<node>-<flow>-<unique>`` for every run, so a test counts how often each flow went on.
    """
    host = TestProxy()
    host.handle_graph("probe", _one_task_graph("probe", "waits/probe"))
    host.handle_graph("doomed", _one_task_graph("doomed", "waits/block"))
    for name, wait in (("asking", "waits/ask"), ("paying", "waits/pay")):
        graph = Graph(name)
        graph.add_task("Wait", wait)
        graph.add_task("Expired", "waits/expired")
        graph.add_task("Answered", "waits/answered")
        graph.add_transition_switch("Wait", "Expired", "timedOut")
        graph.add_transition_switch("Wait", "Answered", "true")
        graph.add_transition("Expired", END)
        graph.add_transition("Answered", END)
        host.handle_graph(name, graph)

    def flow_name(flow: Flow) -> str:
        return "-".join(flow.flow_key.split("-")[:2])  # the token-free correlation id

    @host.task("waits/probe")
    async def probe(flow: Flow) -> None:
        flow.set("ranBy", os.getpid())

    @host.task("waits/block")
    async def block(flow: Flow) -> None:
        (markers / f"doomed-{flow_name(flow)}-{os.getpid()}").write_text("")
        await asyncio.sleep(3600)

    @host.task("waits/ask")
    async def ask(flow: Flow) -> None:
        answer = flow.interrupt({"question": "approve?"}, timeout=flow.get_float("timeout"))
        flow.set("timedOut", answer.get("timedOut", False))

    @host.task("waits/pay")
    async def pay(flow: Flow) -> None:
        answer = flow.wait_for_signal("paid", timeout=flow.get_float("timeout"))
        flow.set("timedOut", answer.get("timedOut", False))

    def went_on(node: str) -> Any:
        async def handler(flow: Flow) -> None:
            (markers / f"{node}-{flow_name(flow)}-{uuid.uuid4().hex}").write_text(str(os.getpid()))
            flow.set("wentOn", node)

        return handler

    host.handle_task("waits/expired", went_on("expired"))
    host.handle_task("waits/answered", went_on("answered"))
    return host


def _one_task_graph(name: str, url: str) -> Graph:
    graph = Graph(name)
    graph.add_task("Work", url)
    graph.add_transition("Work", END)
    return graph


def retention_graphs(host: TestProxy) -> None:
    """``retained``: a chain of three tasks (three step rows); ``ask``: one task that interrupts."""
    graph = Graph("retained")
    for name in ("A", "B", "C"):
        graph.add_task(name, "retained/step")
    graph.add_transition_chain("A", "B", "C", END)
    host.handle_graph("retained", graph)
    ask = Graph("ask")
    ask.add_task("Ask", "retained/ask")
    ask.add_transition("Ask", END)
    host.handle_graph("ask", ask)

    @host.task("retained/step")
    async def step(flow: Flow) -> None:
        flow.set("steps", flow.get_int("steps") + 1)

    @host.task("retained/ask")
    async def ask_task(flow: Flow) -> None:
        flow.interrupt({"question": "keep me?"})


RETENTION_MARK_PAUSE = 0.05
"""Seconds the throttled replica pauses after each statement that marks flows whose retention ran out."""
REAP_PAUSE = 0.01
"""Seconds it pauses after each reaper transaction (one row each)."""


def retention_host(markers: Path) -> TestProxy:
    """The retention graphs, in a replica whose retention pass marks two flows per statement and whose
    reaper deletes one row per transaction, each followed by a pause: a purge takes seconds, so a test
    can kill the process while some flows are marked, some rows reaped and some due flows not marked yet.
    (The replica process is the test's own: its store classes are patched for it alone.)"""
    import dwarf.engine.reaper
    import dwarf.engine.retention
    from dwarf.store.postgres import PostgresStore
    from dwarf.store.sqlite import SQLiteStore

    dwarf.engine.retention.RETENTION_BATCH = 2
    dwarf.engine.reaper.REAP_BATCH = 1
    for store_class in (SQLiteStore, PostgresStore):
        _throttle(store_class)
    host = TestProxy()
    retention_graphs(host)
    return host


def _throttle(store_class: Any) -> None:
    write, run = store_class.write, store_class.run

    async def throttled_write(self: Any, query: str, **params: Any) -> Any:
        rows = await write(self, query, **params)
        if query == "mark_retention_due":
            await asyncio.sleep(RETENTION_MARK_PAUSE)
        return rows

    async def throttled_run(self: Any, work: Any, *, write: bool = True) -> Any:
        result = await run(self, work, write=write)
        if getattr(work, "__name__", "") == "_reap_batch":
            await asyncio.sleep(REAP_PAUSE)
        return result

    store_class.write = throttled_write
    store_class.run = throttled_run


CODEC_KEY1 = bytes(range(32))
CODEC_KEY2 = bytes(range(64, 96))


def codec_first_key(markers: Path) -> list[Any]:
    """Compression, then encryption under key k1 (the codec kill test)."""
    from dwarf import AESGCMCodec, ZlibCodec

    return [ZlibCodec(), AESGCMCodec({"k1": CODEC_KEY1})]


def codec_rotated(markers: Path) -> list[Any]:
    """The same codecs after a rotation: k1 still decrypts, k2 encrypts."""
    from dwarf import AESGCMCodec, ZlibCodec

    return [ZlibCodec(), AESGCMCodec({"k1": CODEC_KEY1, "k2": CODEC_KEY2}, current="k2")]


def limited_host(markers: Path) -> TestProxy:
    """One task whose runs a test lines up across processes: each run appends ``enter`` and, when it
    ends, ``exit`` lines (``EVENT FAIRNESS_KEY PID WALL_TIME STEP_KEY``) to ``limited.log``. A run whose
    state says ``block`` waits until ``limited-unblock`` exists (a test kills its process meanwhile);
    every run takes ``holdSeconds`` (from the state) and counts itself in ``runs``."""
    host = TestProxy()
    host.handle_graph("limited", _one_task_graph("limited", "limited/hold"))

    def note(event: str, flow: Flow) -> None:
        line = f"{event} {flow.get_str('key')} {os.getpid()} {time.time():.6f} {flow.step_key}\n"
        # One write per line on a file opened for appending: lines of several processes do not mix.
        with (markers / "limited.log").open("a") as log:
            log.write(line)

    @host.task("limited/hold")
    async def hold(flow: Flow) -> None:
        note("enter", flow)
        flow.set("runs", flow.get_int("runs") + 1)
        # A marker file of the test's process: nothing to wait on but the file system.
        while flow.get_bool("block") and not (markers / "limited-unblock").exists():  # noqa: ASYNC110
            await asyncio.sleep(0.02)
        await asyncio.sleep(flow.get_float("holdSeconds"))
        note("exit", flow)

    return host
