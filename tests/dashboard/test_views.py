"""The dashboard's pure helpers: list filters from a query string, JSON from a form, history as rows."""

from __future__ import annotations

from urllib.parse import parse_qsl

import pytest

from dwarf import BadRequestError, FlowStep, Status
from dwarf.dashboard.views import (
    DEFAULT_PAGE_SIZE,
    ListFilters,
    format_duration,
    parse_json_object,
    pretty_json,
    step_rows,
)


def test_filters_survive_a_round_trip_through_the_query_string() -> None:
    filters = ListFilters(status="failed", workflow="Checkout", task="Pay", search="a&b=c", subgraphs=True)
    query = filters.query_string(cursor="abc")
    assert ListFilters.from_params(dict(parse_qsl(query.removeprefix("?")))) == filters
    assert ("cursor", "abc") in parse_qsl(query.removeprefix("?"))


def test_no_filters_make_an_empty_query_string() -> None:
    assert ListFilters().query_string() == ""
    assert not ListFilters().active


def test_filters_become_the_engine_query() -> None:
    query = ListFilters(status="interrupted", workflow="Expense", thread="1-2-x", limit=7).query("cur")
    assert (query.status, query.workflow_name, query.thread_key, query.limit, query.cursor) == (
        "interrupted",
        "Expense",
        "1-2-x",
        7,
        "cur",
    )


@pytest.mark.parametrize("limit", ["0", "-1", "501", "ten", "١٢"])
def test_page_size_must_be_a_whole_number_in_range(limit: str) -> None:
    with pytest.raises(BadRequestError, match="limit"):
        ListFilters.from_params({"limit": limit})


def test_page_size_defaults_when_absent() -> None:
    assert ListFilters.from_params({}).limit == DEFAULT_PAGE_SIZE


def test_empty_form_text_is_an_empty_object() -> None:
    assert parse_json_object("  \n", "The payload") == {}


def test_json_error_says_where_parsing_stopped() -> None:
    with pytest.raises(BadRequestError, match=r"The payload is not valid JSON: .*line 2, column 3"):
        parse_json_object('{"a": 1,\n  oops}', "The payload")


def test_json_that_is_not_an_object_is_refused() -> None:
    with pytest.raises(BadRequestError, match="must be a JSON object"):
        parse_json_object('"yes"', "The payload")


def test_long_json_is_cut_with_a_note_of_what_was_left_out() -> None:
    text = pretty_json({"blob": "x" * 100}, limit=20)
    assert text.startswith('{\n  "blob": "xxxxxxx')
    assert text.endswith("… (96 more characters not shown)")
    assert pretty_json({"a": "é"}) == '{\n  "a": "é"\n}'


def test_durations_read_naturally() -> None:
    assert [format_duration(s) for s in (0.0123, 12.34, 245, 7380)] == [
        "12 ms",
        "12.3 s",
        "4 min 5 s",
        "2 h 3 min",
    ]


def test_history_rows_put_each_child_flow_right_after_the_step_that_ran_it() -> None:
    def step(step_id: int, name: str, *children: FlowStep) -> FlowStep:
        return FlowStep(
            step_id=step_id,
            task_name=name,
            status=Status.COMPLETED,
            subgraph=bool(children),
            sub_workflow_name=f"{name}Flow" if children else "",
            sub_history=list(children),
        )

    history = [step(1, "A", step(2, "B", step(3, "C")), step(4, "D")), step(5, "E")]
    rows = step_rows(history)
    assert [(row.step.task_name, row.depth) for row in rows] == [
        ("A", 0),
        ("B", 1),
        ("C", 2),
        ("D", 1),
        ("E", 0),
    ]
    assert rows[2].label == "AFlow / BFlow / #3 C"
