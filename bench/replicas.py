"""Throughput with several replica processes: how the linear workload scales with processes and shards.

``python -m bench.replicas --processes N --shards S`` creates S fresh PostgreSQL databases, starts N
replica OS processes (each an ``Engine`` with workers behind a ``RelayHost`` with a ``PgNotifyRelay``),
then drives ``--flows`` linear3 flows from this process through an operations-only engine (``workers=0``)
with ``--concurrency`` submitters that each create a flow and wait for it. The JSON line it prints has
the same throughput fields as ``bench run``. A flow may run its steps on any replica; ``wait`` here
returns when the flow-stopped signal of whichever replica finished it arrives through the relay.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from typing import Any

from bench.common import fresh_database, throughput_result
from dwarf import END, Engine, Flow, Graph, TestProxy
from dwarf.hosts.pgnotify import PgNotifyRelay
from dwarf.hosts.relay import RelayHost

READY = "replica-ready"


def _host() -> TestProxy:
    graph = Graph("linear3")
    names = ["T0", "T1", "T2"]
    for name in names:
        graph.add_task(name, "noop")
    graph.add_transition_chain(*names, END)
    host = TestProxy()
    host.handle_graph("linear3", graph)

    async def noop(flow: Flow) -> None:
        return None

    host.handle_task("noop", noop)
    return host


async def _serve_replica(dsn: str, shards: int, workers: int) -> None:
    """One replica process: run steps until SIGTERM."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    host = RelayHost(_host(), PgNotifyRelay(dsn))
    async with Engine(host=host, dsn=dsn, num_shards=shards, workers=workers):
        print(READY, flush=True)
        await stop.wait()


async def _drive(args: argparse.Namespace) -> dict[str, Any]:
    async with fresh_database("postgres", args.dsn, shards=args.shards) as database:
        host = RelayHost(_host(), PgNotifyRelay(database.url))
        async with Engine(host=host, dsn=database.url, num_shards=args.shards, workers=0) as driver:
            replicas = [_spawn(database.url, args) for _ in range(args.processes)]
            try:
                for replica in replicas:
                    line = await asyncio.to_thread(replica.stdout.readline)  # type: ignore[union-attr]
                    if line.strip() != READY:
                        raise RuntimeError(f"a replica failed to start: {line!r}")
                result = await _run_flows(driver, args)
            finally:
                for replica in replicas:
                    replica.send_signal(signal.SIGTERM)
                for replica in replicas:
                    await asyncio.to_thread(replica.wait, 30)
    result["processes"] = args.processes
    result["shards"] = args.shards
    result["settings"] = {"workers_per_process": args.workers, "relay": "pgnotify"}
    return result


def _spawn(dsn: str, args: argparse.Namespace) -> subprocess.Popen[str]:
    command = [sys.executable, "-m", "bench.replicas", "--serve", dsn, "--shards", str(args.shards)]
    command += ["--workers", str(args.workers)]
    return subprocess.Popen(command, stdout=subprocess.PIPE, text=True, env=dict(os.environ))


async def _run_flows(engine: Engine, args: argparse.Namespace) -> dict[str, Any]:
    remaining = args.flows
    latencies: list[float] = []

    async def submitter() -> None:
        nonlocal remaining
        while remaining > 0:
            remaining -= 1
            started = time.perf_counter()
            key = await engine.create("linear3")
            outcome = await engine.wait(key, timeout=120)
            if outcome.status != "completed":
                raise RuntimeError(f"flow ended {outcome.status}: {outcome.error}")
            latencies.append(time.perf_counter() - started)

    started = time.perf_counter()
    await asyncio.gather(*(submitter() for _ in range(args.concurrency)))
    elapsed = time.perf_counter() - started
    return throughput_result(
        engine="dwarf",
        workload="linear3",
        db="postgres",
        flows=args.flows,
        concurrency=args.concurrency,
        width=0,
        elapsed=elapsed,
        latencies=latencies,
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.replicas", description=__doc__)
    parser.add_argument("--processes", type=int, default=1, help="replica processes running steps")
    parser.add_argument("--shards", type=int, default=1, help="PostgreSQL databases the flows spread over")
    parser.add_argument("--flows", type=int, default=1000)
    parser.add_argument("--concurrency", type=int, default=32, help="submitters creating and waiting")
    parser.add_argument("--workers", type=int, default=64, help="workers of each replica")
    parser.add_argument("--dsn", default="", help="an admin DSN of the PostgreSQL server")
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--serve", default="", help=argparse.SUPPRESS)  # run as a replica process
    args = parser.parse_args(argv)
    if args.serve:
        asyncio.run(_serve_replica(args.serve, args.shards, args.workers))
        return
    for _ in range(args.repeat):
        print(json.dumps(asyncio.run(_drive(args))), flush=True)


if __name__ == "__main__":
    main()
