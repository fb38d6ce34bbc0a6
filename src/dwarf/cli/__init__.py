"""The `dwarf` command-line tool: inspect and steer the flows of a dwarf database from a shell.

``main`` is the console-script entry point (``[project.scripts] dwarf = "dwarf.cli:main"``); ``app`` is
the Typer application, for tests and for embedding the commands in another Typer app.

Typer and rich come with the ``cli`` extra. This module imports without them, so that the console script
(installed with the core package) can answer with the extra to install instead of a traceback.
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Any

from dwarf._extras import missing_extra

if TYPE_CHECKING:
    from dwarf.cli.commands import app

__all__ = ["app", "main"]


def _cli_missing() -> ImportError | None:
    """The hint to give when typer or rich is not installed, else None."""
    try:
        import rich  # noqa: F401
        import typer  # noqa: F401
    except ImportError as error:
        hint = missing_extra("the dwarf command", "cli", error)
        hint.__cause__ = error
        return hint
    return None


def main() -> None:
    """The console-script entry point; without the cli extra it prints the hint and exits 1."""
    missing = _cli_missing()
    if missing is not None:
        print(missing, file=sys.stderr)
        raise SystemExit(1)
    from dwarf.cli.commands import main as run

    run()


def __getattr__(name: str) -> Any:
    # ``app`` is imported on first use, so that importing this module never needs the cli extra.
    if name == "app":
        missing = _cli_missing()
        if missing is not None:
            raise missing
        from dwarf.cli.commands import app

        return app
    raise AttributeError(f"module 'dwarf.cli' has no attribute {name!r}")
