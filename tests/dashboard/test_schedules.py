"""The dashboard's schedules page: every schedule with its timing, state, next and last tick and a link to
the last flow it started; pause and resume buttons whose refusals show on the page; names escaped; a
foreign page cannot post to it (docs/dashboard.md#schedules)."""

from __future__ import annotations

import html
import re

import pytest

from dwarf.workflow.schedules import RESERVED_STATE_FIELDS
from tests.dashboard.conftest import Dashboard
from tests.dashboard.workflows import DOUBLING
from tests.engine.graphs import WAIT, wait_until

SQLITE_ONLY = pytest.mark.parametrize("backend", ["sqlite"], indirect=True)


def _row(page_text: str, name: str) -> str:
    found = re.search(
        rf'<tr class="schedule" data-name="{re.escape(html.escape(name))}">(.*?)</tr>', page_text, re.S
    )
    assert found, f"no row for schedule {name!r}"
    return found.group(1)


async def test_the_page_lists_every_schedule_with_its_last_flow(dashboard: Dashboard) -> None:
    empty = await dashboard.client.get("/schedules")
    assert empty.status_code == 200 and "No schedules" in empty.text
    await dashboard.workers.schedule("doubler", DOUBLING, every=0.1)
    await dashboard.workers.schedule("nightly", DOUBLING, cron="0 3 * * *", timezone="Europe/Paris")
    await dashboard.workers.pause_schedule("nightly")

    async def ticked() -> bool:
        return (await dashboard.ops.get_schedule("doubler")).last_flow_key != ""

    await wait_until(ticked, WAIT)
    await dashboard.workers.pause_schedule("doubler")
    doubler = await dashboard.ops.get_schedule("doubler")
    page = await dashboard.client.get("/schedules")
    assert page.status_code == 200
    assert '<a href="/schedules">Schedules</a>' in page.text  # in the navigation of every page
    row = _row(page.text, "doubler")
    assert "every 0.1s" in row and "catch up: skip" in row and ">paused<" in row
    shard, flow_id, _ = doubler.last_flow_key.split("-", 2)
    assert f'href="/flows/{doubler.last_flow_key}">{shard}-{flow_id}</a>' in row
    assert f'href="/flows?url={DOUBLING}"' in row
    nightly = _row(page.text, "nightly")
    assert "cron 0 3 * * * (Europe/Paris)" in nightly and ">Resume<" in nightly
    # The last flow's page opens from the link: it is the tick's flow.
    flow_page = await dashboard.client.get(f"/flows/{doubler.last_flow_key}")
    assert flow_page.status_code == 200
    assert all(field in flow_page.text for field in RESERVED_STATE_FIELDS)


async def test_pause_and_resume_buttons_change_the_schedule(dashboard: Dashboard) -> None:
    await dashboard.workers.schedule("hourly", DOUBLING, every=3600)
    paused = await dashboard.client.post("/schedules/pause", data={"name": "hourly"})
    assert paused.status_code == 303 and paused.headers["location"] == "/schedules?done=paused"
    assert (await dashboard.ops.get_schedule("hourly")).paused
    shown = await dashboard.client.get(paused.headers["location"])
    assert 'class="notice"' in shown.text and ">Resume<" in _row(shown.text, "hourly")
    resumed = await dashboard.client.post("/schedules/resume", data={"name": "hourly"})
    assert resumed.status_code == 303 and resumed.headers["location"] == "/schedules?done=resumed"
    assert not (await dashboard.ops.get_schedule("hourly")).paused


@SQLITE_ONLY
async def test_an_unknown_schedule_is_a_404_on_the_page(dashboard: Dashboard) -> None:
    response = await dashboard.client.post("/schedules/pause", data={"name": "nobody"})
    assert response.status_code == 404
    assert "there is no schedule of that name" in response.text


@SQLITE_ONLY
async def test_schedule_names_are_escaped(dashboard: Dashboard) -> None:
    name = '<script>alert("x")</script>'
    await dashboard.workers.schedule(name, DOUBLING, every=3600)
    page = await dashboard.client.get("/schedules")
    assert "<script>alert" not in page.text
    assert "&lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt;" in page.text
    paused = await dashboard.client.post("/schedules/pause", data={"name": name})
    assert paused.status_code == 303 and (await dashboard.ops.get_schedule(name)).paused


@SQLITE_ONLY
async def test_a_cross_site_post_cannot_pause_a_schedule(dashboard: Dashboard) -> None:
    await dashboard.workers.schedule("guarded", DOUBLING, every=3600)
    response = await dashboard.client.post(
        "/schedules/pause", data={"name": "guarded"}, headers={"Sec-Fetch-Site": "cross-site"}
    )
    assert response.status_code == 403
    assert not (await dashboard.ops.get_schedule("guarded")).paused
