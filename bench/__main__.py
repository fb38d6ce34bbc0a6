"""Benchmarks: ``python -m bench run --db sqlite|postgres --workload linear3|linear10|fanout|latency``.

Each run prints one JSON line: the workload, the backend, throughput (steps/s, flows/s), latency
percentiles of whole flows, and the engine settings. Tasks are no-ops, so the numbers measure the engine
and the database, not the work. Every run uses a fresh database (a new SQLite file, or a new PostgreSQL
database that is dropped afterwards). ``--telemetry sdk`` installs the OpenTelemetry SDK on the engine
(metrics into an in-memory reader, spans through a batch processor into an in-memory exporter) to
measure what full telemetry costs; the default ``none`` leaves the engine's telemetry off.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import tempfile
import time
import uuid
from typing import Any

from dwarf import END, Engine, Flow, Graph, Reducer, TestProxy

DEFAULT_PG_DSN = "postgresql://postgres@127.0.0.1:5432/postgres"


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


async def _create_pg_database(admin_dsn: str) -> tuple[str, str]:
    import psycopg
    from psycopg.conninfo import conninfo_to_dict, make_conninfo

    name = f"dwarf_bench_{uuid.uuid4().hex[:10]}"
    async with await psycopg.AsyncConnection.connect(admin_dsn, autocommit=True) as conn:
        await conn.execute(f'CREATE DATABASE "{name}"'.encode())
    params = conninfo_to_dict(admin_dsn)
    params["dbname"] = name
    return make_conninfo(**params), name


async def _drop_pg_database(admin_dsn: str, name: str) -> None:
    import psycopg

    async with await psycopg.AsyncConnection.connect(admin_dsn, autocommit=True) as conn:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'.encode())


def _pg_url(conninfo: str) -> str:
    from psycopg.conninfo import conninfo_to_dict

    params = conninfo_to_dict(conninfo)
    host = params.get("host", "127.0.0.1")
    port = params.get("port", "5432")
    user = params.get("user", "postgres")
    password = params.get("password")
    auth = f"{user}:{password}" if password else str(user)
    return f"postgresql://{auth}@{host}:{port}/{params['dbname']}"


def _percentile(values: list[float], fraction: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(fraction * (len(ordered) - 1))))
    return ordered[index]


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


async def run_workload(args: argparse.Namespace) -> dict[str, Any]:
    """Run one workload on a fresh database and return its measurements."""
    workload = args.workload
    steps_per_flow = {"linear3": 3, "linear10": 10, "latency": 3, "fanout": args.width + 2}[workload]
    flows = args.flows if args.flows else {"fanout": 20, "latency": 200}.get(workload, 1000)
    concurrency = 1 if workload == "latency" else (args.concurrency or (4 if workload == "fanout" else 32))
    cleanup: Any = None
    if args.db == "sqlite":
        folder = tempfile.mkdtemp(prefix="dwarf-bench-")
        dsn = f"sqlite:///{os.path.join(folder, 'bench.db')}"
    else:
        conninfo, name = await _create_pg_database(args.dsn or DEFAULT_PG_DSN)
        dsn = _pg_url(conninfo)

        async def cleanup() -> None:
            await _drop_pg_database(args.dsn or DEFAULT_PG_DSN, name)

    telemetry = _Telemetry() if args.telemetry == "sdk" else None
    engine = Engine(host=_host(args.width), dsn=dsn, **(telemetry.settings() if telemetry else {}))
    if args.workers:
        engine.set_workers(args.workers)
    latencies: list[float] = []
    try:
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
    finally:
        if cleanup is not None:
            await cleanup()
    spans = telemetry.finish() if telemetry is not None else 0
    return {
        "workload": workload,
        "db": args.db,
        "flows": flows,
        "concurrency": concurrency,
        "width": args.width if workload == "fanout" else None,
        "elapsed_s": round(elapsed, 3),
        "steps_per_s": round(flows * steps_per_flow / elapsed, 1),
        "flows_per_s": round(flows / elapsed, 2),
        "p50_ms": round(_percentile(latencies, 0.5) * 1000, 2),
        "p95_ms": round(_percentile(latencies, 0.95) * 1000, 2),
        "p99_ms": round(_percentile(latencies, 0.99) * 1000, 2),
        "mean_ms": round(statistics.fmean(latencies) * 1000, 2) if latencies else 0.0,
        "telemetry": args.telemetry,
        "spans": spans,
        "settings": {
            "workers": engine._workers,
            "pool_size": engine.pool_size,
            "python": sys.version.split()[0],
        },
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run one workload and print a JSON line")
    run.add_argument("--db", choices=["sqlite", "postgres"], default="sqlite")
    run.add_argument("--workload", choices=["linear3", "linear10", "fanout", "latency"], default="linear3")
    run.add_argument("--flows", type=int, default=0)
    run.add_argument("--concurrency", type=int, default=0)
    run.add_argument("--width", type=int, default=100)
    run.add_argument("--workers", type=int, default=0)
    run.add_argument("--dsn", default=os.environ.get("DWARF_BENCH_DSN", ""), help="PostgreSQL admin DSN")
    run.add_argument("--repeat", type=int, default=1, help="runs; prints each and the median")
    run.add_argument(
        "--telemetry",
        choices=["none", "sdk"],
        default="none",
        help="sdk: an OpenTelemetry SDK MeterProvider and TracerProvider with in-memory exporters",
    )
    args = parser.parse_args(argv)
    results = []
    for _ in range(args.repeat):
        result = asyncio.run(run_workload(args))
        results.append(result)
        print(json.dumps(result), flush=True)
    if args.repeat > 1:
        median = statistics.median(r["steps_per_s"] for r in results)
        summary = {"workload": args.workload, "db": args.db, "median_steps_per_s": median}
        print(json.dumps(summary), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
