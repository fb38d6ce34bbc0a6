"""How changes are merged into state: plainly between steps, and field by field with reducers at a fan-in.

Outside a fan-in a step's changes simply replace state fields, and a change of ``None`` deletes the field
(``apply_changes``); then the items a task appended with ``Flow.append`` extend their array fields
(``apply_output``), and ``materialize_appends`` turns those items back into whole values where a plain
delta is needed (the history's ``changes``, what a branch carries into a fan-in). At a fan-in every
branch's changes are folded onto the pre-fan-out state in fan-out position order, each field with its
reducer (``merge_fan_in``); ``continue_thread`` folds its ``additional_state`` the same way
(``apply_with_reducers``). docs/graphs.md#fan-in-and-reducers is the contract.

Rules the user docs leave open (the reference implementation's answer unless marked otherwise):

- A ``None`` delta deletes a ``replace`` field; for every other reducer it is "no contribution" and
  leaves the accumulated value as it is.
- A missing or ``None`` accumulator is the reducer's identity: the first contribution becomes the value.
  Unlike the reference (which stores the first delta unchecked), the delta's type is checked even then,
  so a mismatch fails the fan-in whatever order the branches wrote in, and a first ``append`` of a
  non-array delta yields a one-element array.
- Numbers are ints and floats, never bools; ``add`` of two ints stays an int. ``min``/``max`` keep the
  accumulated value on a tie.
- ``union`` keeps the accumulated array as it is and adds each delta element not already present by
  JSON equality (``1`` equals ``1.0``, ``True`` does not equal ``1``); like the reference, it requires
  an array delta (only ``append`` wraps a scalar: a non-array delta is one element).
- ``merge`` is shallow: a ``None`` inside the delta object sets that key to null rather than removing it.
- A result that is no longer JSON (a float sum overflowing to infinity) is a ReducerError too.

Every function returns new containers holding copies: no state dict ever shares a list or dict with
another, so a later in-place change to one cannot leak into a persisted step.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from dwarf.errors import DwarfError, InvalidGraphError
from dwarf.workflow.jsonvalue import canonical_json, json_copy, json_copy_object, json_kind

__all__ = [
    "Reducer",
    "ReducerError",
    "apply_changes",
    "apply_output",
    "apply_with_reducers",
    "materialize_appends",
    "merge_fan_in",
    "parse_reducer",
    "reduce_value",
]


class Reducer(enum.StrEnum):
    """How the fan-in combines the values that parallel branches wrote to one state field
    (docs/graphs.md#fan-in-and-reducers)."""

    REPLACE = "replace"
    """The last branch in fan-out position order wins (the default)."""
    APPEND = "append"
    """Concatenate arrays; a non-array delta is appended as one element."""
    ADD = "add"
    """Sum numbers."""
    MIN = "min"
    """The smallest number."""
    MAX = "max"
    """The largest number."""
    UNION = "union"
    """Concatenate arrays, dropping elements already present (JSON equality), first-seen order."""
    MERGE = "merge"
    """Shallow merge of objects; the later branch wins a key."""
    AND = "and"
    """Logical and of booleans."""
    OR = "or"
    """Logical or of booleans."""
    CONCAT = "concat"
    """Concatenate strings."""


class ReducerError(DwarfError):
    """A reducer met a value of the wrong type (or produced one that is not JSON) while merging a field."""


def parse_reducer(value: Reducer | str) -> Reducer:
    """Return the Reducer named by ``value``; raise InvalidGraphError for an unknown name.

    The empty string means ``replace``, as an unset reducer does in the reference's graph JSON. Names are
    case-sensitive so that one graph definition means the same thing everywhere.
    """
    if isinstance(value, Reducer):
        return value
    if isinstance(value, str):
        if value == "":
            return Reducer.REPLACE
        try:
            return Reducer(value)
        except ValueError:
            pass
    known = ", ".join(member.value for member in Reducer)
    raise InvalidGraphError(f"unknown reducer {value!r}; expected one of: {known}")


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _is_array(value: Any) -> bool:
    return isinstance(value, list | tuple)


def _is_object(value: Any) -> bool:
    return isinstance(value, Mapping)


def _is_bool(value: Any) -> bool:
    return isinstance(value, bool)


def _is_string(value: Any) -> bool:
    return isinstance(value, str)


# What each reducer needs of both the accumulated value and the delta, and how to say it in an error.
_NEEDS: dict[Reducer, tuple[Callable[[Any], bool], str]] = {
    Reducer.APPEND: (_is_array, "arrays"),
    Reducer.ADD: (_is_number, "numbers"),
    Reducer.MIN: (_is_number, "numbers"),
    Reducer.MAX: (_is_number, "numbers"),
    Reducer.UNION: (_is_array, "arrays"),
    Reducer.MERGE: (_is_object, "objects"),
    Reducer.AND: (_is_bool, "booleans"),
    Reducer.OR: (_is_bool, "booleans"),
    Reducer.CONCAT: (_is_string, "strings"),
}


def _mismatch(reducer: Reducer, field: str, side: str, value: Any) -> ReducerError:
    needs = _NEEDS[reducer][1]
    kind = json_kind(value)
    article = "an" if kind[0] in "aeiou" else "a"
    return ReducerError(
        f"reducer {reducer.value!r} on field {field!r} needs {needs}, but the {side} is {article} {kind}"
    )


def _union(accumulated: list[Any], delta: Sequence[Any]) -> list[Any]:
    seen = {canonical_json(element) for element in accumulated}
    result = accumulated
    for element in delta:
        key = canonical_json(element)
        if key not in seen:
            seen.add(key)
            result.append(json_copy(element))
    return result


def _fold(reducer: Reducer, field: str, current: Any, delta: Any) -> Any:
    """Combine two values already known to be of the reducer's type; the result shares nothing."""
    if reducer is Reducer.APPEND:
        return json_copy(current) + json_copy(delta)
    if reducer is Reducer.ADD:
        try:
            total = current + delta
            # int + int is exact; only a float sum can leave JSON by overflowing to infinity.
            if isinstance(total, float) and not math.isfinite(total):
                raise OverflowError
        except OverflowError:
            raise ReducerError(
                f"reducer 'add' on field {field!r} overflowed: {current!r} + {delta!r}"
            ) from None
        return total
    if reducer is Reducer.MIN:
        return delta if delta < current else current
    if reducer is Reducer.MAX:
        return delta if delta > current else current
    if reducer is Reducer.UNION:
        return _union(json_copy(current), delta)
    if reducer is Reducer.MERGE:
        merged = json_copy_object(current)
        merged.update(json_copy_object(delta))
        return merged
    if reducer is Reducer.AND:
        return current and delta
    if reducer is Reducer.OR:
        return current or delta
    # CONCAT: the only reducer left once replace is handled by the caller.
    return current + delta


def reduce_value(reducer: Reducer, field: str, current: Any, delta: Any, *, present: bool) -> Any:
    """Fold one delta into the accumulated value of ``field`` and return the new value.

    ``present`` is False when the field is absent from the accumulator (``current`` is then ignored).
    A return of None means the field is absent afterwards. Raises ReducerError on a type mismatch.
    """
    reducer = parse_reducer(reducer)
    if reducer is Reducer.REPLACE:
        return json_copy(delta)
    accumulated = present and current is not None
    if delta is None:
        # A branch that deleted a reducer field contributes nothing; the accumulated value stands.
        return json_copy(current) if accumulated else None
    if reducer is Reducer.APPEND and not _is_array(delta):
        delta = [delta]
    accepts = _NEEDS[reducer][0]
    if not accepts(delta):
        raise _mismatch(reducer, field, "change", delta)
    if not accumulated:
        if reducer is Reducer.UNION:
            return _union([], delta)
        return json_copy_object(delta) if reducer is Reducer.MERGE else json_copy(delta)
    if not accepts(current):
        raise _mismatch(reducer, field, "accumulated value", current)
    return _fold(reducer, field, current, delta)


def apply_changes(state: Mapping[str, Any], changes: Mapping[str, Any]) -> dict[str, Any]:
    """Return ``state`` with ``changes`` applied plainly: a change replaces the field, None deletes it.

    This is the merge between consecutive steps (no reducers). Neither input is mutated.
    """
    merged = json_copy_object(state)
    for key, value in changes.items():
        if value is None:
            merged.pop(key, None)
        else:
            merged[key] = json_copy(value)
    return merged


def apply_output(
    state: Mapping[str, Any], changes: Mapping[str, Any], appends: Mapping[str, list[Any]]
) -> dict[str, Any]:
    """Return the state after a step: ``changes`` applied plainly, then each field of ``appends``
    extended by its items, in the order ``Flow`` reads them.

    An absent (or null) field starts as an empty array; an empty list of items changes nothing, not even
    an absent field (appending nothing is no change). ``Flow.append`` never records items for a field
    that holds anything but an array, so such a field, or items that are not an array, mean a damaged
    step row: ValueError. Neither input is mutated.

    Unlike ``apply_changes``, the result shares the values of fields the step left alone with ``state``
    (changed fields and extended arrays are new): this is the engine's merge after every step, and a deep
    copy of the whole state there would make a step's cost grow with the state, so that a list growing
    every turn of a loop would make the loop quadratic. The engine never mutates a state in place (nor
    does ``Flow``, which hands out copies); code holding a result must not either.
    """
    merged = dict(state)
    for key, value in changes.items():
        if value is None:
            merged.pop(key, None)
        else:
            merged[key] = json_copy(value)
    for field, items in appends.items():
        if not isinstance(items, list | tuple):
            raise ValueError(
                f"cannot apply the items appended to state field {field!r}: "
                f"they are {_a_kind(items)}, not an array"
            )
        if not items:
            continue
        current = merged.get(field)
        if current is None:
            merged[field] = json_copy(list(items))
        elif isinstance(current, list):
            # A new list: ``current`` may be the input state's own (see apply_changes).
            merged[field] = [*current, *json_copy(list(items))]
        else:
            raise ValueError(
                f"cannot append to state field {field!r}: it holds {_a_kind(current)}, not an array"
            )
    return merged


def materialize_appends(
    changes: Mapping[str, Any], appends: Mapping[str, list[Any]], output: Mapping[str, Any]
) -> dict[str, Any]:
    """Return ``changes`` with every appended field's whole value, taken from ``output``, added.

    ``output`` is the state after the step (``apply_output`` of the same changes and appends). This is the
    delta as a plain ``changes`` view would show it, and what a fan-in folds, where a field's value must
    be whole (a reducer sees values, not "items to append"). A field with no items is left out, as
    ``apply_output`` leaves it alone; one missing from ``output`` means ``output`` is not the matching
    state: ValueError. No input is mutated.
    """
    materialized = json_copy_object(changes)
    for field, items in appends.items():
        if not items:
            continue
        value = output.get(field)
        if value is None:
            # Writing None here would turn the appended field into a deletion.
            raise ValueError(f"state field {field!r} had items appended but is absent from the output state")
        materialized[field] = json_copy(value)
    return materialized


def _a_kind(value: Any) -> str:
    kind = json_kind(value)
    return f"{'an' if kind[0] in 'aeiou' else 'a'} {kind}"


def merge_fan_in(
    base: Mapping[str, Any], deltas: Sequence[Mapping[str, Any]], reducers: Mapping[str, Reducer]
) -> dict[str, Any]:
    """Fold each branch's changes onto the pre-fan-out ``base``, in the order given, field by field.

    The caller passes ``deltas`` in fan-out position order (forEach element order, transition order),
    never completion order, so the outcome does not depend on which branch finished first. A field
    without a reducer is ``replace``: the last branch in that order wins and a None deletes it.
    Raises ReducerError on a type mismatch. No input is mutated.
    """
    merged = json_copy_object(base)
    for delta in deltas:
        for field, value in delta.items():
            reducer = reducers.get(field, Reducer.REPLACE)
            present = field in merged
            result = reduce_value(reducer, field, merged.get(field), value, present=present)
            if result is None:
                merged.pop(field, None)
            else:
                merged[field] = result
    return merged


def apply_with_reducers(
    state: Mapping[str, Any], changes: Mapping[str, Any], reducers: Mapping[str, Reducer]
) -> dict[str, Any]:
    """Fold one delta onto ``state`` with the reducers, as ``continue_thread`` does with additional state."""
    return merge_fan_in(state, [changes], reducers)
