"""The flat-cost workloads (bench/flatcost.py) run at a tiny size on SQLite and report consistent numbers;
the flatcost table turns rows into "how many times more a step costs at the large size"."""

from __future__ import annotations

import json
from typing import Any

import pytest
from bench.__main__ import main
from bench.flatcost import growing_api, render_table, state_sizes
from bench.report import TIMES

from dwarf import Flow


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
