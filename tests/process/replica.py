"""A replica process for the crash tests: runs an engine on a DSN until it is killed.

Usage::

    python -m tests.process.replica --dsn DSN --markers DIR --workload MODULE:FUNCTION
        [--workers N] [--lease-period S] [--idle-poll S] [--schedule-poll S] [--log FILE]
        [--create GRAPH_URL [--state JSON] [--time-budget S] [--keyed-creates N [--keyed-seed S]]]
        [--codec MODULE:FUNCTION]

``MODULE:FUNCTION`` names a function that takes the marker directory and returns the engine's host
(``tests.process.workloads`` has the ones the tests use). With ``--create`` the replica starts one flow
and prints its key. With ``--keyed-creates N`` as well, it waits for the marker ``keyed-go``, then
creates N flows with the idempotency keys ``k0`` ... ``k<N-1>`` (in an order shuffled by
``--keyed-seed``; each state holds its ``key`` and, as ``createdBy``, the pid) and prints
``IDEMPOTENCY_KEY FLOW_KEY`` for each. Lease margin and idle poll shrink the scheduler's defaults (set
right after startup, before any claim) so that crash recovery takes a second, not minutes. ``--codec``
names a function of the marker directory that returns the engine's codecs (docs/codecs.md). The engine
logs at INFO to ``--log``, which is how a test sees, e.g., that a late commit was rejected.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import json
import logging
import os
import random
from collections.abc import Callable
from pathlib import Path
from typing import Any

from dwarf import Engine, FlowOptions, SchedulerTuning
from tests.process.harness import wait_for_file


def load_workload(spec: str) -> Callable[[Path], Any]:
    module, _, function = spec.partition(":")
    builder: Callable[[Path], Any] = getattr(importlib.import_module(module), function)
    return builder


def _file_logger(path: str) -> logging.Logger | None:
    if not path:
        return None
    logger = logging.getLogger("dwarf.replica")
    logger.setLevel(logging.INFO)
    handler = logging.FileHandler(path)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    logger.addHandler(handler)
    return logger


async def run(args: argparse.Namespace) -> None:
    markers = Path(args.markers)
    host = load_workload(args.workload)(markers)
    tuning = SchedulerTuning(
        lease_period=args.lease_period, idle_poll=args.idle_poll, schedule_poll=args.schedule_poll
    )
    engine = Engine(
        host=host,
        dsn=args.dsn,
        workers=args.workers,
        logger=_file_logger(args.log),
        scheduler_tuning=tuning,
        codec=load_workload(args.codec)(markers) if args.codec else None,
    )
    await engine.startup()
    if args.create and args.keyed_creates:
        state = json.loads(args.state)
        numbers = list(range(args.keyed_creates))
        random.Random(args.keyed_seed).shuffle(numbers)
        (markers / f"keyed-ready-{os.getpid()}").write_text("")
        await wait_for_file(markers / "keyed-go", 60)
        for number in numbers:
            idempotency_key = f"k{number}"
            options = FlowOptions(time_budget=args.time_budget, idempotency_key=idempotency_key)
            created = {**state, "key": idempotency_key, "createdBy": os.getpid()}
            key = await engine.create(args.create, created, options)
            print(idempotency_key, key, flush=True)
    elif args.create:
        options = FlowOptions(time_budget=args.time_budget)
        key = await engine.create(args.create, json.loads(args.state), options)
        print(key, flush=True)
    await asyncio.Event().wait()  # until killed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--dsn", required=True)
    parser.add_argument("--markers", required=True)
    parser.add_argument("--workload", required=True)
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--lease-period", type=float, default=1.2)
    parser.add_argument("--idle-poll", type=float, default=0.1)
    parser.add_argument("--schedule-poll", type=float, default=5.0)
    parser.add_argument("--log", default="")
    parser.add_argument("--create", default="")
    parser.add_argument("--state", default="{}")
    parser.add_argument("--time-budget", type=float, default=1.0)
    parser.add_argument("--keyed-creates", type=int, default=0)
    parser.add_argument("--keyed-seed", type=int, default=0)
    parser.add_argument("--codec", default="")
    asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    main()
