"""The Flow carrier (docs/tasks.md): reading merged state, recording changes, control signals, parking."""

from __future__ import annotations

import copy
import math
import pickle
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from dwarf.errors import BadRequestError, SubgraphError
from dwarf.workflow.flow import Flow, Park, parse_duration_text

T0 = datetime(2025, 1, 1, 12, 0, 0, tzinfo=UTC)


class Clock:
    """A settable clock for the retry horizon."""

    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


def make_flow(state: dict[str, Any] | None = None, **kwargs: Any) -> Flow:
    fields: dict[str, Any] = {
        "flow_key": "1-10-flowtoken",
        "step_key": "1-20-steptoken",
        "attempt": 0,
        "created_at": T0,
        "updated_at": T0,
        "step_created_at": T0,
        "state": state or {},
    }
    fields.update(kwargs)
    return Flow(**fields)


# --- identity and timing ---


def test_identity_and_timing_are_exposed() -> None:
    later = T0 + timedelta(minutes=1)
    flow = make_flow(attempt=3, updated_at=later, step_created_at=later + timedelta(seconds=1))
    assert (flow.flow_key, flow.step_key, flow.attempt) == ("1-10-flowtoken", "1-20-steptoken", 3)
    assert (flow.created_at, flow.updated_at, flow.step_created_at) == (
        T0,
        later,
        later + timedelta(seconds=1),
    )


def test_repr_names_the_keys_and_attempt() -> None:
    assert (
        repr(make_flow(attempt=2)) == "Flow(flow_key='1-10-flowtoken', step_key='1-20-steptoken', attempt=2)"
    )


def test_identity_properties_are_read_only() -> None:
    flow = make_flow()
    with pytest.raises(AttributeError):
        flow.attempt = 5  # type: ignore[misc]


# --- get ---


def test_get_returns_a_state_value() -> None:
    assert make_flow({"a": {"b": [1, 2]}}).get("a") == {"b": [1, 2]}


def test_get_returns_the_default_when_absent() -> None:
    assert make_flow().get("missing", "dflt") == "dflt"


def test_get_returns_none_when_absent_without_default() -> None:
    assert make_flow().get("missing") is None


def test_get_treats_a_null_value_as_absent() -> None:
    assert make_flow({"a": None}).get("a", 7) == 7


def test_get_returns_a_copy_that_does_not_change_the_state() -> None:
    flow = make_flow({"a": {"list": [1]}})
    flow.get("a")["list"].append(2)
    assert flow.get("a") == {"list": [1]}


def test_get_sees_the_tasks_own_changes() -> None:
    flow = make_flow({"a": 1})
    flow.set("a", 2)
    assert flow.get("a") == 2


def test_get_sees_changes_from_an_earlier_run_of_the_step() -> None:
    flow = make_flow({"a": 1}, changes={"a": 2, "b": None})
    assert flow.get("a") == 2


def test_input_state_is_copied_at_construction() -> None:
    state: dict[str, Any] = {"a": [1]}
    flow = make_flow(state)
    state["a"].append(2)
    assert flow.get("a") == [1]


# --- typed getters ---


@pytest.mark.parametrize(
    ("value", "expected"), [("text", "text"), ("", ""), (5, ""), (None, ""), (["a"], ""), (True, "")]
)
def test_get_str(value: Any, expected: str) -> None:
    assert make_flow({"k": value}).get_str("k") == expected


def test_get_str_of_an_absent_field_is_empty() -> None:
    assert make_flow().get_str("k") == ""


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (3, 3),
        (-7, -7),
        (3.0, 3),
        (-0.0, 0),
        (1e15, 10**15),
        (3.5, 0),
        ("3", 0),
        (True, 0),
        (False, 0),
        (None, 0),
        ([3], 0),
    ],
)
def test_get_int(value: Any, expected: int) -> None:
    result = make_flow({"k": value}).get_int("k")
    assert result == expected
    assert type(result) is int


def test_get_int_of_an_absent_field_is_zero() -> None:
    assert make_flow().get_int("k") == 0


@pytest.mark.parametrize(
    ("value", "expected"),
    [(2.5, 2.5), (3, 3.0), ("2.5", 0.0), (True, 0.0), (None, 0.0), ({"x": 1}, 0.0), (10**400, 0.0)],
)
def test_get_float(value: Any, expected: float) -> None:
    result = make_flow({"k": value}).get_float("k")
    assert result == expected
    assert type(result) is float


def test_get_float_of_an_absent_field_is_zero() -> None:
    assert make_flow().get_float("k") == 0.0


@pytest.mark.parametrize(
    ("value", "expected"), [(True, True), (False, False), (1, False), ("true", False), (None, False)]
)
def test_get_bool(value: Any, expected: bool) -> None:
    assert make_flow({"k": value}).get_bool("k") is expected


def test_get_bool_of_an_absent_field_is_false() -> None:
    assert make_flow().get_bool("k") is False


@pytest.mark.parametrize(
    ("value", "expected"),
    [(["a", "b"], ["a", "b"]), ([], []), (["a", 1], []), ("a", []), (None, []), ({"a": "b"}, [])],
)
def test_get_strs(value: Any, expected: list[str]) -> None:
    assert make_flow({"k": value}).get_strs("k") == expected


def test_get_strs_returns_a_copy() -> None:
    flow = make_flow({"k": ["a"]})
    flow.get_strs("k").append("b")
    assert flow.get_strs("k") == ["a"]


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (90, timedelta(seconds=90)),
        (1.5, timedelta(seconds=1.5)),
        (-2, timedelta(seconds=-2)),
        ("1.5s", timedelta(seconds=1.5)),
        ("2m", timedelta(minutes=2)),
        ("100ms", timedelta(milliseconds=100)),
        ("1h30m", timedelta(hours=1, minutes=30)),
        ("1h2m3.5s", timedelta(hours=1, minutes=2, seconds=3.5)),
        ("250us", timedelta(microseconds=250)),
        ("250\u00b5s", timedelta(microseconds=250)),
        ("250\u03bcs", timedelta(microseconds=250)),
        ("1500000ns", timedelta(milliseconds=1.5)),
        ("-1m", timedelta(minutes=-1)),
        ("+5s", timedelta(seconds=5)),
        ("0", timedelta(0)),
        (" 3s ", timedelta(seconds=3)),
        ("PT1H30M", timedelta(hours=1, minutes=30)),
        ("pt2.5s", timedelta(seconds=2.5)),
        ("P2D", timedelta(days=2)),
        ("P1W1DT1S", timedelta(days=8, seconds=1)),
        ("-PT1M", timedelta(minutes=-1)),
    ],
)
def test_get_duration_reads_numbers_as_seconds_and_duration_strings(value: Any, expected: timedelta) -> None:
    assert make_flow({"k": value}).get_duration("k") == expected


@pytest.mark.parametrize(
    "value",
    [
        "",
        "5",
        "1.5",
        "abc",
        "1x",
        "s",
        "1h 30m",
        "P",
        "PT",
        "P1DT",
        "P1Y",
        "P1M",
        True,
        None,
        [1],
        {"s": 1},
        1e300,
    ],
)
def test_get_duration_of_an_unreadable_value_is_zero(value: Any) -> None:
    assert make_flow({"k": value}).get_duration("k") == timedelta(0)


def test_get_duration_of_an_absent_field_is_zero() -> None:
    assert make_flow().get_duration("k") == timedelta(0)


def test_parse_duration_text_returns_none_for_garbage() -> None:
    assert parse_duration_text("soon") is None


# --- has and snapshot ---


def test_has_is_true_for_a_present_field() -> None:
    assert make_flow({"a": 0}).has("a")


def test_has_is_false_for_an_absent_field() -> None:
    assert not make_flow().has("a")


def test_has_is_false_for_a_null_field() -> None:
    assert not make_flow({"a": None}).has("a")


def test_has_sees_a_set_field() -> None:
    flow = make_flow()
    flow.set("a", False)
    assert flow.has("a")


def test_snapshot_is_input_merged_with_changes() -> None:
    flow = make_flow({"a": 1, "b": 2, "c": 3})
    flow.set("b", 20)
    flow.set("d", 4)
    flow.delete("c")
    assert flow.snapshot() == {"a": 1, "b": 20, "d": 4}


def test_snapshot_leaves_out_null_fields() -> None:
    assert make_flow({"a": None, "b": 1}).snapshot() == {"b": 1}


def test_snapshot_is_a_deep_copy() -> None:
    flow = make_flow({"a": {"b": [1]}})
    flow.snapshot()["a"]["b"].append(2)
    assert flow.get("a") == {"b": [1]}


# --- set, delete, clear ---


def test_set_is_recorded_as_a_change() -> None:
    flow = make_flow({"a": 1})
    flow.set("b", [1, 2])
    assert flow.changes == {"b": [1, 2]}


def test_set_to_the_same_value_is_still_recorded() -> None:
    flow = make_flow({"a": 1})
    flow.set("a", 1)
    assert flow.changes == {"a": 1}


def test_set_stores_a_copy_of_the_value() -> None:
    flow = make_flow()
    value = {"items": [1]}
    flow.set("a", value)
    value["items"].append(2)
    assert flow.changes == {"a": {"items": [1]}}
    assert flow.get("a") == {"items": [1]}


def test_set_normalizes_a_tuple_to_a_list() -> None:
    flow = make_flow()
    flow.set("a", (1, 2))
    assert flow.get("a") == [1, 2]


def test_set_none_records_a_deletion() -> None:
    flow = make_flow({"a": 1})
    flow.set("a", None)
    assert flow.changes == {"a": None}
    assert not flow.has("a")


@pytest.mark.parametrize(
    "value",
    [
        math.nan,
        math.inf,
        -math.inf,
        {1, 2},
        b"bytes",
        T0,
        timedelta(seconds=1),
        object(),
        {1: "non-str key"},
        {"nested": [1, {"deep": math.nan}]},
    ],
)
def test_set_rejects_a_non_json_value_and_records_nothing(value: Any) -> None:
    flow = make_flow({"a": 1})
    with pytest.raises(BadRequestError, match="state field 'x'"):
        flow.set("x", value)
    assert flow.changes == {}
    assert not flow.has("x")


def test_set_rejection_names_the_path_of_the_bad_value() -> None:
    with pytest.raises(BadRequestError, match=r"\['nested'\]\[1\]\['deep'\]"):
        make_flow().set("x", {"nested": [1, {"deep": math.nan}]})


@pytest.mark.parametrize("key", ["", 3, None])
def test_set_rejects_a_bad_key(key: Any) -> None:
    flow = make_flow()
    with pytest.raises(BadRequestError, match="non-empty string"):
        flow.set(key, 1)
    assert flow.changes == {}


def test_delete_records_none_for_each_key() -> None:
    flow = make_flow({"a": 1, "b": 2, "c": 3})
    flow.delete("a", "b")
    assert flow.changes == {"a": None, "b": None}


def test_delete_hides_the_field_from_reads() -> None:
    flow = make_flow({"a": 1})
    flow.delete("a")
    assert (flow.has("a"), flow.get("a"), flow.get_int("a")) == (False, None, 0)


def test_delete_overrides_an_earlier_set() -> None:
    flow = make_flow()
    flow.set("a", 1)
    flow.delete("a")
    assert flow.changes == {"a": None}


def test_set_after_delete_restores_the_field() -> None:
    flow = make_flow({"a": 1})
    flow.delete("a")
    flow.set("a", 2)
    assert flow.get("a") == 2


def test_delete_with_a_bad_key_records_nothing() -> None:
    flow = make_flow({"a": 1})
    with pytest.raises(BadRequestError):
        flow.delete("a", "")
    assert flow.changes == {}


def test_clear_deletes_every_field() -> None:
    flow = make_flow({"a": 1, "b": 2})
    flow.set("c", 3)
    flow.clear()
    assert flow.changes == {"a": None, "b": None, "c": None}
    assert flow.snapshot() == {}


def test_set_after_clear_builds_a_fresh_state() -> None:
    flow = make_flow({"a": 1, "b": 2})
    flow.clear()
    flow.set("x", 1)
    assert flow.snapshot() == {"x": 1}


def test_changes_from_an_earlier_run_stay_in_changes() -> None:
    flow = make_flow({"a": 1}, changes={"b": 2})
    flow.set("c", 3)
    assert flow.changes == {"b": 2, "c": 3}


def test_changes_property_returns_a_copy() -> None:
    flow = make_flow()
    flow.set("a", [1])
    flow.changes["a"].append(2)
    assert flow.changes == {"a": [1]}


# --- goto and sleep ---


def test_goto_records_the_target() -> None:
    flow = make_flow()
    flow.goto("Review")
    assert flow.goto_target == "Review"


def test_goto_last_call_wins() -> None:
    flow = make_flow()
    flow.goto("A")
    flow.goto("B")
    assert flow.goto_target == "B"


def test_goto_target_is_none_without_goto() -> None:
    assert make_flow().goto_target is None


@pytest.mark.parametrize("target", ["", None, 5])
def test_goto_rejects_an_empty_or_non_string_target(target: Any) -> None:
    flow = make_flow()
    with pytest.raises(BadRequestError):
        flow.goto(target)
    assert flow.goto_target is None


def test_sleep_records_seconds() -> None:
    flow = make_flow()
    flow.sleep(2.5)
    assert flow.sleep_seconds == 2.5


def test_sleep_accepts_a_timedelta() -> None:
    flow = make_flow()
    flow.sleep(timedelta(minutes=1))
    assert flow.sleep_seconds == 60.0


def test_sleep_of_a_negative_duration_is_zero() -> None:
    flow = make_flow()
    flow.sleep(-5)
    assert flow.sleep_seconds == 0.0


def test_sleep_is_zero_without_sleep() -> None:
    assert make_flow().sleep_seconds == 0.0


def test_sleep_rejects_a_non_duration() -> None:
    with pytest.raises(BadRequestError):
        make_flow().sleep("5s")  # type: ignore[arg-type]


def test_sleep_is_clamped_to_a_century() -> None:
    flow = make_flow()
    flow.sleep(1e15)
    assert flow.sleep_seconds == pytest.approx(100 * 365.25 * 86400)


# --- retry ---


def test_retry_first_attempt_waits_the_initial_delay() -> None:
    flow = make_flow(now=Clock(T0))
    assert flow.retry(1.0, 2.0, 0, 0) is True
    assert flow.retry_delay == 1.0


def test_retry_backoff_grows_with_the_attempt() -> None:
    flow = make_flow(attempt=3, now=Clock(T0))
    assert flow.retry(1.0, 2.0, 0, 0)
    assert flow.retry_delay == 8.0


def test_retry_delay_is_capped_by_max_delay() -> None:
    flow = make_flow(attempt=10, now=Clock(T0))
    assert flow.retry(1.0, 2.0, 30.0, 0)
    assert flow.retry_delay == 30.0


def test_retry_max_delay_zero_means_no_cap() -> None:
    flow = make_flow(attempt=10, now=Clock(T0))
    assert flow.retry(1.0, 2.0, 0, 0)
    assert flow.retry_delay == 1024.0


def test_retry_multiplier_zero_is_treated_as_one() -> None:
    flow = make_flow(attempt=5, now=Clock(T0))
    assert flow.retry(3.0, 0, 0, 0)
    assert flow.retry_delay == 3.0


def test_retry_negative_multiplier_is_treated_as_one() -> None:
    flow = make_flow(attempt=5, now=Clock(T0))
    assert flow.retry(3.0, -2.0, 0, 0)
    assert flow.retry_delay == 3.0


def test_retry_initial_zero_retries_immediately() -> None:
    flow = make_flow(attempt=4, now=Clock(T0))
    assert flow.retry(0, 2.0, 0, 0)
    assert flow.retry_delay == 0.0


def test_retry_accepts_timedeltas() -> None:
    flow = make_flow(attempt=1, now=Clock(T0))
    assert flow.retry(timedelta(seconds=2), 3.0, timedelta(minutes=1), timedelta(hours=1))
    assert flow.retry_delay == 6.0


def test_retry_within_the_horizon_returns_true() -> None:
    clock = Clock(T0 + timedelta(minutes=30))
    flow = make_flow(now=clock)
    assert flow.retry(10.0, 2.0, 0, timedelta(hours=1)) is True
    assert flow.retry_delay == 10.0


def test_retry_past_the_horizon_returns_false_and_requests_nothing() -> None:
    flow = make_flow(now=Clock(T0 + timedelta(hours=2)))
    assert flow.retry(1.0, 2.0, 10.0, timedelta(hours=1)) is False
    assert flow.retry_delay is None


def test_retry_gives_up_when_the_next_delay_alone_overshoots_the_horizon() -> None:
    flow = make_flow(now=Clock(T0))
    assert flow.retry(timedelta(hours=1), 1.0, 0, timedelta(minutes=1)) is False
    assert flow.retry_delay is None


def test_retry_landing_exactly_on_the_horizon_is_allowed() -> None:
    flow = make_flow(now=Clock(T0 + timedelta(seconds=50)))
    assert flow.retry(10.0, 1.0, 0, 60.0) is True


def test_retry_horizon_counts_from_the_step_creation_not_the_flow() -> None:
    step_created = T0 + timedelta(hours=5)
    flow = make_flow(step_created_at=step_created, now=Clock(step_created + timedelta(minutes=1)))
    assert flow.retry(1.0, 1.0, 0, timedelta(minutes=10)) is True


def test_retry_give_up_after_zero_means_no_horizon() -> None:
    flow = make_flow(now=Clock(T0 + timedelta(days=3)))
    assert flow.retry(1.0, 2.0, 10.0, 0) is True


def test_retry_negative_give_up_after_means_no_horizon() -> None:
    flow = make_flow(now=Clock(T0 + timedelta(days=3)))
    assert flow.retry(1.0, 2.0, 10.0, -1) is True


def test_retry_that_gives_up_cancels_an_earlier_request() -> None:
    flow = make_flow(now=Clock(T0))
    assert flow.retry(1.0, 1.0, 0, 0)
    assert flow.retry(120.0, 1.0, 0, 60.0) is False
    assert flow.retry_delay is None


def test_retry_delay_is_none_without_retry() -> None:
    assert make_flow().retry_delay is None


def test_retry_huge_backoff_is_clamped_not_an_overflow() -> None:
    flow = make_flow(attempt=5000, now=Clock(T0))
    assert flow.retry(1.0, 2.0, 0, 0)
    assert flow.retry_delay == pytest.approx(100 * 365.25 * 86400)


def test_retry_huge_backoff_with_a_cap_takes_the_cap() -> None:
    flow = make_flow(attempt=5000, now=Clock(T0))
    assert flow.retry(1.0, 2.0, 60.0, 0)
    assert flow.retry_delay == 60.0


def test_retry_accepts_a_huge_int_multiplier() -> None:
    flow = make_flow(attempt=2, now=Clock(T0))
    assert flow.retry(1.0, 10**400, 60.0, 0)
    assert flow.retry_delay == 60.0


@pytest.mark.parametrize("multiplier", [math.nan, math.inf, True, "2"])
def test_retry_rejects_a_bad_multiplier(multiplier: Any) -> None:
    flow = make_flow()
    with pytest.raises(BadRequestError, match="multiplier"):
        flow.retry(1.0, multiplier, 0, 0)
    assert flow.retry_delay is None


def test_retry_uses_the_real_clock_by_default() -> None:
    flow = make_flow(step_created_at=datetime.now(UTC))
    assert flow.retry(1.0, 1.0, 0, timedelta(hours=1)) is True


# --- interrupt ---


def test_interrupt_parks_the_step_with_the_payload() -> None:
    flow = make_flow()
    with pytest.raises(Park) as parked:
        flow.interrupt({"question": "approve?"})
    assert parked.value.kind == "interrupt"
    assert flow.interrupt_payload == {"question": "approve?"}


def test_interrupt_without_payload_records_an_empty_object() -> None:
    flow = make_flow()
    with pytest.raises(Park):
        flow.interrupt()
    assert flow.interrupt_payload == {}


def test_interrupt_payload_is_none_without_interrupt() -> None:
    assert make_flow().interrupt_payload is None


def test_interrupt_after_resume_returns_the_resume_data() -> None:
    flow = make_flow(resume_data={"approved": True})
    assert flow.interrupt({"question": "approve?"}) == {"approved": True}
    assert flow.interrupt_payload is None


def test_interrupt_with_empty_resume_data_returns_an_empty_dict() -> None:
    assert make_flow(resume_data={}).interrupt() == {}


def test_interrupt_returns_a_copy_of_the_resume_data() -> None:
    flow = make_flow(resume_data={"list": [1]})
    flow.interrupt()["list"].append(2)
    assert flow.interrupt() == {"list": [1]}


def test_resume_data_is_not_merged_into_state() -> None:
    flow = make_flow({"a": 1}, resume_data={"b": 2})
    flow.interrupt()
    assert flow.snapshot() == {"a": 1}
    assert flow.changes == {}


def test_changes_made_before_interrupting_are_kept() -> None:
    flow = make_flow()
    flow.set("draft", "v1")
    with pytest.raises(Park):
        flow.interrupt({"q": 1})
    assert flow.changes == {"draft": "v1"}


def test_interrupt_payload_is_copied() -> None:
    flow = make_flow()
    payload = {"items": [1]}
    with pytest.raises(Park):
        flow.interrupt(payload)
    payload["items"].append(2)
    assert flow.interrupt_payload == {"items": [1]}


@pytest.mark.parametrize("payload", [{"bad": math.nan}, {"when": T0}, {1: "x"}])
def test_interrupt_rejects_a_non_json_payload_without_parking(payload: Any) -> None:
    flow = make_flow()
    with pytest.raises(BadRequestError, match="interrupt payload"):
        flow.interrupt(payload)
    assert flow.interrupt_payload is None


@pytest.mark.parametrize("payload", [[1, 2], "text", 5])
def test_interrupt_rejects_a_payload_that_is_not_an_object(payload: Any) -> None:
    with pytest.raises(BadRequestError, match="JSON object"):
        make_flow().interrupt(payload)


def test_second_interrupt_in_one_run_is_rejected_and_keeps_the_first_payload() -> None:
    flow = make_flow()
    with pytest.raises(Park):
        flow.interrupt({"n": "first"})
    with pytest.raises(BadRequestError, match="already requested an interrupt"):
        flow.interrupt({"n": "second"})
    assert flow.interrupt_payload == {"n": "first"}


def test_interrupt_after_a_subgraph_request_is_rejected() -> None:
    flow = make_flow()
    with pytest.raises(Park):
        flow.subgraph("wf://child")
    with pytest.raises(BadRequestError, match="subgraph"):
        flow.interrupt()
    assert flow.interrupt_payload is None


def test_interrupt_after_a_resolved_subgraph_is_rejected() -> None:
    flow = make_flow(subgraph_result={"x": 1})
    assert flow.subgraph("wf://child") == {"x": 1}
    with pytest.raises(BadRequestError, match="subgraph"):
        flow.interrupt()


def test_interrupt_after_a_failed_subgraph_is_rejected() -> None:
    flow = make_flow(subgraph_error="boom")
    with pytest.raises(BadRequestError, match="subgraph"):
        flow.interrupt()


def test_mapping_payload_that_is_not_a_dict_is_accepted() -> None:
    from types import MappingProxyType

    flow = make_flow()
    with pytest.raises(Park):
        flow.interrupt(MappingProxyType({"a": 1}))
    assert flow.interrupt_payload == {"a": 1}


# --- subgraph ---


def test_subgraph_parks_the_step_with_the_request() -> None:
    flow = make_flow()
    with pytest.raises(Park) as parked:
        flow.subgraph("https://example.com/child", {"order": 7})
    assert parked.value.kind == "subgraph"
    assert flow.subgraph_request == ("https://example.com/child", {"order": 7})


def test_subgraph_without_input_requests_an_empty_state() -> None:
    flow = make_flow({"parent": "state"})
    with pytest.raises(Park):
        flow.subgraph("wf://child")
    assert flow.subgraph_request == ("wf://child", {})


def test_subgraph_request_is_none_without_subgraph() -> None:
    assert make_flow().subgraph_request is None


def test_subgraph_returns_the_child_result_once_complete() -> None:
    flow = make_flow(subgraph_result={"total": 42})
    assert flow.subgraph("wf://child", {"x": 1}) == {"total": 42}
    assert flow.subgraph_request is None


def test_subgraph_returns_a_copy_of_the_result() -> None:
    flow = make_flow(subgraph_result={"list": [1]})
    flow.subgraph("wf://child")["list"].append(2)
    assert flow.subgraph("wf://child") == {"list": [1]}


def test_subgraph_raises_the_child_error_when_the_child_failed() -> None:
    flow = make_flow(subgraph_error="child exploded")
    with pytest.raises(SubgraphError, match="child exploded"):
        flow.subgraph("wf://child")


def test_subgraph_error_wins_over_a_result() -> None:
    flow = make_flow(subgraph_result={"partial": 1}, subgraph_error="failed")
    with pytest.raises(SubgraphError):
        flow.subgraph("wf://child")


def test_subgraph_error_can_be_caught_as_an_exception() -> None:
    flow = make_flow(subgraph_error="failed")
    try:
        flow.subgraph("wf://child")
    except Exception as error:  # a task's ordinary handler catches it
        assert isinstance(error, SubgraphError)


def test_subgraph_request_input_is_a_copy() -> None:
    flow = make_flow()
    child_input = {"items": [1]}
    with pytest.raises(Park):
        flow.subgraph("wf://child", child_input)
    child_input["items"].append(2)
    request = flow.subgraph_request
    assert request is not None
    request[1]["items"].append(3)
    assert flow.subgraph_request == ("wf://child", {"items": [1]})


@pytest.mark.parametrize("url", ["", None, 3])
def test_subgraph_rejects_an_empty_url(url: Any) -> None:
    flow = make_flow()
    with pytest.raises(BadRequestError, match="workflow URL"):
        flow.subgraph(url)
    assert flow.subgraph_request is None


@pytest.mark.parametrize("child_input", [{"x": math.inf}, {"s": {1, 2}}, ["not", "an", "object"]])
def test_subgraph_rejects_an_input_that_is_not_a_json_object(child_input: Any) -> None:
    flow = make_flow()
    with pytest.raises(BadRequestError, match="subgraph input"):
        flow.subgraph("wf://child", child_input)
    assert flow.subgraph_request is None


def test_second_subgraph_in_one_run_is_rejected_and_keeps_the_first() -> None:
    flow = make_flow()
    with pytest.raises(Park):
        flow.subgraph("wf://first")
    with pytest.raises(BadRequestError, match="already requested one"):
        flow.subgraph("wf://second")
    assert flow.subgraph_request == ("wf://first", {})


def test_subgraph_after_an_interrupt_request_is_rejected() -> None:
    flow = make_flow()
    with pytest.raises(Park):
        flow.interrupt()
    with pytest.raises(BadRequestError, match="interrupt"):
        flow.subgraph("wf://child")
    assert flow.subgraph_request is None


def test_subgraph_after_a_resumed_interrupt_is_rejected() -> None:
    flow = make_flow(resume_data={"ok": True})
    assert flow.interrupt() == {"ok": True}
    with pytest.raises(BadRequestError, match="interrupt"):
        flow.subgraph("wf://child")


# --- Park ---


def test_park_is_not_caught_by_except_exception() -> None:
    flow = make_flow()
    swallowed = False
    with pytest.raises(Park):
        try:
            flow.interrupt({"q": 1})
        except Exception:  # a task's broad handler must not swallow the park
            swallowed = True
    assert not swallowed


def test_park_is_a_base_exception_not_an_exception() -> None:
    assert issubclass(Park, BaseException)
    assert not issubclass(Park, Exception)


def test_park_message_says_what_the_step_waits_for() -> None:
    assert "resume" in str(Park("interrupt"))
    assert "child flow" in str(Park("subgraph"))


def test_park_survives_copy_and_pickle() -> None:
    park = Park("subgraph")
    assert copy.copy(park).kind == "subgraph"
    assert pickle.loads(pickle.dumps(park)).kind == "subgraph"
