"""What every `dwarf` command shares: the database options and the way a command reports a refusal.

``reporting_command`` registers a function as a command of a Typer app (the root one, or a group such as
``dwarf schedules``) so that the DwarfErrors and CommandErrors it raises end it with exit code 1 and one
line on stderr, never a traceback (see ``reporting``).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Annotated, Any, TypeVar

import typer

from dwarf.cli.parsing import check_dsn
from dwarf.cli.reporting import refuse
from dwarf.cli.session import CommandError
from dwarf.errors import DwarfError

__all__ = ["DsnOption", "JsonOption", "ShardsOption", "reporting_command"]

F = TypeVar("F", bound=Callable[..., Any])

DsnOption = Annotated[
    str,
    typer.Option(
        "--dsn",
        envvar="DWARF_DSN",
        callback=check_dsn,
        help="The database: sqlite:///path or postgresql://...; %d stands for the shard number.",
    ),
]
ShardsOption = Annotated[
    int, typer.Option("--shards", envvar="DWARF_SHARDS", min=1, help="How many shards the DSN's %d spans.")
]
JsonOption = Annotated[bool, typer.Option("--json", help="Print one JSON document instead of text.")]


def reporting_command(group: typer.Typer, name: str | None = None, **settings: Any) -> Callable[[F], F]:
    """Register a command of ``group`` whose DwarfErrors and CommandErrors end it with exit code 1 and one
    line on stderr, never a traceback."""

    def register(function: F) -> F:
        @functools.wraps(function)
        def reporting(*args: Any, **kwargs: Any) -> Any:
            try:
                return function(*args, **kwargs)
            except (DwarfError, CommandError) as error:
                refuse(str(error))

        group.command(name, **settings)(reporting)
        return function

    return register
