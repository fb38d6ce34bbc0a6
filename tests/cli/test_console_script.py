"""The installed `dwarf` console script, run as a user runs it: a separate process, exit codes, streams."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import warnings
from pathlib import Path

import pytest

from tests.cli.conftest import create_dwarf_database

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = Path(sys.executable).parent / "dwarf"
TIMEOUT = 60.0


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DWARF_")}
    return {**env, **extra}


def dwarf(*args: str, cwd: Path, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(SCRIPT), *args], cwd=cwd, env=_env(**env), capture_output=True, text=True, timeout=TIMEOUT
    )


@pytest.fixture(autouse=True)
def _installed() -> None:
    assert SCRIPT.exists(), f"the console script is not installed at {SCRIPT} (pip install -e .)"


def test_demo_then_list_in_the_working_directory_by_default(tmp_path: Path) -> None:
    demo = dwarf("demo", cwd=tmp_path)
    assert demo.returncode == 0, demo.stderr
    assert (tmp_path / "dwarf.db").exists()
    listed = dwarf("list", "--json", cwd=tmp_path)
    assert listed.returncode == 0, listed.stderr
    assert [flow["status"] for flow in json.loads(listed.stdout)["flows"]] == ["interrupted", "completed"]


def test_the_database_comes_from_dwarf_dsn(tmp_path: Path) -> None:
    dsn = f"sqlite:///{tmp_path / 'elsewhere.db'}"
    assert dwarf("demo", "--dsn", dsn, cwd=tmp_path).returncode == 0
    listed = dwarf("list", "--json", cwd=ROOT, DWARF_DSN=dsn)
    assert listed.returncode == 0, listed.stderr
    assert len(json.loads(listed.stdout)["flows"]) == 2


def test_refusals_exit_1_with_one_line_and_usage_errors_exit_2(tmp_path: Path) -> None:
    create_dwarf_database(f"sqlite:///{tmp_path / 'dwarf.db'}")
    unknown = dwarf("show", "1-1-AAAAAAAAAAAAAAAA", cwd=tmp_path)
    assert (unknown.returncode, unknown.stdout, unknown.stderr) == (1, "", "error: flow not found\n")
    usage = dwarf("list", "--status", "asleep", cwd=tmp_path)
    assert usage.returncode == 2
    assert "--status" in usage.stderr


def test_graph_imports_from_the_working_directory() -> None:
    result = dwarf("graph", "examples.order_checkout:checkout_graph", cwd=ROOT)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("flowchart TD")


async def test_demo_keep_running_finishes_a_claim_resumed_from_another_shell(tmp_path: Path) -> None:
    dsn = f"sqlite:///{tmp_path / 'flows.db'}"
    worker = await asyncio.create_subprocess_exec(
        str(SCRIPT), "demo", "--keep-running", "--json", "--dsn", dsn,
        cwd=tmp_path, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip
    try:
        assert worker.stderr is not None
        line = await asyncio.wait_for(worker.stderr.readline(), TIMEOUT)
        assert b"running the demo's tasks" in line
        listed = await asyncio.to_thread(
            dwarf, "list", "--json", "--status", "interrupted", "--dsn", dsn, cwd=tmp_path
        )
        [waiting] = [flow["flow_key"] for flow in json.loads(listed.stdout)["flows"]]
        resumed = await asyncio.to_thread(
            dwarf, "resume", waiting, "--data", '{"approved": true}', "--dsn", dsn, cwd=tmp_path
        )
        assert resumed.returncode == 0, resumed.stderr

        async def status() -> str:
            shown = await asyncio.to_thread(dwarf, "show", waiting, "--json", "--dsn", dsn, cwd=tmp_path)
            return str(json.loads(shown.stdout)["status"])

        async with asyncio.timeout(TIMEOUT):
            while (current := await status()) != "completed":
                assert current in {"interrupted", "running"}
                await asyncio.sleep(0.2)
        worker.send_signal(signal.SIGINT)
        try:
            code = await asyncio.wait_for(worker.wait(), TIMEOUT / 2)
        except TimeoutError:
            # Seen twice, only while coverage followed the suite's subprocesses under 4 xdist workers:
            # the first Ctrl-C did not end the process within 30 s. Not reproduced since (27 runs beside
            # six busy loops all stopped in under 0.5 s). A second one, as a user would press, must end
            # it; the miss is reported as a warning in the test summary, with the process's stderr.
            worker.send_signal(signal.SIGINT)
            code = await asyncio.wait_for(worker.wait(), TIMEOUT / 2)
            assert worker.stderr is not None
            stderr = (await worker.stderr.read()).decode(errors="replace")
            warnings.warn(f"dwarf demo missed the first SIGINT; its stderr: {stderr}", stacklevel=1)
        assert code == 0
    finally:
        if worker.returncode is None:
            worker.kill()
            await worker.wait()
