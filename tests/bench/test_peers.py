"""`python -m bench peers` runs the same workloads on DBOS and LangGraph (only with the bench extra)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.bench.test_bench_run import admin_dsn

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("engine", ["dbos", "langgraph"])
def test_a_peer_prints_the_same_schema_as_ours(backend: str, engine: str) -> None:
    pytest.importorskip(engine)
    dsn = ["--dsn", admin_dsn()] if backend == "postgres" else []
    command = [
        sys.executable,
        "-m",
        "bench",
        "peers",
        "--engine",
        engine,
        "--db",
        backend,
        "--workload",
        "fanout",
        "--flows",
        "2",
        "--width",
        "3",
        *dsn,
    ]
    # A subprocess: DBOS is a process-wide singleton that must not outlive the run.
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    [line] = [json.loads(text) for text in done.stdout.splitlines() if text.startswith("{")]
    assert (line["engine"], line["db"], line["workload"], line["width"]) == (engine, backend, "fanout", 3)
    assert line["steps_per_s"] > 0 and 0 < line["p50_ms"] <= line["p99_ms"]
    assert line["versions"][engine] != "missing"
