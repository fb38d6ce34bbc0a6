"""Wedge sweeps (docs/deployment.md#wedge-sweeps-and-stranded-joins):
parks and flows that nothing can move any more are found and repaired.

The engine never produces these states itself, so each test first damages the database by hand the
way a lost update would (raw SQL on a real SQLite file or PostgreSQL database), then runs a sweep.
"""

from __future__ import annotations

import asyncio
import sqlite3
from typing import Any

import psycopg
import pytest

from dwarf import Flow, Status
from dwarf.engine import Engine, SchedulerTuning, TestProxy, wedge
from dwarf.engine.tree_writes import ORPHAN_REASON
from dwarf.engine.wedge import WEDGED_FLOW_ERROR, sweep_wedges
from tests.engine.graphs import WAIT, Gate, chain


async def _raw(dsn: str, *statements: str) -> None:
    """Run statements on the database behind the engine's back."""
    if dsn.startswith("sqlite:///"):
        conn = sqlite3.connect(dsn.removeprefix("sqlite:///"), isolation_level=None)
        try:
            for statement in statements:
                conn.execute(statement)
        finally:
            conn.close()
        return
    async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as pg:
        for statement in statements:
            await pg.execute(statement.encode())


def _id(key: str) -> int:
    return int(key.split("-")[1])


def _proxy(gate: Gate | None = None) -> TestProxy:
    proxy = TestProxy()

    async def ask(flow: Flow) -> None:
        flow.set("answer", flow.interrupt({"question": "ok?"}).get("answer", ""))

    async def parent(flow: Flow) -> None:
        flow.set("child", flow.subgraph("child", {}))

    async def held(flow: Flow) -> None:
        if gate is not None:
            await gate.pass_through()

    proxy.handle_graph("child", chain("child", "Ask"))
    proxy.handle_graph("parent", chain("parent", "Parent"))
    proxy.handle_graph("held", chain("held", "Held"))
    proxy.handle_task("Ask", ask)
    proxy.handle_task("Parent", parent)
    proxy.handle_task("Held", held)
    return proxy


async def _child_flow_id(dsn: str, parent_key: str) -> int:
    rows = await _fetch(dsn, f"SELECT flow_id FROM dwarf_flows WHERE parent_flow_id = {_id(parent_key)}")
    assert len(rows) == 1
    return int(rows[0][0])


async def _parent_parked_on_its_child(engine: Engine, dsn: str) -> tuple[str, int]:
    """A ``parent`` flow parked on its child, which waits for an answer: the parent's key, the child's id."""
    key = await engine.create("parent")
    assert (await engine.wait(key, timeout=WAIT)).status == Status.INTERRUPTED
    return key, await _child_flow_id(dsn, key)


async def _fetch(dsn: str, query: str) -> list[tuple[Any, ...]]:
    if dsn.startswith("sqlite:///"):
        conn = sqlite3.connect(dsn.removeprefix("sqlite:///"))
        try:
            return list(conn.execute(query).fetchall())
        finally:
            conn.close()
    async with await psycopg.AsyncConnection.connect(dsn) as pg:
        cursor = await pg.execute(query.encode())
        return list(await cursor.fetchall())


async def test_a_parent_parked_on_a_child_that_ended_unheard_gets_the_childs_result(fresh_dsn: str) -> None:
    async with Engine(host=_proxy(), dsn=fresh_dsn) as engine:
        key, child = await _parent_parked_on_its_child(engine, fresh_dsn)
        # The child ended, but the wake-up of its parent was lost.
        await _raw(
            fresh_dsn,
            f"UPDATE dwarf_flows SET status = 'completed', final_state = '{{\"answer\": \"late\"}}' "
            f"WHERE flow_id = {child}",
            f"UPDATE dwarf_steps SET status = 'completed' WHERE flow_id = {child}",
            f"UPDATE dwarf_flows SET status = 'running' WHERE flow_id = {_id(key)}",
        )
        assert await sweep_wedges(engine.runtime, engine.runtime.stores[0], min_age=0) == 1
        outcome = await engine.wait(key, timeout=WAIT)
    assert (outcome.status, outcome.state) == (Status.COMPLETED, {"child": {"answer": "late"}})


async def test_a_parent_parked_on_a_vanished_child_fails_with_a_clear_error(fresh_dsn: str) -> None:
    async with Engine(host=_proxy(), dsn=fresh_dsn) as engine:
        key, child = await _parent_parked_on_its_child(engine, fresh_dsn)
        await _raw(
            fresh_dsn,
            f"DELETE FROM dwarf_steps WHERE flow_id = {child}",
            f"DELETE FROM dwarf_flows WHERE flow_id = {child}",
            f"UPDATE dwarf_flows SET status = 'running' WHERE flow_id = {_id(key)}",
        )
        assert await sweep_wedges(engine.runtime, engine.runtime.stores[0], min_age=0) == 1
        outcome = await engine.wait(key, timeout=WAIT)
    assert outcome.status == Status.FAILED
    assert "no longer exists" in outcome.error


async def test_a_running_flow_with_no_step_left_fails_and_waiters_hear_it(fresh_dsn: str) -> None:
    gate = Gate()
    async with Engine(host=_proxy(gate), dsn=fresh_dsn) as engine:
        key = await engine.create("held")
        await gate.wait_entered()
        await _raw(fresh_dsn, f"UPDATE dwarf_steps SET status = 'cancelled' WHERE flow_id = {_id(key)}")
        gate.open()  # the worker's commit is refused: its step is no longer running
        assert await sweep_wedges(engine.runtime, engine.runtime.stores[0], min_age=0) == 1
        outcome = await engine.wait(key, timeout=WAIT)
    assert (outcome.status, outcome.error) == (Status.FAILED, WEDGED_FLOW_ERROR)


async def test_a_running_flow_whose_only_step_is_interrupted_surfaces_the_interrupt(fresh_dsn: str) -> None:
    async with Engine(host=_proxy(), dsn=fresh_dsn) as engine:
        key = await engine.create("child")
        assert (await engine.wait(key, timeout=WAIT)).status == Status.INTERRUPTED
        await _raw(fresh_dsn, f"UPDATE dwarf_flows SET status = 'running' WHERE flow_id = {_id(key)}")
        assert (await engine.snapshot(key)).status == Status.RUNNING
        assert await sweep_wedges(engine.runtime, engine.runtime.stores[0], min_age=0) == 1
        outcome = await engine.snapshot(key)
        assert (outcome.status, outcome.interrupt_payload) == (Status.INTERRUPTED, {"question": "ok?"})
        await engine.resume(key, {"answer": "yes"})
        assert (await engine.wait(key, timeout=WAIT)).state == {"answer": "yes"}


async def test_the_sweep_reads_running_flows_window_by_window_and_misses_none(
    fresh_dsn: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Wedged flows spread among healthy running ones are all found when each read sees two flows."""
    monkeypatch.setattr(wedge, "WEDGE_WINDOW", 2)
    gate = Gate()
    async with Engine(host=_proxy(gate), dsn=fresh_dsn, workers=1) as engine:
        held = await engine.create("held")  # the one worker stays on it: the rest never start
        await gate.wait_entered()
        keys = [await engine.create("child") for _ in range(7)]
        wedged = keys[1::2]
        ids = ", ".join(str(_id(key)) for key in wedged)
        await _raw(fresh_dsn, f"UPDATE dwarf_steps SET status = 'cancelled' WHERE flow_id IN ({ids})")
        assert await sweep_wedges(engine.runtime, engine.runtime.stores[0], min_age=0) == len(wedged)
        for key in keys:
            expected = Status.FAILED if key in wedged else Status.RUNNING
            assert (await engine.snapshot(key)).status == expected
        gate.open()
        assert (await engine.wait(held, timeout=WAIT)).status == Status.COMPLETED


async def test_healthy_flows_are_never_touched(fresh_dsn: str) -> None:
    gate = Gate()
    async with Engine(host=_proxy(gate), dsn=fresh_dsn) as engine:
        parked = await engine.create("parent")  # parked on an interrupted child: waiting, not wedged
        await engine.wait(parked, timeout=WAIT)
        running = await engine.create("held")
        await gate.wait_entered()
        assert await sweep_wedges(engine.runtime, engine.runtime.stores[0], min_age=0) == 0
        gate.open()
        assert (await engine.wait(running, timeout=WAIT)).status == Status.COMPLETED
        assert (await engine.snapshot(parked)).status == Status.INTERRUPTED


async def test_rows_younger_than_the_minimum_age_are_left_alone(fresh_dsn: str) -> None:
    async with Engine(host=_proxy(), dsn=fresh_dsn) as engine:
        key = await engine.create("child")
        await engine.wait(key, timeout=WAIT)
        await _raw(fresh_dsn, f"UPDATE dwarf_flows SET status = 'running' WHERE flow_id = {_id(key)}")
        assert await sweep_wedges(engine.runtime, engine.runtime.stores[0], min_age=3600) == 0
        assert (await engine.snapshot(key)).status == Status.RUNNING


async def test_the_engine_sweeps_on_its_own(fresh_dsn: str) -> None:
    sweeping = SchedulerTuning(wedge_sweep_interval=0.05, wedge_min_age=0.0)
    async with Engine(host=_proxy(), dsn=fresh_dsn, scheduler_tuning=sweeping) as engine:
        key = await engine.create("child")
        await engine.wait(key, timeout=WAIT)
        await _raw(fresh_dsn, f"UPDATE dwarf_flows SET status = 'running' WHERE flow_id = {_id(key)}")
        outcome = await engine.wait(key, timeout=WAIT)
    assert outcome.status == Status.INTERRUPTED


async def test_a_running_engine_deletes_flows_another_engine_purged(fresh_dsn: str) -> None:
    from dwarf import Query

    sweeping = SchedulerTuning(wedge_sweep_interval=0.05)
    async with Engine(host=_proxy(), dsn=fresh_dsn, scheduler_tuning=sweeping) as worker:
        keys = [await worker.create("child") for _ in range(3)]
        for key in keys:
            await worker.wait(key, timeout=WAIT)
        # An operations-only engine (as the CLI runs) marks them and stops before its reaper is done.
        inspector = Engine(workers=0, dsn=fresh_dsn)
        await inspector.startup()
        assert await inspector.purge(Query(status="interrupted")) == 3
        await inspector.abandon()
        for _ in range(100):
            if not await _fetch(fresh_dsn, "SELECT flow_id FROM dwarf_flows"):
                break
            await asyncio.sleep(0.05)
        assert await _fetch(fresh_dsn, "SELECT flow_id FROM dwarf_flows") == []
        assert await _fetch(fresh_dsn, "SELECT step_id FROM dwarf_steps") == []


async def test_a_complete_cohort_whose_last_arrival_nobody_checked_is_joined_once(
    fresh_dsn: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from dwarf import Reducer
    from dwarf.engine.runtime import CohortArrivals
    from tests.engine.graphs import for_each

    def lost(*args: Any) -> None:
        """The process died after the last arrival committed, before anything looked at the cohort."""

    monkeypatch.setattr(CohortArrivals, "note", lost)
    proxy = TestProxy()
    proxy.handle_graph("each", for_each("each", reducers={"total": Reducer.ADD}))
    proxy.handle_task("Split", lambda flow: None)
    proxy.handle_task("Work", lambda flow: flow.set("total", flow.get_int("item")))
    proxy.handle_task("Join", lambda flow: flow.set("joined", flow.get_int("joined") + 1))
    async with Engine(host=proxy, dsn=fresh_dsn) as engine:
        key = await engine.create("each", {"items": [1, 2, 3, 4]})
        for _ in range(200):
            steps = await engine.history(key)
            if sum(step.task_name == "Work" and step.status == Status.COMPLETED for step in steps) == 4:
                break
            await asyncio.sleep(0.02)
        await asyncio.sleep(0.1)
        assert (await engine.snapshot(key)).status == Status.RUNNING  # nobody looked at the cohort yet
        # The claimer's next quiet poll finds the stranded cohort and joins it, once.
        outcome = await engine.wait(key, timeout=WAIT)
        assert await sweep_wedges(engine.runtime, engine.runtime.stores[0], min_age=0) == 0
    assert (outcome.status, outcome.state["total"], outcome.state["joined"]) == (Status.COMPLETED, 10, 1)


async def test_a_child_left_running_after_its_calling_step_was_cancelled_is_cancelled(fresh_dsn: str) -> None:
    """The replica that failed the parent died before its follow-up cancelled the child (simulated by
    failing the parent by hand): the sweep cancels the child, once."""
    async with Engine(host=_proxy(), dsn=fresh_dsn) as engine:
        key, child = await _parent_parked_on_its_child(engine, fresh_dsn)
        await _raw(
            fresh_dsn,
            f"UPDATE dwarf_steps SET status = 'cancelled' WHERE flow_id = {_id(key)}",
            f"UPDATE dwarf_flows SET status = 'failed' WHERE flow_id = {_id(key)}",
        )
        assert await sweep_wedges(engine.runtime, engine.runtime.stores[0], min_age=0) == 1
        assert await sweep_wedges(engine.runtime, engine.runtime.stores[0], min_age=0) == 0
        [(status, reason)] = await _fetch(
            fresh_dsn, f"SELECT status, cancel_reason FROM dwarf_flows WHERE flow_id = {child}"
        )
        assert (status, reason) == ("cancelled", ORPHAN_REASON)
        [(unfinished,)] = await _fetch(
            fresh_dsn,
            f"SELECT COUNT(*) FROM dwarf_steps WHERE flow_id = {child} AND status <> 'cancelled'",
        )
        assert unfinished == 0
        await engine.delete(key)
