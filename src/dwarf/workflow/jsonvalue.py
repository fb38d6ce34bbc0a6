"""Strict checks, copies and comparisons of JSON values (the only kind of value state may hold).

State, changes, interrupt payloads, resume data, subgraph input and baggage are all persisted as JSON, so
the engine refuses anything that would not survive a round trip through the database: ``check_json``
says why a value is unusable, ``json_copy`` takes a deep copy with no aliasing, ``canonical_json`` gives
the text by which two values are "JSON-equal" (the union reducer deduplicates with it), and ``json_kind``
names a value's JSON type for error messages.

Walks over values are iterative: SPEC §10 imposes no nesting limit, and a recursive walk would hit
Python's recursion limit on a deeply nested value.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping
from typing import Any

from dwarf.errors import BadRequestError

__all__ = [
    "canonical_json",
    "check_json",
    "checked_json_object",
    "json_copy",
    "json_copy_object",
    "json_kind",
]

# A linked list of (key, parent) pairs: O(1) per child while walking, turned into text only for an error.
_Path = tuple[str | int, "_Path"] | None


def _path_text(path: _Path) -> str:
    parts: list[str] = []
    while path is not None:
        key, path = path
        parts.append(f"[{key!r}]")
    return "".join(reversed(parts))


def check_json(value: Any, what: str) -> None:
    """Raise BadRequestError naming ``what`` unless ``value`` is strictly JSON-serializable.

    Strict means what ``json.dumps(value, allow_nan=False)`` accepts (dicts, lists, tuples, strings,
    ints, floats, bools, None, and subclasses of these), with two more rules: object keys must be strings
    (``json.dumps`` would silently turn ``1`` into ``"1"``, so a value would not read back as written)
    and a container may not contain itself.
    """
    # Containers on the current path, by id: a container met again while still open is a cycle. The same
    # list referenced twice side by side is fine (json.dumps writes it twice).
    open_ids: set[int] = set()
    # Entries are (value, path, closing); a container is pushed again with closing=True below its
    # children, so that popping it marks the end of its subtree.
    stack: list[tuple[Any, _Path, bool]] = [(value, None, False)]
    while stack:
        item, path, closing = stack.pop()
        if closing:
            open_ids.discard(id(item))
            continue
        if item is None or isinstance(item, str | bool | int):
            continue
        if isinstance(item, float):
            if not math.isfinite(item):
                raise BadRequestError(f"{what} is not JSON-serializable: {item!r} at {_where(path)}")
            continue
        if isinstance(item, dict | list | tuple):
            if id(item) in open_ids:
                raise BadRequestError(
                    f"{what} is not JSON-serializable: it contains itself at {_where(path)}"
                )
            open_ids.add(id(item))
            stack.append((item, path, True))
            if isinstance(item, dict):
                for key, child in item.items():
                    if not isinstance(key, str):
                        raise BadRequestError(
                            f"{what} is not JSON-serializable: object key {key!r} at {_where(path)} "
                            f"is a {type(key).__name__}, not a string"
                        )
                    stack.append((child, (key, path), False))
            else:
                for index, child in enumerate(item):
                    stack.append((child, (index, path), False))
            continue
        raise BadRequestError(
            f"{what} is not JSON-serializable: a {type(item).__name__} at {_where(path)} has no JSON form"
        )


def _where(path: _Path) -> str:
    return _path_text(path) or "the top level"


_PLAIN_SCALARS = (str, int, float, bool, type(None))


def json_copy(value: Any) -> Any:
    """Return a deep copy of a JSON value made of plain dicts, lists, strs, ints, floats, bools and None.

    Tuples become lists and subclasses (``StrEnum`` members, say) become their base type, exactly as a
    trip through the database would leave them. The value must already pass ``check_json``.
    """
    if type(value) in _PLAIN_SCALARS:
        return value
    try:
        # The C encoder and decoder are much faster than any copy written in Python.
        return json.loads(json.dumps(value, allow_nan=False))
    except RecursionError:
        # Both of them recurse on the C stack under Python's recursion limit; a nesting deeper than that
        # is legal JSON, so fall back to the iterative rebuild.
        return _rebuild(value, _plain_scalar)


def json_copy_object(value: Mapping[str, Any]) -> dict[str, Any]:
    """``json_copy`` of a JSON object (any mapping with string keys), typed as the dict it returns."""
    copied: dict[str, Any] = json_copy(dict(value))
    return copied


def _plain_scalar(value: Any) -> Any:
    # bool cannot be subclassed, so a bool is caught by the exact-type test and never reaches int().
    if type(value) in _PLAIN_SCALARS:
        return value
    if isinstance(value, str):
        return str.__str__(value)
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        return float(value)
    raise TypeError(f"a {type(value).__name__} is not a JSON value")


def _rebuild(value: Any, leaf: Callable[[Any], Any]) -> Any:
    """Copy the containers of ``value`` into plain dicts and lists without recursion, mapping scalars by
    ``leaf``. Each new container is linked into its parent first and filled when popped, which keeps the
    order of every list and object."""
    if not isinstance(value, dict | list | tuple):
        return leaf(value)
    root: dict[str, Any] | list[Any] = {} if isinstance(value, dict) else []
    stack: list[tuple[Any, dict[str, Any] | list[Any]]] = [(value, root)]
    while stack:
        source, target = stack.pop()
        pairs = source.items() if isinstance(source, dict) else enumerate(source)
        for key, child in pairs:
            copied: Any
            if isinstance(child, dict):
                copied = {}
                stack.append((child, copied))
            elif isinstance(child, list | tuple):
                copied = []
                stack.append((child, copied))
            else:
                copied = leaf(child)
            if isinstance(target, dict):
                target[str.__str__(key)] = copied
            else:
                target.append(copied)
    return root


def _number_as_written(value: Any) -> Any:
    # JSON has one number type: 1 and 1.0 are the same number and must compare equal. bool is excluded
    # (True is not 1 in JSON) and only integral finite floats are folded into ints.
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return _plain_scalar(value)


def canonical_json(value: Any) -> str:
    """Return a text that is the same for two values exactly when they are equal as JSON.

    Object keys are sorted, integral floats are written as ints (``1.0`` equals ``1``), and ``True`` stays
    distinct from ``1`` even though Python compares them equal.
    """
    normalized = _rebuild(value, _number_as_written)
    return json.dumps(normalized, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def json_kind(value: Any) -> str:
    """Name the JSON type of ``value`` (null, bool, number, string, array, object) for error messages;
    a value with no JSON type is named by its Python type."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list | tuple):
        return "array"
    if isinstance(value, dict):
        return "object"
    return type(value).__name__


def checked_json_object(value: Mapping[str, Any] | None, what: str) -> dict[str, Any]:
    """A checked deep copy of a JSON object argument; None is the empty object.

    BadRequestError, naming ``what``, for anything but a mapping that is strictly JSON.
    """
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise BadRequestError(f"{what} must be a JSON object (a mapping), not a {type(value).__name__}")
    as_dict = dict(value)
    check_json(as_dict, what)
    return json_copy_object(as_dict)
