"""Cancel racing child-flow creation (docs/fan-out-and-subgraphs.md#trees-of-flows-nesting-cancel-and-delete).

Each root flow's first task starts a child flow at once; the roots are cancelled, from two replicas,
while those children are being created. Cancel must be atomic over the whole tree: once it returns, no
flow of the tree is left running (not even a child committed in the same instant) and no step of the
tree can still run, so the tree can be deleted at once. In a lock cycle with a step commit (PostgreSQL
row locks), cancel is the one that gives way and tries again; it never surfaces a driver error.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest

from dwarf import FlowStep, Query, Status, StoreError
from dwarf.engine import Engine, TestProxy
from dwarf.engine.keys import parse_key
from tests.engine.graphs import WAIT, Gate, wait_for_step, wait_until
from tests.engine.graphs_parallel import calls_subgraph, single, summaries

ROOTS = 40
# How long each root lives before its cancel is sent, per round: from "at once" to "about when its first
# task is committing the child flow" on a busy machine.
ROUNDS = ((0.0, 0.0), (0.0, 0.004), (0.002, 0.012), (0.005, 0.03), (0.01, 0.06))
SETTLE = 0.3
"""Seconds for commits already in flight when the cancels returned to land (a child committed by such a
commit is exactly what must not be left running)."""
UNFINISHED = {Status.CREATED, Status.PENDING, Status.RUNNING, Status.INTERRUPTED}


class _Release:
    """Where the child tasks block until the test lets them go (they must not hold workers forever)."""

    def __init__(self) -> None:
        self.event = asyncio.Event()

    async def child(self, flow: Any) -> None:
        async with asyncio.timeout(WAIT):
            await self.event.wait()


async def _replicas(make_engine: Any) -> tuple[list[Engine], _Release]:
    release = _Release()
    proxy = TestProxy()
    proxy.handle_graph("parent", single("Parent", "Call"))
    proxy.handle_graph("child", single("ChildFlow", "Child"))
    proxy.handle_task("Call", calls_subgraph("child"))
    proxy.handle_task("Child", release.child)
    # Two replicas on one database: their workers commit child flows while the other replica cancels.
    return [await make_engine(proxy), await make_engine(proxy)], release


async def _create_and_cancel(engines: list[Engine], index: int, delay: float) -> str:
    key = await engines[index % 2].create("parent", {"n": index})
    if delay:
        await asyncio.sleep(delay)
    await engines[(index + 1) % 2].cancel(key, "race")
    return key


async def _race_round(engines: list[Engine], low: float, high: float) -> list[str]:
    """Create ROOTS roots and cancel each soon after; every cancel must return without an error."""
    rng = random.Random(f"{low}-{high}")
    results = await asyncio.gather(
        *(_create_and_cancel(engines, i, rng.uniform(low, high)) for i in range(ROOTS)),
        return_exceptions=True,
    )
    errors = [result for result in results if isinstance(result, BaseException)]
    assert not errors, f"{len(errors)} cancels raised, e.g. {errors[0]!r}"
    await asyncio.sleep(SETTLE)
    return [result for result in results if isinstance(result, str)]


def _all_steps(history: list[FlowStep]) -> list[FlowStep]:
    steps: list[FlowStep] = []
    stack = list(history)
    while stack:
        step = stack.pop()
        steps.append(step)
        stack.extend(step.sub_history)
    return steps


async def test_cancel_racing_child_creation_leaves_no_flow_or_step_of_the_tree_unfinished(
    make_engine: Any,
) -> None:
    engines, release = await _replicas(make_engine)
    try:
        for low, high in ROUNDS:
            roots = await _race_round(engines, low, high)
            flows = await summaries(engines[0], Query(include_subgraphs=True, limit=1000))
            unfinished = [flow for flow in flows if flow.status != Status.CANCELLED]
            assert not unfinished, (
                f"round {low}-{high}s: {len(unfinished)} flows not cancelled: "
                f"{sorted((flow.status.value, flow.subgraph) for flow in unfinished)}"
            )
            for key in roots:
                live = [s for s in _all_steps(await engines[1].history(key)) if s.status in UNFINISHED]
                assert not live, f"round {low}-{high}s: steps still unfinished: {live}"
    finally:
        release.event.set()


async def test_delete_succeeds_right_after_a_cancel_that_raced_child_creation(make_engine: Any) -> None:
    engines, release = await _replicas(make_engine)
    try:
        for low, high in ROUNDS:
            roots = await _race_round(engines, low, high)
            results = await asyncio.gather(*(engines[0].delete(key) for key in roots), return_exceptions=True)
            refused = [result for result in results if isinstance(result, BaseException)]
            assert not refused, f"round {low}-{high}s: {len(refused)} deletes refused, e.g. {refused[0]!r}"
            assert await summaries(engines[1], Query(include_subgraphs=True)) == []
    finally:
        release.event.set()


# --- lock conflicts (PostgreSQL row locks; SQLite serializes writers and has none) ---


@asynccontextmanager
async def _other_transaction(engine: Engine, backend: str) -> AsyncIterator[Any]:
    """An open transaction of another connection to the engine's database: a step commit in flight."""
    if backend != "postgres":
        pytest.skip("row-lock conflicts exist only on PostgreSQL")
    import psycopg

    dsn = engine.runtime.stores[0].dsn  # type: ignore[attr-defined]
    async with await psycopg.AsyncConnection.connect(dsn) as conn:
        yield conn
        await conn.rollback()


async def _blocked_flow(make_engine: Any) -> tuple[Engine, Gate, str, int]:
    """A flow whose only step is running (its task blocks on the gate): (engine, gate, key, step id)."""
    gate = Gate()
    proxy = TestProxy()
    proxy.handle_graph("blocked", single("Blocked", "Block"))
    proxy.handle_task("Block", lambda flow: gate.pass_through())
    engine = await make_engine(proxy)
    key = await engine.create("blocked")
    step = await wait_for_step(engine, key, "Block", Status.RUNNING)
    return engine, gate, key, step.step_id


async def _cancel_waits_on_a_step_lock(other: Any) -> None:
    async def waiting() -> bool:
        # pg_stat_activity is read fresh each time only outside a transaction (or after clearing the
        # snapshot the open transaction took at its first read).
        await other.execute("SELECT pg_stat_clear_snapshot()")
        cursor = await other.execute(
            "SELECT COUNT(*) FROM pg_stat_activity WHERE datname = current_database()"
            " AND wait_event_type = 'Lock' AND query LIKE 'UPDATE dwarf_steps%'"
        )
        row = await cursor.fetchone()
        return bool(row and row[0])

    # Polled often: a cancel that gives way waits only moments at a time before it tries again.
    await wait_until(waiting, interval=0.002)


async def test_cancel_in_a_lock_cycle_with_a_step_commit_gives_way_and_then_succeeds(
    make_engine: Any, backend: str
) -> None:
    engine, gate, key, step_id = await _blocked_flow(make_engine)
    flow_id = parse_key(key, "flow").id
    async with _other_transaction(engine, backend) as other:
        # The commit locks its step first and its flow row last, as a worker's commit does.
        await other.execute("SELECT 1 FROM dwarf_steps WHERE step_id = %s FOR UPDATE", (step_id,))
        cancel = asyncio.ensure_future(engine.cancel(key, "cycle"))
        await _cancel_waits_on_a_step_lock(other)
        # Cancel holds the root and waits for the step: the flow row closes the cycle. The commit must
        # get it (cancel rolls back) rather than lose a deadlock.
        await other.execute("UPDATE dwarf_flows SET updated_at = updated_at WHERE flow_id = %s", (flow_id,))
        await other.commit()
        async with asyncio.timeout(WAIT):
            await cancel
    gate.open()
    outcome = await engine.wait(key, timeout=WAIT)
    assert (outcome.status, outcome.cancel_reason) == (Status.CANCELLED, "cycle")


async def test_cancel_that_cannot_get_its_locks_raises_a_transient_store_error_and_changes_nothing(
    make_engine: Any, backend: str
) -> None:
    engine, gate, key, step_id = await _blocked_flow(make_engine)
    async with _other_transaction(engine, backend) as other:
        await other.execute("SELECT 1 FROM dwarf_steps WHERE step_id = %s FOR UPDATE", (step_id,))
        with pytest.raises(StoreError) as raised:
            async with asyncio.timeout(WAIT):
                await engine.cancel(key, "never")
    assert raised.value.transient
    assert (await engine.snapshot(key)).status == Status.RUNNING
    [step] = await engine.history(key)
    assert step.status == Status.RUNNING
    gate.open()
    assert (await engine.wait(key, timeout=WAIT)).status == Status.COMPLETED
