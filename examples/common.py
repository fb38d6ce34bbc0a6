"""What every example shares: choosing its database and printing what a flow did.

Each example takes ``--dsn`` (or the ``DWARF_DSN`` environment variable, which the ``dwarf`` command
reads too) and otherwise uses ``dwarf.db`` in the working directory, the engine's embedded default.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Iterable, Mapping
from typing import Any

from dwarf import Engine, FlowOutcome

DEFAULT_DSN = "sqlite:///dwarf.db"


def add_dsn_option(parser: argparse.ArgumentParser, *, subcommand: bool = False) -> None:
    """Give a program (or one of its subcommands) the ``--dsn`` option every example has."""
    parser.add_argument(
        "--dsn",
        # A subcommand's own default would overwrite a --dsn given before the subcommand's name.
        default=argparse.SUPPRESS if subcommand else "",
        help=f"database URL (default: $DWARF_DSN, else {DEFAULT_DSN}: a file in the working directory)",
    )


def chosen_dsn(explicit: str = "") -> str:
    """The database to use: the ``--dsn`` value, else ``$DWARF_DSN``, else ``./dwarf.db``."""
    return explicit or os.environ.get("DWARF_DSN", "") or DEFAULT_DSN


def print_outcome(title: str, key: str, outcome: FlowOutcome, fields: Iterable[str] | None = None) -> None:
    """Print a flow's status and the state fields worth seeing (all of them when ``fields`` is None)."""
    print(f"{title}: flow {key} is {outcome.status}")
    if outcome.error:
        print(f"  error: {outcome.error}")
    if outcome.interrupt_payload:
        print(f"  waiting for: {outcome.interrupt_payload}")
    state: Mapping[str, Any] = outcome.state
    for name in fields if fields is not None else sorted(state):
        if name in state:
            print(f"  {name}: {state[name]}")


async def print_history(engine: Engine, key: str) -> None:
    """Print the steps a flow ran as a Mermaid flowchart (paste it into any Mermaid viewer)."""
    print("\n```mermaid")
    print((await engine.history_mermaid(key)).rstrip())
    print("```\n")
