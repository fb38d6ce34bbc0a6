"""What the CLI refuses, and how: unknown keys, conflicts, malformed arguments, unconfirmed purges,
databases that are missing or unreachable. Exit code 1 with one line on stderr when the engine or the
database refuses; 2 for usage errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.cli.conftest import ShopRecords, invoke


def _status(flows: ShopRecords, key: str) -> str:
    return str(json.loads(flows.invoke("show", key, "--json").stdout)["status"])


def _listed(flows: ShopRecords) -> set[str]:
    return {flow["flow_key"] for flow in json.loads(flows.invoke("list", "--json", "--all").stdout)["flows"]}


def _step_key(flows: ShopRecords, flow_key: str, task: str) -> str:
    steps = json.loads(flows.invoke("history", flow_key, "--json").stdout)["steps"]
    [key] = [step["step_key"] for step in steps if step["task_name"] == task]
    return str(key)


def test_an_age_that_does_not_parse_is_a_usage_error(flows: ShopRecords) -> None:
    result = flows.invoke("list", "--older-than", "5x")
    assert result.exit_code == 2
    assert "--older-than" in result.stderr


@pytest.mark.parametrize("command", ["show", "history", "resume", "cancel", "delete"])
def test_an_unknown_flow_key_exits_1_with_the_uniform_not_found_message(
    flows: ShopRecords, command: str
) -> None:
    well_formed = flows.completed[:-1] + ("A" if flows.completed[-1] != "A" else "B")
    for key in (well_formed, "no-such-key", "9-1-AAAAAAAAAAAAAAAA"):
        result = flows.invoke(command, key)
        assert result.exit_code == 1, (key, result.output)
        assert result.stderr == "error: flow not found\n"
        assert result.stdout == ""


@pytest.mark.parametrize("command", ["step", "fork"])
def test_an_unknown_step_key_exits_1_with_the_uniform_not_found_message(
    flows: ShopRecords, command: str
) -> None:
    result = flows.invoke(command, "1-999-AAAAAAAAAAAAAAAA")
    assert result.exit_code == 1
    assert result.stderr == "error: step not found\n"


def test_a_missing_sqlite_file_is_reported_and_not_created(tmp_path: Path) -> None:
    result = invoke("list", "--dsn", f"sqlite:///{tmp_path / 'nothing.db'}")
    assert result.exit_code == 1
    assert "no database at" in result.stderr
    assert "nothing.db" in result.stderr
    assert not (tmp_path / "nothing.db").exists()


def test_an_unreachable_database_is_one_line_on_stderr_without_the_password() -> None:
    result = invoke("list", "--dsn", "postgresql://ops:s3cret@127.0.0.1:1/flows")
    assert result.exit_code == 1
    assert result.stderr.startswith("error: cannot open the database postgresql://ops:***@127.0.0.1:1/flows")
    assert "s3cret" not in result.stderr
    assert "Traceback" not in result.output


def test_resuming_a_flow_that_is_not_interrupted_exits_1_with_the_conflict(flows: ShopRecords) -> None:
    result = flows.invoke("resume", flows.completed, "--data", "{}")
    assert result.exit_code == 1
    assert result.stderr == "error: the flow is completed, not interrupted\n"


@pytest.mark.parametrize(
    ("data", "complaint"), [("{bad", "not valid JSON"), ("[1, 2]", "must be a JSON object")]
)
def test_resume_data_that_is_not_a_json_object_is_a_usage_error(
    flows: ShopRecords, data: str, complaint: str
) -> None:
    result = flows.invoke("resume", flows.interrupted, "--data", data)
    assert result.exit_code == 2
    assert "--data" in result.stderr
    assert complaint in result.stderr
    assert _status(flows, flows.interrupted) == "interrupted"


def test_cancelling_a_stopped_flow_exits_1_with_the_conflict(flows: ShopRecords) -> None:
    result = flows.invoke("cancel", flows.failed)
    assert result.exit_code == 1
    assert result.stderr == "error: the flow is already failed\n"


def test_fork_set_without_an_equals_sign_is_a_usage_error(flows: ShopRecords) -> None:
    pack = _step_key(flows, flows.completed, "Pack")
    result = flows.invoke("fork", pack, "--set", "qty")
    assert result.exit_code == 2
    assert "key=value" in result.stderr


def test_purge_without_yes_refuses_when_nobody_can_be_asked(flows: ShopRecords) -> None:
    result = flows.invoke("purge")
    assert result.exit_code == 1
    assert "--yes" in result.stderr
    assert _listed(flows) == flows.roots


def test_purge_asks_first_and_keeps_everything_on_no(
    flows: ShopRecords, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("dwarf.cli.commands._interactive", lambda: True)
    result = flows.invoke("purge", "--status", "failed", input="n\n")
    assert result.exit_code == 1
    assert "Delete every flow matching status=failed that is not running?" in result.stdout
    assert _listed(flows) == flows.roots
