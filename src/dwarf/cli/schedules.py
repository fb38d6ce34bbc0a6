"""`dwarf schedules`: list the schedules of a dwarf database, show one, pause, resume or delete one.

``dwarf schedules`` alone lists them; ``show``, ``pause``, ``resume`` and ``delete`` take a schedule's
name. Like every command they open an operations-only engine, which ticks nothing: the application's
engines with workers start the flows, and hear of a pause or resume made here at their claimers' next
idle poll, or within ``SchedulerTuning.schedule_poll`` (5 seconds by default) while they are busy.
Creating a schedule is the application's job (``engine.schedule``), since only its code knows the
workflows.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

import typer

from dwarf.cli.options import DsnOption, JsonOption, ShardsOption, reporting_command
from dwarf.cli.render import console, echo_json, iso, schedule_view, schedules_table
from dwarf.cli.reporting import refuse
from dwarf.cli.session import DEFAULT_DSN, CommandError, Target, with_engine
from dwarf.errors import DwarfError

if TYPE_CHECKING:
    from dwarf.engine import Engine
    from dwarf.workflow.schedules import Schedule

__all__ = ["schedules_app"]

schedules_app = typer.Typer(
    name="schedules",
    invoke_without_command=True,
    no_args_is_help=False,
    help="List the schedules (`dwarf schedules`), or show, pause, resume or delete one by name.",
)

NameArgument = Annotated[str, typer.Argument(metavar="NAME", help="The schedule's name.")]

_GROUP_OPTIONS = ("as_json", "dsn", "shards")


@schedules_app.callback()
def list_schedules(
    ctx: typer.Context,
    as_json: JsonOption = False,
    dsn: DsnOption = DEFAULT_DSN,
    shards: ShardsOption = 1,
) -> None:
    """List the schedules by name: timing, next and last tick, the last flow they started."""
    if ctx.invoked_subcommand is not None:
        given = [
            name
            for name in _GROUP_OPTIONS
            if ctx.get_parameter_source(name) is not None
            and ctx.get_parameter_source(name).name == "COMMANDLINE"  # type: ignore[union-attr]
        ]
        if given:
            # `dwarf schedules --dsn X pause NAME` would pause NAME in the default database otherwise.
            command = ctx.invoked_subcommand
            raise typer.BadParameter(
                f"put the options after the subcommand: dwarf schedules {command} NAME --dsn ..."
            )
        return
    try:
        found = with_engine(Target(dsn, shards), lambda engine: engine.list_schedules())
    except (DwarfError, CommandError) as error:
        refuse(str(error))
    if as_json:
        echo_json({"schedules": found})
        return
    out = console()
    out.print(schedules_table(found) if found else "no schedules")


@reporting_command(schedules_app, "show")
def show_schedule(
    name: NameArgument, as_json: JsonOption = False, dsn: DsnOption = DEFAULT_DSN, shards: ShardsOption = 1
) -> None:
    """Show one schedule: its timing, state, flow options, ticks and last flow."""
    found = with_engine(Target(dsn, shards), lambda engine: engine.get_schedule(name))
    if as_json:
        echo_json(found)
        return
    console().print(schedule_view(found))


@reporting_command(schedules_app, "pause")
def pause_schedule(name: NameArgument, dsn: DsnOption = DEFAULT_DSN, shards: ShardsOption = 1) -> None:
    """Stop a schedule's ticks until it is resumed; ticks that fall meanwhile never run."""
    with_engine(Target(dsn, shards), lambda engine: engine.pause_schedule(name))
    typer.echo(f"paused {name}")


@reporting_command(schedules_app, "resume")
def resume_schedule(name: NameArgument, dsn: DsnOption = DEFAULT_DSN, shards: ShardsOption = 1) -> None:
    """Let a paused schedule tick again, from its first tick after now."""

    async def resume(engine: Engine) -> Schedule:
        await engine.resume_schedule(name)
        return await engine.get_schedule(name)

    resumed = with_engine(Target(dsn, shards), resume)
    typer.echo(f"resumed {name}" + (f": next tick {iso(resumed.next_tick)}" if resumed.next_tick else ""))


@reporting_command(schedules_app, "delete")
def delete_schedule(name: NameArgument, dsn: DsnOption = DEFAULT_DSN, shards: ShardsOption = 1) -> None:
    """Remove a schedule; the flows it started stay."""
    with_engine(Target(dsn, shards), lambda engine: engine.delete_schedule(name))
    typer.echo(f"deleted {name}")
