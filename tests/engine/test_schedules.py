"""Durable schedules (docs/schedules.md): a schedule starts exactly one flow per tick, with its state and
options, however many engines run; pause, resume, delete and re-declaring behave; a late engine catches
up as the schedule's policy says; bad schedules are refused with nothing written; and an engine without
schedules pays one indexed query per poll interval, nothing per step."""

from __future__ import annotations

import asyncio
import collections
import itertools
import time
from datetime import datetime, timedelta
from typing import Any

import pytest

from dwarf import (
    BadRequestError,
    FlowOptions,
    Graph,
    InvalidGraphError,
    NotFoundError,
    Query,
    Schedule,
    SchedulerTuning,
    Status,
)
from dwarf.engine import Engine, TestProxy
from dwarf.store.base import Row
from dwarf.workflow import schedules as schedule_rules
from tests.engine.graphs import WAIT, chain, graph_of, incrementer, not_refused, wait_until

EVERY = 0.1
"""The interval of the fast schedules here (the shortest a schedule may have)."""
FAST = SchedulerTuning(schedule_poll=0.2, idle_poll=0.2)


class SwitchableProxy(TestProxy):
    """A TestProxy that can stop serving its workflows (``serving = False``), as a host after a bad deploy."""

    def __init__(self) -> None:
        super().__init__()
        self.serving = True

    async def load_graph(self, workflow_url: str) -> Graph | None:
        return await super().load_graph(workflow_url) if self.serving else None


def _proxy() -> SwitchableProxy:
    proxy = SwitchableProxy()
    proxy.handle_graph("tick", chain("Tick", "Count"))
    proxy.handle_task("Count", incrementer("runs"))
    return proxy


def _ms(text: str) -> int:
    return round(datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp() * 1000)


async def _ticks(engine: Engine, workflow_url: str = "tick") -> dict[int, list[str]]:
    """The flows of ``workflow_url`` by the tick that started them (ms), in tick order."""
    page, _ = await engine.list(Query(workflow_url=workflow_url, limit=1000))
    found: dict[int, list[str]] = collections.defaultdict(list)
    for summary in page:
        state = (await engine.snapshot(summary.flow_key)).state
        found[_ms(state["scheduledAt"])].append(summary.flow_key)
    return dict(sorted(found.items()))


async def _flow_count(engine: Engine, workflow_url: str = "tick") -> int:
    page, _ = await engine.list(Query(workflow_url=workflow_url, limit=1000))
    return len(page)


async def _wait_for_flows(engine: Engine, count: int, workflow_url: str = "tick") -> None:
    async def enough() -> bool:
        return await _flow_count(engine, workflow_url) >= count

    await wait_until(enough, WAIT)


def _assert_one_flow_per_consecutive_tick(ticks: dict[int, list[str]], every: float = EVERY) -> None:
    doubled = {tick: keys for tick, keys in ticks.items() if len(keys) != 1}
    assert not doubled, f"ticks with more than one flow: {doubled}"
    times = list(ticks)
    gaps = [later - earlier for earlier, later in itertools.pairwise(times)]
    assert set(gaps) <= {round(every * 1000)}, f"ticks missing between {times}"


# --- one flow per tick ---


async def test_a_schedule_starts_one_flow_per_tick_with_its_state(make_engine: Any) -> None:
    engine = await make_engine(_proxy(), scheduler_tuning=FAST)
    created = await engine.schedule("fast", "tick", every=EVERY, state={"region": "eu"})
    assert isinstance(created, Schedule)
    assert (created.name, created.workflow_url, created.every, created.catch_up) == (
        "fast",
        "tick",
        timedelta(seconds=EVERY),
        "skip",
    )
    assert created.next_tick is not None and created.last_tick is None and created.last_flow_key == ""
    await _wait_for_flows(engine, 4)
    await engine.pause_schedule("fast")
    ticks = await _ticks(engine)
    _assert_one_flow_per_consecutive_tick(ticks)
    assert min(ticks) == round(created.next_tick.timestamp() * 1000)  # the first tick after the schedule
    for tick, (key,) in ticks.items():
        outcome = await engine.wait(key, timeout=WAIT)
        assert outcome.status == Status.COMPLETED
        assert outcome.state == {
            "region": "eu",
            "scheduleName": "fast",
            "scheduledAt": schedule_rules.tick_text(tick),
            "runs": 1,
        }
    latest = await engine.get_schedule("fast")
    assert latest.last_tick is not None and round(latest.last_tick.timestamp() * 1000) == max(ticks)
    assert latest.last_flow_key == ticks[max(ticks)][0] and latest.last_error == ""


async def test_two_replicas_start_exactly_one_flow_per_tick(make_engine: Any) -> None:
    proxy = _proxy()
    first = await make_engine(proxy, scheduler_tuning=FAST)
    second = await make_engine(proxy, scheduler_tuning=FAST)
    await first.schedule("shared", "tick", every=EVERY)
    await _wait_for_flows(second, 8)
    await second.pause_schedule("shared")
    await asyncio.sleep(0.05)  # a tick in flight when the pause came may still add its flow
    _assert_one_flow_per_consecutive_tick(await _ticks(first))


async def test_a_cron_schedule_ticks_and_its_flows_spread_over_the_shards(make_engine: Any) -> None:
    engine = await make_engine(_proxy(), num_shards=2, scheduler_tuning=FAST)
    created = await engine.schedule("every-second", "tick", cron="* * * * * *")
    await _wait_for_flows(engine, 1)
    await engine.pause_schedule("every-second")
    await asyncio.sleep(0.05)
    ticks = await _ticks(engine)
    assert created.next_tick is not None and min(ticks) == round(created.next_tick.timestamp() * 1000)
    _assert_one_flow_per_consecutive_tick(ticks, every=1.0)
    # Shard 1 holds every schedule (docs/schedules.md#where-schedules-live-and-what-they-cost).
    shard_two = engine.runtime.stores[1]
    assert await shard_two.read("list_schedules") == []
    assert len(await engine.runtime.stores[0].read("list_schedules")) == 1


async def test_options_are_carried_to_every_flow(make_engine: Any) -> None:
    engine = await make_engine(_proxy(), scheduler_tuning=FAST)
    options = FlowOptions(priority=7, fairness_key="reports", baggage={"tenant": 42})
    created = await engine.schedule("carried", "tick", every=EVERY, options=options)
    assert created.options == options
    await _wait_for_flows(engine, 1)
    await engine.delete_schedule("carried")
    page, _ = await engine.list(Query(workflow_url="tick"))
    assert {(flow.priority, flow.fairness_key) for flow in page} == {(7, "reports")}


# --- pause, resume, delete, declare again ---


async def test_pause_stops_the_ticks_and_resume_starts_again_after_now(make_engine: Any) -> None:
    engine = await make_engine(_proxy(), scheduler_tuning=FAST)
    await engine.schedule("pausable", "tick", every=EVERY)
    await _wait_for_flows(engine, 2)
    await engine.pause_schedule("pausable")
    await engine.pause_schedule("pausable")  # pausing a paused schedule does nothing
    paused = await engine.get_schedule("pausable")
    assert paused.paused and paused.next_tick is None
    await asyncio.sleep(0.05)
    before = await _flow_count(engine)
    await asyncio.sleep(0.4)
    assert await _flow_count(engine) == before
    resumed_at = time.time()
    await engine.resume_schedule("pausable")
    await engine.resume_schedule("pausable")  # resuming a running schedule does nothing
    assert not (await engine.get_schedule("pausable")).paused
    await _wait_for_flows(engine, before + 2)
    ticks = list(await _ticks(engine))
    # No tick of the paused time ran: the first one after the resume comes after it.
    assert ticks[before] / 1000 > resumed_at - 0.01
    assert ticks[before] - ticks[before - 1] >= 400


async def test_delete_stops_the_ticks_and_keeps_the_flows(make_engine: Any) -> None:
    engine = await make_engine(_proxy(), scheduler_tuning=FAST)
    await engine.schedule("doomed", "tick", every=EVERY)
    await _wait_for_flows(engine, 2)
    await engine.delete_schedule("doomed")
    await asyncio.sleep(0.05)
    kept = await _flow_count(engine)
    await asyncio.sleep(0.3)
    assert await _flow_count(engine) == kept >= 2
    assert await engine.list_schedules() == []
    with pytest.raises(NotFoundError):
        await engine.get_schedule("doomed")


async def test_declaring_the_same_schedule_again_keeps_it_and_a_change_applies(make_engine: Any) -> None:
    # No worker ticks here (workers=0 runs no ticker): next_tick stays what the first declaration set.
    engine = await make_engine(_proxy(), workers=0)
    first = await engine.schedule("nightly", "tick", cron="0 3 * * *", timezone="Europe/Paris")
    again = await engine.schedule("nightly", "tick", cron="0 3 * * *", timezone="Europe/Paris")
    assert again == first  # nothing written: not even updated_at moved
    await engine.pause_schedule("nightly")
    changed = await engine.schedule(
        "nightly", "tick", cron="0 3 * * *", timezone="Europe/Paris", state={"v": 2}
    )
    # >=: SQLite's clock counts milliseconds, and on a fast machine both writes fall in the same one.
    assert changed.state == {"v": 2} and changed.updated_at >= first.updated_at
    assert changed.paused, "declaring a schedule again must not resume what an operator paused"
    await engine.resume_schedule("nightly")
    resumed = await engine.get_schedule("nightly")
    assert resumed.next_tick == first.next_tick  # the same timing: the same next tick
    retimed = await engine.schedule("nightly", "tick", every=timedelta(hours=1), catch_up="all")
    assert retimed.cron == "" and retimed.every == timedelta(hours=1) and retimed.catch_up == "all"
    assert retimed.next_tick is not None and retimed.next_tick.minute == 0 and retimed.next_tick.second == 0
    assert retimed.next_tick != first.next_tick
    assert [schedule.name for schedule in await engine.list_schedules()] == ["nightly"]
    await engine.schedule("alpha", "tick", every=60)
    assert [schedule.name for schedule in await engine.list_schedules()] == ["alpha", "nightly"]


async def test_unknown_schedules_are_not_found(make_engine: Any) -> None:
    engine = await make_engine(_proxy(), workers=0)
    for operation in (
        engine.get_schedule,
        engine.pause_schedule,
        engine.resume_schedule,
        engine.delete_schedule,
    ):
        with pytest.raises(NotFoundError, match="schedule not found"):
            await operation("nobody")
    with pytest.raises(BadRequestError):
        await engine.pause_schedule(42)


async def test_bad_schedules_are_refused_and_nothing_is_written(make_engine: Any) -> None:
    proxy = _proxy()
    broken = graph_of("Broken", "A")  # no transition out of A: no way to END
    broken.add_task("Island", "Island")
    proxy.handle_graph("broken", broken)
    engine = await make_engine(proxy, workers=0)

    def schedule(name: str = "refused", url: str = "tick", **arguments: Any) -> Any:
        return lambda: engine.schedule(name, url, **arguments)

    bad_requests = {
        "neither cron nor every": schedule(),
        "both": schedule(cron="* * * * *", every=60),
        "bad cron": schedule(cron="every five minutes"),
        "bad time zone": schedule(cron="0 3 * * *", timezone="Nowhere/Special"),
        "bad catch_up": schedule(every=60, catch_up="most"),
        "non-JSON state": schedule(every=60, state={"when": datetime.now()}),
        "state not an object": schedule(every=60, state=[1, 2]),
        "reserved field": schedule(every=60, state={"scheduledAt": "now"}),
        "thread options": schedule(every=60, options=FlowOptions(thread_key="x")),
        "keyed options": schedule(every=60, options=FlowOptions(idempotency_key="mine")),
        "bad name": schedule(" x", every=60),
        "empty URL": schedule(url="", every=60),
    }
    assert await not_refused(bad_requests, BadRequestError) == []
    assert await not_refused({"unknown workflow": schedule(url="nowhere", every=60)}, NotFoundError) == []
    assert await not_refused({"invalid graph": schedule(url="broken", every=60)}, InvalidGraphError) == []
    assert await engine.list_schedules() == []


# --- catching up, refusals, polling ---


@pytest.mark.parametrize("catch_up", ["all", "one", "skip"])
async def test_a_late_engine_catches_up_as_the_policy_says(
    make_engine: Any, catch_up: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The grace of "skip" shrinks from a minute to 0.25 s, so that 0.7 s of downtime misses ticks.
    monkeypatch.setattr(schedule_rules, "LATE_GRACE", 0.25)
    proxy = _proxy()
    writer = await make_engine(proxy, workers=0)  # runs no ticker: no engine ticks while time passes
    created = await writer.schedule("late", "tick", every=EVERY, catch_up=catch_up)
    assert created.next_tick is not None
    await asyncio.sleep(0.7)
    started = time.time()
    worker = await make_engine(proxy, scheduler_tuning=FAST)
    # The missed ticks, for "all" (a catch-up creates them one after the other), or the first flow.
    await _wait_for_flows(worker, 7 if catch_up == "all" else 1)
    await worker.pause_schedule("late")
    await asyncio.sleep(0.05)
    ticks = list(await _ticks(worker))
    first_due = round(created.next_tick.timestamp() * 1000)
    if catch_up == "all":
        assert ticks[0] == first_due and len(ticks) >= 7
        _assert_one_flow_per_consecutive_tick(await _ticks(worker))
    elif catch_up == "one":
        # The missed ticks collapse into one flow, for the most recent of them when the worker looked.
        assert ticks[0] > first_due + 400 and ticks[0] / 1000 >= started - EVERY - 0.05
    else:
        # Only the ticks at most 0.25 s late when the worker looked ran.
        assert ticks[0] > first_due + 300 and ticks[0] / 1000 >= started - 0.25 - EVERY - 0.05


async def test_a_refused_tick_records_its_error_and_the_schedule_goes_on(make_engine: Any) -> None:
    proxy = _proxy()
    engine = await make_engine(proxy, scheduler_tuning=FAST)
    await engine.schedule("fragile", "tick", every=EVERY)
    await _wait_for_flows(engine, 1)
    proxy.serving = False

    async def failed() -> bool:
        return (await engine.get_schedule("fragile")).last_error != ""

    await wait_until(failed, WAIT)
    broken = await engine.get_schedule("fragile")
    assert "not found" in broken.last_error and broken.last_flow_key != ""  # the last flow it did start
    count = await _flow_count(engine)
    await asyncio.sleep(0.3)
    moved_on = await engine.get_schedule("fragile")
    assert moved_on.last_tick is not None and broken.last_tick is not None
    assert moved_on.last_tick > broken.last_tick, "a refused tick must not hold the schedule"
    assert await _flow_count(engine) == count
    proxy.serving = True
    await _wait_for_flows(engine, count + 1)

    async def recovered() -> bool:
        return (await engine.get_schedule("fragile")).last_error == ""

    await wait_until(recovered, WAIT)


def _count_schedule_reads(engine: Engine) -> list[float]:
    """The times of the ticker's own reads of the schedules (``due_schedules``) from now on."""
    store = engine.runtime.stores[0]
    reads: list[float] = []
    read = store.read

    async def counting(query: Any, **params: Any) -> list[Row]:
        if query == "due_schedules":
            reads.append(time.monotonic())
        return await read(query, **params)

    store.read = counting  # type: ignore[method-assign]
    return reads


async def test_without_schedules_the_ticker_reads_nothing_per_step(make_engine: Any) -> None:
    proxy = TestProxy()
    proxy.handle_graph("work", chain("Work", "A", "B", "C"))
    for task in "ABC":
        proxy.handle_task(task, incrementer())
    engine = await make_engine(proxy, scheduler_tuning=SchedulerTuning(schedule_poll=0.25))
    reads = _count_schedule_reads(engine)
    started = time.monotonic()
    keys = [await engine.create("work") for _ in range(20)]
    for key in keys:
        assert (await engine.wait(key, timeout=WAIT)).status == Status.COMPLETED
    await asyncio.sleep(0.3)
    elapsed = time.monotonic() - started
    assert len(reads) <= elapsed / 0.25 + 2, f"{len(reads)} reads in {elapsed:.2f}s"


async def test_an_idle_engine_without_schedules_adds_no_statement_to_its_claimers_poll(
    make_engine: Any,
) -> None:
    """docs/schedules.md#where-schedules-live-and-what-they-cost: the claimers' idle poll brings the next
    tick, so the ticker's own read is skipped; the idle benchmark's budget of 1 query/s/shard holds."""
    engine = await make_engine(_proxy(), scheduler_tuning=SchedulerTuning(schedule_poll=0.25, idle_poll=0.05))
    await asyncio.sleep(0.5)  # the ticker's first read, at startup, is behind us
    reads = _count_schedule_reads(engine)
    await asyncio.sleep(3.0)  # twelve of the ticker's poll intervals
    # A loaded machine may delay a claimer's poll past the end of an interval once or twice (the ticker
    # then reads for itself, as it must); without the claimers' reads it would read twelve times.
    assert len(reads) <= 2, f"the ticker read the schedules {len(reads)} times while the claimers polled"


async def test_a_schedule_made_by_a_process_that_signals_nobody_starts_on_the_claimers_poll(
    make_engine: Any,
) -> None:
    """No relay, no shared host: only the database tells the worker of the schedule, through its
    claimers' idle poll, long before its ticker's own poll interval."""
    worker = await make_engine(_proxy(), scheduler_tuning=SchedulerTuning(schedule_poll=30.0, idle_poll=0.2))
    await asyncio.sleep(0.1)  # its first look found nothing: its ticker sleeps 30 s now
    writer = await make_engine(_proxy(), workers=0)
    await writer.schedule("unsignalled", "tick", every=EVERY)
    started = time.monotonic()
    await _wait_for_flows(worker, 1, "tick")
    assert time.monotonic() - started < 5.0
    await writer.delete_schedule("unsignalled")


async def test_a_change_signalled_by_a_peer_wakes_the_ticker_at_once(make_engine: Any) -> None:
    proxy = _proxy()
    # A poll so long that only the peer signal can explain a prompt first flow.
    worker = await make_engine(proxy, scheduler_tuning=SchedulerTuning(schedule_poll=30.0, idle_poll=0.2))
    await asyncio.sleep(0.1)  # its first poll found nothing: it sleeps 30 s now
    writer = await make_engine(proxy, workers=0)
    await writer.schedule("prompt", "tick", every=EVERY)
    started = time.monotonic()
    await _wait_for_flows(worker, 1, "tick")
    assert time.monotonic() - started < 5.0
    await writer.delete_schedule("prompt")
