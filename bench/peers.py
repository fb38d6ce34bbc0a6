"""The same workloads on peer engines: DBOS (durable workflows) and LangGraph (graphs + a checkpointer).

Each peer is used the way its documentation shows for durable work:

- DBOS: ``@DBOS.workflow`` async functions calling ``@DBOS.step`` async functions, run with ``await`` from
  concurrent asyncio submitters (the async path measured faster than sync workflows on threads here). The
  fan-out starts its W steps as tasks in a fixed order and gathers them, as DBOS documents for parallel
  steps; a join step reduces their outputs.
- LangGraph: a ``StateGraph`` compiled with ``AsyncSqliteSaver`` or ``AsyncPostgresSaver`` (on an
  ``AsyncConnectionPool`` with the settings its README requires), one thread id per flow, so every
  superstep is checkpointed. The fan-out returns ``Send`` objects to W ``work`` nodes whose outputs land in
  a list channel with an ``operator.add`` reducer; ``join`` sums the list. ``durability`` is LangGraph's
  own switch: "async" (its default) writes a checkpoint while the next step runs, "sync" before it starts.

Tasks are no-ops that count their executions; the run fails if any step did not execute. The peers'
packages come from the ``bench`` extra and are imported only here, inside the functions that use them.
"""

from __future__ import annotations

import argparse
import asyncio
import operator
import time
import uuid
from collections.abc import Awaitable, Callable
from importlib import metadata
from typing import Annotated, Any, TypedDict

from bench.common import (
    default_concurrency,
    default_flows,
    fresh_database,
    steps_per_flow,
    throughput_result,
)

PEER_PACKAGES = {
    "dbos": ["dbos", "SQLAlchemy", "psycopg"],
    "langgraph": [
        "langgraph",
        "langgraph-checkpoint",
        "langgraph-checkpoint-sqlite",
        "langgraph-checkpoint-postgres",
        "aiosqlite",
        "psycopg",
    ],
}


def versions(engine: str) -> dict[str, str]:
    found = {}
    for package in PEER_PACKAGES[engine]:
        try:
            found[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            found[package] = "missing"
    return found


class _Executions:
    """How many step functions actually ran (a completed flow must have run every one of its steps)."""

    count = 0


async def _drive(
    flow: Callable[[], Awaitable[None]], flows: int, concurrency: int
) -> tuple[float, list[float]]:
    """Run ``flows`` flows through ``concurrency`` submitters after one warm-up; (elapsed, latencies)."""
    await flow()
    latencies: list[float] = []
    remaining = iter(range(flows))

    async def submitter() -> None:
        for _ in remaining:
            began = time.perf_counter()
            await flow()
            latencies.append(time.perf_counter() - began)

    started = time.perf_counter()
    await asyncio.gather(*(submitter() for _ in range(concurrency)))
    return time.perf_counter() - started, latencies


# --- DBOS ---

_dbos_workflows: dict[str, Any] = {}


def _register_dbos() -> dict[str, Any]:
    """Register the workflows once per process (DBOS keeps a global registry of decorated functions)."""
    if _dbos_workflows:
        return _dbos_workflows
    from dbos import DBOS

    @DBOS.step()
    async def noop() -> None:
        _Executions.count += 1

    @DBOS.step()
    async def split(width: int) -> list[int]:
        _Executions.count += 1
        return list(range(width))

    @DBOS.step()
    async def work(item: int) -> int:
        _Executions.count += 1
        return 1

    @DBOS.step()
    async def join(results: list[int]) -> int:
        _Executions.count += 1
        return sum(results)

    @DBOS.workflow()
    async def linear3() -> None:
        await noop()
        await noop()
        await noop()

    @DBOS.workflow()
    async def fanout(width: int) -> int:
        items = await split(width)
        # Tasks created in a fixed order get their step ids in that order, which is what makes
        # a concurrent fan-out replayable in DBOS.
        branches = [asyncio.create_task(work(item)) for item in items]
        return int(await join(list(await asyncio.gather(*branches))))

    _dbos_workflows.update(linear3=linear3, fanout=fanout)
    return _dbos_workflows


async def run_dbos(args: argparse.Namespace) -> dict[str, Any]:
    from dbos import DBOS

    workflows = _register_dbos()
    workload, width = args.workload, args.width
    flows = args.flows or default_flows(workload)
    concurrency = 1 if workload == "latency" else (args.concurrency or default_concurrency(workload))
    async with fresh_database(args.db, args.dsn, filename="dbos.sqlite") as database:
        DBOS(config={"name": "dwarf-bench", "system_database_url": database.url, "log_level": "WARNING"})
        DBOS.launch()
        try:
            if workload == "fanout":

                async def flow() -> None:
                    total = await workflows["fanout"](width)
                    if total != width:
                        raise RuntimeError(f"DBOS fan-out joined {total} of {width} branches")

            else:

                async def flow() -> None:
                    await workflows["linear3"]()

            _Executions.count = 0
            elapsed, latencies = await _drive(flow, flows, concurrency)
        finally:
            DBOS.destroy()
    _check_executions(workload, width, flows)
    return {
        **throughput_result(
            engine="dbos",
            workload=workload,
            db=args.db,
            flows=flows,
            concurrency=concurrency,
            width=width,
            elapsed=elapsed,
            latencies=latencies,
        ),
        "versions": versions("dbos"),
        "settings": {"mode": "async workflows and steps, asyncio submitters"},
    }


# --- LangGraph ---


class _LinearState(TypedDict, total=False):
    started: bool


class _FanoutState(TypedDict, total=False):
    width: int
    results: Annotated[list[int], operator.add]
    total: int


class _Item(TypedDict):
    item: int


def _langgraph_graphs(checkpointer: Any) -> dict[str, Any]:
    from langgraph.graph import END, START, StateGraph
    from langgraph.types import Send

    async def noop(state: _LinearState) -> dict[str, Any]:
        _Executions.count += 1
        return {}

    linear = StateGraph(_LinearState)
    for name in ("T0", "T1", "T2"):
        linear.add_node(name, noop)
    linear.add_edge(START, "T0")
    linear.add_edge("T0", "T1")
    linear.add_edge("T1", "T2")
    linear.add_edge("T2", END)

    async def split(state: _FanoutState) -> dict[str, Any]:
        _Executions.count += 1
        return {}

    def branches(state: _FanoutState) -> list[Any]:  # Send: imported locally, unseen by get_type_hints
        return [Send("work", {"item": item}) for item in range(state["width"])]

    async def work(state: _Item) -> dict[str, Any]:
        _Executions.count += 1
        return {"results": [1]}

    async def join(state: _FanoutState) -> dict[str, Any]:
        _Executions.count += 1
        return {"total": sum(state["results"])}

    fanout = StateGraph(_FanoutState)
    fanout.add_node("split", split)
    fanout.add_node("work", work)
    fanout.add_node("join", join)
    fanout.add_edge(START, "split")
    fanout.add_conditional_edges("split", branches, ["work"])
    fanout.add_edge("work", "join")
    fanout.add_edge("join", END)
    return {
        "linear3": linear.compile(checkpointer=checkpointer),
        "fanout": fanout.compile(checkpointer=checkpointer),
    }


async def _langgraph_measure(
    args: argparse.Namespace, checkpointer: Any, flows: int, concurrency: int
) -> tuple[float, list[float]]:
    graphs = _langgraph_graphs(checkpointer)
    durability = args.durability
    width = args.width

    def thread() -> dict[str, Any]:
        return {"configurable": {"thread_id": uuid.uuid4().hex}}

    if args.workload == "fanout":

        async def flow() -> None:
            state = await graphs["fanout"].ainvoke({"width": width}, thread(), durability=durability)
            if state.get("total") != width:
                raise RuntimeError(f"LangGraph fan-out joined {state.get('total')} of {width} branches")

    else:

        async def flow() -> None:
            await graphs["linear3"].ainvoke({}, thread(), durability=durability)

    _Executions.count = 0
    return await _drive(flow, flows, concurrency)


async def run_langgraph(args: argparse.Namespace) -> dict[str, Any]:
    workload, width = args.workload, args.width
    flows = args.flows or default_flows(workload)
    concurrency = 1 if workload == "latency" else (args.concurrency or default_concurrency(workload))
    pool_size = 0
    async with fresh_database(args.db, args.dsn, filename="langgraph.sqlite") as database:
        if args.db == "sqlite":
            from langgraph.checkpoint.sqlite.aio import AsyncSqliteSaver

            async with AsyncSqliteSaver.from_conn_string(database.path) as saver:
                await saver.setup()
                elapsed, latencies = await _langgraph_measure(args, saver, flows, concurrency)
        else:
            from langgraph.checkpoint.postgres.aio import AsyncPostgresSaver
            from psycopg.rows import dict_row
            from psycopg_pool import AsyncConnectionPool

            # A connection per submitter, so the pool never queues them.
            pool_size = max(2, concurrency)
            pool: AsyncConnectionPool[Any] = AsyncConnectionPool(
                database.url,
                min_size=1,
                max_size=pool_size,
                kwargs={"autocommit": True, "prepare_threshold": 0, "row_factory": dict_row},
                open=False,
            )
            async with pool:
                saver_pg = AsyncPostgresSaver(pool)
                await saver_pg.setup()
                elapsed, latencies = await _langgraph_measure(args, saver_pg, flows, concurrency)
    _check_executions(workload, width, flows)
    return {
        **throughput_result(
            engine="langgraph",
            workload=workload,
            db=args.db,
            flows=flows,
            concurrency=concurrency,
            width=width,
            elapsed=elapsed,
            latencies=latencies,
        ),
        "durability": args.durability,
        "versions": versions("langgraph"),
        "settings": {"checkpointer": "AsyncSqliteSaver" if args.db == "sqlite" else "AsyncPostgresSaver"}
        | ({"pool_size": pool_size} if pool_size else {}),
    }


def _check_executions(workload: str, width: int, flows: int) -> None:
    # The warm-up flow ran too, hence flows + 1.
    expected = (flows + 1) * steps_per_flow(workload, width)
    if _Executions.count != expected:
        raise RuntimeError(f"{_Executions.count} step executions, expected {expected}")


async def run_peer(args: argparse.Namespace) -> dict[str, Any]:
    if args.engine == "dbos":
        return await run_dbos(args)
    return await run_langgraph(args)
