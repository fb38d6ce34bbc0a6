"""`dwarf schedules`: list the schedules, show one, pause, resume and delete one by name; the application's
engine keeps ticking what the CLI resumes (docs/cli.md#schedules)."""

from __future__ import annotations

import json

import pytest

from dwarf import FlowOptions, NotFoundError
from tests.cli.conftest import Shop


async def _declare(shop: Shop) -> None:
    engine = shop.running_engine
    await engine.schedule(
        "nightly",
        "shop/order",
        cron="0 3 * * *",
        timezone="Europe/Paris",
        state={"qty": 2},
        options=FlowOptions(priority=5, fairness_key="reports"),
    )
    await engine.schedule("hourly", "shop/order", every=3600, catch_up="one")
    await engine.pause_schedule("hourly")


async def test_schedules_lists_them_by_name_with_timing_state_and_ticks(shop: Shop) -> None:
    empty = await shop.cli("schedules")
    assert (empty.exit_code, empty.stdout) == (0, "no schedules\n")
    await _declare(shop)
    result = await shop.cli("schedules")
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    hourly, nightly = (
        next(line for line in lines if line.startswith(name)) for name in ("hourly", "nightly")
    )
    assert lines.index(hourly) < lines.index(nightly)
    assert "every 1h, catch up one" in hourly and "paused" in hourly
    assert "cron 0 3 * * * (Europe/Paris), catch up skip" in nightly and "active" in nightly
    assert "T01:00:00Z" in nightly or "T02:00:00Z" in nightly  # 03:00 in Paris, in UTC

    document = json.loads((await shop.cli("schedules", "--json")).stdout)
    listed = {schedule["name"]: schedule for schedule in document["schedules"]}
    assert sorted(listed) == ["hourly", "nightly"]
    assert listed["hourly"]["every"] == 3600.0 and listed["hourly"]["paused"] is True
    assert listed["hourly"]["next_tick"] is None
    assert listed["nightly"]["state"] == {"qty": 2} and listed["nightly"]["options"]["priority"] == 5


async def test_show_prints_one_schedule(shop: Shop) -> None:
    await _declare(shop)
    result = await shop.cli("schedules", "show", "nightly")
    assert result.exit_code == 0, result.output
    for text in (
        "shop/order",
        "cron 0 3 * * * (Europe/Paris)",
        "active",
        '"qty": 2',
        '"fairness_key": "reports"',
    ):
        assert text in result.stdout, text
    document = json.loads((await shop.cli("schedules", "show", "hourly", "--json")).stdout)
    assert (document["name"], document["catch_up"], document["paused"]) == ("hourly", "one", True)


async def test_pause_resume_and_delete_change_the_schedule(shop: Shop) -> None:
    await _declare(shop)
    engine = shop.running_engine
    paused = await shop.cli("schedules", "pause", "nightly")
    assert (paused.exit_code, paused.stdout) == (0, "paused nightly\n")
    assert (await engine.get_schedule("nightly")).paused
    resumed = await shop.cli("schedules", "resume", "hourly")
    assert resumed.exit_code == 0, resumed.output
    assert resumed.stdout.startswith("resumed hourly: next tick ") and resumed.stdout.endswith(":00:00Z\n")
    assert not (await engine.get_schedule("hourly")).paused
    deleted = await shop.cli("schedules", "delete", "hourly")
    assert (deleted.exit_code, deleted.stdout) == (0, "deleted hourly\n")
    with pytest.raises(NotFoundError):
        await engine.get_schedule("hourly")


@pytest.mark.parametrize("command", ["show", "pause", "resume", "delete"])
async def test_an_unknown_schedule_exits_1_with_not_found(shop: Shop, command: str) -> None:
    result = await shop.cli("schedules", command, "nobody")
    assert result.exit_code == 1
    assert result.stderr == "error: schedule not found\n"


async def test_options_before_the_subcommand_are_a_usage_error(shop: Shop) -> None:
    await _declare(shop)
    # Taken before the subcommand, --dsn would be the list's, and the pause would go to the default database.
    from tests.cli.conftest import run_cli

    result = await run_cli("schedules", "--dsn", shop.dsn, "pause", "nightly")
    assert result.exit_code == 2
    assert "put the options after the subcommand" in result.stderr
    assert not (await shop.running_engine.get_schedule("nightly")).paused
