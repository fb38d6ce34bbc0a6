"""Durable sleep and process restarts (docs/tasks.md#sleep, docs/operations.md#lifecycle): a flow survives its
engine.

Restart tests run engines on ``fresh_dsn`` (a database that outlives them) through ``Replicas``: engine
A stops mid-flow, engine B on the same database finishes the flow.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from typing import Any

from dwarf import Flow, Status
from dwarf.engine import TestProxy
from tests.engine.graphs import WAIT, Replicas, chain, proxy_with, until, wait_for_step

# With a default time budget the lease of a claimed step lasts over two minutes: a flow that finishes on
# the next engine well within this bound was handed back at shutdown, not recovered after lease expiry.
PROMPT = 5.0


def _counting_chain(calls: Counter[str], slow: dict[str, float] | None = None) -> TestProxy:
    """Chain A -> B -> C; each task increments ``count``; a task named in ``slow`` sleeps that long on its
    first call only (a later call, after a restart, is quick)."""
    delays = dict(slow or {})

    def task(name: str) -> Any:
        async def handler(flow: Flow) -> None:
            calls[name] += 1
            flow.set("count", flow.get_int("count") + 1)
            if calls[name] == 1 and name in delays:
                await asyncio.sleep(delays[name])

        return handler

    return proxy_with("counting", chain("Counting", "A", "B", "C"), A=task("A"), B=task("B"), C=task("C"))


# --- sleep ---


async def test_sleep_delays_the_next_step(make_engine: Any) -> None:
    marks: dict[str, float] = {}

    async def a(flow: Flow) -> None:
        flow.sleep(0.5)
        marks["slept"] = time.monotonic()

    async def b(flow: Flow) -> None:
        marks["next"] = time.monotonic()

    engine = await make_engine(proxy_with("sleepy", chain("Sleepy", "A", "B"), A=a, B=b))
    _, outcome = await engine.run("sleepy", timeout=WAIT)
    assert outcome.status == Status.COMPLETED
    assert marks["next"] - marks["slept"] >= 0.5 - 0.01


async def test_sleep_accepts_a_timedelta(make_engine: Any) -> None:
    from datetime import timedelta

    marks: dict[str, float] = {}

    async def a(flow: Flow) -> None:
        flow.sleep(timedelta(milliseconds=300))
        marks["slept"] = time.monotonic()

    async def b(flow: Flow) -> None:
        marks["next"] = time.monotonic()

    engine = await make_engine(proxy_with("sleepy", chain("Sleepy", "A", "B"), A=a, B=b))
    await engine.run("sleepy", timeout=WAIT)
    assert marks["next"] - marks["slept"] >= 0.3 - 0.01


async def test_sleeping_flow_is_running_until_the_next_step_runs(make_engine: Any) -> None:
    async def a(flow: Flow) -> None:
        flow.sleep(0.5)

    async def b(flow: Flow) -> None:
        flow.set("woke", True)

    engine = await make_engine(proxy_with("sleepy", chain("Sleepy", "A", "B"), A=a, B=b))
    key = await engine.create("sleepy")
    await wait_for_step(engine, key, "A", Status.COMPLETED)
    assert (await engine.snapshot(key)).status == Status.RUNNING
    outcome = await engine.wait(key, timeout=WAIT)
    assert outcome.state == {"woke": True}


# --- restarts ---


async def test_restart_while_a_step_runs_continues_on_the_next_engine(fresh_dsn: str) -> None:
    calls: Counter[str] = Counter()
    proxy = _counting_chain(calls, slow={"B": WAIT})
    async with Replicas(proxy, fresh_dsn) as replicas:
        first = await replicas.start()
        key = await first.create("counting")
        await until(lambda: calls["B"] == 1)
        await first.shutdown(drain_timeout=0)
        second = await replicas.start()
        outcome = await second.wait(key, timeout=PROMPT)
    assert outcome.status == Status.COMPLETED
    assert outcome.state == {"count": 3}
    assert calls == {"A": 1, "B": 2, "C": 1}


async def test_restart_between_steps_continues_on_the_next_engine(fresh_dsn: str) -> None:
    calls: Counter[str] = Counter()

    async def a(flow: Flow) -> None:
        calls["A"] += 1
        flow.set("count", flow.get_int("count") + 1)
        flow.sleep(0.3)

    async def b(flow: Flow) -> None:
        calls["B"] += 1
        flow.set("count", flow.get_int("count") + 1)

    proxy = proxy_with("pause", chain("Pause", "A", "B"), A=a, B=b)
    async with Replicas(proxy, fresh_dsn) as replicas:
        first = await replicas.start()
        key = await first.create("pause")
        await wait_for_step(first, key, "A", Status.COMPLETED)
        await first.shutdown()
        assert calls == {"A": 1}
        second = await replicas.start()
        outcome = await second.wait(key, timeout=PROMPT)
    assert outcome.status == Status.COMPLETED
    assert outcome.state == {"count": 2}
    assert calls == {"A": 1, "B": 1}


async def test_sleep_spanning_a_restart_still_delays_the_next_step(fresh_dsn: str) -> None:
    marks: dict[str, float] = {}

    async def a(flow: Flow) -> None:
        flow.sleep(1.0)
        marks["slept"] = time.monotonic()

    async def b(flow: Flow) -> None:
        marks["next"] = time.monotonic()

    proxy = proxy_with("sleepy", chain("Sleepy", "A", "B"), A=a, B=b)
    async with Replicas(proxy, fresh_dsn) as replicas:
        first = await replicas.start()
        key = await first.create("sleepy")
        await wait_for_step(first, key, "A", Status.COMPLETED)
        await first.shutdown()
        second = await replicas.start()
        outcome = await second.wait(key, timeout=PROMPT)
    assert outcome.status == Status.COMPLETED
    assert marks["next"] - marks["slept"] >= 1.0 - 0.01


async def test_shutdown_lets_a_running_step_finish_within_the_drain_timeout(fresh_dsn: str) -> None:
    calls: Counter[str] = Counter()
    proxy = _counting_chain(calls, slow={"B": 0.4})
    async with Replicas(proxy, fresh_dsn) as replicas:
        first = await replicas.start()
        key = await first.create("counting")
        await until(lambda: calls["B"] == 1)
        await first.shutdown(drain_timeout=WAIT)
        second = await replicas.start()
        [b_step] = [step for step in await second.history(key) if step.task_name == "B"]
        outcome = await second.wait(key, timeout=PROMPT)
    assert b_step.status == Status.COMPLETED
    assert outcome.state == {"count": 3}
    assert calls == {"A": 1, "B": 1, "C": 1}
