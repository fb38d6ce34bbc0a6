"""The `dwarf` commands: inspect and steer the flows in a dwarf database from a shell.

Every command that touches the database opens an operations-only engine (see ``session``) on ``--dsn``
(env ``DWARF_DSN``) with ``--shards`` (env ``DWARF_SHARDS``), except ``worker``, which serves the
application's host with workers (see ``worker``). Exit codes: 0 success; 1 when the engine
refuses (not found, conflict, bad request) or the database cannot be opened; 2 for usage errors. Either
way stderr gets exactly one line and never a traceback (see ``reporting``).
"""

from __future__ import annotations

import asyncio
import dataclasses
import enum
import importlib
import sys
from collections.abc import Callable
from importlib.metadata import PackageNotFoundError, version
from typing import TYPE_CHECKING, Annotated, Any, NoReturn, TypeVar

import typer
from rich.progress import Progress, SpinnerColumn, TextColumn

from dwarf.cli import worker
from dwarf.cli.options import DsnOption, JsonOption, ShardsOption, reporting_command
from dwarf.cli.parsing import (
    load_graph_reference,
    parse_age,
    parse_json_object,
    parse_optional_age,
    parse_overrides,
)
from dwarf.cli.render import (
    console,
    echo_json,
    flows_table,
    history_tree,
    limits_table,
    outcome_view,
    shards_table,
    step_view,
    waits_json,
)
from dwarf.cli.reporting import ReportingGroup, refuse
from dwarf.cli.schedules import schedules_app
from dwarf.cli.session import DEFAULT_DSN, CommandError, Target, missing_sqlite_files, redact, with_engine
from dwarf.workflow.progress import FlowWait
from dwarf.workflow.records import FlowOutcome, FlowSummary, Query

if TYPE_CHECKING:
    from dwarf.engine import Engine

__all__ = ["DASHBOARD_MODULE", "app", "main"]

DASHBOARD_MODULE = "dwarf.dashboard"
"""Where `dwarf serve` finds ``serve(dsn, num_shards, host, port)``; imported only when the command runs."""

F = TypeVar("F", bound=Callable[..., Any])

app = typer.Typer(
    cls=ReportingGroup,
    name="dwarf",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode="markdown",
)


app.add_typer(schedules_app)


def _fail(message: str) -> NoReturn:
    refuse(message)


def command(name: str | None = None, **settings: Any) -> Callable[[F], F]:
    """Register a command of `dwarf` (see ``options.reporting_command``)."""
    return reporting_command(app, name, **settings)


def _version(show: bool) -> None:
    if show:
        try:
            typer.echo(f"dwarf {version('dwarf-workflow')}")
        except PackageNotFoundError:
            typer.echo("dwarf (not installed)")
        raise typer.Exit()


@app.callback()
def _root(
    show_version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version and exit.")
    ] = False,
    debug: Annotated[
        bool,
        typer.Option("--debug", help="Show the traceback of an unexpected error (as DWARF_DEBUG=1 does)."),
    ] = False,
) -> None:
    """Inspect and steer the flows of a dwarf database: list, show, history, resume, signal, cancel, fork,
    purge; list, pause and resume schedules with `dwarf schedules`; run your application's tasks with
    `dwarf worker`.

    Each command takes --dsn (or DWARF_DSN) naming the database; the default is the SQLite file dwarf.db
    in the working directory. Run `dwarf demo` first for some flows to look at.
    """


# --- options shared by several commands ---


class FlowStatus(enum.StrEnum):
    """The statuses ``--status`` offers: those a flow can have (dwarf.workflow.status.FLOW_STATUSES);
    created and pending are statuses of steps only."""

    RUNNING = "running"
    INTERRUPTED = "interrupted"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"


StatusFilter = Annotated[FlowStatus | None, typer.Option("--status", help="Only flows with this status.")]
UrlFilter = Annotated[str, typer.Option("--workflow-url", help="Only flows of this workflow URL.")]
NameFilter = Annotated[str, typer.Option("--workflow-name", help="Only flows of graphs with this name.")]
ThreadFilter = Annotated[str, typer.Option("--thread-key", help="Only flows of this thread.")]
TaskFilter = Annotated[str, typer.Option("--task-name", help="Only flows whose latest step runs this task.")]
FairnessFilter = Annotated[str, typer.Option("--fairness-key", help="Only flows with this fairness key.")]
_BIGINT_MAX = 2**63 - 1
"""The largest number a filter can compare with (the databases' 64-bit integers)."""

PriorityFilter = Annotated[
    int,
    typer.Option(
        "--priority", min=0, max=_BIGINT_MAX, show_default=False, help="Only flows of this priority."
    ),
]
OlderFilter = Annotated[
    str | None,
    typer.Option("--older-than", help="Only flows created longer ago: seconds or 30s, 5m, 2h, 1d."),
]
NewerFilter = Annotated[
    str | None, typer.Option("--newer-than", help="Only flows created more recently: seconds or 5m, 2h, 1d.")
]
SubgraphFilter = Annotated[
    bool, typer.Option("--include-subgraphs", help="Include child flows (left out by default).")
]
ShardFilter = Annotated[
    int, typer.Option("--shard", min=0, show_default=False, help="Only flows on this shard (1..n).")
]
SearchFilter = Annotated[
    str,
    typer.Option(
        "--search", help="A literal substring of the workflow, fairness key, error or cancel reason."
    ),
]


def _query(
    status: FlowStatus | None,
    workflow_url: str,
    workflow_name: str,
    thread_key: str,
    task_name: str,
    fairness_key: str,
    priority: int,
    older_than: str | None,
    newer_than: str | None,
    include_subgraphs: bool,
    shard: int,
    search: str,
) -> Query:
    return Query(
        status=status.value if status is not None else "",
        workflow_url=workflow_url,
        workflow_name=workflow_name,
        thread_key=thread_key,
        task_name=task_name,
        fairness_key=fairness_key,
        priority=priority,
        older_than=parse_optional_age(older_than, "--older-than"),
        newer_than=parse_optional_age(newer_than, "--newer-than"),
        include_subgraphs=include_subgraphs,
        shard=shard,
        search=search,
    )


# --- reading ---


@command("list")
def list_flows(
    status: StatusFilter = None,
    workflow_url: UrlFilter = "",
    workflow_name: NameFilter = "",
    thread_key: ThreadFilter = "",
    task_name: TaskFilter = "",
    fairness_key: FairnessFilter = "",
    priority: PriorityFilter = 0,
    older_than: OlderFilter = None,
    newer_than: NewerFilter = None,
    include_subgraphs: SubgraphFilter = False,
    shard: ShardFilter = 0,
    search: SearchFilter = "",
    limit: Annotated[
        int,
        typer.Option(
            "--limit", min=0, show_default=False, help="Flows per page (default 100, at most 1000)."
        ),
    ] = 0,
    cursor: Annotated[
        str, typer.Option("--cursor", help="Continue after a page: the cursor it printed.")
    ] = "",
    all_pages: Annotated[bool, typer.Option("--all", help="Follow the cursor to the last page.")] = False,
    why: Annotated[
        bool,
        typer.Option("--why", help="Say why each running or interrupted flow listed is not moving."),
    ] = False,
    as_json: JsonOption = False,
    dsn: DsnOption = DEFAULT_DSN,
    shards: ShardsOption = 1,
) -> None:
    """List flows, newest first, filtered by any of the options."""
    query = _query(
        status, workflow_url, workflow_name, thread_key, task_name, fairness_key, priority,
        older_than, newer_than, include_subgraphs, shard, search,
    )  # fmt: skip
    query.limit = limit
    query.cursor = cursor

    async def fetch(engine: Engine) -> tuple[list[FlowSummary], str, dict[str, list[FlowWait]]]:
        flows, next_cursor = await engine.list(query)
        while all_pages and next_cursor:
            page, next_cursor = await engine.list(dataclasses.replace(query, cursor=next_cursor))
            flows.extend(page)
        waits: dict[str, list[FlowWait]] = {}
        if why:  # a few reads per flow listed, and only for the flows that have not stopped
            for flow in flows:
                if not flow.status.is_terminal:
                    waits[flow.flow_key] = await engine.why(flow.flow_key)
        return flows, next_cursor, waits

    flows, next_cursor, waits = with_engine(Target(dsn, shards), fetch)
    if as_json:
        document: dict[str, Any] = {"flows": flows, "next_cursor": next_cursor}
        if why:
            document["waits"] = {key: waits_json(found) for key, found in waits.items()}
        echo_json(document)
        return
    out = console()
    if flows:
        out.print(flows_table(flows, waits if why else None))
    else:
        out.print("no flows match")
    if next_cursor:
        out.print(f"next cursor: {next_cursor}", soft_wrap=True)


@command("show")
def show_flow(
    key: Annotated[str, typer.Argument(metavar="KEY", help="The flow key.")],
    as_json: JsonOption = False,
    dsn: DsnOption = DEFAULT_DSN,
    shards: ShardsOption = 1,
) -> None:
    """Show where a flow stands: status, why it is not moving, state, error, interrupt, cancel reason."""

    async def fetch(engine: Engine) -> tuple[FlowOutcome, list[FlowWait]]:
        outcome = await engine.snapshot(key)
        waits = [] if outcome.status.is_terminal else await engine.why(key)
        return outcome, waits

    outcome, waits = with_engine(Target(dsn, shards), fetch)
    if as_json:
        echo_json({"flow_key": key, **dataclasses.asdict(outcome), "waits": waits_json(waits)})
        return
    console().print(outcome_view(key, outcome, waits))


@command("history")
def show_history(
    key: Annotated[str, typer.Argument(metavar="KEY", help="The flow key.")],
    mermaid: Annotated[
        bool, typer.Option("--mermaid", help="Print the history as a Mermaid flowchart.")
    ] = False,
    changes: Annotated[bool, typer.Option("--changes", help="Show what each step changed.")] = False,
    as_json: JsonOption = False,
    dsn: DsnOption = DEFAULT_DSN,
    shards: ShardsOption = 1,
) -> None:
    """Show the steps a flow ran, child flows nested under the step that ran them."""
    target = Target(dsn, shards)
    if mermaid:
        typer.echo(with_engine(target, lambda engine: engine.history_mermaid(key)), nl=False)
        return
    steps = with_engine(target, lambda engine: engine.history(key))
    if as_json:
        echo_json({"flow_key": key, "steps": steps})
        return
    console().print(history_tree(key, steps, with_changes=changes))


@command("step")
def show_step(
    step_key: Annotated[str, typer.Argument(metavar="STEP_KEY", help="The step key (from history).")],
    as_json: JsonOption = False,
    dsn: DsnOption = DEFAULT_DSN,
    shards: ShardsOption = 1,
) -> None:
    """Show one step: its input state, its changes, its neighbours and times."""
    found = with_engine(Target(dsn, shards), lambda engine: engine.step(step_key))
    if as_json:
        echo_json(found)
        return
    console().print(step_view(found))


@command("shards")
def show_shards(as_json: JsonOption = False, dsn: DsnOption = DEFAULT_DSN, shards: ShardsOption = 1) -> None:
    """Show each shard's flows, steps and ping latency, or why it cannot be reached."""
    summaries = with_engine(Target(dsn, shards), lambda engine: engine.shard_info())
    if as_json:
        echo_json({"shards": summaries})
        return
    console().print(shards_table(summaries))


@command("limits")
def show_limits(as_json: JsonOption = False, dsn: DsnOption = DEFAULT_DSN, shards: ShardsOption = 1) -> None:
    """Show the concurrency and rate limits, with each key's running steps and rate tokens now."""
    limits = with_engine(Target(dsn, shards), lambda engine: engine.list_limits())
    if as_json:
        echo_json({"limits": limits})
        return
    if not limits:
        typer.echo("no limits")
        return
    console().print(limits_table(limits))


# --- acting ---


@command("limit")
def limit_key(
    key: Annotated[str, typer.Argument(metavar="KEY", help="A fairness key, or with --task-url a task URL.")],
    concurrency: Annotated[
        int | None,
        typer.Option("--concurrency", help="At most this many of the key's steps running at once."),
    ] = None,
    rate: Annotated[
        float | None, typer.Option("--rate", help="At most this many step starts per second.")
    ] = None,
    burst: Annotated[
        int | None, typer.Option("--burst", help="Starts allowed at once (default: a second's worth).")
    ] = None,
    task_url: Annotated[
        bool, typer.Option("--task-url", help="KEY is a task URL, not a fairness key.")
    ] = False,
    clear: Annotated[bool, typer.Option("--clear", help="Remove the key's limit instead.")] = False,
    dsn: DsnOption = DEFAULT_DSN,
    shards: ShardsOption = 1,
) -> None:
    """Set (or replace, or with --clear remove) the limit of a fairness key or task URL.

    Every engine on the database obeys it: at once when it hears of it, at its next idle poll otherwise
    (it starts nothing past the limit meanwhile). See docs/limits.md.
    """
    scope, what = ("task_url", "task URL") if task_url else ("fairness_key", "fairness key")
    target = Target(dsn, shards)
    if clear:
        if concurrency is not None or rate is not None or burst is not None:
            raise CommandError("--clear takes no --concurrency, --rate or --burst")
        removed = with_engine(target, lambda engine: engine.clear_limit(key, scope=scope))
        typer.echo(f"cleared the limit of {what} {key!r}" if removed else f"{what} {key!r} had no limit")
        return
    with_engine(
        target,
        lambda engine: engine.limit(key, concurrency=concurrency, rate=rate, burst=burst, scope=scope),
    )
    typer.echo(f"limited {what} {key!r}")


@command("resume")
def resume_flow(
    key: Annotated[str, typer.Argument(metavar="KEY", help="The key of an interrupted flow.")],
    data: Annotated[
        str, typer.Option("--data", help="The answer, a JSON object: what the task's interrupt() returns.")
    ] = "{}",
    dsn: DsnOption = DEFAULT_DSN,
    shards: ShardsOption = 1,
) -> None:
    """Answer an interrupted flow; the application's engine runs it on from there."""
    answer = parse_json_object(data, "--data")
    with_engine(Target(dsn, shards), lambda engine: engine.resume(key, answer))
    typer.echo(f"resumed {key}")


@command("signal")
def signal_flow(
    key: Annotated[str, typer.Argument(metavar="KEY", help="The key of a running or interrupted flow.")],
    name: Annotated[str, typer.Argument(metavar="NAME", help="The signal's name, as the task waits for it.")],
    data: Annotated[
        str, typer.Option("--data", help="The signal's data, a JSON object: what wait_for_signal() returns.")
    ] = "{}",
    dsn: DsnOption = DEFAULT_DSN,
    shards: ShardsOption = 1,
) -> None:
    """Send a signal to a flow: the step waiting for it runs on, or the next wait for it takes it."""
    payload = parse_json_object(data, "--data")
    with_engine(Target(dsn, shards), lambda engine: engine.signal(key, name, payload))
    typer.echo(f"signal {name!r} sent to {key}")


@command("cancel")
def cancel_flow(
    key: Annotated[str, typer.Argument(metavar="KEY", help="The key of a running or interrupted flow.")],
    reason: Annotated[str, typer.Option("--reason", help="Why; kept with the flow.")] = "",
    dsn: DsnOption = DEFAULT_DSN,
    shards: ShardsOption = 1,
) -> None:
    """Cancel a running or interrupted flow and its child flows."""
    with_engine(Target(dsn, shards), lambda engine: engine.cancel(key, reason))
    typer.echo(f"cancelled {key}")


@command("fork")
def fork_step(
    step_key: Annotated[str, typer.Argument(metavar="STEP_KEY", help="The step to run again.")],
    assignments: Annotated[
        list[str] | None,
        typer.Option("--set", metavar="KEY=VALUE", help="Override a field of the step's input (repeatable)."),
    ] = None,
    as_json: JsonOption = False,
    dsn: DsnOption = DEFAULT_DSN,
    shards: ShardsOption = 1,
) -> None:
    """Start a new flow that replays an ended flow up to a step and runs that step again.

    A --set value is JSON when it parses as JSON (3, true, [1, 2], "x") and a plain string otherwise.
    Prints the new flow's key.
    """
    overrides = parse_overrides(assignments or [])
    new_key = with_engine(Target(dsn, shards), lambda engine: engine.fork(step_key, overrides))
    if as_json:
        echo_json({"flow_key": new_key})
        return
    typer.echo(new_key)


@command("delete")
def delete_flow(
    key: Annotated[str, typer.Argument(metavar="KEY", help="The key of a root flow that is not running.")],
    dsn: DsnOption = DEFAULT_DSN,
    shards: ShardsOption = 1,
) -> None:
    """Delete a flow that is not running, its child flows and all their steps."""
    with_engine(Target(dsn, shards), lambda engine: engine.delete(key))
    typer.echo(f"deleted {key}")


def _interactive() -> bool:
    """Whether a person can answer a confirmation prompt."""
    return sys.stdin.isatty()


@command("purge")
def purge_flows(
    status: StatusFilter = None,
    workflow_url: UrlFilter = "",
    workflow_name: NameFilter = "",
    thread_key: ThreadFilter = "",
    task_name: TaskFilter = "",
    fairness_key: FairnessFilter = "",
    priority: PriorityFilter = 0,
    older_than: OlderFilter = None,
    newer_than: NewerFilter = None,
    include_subgraphs: SubgraphFilter = False,
    shard: ShardFilter = 0,
    search: SearchFilter = "",
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")] = False,
    as_json: JsonOption = False,
    dsn: DsnOption = DEFAULT_DSN,
    shards: ShardsOption = 1,
) -> None:
    """Delete every flow that is not running and matches the filters (all of them without filters).

    Interrupted flows count as not running. Asks first; without a terminal to ask on, refuses unless
    --yes is given.
    """
    query = _query(
        status, workflow_url, workflow_name, thread_key, task_name, fairness_key, priority,
        older_than, newer_than, include_subgraphs, shard, search,
    )  # fmt: skip
    if not yes:
        if not _interactive():
            _fail("purge deletes flows for good: pass --yes to confirm")
        if not typer.confirm(f"Delete every flow{_describe(query)} that is not running?", default=False):
            _fail("nothing purged")

    async def purge_all(engine: Engine) -> int:
        total = 0
        # The engine marks at most a few thousand flows per call: call until nothing matches any more.
        with Progress(
            SpinnerColumn(), TextColumn("purged {task.completed:.0f} flows"), console=console(stderr=True)
        ) as progress:
            task = progress.add_task("purge", total=None)
            while marked := await engine.purge(query):
                total += marked
                progress.update(task, completed=total)
        return total

    total = with_engine(Target(dsn, shards), purge_all)
    if as_json:
        echo_json({"purged": total})
        return
    typer.echo(f"purged {total} flow{'' if total == 1 else 's'}")


def _describe(query: Query) -> str:
    filters = [
        f"{field.name.replace('_', '-')}={value}"
        for field in dataclasses.fields(query)
        if (value := getattr(query, field.name)) not in ("", 0, None, False)
    ]
    return " matching " + ", ".join(filters) if filters else ""


# --- graphs, the dashboard and the demo ---


@command("graph")
def show_graph(
    reference: Annotated[
        str, typer.Argument(metavar="MODULE:ATTR", help="A Graph, or a function returning one.")
    ],
    as_json: JsonOption = False,
) -> None:
    """Validate a graph defined in Python code and print it as a Mermaid flowchart.

    MODULE:ATTR names a Graph object or a zero-argument function returning one, e.g.
    examples.order_checkout:checkout_graph (the working directory is importable).
    """
    graph = load_graph_reference(reference)
    graph.validate()
    if as_json:
        typer.echo(graph.to_json())
        return
    typer.echo(graph.mermaid(), nl=False)


@command("serve")
def serve_dashboard(
    host: Annotated[str, typer.Option("--host", help="The interface to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", min=1, max=65535, help="The port to listen on.")] = 8080,
    allow_host: Annotated[
        list[str] | None,
        typer.Option(
            "--allow-host",
            metavar="NAME",
            help="Also answer requests for this Host name (repeatable; '*' for any). By default only the "
            "names it listens on are answered, which defeats DNS rebinding.",
        ),
    ] = None,
    token: Annotated[
        str | None,
        typer.Option(
            "--token",
            envvar="DWARF_DASHBOARD_TOKEN",
            show_default=False,
            help="Require this token on every request (bearer token, or any user name with the token as "
            "password). Prefer the environment variable: a command line is visible to other users.",
        ),
    ] = None,
    no_auth: Annotated[
        bool,
        typer.Option(
            "--no-auth",
            help="Listen beyond this machine without a token, because a proxy in front authenticates.",
        ),
    ] = False,
    dsn: DsnOption = DEFAULT_DSN,
    shards: ShardsOption = 1,
) -> None:
    """Serve the web dashboard (needs the web extra: pip install 'dwarf-workflow[web]').

    Anyone who reaches the dashboard can read every flow and resume, cancel and fork flows, so it refuses
    to listen beyond this machine without --token (or DWARF_DASHBOARD_TOKEN) unless --no-auth is given.
    """
    import ipaddress  # only here: the one command that listens on an address

    def usage_error(message: str) -> NoReturn:
        typer.echo(f"error: {message}", err=True)
        raise typer.Exit(2)

    token = token or None  # an empty DWARF_DASHBOARD_TOKEN is no token
    if token is not None and not all("!" <= char <= "~" for char in token):
        usage_error("the dashboard token must be printable ASCII without spaces")
    try:
        loopback = host.lower() == "localhost" or ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        loopback = False
    if not loopback and token is None and not no_auth:
        usage_error(
            f"refusing to serve on {host} without authentication: set DWARF_DASHBOARD_TOKEN (or --token), "
            "or pass --no-auth if a proxy in front of the dashboard authenticates users"
        )
    missing = missing_sqlite_files(Target(dsn, shards))
    if missing:
        raise CommandError(f"no database at {missing[0]}: pass --dsn (or set DWARF_DSN)")
    try:
        dashboard = importlib.import_module(DASHBOARD_MODULE)
    except ImportError as error:
        missing_package = _missing_package(error)
        if missing_package:
            raise CommandError(
                f"the dashboard needs the web extra ({missing_package} is not installed): "
                "pip install 'dwarf-workflow[web]'"
            ) from error
        raise CommandError(f"this installation of dwarf has no dashboard ({error})") from error
    if not loopback and token is None:
        typer.echo(
            f"warning: no token: anyone who can reach {host}:{port} without passing the proxy in front "
            "can read, resume, cancel and fork flows",
            err=True,
        )
    typer.echo(f"dwarf dashboard on http://{host}:{port}/ (Ctrl-C stops it)", err=True)
    try:
        dashboard.serve(
            dsn=dsn,
            num_shards=shards,
            host=host,
            port=port,
            token=token,
            allowed_hosts=allow_host or [],
            no_auth=no_auth,
        )
    except ValueError as error:  # a malformed --allow-host
        usage_error(str(error))
    except KeyboardInterrupt:
        pass


@command("demo")
def run_demo_command(
    keep_running: Annotated[
        bool,
        typer.Option(
            "--keep-running", help="Afterwards keep running the demo's tasks (so resumed claims finish)."
        ),
    ] = False,
    as_json: JsonOption = False,
    dsn: DsnOption = DEFAULT_DSN,
    shards: ShardsOption = 1,
) -> None:
    """Run a small expense-approval workflow against the database so there are flows to look at.

    One claim is approved automatically and completes; a large one stops interrupted, waiting for
    `dwarf resume KEY --data '{"approved": true}'`.
    """
    from dwarf._demo import build_demo_host, run_demo

    target = Target(dsn, shards)

    async def demo(engine: Engine) -> None:
        runs = await run_demo(engine)
        if as_json:
            echo_json({"flows": runs})
        else:
            out = console()
            for run in runs:
                claim = run.claim
                out.print(f"\n[bold]{claim['employee']}: {claim['item']}, {claim['amount']} EUR[/bold]")
                out.print(outcome_view(run.flow_key, run.outcome))
                out.print("\nWhat ran (Mermaid):\n")
                out.print(run.mermaid, markup=False, highlight=False, soft_wrap=True)
            out.print(_demo_hints(runs[-1].flow_key, dsn, shards), markup=False, soft_wrap=True)
        sys.stdout.flush()
        if keep_running:
            typer.echo("running the demo's tasks; Ctrl-C stops", err=True)
            await asyncio.Event().wait()

    try:
        with_engine(target, demo, host=build_demo_host(), workers=4, create_database=True)
    except KeyboardInterrupt:
        typer.echo("stopped", err=True)


@command("worker")
def run_worker_command(
    reference: Annotated[
        str,
        typer.Argument(
            metavar="MODULE:HOST",
            help="The application's host: a Host object (a LocalHost, say), or a zero-argument function or "
            "class returning one, e.g. myapp.tasks:host.",
        ),
    ],
    workers: Annotated[
        int, typer.Option("--workers", envvar="DWARF_WORKERS", min=1, help="Steps run at once.")
    ] = worker.DEFAULT_WORKERS,
    relay: Annotated[
        worker.Relay,
        typer.Option(
            "--relay",
            envvar="DWARF_RELAY",
            help="Wake the other workers within milliseconds: pg (LISTEN/NOTIFY on the database) or nats.",
        ),
    ] = worker.Relay.NONE,
    nats_url: Annotated[
        str,
        typer.Option(
            "--nats-url",
            envvar="DWARF_NATS_URL",
            show_default=False,
            help=f"The NATS servers of --relay nats, comma-separated (default {worker.DEFAULT_NATS_URL}).",
        ),
    ] = "",
    health_port: Annotated[
        int | None,
        typer.Option(
            "--health-port",
            envvar="DWARF_HEALTH_PORT",
            min=0,
            max=65535,
            show_default=False,
            help="Answer GET /healthz and /readyz on this port (none by default).",
        ),
    ] = None,
    health_host: Annotated[
        str,
        typer.Option("--health-host", envvar="DWARF_HEALTH_HOST", help="The interface of the health port."),
    ] = "0.0.0.0",
    drain_timeout: Annotated[
        str,
        typer.Option(
            "--drain-timeout",
            envvar="DWARF_DRAIN_TIMEOUT",
            help="How long running steps may finish after SIGTERM or SIGINT: seconds or 30s, 2m.",
        ),
    ] = f"{worker.DEFAULT_DRAIN_TIMEOUT:g}",
    log_level: Annotated[
        worker.LogLevel,
        typer.Option("--log-level", envvar="DWARF_LOG_LEVEL", help="The least severe dwarf record logged."),
    ] = worker.LogLevel.INFO,
    dsn: DsnOption = DEFAULT_DSN,
    shards: ShardsOption = 1,
) -> None:
    """Run the application's tasks: start an engine with workers on the database and serve until SIGTERM
    or SIGINT, then let running steps finish (up to --drain-timeout) and exit 0.

    Logs one line per phase (starting, ready, draining, stopped) on stderr. Start as many workers as you
    like on one database; they share the work.
    """
    worker.run_worker(
        worker.WorkerOptions(
            reference=reference,
            dsn=dsn,
            shards=shards,
            workers=workers,
            relay=relay,
            nats_url=nats_url,
            health_port=health_port,
            health_host=health_host,
            drain_timeout=parse_age(drain_timeout, "--drain-timeout"),
            log_level=log_level.value,
        )
    )


_LOOPBACK = frozenset({"127.0.0.1", "localhost", "::1"})


def _missing_package(error: ImportError) -> str:
    """The third-party package whose absence caused ``error`` (following the chain of causes), or ""."""
    seen: BaseException | None = error
    while seen is not None:
        name = getattr(seen, "name", None) if isinstance(seen, ImportError) else None
        if name and name.split(".")[0] != "dwarf":
            return str(name).split(".")[0]
        seen = seen.__cause__ or seen.__context__
    return ""


def _demo_hints(interrupted_key: str, dsn: str, shards: int) -> str:
    # The hints are printed, so the password stays out of them (terminal scrollback, CI logs, screenshots).
    shown = redact(dsn)
    where = "" if dsn == DEFAULT_DSN else f" --dsn '{shown}'"
    if shards != 1:
        where += f" --shards {shards}"
    hints = (
        "\nTry next:\n"
        f"  dwarf list{where}\n"
        f"  dwarf history {interrupted_key}{where}\n"
        f'  dwarf resume {interrupted_key} --data \'{{"approved": true, "by": "you"}}\'{where}\n'
        f"  dwarf demo --keep-running{where}   # runs the demo's tasks, so the resumed claim finishes\n"
    )
    if shown != dsn:
        hints += "  (*** stands for the password, left out here; or set DWARF_DSN and leave out --dsn)\n"
    return hints


def main() -> None:
    """The console-script entry point: exits 0, 1 (refused) or 2 (usage), one line on stderr on failure."""
    app()
