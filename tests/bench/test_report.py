"""The report: medians over interleaved rounds, comparison tables, targets, and the plan of runs."""

from __future__ import annotations

import re
from typing import Any

import pytest
from bench.report import (
    BEFORE_ROWS,
    ENGINES,
    TIMES,
    FlatCost,
    evaluate_targets,
    medians,
    plan,
    render_chart,
    render_markdown,
)

MACHINE = {"cores": "2", "Python": "3.11", "PostgreSQL": "15", "date": "2026-01-01 00:00 UTC"}


def row(engine: str, db: str, workload: str, **fields: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "engine": engine,
        "db": db,
        "workload": workload,
        "flows": 1000,
        "concurrency": 32,
    }
    if engine == "langgraph-sync":
        base |= {"engine": "langgraph", "durability": "sync"}
    return base | fields


def throughput(engine: str, db: str, workload: str, steps: float, p50: float = 5.0) -> dict[str, Any]:
    return row(engine, db, workload, steps_per_s=steps, p50_ms=p50, p95_ms=p50 * 2, p99_ms=p50 * 3)


def full_rows() -> list[dict[str, Any]]:
    rows = []
    for db in ("sqlite", "postgres"):
        rows += [
            throughput("dwarf", db, "linear3", 3000),
            throughput("dbos", db, "linear3", 250),
            throughput("langgraph", db, "linear3", 400),
            throughput("langgraph-sync", db, "linear3", 500),
            throughput("dwarf", db, "fanout", 1800, p50=300),
            throughput("dbos", db, "fanout", 100, p50=900),
            throughput("dwarf", db, "latency", 60, p50=4.0),
            throughput("langgraph", db, "latency", 60, p50=20.0),
            row(
                "dwarf",
                db,
                "idle",
                shards=1,
                elapsed_s=10.0,
                queries_per_s_per_shard=0.4,
                transactions_per_s_per_shard=0.4,
                method="counted at the store layer",
            ),
            row(
                "dwarf",
                db,
                "parked",
                flows=10_000,
                rss_before_mb=30.0,
                rss_after_mb=52.0,
                rss_delta_mb=22.0,
                kb_per_flow=2.25,
                method="VmRSS after gc",
            ),
        ]
    return rows


def table_line(markdown: str, section: str, database: str) -> list[str]:
    """The cells of a database's line in the first table after a section heading."""
    body = markdown.split(f"## {section}", 1)[1]
    line = next(line for line in body.splitlines() if line.startswith(f"| {database} |"))
    return [cell.strip() for cell in line.strip("|").split("|")]


def test_medians_are_taken_per_engine_database_and_workload() -> None:
    rows = [throughput("dwarf", "sqlite", "linear3", steps) for steps in (100, 300, 200)]
    rows.append(throughput("dwarf", "postgres", "linear3", 50))
    table = medians(rows)
    assert table[("dwarf", "sqlite", "linear3")]["steps_per_s"] == 200
    assert table[("dwarf", "postgres", "linear3")]["steps_per_s"] == 50


def test_langgraph_sync_durability_is_a_column_of_its_own() -> None:
    table = medians(
        [
            throughput("langgraph", "sqlite", "linear3", 400),
            throughput("langgraph-sync", "sqlite", "linear3", 500),
        ]
    )
    assert table[("langgraph", "sqlite", "linear3")]["steps_per_s"] == 400
    assert table[("langgraph-sync", "sqlite", "linear3")]["steps_per_s"] == 500


def test_a_throughput_table_shows_each_engine_and_dwarfs_ratio_to_each_peer() -> None:
    markdown = render_markdown(full_rows(), MACHINE)
    cells = table_line(markdown, "linear3", "SQLite")
    assert cells == ["SQLite", "3,000", "250", "400", "500", f"12.0{TIMES}", f"7.5{TIMES}", f"6.0{TIMES}"]


def test_the_latency_ratio_is_how_many_times_sooner_dwarf_answers() -> None:
    markdown = render_markdown(full_rows(), MACHINE)
    cells = table_line(markdown, "latency", "PostgreSQL")
    assert cells[1] == "4.00 ms"
    assert cells[6] == f"5.0{TIMES}"  # LangGraph 20 ms / dwarf 4 ms
    assert cells[2] == "—" and cells[5] == "—"  # DBOS did not run


def test_targets_say_which_hold() -> None:
    verdicts = {(target, db): holds for target, db, _, holds in evaluate_targets(medians(full_rows()))}
    assert verdicts[("linear3: ≥ 1,500 steps/s", "SQLite")] == "yes"
    assert verdicts[("fanout: ≥ 2,000 steps/s", "PostgreSQL")] == "**no**"
    assert verdicts[("latency: ≤ 10 ms p50", "SQLite")] == "yes"
    assert verdicts[("idle: ≤ 1 queries/s/shard", "SQLite")] == "yes"
    assert verdicts[("parked: ≤ 50 MB per 10,000 parked flows", "PostgreSQL")] == "yes"


def test_a_target_without_a_run_is_reported_as_not_measured() -> None:
    verdicts = evaluate_targets(medians([throughput("dwarf", "sqlite", "linear3", 3000)]))
    measured = {(target, db): value for target, db, value, _ in verdicts}
    assert measured[("linear3: ≥ 1,800 steps/s", "PostgreSQL")] == "not measured"


def test_parked_memory_from_fewer_flows_is_scaled_to_ten_thousand() -> None:
    rows = [
        row(
            "dwarf",
            "sqlite",
            "parked",
            flows=1000,
            rss_before_mb=30.0,
            rss_after_mb=33.0,
            rss_delta_mb=3.0,
            kb_per_flow=3.07,
        )
    ]
    [(_, _, measured, holds)] = [
        v for v in evaluate_targets(medians(rows)) if v[0].startswith("parked") and v[1] == "SQLite"
    ]
    assert measured == "30.0 MB (scaled from 1,000 flows)"
    assert holds == "yes"


def test_failed_runs_are_listed_and_left_out_of_the_medians() -> None:
    rows = [
        throughput("dbos", "sqlite", "linear3", 250),
        {"engine": "dbos", "db": "sqlite", "workload": "linear3", "error": "exit 1: boom"},
    ]
    markdown = render_markdown(rows, MACHINE)
    assert medians(rows)[("dbos", "sqlite", "linear3")]["runs"] == 1
    assert "- DBOS, sqlite, linear3: exit 1: boom" in markdown


def test_the_page_names_the_machine_and_the_commands_to_reproduce() -> None:
    markdown = render_markdown(full_rows(), MACHINE)
    assert "| PostgreSQL | 15 |" in markdown
    assert "python -m bench report" in markdown
    assert "median of 3 runs" in markdown


def test_a_quick_run_says_its_numbers_mean_nothing() -> None:
    assert "Quick smoke run" in render_markdown(full_rows(), MACHINE, quick=True, rounds=1)
    assert "Quick smoke run" not in render_markdown(full_rows(), MACHINE)


def test_the_page_has_no_python_blocks_for_the_docs_test_to_run() -> None:
    markdown = render_markdown(full_rows(), MACHINE)
    assert not re.search(r"^```python", markdown, re.MULTILINE)


def test_the_plan_interleaves_the_engines_round_by_round() -> None:
    sizes: dict[str, list[str]] = {
        workload: [] for workload in ("linear3", "fanout", "latency", "idle", "parked")
    }
    jobs = plan(["sqlite"], 2, sizes)
    linear3 = [job.label for job in jobs if job.workload == "linear3"]
    assert linear3 == ENGINES + ENGINES
    assert [job.label for job in jobs if job.workload in {"idle", "parked"}] == ["dwarf"] * 4


def test_the_plan_passes_the_admin_dsn_to_postgres_runs_only() -> None:
    sizes: dict[str, list[str]] = {
        workload: [] for workload in ("linear3", "fanout", "latency", "idle", "parked")
    }
    jobs = plan(["sqlite", "postgres"], 1, sizes, dsn="postgresql://x@h/postgres")
    assert all(("--dsn" in job.argv) == (job.db == "postgres") for job in jobs)
    langgraph_sync = next(job for job in jobs if job.label == "langgraph-sync")
    assert langgraph_sync.argv[:5] == ["peers", "--engine", "langgraph", "--durability", "sync"]


def test_the_chart_is_written_as_a_png(tmp_path: Any) -> None:
    pytest.importorskip("matplotlib")
    path = tmp_path / "images" / "benchmarks.png"
    render_chart(full_rows(), str(path))
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_the_flat_cost_targets_and_sections_join_the_report() -> None:
    from tests.bench.test_flatcost import flat_rows

    flat = FlatCost(after=flat_rows(), before=flat_rows(backlog_large=10_000, share=0.3))
    markdown = render_markdown(full_rows(), MACHINE, flatcost=flat)
    targets = markdown.split("## Targets", 1)[1].split("\n## ", 1)[0]
    assert "| linear3: ≥ 1,500 steps/s | SQLite |" in targets
    assert (
        "| backlog: drain rate at 100,000 queued flows ≥ 80% of the rate at 1,000 | PostgreSQL | 90% "
        in targets
    )
    assert "| state size: 16 KiB state ≥ 60% of the 1 KiB rate | SQLite | 55% " in targets
    sections = [line for line in markdown.splitlines() if line.startswith("## ")]
    flat_titles = [line.split(":")[0] for line in sections if "issue 14" in line or ":" in line]
    assert flat_titles.index("## backlog") < flat_titles.index("## growing state")
    assert flat_titles.index("## aged database") < flat_titles.index("## state size")
    assert "## backlog" not in render_markdown(full_rows(), MACHINE)


def test_the_report_takes_flat_cost_options() -> None:
    from bench.__main__ import build_parser

    args = build_parser().parse_args(["report", "--no-flatcost", "--flatcost-rows", "saved.jsonl"])
    assert args.no_flatcost and args.flatcost_rows == "saved.jsonl"
    args = build_parser().parse_args(["report"])
    assert not args.no_flatcost and args.flatcost_rows == ""


def test_the_saved_before_rows_cover_every_flat_cost_workload_on_both_databases() -> None:
    from bench.flatcost import load_rows

    rows, meta = load_rows(BEFORE_ROWS)
    assert meta["engine"].startswith("commit 8de55ae")
    labels = {(row["db"], row["label"]) for row in rows if "error" not in row}
    for db in ("sqlite", "postgres"):
        for label in ("backlog-small", "backlog-large", "growing", "aged", "statesize"):
            assert (db, label) in labels
