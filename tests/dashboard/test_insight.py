"""The dashboard at a glance, over HTTP: the list's counts per status and activity chart, the workflow URL
column, why a flow is not moving, fan-outs gathered into one box and one table row (opened on request),
and the timeline page. The pieces they are built from (dwarf.dashboard.insight) are checked on their own
at the end.

What rests on the engine's queries (counts, waits, history) runs on SQLite and PostgreSQL.
"""

from __future__ import annotations

import html
import re
from datetime import UTC, datetime, timedelta

import httpx
import pytest

from dwarf import FlowStep, Status
from dwarf.dashboard.insight import (
    MAX_TIMELINE_ROWS,
    GroupItem,
    activity_chart,
    parse_expanded,
    table_items,
    timeline,
)
from dwarf.errors import BadRequestError
from dwarf.workflow.progress import FlowActivity
from tests.dashboard.conftest import Dashboard
from tests.dashboard.workflows import DOUBLING, EXPENSE, FAILING, THUMBNAILS
from tests.engine.graphs import WAIT

SQLITE_ONLY = pytest.mark.parametrize("backend", ["sqlite"], indirect=True)


def _count(page: httpx.Response, status: str) -> int:
    found = re.search(rf'id="count-{status}"[^>]*>.*?</span>\s*([\d,]+)</a>', page.text, re.S)
    assert found, f"no count of {status}"
    return int(found.group(1).replace(",", ""))


async def _fan_out(dash: Dashboard, n: int) -> str:
    key, outcome = await dash.workers.run(THUMBNAILS, {"n": n}, timeout=WAIT)
    assert outcome.status == Status.COMPLETED, outcome.error
    return key


# --- the list ---


async def test_list_counts_flows_per_status_and_charts_them(dashboard: Dashboard) -> None:
    for _ in range(2):
        await dashboard.workers.run(DOUBLING, timeout=WAIT)
    await dashboard.workers.run(FAILING, timeout=WAIT)
    await dashboard.workers.run(EXPENSE, {"amount": 1.0}, timeout=WAIT)
    page = await dashboard.client.get("/flows")
    assert page.status_code == 200
    counts = {status: _count(page, status) for status in ("running", "interrupted", "completed", "failed")}
    assert counts == {"running": 0, "interrupted": 1, "completed": 2, "failed": 1}
    assert 'id="flow-total">4<' in page.text
    chart = re.search(r'<svg id="activity-chart".*?</svg>', page.text, re.S)
    assert chart
    assert len(re.findall(r'class="bar-started"', chart.group(0))) == 1  # all in the last slot
    assert "4 started from" in chart.group(0) and "2 completed from" in chart.group(0)
    # Each count links to the list of that status.
    assert 'href="/flows?status=failed"' in page.text


@SQLITE_ONLY
async def test_list_overview_windows(dashboard: Dashboard) -> None:
    await dashboard.workers.run(DOUBLING, timeout=WAIT)
    for window in ("1h", "7d"):
        page = await dashboard.client.get("/flows", params={"window": window})
        assert page.status_code == 200 and _count(page, "completed") == 1
        assert f"<strong>{window}</strong>" in page.text
    assert (await dashboard.client.get("/flows", params={"window": "2y"})).status_code == 400


@SQLITE_ONLY
async def test_later_pages_have_no_overview(dashboard: Dashboard) -> None:
    for _ in range(3):
        await dashboard.workers.run(DOUBLING, timeout=WAIT)
    first = await dashboard.client.get("/flows", params={"limit": "2"})
    found = re.search(r'class="next" rel="next" href="([^"]+)"', first.text)
    assert found and 'id="overview"' in first.text
    second = await dashboard.client.get(html.unescape(found.group(1)))
    assert second.status_code == 200 and 'id="overview"' not in second.text


async def test_the_workflow_column_is_the_url_the_flow_started_with(dashboard: Dashboard) -> None:
    await dashboard.workers.run(DOUBLING, timeout=WAIT)
    await dashboard.workers.run(FAILING, timeout=WAIT)
    page = await dashboard.client.get("/flows")
    cells = re.findall(r'class="workflow-url" href="([^"]+)" title="graph ([^"]*)">([^<]*)</a>', page.text)
    assert sorted((url, name, text) for url, name, text in cells) == [
        ("/flows?url=doubling", "Doubling", "doubling"),
        ("/flows?url=failing", "Failing", "failing"),
    ]
    narrowed = await dashboard.client.get("/flows", params={"url": "failing"})
    assert len(re.findall(r'class="flow-link"', narrowed.text)) == 1


@SQLITE_ONLY
async def test_the_list_offers_only_flow_statuses(dashboard: Dashboard) -> None:
    page = await dashboard.client.get("/flows")
    options = re.findall(r'<option value="([a-z]+)"', page.text)
    assert options == ["running", "interrupted", "completed", "failed", "cancelled"]


# --- the flow page ---


async def test_an_interrupted_flow_says_it_waits_for_a_resume(dashboard: Dashboard) -> None:
    key, _ = await dashboard.workers.run(EXPENSE, {"amount": 3.0}, timeout=WAIT)
    page = await dashboard.client.get(f"/flows/{key}")
    waits = re.search(r'<section class="outcome waits" id="waits">(.*?)</section>', page.text, re.S)
    assert waits and "Approve interrupted since" in waits.group(1)
    assert "waiting for a resume" in waits.group(1)
    listing = await dashboard.client.get("/flows")
    assert "since " in listing.text  # the list says since when it waits
    done, _ = await dashboard.workers.run(DOUBLING, timeout=WAIT)
    assert 'id="waits"' not in (await dashboard.client.get(f"/flows/{done}")).text


async def test_a_wide_fan_out_is_one_box_and_one_row_until_opened(dashboard: Dashboard) -> None:
    key = await _fan_out(dashboard, 30)
    page = await dashboard.client.get(f"/flows/{key}")
    assert page.status_code == 200
    mermaid = re.search(r'<pre class="mermaid">(.*?)</pre>', page.text, re.S)
    assert mermaid
    diagram = html.unescape(mermaid.group(1))
    assert re.search(r'g\d+\[\["Resize ×30<br/>30 completed"\]\]:::completed', diagram)
    assert re.search(r'g\d+\[\["Upload ×30<br/>30 completed"\]\]:::completed', diagram)
    assert len(re.findall(r'<tr class="step ', page.text)) == 2  # Split and Collect
    rows = re.findall(r'<tr class="group-row[^"]*" id="group-(\d+)"', page.text)
    assert len(rows) == 2
    links = re.findall(r'class="group-link" data-node="g(\d+)" href="([^"]+)"', page.text)
    assert [group for group, _ in links] == rows
    # Opening the Resize group lists (and draws) its 30 steps; the rest stays gathered.
    opened = await dashboard.client.get(html.unescape(links[0][1]))
    assert opened.status_code == 200
    assert len(re.findall(r'<tr class="step ', opened.text)) == 32
    opened_mermaid = re.search(r'<pre class="mermaid">(.*?)</pre>', opened.text, re.S)
    assert opened_mermaid and html.unescape(opened_mermaid.group(1)).count('["Resize<br/>') == 30
    assert "Close</a>" in opened.text


@SQLITE_ONLY
async def test_bad_expand_values_are_refused(dashboard: Dashboard) -> None:
    key, _ = await dashboard.workers.run(DOUBLING, timeout=WAIT)
    for bad in ("x", "1,-2", ",".join(["1"] * 21), "9" * 20):
        response = await dashboard.client.get(f"/flows/{key}", params={"expand": bad})
        assert response.status_code == 400, bad
    assert (await dashboard.client.get(f"/flows/{key}", params={"expand": "12345"})).status_code == 200


async def test_the_timeline_draws_a_bar_per_step_and_group(dashboard: Dashboard) -> None:
    key = await _fan_out(dashboard, 12)
    page = await dashboard.client.get(f"/flows/{key}/timeline")
    assert page.status_code == 200
    labels = [
        html.unescape(label)
        for label in re.findall(r'<div class="gantt-label[^"]*" title="([^"]+)"', page.text)
    ]
    assert len(labels) == 4
    assert re.fullmatch(r"#\d+ Split", labels[0]) and re.fullmatch(r"#\d+ Collect", labels[3])
    assert labels[1:3] == ["Resize ×12: 12 completed", "Upload ×12: 12 completed"]
    assert len(re.findall(r'class="bar run status-completed"', page.text)) == 4
    assert f'href="/flows/{key}/timeline"' in (await dashboard.client.get(f"/flows/{key}")).text
    assert (await dashboard.client.get("/flows/1-999999-AAAAAAAAAAAAAAAA/timeline")).status_code == 404


# --- the pieces ---

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def _step(step_id: int, task: str, depth: int, predecessor: int, status: Status, **times: float) -> FlowStep:
    started = times.get("started")
    return FlowStep(
        step_key=f"1-{step_id}-abcdefghijklmnop",
        step_id=step_id,
        step_depth=depth,
        task_name=task,
        predecessor_id=predecessor,
        status=status,
        created_at=T0 + timedelta(seconds=times.get("created", 0.0)),
        started_at=None if started is None else T0 + timedelta(seconds=started),
        updated_at=T0 + timedelta(seconds=times.get("updated", 0.0)),
    )


def _wide(width: int, failed: int = 0) -> list[FlowStep]:
    steps = [_step(1, "Split", 1, 0, Status.COMPLETED, started=0, updated=1)]
    for branch in range(width):
        status = Status.FAILED if branch < failed else Status.COMPLETED
        steps.append(_step(2 + branch, "Work", 2, 1, status, created=1, started=2, updated=3 + branch))
    return steps


def test_table_items_gather_a_fan_out_and_list_what_needs_a_look() -> None:
    items, cut = table_items(_wide(5000, failed=3))
    assert cut == 0 and len(items) == 2
    group = items[1]
    assert isinstance(group, GroupItem) and not group.expanded
    assert group.group.summary == "Work ×5,000: 4,997 completed, 3 failed"
    assert [row.step.step_id for row in group.shown] == [2, 3, 4] and group.hidden == 4997
    opened, cut = table_items(_wide(5000), expanded=frozenset({2}), limit=500)
    assert len(opened) == 2 + 499 and cut == 4501
    assert isinstance(opened[1], GroupItem) and opened[1].expanded and opened[1].toggle == ""


def test_the_timeline_places_waits_and_runs_in_percent_of_its_span() -> None:
    steps = [
        _step(1, "First", 1, 0, Status.COMPLETED, created=0, started=2, updated=4),
        _step(2, "Second", 2, 1, Status.PENDING, created=4, started=5, updated=6),  # an attempt failed
    ]
    items, _ = table_items(steps)
    chart = timeline(items, now=T0 + timedelta(seconds=10))
    first, second = chart.rows
    assert [(s.kind, s.left, s.width) for s in first.segments] == [("wait", 0.0, 20.0), ("run", 20.0, 20.0)]
    assert [(s.kind, s.left, s.width) for s in second.segments] == [
        ("wait", 40.0, 10.0),
        ("run", 50.0, 10.0),
        ("wait", 60.0, 40.0),
    ]
    assert first.note == "waited 2.0 s, ran 2.0 s" and chart.span == "10.0 s"
    assert chart.ticks[0] == (0.0, "0") and chart.ticks[-1][0] <= 100.0
    many = [
        _step(i, f"T{i}", i, i - 1, Status.COMPLETED, created=i, started=i, updated=i + 1)
        for i in range(1, 400)
    ]
    long_chart = timeline(table_items(many)[0])
    assert len(long_chart.rows) == MAX_TIMELINE_ROWS and long_chart.cut == 399 - MAX_TIMELINE_ROWS


def test_the_activity_chart_scales_to_the_busiest_slot() -> None:
    activity = FlowActivity(
        since=T0,
        bucket_seconds=3600,
        started=[4, 0, 2],
        completed=[3, 0, 0],
        failed=[1, 0, 0],
        cancelled=[0] * 3,
    )
    chart = activity_chart(activity)
    tallest = max(chart.bars, key=lambda bar: bar.height)
    assert chart.peak == 4 and tallest.series == "started" and tallest.y == pytest.approx(4.0)
    assert [bar.series for bar in chart.bars] == ["started", "completed", "failed", "started"]
    assert chart.labels[0] == (0.0, "00:00")


def test_parse_expanded() -> None:
    assert parse_expanded("") == frozenset()
    assert parse_expanded("12, 40,12") == frozenset({12, 40})
    for bad in ("a", "-1", "1.5", "1," * 21):
        with pytest.raises(BadRequestError):
            parse_expanded(bad)
