"""How command-line text becomes values: ages, --set overrides, --data, DSNs in messages, JSON output."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest
import typer

from dwarf import FlowOutcome, Status
from dwarf.cli.parsing import parse_age, parse_json_object, parse_overrides
from dwarf.cli.render import iso, jsonable
from dwarf.cli.session import redact


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("90", 90.0),
        ("1.5", 1.5),
        ("250ms", 0.25),
        ("30s", 30.0),
        ("5m", 300.0),
        ("2h", 7200.0),
        ("1d", 86400.0),
        ("1w", 604800.0),
        ("1h30m", 5400.0),
        (" 2H ", 7200.0),
    ],
)
def test_an_age_is_seconds_or_a_sum_of_unit_amounts(text: str, seconds: float) -> None:
    assert parse_age(text, "--older-than") == seconds


@pytest.mark.parametrize("text", ["", "5x", "m5", "-3", "1h 30m", "nan", "inf", "1.2.3s"])
def test_anything_else_is_not_an_age(text: str) -> None:
    with pytest.raises(typer.BadParameter):
        parse_age(text, "--older-than")


def test_set_values_are_json_when_they_parse_and_text_otherwise() -> None:
    assert parse_overrides(
        ["n=3", "ok=false", "items=[1, 2]", "name=Ada", 'quoted="7"', "empty=", "eq=a=b"]
    ) == {
        "n": 3,
        "ok": False,
        "items": [1, 2],
        "name": "Ada",
        "quoted": "7",
        "empty": "",
        "eq": "a=b",
    }


def test_a_later_set_of_the_same_key_wins() -> None:
    assert parse_overrides(["n=1", "n=2"]) == {"n": 2}


@pytest.mark.parametrize("assignment", ["n", "=3"])
def test_a_set_without_a_key_and_an_equals_sign_is_rejected(assignment: str) -> None:
    with pytest.raises(typer.BadParameter):
        parse_overrides([assignment])


def test_data_must_be_a_json_object() -> None:
    assert parse_json_object('{"a": [1]}', "--data") == {"a": [1]}
    for text in ("[1]", "3", '"x"', "{oops"):
        with pytest.raises(typer.BadParameter):
            parse_json_object(text, "--data")


def test_messages_show_a_dsn_without_its_password() -> None:
    assert (
        redact("postgresql://ops:s3cret@db.internal:5433/flows")
        == "postgresql://ops:***@db.internal:5433/flows"
    )
    assert redact("postgresql://ops@db/flows") == "postgresql://ops@db/flows"
    assert redact("sqlite:///dwarf.db") == "sqlite:///dwarf.db"


def test_times_print_in_utc_iso_form() -> None:
    moment = datetime(2024, 5, 1, 14, 0, 0, 123456, tzinfo=timezone(timedelta(hours=2)))
    assert iso(moment) == "2024-05-01T12:00:00.123456Z"
    assert iso(None) == ""


def test_records_become_plain_json_values() -> None:
    outcome = FlowOutcome(status=Status.INTERRUPTED, state={"at": 1}, interrupt_payload={"q": "?"})
    assert jsonable({"outcome": outcome, "when": datetime(2024, 1, 2, tzinfo=UTC)}) == {
        "outcome": {
            "status": "interrupted",
            "state": {"at": 1},
            "error": "",
            "interrupt_payload": {"q": "?"},
            "cancel_reason": "",
        },
        "when": "2024-01-02T00:00:00Z",
    }
