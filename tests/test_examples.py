"""The runnable programs under examples/ do what their docstrings promise, run the way a user runs them.

Each example runs as ``python -m examples.<name>`` in a fresh working directory: on SQLite with no DSN at
all (so the embedded default, ``./dwarf.db``, is what gets used), on PostgreSQL through ``DWARF_DSN``.
Afterwards the test opens the same database with an operations-only engine and checks the flows the
example left there, so a program that prints the right words but computes the wrong thing fails.
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest_asyncio

from dwarf import Engine, FlowOutcome, FlowSummary, Query

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE_TIMEOUT = 60  # seconds; each example takes a few at most


@dataclass
class Workspace:
    """Where an example runs and which database it uses."""

    cwd: Path
    env: dict[str, str]
    dsn: str  # the database the example used, as this test process can open it

    def run(self, *argv: str) -> subprocess.CompletedProcess[str]:
        """Run a command here and insist that it succeeds."""
        result = subprocess.run(
            list(argv), cwd=self.cwd, env=self.env, capture_output=True, text=True, timeout=EXAMPLE_TIMEOUT
        )
        assert result.returncode == 0, (
            f"{shlex.join(argv)} exited with {result.returncode}\n"
            f"--- stdout ---\n{result.stdout}\n--- stderr ---\n{result.stderr}"
        )
        return result

    def example(self, module: str, *args: str) -> str:
        """Run ``python -m examples.<module> args...`` and return what it printed."""
        return self.run(sys.executable, "-m", f"examples.{module}", *args).stdout


@pytest_asyncio.fixture
async def workspace(backend: str, fresh_dsn: str, tmp_path: Path) -> AsyncIterator[Workspace]:
    cwd = tmp_path / "work"
    cwd.mkdir()
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), str(ROOT / "src"), env.get("PYTHONPATH")]))
    env.pop("DWARF_TEST_DSN", None)
    env.pop("DWARF_DSN", None)
    if backend == "sqlite":
        # No DSN for the example: finding its flows in ./dwarf.db proves it used the embedded default.
        yield Workspace(cwd, env, f"sqlite:///{cwd / 'dwarf.db'}")
    else:
        env["DWARF_DSN"] = fresh_dsn
        yield Workspace(cwd, env, fresh_dsn)


async def flows_in(dsn: str, workflow_url: str) -> list[tuple[FlowSummary, FlowOutcome]]:
    """Every flow of ``workflow_url`` in the database, oldest first, with its outcome."""
    async with Engine(workers=0, dsn=dsn) as engine:
        found: list[tuple[FlowSummary, FlowOutcome]] = []
        cursor = ""
        while True:
            page, cursor = await engine.list(Query(workflow_url=workflow_url, cursor=cursor))
            found += [(summary, await engine.snapshot(summary.flow_key)) for summary in page]
            if not cursor:
                return found[::-1]


async def task_names(dsn: str, flow_key: str) -> list[str]:
    async with Engine(workers=0, dsn=dsn) as engine:
        return [step.task_name for step in await engine.history(flow_key)]


# --- order checkout -------------------------------------------------------------------------------------


async def test_order_checkout_ships_rejects_and_compensates(workspace: Workspace) -> None:
    printed = workspace.example("order_checkout")

    by_order = {
        outcome.state["orderId"]: (s, outcome) for s, outcome in await flows_in(workspace.dsn, "checkout")
    }
    assert sorted(by_order) == ["A-1001", "A-1002", "A-1003", "A-1004"]
    assert all(outcome.status == "completed" for _, outcome in by_order.values())
    shipped, rejected, declined, undeliverable = (by_order[k][1].state for k in sorted(by_order))
    assert shipped["result"] == "shipped" and shipped["trackingNumber"] == "TRK-A-1001"
    assert shipped["findings"] == ["fraud: ok", "stock: ok", "credit: ok"]  # fan-out order, via APPEND
    assert rejected["result"] == "rejected" and "stock: short on kettle" in rejected["findings"]
    # A declined card had taken nothing but stock: only the stock goes back.
    assert declined["result"] == "cancelled: card declined by issuer"
    assert declined["compensations"] == ["released stock"] and "paymentId" not in declined
    # A failed booking had captured the money too: refund first, then release.
    assert undeliverable["result"] == "cancelled: no carrier delivers to Atlantis"
    assert undeliverable["compensations"] == ["refunded pay-A-1004", "released stock"]
    assert (await task_names(workspace.dsn, by_order["A-1004"][0].flow_key))[-4:] == [
        "BookShipment",
        "RefundPayment",
        "ReleaseStock",
        "CancelOrder",
    ]
    assert "Stock after:  {'mug': 18, 'tea': 47, 'kettle': 3}" in printed  # only A-1001's goods left
    assert printed.count("```mermaid\nflowchart") == 4


# --- document batch -------------------------------------------------------------------------------------


async def test_document_batch_folds_branch_results_and_retries_a_flaky_document(workspace: Workspace) -> None:
    workspace.example("document_batch")

    (_, good), (lost_summary, lost) = await flows_in(workspace.dsn, "documents/batch")
    assert good.status == "completed"
    state = good.state
    assert state["totalWords"] == 66  # ADD: 14 + 11 + 14 + 11 + 16 words
    assert state["longest"] == 16  # MAX
    assert state["languages"] == ["de", "en", "es", "fr"]  # UNION, in array order of first sight
    assert state["perLanguage"] == {"de": 1, "en": 2, "es": 1, "fr": 1}
    assert state["byDocument"]["memo-5"] == {"words": 16, "language": "en", "attempts": 3}  # MERGE
    assert state["retries"] == 2  # memo-5 timed out twice, then loaded
    assert state["report"] == [  # APPEND, in the order of the (sorted) documents array
        "1/5 brief-2: de",
        "2/5 memo-1: en",
        "3/5 memo-5: en",
        "4/5 nota-4: es",
        "5/5 note-3: fr",
    ]
    # A document that never loads: retry gives up, the branch fails, and so does the batch.
    assert lost.status == "failed" and lost.error == "reading lost-6 timed out"
    async with Engine(workers=0, dsn=workspace.dsn) as engine:
        steps = await engine.history(lost_summary.flow_key)
    [gave_up] = [step for step in steps if step.status == "failed"]
    assert gave_up.task_name == "Analyze" and gave_up.attempt >= 1  # it did retry before giving up


# --- approval -------------------------------------------------------------------------------------------


def dwarf_command() -> str:
    """The `dwarf` console script installed next to this interpreter."""
    script = Path(sys.executable).parent / "dwarf"
    assert script.exists(), f"the dwarf command is not installed at {script}"
    return str(script)


async def snapshot_of(workspace: Workspace, key: str) -> FlowOutcome:
    async with Engine(workers=0, dsn=workspace.dsn) as engine:
        return await engine.snapshot(key)


async def test_approval_self_driving_pays_declines_and_auto_approves(workspace: Workspace) -> None:
    workspace.example("approval")

    flows = await flows_in(workspace.dsn, "expenses/approval")
    results = [(outcome.status, outcome.state["result"], outcome.state["approver"]) for _, outcome in flows]
    assert results == [
        ("completed", "paid 120.00 EUR to ada", "grace"),
        ("completed", "declined by grace", "grace"),
        ("completed", "paid 30.00 EUR to ada", "auto"),
    ]
    assert "approved" not in flows[2][1].state  # never asked: the switch skipped RequestApproval


async def test_approval_resumed_from_the_cli_is_finished_by_the_worker(workspace: Workspace) -> None:
    started = workspace.example("approval", "start", "--amount", "120", "--requester", "ada")
    [key] = [line.split(": ", 1)[1] for line in started.splitlines() if line.startswith("flow key: ")]
    [command] = [line.strip() for line in started.splitlines() if line.strip().startswith("dwarf resume")]
    assert (await snapshot_of(workspace, key)).status == "interrupted"

    # The exact command the example printed, with the installed `dwarf` script.
    argv = shlex.split(command)
    workspace.run(dwarf_command(), *argv[1:])
    assert (await snapshot_of(workspace, key)).status == "running"  # the CLI runs no tasks

    finished = workspace.example("approval", "worker", "--timeout", "30")
    assert "paid 120.00 EUR to ada" in finished

    shown = json.loads(workspace.run(dwarf_command(), "show", key, "--json", "--dsn", workspace.dsn).stdout)
    assert shown["status"] == "completed"
    assert shown["state"]["result"] == "paid 120.00 EUR to ada"
    assert shown["state"]["approver"] == "grace"


# --- agent loop -----------------------------------------------------------------------------------------


async def test_agent_loop_reaches_its_goal_asks_for_help_and_respects_its_budget(
    workspace: Workspace,
) -> None:
    workspace.example("agent_loop")

    (solved_s, solved), (helped_s, helped), (broke_s, broke) = await flows_in(
        workspace.dsn, "agents/research"
    )
    assert [o.status for o in (solved, helped, broke)] == ["completed"] * 3

    assert solved.state["answer"] == "Kathmandu is the capital of Nepal."
    assert solved.state["stepsLeft"] == 8 - 4  # three searches and the answer
    assert await task_names(workspace.dsn, solved_s.flow_key) == [
        *["Plan", "Act", "Observe"] * 3,
        "Plan",
        "Answer",
    ]

    assert helped.state["answer"].startswith("a human said: the billing service is maintained by")
    assert "AskHuman" in await task_names(workspace.dsn, helped_s.flow_key)

    assert broke.state["stoppedBecause"] == "step budget used up"
    assert broke.state["stepsLeft"] == 0 and broke.state["answer"] == ""
    assert (await task_names(workspace.dsn, broke_s.flow_key))[-2:] == ["Plan", "OutOfBudget"]


# --- nightly retention ----------------------------------------------------------------------------------


async def statuses(dsn: str) -> Counter[str]:
    return Counter(str(summary.status) for summary, _ in await flows_in(dsn, "reports/nightly"))


async def test_nightly_retention_purges_old_completed_and_cancelled_flows_on_every_run(
    workspace: Workspace,
) -> None:
    for night in (1, 2):
        printed = workspace.example("nightly_retention")
        assert "A second pass purged: {'completed': 0, 'cancelled': 0, 'failed': 0}" in printed
        # Each run adds 9 completed flows of which only the 3 fresh ones may stay; failed flows (kept a
        # week) and interrupted ones (waiting for a person) accumulate; cancelled ones never stay.
        assert await statuses(workspace.dsn) == Counter(
            {"completed": 3, "failed": 3 * night, "interrupted": 2 * night}
        )
