"""`dwarf graph` (validate and draw a graph from code), `dwarf serve` (hand over to the dashboard) and
`dwarf demo` (flows for a new user to look at)."""

from __future__ import annotations

import json
import sys
import types
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from dwarf import Graph, Status
from dwarf._demo import build_demo_host
from dwarf.engine import Engine
from tests.cli.conftest import invoke, run_cli
from tests.cli.sample_graphs import build_review
from tests.engine.graphs import WAIT

ROOT = Path(__file__).resolve().parents[2]


# --- graph ---


@pytest.mark.parametrize(
    "reference", ["tests.cli.sample_graphs:review", "tests.cli.sample_graphs:build_review"]
)
def test_graph_prints_the_mermaid_of_a_graph_or_of_what_a_function_returns(reference: str) -> None:
    result = invoke("graph", reference)
    assert result.exit_code == 0, result.output
    assert result.stdout == build_review().mermaid()


def test_graph_json_prints_the_graph_document() -> None:
    result = invoke("graph", "tests.cli.sample_graphs:review", "--json")
    assert result.exit_code == 0, result.output
    assert Graph.from_json(result.stdout).to_json() == build_review().to_json()


def test_an_invalid_graph_prints_the_validation_error_and_exits_1() -> None:
    result = invoke("graph", "tests.cli.sample_graphs:build_broken")
    assert result.exit_code == 1
    assert result.stdout == ""
    assert result.stderr == (
        "error: graph 'broken': transition from 'A' to 'Missing' leads to unknown node 'Missing'\n"
    )


@pytest.mark.parametrize(
    ("reference", "complaint"),
    [
        ("tests.cli.sample_graphs:not_a_graph", "is a dict, not a Graph"),
        ("tests.cli.sample_graphs:nothing_here", "has no attribute 'nothing_here'"),
        ("tests.cli.no_such_module:graph", "cannot import 'tests.cli.no_such_module'"),
    ],
)
def test_a_reference_that_leads_to_no_graph_exits_1(reference: str, complaint: str) -> None:
    result = invoke("graph", reference)
    assert result.exit_code == 1
    assert complaint in result.stderr


def test_a_reference_without_a_colon_is_a_usage_error() -> None:
    result = invoke("graph", "tests.cli.sample_graphs")
    assert result.exit_code == 2
    assert "MODULE:ATTR" in result.stderr


def test_graph_imports_modules_of_the_working_directory(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(ROOT)
    result = invoke("graph", "examples.order_checkout:checkout_graph")
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith("flowchart TD")


# --- serve ---


@pytest.fixture
def existing_sqlite(tmp_path: Path) -> str:
    """A DSN of an SQLite file that exists (an empty file is an empty database)."""
    path = tmp_path / "flows.db"
    path.touch()
    return f"sqlite:///{path}"


def test_serve_hands_the_database_and_the_address_to_the_dashboard(
    existing_sqlite: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[dict[str, Any]] = []
    dashboard = types.ModuleType("dashboard_double")
    dashboard.serve = lambda **settings: calls.append(settings)  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "dashboard_double", dashboard)
    monkeypatch.setattr("dwarf.cli.commands.DASHBOARD_MODULE", "dashboard_double")
    result = invoke("serve", "--dsn", existing_sqlite, "--port", "9123")
    assert result.exit_code == 0, result.output
    assert calls == [
        {
            "dsn": existing_sqlite,
            "num_shards": 1,
            "host": "127.0.0.1",
            "port": 9123,
            "token": None,
            "allowed_hosts": [],
            "no_auth": False,
        }
    ]
    assert "http://127.0.0.1:9123/" in result.stderr
    assert "warning" not in result.stderr


def test_serve_warns_when_the_dashboard_listens_beyond_this_machine_without_a_token(
    existing_sqlite: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    dashboard = types.ModuleType("dashboard_double")
    dashboard.serve = lambda **settings: None  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "dashboard_double", dashboard)
    monkeypatch.setattr("dwarf.cli.commands.DASHBOARD_MODULE", "dashboard_double")
    result = invoke("serve", "--dsn", existing_sqlite, "--host", "0.0.0.0", "--no-auth")
    assert result.exit_code == 0, result.output
    assert "warning: no token: anyone who can reach 0.0.0.0:8080" in result.stderr


def test_serve_without_the_web_extra_says_how_to_install_it(
    existing_sqlite: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("dwarf.cli.commands.DASHBOARD_MODULE", "tests.cli.dashboard_without_web")
    result = invoke("serve", "--dsn", existing_sqlite)
    assert result.exit_code == 1
    assert result.stderr == (
        "error: the dashboard needs the web extra (uvicorn is not installed): "
        "pip install 'dwarf-workflow[web]'\n"
    )


def test_serve_refuses_a_missing_sqlite_file(tmp_path: Path) -> None:
    result = invoke("serve", "--dsn", f"sqlite:///{tmp_path / 'none.db'}")
    assert result.exit_code == 1
    assert "no database at" in result.stderr


# --- demo ---


async def _statuses(dsn: str) -> list[str]:
    result = await run_cli("list", "--json", "--dsn", dsn)
    return [flow["status"] for flow in json.loads(result.stdout)["flows"]]


async def test_demo_leaves_a_completed_and_an_interrupted_flow_and_shows_them(fresh_dsn: str) -> None:
    result = await run_cli("demo", "--dsn", fresh_dsn)
    assert result.exit_code == 0, result.output
    for text in ("completed", "interrupted", "Approve 1200.0 EUR", "flowchart TD", "dwarf resume"):
        assert text in result.stdout
    assert await _statuses(fresh_dsn) == ["interrupted", "completed"]


async def test_demo_json_reports_each_claims_flow(fresh_dsn: str) -> None:
    result = await run_cli("demo", "--dsn", fresh_dsn, "--json")
    assert result.exit_code == 0, result.output
    runs = json.loads(result.stdout)["flows"]
    assert [run["outcome"]["status"] for run in runs] == ["completed", "interrupted"]
    assert runs[0]["outcome"]["state"]["receipt"] == "R-ada-42.00"
    assert all(run["mermaid"].startswith("flowchart TD") for run in runs)


async def test_a_resumed_demo_claim_is_paid_once_the_demos_tasks_run(fresh_dsn: str) -> None:
    await run_cli("demo", "--dsn", fresh_dsn)
    listed = json.loads((await run_cli("list", "--json", "--dsn", fresh_dsn)).stdout)["flows"]
    [waiting] = [flow["flow_key"] for flow in listed if flow["status"] == "interrupted"]
    resumed = await run_cli(
        "resume", waiting, "--data", '{"approved": true, "by": "lead"}', "--dsn", fresh_dsn
    )
    assert resumed.exit_code == 0, resumed.output
    async with Engine(host=build_demo_host(), dsn=fresh_dsn, workers=2) as engine:
        outcome = await engine.wait(waiting, timeout=WAIT)
    assert outcome.status == Status.COMPLETED
    assert (outcome.state["outcome"], outcome.state["approver"]) == ("paid", "lead")
    assert outcome.state["receipt"] == "R-grace-1200.00"


async def test_demo_hints_leave_the_password_of_the_dsn_out(backend: str, fresh_dsn: str) -> None:
    if backend != "postgres":
        pytest.skip("an SQLite DSN holds no password")
    parts = urlsplit(fresh_dsn)
    with_password = parts._replace(
        netloc=f"{parts.username or 'postgres'}:s3cret-pw@{parts.hostname}:{parts.port or 5432}"
    )
    result = await run_cli("demo", "--dsn", with_password.geturl())
    assert result.exit_code == 0, result.output
    assert "s3cret-pw" not in result.output
    assert f"--dsn '{parts.scheme}://{parts.username or 'postgres'}:***@" in result.stdout
    assert "*** stands for the password" in result.stdout


def test_demo_hints_show_a_dsn_without_a_password_as_it_is() -> None:
    from dwarf.cli.commands import _demo_hints

    hints = _demo_hints("1-2-AAAAAAAAAAAAAAAA", "sqlite:///flows.db", 1)
    assert "dwarf list --dsn 'sqlite:///flows.db'" in hints
    assert "***" not in hints
