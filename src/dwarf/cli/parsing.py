"""Turning command-line text into values: DSNs, ages, JSON arguments, ``--set`` overrides and graph
references. Text that cannot be turned into a value is a usage error (exit code 2) naming the option."""

from __future__ import annotations

import importlib
import json
import re
import sys
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import typer

from dwarf.cli.session import CommandError
from dwarf.errors import BadRequestError
from dwarf.workflow.graph import Graph

__all__ = [
    "DSN_SCHEMES",
    "check_dsn",
    "load_graph_reference",
    "parse_age",
    "parse_json_object",
    "parse_optional_age",
    "parse_overrides",
]

DSN_SCHEMES = frozenset({"sqlite", "sqlite3", "postgres", "postgresql"})
_DSN_FORMS = "use sqlite:///path/to/file.db or postgresql://user@host/database"

_AGE_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "w": 604800.0}
_AGE_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d|w)")


def check_dsn(dsn: str) -> str:
    """``--dsn`` checked for the mistakes that need no database to see; the DSN itself is never echoed,
    since it may hold a password.

    An empty DSN is refused rather than taken as the default: ``--dsn "$UNSET_VARIABLE"`` must not quietly
    open (or create) ``./dwarf.db``.
    """
    if not dsn.strip():
        raise typer.BadParameter(f"is empty: {_DSN_FORMS}", param_hint="--dsn")
    try:
        parts = urlsplit(dsn)
        _ = parts.port  # parses the port, raising ValueError on a non-number
    except ValueError as error:
        raise typer.BadParameter(f"is not a valid URL ({error}): {_DSN_FORMS}", param_hint="--dsn") from None
    if parts.scheme.lower() not in DSN_SCHEMES:
        scheme = repr(parts.scheme) if parts.scheme else "no scheme"
        raise typer.BadParameter(f"{scheme} names no database dwarf knows: {_DSN_FORMS}", param_hint="--dsn")
    if parts.scheme.lower() in {"sqlite", "sqlite3"}:
        from dwarf.store.sqlite import parse_sqlite_dsn

        try:
            parse_sqlite_dsn(dsn)
        except BadRequestError as error:
            raise typer.BadParameter(str(error), param_hint="--dsn") from None
    return dsn


class _UnreadableJSON(ValueError):
    """Text that is JSON in form but more than Python's parser takes: nesting or a number too large."""


def _loads(text: str) -> Any:
    """``json.loads``; JSON beyond the parser's limits raises ``_UnreadableJSON`` instead of RecursionError
    (deep nesting) or a bare ValueError (an integer of more than 4,300 digits)."""
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        raise
    except RecursionError:
        raise _UnreadableJSON("JSON nested too deeply") from None
    except ValueError as error:
        raise _UnreadableJSON(f"JSON too large to read ({error})") from None


def parse_age(text: str, option: str) -> float:
    """Seconds from ``90``, ``1.5``, ``30s``, ``5m``, ``2h``, ``1d``, ``1w`` or a sum like ``1h30m``;
    a usage error naming ``option`` otherwise."""
    cleaned = text.strip().lower()
    try:
        seconds = float(cleaned)
    except ValueError:
        pass
    else:
        if seconds < 0 or seconds != seconds or seconds == float("inf"):
            raise typer.BadParameter(f"{text!r} is not a non-negative number of seconds", param_hint=option)
        return seconds
    position, total = 0, 0.0
    for match in _AGE_PART.finditer(cleaned):
        if match.start() != position:
            break
        total += float(match.group(1)) * _AGE_UNITS[match.group(2)]
        position = match.end()
    if not cleaned or position != len(cleaned):
        raise typer.BadParameter(
            f"{text!r} is not an age: use seconds or a form like 30s, 5m, 2h, 1d, 1h30m", param_hint=option
        )
    return total


def parse_optional_age(text: str | None, option: str) -> float | None:
    """``parse_age`` for an option that may be absent."""
    return None if text is None else parse_age(text, option)


def parse_json_object(text: str, option: str) -> dict[str, Any]:
    """A JSON object given on the command line; anything else is a usage error naming ``option``."""
    try:
        value = _loads(text)
    except json.JSONDecodeError as error:
        raise typer.BadParameter(f"not valid JSON ({error}): {_excerpt(text)}", param_hint=option) from None
    except _UnreadableJSON as error:
        raise typer.BadParameter(f"{error}: {_excerpt(text)}", param_hint=option) from None
    if not isinstance(value, dict):
        raise typer.BadParameter(
            f"must be a JSON object such as '{{\"approved\": true}}', not {_excerpt(text)}", param_hint=option
        )
    return value


def parse_overrides(assignments: list[str]) -> dict[str, Any]:
    """``key=value`` pairs; a value that parses as JSON is taken as JSON (``3``, ``true``, ``[1]``), else
    as the literal string (so ``name=Ada`` needs no quoting). A later key wins over an earlier one."""
    overrides: dict[str, Any] = {}
    for assignment in assignments:
        key, sep, raw = assignment.partition("=")
        if not sep or not key:
            raise typer.BadParameter(f"{assignment!r} is not key=value", param_hint="--set")
        try:
            overrides[key] = _loads(raw)
        except json.JSONDecodeError:
            overrides[key] = raw
        except _UnreadableJSON as error:
            # Meant as JSON, surely: taking it as a string would hide the mistake.
            raise typer.BadParameter(f"{key}: {error}", param_hint="--set") from None
    return overrides


def _excerpt(text: str, limit: int = 60) -> str:
    """``text`` quoted for a message, shortened when long (an argument can be megabytes)."""
    return repr(text) if len(text) <= limit else repr(text[:limit]) + f"... ({len(text)} characters)"


def load_graph_reference(reference: str) -> Graph:
    """The Graph named by ``module:attr`` (``attr`` may be dotted): the attribute itself, or what calling
    it with no arguments returns.

    The working directory is importable, as it is for ``python -m``, so that a project's own modules
    resolve when the command runs from the project root.
    """
    module_name, sep, attr_path = reference.partition(":")
    if not sep or not module_name or not attr_path:
        raise typer.BadParameter(
            f"{reference!r} is not MODULE:ATTR (e.g. myapp.flows:checkout_graph)", param_hint="REFERENCE"
        )
    cwd = str(Path.cwd())
    if cwd not in sys.path:
        sys.path.insert(0, cwd)
    try:
        target: Any = importlib.import_module(module_name)
    except ImportError as error:
        raise CommandError(f"cannot import {module_name!r}: {error}") from error
    for part in attr_path.split("."):
        try:
            target = getattr(target, part)
        except AttributeError:
            raise CommandError(f"{module_name!r} has no attribute {attr_path!r}") from None
    if not isinstance(target, Graph) and callable(target):
        target = target()
    if not isinstance(target, Graph):
        raise CommandError(f"{reference} is a {type(target).__name__}, not a Graph")
    return target
