"""Retention built in (docs/operations.md#retention): FlowOptions.retain_for, the engine's default, and
delete_on_completion's grace window purge ended flows through the retention pass and the reaper."""

from __future__ import annotations

import asyncio
import math
from datetime import timedelta
from typing import Any

import pytest

import dwarf.engine.retention
from dwarf import (
    KEEP_FOREVER,
    BadRequestError,
    Flow,
    FlowOptions,
    NotFoundError,
    Query,
    SchedulerTuning,
    Status,
)
from dwarf.engine import Engine, TestProxy
from tests.engine.graphs import WAIT, Gate, failing, noop, wait_until
from tests.engine.graphs_parallel import (
    calls_subgraph,
    row_counts,
    single,
    summaries,
    wait_until_gone,
)

SHORT = 0.3
"""A retention that runs out during the test."""
FAST = SchedulerTuning(retention_poll=0.1)
"""Retention passes look at the database every 0.1 s (the default is a minute)."""


def _proxy(gate: Gate | None = None) -> TestProxy:
    """``one`` (a task), ``fails``, ``ask`` (interrupts), ``parent`` (runs ``child``), and with a
    ``gate`` ``blocked`` (one task that waits at it)."""
    proxy = TestProxy()
    if gate is not None:
        proxy.handle_graph("blocked", single("Blocked", "B"))
        proxy.handle_task("B", gate.task)
    proxy.handle_graph("one", single("One", "A"))
    proxy.handle_graph("fails", single("Fails", "F"))
    proxy.handle_graph("ask", single("Ask", "Q"))
    proxy.handle_graph("parent", single("Parent", "Call"))
    proxy.handle_graph("child", single("ChildFlow", "A"))
    proxy.handle_task("A", noop)
    proxy.handle_task("F", failing("boom"))
    proxy.handle_task("Call", calls_subgraph("child"))

    async def ask(flow: Flow) -> None:
        flow.interrupt({"question": "?"})

    proxy.handle_task("Q", ask)
    return proxy


async def _exists(engine: Engine, key: str) -> bool:
    try:
        await engine.snapshot(key)
    except NotFoundError:
        return False
    return True


async def _settled(engine: Engine, expected: tuple[int, int]) -> None:
    """Wait until the reaper brought the row counts down to ``expected`` (flows, steps)."""

    async def reached() -> bool:
        return await row_counts(engine) == expected

    await wait_until(reached)


async def test_a_completed_flow_is_purged_once_its_retention_ran_out(make_engine: Any) -> None:
    engine = await make_engine(_proxy(), scheduler_tuning=FAST)
    key, outcome = await engine.run("one", options=FlowOptions(retain_for=SHORT), timeout=WAIT)
    assert outcome.status == Status.COMPLETED
    assert await _exists(engine, key)  # not before its time
    await wait_until_gone(engine, key)
    await _settled(engine, (0, 0))


async def test_failed_and_cancelled_flows_are_purged_by_their_retention(make_engine: Any) -> None:
    gate = Gate()
    engine = await make_engine(_proxy(gate), scheduler_tuning=FAST)
    options = FlowOptions(retain_for=timedelta(seconds=SHORT))
    failed, outcome = await engine.run("fails", options=options, timeout=WAIT)
    assert outcome.status == Status.FAILED
    cancelled = await engine.create("blocked", options=options)
    await gate.wait_entered()
    await engine.cancel(cancelled, "no longer needed")
    gate.open()
    await wait_until_gone(engine, failed)
    await wait_until_gone(engine, cancelled)
    await _settled(engine, (0, 0))


async def test_the_engine_default_applies_to_flows_without_their_own(make_engine: Any) -> None:
    engine = await make_engine(_proxy(), retain_for=SHORT, scheduler_tuning=FAST)
    defaulted, _ = await engine.run("one", timeout=WAIT)
    kept, _ = await engine.run("one", options=FlowOptions(retain_for=KEEP_FOREVER), timeout=WAIT)
    also_kept, _ = await engine.run("one", options=FlowOptions(retain_for=math.inf), timeout=WAIT)
    await wait_until_gone(engine, defaulted)
    assert await _exists(engine, kept) and await _exists(engine, also_kept)


async def test_without_a_retention_flows_are_kept(make_engine: Any) -> None:
    engine = await make_engine(_proxy(), scheduler_tuning=FAST)
    kept, _ = await engine.run("one", timeout=WAIT)
    failed, _ = await engine.run("fails", options=FlowOptions(delete_on_completion=True), timeout=WAIT)
    purged, _ = await engine.run("one", options=FlowOptions(retain_for=0), timeout=WAIT)
    await wait_until_gone(engine, purged)  # a pass ran after the others ended
    assert await _exists(engine, kept) and await _exists(engine, failed)
    assert await row_counts(engine) == (2, 2)


async def test_an_unfinished_flow_is_never_purged(make_engine: Any) -> None:
    gate = Gate()
    engine = await make_engine(_proxy(gate), retain_for=0, scheduler_tuning=FAST)
    interrupted, outcome = await engine.run("ask", timeout=WAIT)
    assert outcome.status == Status.INTERRUPTED
    running = await engine.create("blocked")
    await gate.wait_entered()
    done, _ = await engine.run("one", timeout=WAIT)
    await wait_until_gone(engine, done)
    await asyncio.sleep(0.3)  # passes go on meanwhile
    assert (await engine.snapshot(interrupted)).status == Status.INTERRUPTED
    assert (await engine.snapshot(running)).status == Status.RUNNING
    gate.open()
    assert (await engine.wait(running, timeout=WAIT)).status == Status.COMPLETED
    await engine.cancel(interrupted)
    await wait_until_gone(engine, running)
    await wait_until_gone(engine, interrupted)


async def test_a_child_flow_goes_with_its_root(make_engine: Any) -> None:
    engine = await make_engine(_proxy(), scheduler_tuning=FAST)
    key, outcome = await engine.run("parent", options=FlowOptions(retain_for=SHORT), timeout=WAIT)
    assert outcome.status == Status.COMPLETED
    [child] = [s for s in await summaries(engine, Query(include_subgraphs=True)) if s.subgraph]
    await wait_until_gone(engine, key)
    with pytest.raises(NotFoundError):
        await engine.snapshot(child.flow_key)
    await _settled(engine, (0, 0))


async def test_the_flows_of_a_thread_are_purged_each_by_its_own_retention(make_engine: Any) -> None:
    engine = await make_engine(_proxy(), scheduler_tuning=FAST)
    first, _ = await engine.run("one", options=FlowOptions(retain_for=SHORT), timeout=WAIT)
    second, _ = await engine.run(
        "one", options=FlowOptions(thread_key=first, retain_for=KEEP_FOREVER), timeout=WAIT
    )
    third = await engine.continue_thread(first)  # inherits the thread's latest flow's: kept
    assert (await engine.wait(third, timeout=WAIT)).status == Status.COMPLETED
    await wait_until_gone(engine, first)
    assert await _exists(engine, second) and await _exists(engine, third)


async def test_a_waiter_on_another_replica_reads_the_outcome_within_the_grace_window(
    make_engine: Any,
) -> None:
    gate = Gate()

    async def blocked(flow: Flow) -> None:
        await gate.pass_through()
        flow.set("done", True)

    proxy = _proxy()
    proxy.handle_graph("blocked", single("Blocked", "B"))
    proxy.handle_task("B", blocked)
    runner = await make_engine(proxy, deletion_grace=SHORT * 3, scheduler_tuning=FAST)
    watcher = await make_engine(proxy, workers=0)  # a replica that runs nothing, only waits
    key = await runner.create("blocked", options=FlowOptions(delete_on_completion=True))
    waiting = asyncio.ensure_future(watcher.wait(key, timeout=WAIT))
    await gate.wait_entered()
    gate.open()
    outcome = await waiting
    assert outcome.status == Status.COMPLETED and outcome.state == {"done": True}
    await wait_until_gone(watcher, key)


async def test_a_bad_retention_is_refused_and_creates_nothing(make_engine: Any) -> None:
    engine = await make_engine(_proxy())
    for bad in (-1, -0.5, timedelta(seconds=-1), float("nan"), True, "1h", [1]):
        with pytest.raises(BadRequestError):
            await engine.create("one", options=FlowOptions(retain_for=bad))
        with pytest.raises(BadRequestError):
            engine.set_retain_for(bad)
    assert await row_counts(engine) == (0, 0)


def test_engine_retention_settings_are_checked_and_read_back() -> None:
    engine = Engine(retain_for=timedelta(days=30), deletion_grace=5)
    assert engine.settings["retain_for"] == 30 * 86400
    assert engine.settings["deletion_grace"] == 5
    engine.set_retain_for(KEEP_FOREVER)
    assert engine.settings["retain_for"] is None
    assert Engine(**engine.settings).settings == engine.settings
    with pytest.raises(BadRequestError):
        engine.set_deletion_grace(-1)
    with pytest.raises(BadRequestError):
        engine.set_deletion_grace(math.inf)


async def test_a_keyed_flow_purged_by_its_retention_gives_its_key_up(make_engine: Any) -> None:
    engine = await make_engine(_proxy(), scheduler_tuning=FAST)
    options = FlowOptions(idempotency_key="order-7", retain_for=SHORT)
    first, _ = await engine.run("one", options=options, timeout=WAIT)
    assert await engine.create("one", options=options) == first
    await wait_until_gone(engine, first)
    second = await engine.create("one", options=options)
    assert second != first


class _ReadSpy:
    """Counts the retention pass's reads of one store."""

    def __init__(self, store: Any) -> None:
        self._read = store.read
        self.looks = 0

    async def read(self, query: str, **params: Any) -> Any:
        if query == "retention_due":
            self.looks += 1
        return await self._read(query, **params)


async def test_flows_without_a_retention_cost_the_pass_nothing(
    make_engine: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    engine = await make_engine(_proxy(), scheduler_tuning=SchedulerTuning(retention_poll=WAIT))
    [store] = engine.runtime.stores
    spy = _ReadSpy(store)
    monkeypatch.setattr(store, "read", spy.read)
    for _ in range(20):
        await engine.run("one", timeout=WAIT)
    await engine.run("one", options=FlowOptions(retain_for=3600), timeout=WAIT)
    # At most the pass every engine makes as it starts: ended flows wake the pass only when they are due
    # before its next poll.
    looks = spy.looks
    assert looks <= 1
    purged, _ = await engine.run("one", options=FlowOptions(retain_for=0), timeout=WAIT)
    await wait_until_gone(engine, purged)
    assert spy.looks == looks + 1


async def test_the_pass_marks_in_bounded_batches(make_engine: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(dwarf.engine.retention, "RETENTION_BATCH", 2)
    engine = await make_engine(_proxy(), scheduler_tuning=SchedulerTuning(retention_poll=WAIT))
    for _ in range(5):
        await engine.run("one", options=FlowOptions(retain_for=0), timeout=WAIT)
    await _settled(engine, (0, 0))
