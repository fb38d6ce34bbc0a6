"""`dwarf limit` and `dwarf limits`: setting, listing and clearing limits from a shell (docs/limits.md)."""

from __future__ import annotations

import json
from pathlib import Path

from dwarf.engine import Engine, TestProxy
from tests.cli.conftest import run_cli


async def test_limits_are_set_listed_and_cleared(tmp_path: Path) -> None:
    dsn = f"sqlite:///{tmp_path / 'flows.db'}"
    async with Engine(host=TestProxy(), dsn=dsn):
        pass  # the schema: the CLI never creates one
    assert (await run_cli("limits", "--dsn", dsn)).stdout == "no limits\n"

    result = await run_cli("limit", "acme", "--concurrency", "5", "--rate", "2.5", "--dsn", dsn)
    assert (result.exit_code, result.stdout) == (0, "limited fairness key 'acme'\n"), result.output
    result = await run_cli("limit", "https://api.example/pay", "--task-url", "--rate", "10", "--dsn", dsn)
    assert result.stdout == "limited task URL 'https://api.example/pay'\n", result.output

    listed = json.loads((await run_cli("limits", "--json", "--dsn", dsn)).stdout)["limits"]
    assert [
        (limit["scope"], limit["key"], limit["concurrency"], limit["rate"], limit["burst"])
        for limit in listed
    ] == [
        ("fairness_key", "acme", 5, 2.5, 3),
        ("task_url", "https://api.example/pay", None, 10.0, 10),
    ]
    table = (await run_cli("limits", "--dsn", dsn)).stdout
    assert "acme" in table and "https://api.example/pay" in table

    result = await run_cli("limit", "acme", "--clear", "--dsn", dsn)
    assert result.stdout == "cleared the limit of fairness key 'acme'\n"
    result = await run_cli("limit", "acme", "--clear", "--dsn", dsn)
    assert result.stdout == "fairness key 'acme' had no limit\n"


async def test_bad_limits_are_refused_with_one_line(tmp_path: Path) -> None:
    dsn = f"sqlite:///{tmp_path / 'flows.db'}"
    async with Engine(host=TestProxy(), dsn=dsn):
        pass
    for args, message in (
        (["limit", "acme"], "set a concurrency, a rate or both"),
        (["limit", "acme", "--concurrency", "0"], "concurrency must be from 1"),
        (["limit", "acme", "--clear", "--rate", "3"], "--clear takes no --concurrency, --rate or --burst"),
        (["limit", "", "--task-url", "--rate", "3"], "the key must not be empty"),
    ):
        result = await run_cli(*args, "--dsn", dsn)
        assert result.exit_code == 1, (args, result.output)
        assert message in result.stderr and result.stderr.count("\n") == 1, result.stderr
    assert (await run_cli("limits", "--dsn", dsn)).stdout == "no limits\n"
