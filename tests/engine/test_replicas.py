"""Replicas (docs/deployment.md#replicas): engines sharing a database (``make_engine`` twice with one proxy)
share the work, and a flow created on one can be waited on from the other."""

from __future__ import annotations

import asyncio
from collections import Counter
from typing import Any

from dwarf import Flow, Status
from dwarf.engine import Engine
from tests.engine.graphs import WAIT, chain, incrementer, proxy_with


def _running_engine(engines: list[Engine]) -> int:
    """The index of the engine whose worker runs the calling task."""
    task = asyncio.current_task()
    owners = [
        i
        for i, engine in enumerate(engines)
        if engine._scheduler
        and any(flight.lease.task is task for flight in engine._scheduler._in_flight.values())
    ]
    assert len(owners) == 1
    return owners[0]


async def test_both_replicas_execute_steps(make_engine: Any) -> None:
    engines: list[Engine] = []
    ran_on: dict[str, int] = {}
    second_ran = asyncio.Event()
    first_started = asyncio.Event()

    async def meet(flow: Flow) -> None:
        name = flow.get_str("name")
        ran_on[name] = _running_engine(engines)
        if name == "first":
            first_started.set()
            # Keep this replica's only worker busy until the other replica ran the second flow.
            async with asyncio.timeout(WAIT):
                await second_ran.wait()
        else:
            second_ran.set()

    proxy = proxy_with("meet", chain("Meet", "Meet"), Meet=meet)
    engines.append(await make_engine(proxy, workers=1))
    engines.append(await make_engine(proxy, workers=1))
    first = await engines[0].create("meet", {"name": "first"})
    async with asyncio.timeout(WAIT):
        await first_started.wait()
    second = await engines[0].create("meet", {"name": "second"})
    assert (await engines[0].wait(second, timeout=WAIT)).status == Status.COMPLETED
    assert (await engines[1].wait(first, timeout=WAIT)).status == Status.COMPLETED
    assert sorted(ran_on.values()) == [0, 1]


async def test_flow_created_on_one_replica_can_be_waited_on_from_the_other(make_engine: Any) -> None:
    proxy = proxy_with("count", chain("Count", "A", "B"), A=incrementer(), B=incrementer())
    creator = await make_engine(proxy)
    waiter = await make_engine(proxy)
    key = await creator.create("count")
    outcome = await waiter.wait(key, timeout=WAIT)
    assert outcome.status == Status.COMPLETED
    assert outcome.state == {"count": 2}


async def test_every_step_runs_exactly_once_across_replicas(make_engine: Any) -> None:
    calls: Counter[str] = Counter()

    def task(name: str) -> Any:
        async def handler(flow: Flow) -> None:
            calls[name] += 1
            flow.set("count", flow.get_int("count") + 1)
            await asyncio.sleep(0.01)

        return handler

    proxy = proxy_with("count", chain("Count", "A", "B"), A=task("A"), B=task("B"))
    replicas = [await make_engine(proxy, workers=4), await make_engine(proxy, workers=4)]
    keys = [await replicas[i % 2].create("count") for i in range(16)]
    outcomes = [await replicas[(i + 1) % 2].wait(key, timeout=WAIT) for i, key in enumerate(keys)]
    assert [o.state for o in outcomes] == [{"count": 2}] * 16
    assert calls == {"A": 16, "B": 16}


async def test_snapshot_and_history_agree_across_replicas(make_engine: Any) -> None:
    proxy = proxy_with("count", chain("Count", "A", "B"), A=incrementer(), B=incrementer())
    one = await make_engine(proxy)
    two = await make_engine(proxy)
    key, _ = await one.run("count", timeout=WAIT)
    assert await one.snapshot(key) == await two.snapshot(key)
    assert await one.history(key) == await two.history(key)
