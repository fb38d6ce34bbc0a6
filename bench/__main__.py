"""Benchmarks: ``python -m bench run|peers|report|suite``.

``run`` measures our engine on one workload and prints one JSON line per run: the workload, the backend,
throughput (steps/s, flows/s), latency percentiles of whole flows, and the engine settings. Tasks are
no-ops, so the numbers measure the engine and the database, not the work. Every run uses a fresh database
(a new SQLite file, or a new PostgreSQL database that is dropped afterwards). ``--telemetry sdk`` installs
the OpenTelemetry SDK on the engine (metrics into an in-memory reader, spans through a batch processor into
an in-memory exporter) to measure what full telemetry costs; the default ``none`` leaves it off.
``--workload idle`` counts the statements an engine with no work sends per shard; ``--workload parked``
reports the RSS that N interrupted flows add.

``peers`` runs linear3/fanout/latency on DBOS or LangGraph (the ``bench`` extra) and prints the same
schema. ``report`` runs ours and the peers interleaved, three times each, and writes docs/benchmarks.md
and docs/images/benchmarks.png. ``suite`` runs all of our workloads at a small size (``make bench``).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
from collections.abc import Callable, Coroutine
from typing import Any

THROUGHPUT_WORKLOADS = ["linear3", "linear10", "fanout", "latency"]
PEER_WORKLOADS = ["linear3", "fanout", "latency"]

# The number --repeat summarises with its median, per workload.
SUMMARY_METRIC = {"idle": "queries_per_s_per_shard", "parked": "rss_delta_mb", "latency": "p50_ms"}


def _common_arguments(parser: argparse.ArgumentParser, workloads: list[str]) -> None:
    parser.add_argument("--db", choices=["sqlite", "postgres"], default="sqlite")
    parser.add_argument("--workload", choices=workloads, default="linear3")
    parser.add_argument("--flows", type=int, default=0, help="0: the workload's default")
    parser.add_argument("--concurrency", type=int, default=0, help="0: the workload's default")
    parser.add_argument("--width", type=int, default=100, help="fan-out branches")
    parser.add_argument("--dsn", default=os.environ.get("DWARF_BENCH_DSN", ""), help="PostgreSQL admin DSN")
    parser.add_argument("--repeat", type=int, default=1, help="runs; prints each and the median")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m bench", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="run one workload of ours and print a JSON line")
    _common_arguments(run, [*THROUGHPUT_WORKLOADS, "idle", "parked"])
    run.add_argument("--workers", type=int, default=0)
    run.add_argument(
        "--telemetry",
        choices=["none", "sdk"],
        default="none",
        help="sdk: an OpenTelemetry SDK MeterProvider and TracerProvider with in-memory exporters",
    )
    run.add_argument("--seconds", type=float, default=10.0, help="idle: how long to count")
    run.add_argument("--shards", type=int, default=1, help="idle: shards of the engine")

    peers = sub.add_parser("peers", help="run one workload on a peer engine and print a JSON line")
    peers.add_argument("--engine", choices=["dbos", "langgraph"], required=True)
    _common_arguments(peers, PEER_WORKLOADS)
    peers.add_argument(
        "--durability",
        choices=["sync", "async"],
        default="async",
        help="LangGraph only: when checkpoints are written (its default is async)",
    )

    report = sub.add_parser("report", help="run ours and the peers; write docs/benchmarks.md and the chart")
    report.add_argument("--quick", action="store_true", help="small sizes, one round: a smoke run")
    report.add_argument("--dsn", default=os.environ.get("DWARF_BENCH_DSN", ""), help="PostgreSQL admin DSN")
    report.add_argument("--rounds", type=int, default=0, help="interleaved rounds (default 3; quick: 1)")
    report.add_argument(
        "--output-dir",
        default="",
        help="where benchmarks.md and images/benchmarks.png go (default docs; quick: a temporary folder)",
    )
    report.add_argument("--rows", default="", help="render from a JSON-lines file of results, run nothing")
    report.add_argument(
        "--rerun-failed", action="store_true", help="with --rows: run the failed rows again, save, render"
    )

    suite = sub.add_parser("suite", help="all of our workloads at a small size on SQLite and PostgreSQL")
    suite.add_argument("--dsn", default=os.environ.get("DWARF_BENCH_DSN", ""), help="PostgreSQL admin DSN")
    return parser


def _repeat(args: argparse.Namespace, measure: Callable[[], Coroutine[Any, Any, dict[str, Any]]]) -> None:
    results = []
    for _ in range(args.repeat):
        result = asyncio.run(measure())
        results.append(result)
        print(json.dumps(result), flush=True)
    if args.repeat > 1:
        metric = SUMMARY_METRIC.get(args.workload, "steps_per_s")
        summary = {
            "engine": results[0]["engine"],
            "workload": args.workload,
            "db": args.db,
            f"median_{metric}": statistics.median(r[metric] for r in results),
        }
        print(json.dumps(summary), flush=True)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "run":
        from bench import ours

        measure = {"idle": ours.run_idle, "parked": ours.run_parked}.get(args.workload, ours.run_workload)
        _repeat(args, lambda: measure(args))
    elif args.command == "peers":
        from bench import peers

        _repeat(args, lambda: peers.run_peer(args))
    elif args.command == "report":
        from bench import report

        return report.main(args)
    else:
        from bench import report

        return report.suite(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
