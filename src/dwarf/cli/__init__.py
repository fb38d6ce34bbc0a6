"""The `dwarf` command-line tool: inspect and steer the flows of a dwarf database from a shell.

``main`` is the console-script entry point (``[project.scripts] dwarf = "dwarf.cli:main"``); ``app`` is
the Typer application, for tests and for embedding the commands in another Typer app.
"""

from __future__ import annotations

from dwarf.cli.commands import app, main

__all__ = ["app", "main"]
