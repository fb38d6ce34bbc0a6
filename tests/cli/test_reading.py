"""`dwarf list/show/history/step/shards`: reading flows from the database, as tables and as JSON."""

from __future__ import annotations

import json
import re

from tests.cli.conftest import ShopRecords, invoke

UTC_TIME = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z")


def _keys(output: str) -> list[str]:
    return [flow["flow_key"] for flow in json.loads(output)["flows"]]


def test_list_json_gives_every_root_flow_newest_first(flows: ShopRecords) -> None:
    result = flows.invoke("list", "--json")
    assert result.exit_code == 0, result.output
    document = json.loads(result.stdout)
    assert _keys(result.stdout) == [
        flows.nested,
        flows.failed,
        flows.interrupted,
        flows.second,
        flows.completed,
    ]
    assert document["next_cursor"] == ""
    first = document["flows"][-1]
    assert first["workflow_url"] == "shop/order"
    assert first["status"] == "completed"
    assert first["fairness_key"] == "team-a"
    assert UTC_TIME.fullmatch(first["created_at"])


def test_list_table_shows_whole_keys_statuses_and_utc_times(flows: ShopRecords) -> None:
    result = flows.invoke("list")
    assert result.exit_code == 0, result.output
    for key in flows.roots:
        assert key in result.stdout
    for status in ("completed", "interrupted", "failed"):
        assert status in result.stdout
    assert "out of stock" in result.stdout
    assert UTC_TIME.search(result.stdout)


def test_each_filter_option_narrows_the_list(flows: ShopRecords) -> None:
    expectations: list[tuple[list[str], set[str]]] = [
        (["--status", "completed"], {flows.completed, flows.second, flows.nested}),
        (["--status", "interrupted"], {flows.interrupted}),
        (["--workflow-url", "shop/order"], {flows.completed, flows.second}),
        (["--workflow-name", "approval"], {flows.interrupted}),
        (["--task-name", "Crash"], {flows.failed}),
        (["--fairness-key", "team-a"], {flows.completed}),
        (["--priority", "5"], {flows.completed}),
        (["--search", "out of"], {flows.failed}),
        (["--thread-key", flows.second], {flows.second}),
        (["--newer-than", "1h"], flows.roots),
        (["--older-than", "1d"], set()),
        (["--shard", "1"], flows.roots),
    ]
    for options, expected in expectations:
        result = flows.invoke("list", "--json", *options)
        assert result.exit_code == 0, (options, result.output)
        assert set(_keys(result.stdout)) == expected, options


def test_include_subgraphs_adds_child_flows(flows: ShopRecords) -> None:
    result = flows.invoke("list", "--json", "--workflow-url", "shop/order", "--include-subgraphs")
    listed = json.loads(result.stdout)["flows"]
    assert len(listed) == 3
    [child] = [flow for flow in listed if flow["subgraph"]]
    assert child["flow_key"] not in flows.roots


def test_list_pages_through_the_cursor_it_prints(flows: ShopRecords) -> None:
    seen: list[str] = []
    cursor = ""
    for _ in range(5):
        result = flows.invoke("list", "--json", "--limit", "2", *(["--cursor", cursor] if cursor else []))
        page = json.loads(result.stdout)
        assert len(page["flows"]) <= 2
        seen.extend(flow["flow_key"] for flow in page["flows"])
        cursor = page["next_cursor"]
        if not cursor:
            break
    assert sorted(seen) == sorted(flows.roots)
    assert len(seen) == len(flows.roots)


def test_list_table_prints_the_next_cursor_when_there_are_more_pages(flows: ShopRecords) -> None:
    result = flows.invoke("list", "--limit", "2")
    cursor = json.loads((flows.invoke("list", "--json", "--limit", "2")).stdout)["next_cursor"]
    assert cursor
    assert f"next cursor: {cursor}" in result.stdout


def test_list_all_follows_the_cursor_to_the_last_page(flows: ShopRecords) -> None:
    result = flows.invoke("list", "--json", "--all", "--limit", "2")
    document = json.loads(result.stdout)
    assert set(_keys(result.stdout)) == flows.roots
    assert len(document["flows"]) == len(flows.roots)
    assert document["next_cursor"] == ""


def test_show_json_gives_the_outcome_of_a_completed_flow(flows: ShopRecords) -> None:
    result = flows.invoke("show", flows.completed, "--json")
    assert result.exit_code == 0, result.output
    document = json.loads(result.stdout)
    assert document["flow_key"] == flows.completed
    assert document["status"] == "completed"
    assert document["state"]["total"] == 6
    assert document["error"] == ""


def test_show_prints_the_interrupt_payload_of_an_interrupted_flow(flows: ShopRecords) -> None:
    result = flows.invoke("show", flows.interrupted)
    assert result.exit_code == 0, result.output
    assert "interrupted" in result.stdout
    assert "ship it?" in result.stdout
    assert '"A-7"' in result.stdout


def test_show_prints_the_error_of_a_failed_flow(flows: ShopRecords) -> None:
    result = flows.invoke("show", flows.failed)
    assert "failed" in result.stdout
    assert "out of stock" in result.stdout


def test_history_tree_nests_the_child_flow_under_the_step_that_ran_it(flows: ShopRecords) -> None:
    result = flows.invoke("history", flows.nested)
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert flows.nested in lines[0]

    def indent_of(task: str) -> int:
        [line] = [line for line in lines if re.search(rf"\b{task}\b", line) and "completed" in line]
        return line.index(task)

    assert indent_of("Price") > indent_of("Call")
    assert indent_of("Pack") == indent_of("Price")
    assert any("child flow order" in line for line in lines)


def test_history_json_carries_the_child_steps_in_sub_history(flows: ShopRecords) -> None:
    result = flows.invoke("history", flows.nested, "--json")
    [call] = json.loads(result.stdout)["steps"]
    assert call["task_name"] == "Call"
    assert call["subgraph"] is True
    assert [step["task_name"] for step in call["sub_history"]] == ["Price", "Pack"]


def test_history_changes_option_shows_what_each_step_wrote(flows: ShopRecords) -> None:
    plain = flows.invoke("history", flows.completed)
    detailed = flows.invoke("history", flows.completed, "--changes")
    assert '"total": 6' not in plain.stdout
    assert '"total": 6' in detailed.stdout


def test_history_mermaid_prints_the_engines_diagram(flows: ShopRecords) -> None:
    result = flows.invoke("history", flows.nested, "--mermaid")
    assert result.exit_code == 0, result.output
    assert result.stdout == flows.nested_mermaid


def _step_key(flows: ShopRecords, flow_key: str, task: str) -> str:
    steps = json.loads((flows.invoke("history", flow_key, "--json")).stdout)["steps"]
    [key] = [step["step_key"] for step in steps if step["task_name"] == task]
    return str(key)


def test_step_json_gives_the_input_state_and_the_changes(flows: ShopRecords) -> None:
    pack = _step_key(flows, flows.completed, "Pack")
    result = flows.invoke("step", pack, "--json")
    assert result.exit_code == 0, result.output
    step = json.loads(result.stdout)
    assert step["task_name"] == "Pack"
    assert step["state"]["qty"] == 3
    assert step["changes"]["total"] == 6
    assert step["prev_key"] == _step_key(flows, flows.completed, "Price")
    assert UTC_TIME.fullmatch(step["created_at"])


def test_step_prints_its_fields_for_people(flows: ShopRecords) -> None:
    pack = _step_key(flows, flows.completed, "Pack")
    result = flows.invoke("step", pack)
    for text in (pack, "Pack", "completed", "input state", "changes", '"total": 6'):
        assert text in result.stdout


def test_shards_counts_the_flows_and_steps_of_each_shard(flows: ShopRecords) -> None:
    result = flows.invoke("shards", "--json")
    assert result.exit_code == 0, result.output
    [shard] = json.loads(result.stdout)["shards"]
    # Five root flows and the child flow; 2 + 2 + 1 + 1 + 1 + 2 steps.
    assert (shard["shard"], shard["flows"], shard["steps"], shard["error"]) == (1, 6, 9, "")
    table = flows.invoke("shards")
    assert re.search(r"1\s+│\s+6\s+│\s+9", table.stdout)


def test_the_database_can_come_from_the_environment(flows: ShopRecords) -> None:
    result = invoke("list", "--json", env={"DWARF_DSN": flows.dsn})
    assert result.exit_code == 0, result.output
    assert set(_keys(result.stdout)) == flows.roots
