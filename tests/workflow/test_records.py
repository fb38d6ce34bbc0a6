"""The API records: option and query validation, statuses and duration conversion."""

from __future__ import annotations

import subprocess
import sys
from datetime import timedelta

import pytest

from dwarf import BadRequestError, FlowOptions, Query, Status
from dwarf.workflow.durations import to_seconds, to_timedelta


def test_default_options_are_valid() -> None:
    FlowOptions().check()


@pytest.mark.parametrize(
    "options",
    [
        FlowOptions(priority=-1),
        FlowOptions(priority=True),
        FlowOptions(fairness_weight=-0.5),
        FlowOptions(fairness_weight=float("nan")),
        FlowOptions(fairness_weight="heavy"),  # type: ignore[arg-type]
        FlowOptions(fairness_key=3),  # type: ignore[arg-type]
        FlowOptions(time_budget=-1),
        FlowOptions(time_budget="soon"),  # type: ignore[arg-type]
        FlowOptions(thread_key=7),  # type: ignore[arg-type]
    ],
)
def test_bad_options_are_rejected(options: FlowOptions) -> None:
    with pytest.raises(BadRequestError):
        options.check()


def test_default_query_is_valid() -> None:
    Query().check()


@pytest.mark.parametrize(
    "query",
    [
        Query(status="sleeping"),
        Query(limit=-1),
        Query(limit=True),
        Query(priority=-3),
        Query(shard=-1),
        Query(older_than=-5),
        Query(newer_than=timedelta(seconds=-1)),
    ],
)
def test_bad_queries_are_rejected(query: Query) -> None:
    with pytest.raises(BadRequestError):
        query.check()


def test_terminal_statuses() -> None:
    assert {s for s in Status if s.is_terminal} == {Status.COMPLETED, Status.FAILED, Status.CANCELLED}


def test_durations_accept_timedelta_and_seconds() -> None:
    assert to_seconds(timedelta(minutes=2)) == 120.0
    assert to_seconds(1.5) == 1.5
    assert to_seconds(None) == 0.0
    assert to_timedelta(3) == timedelta(seconds=3)


@pytest.mark.parametrize("value", [True, "3s", float("inf"), [1]])
def test_durations_reject_non_numbers(value: object) -> None:
    with pytest.raises(BadRequestError):
        to_seconds(value)  # type: ignore[arg-type]


def test_workflow_package_does_not_import_the_engine() -> None:
    code = (
        "import dwarf.workflow, sys; "
        "assert 'psycopg' not in sys.modules and 'dwarf.engine' not in sys.modules, sorted(sys.modules)"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
