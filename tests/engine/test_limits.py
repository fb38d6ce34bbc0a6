"""Concurrency and rate limits per fairness key or task URL (docs/limits.md), on both backends.

Tasks record when they run (``Meter``): a step runs on a worker only while its row is leased, so the
overlap the tasks see never exceeds the running steps the database counts, and a limit that held in the
database holds in the meter. Replicas share one database; several of them must never exceed a limit
together. Timing assertions are upper bounds on what the limit allows, with slack, and lower bounds on
how long limited work takes (a loaded machine only makes it slower).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import Counter, defaultdict
from typing import Any

import pytest

from dwarf import BadRequestError, Flow, FlowOptions, LimitScope, Status, WaitReason
from dwarf.engine import Engine, SchedulerTuning, TestProxy
from dwarf.engine import scheduler as scheduler_module
from dwarf.workflow.graph import Graph
from tests.conftest import EngineMaker
from tests.engine.graphs import WAIT, Gate, chain, for_each, noop

HOLD = 0.08
"""Seconds a metered task runs: long enough for steps of one key to overlap without a limit."""


class Meter:
    """How many steps of each label run at once (the highest count seen), and when each started."""

    def __init__(self) -> None:
        self.running: Counter[str] = Counter()
        self.peak: Counter[str] = Counter()
        self.starts: defaultdict[str, list[float]] = defaultdict(list)
        self._gathered: defaultdict[str, asyncio.Event] = defaultdict(asyncio.Event)

    def task(self, label: str | None = None, hold: float = HOLD, gather: dict[str, int] | None = None) -> Any:
        """A task counted under ``label``, or under its flow's ``key`` field. A run of a label ``gather``
        names holds on until that many of the label ran at once (or a second passed): unlimited work then
        shows that nothing held it back, however slowly the test created it."""
        wanted = gather or {}

        async def handler(flow: Flow) -> None:
            name = label if label is not None else flow.get_str("key")
            self.running[name] += 1
            self.peak[name] = max(self.peak[name], self.running[name])
            self.starts[name].append(time.monotonic())
            if self.peak[name] >= wanted.get(name, 0):
                self._gathered[name].set()
            try:
                await asyncio.sleep(hold)
                if name in wanted:
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._gathered[name].wait(), 1.0)
            finally:
                self.running[name] -= 1

        return handler


def _metered(meter: Meter, graph: Graph, *tasks: str, hold: float = HOLD) -> TestProxy:
    proxy = TestProxy()
    proxy.handle_graph("work", graph)
    for task in tasks:
        proxy.handle_task(task, meter.task(hold=hold))
    return proxy


async def _create(engine: Engine, key: str, url: str = "work", **state: Any) -> str:
    return await engine.create(url, {"key": key, **state}, FlowOptions(fairness_key=key))


async def _all_complete(engine: Engine, keys: list[str]) -> None:
    for key in keys:
        assert (await engine.wait(key, timeout=WAIT)).status == Status.COMPLETED


async def test_a_concurrency_limit_holds_across_replicas(make_engine: EngineMaker) -> None:
    meter = Meter()
    proxy = TestProxy()
    proxy.handle_graph("work", chain("Work", "W1", "W2"))
    for task in ("W1", "W2"):
        proxy.handle_task(task, meter.task(gather={"b": 3}))
    replicas = [await make_engine(proxy, workers=4), await make_engine(proxy, workers=4)]
    await replicas[0].limit("a", concurrency=2)
    keys = [await _create(replicas[i % 2], key) for i, key in enumerate(["a", "b"] * 8)]
    await _all_complete(replicas[1], keys)
    # Each step of each flow of "a" ran, never more than two at once (the second step of a flow is
    # claimed like any other, not run inline past the limit); "b" has no limit and used the workers.
    assert len(meter.starts["a"]) == 16
    assert meter.peak["a"] == 2
    assert meter.peak["b"] >= 3


async def test_a_task_url_limit_holds_whatever_the_flows_fairness_keys(make_engine: EngineMaker) -> None:
    meter = Meter()
    proxy = TestProxy()
    proxy.handle_graph("slow", chain("Slow", "Slow", "After"))
    proxy.handle_graph("fast", chain("Fast", "Fast"))
    for task in ("Slow", "After", "Fast"):
        proxy.handle_task(task, meter.task(task, gather={"Fast": 3}))
    engine = await make_engine(proxy, workers=6)
    await engine.limit("Slow", concurrency=1, scope="task_url")
    keys = [await _create(engine, f"tenant-{i}", url) for i in range(6) for url in ("slow", "fast")]
    await _all_complete(engine, keys)
    assert meter.peak["Slow"] == 1 and len(meter.starts["Slow"]) == 6
    assert len(meter.starts["After"]) == 6
    assert meter.peak["Fast"] >= 3  # the limit holds back Slow only


async def test_a_fan_out_under_a_task_url_limit_finishes_within_it(make_engine: EngineMaker) -> None:
    meter = Meter()
    proxy = TestProxy()
    proxy.handle_graph("work", for_each())
    proxy.handle_task("Split", noop)
    proxy.handle_task("Work", meter.task("Work", hold=0.03))
    proxy.handle_task("Join", noop)
    engine = await make_engine(proxy, workers=8)
    await engine.limit("Work", concurrency=3, scope="task_url")
    key = await engine.create("work", {"items": list(range(12))})
    assert (await engine.wait(key, timeout=WAIT)).status == Status.COMPLETED
    assert meter.peak["Work"] == 3 and len(meter.starts["Work"]) == 12


async def test_a_registered_task_names_its_task_url(make_engine: EngineMaker) -> None:
    proxy = TestProxy()

    @proxy.task("https://api.example/charge")
    async def charge(flow: Flow) -> None:
        pass

    engine = await make_engine(proxy)
    await engine.limit(charge, rate=5)
    [limit] = await engine.list_limits()
    assert (limit.scope, limit.key, limit.rate, limit.burst, limit.concurrency) == (
        LimitScope.TASK_URL,
        "https://api.example/charge",
        5.0,
        5,
        None,
    )
    assert limit.describe() == "task URL 'https://api.example/charge': 5/s (burst 5)"
    assert await engine.clear_limit(charge)
    assert not await engine.clear_limit(charge)
    assert await engine.list_limits() == []


async def test_a_rate_limit_spaces_the_starts_of_its_key(make_engine: EngineMaker) -> None:
    meter = Meter()
    proxy = _metered(meter, chain("Work", "W1"), "W1", hold=0.0)
    replicas = [await make_engine(proxy, workers=4), await make_engine(proxy, workers=4)]
    rate, burst, flows = 20.0, 2, 24
    await replicas[0].limit("r", rate=rate, burst=burst)
    keys = [await _create(replicas[i % 2], "r") for i in range(flows)]
    created: dict[str, float] = {}
    for i in range(8):
        created[await _create(replicas[i % 2], "free", number=i)] = time.monotonic()
    await _all_complete(replicas[0], [*keys, *created])
    starts = sorted(meter.starts["r"])
    assert len(starts) == flows
    # No window saw more starts than the bucket allows (burst + rate x window), give or take two for the
    # time between a claim and its task's start; the whole took at least what the rate allows.
    window = 0.5
    most = max(sum(1 for t in starts if first <= t < first + window) for first in starts)
    assert most <= burst + rate * window + 2, most
    assert starts[-1] - starts[0] >= (flows - burst) / rate * 0.8
    # The unlimited key did not queue behind the rate: each of its flows started as soon as it was made.
    waited = [start - min(created.values()) for start in meter.starts["free"]]
    assert max(waited) < max(created.values()) - min(created.values()) + 0.6, waited


async def test_a_database_without_limits_is_claimed_as_before(
    make_engine: EngineMaker, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No limit, no claim under limits: the claim is the one statement it always was."""

    async def refused(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("a claim under limits on a database without limits")

    monkeypatch.setattr(scheduler_module, "claim_under_limits", refused)
    meter = Meter()
    engine = await make_engine(_metered(meter, chain("Work", "W1", "W2"), "W1", "W2", hold=0.0))
    store = engine.runtime.stores[0]
    statements: Counter[str] = Counter()
    write = store.write

    async def counting(query: Any, **params: Any) -> Any:
        statements[query] += 1
        return await write(query, **params)

    monkeypatch.setattr(store, "write", counting)
    keys = [await _create(engine, key) for key in ["a", "b", "a"]]
    await _all_complete(engine, keys)
    assert statements["claim_due_steps"] >= 1
    assert not engine.runtime.limits.active(store.shard)
    # A limit that comes and goes leaves the engine claiming as before.
    monkeypatch.undo()
    await engine.limit("a", concurrency=1)
    assert engine.runtime.limits.active(store.shard)
    await engine.clear_limit("a")
    assert not engine.runtime.limits.active(store.shard)


async def test_a_replica_that_has_not_heard_of_a_new_limit_starts_nothing_past_it(
    make_engine: EngineMaker,
) -> None:
    # Two hosts that do not signal each other: the second replica hears of the limit only at its idle
    # poll, which is far away. Until then its claim for a database without limits claims nothing.
    meter = Meter()
    graph = chain("Work", "W1")
    setter, stale = _metered(meter, graph, "W1"), _metered(meter, graph, "W1")
    first = await make_engine(setter, workers=4, scheduler_tuning=SchedulerTuning(idle_poll=0.1))
    second = await make_engine(stale, workers=4, scheduler_tuning=SchedulerTuning(idle_poll=60.0))
    await asyncio.sleep(0.1)  # the second replica's claimer has read the limits (none) before its loop
    await first.limit("a", concurrency=1)
    assert not second.runtime.limits.active(1)
    keys = [await _create(second, "a") for _ in range(4)]
    await _all_complete(second, keys)
    assert meter.peak["a"] == 1 and len(meter.starts["a"]) == 4


async def test_a_new_limit_counts_the_steps_of_its_key_already_running(make_engine: EngineMaker) -> None:
    gate = Gate()
    proxy = TestProxy()
    proxy.handle_graph("work", chain("Work", "W1"))

    async def blocking(flow: Flow) -> None:
        if flow.get_str("role") == "first":
            await gate.pass_through()

    proxy.handle_task("W1", blocking)
    engine = await make_engine(proxy, workers=4)
    first = await _create(engine, "a", role="first")
    await gate.wait_entered()
    await engine.limit("a", concurrency=1)
    [limit] = await engine.list_limits()
    assert limit.running == 1  # the step claimed before the limit existed holds its slot
    second = await _create(engine, "a", role="second")
    waits = await _waits_until(engine, second, WaitReason.LIMITED)
    [wait] = [wait for wait in waits if wait.reason == WaitReason.LIMITED]
    assert wait.limit is not None and wait.limit.key == "a" and wait.limit.running == 1
    assert str(wait) == "W1 waiting for the concurrency limit of fairness key 'a' (1 of 1 running)"
    gate.open()
    await _all_complete(engine, [first, second])


async def test_why_names_a_rate_limit_and_clearing_it_lets_the_step_start(make_engine: EngineMaker) -> None:
    proxy = TestProxy()
    proxy.handle_graph("work", chain("Work", "W1"))
    proxy.handle_task("W1", noop)
    engine = await make_engine(proxy)
    await engine.limit("slow", rate=0.01, burst=1)  # one start, then one every 100 s
    first = await _create(engine, "slow")
    await _all_complete(engine, [first])
    second = await _create(engine, "slow")
    waits = await _waits_until(engine, second, WaitReason.LIMITED)
    assert "waiting for the rate limit of fairness key 'slow' (0.01 starts per second)" in str(waits[0])
    [limit] = await engine.list_limits()
    assert limit.tokens < 1 and limit.at_limit
    started = time.monotonic()
    assert await engine.clear_limit("slow")
    await _all_complete(engine, [second])
    assert time.monotonic() - started < 2.0  # the change rang the doorbell: no wait for a poll


async def test_a_slot_freed_on_one_replica_wakes_the_other_at_once(make_engine: EngineMaker) -> None:
    # Idle polls of a minute: only the doorbells (local, and the peers' signals) can start the steps
    # held back by the limit, one as soon as the one before ends.
    meter = Meter()
    proxy = _metered(meter, chain("Work", "W1"), "W1", hold=0.02)
    tuning = SchedulerTuning(idle_poll=60.0)
    replicas = [await make_engine(proxy, workers=2, scheduler_tuning=tuning) for _ in range(2)]
    await replicas[0].limit("a", concurrency=1)
    started = time.monotonic()
    keys = [await _create(replicas[i % 2], "a") for i in range(8)]
    await _all_complete(replicas[0], keys)
    assert meter.peak["a"] == 1
    assert time.monotonic() - started < 5.0


async def test_limits_hold_on_each_shard(make_engine: EngineMaker) -> None:
    meter = Meter()
    engine = await make_engine(_metered(meter, chain("Work", "W1"), "W1"), num_shards=2, workers=8)
    await engine.limit("a", concurrency=1)
    limits = await engine.list_limits()
    assert sorted(limit.shard for limit in limits) == [1, 2]
    keys = [await _create(engine, "a") for _ in range(8)]
    await _all_complete(engine, keys)
    assert meter.peak["a"] <= 2  # one per shard


async def _never_registered(flow: Flow) -> None:
    """A task function no host registers. (The shared ``noop`` will not do: a test that registered it
    on a host earlier in the same process leaves it knowing its URL.)"""


BAD_LIMITS: list[tuple[Any, dict[str, Any], str]] = [
    ("a", {}, "set a concurrency, a rate or both"),
    ("a", {"concurrency": 0}, "concurrency must be from 1"),
    ("a", {"concurrency": -2}, "concurrency must be from 1"),
    ("a", {"concurrency": True}, "concurrency must be an integer"),
    ("a", {"concurrency": 2.5}, "concurrency must be an integer"),
    ("a", {"concurrency": 10_000_000}, "concurrency must be from 1"),
    ("a", {"rate": 0}, "rate must be more than 0"),
    ("a", {"rate": -1.0}, "rate must be more than 0"),
    ("a", {"rate": float("nan")}, "rate must be a finite number"),
    ("a", {"rate": float("inf")}, "rate must be a finite number"),
    ("a", {"rate": "5"}, "rate must be a finite number"),
    ("a", {"concurrency": 1, "burst": 3}, "burst belongs to a rate"),
    ("a", {"rate": 1, "burst": 0}, "burst must be from 1"),
    ("a", {"rate": 1, "burst": 1.5}, "burst must be an integer"),
    ("a", {"concurrency": 1, "scope": "tenant"}, "unknown limit scope 'tenant'"),
    ("", {"concurrency": 1, "scope": "task_url"}, "the key must not be empty"),
    (42, {"concurrency": 1}, "a limit's key must be a string"),
    ("a\x00b", {"concurrency": 1}, "a limit's key"),
    ("x" * 1025, {"concurrency": 1}, "at most 1024 bytes"),
    (_never_registered, {"concurrency": 1}, "is not a task registered under one URL"),
]


async def test_bad_limits_are_refused_and_change_nothing(make_engine: EngineMaker) -> None:
    engine = await make_engine(TestProxy(), workers=0)
    for key, options, message in BAD_LIMITS:
        with pytest.raises(BadRequestError, match=message):
            await engine.limit(key, **options)
        if "scope" in options or not isinstance(key, str) or not key or len(key) > 1024 or "\x00" in key:
            with pytest.raises(BadRequestError):
                await engine.clear_limit(key, scope=options.get("scope"))
    assert await engine.list_limits() == []


async def test_a_limit_is_replaced_and_keeps_its_tokens(make_engine: EngineMaker) -> None:
    engine = await make_engine(TestProxy(), workers=0)
    await engine.limit("a", concurrency=3, rate=2.5)
    [limit] = await engine.list_limits()
    assert (limit.concurrency, limit.rate, limit.burst, limit.running) == (3, 2.5, 3, 0)
    assert limit.tokens == pytest.approx(3.0)
    await engine.limit("a", rate=100, burst=2)
    [limit] = await engine.list_limits()
    assert (limit.concurrency, limit.rate, limit.burst) == (None, 100.0, 2)
    assert limit.tokens == pytest.approx(2.0)  # a full bucket, cut to the new burst
    await engine.limit("a", concurrency=1)
    [limit] = await engine.list_limits()
    assert (limit.concurrency, limit.rate, limit.burst, limit.tokens) == (1, None, None, 0.0)
    assert limit.describe() == "fairness key 'a': at most 1 running (0 now)"


async def _waits_until(engine: Engine, key: str, reason: WaitReason) -> list[Any]:
    deadline = time.monotonic() + WAIT
    while True:
        waits = await engine.why(key)
        if any(wait.reason == reason for wait in waits):
            return waits
        assert time.monotonic() < deadline, f"no {reason} wait; last: {waits}"
        await asyncio.sleep(0.02)
