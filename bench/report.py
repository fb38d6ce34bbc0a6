"""The comparison report: run ours and the peers interleaved, take medians, write markdown and a chart.

Every measurement runs in its own ``python -m bench run|peers`` subprocess (DBOS is a process-wide
singleton, and RSS and caches must not leak from one run into the next). The rounds are interleaved per
workload (dwarf, DBOS, LangGraph, LangGraph sync, dwarf, ...) so that noise from the machine falls on all
engines alike. ``render_markdown`` and ``render_chart`` work from the JSON rows alone, so a report can be
re-rendered from saved rows (``--rows``) without running anything.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from bench.common import DEFAULT_PG_DSN, postgres_reachable

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

ENGINES = ["dwarf", "dbos", "langgraph", "langgraph-sync"]
ENGINE_TITLES = {
    "dwarf": "dwarf",
    "dbos": "DBOS",
    "langgraph": "LangGraph",
    "langgraph-sync": "LangGraph (sync)",
}
TIMES = "\u00d7"  # the multiplication sign of "3.2x faster"
DB_TITLES = {"sqlite": "SQLite", "postgres": "PostgreSQL"}
COMPARED = ["linear3", "fanout", "latency"]
OURS_ONLY = ["idle", "parked"]

# Sizes of each workload: the full report, and the --quick smoke run.
FULL_SIZES: dict[str, list[str]] = {
    "linear3": ["--flows", "1000", "--concurrency", "32"],
    "fanout": ["--flows", "20", "--concurrency", "4", "--width", "100"],
    "latency": ["--flows", "200"],
    "idle": ["--seconds", "10"],
    "parked": ["--flows", "10000"],
}
QUICK_SIZES: dict[str, list[str]] = {
    "linear3": ["--flows", "100", "--concurrency", "32"],
    "fanout": ["--flows", "4", "--concurrency", "4", "--width", "20"],
    "latency": ["--flows", "30"],
    "idle": ["--seconds", "2"],
    "parked": ["--flows", "300"],
}
# `make bench`: all of our workloads, small enough for a couple of minutes on both databases.
SUITE_SIZES: dict[str, list[str]] = {
    "linear3": ["--flows", "300"],
    "linear10": ["--flows", "100"],
    "fanout": ["--flows", "5", "--width", "100"],
    "latency": ["--flows", "100"],
    "idle": ["--seconds", "3"],
    "parked": ["--flows", "1000"],
    # The flat-cost workloads (bench/flatcost.py) at a size that only shows they run; their comparison
    # of small and large sizes is `python -m bench flatcost`.
    "backlog": ["--flows", "300"],
    "growing": ["--turns", "50"],
    "aged": ["--history", "1000", "--flows", "300"],
    "statesize": ["--state-bytes", "16384", "--flows", "100"],
}
JOB_TIMEOUT_S = 900

# Targets of the issue: (workload, db) -> (metric, bound, "min" = at least / "max" = at most, unit).
TARGETS: dict[tuple[str, str], tuple[str, float, str, str]] = {
    ("linear3", "sqlite"): ("steps_per_s", 1500, "min", "steps/s"),
    # 1,800: issue 14's bar for PostgreSQL (it was 1,200 before; pgbench TPC-B did 2,823 tps here).
    ("linear3", "postgres"): ("steps_per_s", 1800, "min", "steps/s"),
    ("fanout", "sqlite"): ("steps_per_s", 2000, "min", "steps/s"),
    ("fanout", "postgres"): ("steps_per_s", 2000, "min", "steps/s"),
    ("latency", "sqlite"): ("p50_ms", 10, "max", "ms p50"),
    ("latency", "postgres"): ("p50_ms", 15, "max", "ms p50"),
    ("idle", "sqlite"): ("queries_per_s_per_shard", 1, "max", "queries/s/shard"),
    ("idle", "postgres"): ("queries_per_s_per_shard", 1, "max", "queries/s/shard"),
    ("parked", "sqlite"): ("mb_per_10k", 50, "max", "MB per 10,000 parked flows"),
    ("parked", "postgres"): ("mb_per_10k", 50, "max", "MB per 10,000 parked flows"),
}

# The numbers the issue quotes (steps/s, sqlite / pg), shown for reference next to ours.
PUBLISHED = [
    ("linear3", "DBOS 3.4 (measured earlier on this machine)", "232 / 257"),
    ("linear3", "LangGraph 1.2 + checkpointer, default durability", "426 / 325"),
    ("linear3", 'LangGraph 1.2 + checkpointer, durability="sync"', "579 / 453"),
    ("linear3", "Go dwarf v0.8.4 (published, on a laptop)", "1,381 / 1,152"),
    ("fanout", "DBOS 3.4 (measured earlier on this machine)", "96 / 144"),
    ("fanout", "LangGraph 1.2 + checkpointer, default durability", "1,483 / 1,181"),
    ("fanout", 'LangGraph 1.2 + checkpointer, durability="sync"', "1,645 / 1,254"),
]


@dataclass
class Job:
    """One measurement: the ``python -m bench`` arguments that produce one JSON row."""

    label: str
    db: str
    workload: str
    argv: list[str] = field(default_factory=list)


def engine_label(row: dict[str, Any]) -> str:
    """dwarf, dbos, langgraph or langgraph-sync (LangGraph's durability="sync" is a variant of its own)."""
    engine = str(row.get("engine", "dwarf"))
    return f"{engine}-sync" if engine == "langgraph" and row.get("durability") == "sync" else engine


def _job(label: str, db: str, workload: str, sizes: dict[str, list[str]], dsn: str) -> Job:
    if label == "dwarf":
        argv = ["run"]
    else:
        engine, _, variant = label.partition("-")
        argv = ["peers", "--engine", engine]
        if engine == "langgraph":
            argv += ["--durability", variant or "async"]
    argv += ["--db", db, "--workload", workload, *sizes[workload]]
    if dsn and db == "postgres":
        argv += ["--dsn", dsn]
    return Job(label, db, workload, argv)


def plan(dbs: list[str], rounds: int, sizes: dict[str, list[str]], dsn: str = "") -> list[Job]:
    """Every job of a report in running order: per database and workload, the engines round-robin."""
    jobs = []
    for db in dbs:
        for workload in COMPARED:
            for _ in range(rounds):
                jobs += [_job(label, db, workload, sizes, dsn) for label in ENGINES]
        for workload in OURS_ONLY:
            jobs += [_job("dwarf", db, workload, sizes, dsn) for _ in range(rounds)]
    return jobs


def run_job(job: Job) -> dict[str, Any]:
    """Run one job in a subprocess; its JSON row, or a row carrying the error."""
    command = [sys.executable, "-m", "bench", *job.argv]
    try:
        done = subprocess.run(
            command, cwd=ROOT, capture_output=True, text=True, timeout=JOB_TIMEOUT_S, check=False
        )
    except subprocess.TimeoutExpired:
        return _error_row(job, f"timed out after {JOB_TIMEOUT_S} s")
    rows = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
    if done.returncode != 0 or not rows:
        tail = (done.stderr.strip().splitlines() or ["no output"])[-1]
        return _error_row(job, f"exit {done.returncode}: {tail}")
    return dict(rows[-1])


def _error_row(job: Job, error: str) -> dict[str, Any]:
    engine, _, variant = job.label.partition("-")
    row: dict[str, Any] = {"engine": engine, "db": job.db, "workload": job.workload, "error": error}
    if variant:
        row["durability"] = variant
    return row


# --- medians and targets ---


def medians(rows: Iterable[dict[str, Any]]) -> dict[tuple[str, str, str], dict[str, float]]:
    """(engine label, db, workload) -> the median of every numeric field over its successful runs."""
    grouped: dict[tuple[str, str, str], list[dict[str, Any]]] = {}
    for row in rows:
        if "error" in row:
            continue
        grouped.setdefault((engine_label(row), row["db"], row["workload"]), []).append(row)
    result = {}
    for key, runs in grouped.items():
        numbers: dict[str, float] = {"runs": len(runs)}
        for name in runs[0]:
            values = [run[name] for run in runs if isinstance(run.get(name), int | float)]
            if values and not isinstance(values[0], bool):
                numbers[name] = statistics.median(values)
        if key[2] == "parked" and numbers.get("flows"):
            numbers["mb_per_10k"] = numbers["rss_delta_mb"] * 10_000 / numbers["flows"]
        result[key] = numbers
    return result


def evaluate_targets(
    table: dict[tuple[str, str, str], dict[str, float]],
) -> list[tuple[str, str, str, str]]:
    """(target, database, measured, holds) for every target of the issue."""
    verdicts = []
    for (workload, db), (metric, bound, kind, unit) in TARGETS.items():
        sign = "≥" if kind == "min" else "≤"
        target = f"{workload}: {sign} {bound:,g} {unit}"
        numbers = table.get(("dwarf", db, workload))
        if numbers is None or metric not in numbers:
            verdicts.append((target, DB_TITLES[db], "not measured", "—"))
            continue
        value = numbers[metric]
        holds = value >= bound if kind == "min" else value <= bound
        measured = _number(value, metric)
        if workload == "parked" and numbers.get("flows") != 10_000:
            measured += f" (scaled from {int(numbers['flows']):,} flows)"
        verdicts.append((target, DB_TITLES[db], measured, "yes" if holds else "**no**"))
    return verdicts


def _number(value: float, metric: str) -> str:
    if metric in {"steps_per_s", "flows_per_s"}:
        return f"{value:,.0f}"
    if metric.endswith("_ms"):
        return f"{value:,.1f} ms" if value >= 10 else f"{value:,.2f} ms"
    if metric == "mb_per_10k":
        return f"{value:,.1f} MB"
    if metric == "queries_per_s_per_shard":
        return f"{value:,.2f} queries/s"
    return f"{value:,.2f}"


def _ratio(ours: float | None, peer: float | None, higher_is_better: bool) -> str:
    if not ours or not peer:
        return "—"
    ratio = ours / peer if higher_is_better else peer / ours
    return f"{ratio:,.1f}{TIMES}"


# --- markdown ---

WORKLOAD_TEXT = {
    "linear3": (
        "linear3: throughput of three sequential steps",
        "{flows} flows of T0 → T1 → T2 (no-op tasks), {concurrency} concurrent submitters; steps per second.",
        "steps_per_s",
    ),
    "fanout": (
        "fanout: one step, {width} parallel steps, a join",
        "{flows} flows of Split → {width} parallel Work → Join (the join reduces the branches' outputs), "
        "{concurrency} concurrent submitters; steps per second ({width} + 2 steps per flow).",
        "steps_per_s",
    ),
    "latency": (
        "latency: one three-step flow at a time",
        "{flows} flows of T0 → T1 → T2 run one after another; the median (p50) time from submitting a "
        "flow to seeing it completed.",
        "p50_ms",
    ),
}


def _sizes_of(rows: list[dict[str, Any]], workload: str) -> dict[str, Any]:
    for row in rows:
        if row.get("workload") == workload and "error" not in row:
            return {
                "flows": row.get("flows"),
                "concurrency": row.get("concurrency"),
                "width": row.get("width"),
            }
    return {"flows": "?", "concurrency": "?", "width": "?"}


def _comparison_table(table: dict[tuple[str, str, str], dict[str, float]], workload: str, metric: str) -> str:
    higher = metric == "steps_per_s"
    peers = [label for label in ENGINES if label != "dwarf"]
    header = ["database", *(ENGINE_TITLES[label] for label in ENGINES)]
    header += [f"dwarf vs {ENGINE_TITLES[label]}" for label in peers]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for db in ("sqlite", "postgres"):
        values = {label: table.get((label, db, workload), {}).get(metric) for label in ENGINES}
        if all(value is None for value in values.values()):
            continue
        cells = [DB_TITLES[db]]
        cells += [_number(value, metric) if value is not None else "—" for value in values.values()]
        cells += [_ratio(values["dwarf"], values[label], higher) for label in peers]
        lines.append("| " + " | ".join(cells) + " |")
    if higher:
        lines.append(
            f"\n*dwarf vs X* is dwarf's median steps/s divided by X's: above 1{TIMES} dwarf is faster."
        )
    else:
        lines.append(
            f"\n*dwarf vs X* is X's median p50 divided by dwarf's: above 1{TIMES} dwarf answers sooner."
        )
    return "\n".join(lines)


def _tail_table(table: dict[tuple[str, str, str], dict[str, float]], workload: str) -> str:
    lines = ["| database | engine | p50 | p95 | p99 |", "|---|---|---|---|---|"]
    for db in ("sqlite", "postgres"):
        for label in ENGINES:
            numbers = table.get((label, db, workload))
            if numbers is None:
                continue
            cells = [_number(numbers.get(name, 0.0), name) for name in ("p50_ms", "p95_ms", "p99_ms")]
            lines.append(f"| {DB_TITLES[db]} | {ENGINE_TITLES[label]} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _idle_table(table: dict[tuple[str, str, str], dict[str, float]]) -> str:
    lines = [
        "| database | shards | window | queries/s/shard | transactions/s/shard | raw SQLite statements/s |",
        "|---|---|---|---|---|---|",
    ]
    for db in ("sqlite", "postgres"):
        numbers = table.get(("dwarf", db, "idle"))
        if numbers is None:
            continue
        raw = numbers.get("sqlite_raw_per_s_per_shard")
        lines.append(
            f"| {DB_TITLES[db]} | {int(numbers.get('shards', 1))} | {numbers.get('elapsed_s', 0):.0f} s "
            f"| {numbers['queries_per_s_per_shard']:.2f} | {numbers['transactions_per_s_per_shard']:.2f} "
            f"| {'—' if raw is None else f'{raw:.2f}'} |"
        )
    return "\n".join(lines)


def _parked_table(table: dict[tuple[str, str, str], dict[str, float]]) -> str:
    lines = [
        "| database | parked flows | RSS before | RSS after | extra RSS | per flow | per 10,000 flows |",
        "|---|---|---|---|---|---|---|",
    ]
    for db in ("sqlite", "postgres"):
        numbers = table.get(("dwarf", db, "parked"))
        if numbers is None:
            continue
        lines.append(
            f"| {DB_TITLES[db]} | {int(numbers['flows']):,} | {numbers['rss_before_mb']:.1f} MB "
            f"| {numbers['rss_after_mb']:.1f} MB | {numbers['rss_delta_mb']:.1f} MB "
            f"| {numbers['kb_per_flow']:.2f} KB | {numbers['mb_per_10k']:.1f} MB |"
        )
    return "\n".join(lines)


def _errors(rows: list[dict[str, Any]]) -> str:
    failed = [row for row in rows if "error" in row]
    if not failed:
        return ""
    lines = ["## Runs that failed", "", "Their medians use the remaining runs.", ""]
    for row in failed:
        lines.append(
            f"- {ENGINE_TITLES.get(engine_label(row), row['engine'])}, {row['db']}, "
            f"{row['workload']}: {row['error']}"
        )
    return "\n".join(lines)


@dataclass
class FlatCost:
    """The flat-cost part of a report: the rows measured now (``after``), the saved rows of the engine
    before issue 14 (``before``), and what their files say about them (engine, date, notes)."""

    after: list[dict[str, Any]] = field(default_factory=list)
    before: list[dict[str, Any]] = field(default_factory=list)
    after_meta: dict[str, Any] = field(default_factory=dict)
    before_meta: dict[str, Any] = field(default_factory=dict)


BEFORE_ROWS = os.path.join(ROOT, "bench", "flatcost_before.json")
"""The flat-cost rows of the engine before issue 14 (commit 8de55ae), measured with this bench."""


def render_markdown(
    rows: list[dict[str, Any]],
    machine: dict[str, str],
    *,
    quick: bool = False,
    rounds: int = 3,
    flatcost: FlatCost | None = None,
) -> str:
    """The report as markdown, from result rows (as ``bench run``/``bench peers`` print them) and, with
    ``flatcost``, the flat-cost sections."""
    table = medians(rows)
    verdicts = evaluate_targets(table)
    if flatcost is not None and flatcost.after:
        from bench import flatcost as flat

        verdicts += flat.evaluate_targets(flatcost.after)
    parts = [
        "# Benchmarks",
        "",
        "dwarf against two Python engines for durable workflows, [DBOS](https://docs.dbos.dev) and "
        "[LangGraph](https://langchain-ai.github.io/langgraph/) with its SQLite and PostgreSQL "
        "checkpointers, on the same no-op workloads. Tasks do nothing, so the numbers measure each "
        "engine's own overhead and its use of the database, not the work. This page is generated by "
        "`python -m bench report`; do not edit it by hand.",
        "",
    ]
    if quick:
        parts += [
            "> **Quick smoke run** (`--quick`): tiny sizes and one round. These numbers show that "
            "the harness works, not how fast anything is.",
            "",
        ]
    parts += [
        f"Each number is the median of {rounds} run{'s' if rounds != 1 else ''}. Rounds are interleaved "
        "(dwarf, DBOS, LangGraph, LangGraph sync, dwarf, ...) so that noise on the machine falls on all "
        "engines alike; every run is a fresh process with a fresh database. The machine has "
        f"{machine.get('cores', '?')} cores and other jobs may have run on it at the same time: treat "
        "differences under about 20% as noise.",
        "",
        "## Machine",
        "",
        "| | |",
        "|---|---|",
    ]
    parts += [f"| {name} | {value} |" for name, value in machine.items()]
    parts += ["", "## Targets", "", "| target | database | measured (median) | holds |", "|---|---|---|---|"]
    parts += [f"| {target} | {db} | {value} | {holds} |" for target, db, value, holds in verdicts]
    if flatcost is not None and flatcost.after:
        parts += [
            "",
            "The flat-cost targets (backlog, growing, aged, state size) come from one run each (an aged "
            "run measures each database 3 times, alternating, and reports the medians); their sections "
            "below show them next to the engine before issue 14.",
        ]
    parts += ["", "![dwarf, DBOS and LangGraph on SQLite and PostgreSQL](images/benchmarks.png)", ""]
    for workload in COMPARED:
        title, description, metric = WORKLOAD_TEXT[workload]
        sizes = _sizes_of(rows, workload)
        parts += [f"## {title.format(**sizes)}", "", description.format(**sizes), ""]
        parts += [_comparison_table(table, workload, metric), ""]
        parts += ["Whole-flow latency under this load (median of the runs' percentiles):", ""]
        parts += [_tail_table(table, workload), ""]
    parts += [
        "## idle: queries of an engine with no work",
        "",
        "An engine is started on an empty database and left alone; every statement it sends is counted. "
        "Method: " + _method(rows, "idle"),
        "",
        _idle_table(table),
        "",
        "## parked: memory of interrupted flows",
        "",
        "Flows whose only task calls `flow.interrupt()` are created until all of them wait for a resume. "
        "Method: " + _method(rows, "parked") + " On SQLite this includes SQLite's in-process page cache.",
        "",
        _parked_table(table),
        "",
    ]
    if flatcost is not None and (flatcost.before or flatcost.after):
        from bench import flatcost as flat

        parts += [
            flat.render_sections(flatcost.before, flatcost.after, flatcost.before_meta, flatcost.after_meta),
            "",
        ]
    parts += [
        "## How each engine runs the workloads",
        "",
        "- **dwarf**: graphs of no-op async tasks served by `TestProxy`; `engine.run` from concurrent "
        "asyncio submitters; the fan-out is a `for_each` transition into a fan-in node with an `add` "
        "reducer. Default engine settings.",
        "- **DBOS**: `@DBOS.workflow` async functions calling `@DBOS.step` async functions, awaited from "
        "concurrent asyncio submitters (faster here than sync workflows on threads). The fan-out "
        "creates its branch steps as tasks in a fixed order and gathers them, as DBOS documents for "
        "parallel steps; a join step sums their outputs. Default configuration.",
        "- **LangGraph**: a `StateGraph` compiled with `AsyncSqliteSaver` / `AsyncPostgresSaver` (on an "
        "`AsyncConnectionPool` with one connection per submitter), a new thread id per flow so every "
        "superstep is checkpointed. The fan-out sends one `Send` per branch; the branches append to a "
        "list channel with an `operator.add` reducer and the join sums it. *LangGraph* uses its default "
        '`durability="async"` (a checkpoint is written while the next step runs); *LangGraph (sync)* '
        'uses `durability="sync"` (written before the next step starts), the closer match to dwarf '
        "and DBOS, which commit every step before moving on.",
        "",
        "Every run checks that each step of each flow really executed (and that the fan-out joined all "
        "of its branches) before it reports a number.",
        "",
        "## Numbers quoted in the issue",
        "",
        "Measured earlier (DBOS, LangGraph) or published (Go dwarf); steps/s, SQLite / PostgreSQL.",
        "",
        "| workload | engine | steps/s |",
        "|---|---|---|",
    ]
    parts += [f"| {workload} | {engine} | {numbers} |" for workload, engine, numbers in PUBLISHED]
    parts += [
        "",
        "## Reproduce",
        "",
        "```sh",
        ".venv/bin/pip install -e '.[dev,bench]'",
        "# the whole report (about 15 minutes; PostgreSQL at postgresql://postgres@127.0.0.1:5432)",
        ".venv/bin/python -m bench report",
        "# one measurement of ours, or of a peer",
        ".venv/bin/python -m bench run --db sqlite --workload linear3 --flows 1000 --concurrency 32",
        ".venv/bin/python -m bench run --db postgres --workload fanout --flows 20 --width 100",
        ".venv/bin/python -m bench run --db sqlite --workload idle --seconds 10",
        ".venv/bin/python -m bench run --db postgres --workload parked --flows 10000",
        ".venv/bin/python -m bench peers --engine dbos --db postgres --workload linear3",
        ".venv/bin/python -m bench peers --engine langgraph --durability sync --db sqlite --workload fanout",
        "# the flat-cost workloads alone, small vs large, on both databases (about 15 minutes)",
        ".venv/bin/python -m bench flatcost",
        "# the report without them, or with them from saved rows",
        ".venv/bin/python -m bench report --no-flatcost",
        ".venv/bin/python -m bench report --flatcost-rows /tmp/dwarf-flatcost-<time>.jsonl",
        "# the before rows: today's bench against the engine before issue 14",
        "git worktree add /tmp/fc_before 8de55ae",
        "PYTHONPATH=/tmp/fc_before/src:. .venv/bin/python -m bench flatcost --large-backlog 10000 \\",
        "    --save bench/flatcost_before.json",
        "# our workloads at a small size (what `make bench` runs)",
        "make bench",
        "```",
        "",
        "`--dsn` (or `DWARF_BENCH_DSN`) points the PostgreSQL runs at another server; each run creates "
        "and drops its own database there.",
    ]
    errors = _errors(rows)
    if errors:
        parts += ["", errors]
    return "\n".join(parts) + "\n"


def _method(rows: list[dict[str, Any]], workload: str) -> str:
    for row in rows:
        if row.get("workload") == workload and "method" in row:
            return str(row["method"]).rstrip(".") + "."
    return "(no run)."


# --- chart ---


def render_chart(rows: list[dict[str, Any]], path: str) -> None:
    """A grouped bar chart: per workload, SQLite and PostgreSQL, one bar per engine."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FuncFormatter, NullFormatter

    table = medians(rows)
    panels = [
        ("linear3", "steps_per_s", "linear3: steps/s (higher is better)"),
        ("fanout", "steps_per_s", "fanout: steps/s (higher is better)"),
        ("latency", "p50_ms", "latency: p50 ms (lower is better)"),
    ]
    colours = {"dwarf": "#2b6cb0", "dbos": "#dd6b20", "langgraph": "#38a169", "langgraph-sync": "#9ae6b4"}
    figure, axes = plt.subplots(1, len(panels), figsize=(14, 4.6))
    width = 0.2
    for axis, (workload, metric, title) in zip(axes, panels, strict=True):
        for index, label in enumerate(ENGINES):
            xs, heights = [], []
            for position, db in enumerate(("sqlite", "postgres")):
                value = table.get((label, db, workload), {}).get(metric)
                if value is not None:
                    xs.append(position + (index - 1.5) * width)
                    heights.append(value)
            bars = axis.bar(xs, heights, width, label=ENGINE_TITLES[label], color=colours[label])
            axis.bar_label(bars, labels=[_short(value) for value in heights], fontsize=7, padding=2)
        axis.set_title(title, fontsize=10)
        axis.set_xticks([0, 1], [DB_TITLES["sqlite"], DB_TITLES["postgres"]])
        axis.set_yscale("log")
        # Plain numbers on the log axis: "2,000" reads better than "2 x 10^3".
        axis.yaxis.set_major_formatter(FuncFormatter(lambda value, _: _short(value)))
        axis.yaxis.set_minor_formatter(NullFormatter())
        axis.grid(axis="y", alpha=0.3)
        axis.margins(y=0.15)
    handles, labels = axes[0].get_legend_handles_labels()
    figure.legend(handles, labels, loc="lower center", ncol=len(ENGINES), fontsize=9, frameon=False)
    figure.suptitle("dwarf vs DBOS vs LangGraph, no-op workloads (medians; log scale)", fontsize=11)
    figure.tight_layout(rect=(0, 0.07, 1, 1))
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    figure.savefig(path, dpi=110)
    plt.close(figure)


def _short(value: float) -> str:
    return f"{value:,.0f}" if value >= 10 else f"{value:.2g}"


# --- the machine ---


def machine_info(dsn: str = "", postgres: bool = True) -> dict[str, str]:
    import sqlite3
    from importlib import metadata

    cpu = ""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as info:
            cpu = next((line.split(":", 1)[1].strip() for line in info if line.startswith("model name")), "")
    except OSError:
        pass
    pg_version = "not reachable"
    if postgres:
        try:
            import psycopg

            with psycopg.connect(dsn or DEFAULT_PG_DSN, connect_timeout=3) as conn:
                row = conn.execute("SHOW server_version").fetchone()
                pg_version = str(row[0]) if row else "?"
        except Exception:
            pass

    def version(package: str) -> str:
        try:
            return metadata.version(package)
        except metadata.PackageNotFoundError:
            return "not installed"

    return {
        "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "cores": f"{os.cpu_count()}" + (f" ({cpu})" if cpu else ""),
        "system": f"{platform.system()} {platform.release()}",
        "Python": platform.python_version(),
        "PostgreSQL": pg_version,
        "SQLite": sqlite3.sqlite_version,
        "dwarf": f"{version('dwarf-workflow')} ({engine_source()})",
        "DBOS": version("dbos"),
        "LangGraph": f"{version('langgraph')} (checkpoint {version('langgraph-checkpoint')}, sqlite "
        f"{version('langgraph-checkpoint-sqlite')}, postgres {version('langgraph-checkpoint-postgres')})",
        "psycopg": version("psycopg"),
    }


def engine_source() -> str:
    """Which dwarf the runs measure: the commit of the source tree ``import dwarf`` finds (which
    PYTHONPATH may point at another checkout than this bench's) and whether src/ there has uncommitted
    changes; or the installed version when it is no git checkout."""
    from importlib import metadata

    import dwarf

    folder = os.path.dirname(os.path.abspath(dwarf.__file__))

    def git(*argv: str) -> str:
        done = subprocess.run(["git", *argv], cwd=folder, capture_output=True, text=True, check=False)
        return done.stdout.strip() if done.returncode == 0 else ""

    commit = git("rev-parse", "--short", "HEAD")
    if not commit:
        return f"dwarf {metadata.version('dwarf-workflow')}"
    dirty = git("status", "--porcelain", "--", folder)
    return f"commit {commit}" + (" with uncommitted changes" if dirty else "")


# --- entry points ---


def _log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def main(args: argparse.Namespace) -> int:
    """``python -m bench report``."""
    quick = bool(args.quick)
    rounds = args.rounds or (1 if quick else 3)
    output = args.output_dir or (tempfile.mkdtemp(prefix="dwarf-bench-report-") if quick else "docs")
    if args.rows:
        with open(args.rows, encoding="utf-8") as saved:
            rows = [json.loads(line) for line in saved if line.strip()]
        if args.rerun_failed:
            rows = _rerun_failed(rows, QUICK_SIZES if quick else FULL_SIZES, args.dsn, args.rows)
        postgres = any(row.get("db") == "postgres" for row in rows)
        rounds = args.rounds or int(max((m["runs"] for m in medians(rows).values()), default=1))
    else:
        postgres = postgres_reachable(args.dsn)
        dbs = ["sqlite", "postgres"] if postgres else ["sqlite"]
        if not postgres:
            _log(f"PostgreSQL is not reachable at {args.dsn or DEFAULT_PG_DSN}: SQLite only")
        jobs = plan(dbs, rounds, QUICK_SIZES if quick else FULL_SIZES, args.dsn)
        rows_file = os.path.join(tempfile.gettempdir(), f"dwarf-bench-{int(time.time())}.jsonl")
        rows = []
        began = time.perf_counter()
        with open(rows_file, "w", encoding="utf-8") as saved:
            for number, job in enumerate(jobs, start=1):
                _log(f"[{number}/{len(jobs)}] {' '.join(job.argv)}")
                row = run_job(job)
                rows.append(row)
                saved.write(json.dumps(row) + "\n")
                saved.flush()
                print(json.dumps(row), flush=True)
        _log(f"{len(jobs)} runs in {time.perf_counter() - began:.0f} s; rows saved in {rows_file}")
    flat = _flatcost(args, quick, postgres)
    markdown = render_markdown(
        rows, machine_info(args.dsn, postgres), quick=quick, rounds=rounds, flatcost=flat
    )
    markdown_path = os.path.join(output, "benchmarks.md")
    chart_path = os.path.join(output, "images", "benchmarks.png")
    os.makedirs(output, exist_ok=True)
    with open(markdown_path, "w", encoding="utf-8") as page:
        page.write(markdown)
    render_chart(rows, chart_path)
    _log(f"wrote {markdown_path} and {chart_path}")
    return 0


def _flatcost(args: argparse.Namespace, quick: bool, postgres: bool) -> FlatCost | None:
    """The flat-cost part of the report: None with ``--no-flatcost``; else the saved "before" rows and
    the "after" rows from ``--flatcost-rows``, or run now (at the issue's sizes; ``--quick``: tiny) unless
    the report itself is rendered from ``--rows``."""
    if args.no_flatcost:
        return None
    from bench import flatcost

    result = FlatCost()
    if os.path.exists(BEFORE_ROWS):
        result.before, result.before_meta = flatcost.load_rows(BEFORE_ROWS)
    if args.flatcost_rows:
        result.after, result.after_meta = flatcost.load_rows(args.flatcost_rows)
    elif args.rows:
        _log("--rows without --flatcost-rows: the flat-cost sections show the before rows only")
    else:
        dbs = ["sqlite", "postgres"] if postgres else ["sqlite"]
        rows_file = os.path.join(tempfile.gettempdir(), f"dwarf-flatcost-{int(time.time())}.jsonl")
        began = time.perf_counter()
        result.after = flatcost.run_plan(
            flatcost.PLANS["smoke" if quick else "target"], dbs, args.dsn, rows_file
        )
        _log(f"flat-cost runs in {time.perf_counter() - began:.0f} s; rows saved in {rows_file}")
        result.after_meta = flatcost.rows_meta(result.after)
    return result


def _rerun_failed(
    rows: list[dict[str, Any]], sizes: dict[str, list[str]], dsn: str, path: str
) -> list[dict[str, Any]]:
    """Run each failed row's measurement again (in place, keeping its round) and save the rows back."""
    for index, row in enumerate(rows):
        if "error" in row:
            job = _job(engine_label(row), row["db"], row["workload"], sizes, dsn)
            _log(f"again: {' '.join(job.argv)}")
            rows[index] = run_job(job)
    with open(path, "w", encoding="utf-8") as saved:
        saved.writelines(json.dumps(row) + "\n" for row in rows)
    return rows


def suite(args: argparse.Namespace) -> int:
    """``python -m bench suite`` (``make bench``): every workload of ours, small, on each database."""
    dbs = ["sqlite", "postgres"] if postgres_reachable(args.dsn) else ["sqlite"]
    if "postgres" not in dbs:
        _log(f"PostgreSQL is not reachable at {args.dsn or DEFAULT_PG_DSN}: SQLite only")
    failures = 0
    began = time.perf_counter()
    for db in dbs:
        for workload in SUITE_SIZES:
            row = run_job(_job("dwarf", db, workload, SUITE_SIZES, args.dsn))
            failures += "error" in row
            print(json.dumps(row), flush=True)
    _log(f"suite: {time.perf_counter() - began:.0f} s")
    return 1 if failures else 0
