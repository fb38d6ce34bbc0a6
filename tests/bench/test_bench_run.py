"""`python -m bench run` prints one valid JSON line per run for every workload of ours, on each database."""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import urlsplit

import pytest
from bench.__main__ import main

from tests.conftest import PG_DSN

TINY = {
    "linear3": ["--flows", "4", "--concurrency", "2"],
    "fanout": ["--flows", "2", "--concurrency", "2", "--width", "3"],
    "latency": ["--flows", "3"],
    "idle": ["--seconds", "1", "--shards", "2"],
    "parked": ["--flows", "4", "--concurrency", "2"],
}


def admin_dsn() -> str:
    """The server of DWARF_TEST_DSN, through its maintenance database (bench creates its own there)."""
    return urlsplit(PG_DSN)._replace(path="/postgres").geturl()


def bench_lines(capsys: pytest.CaptureFixture[str], backend: str, *argv: str) -> list[dict[str, Any]]:
    dsn = ["--dsn", admin_dsn()] if backend == "postgres" else []
    assert main([*argv, "--db", backend, *dsn]) == 0
    return [json.loads(line) for line in capsys.readouterr().out.splitlines()]


@pytest.mark.parametrize("workload", ["linear3", "latency"])
def test_a_throughput_run_reports_rates_and_latency_percentiles(
    capsys: pytest.CaptureFixture[str], backend: str, workload: str
) -> None:
    [line] = bench_lines(capsys, backend, "run", "--workload", workload, *TINY[workload])
    assert line["engine"] == "dwarf"
    assert (line["workload"], line["db"]) == (workload, backend)
    assert line["flows"] == int(TINY[workload][1])
    assert line["steps_per_s"] > 0 and line["flows_per_s"] > 0
    assert 0 < line["p50_ms"] <= line["p95_ms"] <= line["p99_ms"]


def test_a_fanout_run_counts_the_split_the_branches_and_the_join(
    capsys: pytest.CaptureFixture[str], backend: str
) -> None:
    [line] = bench_lines(capsys, backend, "run", "--workload", "fanout", *TINY["fanout"])
    # Each flow: the split, 3 branches and the join.
    assert line["steps_per_s"] / line["flows_per_s"] == pytest.approx(5, rel=0.01)


def test_repeated_runs_end_with_their_median(capsys: pytest.CaptureFixture[str]) -> None:
    lines = bench_lines(capsys, "sqlite", "run", "--workload", "latency", "--flows", "2", "--repeat", "2")
    assert len(lines) == 3
    assert lines[2]["median_p50_ms"] == pytest.approx((lines[0]["p50_ms"] + lines[1]["p50_ms"]) / 2)


def test_the_idle_run_counts_statements_of_each_shard_and_explains_how(
    capsys: pytest.CaptureFixture[str], backend: str
) -> None:
    [line] = bench_lines(capsys, backend, "run", "--workload", "idle", *TINY["idle"])
    assert (line["workload"], line["shards"]) == ("idle", 2)
    assert set(line["statements_by_shard"]) == {"1", "2"}
    assert line["statements"] == sum(line["statements_by_shard"].values())
    per_shard = line["statements"] / line["elapsed_s"] / 2
    assert line["queries_per_s_per_shard"] == pytest.approx(per_shard, rel=0.01, abs=0.001)
    assert len(line["statements_per_second"]) == 1
    assert "store layer" in line["method"]


def test_the_parked_run_reports_the_rss_its_interrupted_flows_added(
    capsys: pytest.CaptureFixture[str], backend: str
) -> None:
    [line] = bench_lines(capsys, backend, "run", "--workload", "parked", *TINY["parked"])
    assert line["flows"] == 4
    assert line["rss_after_mb"] > 0 and line["rss_before_mb"] > 0
    assert line["rss_delta_mb"] == pytest.approx(line["rss_after_mb"] - line["rss_before_mb"], abs=0.11)
