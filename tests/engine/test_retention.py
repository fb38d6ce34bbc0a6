"""Retention (docs/flows.md#retention-delete-purge-retain_for-and-delete_on_completion): removing stopped
flows and their trees."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

import dwarf.engine.listing
import dwarf.engine.reaper
from dwarf import BadRequestError, ConflictError, Flow, FlowOptions, NotFoundError, Query, Status
from dwarf.engine import Engine, TestProxy
from tests.engine.graphs import WAIT, Gate, chain, failing, noop, proxy_with, wait_until
from tests.engine.graphs_parallel import (
    calls_subgraph,
    child_summaries,
    row_counts,
    single,
    summaries,
    wait_until_gone,
)


def _proxy() -> TestProxy:
    """``parent`` (Call runs ``child``), ``child`` (one task), ``one`` (one task), ``other`` (one task)."""
    proxy = TestProxy()
    proxy.handle_graph("parent", single("Parent", "Call"))
    proxy.handle_graph("child", chain("ChildFlow", "Child", "Child2"))
    proxy.handle_graph("one", single("One", "A"))
    proxy.handle_graph("other", single("Other", "A"))
    proxy.handle_task("Call", calls_subgraph("child"))
    proxy.handle_task("Child", noop)
    proxy.handle_task("Child2", noop)
    proxy.handle_task("A", noop)
    return proxy


async def _reaped(engine: Engine, flows: int = 0, steps: int = 0) -> None:
    """Wait until the reaper brought the row counts down to (flows, steps)."""

    async def done() -> bool:
        return await row_counts(engine) == (flows, steps)

    await wait_until(done)


async def test_delete_removes_a_stopped_root_flow_and_its_tree(make_engine: Any) -> None:
    engine = await make_engine(_proxy())
    key, outcome = await engine.run("parent", timeout=WAIT)
    assert outcome.status == Status.COMPLETED
    assert await row_counts(engine) == (2, 3)
    await engine.delete(key)
    assert await row_counts(engine) == (0, 0)
    assert await summaries(engine, Query(include_subgraphs=True)) == []


async def test_every_operation_on_a_deleted_flow_is_not_found(make_engine: Any) -> None:
    engine = await make_engine(_proxy())
    key, _ = await engine.run("parent", timeout=WAIT)
    [child] = await child_summaries(engine)
    [call] = await engine.history(key)
    child_step = call.sub_history[0].step_key
    await engine.delete(key)
    operations = {
        "snapshot": lambda k: engine.snapshot(k),
        "wait": lambda k: engine.wait(k, timeout=1),
        "history": lambda k: engine.history(k),
        "history_mermaid": lambda k: engine.history_mermaid(k),
        "fingerprint": lambda k: engine.fingerprint(k),
        "resume": lambda k: engine.resume(k, {}),
        "cancel": lambda k: engine.cancel(k),
        "delete": lambda k: engine.delete(k),
        "continue_thread": lambda k: engine.continue_thread(k),
        "create in thread": lambda k: engine.create("one", options=FlowOptions(thread_key=k)),
    }
    for flow_key in (key, child.flow_key):
        for name, operation in operations.items():
            with pytest.raises(NotFoundError):
                await operation(flow_key)
                pytest.fail(f"{name} did not raise NotFoundError")
    for step_key in (call.step_key, child_step):
        with pytest.raises(NotFoundError):
            await engine.step(step_key)
        with pytest.raises(NotFoundError):
            await engine.fork(step_key, {})


async def test_delete_of_a_running_flow_is_a_conflict(make_engine: Any) -> None:
    gate = Gate()

    engine = await make_engine(proxy_with("blocked", single("Blocked", "B"), B=gate.task))
    key = await engine.create("blocked")
    try:
        await gate.wait_entered()
        with pytest.raises(ConflictError):
            await engine.delete(key)
    finally:
        gate.open()
    assert (await engine.wait(key, timeout=WAIT)).status == Status.COMPLETED


async def test_delete_of_a_flow_whose_child_runs_is_a_conflict(make_engine: Any) -> None:
    gate = Gate()

    proxy = _proxy()
    proxy.handle_task("Child", gate.task)
    engine = await make_engine(proxy)
    key = await engine.create("parent")
    try:
        await gate.wait_entered()
        with pytest.raises(ConflictError):
            await engine.delete(key)
    finally:
        gate.open()
    assert (await engine.wait(key, timeout=WAIT)).status == Status.COMPLETED


async def test_delete_of_a_child_key_is_a_bad_request(make_engine: Any) -> None:
    engine = await make_engine(_proxy())
    key, _ = await engine.run("parent", timeout=WAIT)
    [child] = await child_summaries(engine)
    with pytest.raises(BadRequestError):
        await engine.delete(child.flow_key)
    assert (await engine.snapshot(child.flow_key)).status == Status.COMPLETED
    assert (await engine.snapshot(key)).status == Status.COMPLETED


async def test_purge_returns_the_number_of_matching_stopped_roots(make_engine: Any) -> None:
    engine = await make_engine(_proxy())
    for _ in range(3):
        await engine.run("one", timeout=WAIT)
    others = [(await engine.run("other", timeout=WAIT))[0] for _ in range(2)]
    assert await engine.purge(Query(workflow_url="one")) == 3
    assert sorted(s.flow_key for s in await summaries(engine)) == sorted(others)


async def test_purge_counts_roots_not_the_children_of_their_trees(make_engine: Any) -> None:
    engine = await make_engine(_proxy())
    await engine.run("parent", timeout=WAIT)
    await engine.run("parent", timeout=WAIT)
    assert await engine.purge(Query(include_subgraphs=True)) == 2
    assert await summaries(engine, Query(include_subgraphs=True)) == []


async def test_purge_never_marks_a_running_flow(make_engine: Any) -> None:
    gate = Gate()

    proxy = _proxy()
    proxy.handle_graph("blocked", single("Blocked", "B"))
    proxy.handle_task("B", gate.task)
    engine = await make_engine(proxy)
    done, _ = await engine.run("one", timeout=WAIT)
    running = await engine.create("blocked")
    try:
        await gate.wait_entered()
        assert await engine.purge(Query()) == 1
        assert [s.flow_key for s in await summaries(engine)] == [running]
    finally:
        gate.open()
    outcome = await engine.wait(running, timeout=WAIT)
    assert outcome.status == Status.COMPLETED
    with pytest.raises(NotFoundError):
        await engine.snapshot(done)


async def test_purge_never_marks_a_root_whose_child_is_running(make_engine: Any) -> None:
    gate = Gate()

    proxy = _proxy()
    proxy.handle_task("Child", gate.task)
    engine = await make_engine(proxy)
    key = await engine.create("parent")
    try:
        await gate.wait_entered()
        assert await engine.purge(Query()) == 0
        assert await engine.purge(Query(include_subgraphs=True)) == 0
    finally:
        gate.open()
    assert (await engine.wait(key, timeout=WAIT)).status == Status.COMPLETED


async def test_purged_flows_vanish_from_list_snapshot_and_history_at_once(make_engine: Any) -> None:
    engine = await make_engine(_proxy())
    key, _ = await engine.run("parent", timeout=WAIT)
    [call] = await engine.history(key)
    assert await engine.purge(Query()) == 1
    assert await summaries(engine, Query(include_subgraphs=True)) == []
    with pytest.raises(NotFoundError):
        await engine.snapshot(key)
    with pytest.raises(NotFoundError):
        await engine.history(key)
    with pytest.raises(NotFoundError):
        await engine.step(call.step_key)


async def test_reaper_removes_the_rows_of_purged_flows(make_engine: Any) -> None:
    engine = await make_engine(_proxy())
    await engine.run("parent", timeout=WAIT)
    for _ in range(3):
        await engine.run("one", timeout=WAIT)
    assert await row_counts(engine) == (5, 6)
    assert await engine.purge(Query()) == 4
    await _reaped(engine)


async def test_purge_marks_at_most_the_limit_per_call(
    make_engine: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(dwarf.engine.listing, "PURGE_LIMIT", 3)
    engine = await make_engine(_proxy())
    for _ in range(5):
        await engine.run("one", timeout=WAIT)
    assert await engine.purge(Query()) == 3
    assert len(await summaries(engine)) == 2
    assert await engine.purge(Query()) == 2
    assert await engine.purge(Query()) == 0
    assert await summaries(engine) == []


def test_purge_limit_is_4096() -> None:
    assert dwarf.engine.listing.PURGE_LIMIT == 4096


async def test_delete_on_completion_deletes_a_completed_flow_after_the_grace_window(
    make_engine: Any,
) -> None:
    engine = await make_engine(_proxy(), deletion_grace=0.3)
    key = await engine.create("parent", options=FlowOptions(delete_on_completion=True))
    await wait_until_gone(engine, key)
    await _reaped(engine)
    assert await summaries(engine, Query(include_subgraphs=True)) == []


async def test_run_with_delete_on_completion_returns_the_outcome_and_keeps_it_for_the_grace_window(
    make_engine: Any,
) -> None:
    engine = await make_engine(
        proxy_with("short", chain("Short", "A", "B"), A=noop, B=noop), deletion_grace=WAIT / 2
    )
    key, outcome = await engine.run("short", {"x": 1}, FlowOptions(delete_on_completion=True), timeout=WAIT)
    assert outcome.status == Status.COMPLETED and outcome.state == {"x": 1}
    # Within the grace window every read still finds it: another replica's waiter, a poller.
    assert (await engine.snapshot(key)).state == {"x": 1}
    assert (await engine.poll(key)).status == Status.COMPLETED
    assert len(await engine.history(key)) == 2


async def test_delete_on_completion_keeps_a_failed_flow(make_engine: Any) -> None:
    engine = await make_engine(proxy_with("fails", single("Fails", "F"), F=failing("boom")))
    key, outcome = await engine.run("fails", options=FlowOptions(delete_on_completion=True), timeout=WAIT)
    assert outcome.status == Status.FAILED
    await asyncio.sleep(0.2)  # a deletion would happen right after the stop
    snapshot = await engine.snapshot(key)
    assert snapshot.status == Status.FAILED
    assert snapshot.error == "boom"
    assert await row_counts(engine) == (1, 1)


async def test_delete_of_an_interrupted_flow_removes_it(make_engine: Any) -> None:
    async def ask(flow: Flow) -> None:
        flow.interrupt({"question": "?"})

    engine = await make_engine(proxy_with("ask", single("Ask", "Q"), Q=ask))
    key, outcome = await engine.run("ask", timeout=WAIT)
    assert outcome.status == Status.INTERRUPTED
    await engine.delete(key)
    with pytest.raises(NotFoundError):
        await engine.snapshot(key)
    assert await row_counts(engine) == (0, 0)


async def test_purge_marks_only_flows_matching_the_status_filter(make_engine: Any) -> None:
    proxy = _proxy()
    proxy.handle_graph("fails", single("Fails", "F"))
    proxy.handle_task("F", failing("boom"))
    engine = await make_engine(proxy)
    completed = [(await engine.run("one", timeout=WAIT))[0] for _ in range(2)]
    for _ in range(3):
        await engine.run("fails", timeout=WAIT)
    assert await engine.purge(Query(status="failed")) == 3
    assert sorted(s.flow_key for s in await summaries(engine)) == sorted(completed)


async def test_reaper_deletes_in_batches_until_nothing_is_left(
    make_engine: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(dwarf.engine.reaper, "REAP_BATCH", 2)
    engine = await make_engine(_proxy())
    await engine.run("parent", timeout=WAIT)
    for _ in range(4):
        await engine.run("one", timeout=WAIT)
    assert await row_counts(engine) == (6, 7)
    assert await engine.purge(Query()) == 5
    await _reaped(engine)


class _TxSpy:
    """A transaction that notes whether the reaper's last statement found nothing left to delete."""

    def __init__(self, tx: Any) -> None:
        self._tx = tx
        self.reaped_nothing = False

    def __getattr__(self, name: str) -> Any:
        return getattr(self._tx, name)

    async def execute(self, query: str, **params: Any) -> int:
        count: int = await self._tx.execute(query, **params)
        if query == "reap_marked_flows" and count == 0:
            self.reaped_nothing = True
        return count


class _ReaperPause:
    """Test instrumentation for a race: the first time the reaper commits a unit of work that found nothing
    left to delete, it is held right after the commit (before it decides to stop) until ``release``."""

    def __init__(self, store: Any) -> None:
        self._run = store.run
        self.finishing = asyncio.Event()
        self.release = asyncio.Event()

    async def run(self, work: Any, *, write: bool = True) -> Any:
        spy: list[_TxSpy] = []

        async def spied(tx: Any) -> Any:
            spy.append(_TxSpy(tx))
            return await work(spy[0])

        result = await self._run(spied, write=write)
        if spy and spy[0].reaped_nothing and not self.finishing.is_set():
            self.finishing.set()
            async with asyncio.timeout(WAIT):
                await self.release.wait()
        return result


async def test_flows_purged_while_the_reaper_is_finishing_are_still_reaped(
    make_engine: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    engine = await make_engine(_proxy())
    await engine.run("one", timeout=WAIT)
    await engine.run("other", timeout=WAIT)
    [store] = engine.runtime.stores
    pause = _ReaperPause(store)
    monkeypatch.setattr(store, "run", pause.run)
    assert await engine.purge(Query(workflow_url="one")) == 1
    try:
        await asyncio.wait_for(pause.finishing.wait(), WAIT)
    except TimeoutError:
        pytest.fail("the reaper never committed an empty batch: the instrumentation is out of date")
    assert await engine.purge(Query(workflow_url="other")) == 1
    pause.release.set()
    await _reaped(engine)
