"""Our engine's workloads: throughput and latency of no-op flows, idle queries, memory of parked flows.

``run_workload`` drives linear3/linear10/fanout/latency: N flows through a pool of concurrent submitters,
each timing whole flows. ``run_idle`` starts an engine with no work and counts the statements it sends to
each shard. ``run_parked`` parks N interrupted flows and reports how much the process's RSS grew.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from bench.common import (
    default_concurrency,
    default_flows,
    fresh_database,
    rss_mb,
    throughput_result,
)
from dwarf import END, Engine, Flow, Graph, Reducer, TestProxy
from dwarf.store.base import Row, Store, Tx


def _linear_graph(length: int) -> Graph:
    graph = Graph(f"linear{length}")
    names = [f"T{i}" for i in range(length)]
    for name in names:
        graph.add_task(name, "noop")
    graph.add_transition_chain(*names, END)
    return graph


def _fanout_graph() -> Graph:
    graph = Graph("fanout")
    graph.add_task("Split", "split")
    graph.add_task("Work", "work")
    graph.add_task("Join", "noop")
    graph.add_transition_for_each("Split", "Work", "items", "item")
    graph.add_transition("Work", "Join")
    graph.set_fan_in("Join")
    graph.add_transition("Join", END)
    graph.set_reducer("total", Reducer.ADD)
    return graph


def _host(width: int) -> TestProxy:
    host = TestProxy()
    host.handle_graph("linear3", _linear_graph(3))
    host.handle_graph("linear10", _linear_graph(10))
    host.handle_graph("latency", _linear_graph(3))
    host.handle_graph("fanout", _fanout_graph())

    async def noop(flow: Flow) -> None:
        return None

    async def split(flow: Flow) -> None:
        flow.set("items", list(range(width)))

    async def work(flow: Flow) -> None:
        flow.set("total", 1)

    host.handle_task("noop", noop)
    host.handle_task("split", split)
    host.handle_task("work", work)
    return host


class _Telemetry:
    """The OpenTelemetry SDK wired as a production host would, exporting into memory."""

    def __init__(self) -> None:
        from opentelemetry.sdk.metrics import MeterProvider
        from opentelemetry.sdk.metrics.export import InMemoryMetricReader
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor
        from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

        self.reader = InMemoryMetricReader()
        self.meter_provider = MeterProvider(metric_readers=[self.reader])
        self.exporter = InMemorySpanExporter()
        self.tracer_provider = TracerProvider()
        self.tracer_provider.add_span_processor(BatchSpanProcessor(self.exporter))

    def settings(self) -> dict[str, Any]:
        return {"meter_provider": self.meter_provider, "tracer_provider": self.tracer_provider}

    def finish(self) -> int:
        """Flush and shut down; return how many spans were exported (a sanity check of the wiring)."""
        self.reader.get_metrics_data()
        self.tracer_provider.shutdown()
        self.meter_provider.shutdown()
        return len(self.exporter.get_finished_spans())


def _settings(engine: Engine) -> dict[str, Any]:
    import sys

    return {
        "workers": engine.settings["workers"],
        "pool_size": engine.pool_size,
        "python": sys.version.split()[0],
    }


async def run_workload(args: argparse.Namespace) -> dict[str, Any]:
    """Run one workload on a fresh database and return its measurements."""
    workload = args.workload
    flows = args.flows or default_flows(workload)
    concurrency = 1 if workload == "latency" else (args.concurrency or default_concurrency(workload))
    telemetry = _Telemetry() if args.telemetry == "sdk" else None
    latencies: list[float] = []
    async with fresh_database(args.db, args.dsn) as database:
        engine = Engine(
            host=_host(args.width), dsn=database.url, **(telemetry.settings() if telemetry else {})
        )
        if args.workers:
            engine.set_workers(args.workers)
        async with engine:
            # Warm-up: the first flow pays for imports, prepared statements and caches.
            await engine.run(workload, {}, timeout=60)
            queue: asyncio.Queue[int] = asyncio.Queue()
            for index in range(flows):
                queue.put_nowait(index)

            async def submitter() -> None:
                while True:
                    try:
                        queue.get_nowait()
                    except asyncio.QueueEmpty:
                        return
                    began = time.perf_counter()
                    _, outcome = await engine.run(workload, {}, timeout=300)
                    if outcome.status != "completed":
                        raise RuntimeError(f"flow ended {outcome.status}: {outcome.error}")
                    latencies.append(time.perf_counter() - began)

            started = time.perf_counter()
            await asyncio.gather(*(submitter() for _ in range(concurrency)))
            elapsed = time.perf_counter() - started
    spans = telemetry.finish() if telemetry is not None else 0
    return {
        **throughput_result(
            engine="dwarf",
            workload=workload,
            db=args.db,
            flows=flows,
            concurrency=concurrency,
            width=args.width,
            elapsed=elapsed,
            latencies=latencies,
        ),
        "telemetry": args.telemetry,
        "spans": spans,
        "settings": _settings(engine),
    }


# --- idle: statements an engine with nothing to do sends to its databases ---

IDLE_METHOD = (
    "statements counted in the bench process at the store layer: every named query a unit of work runs "
    "(Tx.fetch_all/execute) and every single-statement read/write, per shard, by wrapping the store "
    "classes' methods; transactions = units of work. SQLite also counts raw SQL at the connection "
    "(sqlite3 trace callback: includes BEGIN/SAVEPOINT/COMMIT). Counting starts as soon as startup returns."
)


class _CountingTx(Tx):
    """A transaction that counts its statements for one shard, then runs them on the real one."""

    def __init__(self, inner: Tx, count: Callable[[], None]) -> None:
        self._inner = inner
        self._count = count

    async def fetch_all(self, query: str, **params: Any) -> list[Row]:
        self._count()
        return await self._inner.fetch_all(query, **params)

    async def execute(self, query: str, **params: Any) -> int:
        self._count()
        return await self._inner.execute(query, **params)


class StatementCounter:
    """Counts statements and transactions per shard by wrapping the store classes from outside."""

    def __init__(self) -> None:
        self.statements: Counter[int] = Counter()
        self.transactions: Counter[int] = Counter()
        self.raw_sqlite: Counter[int] = Counter()
        self.counting = False

    def _statement(self, shard: int) -> None:
        if self.counting:
            self.statements[shard] += 1

    def _transaction(self, shard: int) -> None:
        if self.counting:
            self.transactions[shard] += 1

    @contextmanager
    def installed(self) -> Iterator[StatementCounter]:
        from dwarf.store.postgres import PostgresStore
        from dwarf.store.sqlite import SQLiteStore

        counter = self

        def wrap_run(original: Any) -> Any:
            async def run(store: Store, work: Any, *, write: bool = True) -> Any:
                counter._transaction(store.shard)

                async def counted(tx: Tx) -> Any:
                    return await work(_CountingTx(tx, lambda: counter._statement(store.shard)))

                return await original(store, counted, write=write)

            return run

        def wrap_single(original: Any) -> Any:
            # PostgresStore.read/write bypass run(): one autocommit statement is its own transaction.
            async def single(store: Store, query: str, params: dict[str, Any]) -> list[Row]:
                counter._transaction(store.shard)
                counter._statement(store.shard)
                return list(await original(store, query, params))

            return single

        patches = [
            (SQLiteStore, "run", wrap_run(SQLiteStore.run)),
            (PostgresStore, "run", wrap_run(PostgresStore.run)),
            (PostgresStore, "_single", wrap_single(PostgresStore._single)),
        ]
        saved = [(cls, name, cls.__dict__[name]) for cls, name, _ in patches]
        for cls, name, replacement in patches:
            setattr(cls, name, replacement)
        try:
            yield self
        finally:
            for cls, name, original in saved:
                setattr(cls, name, original)

    def trace_sqlite(self, engine: Engine) -> None:
        """Count every SQL statement each SQLite shard's connection executes (BEGIN/COMMIT included)."""
        for store in engine.runtime.stores:
            conn = getattr(store, "_conn", None)
            if conn is None:
                continue
            shard = store.shard

            def traced(_sql: str, shard: int = shard) -> None:
                if self.counting:
                    self.raw_sqlite[shard] += 1

            conn.set_trace_callback(traced)


async def run_idle(args: argparse.Namespace) -> dict[str, Any]:
    """Start an engine with no work and count the statements it sends to each shard for ``seconds``."""
    seconds = args.seconds
    shards = args.shards
    counter = StatementCounter()
    timeline: list[int] = []
    async with fresh_database(args.db, args.dsn, shards=shards) as database:
        engine = Engine(host=_host(args.width), dsn=database.url, num_shards=shards)
        if args.workers:
            engine.set_workers(args.workers)
        with counter.installed():
            async with engine:
                counter.trace_sqlite(engine)
                counter.counting = True
                started = time.perf_counter()
                previous = 0
                for second in range(1, int(seconds) + 1):
                    await asyncio.sleep(max(0.0, started + second - time.perf_counter()))
                    total = sum(counter.statements.values())
                    timeline.append(total - previous)
                    previous = total
                elapsed = time.perf_counter() - started
                counter.counting = False
    statements = sum(counter.statements.values())
    transactions = sum(counter.transactions.values())
    result: dict[str, Any] = {
        "engine": "dwarf",
        "workload": "idle",
        "db": args.db,
        "shards": shards,
        "elapsed_s": round(elapsed, 3),
        "statements": statements,
        "transactions": transactions,
        "queries_per_s_per_shard": round(statements / elapsed / shards, 3),
        "transactions_per_s_per_shard": round(transactions / elapsed / shards, 3),
        "statements_by_shard": {str(shard): counter.statements[shard] for shard in range(1, shards + 1)},
        "statements_per_second": timeline,
        "method": IDLE_METHOD,
        "settings": _settings(engine),
    }
    if args.db == "sqlite":
        raw = sum(counter.raw_sqlite.values())
        result["sqlite_raw_statements"] = raw
        result["sqlite_raw_per_s_per_shard"] = round(raw / elapsed / shards, 3)
    return result


# --- parked: memory that interrupted flows cost while they wait ---

PARKED_METHOD = (
    "VmRSS of the bench process (/proc/self/status) after gc.collect(), measured after startup and one "
    "warm-up flow, and again once every flow has parked (each engine.run returned 'interrupted')"
)


def _parked_graph() -> Graph:
    graph = Graph("parked")
    graph.add_task("Approve", "approve")
    graph.add_transition("Approve", END)
    return graph


async def run_parked(args: argparse.Namespace) -> dict[str, Any]:
    """Park ``flows`` interrupted flows and report how much the process's RSS grew."""
    flows = args.flows or default_flows("parked")
    concurrency = args.concurrency or default_concurrency("parked")
    host = _host(args.width)
    host.handle_graph("parked", _parked_graph())

    async def approve(flow: Flow) -> None:
        flow.interrupt({"question": "approve?"})

    host.handle_task("approve", approve)
    async with fresh_database(args.db, args.dsn) as database:
        engine = Engine(host=host, dsn=database.url)
        if args.workers:
            engine.set_workers(args.workers)
        async with engine:
            _, outcome = await engine.run("parked", {}, timeout=60)
            if outcome.status != "interrupted":
                raise RuntimeError(f"warm-up flow ended {outcome.status}: {outcome.error}")
            gc.collect()
            before = rss_mb()
            remaining = iter(range(flows))
            parked = 0

            async def submitter() -> None:
                nonlocal parked
                for _ in remaining:
                    _, outcome = await engine.run("parked", {"n": 1}, timeout=300)
                    if outcome.status != "interrupted":
                        raise RuntimeError(f"flow ended {outcome.status}: {outcome.error}")
                    parked += 1

            started = time.perf_counter()
            await asyncio.gather(*(submitter() for _ in range(concurrency)))
            elapsed = time.perf_counter() - started
            gc.collect()
            after = rss_mb()
            settings = _settings(engine)
    delta = after - before
    return {
        "engine": "dwarf",
        "workload": "parked",
        "db": args.db,
        "flows": parked,
        "concurrency": concurrency,
        "elapsed_s": round(elapsed, 3),
        "rss_before_mb": round(before, 1),
        "rss_after_mb": round(after, 1),
        "rss_delta_mb": round(delta, 2),
        "kb_per_flow": round(delta * 1024 / parked, 3) if parked else 0.0,
        "method": PARKED_METHOD
        + ("; includes SQLite's in-process page cache" if args.db == "sqlite" else ""),
        "settings": settings,
    }
