"""Engine.why says why a flow is not moving, and Engine.activity counts what flows did lately.

Every wait is caught in its state on both backends: a step running on a worker, a queue (with the due
steps ahead of it), a sleep, a retry with its attempt, an interrupt, a child flow, the branches of a
fan-out grouped as one wait; a stopped flow waits for nothing.
"""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime, timedelta

import pytest

from dwarf import BadRequestError, Flow, FlowOptions, FlowWait, NotFoundError, Status, WaitReason
from dwarf.engine import Engine, TestProxy
from dwarf.workflow.progress import AHEAD_LIMIT
from tests.conftest import EngineMaker
from tests.engine.graphs import WAIT, chain, for_each, noop

HOUR = 3600.0


async def _waits_until(engine: Engine, key: str, reason: WaitReason) -> list[FlowWait]:
    """Engine.why of the flow once it reports ``reason`` (bounded by WAIT)."""
    deadline = time.monotonic() + WAIT
    while True:
        waits = await engine.why(key)
        if any(wait.reason == reason for wait in waits):
            return waits
        assert time.monotonic() < deadline, f"no {reason} wait; last: {waits}"
        await asyncio.sleep(0.02)


def _only(waits: list[FlowWait], reason: WaitReason) -> FlowWait:
    found = [wait for wait in waits if wait.reason == reason]
    assert len(found) == 1, waits
    return found[0]


def _near(moment: datetime | None, expected: datetime, slack: float = 60.0) -> bool:
    return moment is not None and abs((moment - expected).total_seconds()) < slack


async def test_a_sleeping_flow_waits_until_its_next_step_is_due(make_engine: EngineMaker) -> None:
    proxy = TestProxy()
    proxy.handle_graph("nap", chain("Nap", "Doze", "Wake"))
    proxy.handle_task("Doze", lambda flow: flow.sleep(HOUR))
    proxy.handle_task("Wake", noop)
    engine = await make_engine(proxy)
    key = await engine.create("nap")
    wait = _only(await _waits_until(engine, key, WaitReason.SLEEPING), WaitReason.SLEEPING)
    assert wait.task_name == "Wake" and wait.steps == 1
    assert _near(wait.until, datetime.now(UTC) + timedelta(seconds=HOUR))
    assert wait.step_key and (await engine.step(wait.step_key)).task_name == "Wake"
    assert "sleeping until" in str(wait)
    await engine.cancel(key)
    assert await engine.why(key) == []


async def test_a_retry_shows_its_time_and_attempt(make_engine: EngineMaker) -> None:
    proxy = TestProxy()
    proxy.handle_graph("flaky", chain("Flaky", "Call"))

    def call(flow: Flow) -> None:
        assert flow.retry(HOUR, 2.0, 0, 0)

    proxy.handle_task("Call", call)
    engine = await make_engine(proxy)
    key = await engine.create("flaky")
    wait = _only(await _waits_until(engine, key, WaitReason.RETRYING), WaitReason.RETRYING)
    assert wait.task_name == "Call" and wait.attempt == 1
    assert _near(wait.until, datetime.now(UTC) + timedelta(seconds=HOUR))
    assert "retry at" in str(wait) and "(attempt 1)" in str(wait)


async def test_an_interrupted_flow_waits_for_a_resume_since_it_asked(make_engine: EngineMaker) -> None:
    proxy = TestProxy()
    proxy.handle_graph("ask", chain("Ask", "Question"))
    proxy.handle_task("Question", lambda flow: flow.set("answer", flow.interrupt({"q": "?"})))
    engine = await make_engine(proxy)
    key, outcome = await engine.run("ask", timeout=WAIT)
    assert outcome.status == Status.INTERRUPTED
    wait = _only(await engine.why(key), WaitReason.INTERRUPTED)
    assert wait.task_name == "Question" and _near(wait.since, datetime.now(UTC))
    assert "waiting for a resume" in str(wait)


async def test_a_parent_waits_on_its_child_flow_which_says_why_itself(make_engine: EngineMaker) -> None:
    proxy = TestProxy()
    proxy.handle_graph("parent", chain("Parent", "Call"))
    proxy.handle_graph("child", chain("Child", "Doze", "Wake"))
    proxy.handle_task("Call", lambda flow: flow.set("result", flow.subgraph("child", {})))
    proxy.handle_task("Doze", lambda flow: flow.sleep(HOUR))
    proxy.handle_task("Wake", noop)
    engine = await make_engine(proxy)
    key = await engine.create("parent")
    wait = _only(await _waits_until(engine, key, WaitReason.CHILD_FLOW), WaitReason.CHILD_FLOW)
    assert wait.task_name == "Call" and wait.child_workflow_name == "Child"
    assert wait.child_flow_key
    child = _only(await _waits_until(engine, wait.child_flow_key, WaitReason.SLEEPING), WaitReason.SLEEPING)
    assert child.task_name == "Wake"
    assert "waiting on child flow Child" in str(wait)


async def test_a_running_step_is_reported_as_running(make_engine: EngineMaker) -> None:
    proxy = TestProxy()
    proxy.handle_graph("busy", chain("Busy", "Work"))
    release = asyncio.Event()

    async def work(flow: Flow) -> None:
        await release.wait()

    proxy.handle_task("Work", work)
    engine = await make_engine(proxy)
    key = await engine.create("busy")
    try:
        wait = _only(await _waits_until(engine, key, WaitReason.RUNNING), WaitReason.RUNNING)
        assert wait.task_name == "Work" and wait.since is not None
    finally:
        release.set()
    assert (await engine.wait(key, WAIT)).status == Status.COMPLETED
    assert await engine.why(key) == []


async def test_queued_steps_count_the_due_steps_ahead_of_them(make_engine: EngineMaker) -> None:
    proxy = TestProxy()
    proxy.handle_graph("job", chain("Job", "Work"))
    proxy.handle_task("Work", noop)
    idle = await make_engine(proxy, workers=0)  # records flows, runs nothing: every step stays due
    keys = [await idle.create("job", options=FlowOptions(priority=5)) for _ in range(3)]
    waits = [_only(await idle.why(key), WaitReason.QUEUED) for key in keys]
    assert [wait.ahead for wait in waits] == [0, 1, 2]
    assert waits[0].task_name == "Work" and "queued behind 0 due steps" in str(waits[0])
    urgent = await idle.create("job", options=FlowOptions(priority=1))
    assert _only(await idle.why(urgent), WaitReason.QUEUED).ahead == 0
    # A better band comes first: the urgent flow's step is now ahead of every one of the others.
    assert [_only(await idle.why(key), WaitReason.QUEUED).ahead for key in keys] == [1, 2, 3]


async def test_a_fan_out_groups_its_branches_into_one_wait(make_engine: EngineMaker) -> None:
    proxy = TestProxy()
    proxy.handle_graph("batch", for_each("Batch"))
    proxy.handle_task("Split", lambda flow: flow.set("items", list(range(5))))

    def work(flow: Flow) -> None:
        if flow.get_int("item") < 4:
            assert flow.retry(HOUR, 1.0, 0, 0)

    proxy.handle_task("Work", work)
    proxy.handle_task("Join", noop)
    engine = await make_engine(proxy)
    key = await engine.create("batch")
    deadline = time.monotonic() + WAIT
    while True:
        waits = await engine.why(key)
        retrying = [wait for wait in waits if wait.reason == WaitReason.RETRYING]
        if retrying and retrying[0].steps == 4:
            break
        assert time.monotonic() < deadline, waits
        await asyncio.sleep(0.02)
    assert retrying[0].task_name == "Work" and "(4 steps)" in str(retrying[0])
    assert len(waits) == 1  # the fifth branch completed and waits at the join: nothing to report


async def test_stopped_and_unknown_flows(make_engine: EngineMaker) -> None:
    proxy = TestProxy()
    proxy.handle_graph("one", chain("One", "Work"))
    proxy.handle_task("Work", noop)
    engine = await make_engine(proxy)
    key, _ = await engine.run("one", timeout=WAIT)
    assert await engine.why(key) == []
    with pytest.raises(NotFoundError):
        await engine.why(key[:-1] + ("A" if key[-1] != "A" else "B"))


async def test_activity_counts_flows_by_status_and_over_time(make_engine: EngineMaker) -> None:
    proxy = TestProxy()
    proxy.handle_graph("ok", chain("Ok", "Work"))
    proxy.handle_graph("bad", chain("Bad", "Boom"))
    proxy.handle_graph("ask", chain("Ask", "Question"))
    proxy.handle_task("Work", noop)

    def boom(flow: Flow) -> None:
        raise RuntimeError("boom")

    proxy.handle_task("Boom", boom)
    proxy.handle_task("Question", lambda flow: flow.set("answer", flow.interrupt({})))
    engine = await make_engine(proxy)
    for workflow in ("ok", "ok", "bad", "ask"):
        await engine.run(workflow, timeout=WAIT)
    activity = await engine.activity(HOUR, buckets=12)
    assert activity.counts == {
        Status.RUNNING: 0,
        Status.INTERRUPTED: 1,
        Status.COMPLETED: 2,
        Status.FAILED: 1,
        Status.CANCELLED: 0,
    }
    assert activity.total == 4 and not activity.capped
    assert len(activity.started) == 12 and activity.bucket_seconds == pytest.approx(300.0)
    # Everything happened just now: in the last slot.
    assert activity.started[-1] == 4 and sum(activity.started) == 4
    assert activity.completed[-1] == 2 and activity.failed[-1] == 1 and sum(activity.cancelled) == 0
    assert _near(activity.since, datetime.now(UTC) - timedelta(seconds=HOUR))


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
async def test_activity_refuses_bad_windows(make_engine: EngineMaker) -> None:
    engine = await make_engine(TestProxy())
    for window, buckets in ((0, 24), (-5, 24), (400 * 86400, 24), (60, 0), (60, 1001), (60, True)):
        with pytest.raises(BadRequestError):
            await engine.activity(window, buckets=buckets)
    assert (await engine.activity(timedelta(minutes=5), buckets=1)).started == [0]


def test_ahead_limit_shows_as_a_lower_bound() -> None:
    wait = FlowWait(WaitReason.QUEUED, task_name="Work", ahead=AHEAD_LIMIT)
    assert f"{AHEAD_LIMIT:,}+ due steps" in str(wait)
