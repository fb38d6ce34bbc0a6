"""Replicas (docs/deployment.md#replicas): engines sharing a database (``make_engine`` twice with one proxy)
share the work, and a flow created on one can be waited on from the other."""

from __future__ import annotations

import asyncio
from collections import Counter
from typing import Any

from dwarf import Flow, Status
from dwarf.engine import Engine
from tests.engine.graphs import WAIT, chain, incrementer, proxy_with


async def test_both_replicas_execute_steps(make_engine: Any) -> None:
    # Each replica has a host of its own, as replicas in separate processes would, so a task knows which
    # replica runs it; the hosts are linked so that the replicas still hear each other's signals.
    ran_on: dict[str, int] = {}
    second_ran = asyncio.Event()
    first_started = asyncio.Event()

    def meet_on(replica: int) -> Any:
        async def meet(flow: Flow) -> None:
            name = flow.get_str("name")
            ran_on[name] = replica
            if name == "first":
                first_started.set()
                # Keep this replica's only worker busy until the other replica ran the second flow.
                async with asyncio.timeout(WAIT):
                    await second_ran.wait()
            else:
                second_ran.set()

        return meet

    proxies = [proxy_with("meet", chain("Meet", "Meet"), Meet=meet_on(i)) for i in range(2)]
    engines: list[Engine] = [await make_engine(proxy, workers=1) for proxy in proxies]
    proxies[0].add_peer(engines[1])
    proxies[1].add_peer(engines[0])
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
