"""Flow.append and the reducers that apply appended items (issue 14).

A task's ``append`` records only the new items (``Flow.appends``) unless the field already has a pending
change this step, in which case that change grows; reads always see state, then changes, then items.
``apply_output`` applies the same layering to produce the next state, ``materialize_appends`` turns the
items back into whole values.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from dwarf.errors import BadRequestError
from dwarf.workflow.flow import Flow
from dwarf.workflow.jsonvalue import MAX_JSON_DEPTH
from dwarf.workflow.reducers import apply_changes, apply_output, materialize_appends

T0 = datetime(2025, 1, 1, 12, 0, 0, tzinfo=UTC)


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


def nested(depth: int) -> Any:
    """A value nesting ``depth`` arrays (0 is a scalar)."""
    value: Any = 0
    for _ in range(depth):
        value = [value]
    return value


# --- what gets recorded ---


def test_append_to_an_absent_field_records_only_the_items() -> None:
    flow = make_flow()
    flow.append("log", "a", "b")
    assert flow.appends == {"log": ["a", "b"]}
    assert flow.changes == {}
    assert flow.get("log") == ["a", "b"]


def test_append_to_a_null_field_starts_from_an_empty_list() -> None:
    flow = make_flow({"log": None})
    flow.append("log", 1)
    assert flow.get("log") == [1]
    assert flow.appends == {"log": [1]}


def test_append_to_a_list_in_state_records_only_the_new_items() -> None:
    flow = make_flow({"log": ["old1", "old2"]})
    flow.append("log", "new")
    assert flow.appends == {"log": ["new"]}
    assert flow.changes == {}
    assert flow.get("log") == ["old1", "old2", "new"]


def test_appending_twice_extends_the_record_in_call_order() -> None:
    flow = make_flow({"log": [0]})
    flow.append("log", 1)
    flow.append("log", 2, 3)
    assert flow.appends == {"log": [1, 2, 3]}
    assert flow.get("log") == [0, 1, 2, 3]


def test_appends_to_different_fields_are_kept_apart() -> None:
    flow = make_flow({"a": ["x"]})
    flow.append("a", 1)
    flow.append("b", 2)
    assert flow.appends == {"a": [1], "b": [2]}


def test_appending_no_items_records_nothing() -> None:
    flow = make_flow({"log": [1]})
    flow.append("log")
    flow.append("fresh")
    assert flow.appends == {}
    assert flow.changes == {}
    assert not flow.has("fresh")
    assert flow.get("log") == [1]


def test_an_item_that_is_itself_a_list_is_one_element() -> None:
    flow = make_flow({"pairs": [[0, 0]]})
    flow.append("pairs", [1, 2], [3, 4])
    assert flow.get("pairs") == [[0, 0], [1, 2], [3, 4]]
    assert flow.appends == {"pairs": [[1, 2], [3, 4]]}


def test_tuple_items_are_stored_as_lists() -> None:
    flow = make_flow()
    flow.append("points", (1, 2))
    assert flow.appends == {"points": [[1, 2]]}


# --- interplay with set, delete and clear ---


def test_append_after_set_extends_the_pending_change() -> None:
    flow = make_flow({"log": ["old"]})
    flow.set("log", ["fresh"])
    flow.append("log", "more")
    assert flow.changes == {"log": ["fresh", "more"]}
    assert flow.appends == {}
    assert flow.get("log") == ["fresh", "more"]


def test_append_after_set_of_a_non_list_is_refused() -> None:
    flow = make_flow({"log": ["old"]})
    flow.set("log", "now a string")
    with pytest.raises(TypeError, match=r"'log'.*string"):
        flow.append("log", "x")
    assert flow.changes == {"log": "now a string"}
    assert flow.appends == {}


def test_append_after_delete_starts_the_change_from_an_empty_list() -> None:
    flow = make_flow({"log": ["old"]})
    flow.delete("log")
    flow.append("log", "x", "y")
    assert flow.changes == {"log": ["x", "y"]}
    assert flow.appends == {}
    assert flow.get("log") == ["x", "y"]


def test_append_after_set_none_counts_as_after_delete() -> None:
    flow = make_flow({"log": ["old"]})
    flow.set("log", None)
    flow.append("log", "x")
    assert flow.changes == {"log": ["x"]}
    assert flow.appends == {}


def test_append_after_clear_rebuilds_the_field_as_a_change() -> None:
    flow = make_flow({"log": ["old"], "other": 1})
    flow.clear()
    flow.append("log", "x")
    assert flow.changes == {"log": ["x"], "other": None}
    assert flow.appends == {}


def test_set_after_append_carries_the_whole_value_and_drops_the_items() -> None:
    flow = make_flow({"log": ["old"]})
    flow.append("log", "x")
    flow.set("log", ["replaced"])
    assert flow.changes == {"log": ["replaced"]}
    assert flow.appends == {}
    assert flow.get("log") == ["replaced"]


def test_set_of_the_read_value_after_append_keeps_the_items() -> None:
    # The idiom "read, modify, set" after an append must not lose what was appended.
    flow = make_flow({"log": ["old"]})
    flow.append("log", "x")
    flow.set("log", [*flow.get("log"), "y"])
    assert flow.changes == {"log": ["old", "x", "y"]}
    assert flow.appends == {}


def test_delete_after_append_drops_the_items() -> None:
    flow = make_flow({"log": ["old"]})
    flow.append("log", "x")
    flow.delete("log")
    assert flow.changes == {"log": None}
    assert flow.appends == {}
    assert not flow.has("log")
    assert flow.get("log") is None


def test_clear_after_append_drops_the_items_and_deletes_append_only_fields() -> None:
    flow = make_flow({"log": ["old"]})
    flow.append("log", "x")
    flow.append("fresh", 1)
    flow.clear()
    assert flow.appends == {}
    assert flow.changes == {"log": None, "fresh": None}
    assert flow.snapshot() == {}


def test_a_set_of_another_field_leaves_the_items_alone() -> None:
    flow = make_flow({"log": ["old"]})
    flow.append("log", "x")
    flow.set("count", 1)
    flow.delete("gone")
    assert flow.appends == {"log": ["x"]}


# --- refusals ---


@pytest.mark.parametrize(
    ("value", "kind"),
    [("text", "string"), (3, "number"), (True, "bool"), ({"a": 1}, "object")],
)
def test_append_to_a_non_list_field_raises_type_error_and_records_nothing(value: Any, kind: str) -> None:
    flow = make_flow({"field": value})
    with pytest.raises(TypeError) as raised:
        flow.append("field", "x")
    message = str(raised.value)
    assert "'field'" in message and kind in message
    assert flow.appends == {}
    assert flow.changes == {}
    assert flow.get("field") == value


def test_append_of_no_items_to_a_non_list_field_still_raises() -> None:
    # The type is checked first, so the mistake does not depend on there being something to add.
    flow = make_flow({"field": "text"})
    with pytest.raises(TypeError):
        flow.append("field")


@pytest.mark.parametrize(
    "item",
    [float("nan"), float("inf"), {1, 2}, b"bytes", T0, {1: "int key"}, object(), "\ud800"],
)
def test_append_refuses_a_non_json_item_like_set_and_records_nothing(item: Any) -> None:
    flow = make_flow({"log": ["old"]})
    with pytest.raises(BadRequestError):
        flow.set("log", [item])
    with pytest.raises(BadRequestError, match="'log'"):
        flow.append("log", "fine", item)
    assert flow.appends == {}
    assert flow.changes == {}
    assert flow.get("log") == ["old"]


def test_a_non_json_item_does_not_disturb_earlier_appends() -> None:
    flow = make_flow()
    flow.append("log", 1)
    with pytest.raises(BadRequestError):
        flow.append("log", 2, {3})
    assert flow.appends == {"log": [1]}


def test_a_non_json_item_leaves_a_pending_change_unchanged() -> None:
    flow = make_flow()
    flow.set("log", [1])
    with pytest.raises(BadRequestError):
        flow.append("log", float("nan"))
    assert flow.changes == {"log": [1]}


def test_an_item_that_contains_itself_is_refused() -> None:
    loop: list[Any] = []
    loop.append(loop)
    flow = make_flow()
    with pytest.raises(BadRequestError):
        flow.append("log", loop)
    assert flow.appends == {}


def test_the_nesting_limit_counts_the_array_the_items_go_into() -> None:
    # set of a one-element list is refused at exactly this depth; append of its element must be too.
    item = nested(MAX_JSON_DEPTH)
    flow = make_flow()
    with pytest.raises(BadRequestError):
        flow.set("deep", [item])
    with pytest.raises(BadRequestError):
        flow.append("deep", item)
    flow.append("deep", nested(MAX_JSON_DEPTH - 1))
    assert flow.has("deep")


@pytest.mark.parametrize("key", ["", 3, None])
def test_append_refuses_a_bad_field_name(key: Any) -> None:
    flow = make_flow()
    with pytest.raises(BadRequestError):
        flow.append(key, 1)
    assert flow.appends == {}


# --- reads see the appended items ---


def test_reads_see_appended_items() -> None:
    flow = make_flow({"tags": ["a"], "other": 1})
    flow.append("tags", "b")
    flow.append("new", "c")
    assert flow.get("tags") == ["a", "b"]
    assert flow.get_strs("tags") == ["a", "b"]
    assert flow.get_strs("new") == ["c"]
    assert flow.has("new")
    assert flow.snapshot() == {"tags": ["a", "b"], "other": 1, "new": ["c"]}


def test_get_strs_sees_a_non_string_item() -> None:
    flow = make_flow({"tags": ["a"]})
    flow.append("tags", 2)
    assert flow.get_strs("tags") == []


def test_append_does_not_mutate_the_state_list() -> None:
    log = ["old"]
    flow = make_flow({"log": log})
    before = flow.get("log")
    flow.append("log", "x")
    assert flow.get("log") == ["old", "x"]
    assert before == ["old"]
    assert log == ["old"]
    # The step's input (what the engine keeps as the step's state) is untouched too.
    assert flow._state == {"log": ["old"]}


def test_append_stores_a_copy_of_an_item() -> None:
    item = {"n": 1}
    flow = make_flow()
    flow.append("log", item)
    item["n"] = 2
    assert flow.get("log") == [{"n": 1}]


def test_get_and_snapshot_of_an_appended_field_are_copies() -> None:
    flow = make_flow({"log": [{"n": 0}]})
    flow.append("log", {"n": 1})
    flow.get("log")[1]["n"] = 99
    flow.get("log")[0]["n"] = 99
    flow.snapshot()["log"].append("junk")
    assert flow.get("log") == [{"n": 0}, {"n": 1}]
    assert flow.appends == {"log": [{"n": 1}]}


# --- the engine-facing properties ---


def test_appends_and_changes_are_copies() -> None:
    flow = make_flow()
    flow.append("log", {"n": 1})
    flow.set("list", [1])
    flow.appends["log"].append("junk")
    flow.appends["log"][0]["n"] = 2
    flow.appends.clear()
    flow.changes["list"].append("junk")
    assert flow.appends == {"log": [{"n": 1}]}
    assert flow.changes == {"list": [1]}


def test_appends_is_read_only() -> None:
    flow = make_flow()
    with pytest.raises(AttributeError):
        flow.appends = {}  # type: ignore[misc]


def test_changes_never_show_fields_that_were_only_appended_to() -> None:
    flow = make_flow({"log": []})
    flow.append("log", 1)
    flow.set("x", 1)
    assert flow.changes == {"x": 1}


# --- restoring a parked step ---


def test_constructor_restores_appends() -> None:
    restored = {"log": ["x"]}
    flow = make_flow({"log": ["old"]}, appends=restored)
    assert flow.get("log") == ["old", "x"]
    assert flow.appends == {"log": ["x"]}
    flow.append("log", "y")
    assert flow.appends == {"log": ["x", "y"]}
    assert restored == {"log": ["x"]}  # copied, not extended in place


def test_constructor_appends_are_copied() -> None:
    restored: dict[str, list[Any]] = {"log": [{"n": 1}]}
    flow = make_flow(appends=restored)
    restored["log"][0]["n"] = 2
    restored["log"].append("junk")
    assert flow.get("log") == [{"n": 1}]


def test_constructor_appends_with_restored_changes_layer_in_order() -> None:
    flow = make_flow({"log": ["state"]}, changes={"count": 1}, appends={"log": ["x"]})
    assert flow.snapshot() == {"log": ["state", "x"], "count": 1}
    assert flow.changes == {"count": 1}
    assert flow.appends == {"log": ["x"]}


def test_set_after_restored_append_drops_the_restored_items() -> None:
    flow = make_flow({"log": ["state"]}, appends={"log": ["x"]})
    flow.set("log", ["whole"])
    assert flow.appends == {}
    assert flow.changes == {"log": ["whole"]}


def test_constructor_drops_empty_item_lists() -> None:
    flow = make_flow(appends={"log": []})
    assert flow.appends == {}
    assert not flow.has("log")


@pytest.mark.parametrize(
    ("state", "changes", "appends"),
    [
        ({"log": "text"}, None, {"log": ["x"]}),
        ({"log": ["ok"]}, {"log": 5}, {"log": ["x"]}),
        ({}, None, {"log": "not a list"}),
    ],
)
def test_constructor_refuses_appends_that_flow_append_could_not_have_made(
    state: dict[str, Any], changes: dict[str, Any] | None, appends: dict[str, Any]
) -> None:
    with pytest.raises(ValueError, match="'log'"):
        make_flow(state, changes=changes, appends=appends)


def test_the_engines_output_of_a_flow_matches_what_the_task_read() -> None:
    # The contract between Flow and the engine: apply_output of the recorded delta is the task's view.
    state = {"log": ["a"], "keep": 1, "gone": 2, "reset": ["r"]}
    flow = make_flow(state)
    flow.append("log", "b")
    flow.delete("gone")
    flow.append("new", {"k": 1})
    flow.set("reset", ["fresh"])
    flow.append("reset", "more")
    flow.append("log", "c")
    assert apply_output(state, flow.changes, flow.appends) == flow.snapshot()


# --- apply_output ---


def test_apply_output_applies_changes_then_appends() -> None:
    state = {"log": ["a"], "x": 1, "gone": True}
    output = apply_output(state, {"x": 2, "gone": None}, {"log": ["b", "c"], "new": [1]})
    assert output == {"log": ["a", "b", "c"], "x": 2, "new": [1]}


def test_apply_output_without_appends_is_apply_changes() -> None:
    state = {"a": 1, "b": [2]}
    changes = {"a": None, "c": 3}
    assert apply_output(state, changes, {}) == apply_changes(state, changes)


def test_apply_output_appends_onto_a_changed_value() -> None:
    # Items recorded alongside a change of the same field (only a restored row can hold both) come after it.
    assert apply_output({"log": ["old"]}, {"log": ["set"]}, {"log": ["x"]}) == {"log": ["set", "x"]}


def test_apply_output_starts_an_absent_null_or_deleted_field_empty() -> None:
    assert apply_output({}, {}, {"log": [1]}) == {"log": [1]}
    assert apply_output({"log": None}, {}, {"log": [1]}) == {"log": [1]}
    assert apply_output({"log": ["old"]}, {"log": None}, {"log": [1]}) == {"log": [1]}


def test_apply_output_skips_empty_item_lists() -> None:
    assert apply_output({"a": 1}, {}, {"log": []}) == {"a": 1}


def test_apply_output_does_not_mutate_its_inputs() -> None:
    state = {"log": [{"n": 0}]}
    changes = {"other": [1]}
    appends: dict[str, list[Any]] = {"log": [{"n": 1}], "new": [[1]]}
    output = apply_output(state, changes, appends)
    output["log"].append("junk")
    output["log"][1]["n"] = 99
    output["new"][0].append(99)
    output["other"].append(99)
    assert state == {"log": [{"n": 0}]}
    assert changes == {"other": [1]}
    assert appends == {"log": [{"n": 1}], "new": [[1]]}


@pytest.mark.parametrize(
    ("state", "changes", "appends"),
    [
        ({"log": "text"}, {}, {"log": [1]}),
        ({"log": []}, {"log": {"a": 1}}, {"log": [1]}),
        ({}, {}, {"log": 7}),
        ({}, {}, {"log": "abc"}),
    ],
)
def test_apply_output_refuses_a_damaged_row_with_value_error(
    state: dict[str, Any], changes: dict[str, Any], appends: dict[str, Any]
) -> None:
    with pytest.raises(ValueError, match="'log'"):
        apply_output(state, changes, appends)


# --- materialize_appends ---


def test_materialize_appends_gives_whole_values() -> None:
    state = {"log": ["a"], "x": 1}
    changes = {"x": None}
    appends: dict[str, list[Any]] = {"log": ["b"], "new": [1]}
    output = apply_output(state, changes, appends)
    assert materialize_appends(changes, appends, output) == {"x": None, "log": ["a", "b"], "new": [1]}


def test_materialize_appends_replays_to_the_same_output() -> None:
    # The whole-value view applied plainly must land on the same state as the compact delta.
    state = {"log": ["a"], "keep": [1], "x": 1}
    changes = {"x": 2, "y": None}
    appends: dict[str, list[Any]] = {"log": ["b", "c"], "fresh": [{"k": 1}]}
    output = apply_output(state, changes, appends)
    assert apply_changes(state, materialize_appends(changes, appends, output)) == output


def test_materialize_appends_without_appends_is_a_copy_of_changes() -> None:
    changes = {"a": [1], "b": None}
    result = materialize_appends(changes, {}, {"a": [1]})
    assert result == changes
    result["a"].append(2)
    assert changes == {"a": [1], "b": None}


def test_materialize_appends_skips_empty_item_lists() -> None:
    assert materialize_appends({}, {"log": []}, {}) == {}


def test_materialize_appends_does_not_share_with_its_inputs() -> None:
    output = {"log": [{"n": 1}]}
    appends = {"log": [{"n": 1}]}
    result = materialize_appends({}, appends, output)
    result["log"][0]["n"] = 99
    assert output == {"log": [{"n": 1}]}
    assert appends == {"log": [{"n": 1}]}


def test_materialize_appends_refuses_an_output_without_the_appended_field() -> None:
    with pytest.raises(ValueError, match="'log'"):
        materialize_appends({}, {"log": [1]}, {"other": 1})
