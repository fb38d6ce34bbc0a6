"""Which due step a worker takes next (docs/deployment.md#scheduling-priority-and-fairness): strict priority
bands, weighted fairness inside a band, FIFO inside a fairness key.

Every test runs one worker (``workers=1``) so that claims happen one step at a time, and first holds that
worker on a gated flow while the competing flows are created: when the gate opens, all of them are due
at once and the order in which they run is the scheduler's choice alone.
"""

from __future__ import annotations

import asyncio
import collections
import time
from typing import Any

from dwarf import Flow, FlowOptions, Status
from dwarf.engine import Engine, TestProxy
from tests.engine.graphs import WAIT, Gate, chain, wait_until


class _Contest:
    """A blocker flow holding the only worker, and single-step flows that record the order they ran in."""

    def __init__(self) -> None:
        self.gate = Gate()
        self.ran: list[str] = []
        self.proxy = TestProxy()
        self.proxy.handle_graph("blocker", chain("blocker", "Hold"))
        self.proxy.handle_graph("contender", chain("contender", "Record"))
        self.proxy.handle_task("Hold", self._hold)
        self.proxy.handle_task("Record", self._record)

    async def _hold(self, flow: Flow) -> None:
        await self.gate.pass_through()

    async def _record(self, flow: Flow) -> None:
        self.ran.append(flow.get_str("name"))

    async def start(self, make_engine: Any, **settings: Any) -> Engine:
        engine: Engine = await make_engine(self.proxy, workers=1, **settings)
        self._blocker = await engine.create("blocker")
        await self.gate.wait_entered()
        return engine

    async def release_and_finish(self, engine: Engine, keys: list[str]) -> None:
        self.gate.open()
        for key in [self._blocker, *keys]:
            assert (await engine.wait(key, timeout=WAIT * 3)).status == Status.COMPLETED


async def _contend(engine: Engine, name: str, **options: Any) -> str:
    return await engine.create("contender", {"name": name}, FlowOptions(**options))


async def test_lower_priority_numbers_run_first(make_engine: Any) -> None:
    contest = _Contest()
    engine = await contest.start(make_engine)
    keys = [
        await _contend(engine, "p20", priority=20),
        await _contend(engine, "p5", priority=5),
        await _contend(engine, "p10", priority=10),
        await _contend(engine, "p1", priority=1),
    ]
    await contest.release_and_finish(engine, keys)
    assert contest.ran == ["p1", "p5", "p10", "p20"]


async def test_a_band_with_due_work_starves_every_lower_band(make_engine: Any) -> None:
    contest = _Contest()
    engine = await contest.start(make_engine)
    keys = [await _contend(engine, f"low{n}", priority=50) for n in range(5)]
    keys += [await _contend(engine, f"high{n}", priority=10, fairness_key=f"tenant{n}") for n in range(5)]
    await contest.release_and_finish(engine, keys)
    assert [name.rstrip("0123456789") for name in contest.ran] == ["high"] * 5 + ["low"] * 5


async def test_flows_without_a_priority_take_the_engine_default(make_engine: Any) -> None:
    contest = _Contest()
    engine = await contest.start(make_engine, default_priority=50)
    keys = [
        await _contend(engine, "p60", priority=60),
        await _contend(engine, "default"),
        await _contend(engine, "p40", priority=40),
    ]
    await contest.release_and_finish(engine, keys)
    assert contest.ran == ["p40", "default", "p60"]
    page, _ = await engine.list()
    assert sorted(summary.priority for summary in page) == [40, 50, 50, 60]  # the blocker took 50 too


async def test_steps_of_one_fairness_key_run_oldest_first(make_engine: Any) -> None:
    contest = _Contest()
    engine = await contest.start(make_engine)
    names = [f"job{n:02d}" for n in range(12)]
    keys = [await _contend(engine, name, fairness_key="tenant-a", fairness_weight=2) for name in names]
    await contest.release_and_finish(engine, keys)
    assert contest.ran == names


async def test_a_late_key_is_not_stuck_behind_an_earlier_keys_backlog(make_engine: Any) -> None:
    contest = _Contest()
    engine = await contest.start(make_engine)
    keys = [await _contend(engine, f"big{n}", fairness_key="big") for n in range(60)]
    keys += [await _contend(engine, f"small{n}", fairness_key="small") for n in range(20)]
    await contest.release_and_finish(engine, keys)
    first = contest.ran[:30]
    # Equal weights: each of the first picks is a coin flip between the keys (FIFO would give 0 "small").
    # Expected 15 of 30; fewer than 7 has a probability below 0.1%.
    assert sum(name.startswith("small") for name in first) >= 7
    # FIFO inside each key.
    assert [name for name in contest.ran if name.startswith("small")] == [f"small{n}" for n in range(20)]
    assert [name for name in contest.ran if name.startswith("big")] == [f"big{n}" for n in range(60)]


async def test_keys_share_the_worker_in_proportion_to_their_weights(make_engine: Any) -> None:
    contest = _Contest()
    engine = await contest.start(make_engine)
    keys: list[str] = []
    for n in range(70):
        keys.append(await _contend(engine, f"light{n}", fairness_key="light", fairness_weight=1))
        keys.append(await _contend(engine, f"heavy{n}", fairness_key="heavy", fairness_weight=3))
    await contest.release_and_finish(engine, keys)
    # While both keys have backlog, "heavy" should get 3 of every 4 picks. Over the first 80 picks the
    # share has a standard deviation of about 0.048, so [0.6, 0.9] holds but for a one-in-a-thousand run.
    shares = collections.Counter(name.rstrip("0123456789") for name in contest.ran[:80])
    assert 0.6 <= shares["heavy"] / 80 <= 0.9
    assert shares["light"] >= 8  # the light key is served, not starved


async def _create_many(engine: Engine, names: list[str], **options: Any) -> list[str]:
    """Create a contender per name, a couple of hundred at a time (a backlog of thousands in seconds)."""
    keys: list[str] = []
    for start in range(0, len(names), 200):
        chunk = names[start : start + 200]
        keys += await asyncio.gather(*(_contend(engine, name, **options) for name in chunk))
    return keys


async def test_a_key_arriving_behind_a_backlog_of_thousands_gets_its_share_at_once(make_engine: Any) -> None:
    contest = _Contest()
    engine = await contest.start(make_engine)
    await _create_many(engine, [f"big{n}" for n in range(3000)], fairness_key="big")
    late = [await _contend(engine, f"late{n}", fairness_key="late") for n in range(20)]
    contest.gate.open()
    for key in late:
        assert (await engine.wait(key, timeout=WAIT * 3)).status == Status.COMPLETED
    # Equal weights: while both keys have due steps, each pick is a coin flip, so "late" is done after
    # about 40 picks. A claim that looked only at the oldest steps would run the 3,000 first; 200 "big"
    # picks before the 20th "late" one would be a one-in-10^38 run.
    ran = list(contest.ran)
    assert sum(name.startswith("big") for name in ran[: ran.index("late19")]) < 200
    assert [name for name in ran if name.startswith("late")] == [f"late{n}" for n in range(20)]
    big = [name for name in ran if name.startswith("big")]
    assert big == [f"big{n}" for n in range(len(big))]  # FIFO inside the big key too


async def test_keys_beyond_a_claims_window_get_their_share(make_engine: Any) -> None:
    # A claim ranks a bounded window of a band's keys (32, from a start that moves on every claim); the
    # keys past the first window must get their share at once, not after the earlier keys drain.
    contest = _Contest()
    engine = await contest.start(make_engine)
    tenants = [f"tenant{n:02d}" for n in range(40)]
    for round_ in range(10):
        for tenant in tenants:
            await _contend(engine, f"{tenant}-{round_}", fairness_key=tenant)
    contest.gate.open()

    async def hundred_ran() -> bool:
        return len(contest.ran) >= 100

    await wait_until(hundred_ran, timeout=WAIT * 3)
    # 40 equally weighted keys of 10 steps each: of the first 100 picks, the last 8 keys in key order
    # expect 20; fewer than 8 has a probability of about 0.03%. A window stuck on the first 32 keys
    # would give them none until those drained.
    picked = collections.Counter(name.split("-")[0] for name in contest.ran[:100])
    assert sum(picked[tenant] for tenant in tenants[32:]) >= 8
    for tenant in tenants:  # FIFO inside each key
        mine = [name for name in contest.ran if name.startswith(f"{tenant}-")]
        assert mine == [f"{tenant}-{n}" for n in range(len(mine))]


async def test_a_band_with_more_keys_than_a_window_still_starves_lower_bands(make_engine: Any) -> None:
    contest = _Contest()
    engine = await contest.start(make_engine)
    keys = [await _contend(engine, f"low{n}", priority=50) for n in range(5)]
    for n in range(45):
        keys.append(await _contend(engine, f"high{n}", priority=10, fairness_key=f"tenant{n:02d}"))
    await contest.release_and_finish(engine, keys)
    assert [name.rstrip("0123456789") for name in contest.ran] == ["high"] * 45 + ["low"] * 5


async def test_a_step_not_due_yet_neither_runs_early_nor_holds_up_due_steps(make_engine: Any) -> None:
    woke: list[float] = []
    napped = asyncio.Event()
    ran: list[str] = []
    proxy = TestProxy()
    proxy.handle_graph("sleeper", chain("sleeper", "Nap", "Wake"))
    proxy.handle_graph("contender", chain("contender", "Record"))

    async def nap(flow: Flow) -> None:
        flow.sleep(2.0)
        napped.set()

    async def wake(flow: Flow) -> None:
        woke.append(time.monotonic())
        ran.append("sleeper")

    async def record(flow: Flow) -> None:
        ran.append(flow.get_str("name"))

    proxy.handle_task("Nap", nap)
    proxy.handle_task("Wake", wake)
    proxy.handle_task("Record", record)
    engine: Engine = await make_engine(proxy, workers=1)
    # The sleeping step is the oldest pending step of the best band and of its key.
    sleeper = await engine.create("sleeper", {}, FlowOptions(priority=1, fairness_key="a"))
    async with asyncio.timeout(WAIT):
        await napped.wait()
    slept_at = time.monotonic()
    keys = [await _contend(engine, f"same{n}", priority=1, fairness_key="a") for n in range(3)]
    keys += [await _contend(engine, f"worse{n}", priority=50) for n in range(3)]
    for key in keys:
        assert (await engine.wait(key, timeout=WAIT)).status == Status.COMPLETED
    assert ran == ["same0", "same1", "same2", "worse0", "worse1", "worse2"]
    assert (await engine.wait(sleeper, timeout=WAIT)).status == Status.COMPLETED
    assert ran[-1] == "sleeper"
    assert woke[0] - slept_at >= 1.8  # not before its time (less a margin for the two clocks)
