"""The flat-cost workloads (bench/flatcost.py) run at a tiny size on SQLite and report consistent numbers;
the flatcost table turns rows into "how many times more a step costs at the large size"."""

from __future__ import annotations

import json
from typing import Any, cast

import pytest
from bench.__main__ import main
from bench.flatcost import (
    PLANS,
    _settings,
    evaluate_targets,
    growing_api,
    load_rows,
    plan_of,
    render_sections,
    render_table,
    save_rows,
    state_sizes,
)
from bench.report import TIMES

from dwarf import Engine, Flow


def run_line(capsys: pytest.CaptureFixture[str], *argv: str) -> dict[str, Any]:
    assert main(["run", "--db", "sqlite", *argv]) == 0
    [line] = [json.loads(text) for text in capsys.readouterr().out.splitlines()]
    assert line["engine"] == "dwarf" and line["db"] == "sqlite"
    return dict(line)


def test_backlog_reports_create_time_apart_from_the_drain_rate(capsys: pytest.CaptureFixture[str]) -> None:
    line = run_line(capsys, "--workload", "backlog", "--flows", "20")
    assert (line["workload"], line["flows"]) == ("backlog", 20)
    assert line["creates_per_s"] == pytest.approx(20 / line["create_s"], rel=0.05)
    # Three steps per flow, drained from the worker engine's startup call to the last completion.
    assert line["drain_steps_per_s"] == pytest.approx(60 / line["drain_s"], rel=0.05)
    # The first step may run before startup returns: the workers start inside it.
    assert 0 < line["startup_s"] < line["drain_s"] and 0 < line["first_step_s"] < line["drain_s"]
    assert line["first_tenth_steps_per_s"] > 0 and line["last_tenth_steps_per_s"] > 0
    # The database's clock and the bench's agree to well under the drain's length.
    assert -0.05 < line["first_flow_done_s"] <= line["median_flow_done_s"] <= line["drain_s"] + 0.05


def test_growing_compares_early_and_late_turns_of_one_flow(capsys: pytest.CaptureFixture[str]) -> None:
    line = run_line(capsys, "--workload", "growing", "--turns", "25", "--api", "set")
    assert (line["workload"], line["turns"]) == ("growing", 25)
    assert line["api"] == "get + set of the whole list"
    assert line["late_over_early"] == pytest.approx(line["late_turn_ms"] / line["early_turn_ms"], rel=0.02)
    assert len(line["median_turn_ms_by_tenth"]) == 10
    # 25 items of 1 KiB each in the final state, and the database grew by at least that much.
    assert 25 * 1024 < line["final_state_bytes"] < 27 * 1024
    assert line["db_bytes_growth"] >= line["final_state_bytes"]


def test_growing_uses_flow_append_when_the_flow_has_it(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    appended: list[str] = []

    def append(flow: Flow, field: str, *items: Any) -> None:
        appended.append(field)
        flow.set(field, [*(flow.get(field) or []), *items])

    monkeypatch.setattr(Flow, "append", append, raising=False)
    line = run_line(capsys, "--workload", "growing", "--turns", "21")
    assert line["api"] == "flow.append"
    # The warm-up flow's 3 turns and the measured flow's 21.
    assert appended == ["items"] * 24
    assert 21 * 1024 < line["final_state_bytes"] < 23 * 1024


def test_growing_falls_back_to_get_and_set_on_a_flow_without_append(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delattr(Flow, "append", raising=False)
    assert growing_api("auto") == growing_api("set") == "set"
    with pytest.raises(ValueError, match="no append"):
        growing_api("append")


def test_aged_reports_the_rate_on_history_next_to_the_fresh_rate(capsys: pytest.CaptureFixture[str]) -> None:
    line = run_line(capsys, "--workload", "aged", "--history", "30", "--flows", "10", "--concurrency", "2")
    assert (line["workload"], line["history"], line["flows"]) == ("aged", 30, 10)
    assert line["aged_over_fresh"] == pytest.approx(
        line["aged_steps_per_s"] / line["fresh_steps_per_s"], rel=0.01
    )
    assert line["fresh"]["flows"] == line["aged"]["flows"] == 10
    assert line["fill_flows_per_s"] == pytest.approx(30 / line["fill_s"], rel=0.05)
    assert "autovacuum" not in line  # a PostgreSQL-only field


def test_statesize_measures_every_size_against_one_kib(capsys: pytest.CaptureFixture[str]) -> None:
    line = run_line(
        capsys, "--workload", "statesize", "--state-bytes", "8192", "--flows", "6", "--concurrency", "2"
    )
    small, large = line["sizes"]
    assert (small["state_bytes"], large["state_bytes"]) == (1024, 8192)
    assert small["ratio_to_1k"] == 1.0
    assert large["ratio_to_1k"] == pytest.approx(large["steps_per_s"] / small["steps_per_s"], rel=0.01)
    assert line["largest_over_1k"] == large["ratio_to_1k"]
    # Each flow keeps its state in every step row: 8 KiB states take more room than 1 KiB ones.
    assert large["db_bytes"] > small["db_bytes"]


def test_state_sizes_always_include_the_one_kib_baseline() -> None:
    assert state_sizes("") == [1024, 16384, 262144, 1048576]
    assert state_sizes("65536") == [1024, 65536]
    assert state_sizes("4096,1024") == [1024, 4096]
    with pytest.raises(ValueError):
        state_sizes("0")


def test_the_table_says_how_many_times_more_a_step_costs_at_the_large_size() -> None:
    rows: list[dict[str, Any]] = [
        {"label": "backlog-small", "db": "sqlite", "flows": 1000, "drain_steps_per_s": 3000.0,
         "creates_per_s": 3500.0},
        {"label": "backlog-large", "db": "sqlite", "flows": 100000, "drain_steps_per_s": 750.0,
         "creates_per_s": 3400.0},
        {"label": "growing", "db": "sqlite", "turns": 1000, "early_turn_ms": 1.0, "late_turn_ms": 30.0,
         "late_over_early": 30.0, "final_state_bytes": 1024 * 1024},
        {"label": "aged", "db": "postgres", "history": 100000, "fresh_steps_per_s": 1200.0,
         "aged_steps_per_s": 1000.0, "aged_over_fresh": 1000 / 1200, "autovacuum": "off"},
        {"label": "statesize", "db": "postgres", "sizes": [
            {"state_bytes": 1024, "steps_per_s": 1000.0}, {"state_bytes": 1048576, "steps_per_s": 10.0}]},
        {"label": "backlog-small", "db": "postgres", "error": "exit 1: boom"},
    ]  # fmt: skip
    table = render_table(rows)
    assert "| backlog | SQLite | drain steps/s (creates/s) | 3,000 (3,500) at 1,000 flows |" in table
    assert f"750 (3,400) at 100,000 flows | 4.00{TIMES} |" in table
    assert "| growing | SQLite |" in table and f"| 1.00 ms | 30.00 ms | 30.00{TIMES} |" in table
    assert f"100,000 completed flows; autovacuum off | 1,200 | 1,000 | 1.20{TIMES} |" in table
    assert f"state of 1,024 vs 1,048,576 bytes | 1,000 | 10 | 100.00{TIMES} |" in table
    # A workload with a failed half gets no row, and the failure is listed.
    assert "| backlog | PostgreSQL" not in table
    assert "failed: backlog-small on postgres: exit 1: boom" in table


# --- the report's flat-cost part: targets, before/after sections, saved rows ---


def flat_rows(*, backlog_large: int = 100_000, share: float = 0.9, turns: int = 1000) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    for db in ("sqlite", "postgres"):
        rows += [
            {"label": "backlog-small", "workload": "backlog", "db": db, "flows": 1000,
             "drain_steps_per_s": 3000.0, "creates_per_s": 3500.0, "first_flow_done_s": 0.1,
             "median_flow_done_s": 0.5, "method": "drained"},
            {"label": "backlog-large", "workload": "backlog", "db": db, "flows": backlog_large,
             "drain_steps_per_s": 3000.0 * share, "creates_per_s": 3400.0, "first_flow_done_s": 0.1,
             "median_flow_done_s": 50.0, "method": "drained"},
            {"label": "growing", "workload": "growing", "db": db, "turns": turns, "api": "flow.append",
             "early_turn_ms": 1.0, "late_turn_ms": 1.5, "late_over_early": 1.5,
             "final_state_bytes": 1_000_000, "db_bytes_growth": 3_000_000, "method": "one flow"},
            {"label": "aged", "workload": "aged", "db": db, "history": 100_000,
             "fresh_steps_per_s": 1000.0, "aged_steps_per_s": 950.0, "aged_over_fresh": 0.95,
             "db_bytes_with_history": 200_000_000, "method": "two databases"},
            {"label": "statesize", "workload": "statesize", "db": db, "method": "sizes", "sizes": [
                {"state_bytes": 1024, "steps_per_s": 1000.0, "ratio_to_1k": 1.0},
                {"state_bytes": 16384, "steps_per_s": 550.0, "ratio_to_1k": 0.55}]},
        ]  # fmt: skip
    return rows


def test_the_flat_cost_targets_say_which_hold() -> None:
    verdicts = {
        (target.split(":")[0], db, value[:4], holds)
        for target, db, value, holds in evaluate_targets(flat_rows())
    }
    assert ("backlog", "SQLite", "90% ", "yes") in verdicts
    assert ("aged", "PostgreSQL", "95% ", "yes") in verdicts
    assert ("state size", "SQLite", "55% ", "**no**") in verdicts
    growing = [v for v in evaluate_targets(flat_rows()) if v[0].startswith("growing") and v[1] == "SQLite"]
    assert [(value, holds) for _, _, value, holds in growing] == [
        (f"1.50{TIMES} (1.00 → 1.50 ms)", "yes"),
        (f"3.0{TIMES} (3.0 MB for 1.0 MB)", "yes"),
    ]


def test_a_pass_below_the_targets_size_is_no_verdict_but_a_failure_is() -> None:
    verdicts = {
        (t.split(":")[0], db): holds for t, db, _, holds in evaluate_targets(flat_rows(backlog_large=10_000))
    }
    assert verdicts[("backlog", "SQLite")] == "— (only measured at 10,000 flows)"
    failing = flat_rows(backlog_large=10_000, share=0.3)
    verdicts = {(t.split(":")[0], db): holds for t, db, _, holds in evaluate_targets(failing)}
    assert verdicts[("backlog", "PostgreSQL")] == "**no** (at 10,000 flows)"


def test_a_database_without_rows_has_no_flat_cost_targets_and_a_missing_row_is_not_measured() -> None:
    rows = [row for row in flat_rows() if row["db"] == "sqlite" and row["label"] != "aged"]
    verdicts = evaluate_targets(rows)
    assert {db for _, db, _, _ in verdicts} == {"SQLite"}
    [aged] = [v for v in verdicts if v[0].startswith("aged")]
    assert aged[2:] == ("not measured", "—")


def test_the_sections_show_before_and_after_per_database() -> None:
    before = flat_rows(backlog_large=10_000, share=0.3)
    for row in before:
        if row["label"] == "growing":
            row |= {"api": "get + set of the whole list", "late_turn_ms": 50.0, "late_over_early": 50.0,
                    "db_bytes_growth": 1_000_000_000}  # fmt: skip
    markdown = render_sections(
        before,
        flat_rows(),
        {"engine": "commit 8de55ae", "measured": "2026-12-04 11:01 to 11:10 UTC", "notes": ["A note."]},
        {"engine": "commit 864625c with uncommitted changes"},
    )
    for title in ("backlog", "growing state", "aged database", "state size"):
        assert f"\n## {title}:" in markdown
    assert "A note." in markdown and "2026-12-04 11:01 to 11:10 UTC" in markdown
    assert "the engine at commit 864625c with uncommitted changes" in markdown
    backlog = markdown.split("## backlog", 1)[1].split("\n## ", 1)[0]
    assert "| SQLite | before (8de55ae) | 3,000 steps/s | 900 steps/s at 10,000 flows | 30% |" in backlog
    assert "| SQLite | after (864625c) | 3,000 steps/s | 2,700 steps/s at 100,000 flows | 90% |" in backlog
    growing = markdown.split("## growing state", 1)[1].split("\n## ", 1)[0]
    assert "that engine has no `flow.append`" in growing
    assert (
        f"| get + set of the whole list | 1.00 ms | 50.00 ms | 50.00{TIMES} | 1.0 MB | 1,000.0 MB |"
        in growing
    )
    assert "| **no**, **no** |" in growing and "| yes, yes |" in growing
    sizes = markdown.split("## state size", 1)[1]
    assert "| PostgreSQL | after (864625c) | 1,000 (100%) | 550 (55%) | 55% | **no** |" in sizes


def test_saved_rows_load_from_json_lines_or_a_document(tmp_path: Any) -> None:
    rows = flat_rows()[:2]
    lines = tmp_path / "rows.jsonl"
    lines.write_text("".join(json.dumps(row) + "\n" for row in rows))
    assert load_rows(str(lines)) == (rows, {})
    document = tmp_path / "before.json"
    save_rows(str(document), [row | {"started_utc": "2026-12-04 11:01"} for row in rows], ["fewer flows"])
    loaded, meta = load_rows(str(document))
    assert [row["label"] for row in loaded] == ["backlog-small", "backlog-large"]
    assert meta["notes"] == ["fewer flows"] and meta["measured"] == "2026-12-04 11:01 to 2026-12-04 11:01 UTC"
    assert meta["engine"].startswith(("commit ", "dwarf "))


def test_a_plan_can_take_other_sizes() -> None:
    plan = {label: argv for label, _, argv in plan_of("target", large_backlog=10_000, turns=300)}
    assert plan["backlog-large"] == ["--flows", "10000"]
    assert plan["growing"] == ["--turns", "300"]
    assert plan["aged"] == ["--history", "100000"]
    assert {label: argv for label, _, argv in plan_of("target")} == {
        label: argv for label, _, argv in PLANS["target"]
    }


def test_the_settings_of_an_engine_without_settings_are_unknown_not_an_error() -> None:
    assert _settings(cast(Engine, object()))["workers"] is None
