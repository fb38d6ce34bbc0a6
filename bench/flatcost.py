"""Flat cost at any size: does the cost of one step grow with the work the database already holds?

Four workloads, each printed as one JSON line by ``python -m bench run --workload <name>``:

- ``backlog``: N linear3 flows are created while no worker runs (engines of 0 workers create them), then
  an engine with workers starts and drains them. Create time and drain rate are reported apart.
- ``growing``: one flow loops T turns; each turn appends a 1 KiB string to a list in the state. The
  per-turn latency of the first and last ten turns shows whether a turn costs more as the state grows.
- ``aged``: linear3 throughput on a database that already holds H completed flows, next to the rate on
  an empty database measured in the same run.
- ``statesize``: linear3 throughput with an initial state of S bytes, against the 1 KiB rate.

``python -m bench flatcost`` runs all four at a small and a large size in subprocesses and prints a
markdown table whose last column says how many times more a unit of work costs at the large size.
``python -m bench report`` runs the same plan and renders issue 14's targets and one section per workload
(``render_sections``), next to the rows of the engine before issue 14 kept in bench/flatcost_before.json
(made by running this bench with PYTHONPATH pointing at commit 8de55ae's src). The workloads use only what
that engine already had (``flow.append`` only where it exists), so the two sides are measured alike.

The bench looks at the database through a connection of its own (row counts, sizes, checkpoints), never
through the engine's, so that what it measures does not depend on the engine's internals.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import itertools
import json
import os
import sqlite3
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Coroutine
from contextlib import AsyncExitStack
from typing import Any

from bench.common import FreshDatabase, fresh_database, throughput_result
from bench.ours import _host
from dwarf import END, Engine, Flow, Graph, TestProxy

DEFAULT_BACKLOG = 1000
DEFAULT_TURNS = 300
DEFAULT_HISTORY = 10_000
DEFAULT_STATE_SIZES = [1024, 16384, 262144, 1048576]
TURN_BYTES = 1024
EDGE_TURNS = 10
"""How many turns at each end of a growing flow make its early and late latency."""

CREATE_CHUNK = 256
"""Creates in flight at once while filling a backlog: enough to keep every connection busy, few enough
that one chunk's tasks do not crowd the event loop."""

# A 0-worker engine sizes its pool for 0 workers: one connection per shard, whatever max_open_conns
# says. On PostgreSQL one connection makes creates wait on round trips, so several creating engines run
# side by side; SQLite serialises writers anyway, and more engines there only add contention.
CREATORS = {"sqlite": 1, "postgres": 4}

FILL_SUBMITTERS = 128
"""Concurrent engine.run calls that fill the aged workload's history."""

UNFINISHED = ("created", "running", "interrupted")


def _text(size: int) -> str:
    """``size`` ASCII characters of random base64: incompressible, so PostgreSQL's TOAST compression
    cannot make a large state cheaper than it would be in real use."""
    return base64.b64encode(os.urandom(size * 3 // 4 + 3)).decode("ascii")[:size]


def _elapsed_since(began: float) -> float:
    return time.perf_counter() - began


def _settings(engine: Engine) -> dict[str, Any]:
    """What the run's engine was set to, as far as it says: these workloads also measure engines older
    than the bench (the "before" figures of docs/benchmarks.md), which may lack some of the attributes
    ``bench.ours`` reads."""
    settings = getattr(engine, "settings", None)
    pool_size = getattr(engine, "pool_size", None)
    try:
        workers = settings["workers"] if settings is not None else None
    except (KeyError, TypeError):
        workers = getattr(settings, "workers", None)
    return {"workers": workers, "pool_size": pool_size, "python": sys.version.split()[0]}


# --- the bench's own look into a run's database ---


class Probe:
    """A connection of the bench's own to a run's database: flow counts by status, sizes, vacuum state.

    SQLite calls run in a worker thread (one at a time) so that they never block the engine's event loop.
    """

    def __init__(self, db: str, database: FreshDatabase) -> None:
        self.db = db
        self.database = database
        self._sqlite: sqlite3.Connection | None = None
        self._pg: Any = None

    async def __aenter__(self) -> Probe:
        if self.db == "sqlite":
            self._sqlite = await asyncio.to_thread(self._open_sqlite)
        else:
            import psycopg

            self._pg = await psycopg.AsyncConnection.connect(self.database.url, autocommit=True)
        return self

    def _open_sqlite(self) -> sqlite3.Connection:
        # Autocommit (isolation_level=None): the probe must never hold a read transaction open, or it
        # would pin the WAL and keep checkpoints from finishing.
        conn = sqlite3.connect(self.database.path, check_same_thread=False, isolation_level=None)
        conn.execute("PRAGMA busy_timeout = 10000")
        return conn

    async def __aexit__(self, *exc: object) -> None:
        if self._sqlite is not None:
            await asyncio.to_thread(self._sqlite.close)
        if self._pg is not None:
            await self._pg.close()

    async def _rows(self, sql: str) -> list[tuple[Any, ...]]:
        if self._sqlite is not None:
            conn = self._sqlite
            return await asyncio.to_thread(lambda: conn.execute(sql).fetchall())
        cursor = await self._pg.execute(sql.encode())
        return list(await cursor.fetchall())

    async def statuses(self) -> dict[str, int]:
        """Root and child flows by status."""
        rows = await self._rows("SELECT status, COUNT(*) FROM dwarf_flows GROUP BY status")
        return {str(status): int(count) for status, count in rows}

    async def unfinished(self) -> int:
        """Flows not yet stopped (an index range on status: cheap even beside many completed flows)."""
        listed = ", ".join(f"'{status}'" for status in UNFINISHED)
        rows = await self._rows(f"SELECT COUNT(*) FROM dwarf_flows WHERE status IN ({listed})")
        return int(rows[0][0])

    async def wait_all_stopped(self, expected: int, limit: float, poll: float = 0.02) -> dict[str, int]:
        """Wait until no flow is unfinished; raise unless exactly ``expected`` flows completed."""
        deadline = time.perf_counter() + limit
        while await self.unfinished():
            if time.perf_counter() > deadline:
                raise TimeoutError(f"flows still unfinished after {limit:g} s: {await self.statuses()}")
            await asyncio.sleep(poll)
        statuses = await self.statuses()
        if statuses != {"completed": expected}:
            raise RuntimeError(f"expected {expected} completed flows, found {statuses}")
        return statuses

    async def completion_times(self) -> list[float]:
        """When each completed flow stopped (its updated_at: epoch seconds by the database's clock, which
        is this machine's), sorted."""
        rows = await self._rows("SELECT updated_at FROM dwarf_flows WHERE status = 'completed'")
        return sorted(float(row[0]) for row in rows)

    async def size_bytes(self) -> dict[str, int]:
        """The database's size: SQLite's file plus its WAL after a TRUNCATE checkpoint (``busy`` = 1 when
        a reader kept the checkpoint from finishing); PostgreSQL's pg_database_size."""
        if self._sqlite is not None:
            conn, path = self._sqlite, self.database.path

            def measure() -> dict[str, int]:
                busy, _, _ = conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
                wal = f"{path}-wal"
                wal_bytes = os.path.getsize(wal) if os.path.exists(wal) else 0
                main = os.path.getsize(path)
                return {"bytes": main + wal_bytes, "main": main, "wal": wal_bytes, "busy": int(busy)}

            return await asyncio.to_thread(measure)
        rows = await self._rows("SELECT pg_database_size(current_database())")
        return {"bytes": int(rows[0][0])}

    async def autovacuum(self) -> str:
        """PostgreSQL's autovacuum setting ("on"/"off"); "" on SQLite."""
        if self._pg is None:
            return ""
        return str((await self._rows("SHOW autovacuum"))[0][0])

    async def table_stats(self) -> dict[str, dict[str, int]]:
        """PostgreSQL's live/dead tuples and (auto)vacuum/analyze counts of dwarf's two big tables."""
        if self._pg is None:
            return {}
        rows = await self._rows(
            "SELECT relname, n_live_tup, n_dead_tup, vacuum_count, autovacuum_count, autoanalyze_count"
            " FROM pg_stat_user_tables WHERE relname IN ('dwarf_flows', 'dwarf_steps') ORDER BY relname"
        )
        names = ("live", "dead", "vacuums", "autovacuums", "autoanalyzes")
        return {str(row[0]): dict(zip(names, map(int, row[1:]), strict=True)) for row in rows}


# --- shared pieces ---


def _engine(host: TestProxy, url: str, workers: int) -> Engine:
    engine = Engine(host=host, dsn=url)
    if workers:
        engine.set_workers(workers)
    return engine


async def _create_schema(url: str) -> None:
    """Start and stop an engine with workers on an empty database: that is what creates dwarf's schema
    (an engine of 0 workers refuses a database without one). Nothing exists yet, so it runs nothing."""
    async with Engine(host=_host(1), dsn=url):
        pass


async def create_backlog(db: str, url: str, count: int) -> float:
    """Create ``count`` linear3 flows on a new database while no worker runs; return the seconds the
    creates took (schema creation excluded).

    Engines of 0 workers do the creating (they need a host to load the graph, and run nothing),
    CREATE_CHUNK creates in flight at a time, spread round-robin over CREATORS[db] engines.
    """
    await _create_schema(url)
    async with AsyncExitStack() as stack:
        engines = [
            await stack.enter_async_context(Engine(host=_host(1), dsn=url, workers=0))
            for _ in range(CREATORS[db])
        ]
        began = time.perf_counter()
        for start in range(0, count, CREATE_CHUNK):
            size = min(CREATE_CHUNK, count - start)
            await asyncio.gather(
                *(engines[(start + i) % len(engines)].create("linear3", {}) for i in range(size))
            )
        return _elapsed_since(began)


async def linear3_rate(
    engine: Engine, db: str, flows: int, concurrency: int, state: dict[str, Any]
) -> dict[str, Any]:
    """Measure linear3 as ``bench run --workload linear3`` does: a warm-up flow, then ``flows`` flows
    through ``concurrency`` submitters that each time whole flows; the shared throughput fields."""
    _, outcome = await engine.run("linear3", state, timeout=120)
    if outcome.status != "completed":
        raise RuntimeError(f"warm-up flow ended {outcome.status}: {outcome.error}")
    remaining = iter(range(flows))
    latencies: list[float] = []

    async def submitter() -> None:
        for _ in remaining:
            began = time.perf_counter()
            _, outcome = await engine.run("linear3", state, timeout=600)
            if outcome.status != "completed":
                raise RuntimeError(f"flow ended {outcome.status}: {outcome.error}")
            latencies.append(time.perf_counter() - began)

    started = time.perf_counter()
    await asyncio.gather(*(submitter() for _ in range(concurrency)))
    return throughput_result(
        engine="dwarf",
        workload="linear3",
        db=db,
        flows=flows,
        concurrency=concurrency,
        width=0,
        elapsed=_elapsed_since(started),
        latencies=latencies,
    )


async def _run_many(engine: Engine, count: int, submitters: int) -> None:
    """Run ``count`` linear3 flows to completion through ``submitters`` concurrent engine.run calls."""
    remaining = iter(range(count))

    async def submitter() -> None:
        for _ in remaining:
            _, outcome = await engine.run("linear3", {}, timeout=600)
            if outcome.status != "completed":
                raise RuntimeError(f"flow ended {outcome.status}: {outcome.error}")

    await asyncio.gather(*(submitter() for _ in range(submitters)))


def _rate_fields(result: dict[str, Any]) -> dict[str, Any]:
    return {name: result[name] for name in ("flows", "elapsed_s", "steps_per_s", "p50_ms", "p95_ms")}


def _window_rate(stamps: list[float], first: int, last: int) -> float:
    """Steps per second between the ``first``-th and ``last``-th task invocation (by time)."""
    span = stamps[last] - stamps[first]
    return round((last - first) / span, 1) if span > 0 else 0.0


# --- backlog: drain N flows created while no worker ran ---

BACKLOG_METHOD = (
    "flows created through engine.create on engines of 0 workers (no step runs; {sqlite} such engine on "
    "SQLite, {postgres} on PostgreSQL) with {chunk} creates in flight; then one engine with workers starts "
    "and the clock runs from its startup call until the database holds no unfinished flow (checked through "
    "a separate connection once every step's task ran). Window rates come from the tasks' own invocation "
    "times."
)


async def run_backlog(args: argparse.Namespace) -> dict[str, Any]:
    """Create ``--flows`` linear3 flows with no worker running, then time an engine draining them."""
    flows = args.flows or DEFAULT_BACKLOG
    steps = 3 * flows
    async with fresh_database(args.db, args.dsn) as database:
        create_s = await create_backlog(args.db, database.url, flows)
        async with Probe(args.db, database) as probe:
            before = await probe.statuses()
            if before != {"running": flows}:
                raise RuntimeError(f"the backlog should hold {flows} untouched flows, found {before}")
            size_before = await probe.size_bytes()
            stamps: list[float] = []
            all_ran = asyncio.Event()
            host = _host(1)

            async def noop(flow: Flow) -> None:
                stamps.append(time.perf_counter())
                if len(stamps) >= steps:
                    all_ran.set()

            host.handle_task("noop", noop)
            engine = _engine(host, database.url, args.workers)
            limit = max(300.0, steps / 50)
            wall_began = time.time()  # the database's clock, for the flows' completion times
            began = time.perf_counter()
            await engine.startup()
            startup_s = _elapsed_since(began)
            try:
                await asyncio.wait_for(all_ran.wait(), limit)
                await probe.wait_all_stopped(flows, limit)
                drain_s = _elapsed_since(began)
                settings = _settings(engine)
            finally:
                await engine.shutdown()
            size_after = await probe.size_bytes()
            completions = [at - wall_began for at in await probe.completion_times()]
    stamps.sort()
    tenth = max(1, len(stamps) // 10)
    return {
        "engine": "dwarf",
        "workload": "backlog",
        "db": args.db,
        "flows": flows,
        "create_s": round(create_s, 4),
        "creates_per_s": round(flows / create_s, 1),
        "startup_s": round(startup_s, 4),
        "first_step_s": round(stamps[0] - began, 4),
        "drain_s": round(drain_s, 4),
        "drain_steps_per_s": round(steps / drain_s, 1),
        "drain_flows_per_s": round(flows / drain_s, 1),
        "first_tenth_steps_per_s": _window_rate(stamps, 0, tenth),
        "last_tenth_steps_per_s": _window_rate(stamps, len(stamps) - 1 - tenth, len(stamps) - 1),
        # When flows finished, from the drain's start: a backlog drained breadth-first (every flow's
        # first step before any flow's second) finishes its first flow late and its median near the end.
        "first_flow_done_s": round(completions[0], 3),
        "median_flow_done_s": round(completions[len(completions) // 2], 3),
        "db_bytes_before_drain": size_before["bytes"],
        "db_bytes_after_drain": size_after["bytes"],
        "method": BACKLOG_METHOD.format(**CREATORS, chunk=CREATE_CHUNK),
        "settings": settings,
    }


# --- growing: one flow whose state grows by 1 KiB a turn ---

GROWING_METHOD = (
    "one flow of a single task node looping on itself through a goto transition; each turn adds a "
    "{size}-byte random string to the list field 'items' ({api}). A turn's latency is the time between "
    "two successive invocations of the task (the task's own clock), so it covers committing one step and "
    "starting the next; early/late = median of the first/last {edge} turns."
)


def _growing_graph() -> Graph:
    graph = Graph("growing")
    graph.add_task("Turn", "turn")
    graph.add_transition_goto("Turn", "Turn")
    graph.add_transition("Turn", END)
    return graph


APIS = {"append": "flow.append", "set": "get + set of the whole list"}


def growing_api(choice: str) -> str:
    """``--api``: "append" or "set"; "auto" is flow.append where the Flow has it (issue 14 adds it), else
    get + set, so that one bench runs on both sides of that change and can still measure the old way."""
    has_append = callable(getattr(Flow, "append", None))
    if choice == "auto":
        return "append" if has_append else "set"
    if choice == "append" and not has_append:
        raise ValueError("this dwarf's Flow has no append method")
    return choice


def _growing_host(stamps: dict[str, dict[int, float]], api: str) -> TestProxy:
    host = _host(1)
    host.handle_graph("growing", _growing_graph())

    async def turn(flow: Flow) -> None:
        done = flow.get_int("turn")
        # Keyed by turn, so a re-run of a step (after a lost lease) overwrites instead of adding a stamp.
        stamps.setdefault(flow.flow_key, {})[done] = time.perf_counter()
        chunk = _text(TURN_BYTES)
        if api == "append":
            # Issue 14's API: the step records only the new item, not the whole list.
            flow.append("items", chunk)
        else:
            items = flow.get("items") or []
            items.append(chunk)
            flow.set("items", items)
        flow.set("turn", done + 1)
        if done + 1 < flow.get_int("target"):
            flow.goto("Turn")

    host.handle_task("turn", turn)
    return host


async def run_growing(args: argparse.Namespace) -> dict[str, Any]:
    """One flow of ``--turns`` turns, each adding 1 KiB to the state; early versus late turn latency."""
    turns = args.turns or DEFAULT_TURNS
    if turns < 2 * EDGE_TURNS + 1:
        raise ValueError(f"growing needs at least {2 * EDGE_TURNS + 1} turns")
    api = growing_api(args.api)
    stamps: dict[str, dict[int, float]] = {}
    async with fresh_database(args.db, args.dsn) as database:
        engine = _engine(_growing_host(stamps, api), database.url, args.workers)
        async with engine, Probe(args.db, database) as probe:
            _, warm = await engine.run("growing", {"target": 3, "turn": 0, "items": []}, timeout=60)
            if warm.status != "completed":
                raise RuntimeError(f"warm-up flow ended {warm.status}: {warm.error}")
            size_before = await probe.size_bytes()
            began = time.perf_counter()
            key, outcome = await engine.run(
                "growing", {"target": turns, "turn": 0, "items": []}, timeout=max(600, turns)
            )
            total_s = _elapsed_since(began)
            if outcome.status != "completed":
                raise RuntimeError(f"flow ended {outcome.status}: {outcome.error}")
            size_after = await probe.size_bytes()
            settings = _settings(engine)
    state = outcome.state
    items = len(state.get("items") or [])
    if state.get("turn") != turns or items != turns:
        # E.g. an engine that does not apply flow.append's items yet: no numbers for a flow that lost data.
        raise RuntimeError(
            f"the flow ended with turn {state.get('turn')} and {items} items ({APIS[api]}), "
            f"not {turns} of each"
        )
    times = [stamps[key][turn] for turn in range(turns)]
    gaps = [(later - earlier) * 1000 for earlier, later in itertools.pairwise(times)]
    early = statistics.median(gaps[:EDGE_TURNS])
    late = statistics.median(gaps[-EDGE_TURNS:])
    tenths = [gaps[len(gaps) * i // 10 : len(gaps) * (i + 1) // 10] for i in range(10)]
    return {
        "engine": "dwarf",
        "workload": "growing",
        "db": args.db,
        "turns": turns,
        "api": APIS[api],
        "total_s": round(total_s, 3),
        "turns_per_s": round(turns / total_s, 1),
        "early_turn_ms": round(early, 3),
        "late_turn_ms": round(late, 3),
        "late_over_early": round(late / early, 2),
        "median_turn_ms_by_tenth": [round(statistics.median(part), 3) for part in tenths if part],
        "final_state_bytes": len(json.dumps(state, separators=(",", ":")).encode()),
        "db_bytes_before": size_before["bytes"],
        "db_bytes_after": size_after["bytes"],
        "db_bytes_growth": size_after["bytes"] - size_before["bytes"],
        "method": GROWING_METHOD.format(size=TURN_BYTES, api=APIS[api], edge=EDGE_TURNS),
        "settings": settings,
    }


# --- aged: linear3 on a database holding many completed flows ---

AGED_ROUNDS = 3
"""Measurements of each database, alternating: one linear3 run takes a second or two, too short to be
taken alone on a shared machine."""

AGED_METHOD = (
    "two fresh databases in one process: on the second, {history:,} linear3 flows are first run to "
    "completion by one engine ({submitters} concurrent engine.run calls), which then stops; then one new "
    "engine on each database measures linear3 {rounds} times, alternating between the two, and each side "
    "reports its median run. No VACUUM or ANALYZE is run by the bench."
)


def _median_run(runs: list[dict[str, Any]]) -> dict[str, Any]:
    return sorted(runs, key=lambda run: float(run["steps_per_s"]))[len(runs) // 2]


async def run_aged(args: argparse.Namespace) -> dict[str, Any]:
    """linear3 throughput on an empty database and on one holding ``--history`` completed flows."""
    history = args.history or DEFAULT_HISTORY
    flows = args.flows or 1000
    concurrency = args.concurrency or 32
    fresh_runs: list[dict[str, Any]] = []
    aged_runs: list[dict[str, Any]] = []
    async with fresh_database(args.db, args.dsn) as empty, fresh_database(args.db, args.dsn) as database:
        # The history is filled by FILL_SUBMITTERS concurrent engine.run calls, which keep the number of
        # unfinished flows bounded: a backlog of all of them at once drains far more slowly (see the
        # backlog workload), and the completed flows either way leave are the same.
        async with _engine(_host(1), database.url, args.workers) as filler:
            began = time.perf_counter()
            await _run_many(filler, history, FILL_SUBMITTERS)
            fill_s = _elapsed_since(began)
        async with Probe(args.db, database) as probe:
            await probe.wait_all_stopped(history, 60)
            size = await probe.size_bytes()
            autovacuum = await probe.autovacuum()
            stats_before = await probe.table_stats()
            async with (
                _engine(_host(1), empty.url, args.workers) as fresh_engine,
                _engine(_host(1), database.url, args.workers) as engine,
            ):
                for _ in range(AGED_ROUNDS):
                    fresh_runs.append(await linear3_rate(fresh_engine, args.db, flows, concurrency, {}))
                    aged_runs.append(await linear3_rate(engine, args.db, flows, concurrency, {}))
                settings = _settings(engine)
            stats_after = await probe.table_stats()
    fresh, aged = _median_run(fresh_runs), _median_run(aged_runs)
    result: dict[str, Any] = {
        "engine": "dwarf",
        "workload": "aged",
        "db": args.db,
        "history": history,
        "flows": flows,
        "concurrency": concurrency,
        "fill_s": round(fill_s, 4),
        "fill_flows_per_s": round(history / fill_s, 1),
        "fresh_steps_per_s": fresh["steps_per_s"],
        "aged_steps_per_s": aged["steps_per_s"],
        "aged_over_fresh": round(aged["steps_per_s"] / fresh["steps_per_s"], 3),
        "fresh": _rate_fields(fresh),
        "aged": _rate_fields(aged),
        "fresh_runs_steps_per_s": [run["steps_per_s"] for run in fresh_runs],
        "aged_runs_steps_per_s": [run["steps_per_s"] for run in aged_runs],
        "db_bytes_with_history": size["bytes"],
        "method": AGED_METHOD.format(history=history, submitters=FILL_SUBMITTERS, rounds=AGED_ROUNDS),
        "settings": settings,
    }
    if args.db == "postgres":
        result |= {
            "autovacuum": autovacuum,
            "tables_before_measure": stats_before,
            "tables_after_measure": stats_after,
        }
    return result


# --- statesize: linear3 with a large initial state ---

STATESIZE_METHOD = (
    'linear3 as in the linear3 workload, each flow created with the state {"blob": <S random base64 '
    "characters>}; one fresh database and engine per size; the ratio is each size's steps/s over the "
    "1 KiB size's."
)


def state_sizes(text: str) -> list[int]:
    """``--state-bytes``: one size or a comma-separated list; 1 KiB is always measured (the baseline)."""
    sizes = [int(part) for part in text.split(",") if part.strip()] if text else DEFAULT_STATE_SIZES
    if any(size < 1 for size in sizes):
        raise ValueError("state sizes must be positive")
    return sorted({1024, *sizes})


def statesize_flows(size: int) -> int:
    """Flows per size: 1000 (as linear3) up to 16 KiB, then fewer so that a size writes at most about
    256 MiB of state (every step row keeps its input state), but never fewer than 100."""
    return max(100, min(1000, (256 << 20) // (4 * size)))


async def run_statesize(args: argparse.Namespace) -> dict[str, Any]:
    """linear3 steps/s at each initial state size of ``--state-bytes`` and the ratio to 1 KiB."""
    concurrency = args.concurrency or 32
    measured: list[dict[str, Any]] = []
    settings: dict[str, Any] = {}
    for size in state_sizes(args.state_bytes):
        state = {"blob": _text(size)}
        flows = args.flows or statesize_flows(size)
        async with (
            fresh_database(args.db, args.dsn) as database,
            _engine(_host(1), database.url, args.workers) as engine,
            Probe(args.db, database) as probe,
        ):
            rate = await linear3_rate(engine, args.db, flows, concurrency, state)
            size_after = await probe.size_bytes()
            settings = _settings(engine)
        measured.append({"state_bytes": size, **_rate_fields(rate), "db_bytes": size_after["bytes"]})
    base = next(row["steps_per_s"] for row in measured if row["state_bytes"] == 1024)
    for row in measured:
        row["ratio_to_1k"] = round(row["steps_per_s"] / base, 3)
    return {
        "engine": "dwarf",
        "workload": "statesize",
        "db": args.db,
        "concurrency": concurrency,
        "sizes": measured,
        "largest_over_1k": measured[-1]["ratio_to_1k"],
        "method": STATESIZE_METHOD,
        "settings": settings,
    }


MEASURES: dict[str, Callable[[argparse.Namespace], Coroutine[Any, Any, dict[str, Any]]]] = {
    "backlog": run_backlog,
    "growing": run_growing,
    "aged": run_aged,
    "statesize": run_statesize,
}


# --- python -m bench flatcost: both sizes, one table ---

# (name, workload, extra argv) per size set: a small and a large run of backlog; growing, aged and
# statesize compare within one run (first vs last turns, fresh vs aged, 1 KiB vs the largest state).
PLANS: dict[str, list[tuple[str, str, list[str]]]] = {
    "target": [
        ("backlog-small", "backlog", ["--flows", "1000"]),
        ("backlog-large", "backlog", ["--flows", "100000"]),
        ("growing", "growing", ["--turns", "1000"]),
        ("aged", "aged", ["--history", "100000"]),
        ("statesize", "statesize", []),
    ],
    "quick": [
        ("backlog-small", "backlog", ["--flows", "1000"]),
        ("backlog-large", "backlog", ["--flows", "10000"]),
        ("growing", "growing", ["--turns", "300"]),
        ("aged", "aged", ["--history", "10000"]),
        ("statesize", "statesize", []),
    ],
    # `python -m bench report --quick`: only shows that every workload runs and renders.
    "smoke": [
        ("backlog-small", "backlog", ["--flows", "100"]),
        ("backlog-large", "backlog", ["--flows", "300"]),
        ("growing", "growing", ["--turns", "30"]),
        ("aged", "aged", ["--history", "300", "--flows", "100"]),
        ("statesize", "statesize", ["--state-bytes", "16384", "--flows", "50"]),
    ],
}

# The sizes issue 14's targets are stated at.
TARGET_BACKLOG = 100_000
TARGET_TURNS = 1000
TARGET_HISTORY = 100_000


def plan_of(
    name: str, *, large_backlog: int = 0, turns: int = 0, history: int = 0
) -> list[tuple[str, str, list[str]]]:
    """A plan of PLANS with some sizes replaced (0 keeps the plan's): e.g. fewer turns for an engine on
    which 1,000 take too long."""
    replaced = {"backlog-large": ("--flows", large_backlog), "growing": ("--turns", turns)}
    replaced["aged"] = ("--history", history)
    result = []
    for label, workload, argv in PLANS[name]:
        argv = list(argv)
        option, value = replaced.get(label, ("", 0))
        if value:
            if option in argv:
                argv[argv.index(option) + 1] = str(value)
            else:
                argv += [option, str(value)]
        result.append((label, workload, argv))
    return result


def run_plan(
    plan: list[tuple[str, str, list[str]]], dbs: list[str], dsn: str, rows_file: str
) -> list[dict[str, Any]]:
    """Run every (database, workload) of ``plan`` in its own ``python -m bench run`` subprocess, one
    after the other; each row gets its plan label and is appended to ``rows_file`` as it comes."""
    from bench.report import Job, run_job

    rows: list[dict[str, Any]] = []
    source = engine_source()
    with open(rows_file, "w", encoding="utf-8") as saved:
        for db in dbs:
            for label, workload, sizes in plan:
                argv = ["run", "--db", db, "--workload", workload, *sizes]
                if dsn and db == "postgres":
                    argv += ["--dsn", dsn]
                _log(f"{label}: {' '.join(argv)}")
                began = time.time()
                row = {"label": label, **run_job(Job("dwarf", db, workload, argv))}
                row["started_utc"] = time.strftime("%Y-%m-%d %H:%M", time.gmtime(began))
                row["run_s"] = round(time.time() - began, 1)
                # Which dwarf ran, as the tree looked when the plan started (a tree edited during the
                # runs shows as "with uncommitted changes" only if it already was).
                row["dwarf"] = source
                rows.append(row)
                saved.write(json.dumps(row) + "\n")
                saved.flush()
    return rows


# --- saved rows: JSON lines as runs print them, or a document with notes (bench/flatcost_before.json) ---


def load_rows(path: str) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """The rows of a saved file and what it says about them (``engine``, ``measured``, ``notes``).

    Either JSON lines, one row each (what ``flatcost`` and ``report`` save as they run), or one JSON
    document ``{"engine": ..., "measured": ..., "notes": [...], "rows": [...]}`` (``flatcost --save``).
    """
    with open(path, encoding="utf-8") as saved:
        text = saved.read()
    try:
        document = json.loads(text)
    except json.JSONDecodeError:
        document = None
    if isinstance(document, dict) and isinstance(document.get("rows"), list):
        meta = {name: value for name, value in document.items() if name != "rows"}
        return [dict(row) for row in document["rows"]], meta
    if isinstance(document, dict):
        rows = [document]
    else:
        rows = [json.loads(line) for line in text.splitlines() if line.strip()]
    return rows, rows_meta(rows)


def rows_meta(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """What rows saved as JSON lines say about themselves: the dwarf they measured (if one) and when."""
    started = sorted(str(row["started_utc"]) for row in rows if row.get("started_utc"))
    meta: dict[str, Any] = {"measured": f"{started[0]} to {started[-1]} UTC"} if started else {}
    sources = {str(row["dwarf"]) for row in rows if row.get("dwarf")}
    if len(sources) == 1:
        meta["engine"] = sources.pop()
    elif sources:
        meta["engine"] = " and ".join(sorted(sources))
    return meta


def engine_source() -> str:
    """Which dwarf ``import dwarf`` finds (bench.report.engine_source)."""
    from bench.report import engine_source as source

    return source()


def save_rows(path: str, rows: list[dict[str, Any]], notes: list[str]) -> None:
    """Write ``rows`` as one JSON document saying which engine ran them, when, and ``notes``."""
    document = {"engine": engine_source(), "measured": "", **rows_meta(rows), "notes": notes, "rows": rows}
    with open(path, "w", encoding="utf-8") as saved:
        json.dump(document, saved, indent=1)
        saved.write("\n")


def _log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _count(value: float) -> str:
    return f"{value:,.0f}"


def render_table(rows: list[dict[str, Any]]) -> str:
    """The flat-cost table: per workload and database, the small and the large measurement and how many
    times more one unit of work costs at the large size (1.00 = flat)."""
    from bench.report import DB_TITLES, TIMES

    lines = [
        "| workload | database | measure | small | large | cost at large ÷ small |",
        "|---|---|---|---|---|---|",
    ]

    def add(workload: str, db: str, measure: str, small: str, large: str, slowdown: float) -> None:
        lines.append(
            f"| {workload} | {DB_TITLES[db]} | {measure} | {small} | {large} | {slowdown:.2f}{TIMES} |"
        )

    def find(db: str, label: str) -> dict[str, Any] | None:
        return next((r for r in rows if r.get("db") == db and r.get("label") == label), None)

    for db in ("sqlite", "postgres"):
        small, large = find(db, "backlog-small"), find(db, "backlog-large")
        if small and large and "error" not in small and "error" not in large:
            add(
                "backlog",
                db,
                "drain steps/s (creates/s)",
                f"{_count(small['drain_steps_per_s'])} ({_count(small['creates_per_s'])}) at "
                f"{small['flows']:,} flows",
                f"{_count(large['drain_steps_per_s'])} ({_count(large['creates_per_s'])}) at "
                f"{large['flows']:,} flows",
                small["drain_steps_per_s"] / large["drain_steps_per_s"],
            )
        growing = find(db, "growing")
        if growing and "error" not in growing:
            add(
                "growing",
                db,
                f"ms per turn, first vs last {EDGE_TURNS} of {growing['turns']:,} "
                f"(state {growing['final_state_bytes'] / 1024:,.0f} KiB at the end)",
                f"{growing['early_turn_ms']:.2f} ms",
                f"{growing['late_turn_ms']:.2f} ms",
                growing["late_over_early"],
            )
        aged = find(db, "aged")
        if aged and "error" not in aged:
            vacuum = f"; autovacuum {aged['autovacuum']}" if aged.get("autovacuum") else ""
            add(
                "aged",
                db,
                f"linear3 steps/s, empty vs {aged['history']:,} completed flows{vacuum}",
                _count(aged["fresh_steps_per_s"]),
                _count(aged["aged_steps_per_s"]),
                1 / aged["aged_over_fresh"],
            )
        sweep = find(db, "statesize")
        if sweep and "error" not in sweep:
            first, last = sweep["sizes"][0], sweep["sizes"][-1]
            add(
                "statesize",
                db,
                f"linear3 steps/s, state of {first['state_bytes']:,} vs {last['state_bytes']:,} bytes",
                _count(first["steps_per_s"]),
                _count(last["steps_per_s"]),
                first["steps_per_s"] / last["steps_per_s"],
            )
    failed = [row for row in rows if "error" in row]
    lines += [
        "",
        "*cost at large ÷ small*: how many times more one step (one turn for growing) costs at the large "
        f"size; 1.00{TIMES} is flat. A shared 2-core machine makes differences under about 20% noise.",
    ]
    lines += [f"- failed: {row['label']} on {row['db']}: {row['error']}" for row in failed]
    return "\n".join(lines)


def main(args: argparse.Namespace) -> int:
    """``python -m bench flatcost``: run the plan (or read ``--rows``) and print the markdown table."""
    from bench.common import postgres_reachable

    if args.rows:
        print(render_table(load_rows(args.rows)[0]))
        return 0
    dbs = ["sqlite", "postgres"] if args.db == "both" else [args.db]
    if "postgres" in dbs and not postgres_reachable(args.dsn):
        _log("PostgreSQL is not reachable: SQLite only")
        dbs = [db for db in dbs if db != "postgres"]
    plan = plan_of(
        "quick" if args.quick else "target",
        large_backlog=args.large_backlog,
        turns=args.turns,
        history=args.history,
    )
    _log(f"measuring {engine_source()}")
    rows_file = os.path.join(tempfile.gettempdir(), f"dwarf-flatcost-{int(time.time())}.jsonl")
    rows = run_plan(plan, dbs, args.dsn, rows_file)
    _log(f"rows saved in {rows_file}")
    if args.save:
        save_rows(args.save, rows, list(args.note))
        _log(f"rows saved in {args.save}")
    print(render_table(rows))
    return 1 if any("error" in row for row in rows) else 0


# --- issue 14's targets and the report's before/after sections ---

BACKLOG_SHARE = 0.8
GROWING_LATENCY = 2.0
GROWING_BYTES = 10.0
AGED_SHARE = 0.9
STATESIZE_SHARE = 0.6
STATESIZE_SIZE = 16384

DBS = ("sqlite", "postgres")


def _ok(rows: list[dict[str, Any]], db: str, label: str) -> dict[str, Any] | None:
    return next((r for r in rows if r.get("db") == db and r.get("label") == label and "error" not in r), None)


def _percent(value: float) -> str:
    return f"{value * 100:.0f}%"


def _mb(value: float) -> str:
    return f"{value / 1e6:,.1f} MB" if value >= 1e6 else f"{value / 1e3:,.0f} kB"


def _holds(ok: bool, at_size: bool, size: str) -> str:
    """A verdict; a pass at a size smaller than the target's is no verdict (a failure still is one)."""
    if at_size:
        return "yes" if ok else "**no**"
    return f"**no** (at {size})" if not ok else f"— (only measured at {size})"


def backlog_share(rows: list[dict[str, Any]], db: str) -> tuple[float, dict[str, Any], dict[str, Any]] | None:
    small, large = _ok(rows, db, "backlog-small"), _ok(rows, db, "backlog-large")
    if small is None or large is None:
        return None
    return large["drain_steps_per_s"] / small["drain_steps_per_s"], small, large


def growing_bytes_ratio(row: dict[str, Any]) -> float:
    """How many times the final state's bytes the database grew by while the measured flow ran."""
    return float(row["db_bytes_growth"]) / float(row["final_state_bytes"])


def statesize_share(row: dict[str, Any], size: int = STATESIZE_SIZE) -> float | None:
    return next((s["ratio_to_1k"] for s in row["sizes"] if s["state_bytes"] == size), None)


def evaluate_targets(rows: list[dict[str, Any]]) -> list[tuple[str, str, str, str]]:
    """(target, database, measured, holds) for issue 14's flat-cost targets, from one set of rows."""
    from bench.report import DB_TITLES, TIMES

    verdicts: list[tuple[str, str, str, str]] = []
    for db in DBS:
        title = DB_TITLES[db]
        if not any(row.get("db") == db for row in rows):
            continue

        def add(target: str, measured: str | None, verdict: str = "", title: str = title) -> None:
            verdicts.append((target, title, measured or "not measured", verdict if measured else "—"))

        share = backlog_share(rows, db)
        target = (
            f"backlog: drain rate at {TARGET_BACKLOG:,} queued flows ≥ {_percent(BACKLOG_SHARE)} of the "
            "rate at 1,000"
        )
        if share is None:
            add(target, None)
        else:
            ratio, small, large = share
            add(
                target,
                f"{_percent(ratio)} ({_count(large['drain_steps_per_s'])} vs "
                f"{_count(small['drain_steps_per_s'])} steps/s)",
                _holds(ratio >= BACKLOG_SHARE, large["flows"] >= TARGET_BACKLOG, f"{large['flows']:,} flows"),
            )
        growing = _ok(rows, db, "growing")
        latency = (
            f"growing: last {EDGE_TURNS} of {TARGET_TURNS:,} turns ≤ {GROWING_LATENCY:g}{TIMES} the first"
        )
        size = f"growing: database growth ≤ {GROWING_BYTES:g}{TIMES} the final state's bytes"
        if growing is None:
            add(latency, None)
            add(size, None)
        else:
            at_size = growing["turns"] >= TARGET_TURNS
            turns = f"{growing['turns']:,} turns"
            ratio = growing["late_over_early"]
            add(
                latency,
                f"{ratio:.2f}{TIMES} ({growing['early_turn_ms']:.2f} → {growing['late_turn_ms']:.2f} ms)",
                _holds(ratio <= GROWING_LATENCY, at_size, turns),
            )
            grown = growing_bytes_ratio(growing)
            add(
                size,
                f"{grown:,.1f}{TIMES} ({_mb(growing['db_bytes_growth'])} for "
                f"{_mb(growing['final_state_bytes'])})",
                _holds(grown <= GROWING_BYTES, at_size, turns),
            )
        aged = _ok(rows, db, "aged")
        target = f"aged: linear3 beside {TARGET_HISTORY:,} completed flows ≥ {_percent(AGED_SHARE)} of fresh"
        if aged is None:
            add(target, None)
        else:
            add(
                target,
                f"{_percent(aged['aged_over_fresh'])} ({_count(aged['aged_steps_per_s'])} vs "
                f"{_count(aged['fresh_steps_per_s'])} steps/s)",
                _holds(
                    aged["aged_over_fresh"] >= AGED_SHARE,
                    aged["history"] >= TARGET_HISTORY,
                    f"{aged['history']:,} flows",
                ),
            )
        sweep = _ok(rows, db, "statesize")
        target = f"state size: 16 KiB state ≥ {_percent(STATESIZE_SHARE)} of the 1 KiB rate"
        share_16k = statesize_share(sweep) if sweep else None
        if sweep is None or share_16k is None:
            add(target, None)
        else:
            rates = {s["state_bytes"]: s["steps_per_s"] for s in sweep["sizes"]}
            add(
                target,
                f"{_percent(share_16k)} ({_count(rates[STATESIZE_SIZE])} vs {_count(rates[1024])} steps/s)",
                "yes" if share_16k >= STATESIZE_SHARE else "**no**",
            )
    return verdicts


def _version_cells(before: str, after: str) -> dict[str, str]:
    return {"before": f"before ({before})", "after": f"after ({after})"}


def _short_engine(meta: dict[str, Any], default: str) -> str:
    engine = str(meta.get("engine") or "")
    return engine.removeprefix("commit ").split()[0] if engine.startswith("commit ") else default


def _method_of(rows: list[dict[str, Any]], workload: str) -> str:
    for row in rows:
        if row.get("workload") == workload and "method" in row:
            return str(row["method"]).rstrip(".") + "."
    return ""


def _backlog_table(sides: list[tuple[str, list[dict[str, Any]]]]) -> str:
    lines = [
        "| database | engine | drain at 1,000 flows | drain at the large backlog | large ÷ 1,000 "
        "| creates/s (large) | first / median flow done (large) | target holds |",
        "|---|---|---|---|---|---|---|---|",
    ]
    from bench.report import DB_TITLES

    for db in DBS:
        for side, rows in sides:
            share = backlog_share(rows, db)
            if share is None:
                continue
            ratio, small, large = share
            verdict = _holds(
                ratio >= BACKLOG_SHARE, large["flows"] >= TARGET_BACKLOG, f"{large['flows']:,} flows"
            )
            done = (
                f"{large['first_flow_done_s']:,.1f} s / {large['median_flow_done_s']:,.1f} s"
                if "median_flow_done_s" in large
                else "—"
            )
            lines.append(
                f"| {DB_TITLES[db]} | {side} | {_count(small['drain_steps_per_s'])} steps/s "
                f"| {_count(large['drain_steps_per_s'])} steps/s at {large['flows']:,} flows "
                f"| {_percent(ratio)} | {_count(large['creates_per_s'])} | {done} "
                f"| {verdict} |"
            )
    return "\n".join(lines)


def _growing_table(sides: list[tuple[str, list[dict[str, Any]]]]) -> str:
    from bench.report import DB_TITLES, TIMES

    lines = [
        f"| database | engine | turns | each turn adds by | first {EDGE_TURNS} turns "
        f"| last {EDGE_TURNS} turns | last ÷ first | final state | database growth | growth ÷ state "
        "| targets hold (latency, bytes) |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for db in DBS:
        for side, rows in sides:
            row = _ok(rows, db, "growing")
            if row is None:
                continue
            at_size = row["turns"] >= TARGET_TURNS
            turns = f"{row['turns']:,} turns"
            grown = growing_bytes_ratio(row)
            verdicts = (
                _holds(row["late_over_early"] <= GROWING_LATENCY, at_size, turns),
                _holds(grown <= GROWING_BYTES, at_size, turns),
            )
            lines.append(
                f"| {DB_TITLES[db]} | {side} | {row['turns']:,} | {row['api']} "
                f"| {row['early_turn_ms']:.2f} ms "
                f"| {row['late_turn_ms']:.2f} ms | {row['late_over_early']:.2f}{TIMES} "
                f"| {_mb(row['final_state_bytes'])} | {_mb(row['db_bytes_growth'])} | {grown:,.1f}{TIMES} "
                f"| {', '.join(verdicts)} |"
            )
    return "\n".join(lines)


def _aged_table(sides: list[tuple[str, list[dict[str, Any]]]]) -> str:
    from bench.report import DB_TITLES

    lines = [
        "| database | engine | completed flows | linear3, empty database | linear3 beside them | ratio "
        "| database with them | autovacuum | target holds |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for db in DBS:
        for side, rows in sides:
            row = _ok(rows, db, "aged")
            if row is None:
                continue
            verdict = _holds(
                row["aged_over_fresh"] >= AGED_SHARE,
                row["history"] >= TARGET_HISTORY,
                f"{row['history']:,} flows",
            )
            lines.append(
                f"| {DB_TITLES[db]} | {side} | {row['history']:,} "
                f"| {_count(row['fresh_steps_per_s'])} steps/s "
                f"| {_count(row['aged_steps_per_s'])} steps/s | {_percent(row['aged_over_fresh'])} "
                f"| {_mb(row['db_bytes_with_history'])} | {row.get('autovacuum') or '—'} | {verdict} |"
            )
    return "\n".join(lines)


def _kib(size: int) -> str:
    return f"{size // 1048576} MiB" if size >= 1048576 else f"{size // 1024} KiB"


def _statesize_table(sides: list[tuple[str, list[dict[str, Any]]]]) -> str:
    from bench.report import DB_TITLES

    sizes = sorted(
        {
            s["state_bytes"]
            for _, rows in sides
            for row in rows
            if row.get("label") == "statesize" and "error" not in row
            for s in row["sizes"]
        }
    )
    header = ["database", "engine", *(f"{_kib(size)} state" for size in sizes)]
    header += [f"{_kib(STATESIZE_SIZE)} ÷ 1 KiB", "target holds"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for db in DBS:
        for side, rows in sides:
            row = _ok(rows, db, "statesize")
            if row is None:
                continue
            rates = {s["state_bytes"]: s for s in row["sizes"]}
            cells = [DB_TITLES[db], side]
            cells += [
                f"{_count(rates[size]['steps_per_s'])} ({_percent(rates[size]['ratio_to_1k'])})"
                if size in rates
                else "—"
                for size in sizes
            ]
            share = statesize_share(row)
            cells += [
                "—" if share is None else _percent(share),
                "—" if share is None else ("yes" if share >= STATESIZE_SHARE else "**no**"),
            ]
            lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def render_sections(
    before: list[dict[str, Any]],
    after: list[dict[str, Any]],
    before_meta: dict[str, Any] | None = None,
    after_meta: dict[str, Any] | None = None,
) -> str:
    """The report's flat-cost part: an introduction, then backlog, growing state, aged database and state
    size, each with its method, a table of the before and after figures per database, and issue 14's
    target with whether it holds."""
    from bench.report import TIMES

    before_meta, after_meta = before_meta or {}, after_meta or {}
    names = _version_cells(_short_engine(before_meta, "?"), _short_engine(after_meta, "this page's commit"))
    sides = [(names["before"], before), (names["after"], after)]
    sides = [(side, rows) for side, rows in sides if rows]
    failed = [(side, row) for side, rows in sides for row in rows if "error" in row]
    parts = [
        "## Flat cost at any size (issue 14)",
        "",
        "Does a step cost more when the database already holds more work? Four workloads "
        "(`bench/flatcost.py`) answer it at the sizes issue 14 sets: a backlog of 100,000 queued flows "
        "against 1,000, one flow of 1,000 turns whose state grows by 1 KiB a turn, linear3 beside "
        "100,000 completed flows, and states of 1 KiB to 1 MiB. Each figure is one run (these runs take "
        "seconds to minutes each), in its own process on a fresh database.",
        "",
    ]
    if before:
        parts += [
            f"- **before**: the engine at {before_meta.get('engine', '?')}, the last commit before issue "
            f"14's changes, measured {before_meta.get('measured') or 'earlier'} with this page's bench "
            "code (the same workloads; `PYTHONPATH` pointing at that commit's `src`). Its rows are kept "
            "in `bench/flatcost_before.json`.",
        ]
        parts += [f"  {note}" for note in before_meta.get("notes", [])]
    if after:
        parts += [
            f"- **after**: the engine at {after_meta.get('engine', 'this commit')}, measured "
            f"{after_meta.get('measured') or 'with this page'}.",
        ]
        parts += [f"  {note}" for note in after_meta.get("notes", [])]
    parts += [
        "",
        f"A shared 2-core machine makes single-run differences under about 20% noise; 1.00{TIMES} (or "
        "100%) is flat.",
        "",
    ]
    everything = after + before  # the methods as the after rows state them, which may be newer
    parts += [
        "## backlog: draining flows queued while no worker ran",
        "",
        "linear3 flows are created while no engine runs workers, then one engine with workers drains "
        "them; the drain rate at a large backlog is compared with the rate at 1,000 flows. Method: "
        + _method_of(everything, "backlog")
        + " *first / median flow done*: seconds from the drain's start until the first and the median "
        "flow completed (a drain that takes every flow's first step before any second step finishes "
        "its first flow late).",
        "",
        f"Target: the drain rate with {TARGET_BACKLOG:,} queued flows ≥ {_percent(BACKLOG_SHARE)} of the "
        "rate with 1,000, on SQLite and on PostgreSQL.",
        "",
        _backlog_table(sides),
        "",
    ]
    apis = {side: _ok(rows, db, "growing") for side, rows in sides for db in DBS}
    used = sorted({row["api"] for row in apis.values() if row})
    api_note = ""
    if before and after:
        api_note = (
            " *Before* adds each item with get + set of the whole list (that engine has no "
            "`flow.append`); *after* uses `flow.append`, which records only the new item."
        )
    elif used:
        api_note = f" Items are added by {' and '.join(used)}."
    parts += [
        "## growing state: one flow whose state grows every turn",
        "",
        "Method: " + _method_of(everything, "growing") + api_note + " *Database growth*: how much the "
        "database grew while the measured flow ran (SQLite: file and WAL after a checkpoint; "
        "PostgreSQL: `pg_database_size`), against the bytes of the flow's final state as JSON.",
        "",
        f"Targets: the last {EDGE_TURNS} of {TARGET_TURNS:,} turns within {GROWING_LATENCY:g}{TIMES} the "
        f"latency of the first {EDGE_TURNS}, and the database holding the flow in ≤ {GROWING_BYTES:g}{TIMES} "
        "the bytes of its final state.",
        "",
        _growing_table(sides),
        "",
        "## aged database: linear3 beside completed flows",
        "",
        "Method: "
        + _method_of(everything, "aged")
        + " The shared PostgreSQL server of this machine runs with autovacuum as the table says.",
        "",
        f"Target: linear3 beside {TARGET_HISTORY:,} completed flows keeps ≥ {_percent(AGED_SHARE)} of its "
        "rate on an empty database.",
        "",
        _aged_table(sides),
        "",
        "## state size: linear3 with a large state",
        "",
        "Method: " + _method_of(everything, "statesize") + " Each cell: steps/s (share of the 1 KiB rate).",
        "",
        f"Target: a {_kib(STATESIZE_SIZE)} state keeps ≥ {_percent(STATESIZE_SHARE)} of the 1 KiB rate.",
        "",
        _statesize_table(sides),
    ]
    if failed:
        parts += ["", "Flat-cost runs that failed:", ""]
        parts += [f"- {side}: {row.get('label')} on {row.get('db')}: {row['error']}" for side, row in failed]
    return "\n".join(parts)
