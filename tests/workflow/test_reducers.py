"""Reducers and state merging (docs/graphs.md#fan-in-and-reducers): plain merges between steps, reducer
folds at a fan-in."""

from __future__ import annotations

import copy
import enum
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from dwarf.errors import DwarfError, InvalidGraphError
from dwarf.workflow.reducers import (
    Reducer,
    ReducerError,
    apply_changes,
    apply_with_reducers,
    merge_fan_in,
    parse_reducer,
    reduce_value,
)


def fold(reducer: Reducer, *values: Any) -> Any:
    """Fold values into an absent accumulator one after the other, as a fan-in of that many branches."""
    merged = merge_fan_in({}, [{"f": value} for value in values], {"f": reducer})
    return merged.get("f")


# --- Reducer names ---


def test_reducer_values_are_the_wire_names() -> None:
    assert [r.value for r in Reducer] == [
        "replace",
        "append",
        "add",
        "min",
        "max",
        "union",
        "merge",
        "and",
        "or",
        "concat",
    ]


def test_reducer_compares_equal_to_its_name() -> None:
    name: str = "add"
    assert name == Reducer.ADD


def test_parse_reducer_accepts_a_name() -> None:
    assert parse_reducer("union") is Reducer.UNION


def test_parse_reducer_passes_a_member_through() -> None:
    assert parse_reducer(Reducer.MAX) is Reducer.MAX


def test_parse_reducer_reads_empty_name_as_replace() -> None:
    assert parse_reducer("") is Reducer.REPLACE


def test_parse_reducer_rejects_an_unknown_name() -> None:
    with pytest.raises(InvalidGraphError, match="'sum'"):
        parse_reducer("sum")


def test_parse_reducer_is_case_sensitive() -> None:
    with pytest.raises(InvalidGraphError):
        parse_reducer("ADD")


def test_parse_reducer_rejects_a_non_string() -> None:
    with pytest.raises(InvalidGraphError):
        parse_reducer(3)  # type: ignore[arg-type]


def test_reducer_error_is_a_dwarf_error() -> None:
    assert issubclass(ReducerError, DwarfError)


def test_reduce_value_accepts_a_reducer_name_string() -> None:
    assert reduce_value("add", "f", 1, 2, present=True) == 3  # type: ignore[arg-type]


# --- replace ---


def test_replace_takes_the_delta() -> None:
    assert reduce_value(Reducer.REPLACE, "f", "old", "new", present=True) == "new"


def test_replace_with_none_means_absent() -> None:
    assert reduce_value(Reducer.REPLACE, "f", "old", None, present=True) is None


def test_replace_does_not_check_types() -> None:
    assert reduce_value(Reducer.REPLACE, "f", 1, ["x"], present=True) == ["x"]


def test_replace_returns_a_copy_of_the_delta() -> None:
    delta = {"a": [1]}
    result = reduce_value(Reducer.REPLACE, "f", None, delta, present=False)
    delta["a"].append(2)
    assert result == {"a": [1]}


# --- append ---


def test_append_concatenates_arrays() -> None:
    assert reduce_value(Reducer.APPEND, "f", [1, 2], [3, 4], present=True) == [1, 2, 3, 4]


def test_append_wraps_a_non_array_delta_as_one_element() -> None:
    assert reduce_value(Reducer.APPEND, "f", [1], "x", present=True) == [1, "x"]


def test_append_wraps_an_object_delta_as_one_element() -> None:
    assert reduce_value(Reducer.APPEND, "f", [], {"a": 1}, present=True) == [{"a": 1}]


def test_append_onto_an_absent_field_starts_an_array() -> None:
    assert reduce_value(Reducer.APPEND, "f", None, 5, present=False) == [5]


def test_append_onto_a_null_field_starts_an_array() -> None:
    assert reduce_value(Reducer.APPEND, "f", None, [5], present=True) == [5]


def test_append_keeps_duplicates() -> None:
    assert reduce_value(Reducer.APPEND, "f", [1], [1], present=True) == [1, 1]


def test_append_accepts_a_tuple_delta_as_an_array() -> None:
    assert reduce_value(Reducer.APPEND, "f", [1], (2, 3), present=True) == [1, 2, 3]


def test_append_rejects_a_non_array_accumulator() -> None:
    with pytest.raises(
        ReducerError, match=r"'append' on field 'f' needs arrays.*accumulated value is an object"
    ):
        reduce_value(Reducer.APPEND, "f", {"a": 1}, [1], present=True)


def test_append_shares_no_list_with_its_inputs() -> None:
    current = [[1]]
    result = reduce_value(Reducer.APPEND, "f", current, [[2]], present=True)
    result[0].append(99)
    assert current == [[1]]


# --- add ---


def test_add_sums_ints_into_an_int() -> None:
    result = reduce_value(Reducer.ADD, "f", 10, 5, present=True)
    assert result == 15
    assert type(result) is int


def test_add_of_int_and_float_is_a_float() -> None:
    result = reduce_value(Reducer.ADD, "f", 1, 2.5, present=True)
    assert result == 3.5
    assert type(result) is float


def test_add_onto_an_absent_field_takes_the_delta() -> None:
    assert reduce_value(Reducer.ADD, "f", None, 7, present=False) == 7


def test_add_onto_a_null_field_takes_the_delta() -> None:
    assert reduce_value(Reducer.ADD, "f", None, 7, present=True) == 7


def test_add_keeps_big_ints_exact() -> None:
    assert reduce_value(Reducer.ADD, "f", 2**70, 1, present=True) == 2**70 + 1


def test_add_rejects_a_string_accumulator() -> None:
    with pytest.raises(ReducerError, match=r"'add' on field 'total' needs numbers.*string"):
        reduce_value(Reducer.ADD, "total", "hi", 1, present=True)


def test_add_rejects_a_string_delta_even_onto_an_absent_field() -> None:
    with pytest.raises(ReducerError, match=r"the change is a string"):
        reduce_value(Reducer.ADD, "f", None, "1", present=False)


def test_add_rejects_a_bool_as_a_number() -> None:
    with pytest.raises(ReducerError, match="bool"):
        reduce_value(Reducer.ADD, "f", 1, True, present=True)


def test_add_rejects_a_float_overflow_to_infinity() -> None:
    with pytest.raises(ReducerError, match="overflowed"):
        reduce_value(Reducer.ADD, "f", 1e308, 1e308, present=True)


def test_add_rejects_an_int_too_big_to_add_to_a_float() -> None:
    with pytest.raises(ReducerError, match="overflowed"):
        reduce_value(Reducer.ADD, "f", 10**400, 1.5, present=True)


# --- min and max ---


def test_min_takes_the_smaller() -> None:
    assert reduce_value(Reducer.MIN, "f", 10, 5, present=True) == 5


def test_min_keeps_the_accumulator_when_it_is_smaller() -> None:
    assert reduce_value(Reducer.MIN, "f", 3, 7, present=True) == 3


def test_min_keeps_the_accumulator_on_a_tie() -> None:
    result = reduce_value(Reducer.MIN, "f", 1, 1.0, present=True)
    assert type(result) is int


def test_min_compares_ints_and_floats() -> None:
    assert reduce_value(Reducer.MIN, "f", 2, 1.5, present=True) == 1.5


def test_min_onto_an_absent_field_takes_the_delta() -> None:
    assert reduce_value(Reducer.MIN, "f", None, 4, present=False) == 4


def test_min_rejects_a_non_number() -> None:
    with pytest.raises(ReducerError, match=r"'min'.*numbers"):
        reduce_value(Reducer.MIN, "f", "x", 1, present=True)


def test_max_takes_the_larger() -> None:
    assert reduce_value(Reducer.MAX, "f", 3, 7, present=True) == 7


def test_max_keeps_the_accumulator_when_it_is_larger() -> None:
    assert reduce_value(Reducer.MAX, "f", 10, 5, present=True) == 10


def test_max_of_negative_floats() -> None:
    assert reduce_value(Reducer.MAX, "f", -2.5, -3.5, present=True) == -2.5


def test_max_onto_an_absent_field_takes_the_delta() -> None:
    assert reduce_value(Reducer.MAX, "f", None, 4, present=False) == 4


def test_max_rejects_a_bool() -> None:
    with pytest.raises(ReducerError, match=r"'max'.*bool"):
        reduce_value(Reducer.MAX, "f", 1, False, present=True)


# --- union ---


def test_union_adds_only_new_elements_in_first_seen_order() -> None:
    assert reduce_value(Reducer.UNION, "f", [1, 2, 3], [2, 3, 4], present=True) == [1, 2, 3, 4]


def test_union_deduplicates_within_the_delta() -> None:
    assert reduce_value(Reducer.UNION, "f", ["a"], ["b", "b", "a"], present=True) == ["a", "b"]


def test_union_onto_an_absent_field_deduplicates_the_delta() -> None:
    assert reduce_value(Reducer.UNION, "f", None, [1, 1, 2], present=False) == [1, 2]


def test_union_treats_int_and_float_of_equal_value_as_equal() -> None:
    assert reduce_value(Reducer.UNION, "f", [1], [1.0], present=True) == [1]


def test_union_treats_true_and_one_as_different() -> None:
    assert reduce_value(Reducer.UNION, "f", [1], [True], present=True) == [1, True]


def test_union_treats_false_and_zero_as_different() -> None:
    assert reduce_value(Reducer.UNION, "f", [0], [False, 0.0], present=True) == [0, False]


def test_union_compares_objects_regardless_of_key_order() -> None:
    assert reduce_value(Reducer.UNION, "f", [{"a": 1, "b": 2}], [{"b": 2, "a": 1}], present=True) == [
        {"a": 1, "b": 2}
    ]


def test_union_compares_nested_numbers_by_json_value() -> None:
    assert reduce_value(Reducer.UNION, "f", [{"n": [2]}], [{"n": [2.0]}, {"n": [3]}], present=True) == [
        {"n": [2]},
        {"n": [3]},
    ]


def test_union_keeps_duplicates_already_in_the_accumulator() -> None:
    assert reduce_value(Reducer.UNION, "f", [1, 1], [1, 2], present=True) == [1, 1, 2]


def test_union_rejects_a_non_array_delta() -> None:
    with pytest.raises(ReducerError, match=r"'union'.*arrays.*change is a number"):
        reduce_value(Reducer.UNION, "f", [1], 2, present=True)


def test_union_rejects_a_non_array_accumulator() -> None:
    with pytest.raises(ReducerError, match=r"accumulated value is a number"):
        reduce_value(Reducer.UNION, "f", 42, [1], present=True)


# --- merge ---


def test_merge_is_a_shallow_merge_where_the_delta_wins() -> None:
    result = reduce_value(Reducer.MERGE, "f", {"a": 1, "b": {"x": 1}}, {"b": {"y": 2}, "c": 3}, present=True)
    assert result == {"a": 1, "b": {"y": 2}, "c": 3}


def test_merge_sets_a_null_member_instead_of_removing_it() -> None:
    assert reduce_value(Reducer.MERGE, "f", {"a": 1}, {"a": None}, present=True) == {"a": None}


def test_merge_onto_an_absent_field_takes_the_delta() -> None:
    assert reduce_value(Reducer.MERGE, "f", None, {"a": 1}, present=False) == {"a": 1}


def test_merge_rejects_an_array() -> None:
    with pytest.raises(ReducerError, match=r"'merge'.*objects.*accumulated value is an array"):
        reduce_value(Reducer.MERGE, "f", [1, 2], {"a": 1}, present=True)


def test_merge_shares_nothing_with_its_inputs() -> None:
    current = {"a": [1]}
    delta = {"b": [2]}
    result = reduce_value(Reducer.MERGE, "f", current, delta, present=True)
    result["a"].append(9)
    result["b"].append(9)
    assert current == {"a": [1]}
    assert delta == {"b": [2]}


# --- and, or ---


@pytest.mark.parametrize(
    ("current", "delta", "expected"),
    [(True, True, True), (True, False, False), (False, True, False), (False, False, False)],
)
def test_and_is_logical_and(current: bool, delta: bool, expected: bool) -> None:
    assert reduce_value(Reducer.AND, "f", current, delta, present=True) is expected


@pytest.mark.parametrize(
    ("current", "delta", "expected"),
    [(True, True, True), (True, False, True), (False, True, True), (False, False, False)],
)
def test_or_is_logical_or(current: bool, delta: bool, expected: bool) -> None:
    assert reduce_value(Reducer.OR, "f", current, delta, present=True) is expected


def test_and_onto_an_absent_field_takes_the_delta() -> None:
    assert reduce_value(Reducer.AND, "f", None, False, present=False) is False


def test_and_rejects_a_number() -> None:
    with pytest.raises(ReducerError, match=r"'and'.*booleans.*number"):
        reduce_value(Reducer.AND, "f", 1, True, present=True)


def test_and_rejects_a_string_true() -> None:
    with pytest.raises(ReducerError, match=r"'and'.*string"):
        reduce_value(Reducer.AND, "f", "true", True, present=True)


def test_or_rejects_zero() -> None:
    with pytest.raises(ReducerError, match=r"'or'.*number"):
        reduce_value(Reducer.OR, "f", 0, True, present=True)


# --- concat ---


def test_concat_joins_strings() -> None:
    assert reduce_value(Reducer.CONCAT, "f", "hello ", "world", present=True) == "hello world"


def test_concat_onto_an_absent_field_takes_the_delta() -> None:
    assert reduce_value(Reducer.CONCAT, "f", None, "x", present=False) == "x"


def test_concat_rejects_an_array() -> None:
    with pytest.raises(ReducerError, match=r"'concat'.*strings.*array"):
        reduce_value(Reducer.CONCAT, "f", ["a"], "b", present=True)


def test_concat_rejects_a_number_delta() -> None:
    with pytest.raises(ReducerError, match=r"change is a number"):
        reduce_value(Reducer.CONCAT, "f", "a", 42, present=True)


# --- None deltas ---


@pytest.mark.parametrize(
    ("reducer", "current"),
    [
        (Reducer.APPEND, [1, 2]),
        (Reducer.ADD, 5),
        (Reducer.MIN, 9),
        (Reducer.MAX, 9),
        (Reducer.UNION, ["a", "b"]),
        (Reducer.MERGE, {"k": 1}),
        (Reducer.AND, True),
        (Reducer.OR, False),
        (Reducer.CONCAT, "hi"),
    ],
)
def test_a_none_delta_contributes_nothing_to_a_reducer_field(reducer: Reducer, current: Any) -> None:
    assert reduce_value(reducer, "f", current, None, present=True) == current


@pytest.mark.parametrize("reducer", [r for r in Reducer if r is not Reducer.REPLACE])
def test_a_none_delta_leaves_an_absent_reducer_field_absent(reducer: Reducer) -> None:
    assert reduce_value(reducer, "f", None, None, present=False) is None


def test_a_none_delta_to_a_reducer_field_returns_a_copy_of_the_accumulator() -> None:
    current = [[1]]
    result = reduce_value(Reducer.APPEND, "f", current, None, present=True)
    result[0].append(2)
    assert current == [[1]]


# --- apply_changes ---


def test_apply_changes_replaces_and_adds_fields() -> None:
    assert apply_changes({"a": 1, "b": 2}, {"b": 3, "c": 4}) == {"a": 1, "b": 3, "c": 4}


def test_apply_changes_deletes_a_field_changed_to_none() -> None:
    assert apply_changes({"a": 1, "b": 2}, {"a": None}) == {"b": 2}


def test_apply_changes_ignores_the_deletion_of_an_absent_field() -> None:
    assert apply_changes({"a": 1}, {"zz": None}) == {"a": 1}


def test_apply_changes_does_not_use_reducers_even_for_arrays() -> None:
    assert apply_changes({"a": [1]}, {"a": [2]}) == {"a": [2]}


def test_apply_changes_does_not_mutate_its_inputs() -> None:
    state = {"a": [1], "b": 2}
    changes = {"a": None, "c": {"x": 1}}
    before = copy.deepcopy((state, changes))
    apply_changes(state, changes)
    assert (state, changes) == before


def test_apply_changes_result_shares_no_containers_with_its_inputs() -> None:
    state = {"a": [1]}
    changes = {"b": {"x": [1]}}
    merged = apply_changes(state, changes)
    merged["a"].append(2)
    merged["b"]["x"].append(2)
    assert state == {"a": [1]}
    assert changes == {"b": {"x": [1]}}


def test_apply_changes_keeps_a_null_already_in_the_state() -> None:
    assert apply_changes({"a": None}, {}) == {"a": None}


# --- merge_fan_in ---


def test_merge_fan_in_starts_from_the_base_state() -> None:
    assert merge_fan_in({"kept": 1, "n": 10}, [{"n": 1}, {"n": 2}], {"n": Reducer.ADD}) == {
        "kept": 1,
        "n": 13,
    }


def test_merge_fan_in_replace_field_takes_the_last_delta_in_position_order() -> None:
    assert merge_fan_in({}, [{"winner": "first"}, {"winner": "second"}], {}) == {"winner": "second"}


def test_merge_fan_in_append_follows_position_order_not_completion_order() -> None:
    # Branch 0 may have finished last; the caller passes deltas by fan-out position.
    deltas = [{"log": ["branch0"]}, {"log": ["branch1"]}, {"log": ["branch2"]}]
    assert merge_fan_in({"log": []}, deltas, {"log": Reducer.APPEND}) == {
        "log": ["branch0", "branch1", "branch2"]
    }


def test_merge_fan_in_union_keeps_first_seen_order_across_branches() -> None:
    deltas = [{"tags": ["b", "a"]}, {"tags": ["c", "a"]}]
    assert merge_fan_in({"tags": ["a"]}, deltas, {"tags": Reducer.UNION}) == {"tags": ["a", "b", "c"]}


def test_merge_fan_in_none_deletes_a_replace_field() -> None:
    assert merge_fan_in({"a": 1, "b": 2}, [{"a": None}], {}) == {"b": 2}


def test_merge_fan_in_later_branch_can_recreate_a_deleted_replace_field() -> None:
    assert merge_fan_in({"a": 1}, [{"a": None}, {"a": 5}], {}) == {"a": 5}


def test_merge_fan_in_later_deletion_wins_over_an_earlier_set() -> None:
    assert merge_fan_in({}, [{"a": 5}, {"a": None}], {}) == {}


def test_merge_fan_in_none_on_a_reducer_field_contributes_nothing() -> None:
    assert merge_fan_in({"n": 1}, [{"n": 2}, {"n": None}, {"n": 3}], {"n": Reducer.ADD}) == {"n": 6}


def test_merge_fan_in_none_on_an_absent_reducer_field_leaves_it_absent() -> None:
    assert merge_fan_in({}, [{"n": None}], {"n": Reducer.ADD}) == {}


def test_merge_fan_in_treats_a_null_base_value_as_absent_for_a_reducer() -> None:
    assert merge_fan_in({"n": None}, [{"n": 2}, {"n": 3}], {"n": Reducer.ADD}) == {"n": 5}


def test_merge_fan_in_of_no_deltas_is_the_base() -> None:
    assert merge_fan_in({"a": 1}, [], {"a": Reducer.ADD}) == {"a": 1}


def test_merge_fan_in_applies_each_field_its_own_reducer() -> None:
    base = {"total": 0, "items": [], "ok": True, "last": None}
    deltas = [
        {"total": 2, "items": ["x"], "ok": True, "last": "b0"},
        {"total": 3, "items": ["y"], "ok": False, "last": "b1"},
    ]
    reducers = {"total": Reducer.ADD, "items": Reducer.APPEND, "ok": Reducer.AND}
    assert merge_fan_in(base, deltas, reducers) == {
        "total": 5,
        "items": ["x", "y"],
        "ok": False,
        "last": "b1",
    }


def test_merge_fan_in_raises_on_a_type_mismatch_naming_the_field() -> None:
    with pytest.raises(ReducerError, match="'count'"):
        merge_fan_in({"count": 1}, [{"count": "two"}], {"count": Reducer.ADD})


def test_merge_fan_in_raises_on_a_mismatch_between_branches_whatever_the_order() -> None:
    orders: list[list[dict[str, Any]]] = [[{"n": 1}, {"n": "x"}], [{"n": "x"}, {"n": 1}]]
    for deltas in orders:
        with pytest.raises(ReducerError):
            merge_fan_in({}, deltas, {"n": Reducer.ADD})


def test_merge_fan_in_does_not_mutate_its_inputs() -> None:
    base = {"items": [1], "m": {"a": 1}}
    deltas = [{"items": [2], "m": {"b": 2}}]
    before = copy.deepcopy((base, deltas))
    merge_fan_in(base, deltas, {"items": Reducer.APPEND, "m": Reducer.MERGE})
    assert (base, deltas) == before


def test_merge_fan_in_result_shares_no_containers_with_the_deltas() -> None:
    deltas = [{"obj": {"deep": [1]}}]
    merged = merge_fan_in({}, deltas, {})
    merged["obj"]["deep"].append(2)
    assert deltas == [{"obj": {"deep": [1]}}]


def test_apply_with_reducers_folds_one_delta_with_reducers() -> None:
    assert apply_with_reducers({"n": 1, "s": "a"}, {"n": 2, "s": "b"}, {"n": Reducer.ADD}) == {
        "n": 3,
        "s": "b",
    }


def test_apply_with_reducers_deletes_a_replace_field_set_to_none() -> None:
    assert apply_with_reducers({"a": 1}, {"a": None}, {}) == {}


def test_merge_fan_in_normalizes_enum_and_tuple_values_to_plain_json() -> None:
    class Color(enum.StrEnum):
        RED = "red"

    merged = merge_fan_in({}, [{"c": Color.RED, "t": (1, 2)}], {})
    assert type(merged["c"]) is str
    assert merged["t"] == [1, 2]


# --- laws (hypothesis) ---

json_scalars = (
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text()
)
json_values = st.recursive(
    json_scalars,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=5), children, max_size=4)
    ),
    max_leaves=12,
)
small_ints = st.integers(min_value=-(10**12), max_value=10**12)
finite_numbers = st.integers(min_value=-(10**9), max_value=10**9) | st.floats(
    min_value=-1e9, max_value=1e9, allow_nan=False
)


@given(small_ints, small_ints)
def test_law_add_is_commutative_over_ints(a: int, b: int) -> None:
    assert fold(Reducer.ADD, a, b) == fold(Reducer.ADD, b, a)


@given(small_ints, small_ints, small_ints)
def test_law_add_is_associative_over_ints(a: int, b: int, c: int) -> None:
    left = reduce_value(Reducer.ADD, "f", fold(Reducer.ADD, a, b), c, present=True)
    right = reduce_value(Reducer.ADD, "f", a, fold(Reducer.ADD, b, c), present=True)
    assert left == right == fold(Reducer.ADD, a, b, c)


@given(st.lists(json_values, max_size=6))
def test_law_union_is_idempotent(values: list[Any]) -> None:
    assert reduce_value(Reducer.UNION, "f", values, values, present=True) == values


@given(st.lists(json_values, max_size=6), st.lists(json_values, max_size=6))
def test_law_union_applied_twice_changes_nothing_more(a: list[Any], b: list[Any]) -> None:
    once = reduce_value(Reducer.UNION, "f", a, b, present=True)
    assert reduce_value(Reducer.UNION, "f", once, b, present=True) == once


@given(st.booleans(), st.booleans())
def test_law_and_is_commutative(a: bool, b: bool) -> None:
    assert fold(Reducer.AND, a, b) == fold(Reducer.AND, b, a)


@given(st.booleans(), st.booleans())
def test_law_or_is_commutative(a: bool, b: bool) -> None:
    assert fold(Reducer.OR, a, b) == fold(Reducer.OR, b, a)


@pytest.mark.parametrize("reducer", [Reducer.MIN, Reducer.MAX])
@given(a=finite_numbers, b=finite_numbers)
def test_law_min_and_max_are_commutative(reducer: Reducer, a: float, b: float) -> None:
    assert fold(reducer, a, b) == fold(reducer, b, a)


@pytest.mark.parametrize("reducer", [Reducer.MIN, Reducer.MAX])
@given(a=finite_numbers)
def test_law_min_and_max_are_idempotent(reducer: Reducer, a: float) -> None:
    assert reduce_value(reducer, "f", a, a, present=True) == a


@given(
    st.dictionaries(st.text(max_size=4), json_values, max_size=5),
    st.dictionaries(st.text(max_size=4), json_values, max_size=5),
)
def test_law_fan_in_of_one_replace_delta_equals_a_plain_merge(
    base: dict[str, Any], delta: dict[str, Any]
) -> None:
    assert merge_fan_in(base, [delta], {}) == apply_changes(base, delta)


@given(st.lists(st.lists(json_values, max_size=5), max_size=5))
def test_law_append_length_is_the_sum_of_lengths(arrays: list[list[Any]]) -> None:
    merged = merge_fan_in({"f": []}, [{"f": array} for array in arrays], {"f": Reducer.APPEND})
    assert len(merged["f"]) == sum(len(array) for array in arrays)
