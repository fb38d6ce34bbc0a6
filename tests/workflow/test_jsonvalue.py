"""Strict JSON checks and copies shared by state, payloads and baggage."""

from __future__ import annotations

import enum
import math
import sys
from collections import OrderedDict
from decimal import Decimal
from typing import Any

import pytest

from dwarf.errors import BadRequestError
from dwarf.workflow.jsonvalue import (
    MAX_JSON_DEPTH,
    canonical_json,
    check_json,
    check_text,
    json_copy,
    json_copy_object,
    json_kind,
)


class Color(enum.StrEnum):
    RED = "red"


class Level(enum.IntEnum):
    HIGH = 3


class Ratio(float):
    pass


def nested_lists(depth: int) -> list[Any]:
    value: list[Any] = []
    for _ in range(depth):
        value = [value]
    return value


@pytest.mark.parametrize(
    "value",
    [
        None,
        True,
        0,
        -(10**30),
        1.5,
        "text",
        [],
        {},
        (1, 2),
        {"a": [1, {"b": None}]},
        Color.RED,
        Level.HIGH,
        OrderedDict(a=1),
    ],
)
def test_check_json_accepts_json_values(value: Any) -> None:
    check_json(value, "value")


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        (math.nan, "nan"),
        (math.inf, "inf"),
        ({1, 2}, "set"),
        (b"x", "bytes"),
        (Decimal("1.5"), "Decimal"),
        ({1: "a"}, "object key 1"),
        ({None: "a"}, "object key None"),
        ({"a": [1, object()]}, r"\['a'\]\[1\]"),
    ],
)
def test_check_json_rejects_with_a_reason(value: Any, reason: str) -> None:
    with pytest.raises(BadRequestError, match=reason):
        check_json(value, "the thing")


def test_check_json_names_what_was_checked() -> None:
    with pytest.raises(BadRequestError, match=r"^the initial state is not JSON-serializable"):
        check_json({"x": math.nan}, "the initial state")


def test_check_json_says_top_level_for_a_bad_root() -> None:
    with pytest.raises(BadRequestError, match="the top level"):
        check_json(math.nan, "value")


def test_check_json_rejects_a_cycle() -> None:
    value: list[Any] = [1]
    value.append(value)
    with pytest.raises(BadRequestError, match="contains itself"):
        check_json(value, "value")


def test_check_json_accepts_a_shared_but_acyclic_value() -> None:
    shared = [1]
    check_json({"a": shared, "b": shared, "c": [shared, shared]}, "value")


def test_check_json_accepts_nesting_up_to_the_storable_depth() -> None:
    # nested_lists(n) has n + 1 levels of arrays: the innermost empty list is level n.
    check_json(nested_lists(MAX_JSON_DEPTH - 1), "value")
    check_json({"field": nested_lists(MAX_JSON_DEPTH - 2)}, "value")


@pytest.mark.parametrize("depth", [MAX_JSON_DEPTH, 1100, sys.getrecursionlimit() * 3])
def test_check_json_refuses_nesting_the_stores_cannot_hold_without_recursing(depth: int) -> None:
    with pytest.raises(BadRequestError, match=f"nests deeper than {MAX_JSON_DEPTH} levels"):
        check_json({"field": nested_lists(depth)}, "value")


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        ("\ud800", "lone surrogate"),
        (["ok", {"k": "x\udfffy"}], "lone surrogate"),
        ({"\udc80": 1}, "object key .* lone surrogate"),
        (10**4300, "more than 4300 digits"),
        (-(10**5000), "more than 4300 digits"),
    ],
    ids=["surrogate", "nested-surrogate", "surrogate-key", "int-4301-digits", "int-5001-digits"],
)
def test_check_json_refuses_values_no_store_can_hold(value: Any, problem: str) -> None:
    with pytest.raises(BadRequestError, match=f"cannot be stored: .*{problem}"):
        check_json(value, "value")


@pytest.mark.parametrize(
    "value", ["a\x00b", {"k\x00": "v"}, 2**70, -(2**200), 10**4300 - 1, "é漢字😀", {"ключ": ["ß"]}]
)
def test_check_json_accepts_nul_in_strings_big_ints_and_any_unicode(value: Any) -> None:
    check_json(value, "value")


@pytest.mark.parametrize("text", ["plain", "é漢字😀", "with space"])
def test_check_text_accepts_storable_text(text: str) -> None:
    assert check_text(text, "name") == text


@pytest.mark.parametrize(
    ("text", "problem"), [("a\x00b", "NUL"), ("\ud800x", "lone surrogate"), ("é\x00", "NUL")]
)
def test_check_text_refuses_what_a_text_column_cannot_hold(text: str, problem: str) -> None:
    with pytest.raises(BadRequestError, match=f"name contains a {problem}"):
        check_text(text, "name")


def test_json_copy_returns_plain_scalars_unchanged() -> None:
    assert json_copy("s") == "s"
    assert json_copy(None) is None


def test_json_copy_is_deep() -> None:
    original = {"a": [{"b": 1}]}
    copied = json_copy(original)
    copied["a"][0]["b"] = 2
    assert original == {"a": [{"b": 1}]}


def test_json_copy_normalizes_subclasses_and_tuples() -> None:
    copied = json_copy({"c": Color.RED, "l": Level.HIGH, "t": (1, 2)})
    assert copied == {"c": "red", "l": 3, "t": [1, 2]}
    assert (type(copied["c"]), type(copied["l"])) == (str, int)


def test_json_copy_of_a_scalar_subclass_is_its_base_type() -> None:
    assert type(json_copy(Color.RED)) is str


def test_json_copy_handles_nesting_deeper_than_the_recursion_limit() -> None:
    depth = sys.getrecursionlimit() * 3
    copied = json_copy({"root": nested_lists(depth)})
    node = copied["root"]
    for _ in range(depth):
        assert isinstance(node, list)
        node = node[0]
    assert node == []


def test_deep_copy_fallback_normalizes_scalars() -> None:
    deep = nested_lists(sys.getrecursionlimit() * 2)
    copied = json_copy([deep, Color.RED, Level.HIGH, Ratio(0.5), True, {Color.RED: (1,)}])
    assert copied[1:] == ["red", 3, 0.5, True, {"red": [1]}]
    assert [type(item) for item in copied[1:5]] == [str, int, float, bool]
    assert type(next(iter(copied[5]))) is str


def test_deep_copy_fallback_rejects_a_non_json_leaf() -> None:
    with pytest.raises(TypeError):
        json_copy([nested_lists(sys.getrecursionlimit() * 2), object()])


def test_json_copy_object_copies_any_mapping_into_a_dict() -> None:
    source = OrderedDict(a=[1])
    copied = json_copy_object(source)
    copied["a"].append(2)
    assert type(copied) is dict
    assert source == OrderedDict(a=[1])


def test_canonical_json_ignores_key_order() -> None:
    assert canonical_json({"a": 1, "b": 2}) == canonical_json({"b": 2, "a": 1})


def test_canonical_json_equates_integral_floats_with_ints() -> None:
    assert canonical_json([1.0, {"x": -0.0}]) == canonical_json([1, {"x": 0}])


def test_canonical_json_keeps_fractions() -> None:
    assert canonical_json(1.5) != canonical_json(1)


def test_canonical_json_distinguishes_booleans_from_numbers() -> None:
    assert canonical_json(True) != canonical_json(1)
    assert canonical_json(False) != canonical_json(0.0)


@pytest.mark.parametrize(
    ("value", "kind"),
    [
        (None, "null"),
        (False, "bool"),
        (1, "number"),
        (1.5, "number"),
        ("", "string"),
        ([], "array"),
        ((), "array"),
        ({}, "object"),
        ({1}, "set"),
    ],
)
def test_json_kind_names_the_json_type(value: Any, kind: str) -> None:
    assert json_kind(value) == kind
