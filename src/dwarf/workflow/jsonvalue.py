"""Strict checks, copies and comparisons of JSON values (the only kind of value state may hold).

State, changes, interrupt payloads, resume data, subgraph input and baggage are all persisted as JSON, so
the engine refuses anything that would not survive a round trip through the database: ``check_json``
says why a value is unusable, ``json_copy`` takes a deep copy with no aliasing, ``canonical_json`` gives
the text by which two values are "JSON-equal" (the union reducer deduplicates with it), and ``json_kind``
names a value's JSON type for error messages.

What "survives the database" means is one rule for both stores, checked where a value enters (``set``,
create, resume, fork, continue_thread) so that a task can never produce a step that cannot be committed:
strings (and object keys) must encode as UTF-8 (no lone surrogates), nesting is at most
``MAX_JSON_DEPTH`` levels (the JSON encoder and decoder recurse on the C stack; past about a thousand
levels they fail, and how deep they get depends on the caller's own stack), and an int must be writable as
decimal text (Python refuses ints of more than ``sys.get_int_max_str_digits()`` digits). Names and texts
stored in plain columns (node names, URLs, fairness keys, reasons) follow ``check_text``, which also
refuses NUL: PostgreSQL text cannot hold it (NUL inside JSON strings is fine: it is written escaped).

Walks over values are iterative, so checking a deep value never hits Python's recursion limit.
"""

from __future__ import annotations

import json
import math
import sys
from collections.abc import Callable, Mapping
from typing import Any

from dwarf.errors import BadRequestError

__all__ = [
    "MAX_JSON_DEPTH",
    "canonical_json",
    "check_json",
    "check_text",
    "checked_json_object",
    "json_copy",
    "json_copy_object",
    "json_kind",
    "storable_text",
]

MAX_JSON_DEPTH = 512
"""The deepest nesting of arrays and objects a stored value may have (a scalar at the top is depth 0)."""


def _text_problem(text: str, *, allow_nul: bool) -> str | None:
    """Why ``text`` cannot be stored, or None. ``isascii`` is O(1) in CPython: plain text costs nothing."""
    if text.isascii():
        if not allow_nul and "\x00" in text:
            return "contains a NUL character"
        return None
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as error:
        return f"contains a lone surrogate (\\u{ord(text[error.start]):04x}) that has no UTF-8 form"
    if not allow_nul and "\x00" in text:
        return "contains a NUL character"
    return None


def check_text(text: str, what: str, error: type[BadRequestError] = BadRequestError) -> str:
    """Return ``text`` unchanged if a plain text column of both stores can hold it, else raise ``error``
    naming ``what``: no NUL (PostgreSQL refuses it), no lone surrogate (not UTF-8)."""
    problem = _text_problem(text, allow_nul=False)
    if problem is not None:
        raise error(f"{what} {problem}")
    return text


def storable_text(text: str) -> str:
    """``text`` made storable in a plain text column: NUL and lone surrogates written as escapes.

    For texts the engine records but nobody chose to be valid, such as an exception's message.
    """
    if _text_problem(text, allow_nul=False) is None:
        return text
    escaped = text.encode("utf-8", "backslashreplace").decode("utf-8")
    return escaped.replace("\x00", "\\x00")


def _int_too_long(value: int) -> bool:
    # Cheap bound first: 3.33 bits per decimal digit, so only ints near the limit are measured exactly.
    limit = sys.get_int_max_str_digits()
    if limit == 0 or value.bit_length() < limit * 3:
        return False
    return value.bit_length() >= limit * 4 or abs(value) >= 10**limit


# A linked list of (key, parent) pairs: O(1) per child while walking, turned into text only for an error.
_Path = tuple[str | int, "_Path"] | None


_PATH_PARTS_SHOWN = 12


def _path_text(path: _Path) -> str:
    parts: list[str] = []
    while path is not None:
        key, path = path
        parts.append(f"[{key!r}]")
    if len(parts) > _PATH_PARTS_SHOWN:
        # A path hundreds of levels deep would bury the message: keep both ends.
        hidden = len(parts) - _PATH_PARTS_SHOWN
        head, tail = parts[: _PATH_PARTS_SHOWN // 2], parts[-_PATH_PARTS_SHOWN // 2 :]
        parts = [*head, f"...({hidden} more)...", *tail]
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
    # Entries are (value, path, depth, closing); a container is pushed again with closing=True below its
    # children, so that popping it marks the end of its subtree.
    stack: list[tuple[Any, _Path, int, bool]] = [(value, None, 0, False)]
    while stack:
        item, path, depth, closing = stack.pop()
        if closing:
            open_ids.discard(id(item))
            continue
        if item is None or isinstance(item, bool):
            continue
        if isinstance(item, str):
            problem = _text_problem(item, allow_nul=True)
            if problem is not None:
                raise BadRequestError(f"{what} cannot be stored: the string at {_where(path)} {problem}")
            continue
        if isinstance(item, int):
            if _int_too_long(item):
                raise BadRequestError(
                    f"{what} cannot be stored: the int at {_where(path)} has more than "
                    f"{sys.get_int_max_str_digits()} digits"
                )
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
            if depth >= MAX_JSON_DEPTH:
                raise BadRequestError(
                    f"{what} cannot be stored: it nests deeper than {MAX_JSON_DEPTH} levels at {_where(path)}"
                )
            open_ids.add(id(item))
            stack.append((item, path, depth, True))
            if isinstance(item, dict):
                for key, child in item.items():
                    if not isinstance(key, str):
                        raise BadRequestError(
                            f"{what} is not JSON-serializable: object key {key!r} at {_where(path)} "
                            f"is a {type(key).__name__}, not a string"
                        )
                    problem = _text_problem(key, allow_nul=True)
                    if problem is not None:
                        raise BadRequestError(
                            f"{what} cannot be stored: an object key at {_where(path)} {problem}"
                        )
                    stack.append((child, (key, path), depth + 1, False))
            else:
                for index, child in enumerate(item):
                    stack.append((child, (index, path), depth + 1, False))
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
