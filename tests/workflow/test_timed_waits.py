"""Timed waits on the Flow carrier and deadlines in FlowOptions (docs/waits.md), without an engine:
what ``interrupt(timeout=...)`` and ``wait_for_signal`` record, return and refuse, and which deadlines a
create accepts."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest

from dwarf import DEADLINE_REASON, TIMED_OUT, BadRequestError, FlowOptions
from dwarf.workflow.flow import Park
from tests.workflow.test_flow import make_flow

CENTURY = 100 * 365.25 * 86400.0


# --- interrupt with a timeout ---


def test_a_timed_interrupt_records_its_timeout() -> None:
    flow = make_flow()
    with pytest.raises(Park) as parked:
        flow.interrupt({"question": "approve?"}, timeout=timedelta(hours=48))
    assert parked.value.kind == "interrupt"
    assert flow.interrupt_payload == {"question": "approve?"}
    assert flow.park_timeout == 48 * 3600.0


def test_an_interrupt_without_timeout_has_none() -> None:
    flow = make_flow()
    with pytest.raises(Park):
        flow.interrupt()
    assert flow.park_timeout is None


@pytest.mark.parametrize(("timeout", "seconds"), [(-5, 0.0), (0, 0.0), (1e300, CENTURY), (0.25, 0.25)])
def test_interrupt_timeouts_are_clamped_like_sleeps(timeout: float, seconds: float) -> None:
    flow = make_flow()
    with pytest.raises(Park):
        flow.interrupt(timeout=timeout)
    assert flow.park_timeout == seconds


@pytest.mark.parametrize("timeout", [float("nan"), float("inf"), "soon", True, 10**400])
def test_an_unreadable_timeout_is_refused_without_parking(timeout: Any) -> None:
    flow = make_flow()
    with pytest.raises(BadRequestError, match="timeout"):
        flow.interrupt({"q": 1}, timeout=timeout)
    assert flow.interrupt_payload is None
    assert flow.park_timeout is None


def test_a_timed_out_interrupt_returns_the_marker() -> None:
    assert make_flow(resume_data={TIMED_OUT: True}).interrupt(timeout=1) == {"timedOut": True}


# --- wait_for_signal ---


def test_wait_for_signal_parks_with_the_name_and_timeout() -> None:
    flow = make_flow()
    with pytest.raises(Park) as parked:
        flow.wait_for_signal("paid", timeout=30)
    assert parked.value.kind == "signal"
    assert "a signal" in str(parked.value)
    assert flow.signal_wait == "paid"
    assert flow.park_timeout == 30.0
    assert flow.interrupt_payload is None


def test_wait_for_signal_returns_the_data_when_the_step_runs_again() -> None:
    flow = make_flow(resume_data={"amount": 12}, waited_signal="paid")
    answer = flow.wait_for_signal("paid")
    answer["amount"] = 0
    assert flow.wait_for_signal("paid") == {"amount": 12}
    assert flow.signal_wait is None


@pytest.mark.parametrize("name", ["", 3, None, "x" * 256, "nul\0"])
def test_a_bad_signal_name_is_refused(name: Any) -> None:
    with pytest.raises(BadRequestError, match="signal name"):
        make_flow().wait_for_signal(name)


def test_a_step_waits_for_one_signal_only() -> None:
    flow = make_flow(resume_data={"amount": 12}, waited_signal="paid")
    with pytest.raises(BadRequestError, match="waited for signal 'paid'"):
        flow.wait_for_signal("shipped")


def test_a_step_parks_once_whatever_it_waits_for() -> None:
    flow = make_flow()
    with pytest.raises(Park):
        flow.wait_for_signal("paid")
    for again in (lambda: flow.wait_for_signal("paid"), flow.interrupt, lambda: flow.subgraph("child")):
        with pytest.raises(BadRequestError, match="already waits for a signal"):
            again()

    interrupted = make_flow()
    with pytest.raises(Park):
        interrupted.interrupt()
    with pytest.raises(BadRequestError, match="already requested an interrupt"):
        interrupted.wait_for_signal("paid")


def test_an_answered_wait_refuses_a_park_of_another_kind() -> None:
    with pytest.raises(BadRequestError, match="waited for signal 'paid'"):
        make_flow(resume_data={}, waited_signal="paid").interrupt()
    with pytest.raises(BadRequestError, match="already waited for a signal"):
        make_flow(resume_data={}, waited_signal="paid").subgraph("child")
    with pytest.raises(BadRequestError, match="already parked for an interrupt"):
        make_flow(resume_data={}).wait_for_signal("paid")
    with pytest.raises(BadRequestError, match="already parked for a subgraph"):
        make_flow(subgraph_result={}).wait_for_signal("paid")


# --- deadlines ---


def test_no_deadline_by_default() -> None:
    assert FlowOptions().deadline_in() is None
    assert DEADLINE_REASON == "deadline passed"


@pytest.mark.parametrize("deadline", [30, 0.5, timedelta(minutes=2)])
def test_a_duration_deadline_counts_from_the_create(deadline: Any) -> None:
    seconds = deadline.total_seconds() if isinstance(deadline, timedelta) else float(deadline)
    assert FlowOptions(deadline=deadline).deadline_in() == seconds


def test_an_aware_datetime_deadline_counts_to_that_moment() -> None:
    now = datetime(2025, 1, 1, 12, 0, tzinfo=UTC)
    other_zone = datetime(2025, 1, 1, 14, 0, tzinfo=timezone(timedelta(hours=1)))
    assert FlowOptions(deadline=other_zone).deadline_in(now) == 3600.0


@pytest.mark.parametrize(
    ("deadline", "message"),
    [
        (0, "positive"),
        (-1, "positive"),
        (timedelta(0), "positive"),
        (datetime(2030, 1, 1), "timezone-aware"),
        (datetime(2000, 1, 1, tzinfo=UTC), "already passed"),
        (CENTURY + 86400, "century"),
        (float("nan"), "finite"),
        ("tomorrow", "deadline"),
        (True, "deadline"),
    ],
)
def test_a_deadline_that_cannot_be_met_is_refused(deadline: Any, message: str) -> None:
    with pytest.raises(BadRequestError, match=message):
        FlowOptions(deadline=deadline).check()
