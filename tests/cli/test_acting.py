"""`dwarf resume/signal/cancel/fork/delete/purge`: steering flows; the application's engine runs what they
record."""

from __future__ import annotations

import json

import pytest

from dwarf import Status
from tests.cli.conftest import Shop
from tests.engine.graphs import WAIT


async def _show(shop: Shop, key: str) -> dict[str, object]:
    result = await shop.cli("show", key, "--json")
    assert result.exit_code == 0, result.output
    document: dict[str, object] = json.loads(result.stdout)
    return document


async def _listed(shop: Shop) -> set[str]:
    result = await shop.cli("list", "--json", "--all")
    return {flow["flow_key"] for flow in json.loads(result.stdout)["flows"]}


async def test_resume_hands_the_data_over_and_the_applications_engine_completes_the_flow(shop: Shop) -> None:
    result = await shop.cli("resume", shop.interrupted, "--data", '{"approved": true}')
    assert result.exit_code == 0, result.output
    assert result.stdout == f"resumed {shop.interrupted}\n"
    outcome = await shop.running_engine.wait(shop.interrupted, timeout=WAIT)
    assert outcome.status == Status.COMPLETED
    assert outcome.state["approved"] is True
    assert outcome.state["recorded"] is True


async def test_signal_is_kept_for_the_flow_and_a_stopped_flow_refuses_it(shop: Shop) -> None:
    result = await shop.cli("signal", shop.interrupted, "paid", "--data", '{"amount": 42}')
    assert result.exit_code == 0, result.output
    assert result.stdout == f"signal 'paid' sent to {shop.interrupted}\n"
    refused = await shop.cli("signal", shop.completed, "paid")
    assert refused.exit_code == 1
    assert "it takes no more signals" in refused.stderr
    malformed = await shop.cli("signal", shop.interrupted, "paid", "--data", "[1]")
    assert malformed.exit_code == 2


async def test_cancel_stops_an_interrupted_flow_and_keeps_the_reason(shop: Shop) -> None:
    result = await shop.cli("cancel", shop.interrupted, "--reason", "customer left")
    assert result.exit_code == 0, result.output
    shown = await _show(shop, shop.interrupted)
    assert (shown["status"], shown["cancel_reason"]) == ("cancelled", "customer left")


async def _step_key(shop: Shop, flow_key: str, task: str) -> str:
    steps = json.loads((await shop.cli("history", flow_key, "--json")).stdout)["steps"]
    [key] = [step["step_key"] for step in steps if step["task_name"] == task]
    return str(key)


async def test_fork_reruns_the_step_with_set_values_read_as_json_or_else_as_text(shop: Shop) -> None:
    pack = await _step_key(shop, shop.completed, "Pack")
    result = await shop.cli(
        "fork", pack, "--set", "qty=10", "--set", "note=rush", "--set", "flag=true", "--set", 'tag="5"'
    )
    assert result.exit_code == 0, result.output
    new_key = result.stdout.strip()
    assert new_key not in shop.roots
    outcome = await shop.running_engine.wait(new_key, timeout=WAIT)
    assert outcome.status == Status.COMPLETED
    assert outcome.state["total"] == 20
    assert (outcome.state["note"], outcome.state["flag"], outcome.state["tag"]) == ("rush", True, "5")
    assert (await _show(shop, shop.completed))["state"] == {
        "qty": 3,
        "note": "gift",
        "priced": True,
        "total": 6,
    }


async def test_fork_json_prints_the_new_flow_key(shop: Shop) -> None:
    crash = await _step_key(shop, shop.failed, "Crash")
    result = await shop.cli("fork", crash, "--json")
    assert result.exit_code == 0, result.output
    new_key = json.loads(result.stdout)["flow_key"]
    outcome = await shop.running_engine.wait(new_key, timeout=WAIT)
    assert "out of stock" in outcome.error


async def test_delete_removes_the_flow_so_that_show_then_exits_1(shop: Shop) -> None:
    result = await shop.cli("delete", shop.completed)
    assert result.exit_code == 0, result.output
    assert result.stdout == f"deleted {shop.completed}\n"
    shown = await shop.cli("show", shop.completed)
    assert shown.exit_code == 1
    assert shown.stderr == "error: flow not found\n"


async def test_purge_asks_first_and_purges_on_yes(shop: Shop, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("dwarf.cli.commands._interactive", lambda: True)
    result = await shop.cli("purge", "--status", "failed", input="y\n")
    assert result.exit_code == 0, result.output
    assert "purged 1 flow\n" in result.stdout
    assert await _listed(shop) == shop.roots - {shop.failed}


async def test_purge_filters_choose_the_flows_that_go(shop: Shop) -> None:
    result = await shop.cli("purge", "--yes", "--workflow-url", "shop/order", "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout) == {"purged": 2}
    assert await _listed(shop) == {shop.interrupted, shop.failed, shop.nested}


async def test_purge_calls_the_engine_again_until_nothing_matches(
    shop: Shop, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The engine marks at most PURGE_LIMIT (4096) flows per call; two per call makes the loop observable.
    monkeypatch.setattr("dwarf.engine.listing.PURGE_LIMIT", 2)
    result = await shop.cli("purge", "--yes")
    assert result.exit_code == 0, result.output
    assert result.stdout == "purged 5 flows\n"
    assert await _listed(shop) == set()
