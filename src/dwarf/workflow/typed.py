"""Typed views of a flow's state: ``Flow.state_as(Model)`` and ``Flow.set_from(model)``
(docs/tasks.md#typed-state).

A model is a TypedDict, a dataclass or a pydantic (v2) model. dwarf depends on none of them: pydantic is
used only when the model is one of its classes, which means it is already imported.

Decisions:

- A view holds the fields its model declares; the state's other fields are ignored, not refused,
  because one state serves every task of a flow and a model usually describes what one task needs. A
  pydantic model follows its own ``extra`` setting.
- A field the state does not have, or holds as null (which reads as absent everywhere), is missing: a
  field with a default takes it, one whose type admits None is None, and any other one is an error.
- TypedDicts and dataclasses are checked here, against their resolved annotations, down through nested
  ones: ``str``, ``bool``, ``int`` (an integral float such as ``3.0`` converts), ``float`` (an int
  converts), ``None``, ``Any``/``object``, ``Literal``, unions and optionals, ``list[X]``,
  ``tuple[X, ...]`` and fixed tuples (from JSON arrays), ``dict[str, X]``, ``Sequence``/``Mapping``,
  ``Annotated`` and ``NewType`` (as their underlying type), Enums (built from their value), and nested
  TypedDicts (``Required``/``NotRequired`` honoured) and dataclasses (built from JSON objects). Any other
  annotation (``datetime``, ``set``, a plain class) raises BadRequestError: it is the model that cannot
  be checked, not the state that is wrong. A pydantic model checks itself (``model_validate``), and its
  errors are reported in the same form.
- Every problem is reported at once, each with its path (``lines[2].qty``), in one
  StateValidationError; a dataclass whose ``__post_init__`` raises ValueError or TypeError is reported
  the same way.
- ``model_values`` turns a model back into JSON-ready field values: nested dataclasses become objects,
  Enums their values, tuples arrays; a pydantic model gives ``model_dump(mode="json")``.
"""

from __future__ import annotations

import collections.abc
import dataclasses
import enum
import functools
import sys
import types
import typing
from collections.abc import Mapping
from typing import Any, Final

from dwarf.errors import BadRequestError, StateValidationError
from dwarf.workflow.jsonvalue import json_kind

__all__ = ["model_values", "state_view"]

# How many problems one StateValidationError lists before it says how many more there are.
_REPORTED: Final = 10


class _Invalid:
    """The result of a conversion that recorded a problem."""


_INVALID: Final = _Invalid()

# Annotations that wrap the type a value converts to.
_WRAPPERS: Final = (typing.Annotated, typing.Required, typing.NotRequired)


def state_view(model: Any, state: Mapping[str, Any]) -> Any:
    """``state`` (a fresh, JSON-only dict the caller gives up) as an instance of ``model``."""
    if not isinstance(model, type):
        raise BadRequestError(f"state_as needs a TypedDict, dataclass or pydantic model class, not {model!r}")
    pydantic = _pydantic_model(model)
    if pydantic is not None:
        try:
            return model.model_validate(state)  # type: ignore[attr-defined]
        except pydantic.ValidationError as error:
            raise StateValidationError(
                f"the state does not fit {model.__name__}: {_listed(_pydantic_problems(error))}"
            ) from None
    if not (typing.is_typeddict(model) or dataclasses.is_dataclass(model)):
        raise BadRequestError(
            f"state_as needs a TypedDict, dataclass or pydantic model class, not {model.__name__}"
        )
    problems: list[str] = []
    value = _convert(state, model, "", problems)
    if problems:
        raise StateValidationError(f"the state does not fit {model.__name__}: {_listed(problems)}")
    return value


def _listed(problems: list[str]) -> str:
    listed = "; ".join(problems[:_REPORTED])
    more = len(problems) - _REPORTED
    return f"{listed}; and {more} more" if more > 0 else listed


def _pydantic_problems(error: Any) -> list[str]:
    """pydantic's errors in the form of ours: the field's path and what is wrong with it."""
    problems = []
    for item in error.errors(include_url=False):
        path = "".join(
            f"[{part}]" if isinstance(part, int) else (f".{part}" if index else str(part))
            for index, part in enumerate(item.get("loc", ()))
        )
        problems.append(f"{_label(path)}: {item.get('msg', 'invalid')}")
    return problems or [str(error)]


def model_values(model: Any) -> dict[str, Any]:
    """The fields of a dataclass or pydantic instance, or the items of a mapping, as JSON-ready values."""
    if isinstance(model, type):
        raise BadRequestError(f"set_from needs a model instance, not the class {model.__name__}")
    if _pydantic_model(type(model)) is not None:
        dumped: dict[str, Any] = model.model_dump(mode="json")
        return dumped
    if dataclasses.is_dataclass(model):
        return {field.name: _plain(getattr(model, field.name)) for field in dataclasses.fields(model)}
    if isinstance(model, Mapping):
        return {key: _plain(value) for key, value in model.items()}
    raise BadRequestError(
        f"set_from needs a dataclass or pydantic model instance or a mapping, not a {type(model).__name__}"
    )


def _pydantic_model(model: type) -> Any:
    """The pydantic module when ``model`` is a pydantic model class, else None (pydantic stays unimported)."""
    pydantic = sys.modules.get("pydantic")
    base = getattr(pydantic, "BaseModel", None)
    if isinstance(base, type) and issubclass(model, base) and hasattr(model, "model_validate"):
        return pydantic
    return None


def _plain(value: Any) -> Any:
    """``value`` with dataclasses as dicts, Enums as their values and tuples as lists, recursively."""
    if isinstance(value, enum.Enum):
        return _plain(value.value)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {field.name: _plain(getattr(value, field.name)) for field in dataclasses.fields(value)}
    if isinstance(value, dict):
        return {key: _plain(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(item) for item in value]
    return value


@functools.lru_cache(maxsize=256)
def _hints(model: type) -> dict[str, Any]:
    try:
        # With extras: Annotated is looked through by _convert, and a TypedDict's Required/NotRequired
        # say which keys it needs (its __required_keys__ miss them in string annotations).
        return typing.get_type_hints(model, include_extras=True)
    except Exception as error:
        raise BadRequestError(f"cannot resolve the annotations of {model.__name__}: {error}") from None


def _label(where: str) -> str:
    return f"field {where!r}" if where else "the state"


def _admits_none(hint: Any) -> bool:
    if hint is Any or hint is object or hint is None or hint is type(None):
        return True
    origin = typing.get_origin(hint)
    if origin in _WRAPPERS:
        return _admits_none(typing.get_args(hint)[0])
    if origin is typing.Union or origin is types.UnionType:
        return any(_admits_none(arm) for arm in typing.get_args(hint))
    return False


def _join(where: str, key: str) -> str:
    return f"{where}.{key}" if where else key


def _convert(value: Any, hint: Any, where: str, problems: list[str]) -> Any:
    """``value`` converted to ``hint``; on a mismatch a problem is recorded and _INVALID returned."""
    if hint is Any or hint is object:
        return value
    if hint is None or hint is type(None):
        return value if value is None else _mismatch(value, "null", where, problems)
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin in _WRAPPERS:
        return _convert(value, args[0], where, problems)
    if origin is typing.Union or origin is types.UnionType:
        return _convert_union(value, args, where, problems)
    if origin is typing.Literal:
        if any(type(value) is type(option) and value == option for option in args):
            return value
        options = ", ".join(repr(option) for option in args)
        problems.append(f"{_label(where)} must be one of {options}, not {value!r}")
        return _INVALID
    if hint is bool:
        return value if isinstance(value, bool) else _mismatch(value, "a bool", where, problems)
    if hint is str:
        return value if isinstance(value, str) else _mismatch(value, "a string", where, problems)
    if hint is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        return _mismatch(value, "an integer", where, problems)
    if hint is float:
        if isinstance(value, int | float) and not isinstance(value, bool):
            try:
                return float(value)
            except OverflowError:
                pass
        return _mismatch(value, "a number", where, problems)
    container = origin if origin is not None else hint
    if container in (list, collections.abc.Sequence, collections.abc.MutableSequence):
        return _convert_list(value, args[0] if args else Any, where, problems)
    if container is tuple:
        return _convert_tuple(value, args, where, problems)
    if container in (dict, collections.abc.Mapping, collections.abc.MutableMapping):
        return _convert_dict(value, args[1] if len(args) == 2 else Any, where, problems)
    if isinstance(hint, type):
        if issubclass(hint, enum.Enum):
            try:
                return hint(value)
            except ValueError:
                options = ", ".join(repr(member.value) for member in hint)
                problems.append(f"{_label(where)} must be one of {options}, not {value!r}")
                return _INVALID
        if typing.is_typeddict(hint):
            return _convert_typeddict(value, hint, where, problems)
        if dataclasses.is_dataclass(hint):
            return _convert_dataclass(value, hint, where, problems)
    supertype = getattr(hint, "__supertype__", None)
    if supertype is not None:  # a NewType
        return _convert(value, supertype, where, problems)
    raise BadRequestError(
        f"state_as cannot check {_label(where)}: its type {hint!r} is not one a JSON value converts to "
        "(use str, int, float, bool, list, dict, a Literal, an Enum, a TypedDict or a dataclass; or a "
        "pydantic model)"
    )


def _mismatch(value: Any, expected: str, where: str, problems: list[str]) -> _Invalid:
    kind = json_kind(value)
    problems.append(f"{_label(where)} must be {expected}, not {'an' if kind[0] in 'aeiou' else 'a'} {kind}")
    return _INVALID


def _convert_union(value: Any, arms: tuple[Any, ...], where: str, problems: list[str]) -> Any:
    first: list[str] = []
    for arm in arms:
        attempt: list[str] = []
        converted = _convert(value, arm, where, attempt)
        if not attempt:
            return converted
        first = first or attempt
    problems.extend(first)
    return _INVALID


def _convert_list(value: Any, item: Any, where: str, problems: list[str]) -> Any:
    if not isinstance(value, list):
        return _mismatch(value, "an array", where, problems)
    before = len(problems)
    converted = [
        _convert(element, item, f"{where}[{index}]", problems) for index, element in enumerate(value)
    ]
    return converted if len(problems) == before else _INVALID


def _convert_tuple(value: Any, args: tuple[Any, ...], where: str, problems: list[str]) -> Any:
    if not isinstance(value, list):
        return _mismatch(value, "an array", where, problems)
    if len(args) == 2 and args[1] is Ellipsis:
        items: list[Any] = [args[0]] * len(value)
    elif not args:
        items = [Any] * len(value)
    else:
        items = list(args)
        if len(items) != len(value):
            problems.append(f"{_label(where)} must have {len(items)} elements, not {len(value)}")
            return _INVALID
    before = len(problems)
    converted = tuple(
        _convert(element, hint, f"{where}[{index}]", problems)
        for index, (element, hint) in enumerate(zip(value, items, strict=True))
    )
    return converted if len(problems) == before else _INVALID


def _convert_dict(value: Any, item: Any, where: str, problems: list[str]) -> Any:
    if not isinstance(value, dict):
        return _mismatch(value, "an object", where, problems)
    before = len(problems)
    converted = {key: _convert(element, item, _join(where, key), problems) for key, element in value.items()}
    return converted if len(problems) == before else _INVALID


def _convert_typeddict(value: Any, model: type, where: str, problems: list[str]) -> Any:
    if not isinstance(value, dict):
        return _mismatch(value, "an object", where, problems)
    required_keys: frozenset[str] = getattr(model, "__required_keys__", frozenset())
    before = len(problems)
    converted: dict[str, Any] = {}
    for key, hint in _hints(model).items():
        path = _join(where, key)
        field = value.get(key)
        wrapper = typing.get_origin(hint)
        required = wrapper is typing.Required or (key in required_keys and wrapper is not typing.NotRequired)
        if field is not None:
            converted[key] = _convert(field, hint, path, problems)
        elif required:
            if _admits_none(hint):
                converted[key] = None
            else:
                problems.append(f"{_label(path)} is missing")
    return converted if len(problems) == before else _INVALID


def _convert_dataclass(value: Any, model: type, where: str, problems: list[str]) -> Any:
    if not isinstance(value, dict):
        return _mismatch(value, "an object", where, problems)
    hints = _hints(model)
    before = len(problems)
    arguments: dict[str, Any] = {}
    for field in dataclasses.fields(model):
        if not field.init:
            continue
        hint = hints.get(field.name, Any)
        path = _join(where, field.name)
        item = value.get(field.name)
        if item is not None:
            arguments[field.name] = _convert(item, hint, path, problems)
        elif field.default is not dataclasses.MISSING or field.default_factory is not dataclasses.MISSING:
            continue
        elif _admits_none(hint):
            arguments[field.name] = None
        else:
            problems.append(f"{_label(path)} is missing")
    if len(problems) != before:
        return _INVALID
    try:
        return model(**arguments)
    except (ValueError, TypeError) as error:
        problems.append(f"{_label(where)}: {error}" if where else str(error))
        return _INVALID
