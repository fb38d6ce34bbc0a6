"""`dwarf show` and `dwarf list --why` say why a flow is not moving; the list's workflow column is the
workflow URL; `--status` offers the statuses a flow can have, and only those."""

from __future__ import annotations

import json

from dwarf.cli.commands import FlowStatus
from dwarf.workflow.status import FLOW_STATUSES
from tests.cli.conftest import ShopRecords, invoke


def test_show_says_what_an_interrupted_flow_waits_for(flows: ShopRecords) -> None:
    result = flows.invoke("show", flows.interrupted)
    assert result.exit_code == 0, result.output
    [line] = [line for line in result.stdout.splitlines() if line.startswith("waiting")]
    assert "interrupted since" in line and "waiting for a resume" in line


def test_show_json_lists_the_waits(flows: ShopRecords) -> None:
    waiting = json.loads(flows.invoke("show", flows.interrupted, "--json").stdout)
    [wait] = waiting["waits"]
    assert wait["reason"] == "interrupted" and wait["step_key"] and "waiting for a resume" in wait["text"]
    done = json.loads(flows.invoke("show", flows.completed, "--json").stdout)
    assert done["waits"] == []
    assert "waiting" not in flows.invoke("show", flows.completed).stdout


def test_list_why_notes_each_unstopped_flow(flows: ShopRecords) -> None:
    document = json.loads(flows.invoke("list", "--json", "--why").stdout)
    assert set(document["waits"]) == {flows.interrupted}
    assert document["waits"][flows.interrupted][0]["reason"] == "interrupted"
    table = flows.invoke("list", "--why").stdout
    [row] = [line for line in table.splitlines() if flows.interrupted in line]
    assert "waiting for a resume" in row
    assert "waits" not in json.loads(flows.invoke("list", "--json").stdout)


def test_list_shows_the_interrupted_since_and_the_workflow_url(flows: ShopRecords) -> None:
    table = flows.invoke("list").stdout
    [row] = [line for line in table.splitlines() if flows.interrupted in line]
    assert "interrupted since" in row
    [order] = [line for line in table.splitlines() if flows.completed in line]
    assert "shop/order" in order


def test_status_offers_only_flow_statuses(flows: ShopRecords) -> None:
    assert [status.value for status in FlowStatus] == [status.value for status in FLOW_STATUSES]
    for step_only in ("pending", "created"):
        result = flows.invoke("list", "--status", step_only)
        assert result.exit_code == 2, result.output
    usage = invoke("list", "--help", env={"COLUMNS": "200"}).stdout
    [choices] = [line for line in usage.splitlines() if "--status" in line]
    assert "<running|interrupted|completed|failed|cancelled>" in choices
