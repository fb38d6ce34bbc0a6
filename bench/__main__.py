"""Benchmarks: ``python -m bench run|peers|report|suite|flatcost``.

``run`` measures our engine on one workload and prints one JSON line per run: the workload, the backend,
throughput (steps/s, flows/s), latency percentiles of whole flows, and the engine settings. Tasks are
no-ops, so the numbers measure the engine and the database, not the work. Every run uses a fresh database
(a new SQLite file, or a new PostgreSQL database that is dropped afterwards). ``--telemetry sdk`` installs
the OpenTelemetry SDK on the engine (metrics into an in-memory reader, spans through a batch processor into
an in-memory exporter) to measure what full telemetry costs; the default ``none`` leaves it off.
``--workload idle`` counts the statements an engine with no work sends per shard; ``--workload parked``
reports the RSS that N interrupted flows add.

``--workload backlog|growing|aged|statesize`` are the flat-cost workloads (bench/flatcost.py): ``backlog``
drains ``--flows`` linear3 flows created while no worker ran (create time and drain rate apart);
``growing`` loops one flow ``--turns`` times, adding 1 KiB to its state a turn (``--api``: flow.append
where the Flow has it, or get + set of the whole list), and compares the first and last turns' latency;
``aged`` measures linear3 on a database holding ``--history`` completed flows next to an empty one;
``statesize`` measures linear3 at each initial state size of ``--state-bytes`` (default 1 KiB, 16 KiB,
256 KiB, 1 MiB) against 1 KiB.

``peers`` runs linear3/fanout/latency on DBOS or LangGraph (the ``bench`` extra) and prints the same
schema. ``report`` runs ours and the peers interleaved, three times each, and writes docs/benchmarks.md
and docs/images/benchmarks.png. ``suite`` runs all of our workloads at a small size (``make bench``).
``flatcost`` runs the four flat-cost workloads at a small and a large size (the issue's targets: 100,000
backlog flows, 1,000 turns, 100,000 history flows, 1 MiB of state; ``--quick``: 10,000 / 300 / 10,000)
and prints a markdown table of how much more a step costs at the large size; ``--rows`` re-renders it,
``--save`` keeps the rows (bench/flatcost_before.json, the "before" of the report, was made so).
``report`` also runs the flat-cost workloads at the issue's sizes after the peers (``--no-flatcost``
leaves them out, ``--flatcost-rows FILE`` renders them from saved rows) and shows them next to the
"before" rows of bench/flatcost_before.json.
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
FLATCOST_WORKLOADS = ["backlog", "growing", "aged", "statesize"]
PEER_WORKLOADS = ["linear3", "fanout", "latency"]

# The number --repeat summarises with its median, per workload.
SUMMARY_METRIC = {
    "idle": "queries_per_s_per_shard",
    "parked": "rss_delta_mb",
    "latency": "p50_ms",
    "backlog": "drain_steps_per_s",
    "growing": "late_over_early",
    "aged": "aged_over_fresh",
    "statesize": "largest_over_1k",
}


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
    _common_arguments(run, [*THROUGHPUT_WORKLOADS, "idle", "parked", *FLATCOST_WORKLOADS])
    run.add_argument("--workers", type=int, default=0)
    run.add_argument(
        "--telemetry",
        choices=["none", "sdk"],
        default="none",
        help="sdk: an OpenTelemetry SDK MeterProvider and TracerProvider with in-memory exporters",
    )
    run.add_argument("--seconds", type=float, default=10.0, help="idle: how long to count")
    run.add_argument("--shards", type=int, default=1, help="idle: shards of the engine")
    run.add_argument("--turns", type=int, default=0, help="growing: turns of the flow (0: 300)")
    run.add_argument(
        "--api",
        choices=["auto", "append", "set"],
        default="auto",
        help="growing: add each item with flow.append or get + set of the list (auto: append if it exists)",
    )
    run.add_argument("--history", type=int, default=0, help="aged: completed flows first (0: 10,000)")
    run.add_argument(
        "--state-bytes",
        default="",
        help="statesize: bytes of initial state, one or comma-separated (default 1024,16384,262144,1048576)",
    )

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
    report.add_argument(
        "--no-flatcost",
        action="store_true",
        help="leave out the flat-cost workloads (backlog, growing, aged, statesize) and their sections",
    )
    report.add_argument(
        "--flatcost-rows",
        default="",
        help="render the flat-cost sections from this file of rows (as flatcost or report saved them) "
        "instead of running them",
    )

    flatcost = sub.add_parser("flatcost", help="the flat-cost workloads, small vs large, as a markdown table")
    flatcost.add_argument("--db", choices=["sqlite", "postgres", "both"], default="both")
    flatcost.add_argument("--quick", action="store_true", help="large sizes of 10,000 flows / 300 turns")
    flatcost.add_argument("--dsn", default=os.environ.get("DWARF_BENCH_DSN", ""), help="PostgreSQL admin DSN")
    flatcost.add_argument("--rows", default="", help="render from a file of saved rows, run nothing")
    flatcost.add_argument(
        "--large-backlog", type=int, default=0, help="flows of the large backlog (0: plan's)"
    )
    flatcost.add_argument("--turns", type=int, default=0, help="turns of the growing flow (0: the plan's)")
    flatcost.add_argument("--history", type=int, default=0, help="completed flows of aged (0: the plan's)")
    flatcost.add_argument(
        "--save",
        default="",
        help="also write the rows to this file as one JSON document with the engine measured and --note's",
    )
    flatcost.add_argument(
        "--note", action="append", default=[], help="with --save: a sentence about the runs"
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
        from bench import flatcost, ours

        measures = {"idle": ours.run_idle, "parked": ours.run_parked, **flatcost.MEASURES}
        measure = measures.get(args.workload, ours.run_workload)
        _repeat(args, lambda: measure(args))
    elif args.command == "peers":
        from bench import peers

        _repeat(args, lambda: peers.run_peer(args))
    elif args.command == "report":
        from bench import report

        return report.main(args)
    elif args.command == "flatcost":
        from bench import flatcost

        return flatcost.main(args)
    else:
        from bench import report

        return report.suite(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
