"""The dashboard over HTTP: routing, the flow list and its filters and paging, the flow page, the
resume/cancel/fork actions and how refusals show, escaping, and the security headers.

Tests whose outcome rests on the engine's queries (listing, filters, paging, history, the actions) run on
SQLite and PostgreSQL (``backend``); those of the dashboard's own behaviour on SQLite. All of them browse
flows that a real engine ran.
"""

from __future__ import annotations

import html
import re

import httpx
import pytest
from starlette.applications import Starlette
from starlette.routing import Mount

from dwarf import FlowOptions, Status
from dwarf.dashboard import create_app
from tests.dashboard.conftest import Dashboard
from tests.dashboard.workflows import DOUBLING, EXPENSE, FAILING, PARENT
from tests.engine.graphs import WAIT

SQLITE_ONLY = pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
"""For behaviour of the dashboard itself; what rests on the database's queries runs on both backends."""


def _flow_links(page: httpx.Response) -> list[str]:
    """The flow keys the list page links to, in page order."""
    return re.findall(r'class="flow-link" href="/flows/([^"?]+)"', page.text)


def _next_page(page: httpx.Response) -> str:
    found = re.search(r'class="next" rel="next" href="([^"]+)"', page.text)
    return html.unescape(found.group(1)) if found else ""


def _text_of(page: httpx.Response, element_id: str) -> str:
    found = re.search(rf'id="{element_id}"[^>]*>(.*?)</', page.text, re.S)
    assert found, f"no element #{element_id}"
    return html.unescape(found.group(1))


async def _interrupted_expense(dash: Dashboard, amount: float = 42.0) -> str:
    key, outcome = await dash.workers.run(EXPENSE, {"amount": amount}, timeout=WAIT)
    assert outcome.status == Status.INTERRUPTED, outcome.error
    return key


# --- routing ---


@SQLITE_ONLY
async def test_root_redirects_to_the_flow_list(dashboard: Dashboard) -> None:
    response = await dashboard.client.get("/")
    assert response.status_code == 303
    assert response.headers["location"] == "/flows"


@SQLITE_ONLY
async def test_unknown_path_is_a_404_page(dashboard: Dashboard) -> None:
    response = await dashboard.client.get("/no/such/page")
    assert response.status_code == 404
    assert "There is no such page." in response.text


@SQLITE_ONLY
async def test_every_wrong_flow_key_is_the_same_404(dashboard: Dashboard) -> None:
    key, _ = await dashboard.workers.run(DOUBLING, timeout=WAIT)
    shard, flow_id, token = key.split("-", 2)
    wrong_token = f"{shard}-{flow_id}-{'A' * len(token)}" if token != "A" * len(token) else key[:-1] + "B"
    answers = [
        await dashboard.client.get(f"/flows/{bad}")
        for bad in ("garbage", f"{shard}-999999-{token}", wrong_token, f"7-{flow_id}-{token}")
    ]
    assert [answer.status_code for answer in answers] == [404] * 4
    assert len({_text_of(answer, "error") for answer in answers}) == 1


@SQLITE_ONLY
async def test_posting_to_an_unknown_flow_is_a_404(dashboard: Dashboard) -> None:
    response = await dashboard.client.post("/flows/1-999999-AAAAAAAAAAAAAAAA/cancel", data={"reason": "x"})
    assert response.status_code == 404


@SQLITE_ONLY
async def test_mermaid_is_served_from_the_package(dashboard: Dashboard) -> None:
    entry = await dashboard.client.get("/static/mermaid/mermaid.esm.min.mjs")
    assert entry.status_code == 200
    assert "javascript" in entry.headers["content-type"]
    # The entry module imports its chunks by relative paths: they are served too, as JavaScript.
    chunks = re.findall(r'from"\./(chunks/mermaid\.esm\.min/[^"]+\.mjs)"', entry.text)
    assert chunks
    for chunk in chunks:
        response = await dashboard.client.get(f"/static/mermaid/{chunk}")
        assert response.status_code == 200
        assert "javascript" in response.headers["content-type"]
    drawer = await dashboard.client.get("/static/diagrams.mjs")
    assert "javascript" in drawer.headers["content-type"]
    assert "./mermaid/mermaid.esm.min.mjs" in drawer.text


@SQLITE_ONLY
async def test_mermaid_is_cached_like_the_other_static_files(dashboard: Dashboard) -> None:
    # Mermaid comes from the package's archive, the other static files from disk: both revalidate
    # (no-cache) by ETag or Last-Modified and answer a current copy with 304.
    for url in ("/static/mermaid/mermaid.esm.min.mjs", "/static/dashboard.css"):
        first = await dashboard.client.get(url)
        assert first.headers["cache-control"] == "no-cache"
        assert first.headers["x-content-type-options"] == "nosniff"
        by_etag = await dashboard.client.get(url, headers={"if-none-match": first.headers["etag"]})
        by_date = await dashboard.client.get(
            url, headers={"if-modified-since": first.headers["last-modified"]}
        )
        stale = await dashboard.client.get(url, headers={"if-none-match": '"other"'})
        assert (by_etag.status_code, by_date.status_code, stale.status_code) == (304, 304, 200), url
        assert by_etag.headers["etag"] == first.headers["etag"]
        assert by_etag.content == b""
    license_text = await dashboard.client.get("/static/mermaid/LICENSE")
    assert license_text.status_code == 200
    assert "MIT" in license_text.text


@SQLITE_ONLY
@pytest.mark.parametrize(
    "path",
    [
        "/static/mermaid/",
        "/static/mermaid/nothing.mjs",
        "/static/mermaid/chunks/mermaid.esm.min/katex-0000.mjs",
        "/static/mermaid/%2e%2e/dashboard.css",
        "/static/mermaid/..%2fbundle.py",
        "/static/mermaid//etc/passwd",
        "/static/mermaid/mermaid.tar.xz",
    ],
)
async def test_mermaid_answers_only_its_archives_files(dashboard: Dashboard, path: str) -> None:
    response = await dashboard.client.get(path)
    assert response.status_code == 404
    assert "Not found" in response.text


# --- the flow list ---


async def test_list_links_every_flow_newest_first(dashboard: Dashboard) -> None:
    keys = [(await dashboard.workers.run(DOUBLING, timeout=WAIT))[0] for _ in range(3)]
    response = await dashboard.client.get("/flows")
    assert response.status_code == 200
    assert _flow_links(response) == keys[::-1]


@SQLITE_ONLY
async def test_list_shows_flows_by_a_token_free_id(dashboard: Dashboard) -> None:
    key, _ = await dashboard.workers.run(DOUBLING, timeout=WAIT)
    shard, flow_id, token = key.split("-", 2)
    response = await dashboard.client.get("/flows")
    assert f">{shard}-{flow_id}</a>" in response.text
    assert response.text.count(token) == 1  # in the link's href only


async def test_list_filters_by_status(dashboard: Dashboard) -> None:
    done, _ = await dashboard.workers.run(DOUBLING, timeout=WAIT)
    waiting = await _interrupted_expense(dashboard)
    response = await dashboard.client.get("/flows", params={"status": "interrupted"})
    assert _flow_links(response) == [waiting]
    assert done not in response.text


async def test_list_filters_by_workflow_name(dashboard: Dashboard) -> None:
    doubled, _ = await dashboard.workers.run(DOUBLING, timeout=WAIT)
    await _interrupted_expense(dashboard)
    response = await dashboard.client.get("/flows", params={"workflow": "Doubling"})
    assert _flow_links(response) == [doubled]


async def test_list_filters_by_current_task(dashboard: Dashboard) -> None:
    await dashboard.workers.run(DOUBLING, timeout=WAIT)
    waiting = await _interrupted_expense(dashboard)
    response = await dashboard.client.get("/flows", params={"task": "Approve"})
    assert _flow_links(response) == [waiting]


async def test_list_filters_by_thread(dashboard: Dashboard) -> None:
    first, _ = await dashboard.workers.run(DOUBLING, timeout=WAIT)
    await dashboard.workers.run(DOUBLING, timeout=WAIT)
    second = await dashboard.workers.continue_thread(first, {"a": 4})
    await dashboard.workers.wait(second, timeout=WAIT)
    response = await dashboard.client.get("/flows", params={"thread": first})
    assert _flow_links(response) == [second, first]


async def test_list_searches_errors(dashboard: Dashboard) -> None:
    failed, outcome = await dashboard.workers.run(FAILING, timeout=WAIT)
    assert outcome.status == Status.FAILED
    await dashboard.workers.run(DOUBLING, timeout=WAIT)
    response = await dashboard.client.get("/flows", params={"search": "declined"})
    assert _flow_links(response) == [failed]


async def test_list_shows_child_flows_only_when_asked(dashboard: Dashboard) -> None:
    parent, outcome = await dashboard.workers.run(PARENT, timeout=WAIT)
    assert outcome.status == Status.COMPLETED, outcome.error
    roots = await dashboard.client.get("/flows")
    everything = await dashboard.client.get("/flows", params={"subgraphs": "1"})
    assert _flow_links(roots) == [parent]
    assert len(_flow_links(everything)) == 2
    assert 'class="tag">child</span>' in everything.text


async def test_list_pages_through_the_engine_cursor(dashboard: Dashboard) -> None:
    keys = [(await dashboard.workers.run(DOUBLING, timeout=WAIT))[0] for _ in range(5)]
    seen: list[str] = []
    url = "/flows?limit=2"
    for _ in range(5):
        response = await dashboard.client.get(url)
        assert response.status_code == 200
        seen += _flow_links(response)
        url = _next_page(response)
        if not url:
            break
    assert seen == keys[::-1]


@SQLITE_ONLY
async def test_next_page_keeps_the_filters(dashboard: Dashboard) -> None:
    for _ in range(3):
        await dashboard.workers.run(DOUBLING, timeout=WAIT)
    await _interrupted_expense(dashboard)
    first = await dashboard.client.get("/flows", params={"workflow": "Doubling", "limit": "2"})
    second = await dashboard.client.get(_next_page(first))
    assert len(_flow_links(second)) == 1
    assert 'value="Doubling"' in second.text


@SQLITE_ONLY
async def test_unknown_status_filter_is_a_400_page(dashboard: Dashboard) -> None:
    response = await dashboard.client.get("/flows", params={"status": "sleeping"})
    assert response.status_code == 400
    assert "unknown status filter" in _text_of(response, "error")


@SQLITE_ONLY
async def test_malformed_cursor_is_a_400_page(dashboard: Dashboard) -> None:
    response = await dashboard.client.get("/flows", params={"cursor": "%%%"})
    assert response.status_code == 400
    assert "malformed cursor" in _text_of(response, "error")


@SQLITE_ONLY
async def test_out_of_range_page_size_is_a_400_page(dashboard: Dashboard) -> None:
    response = await dashboard.client.get("/flows", params={"limit": "0"})
    assert response.status_code == 400


# --- the flow page ---


@SQLITE_ONLY
async def test_flow_page_shows_status_state_and_workflow(dashboard: Dashboard) -> None:
    key, _ = await dashboard.workers.run(DOUBLING, {"a": 3}, timeout=WAIT)
    response = await dashboard.client.get(f"/flows/{key}")
    assert response.status_code == 200
    assert _text_of(response, "flow-status") == "completed"
    assert "<h2>Final state</h2>" in response.text
    assert _text_of(response, "flow-state") == '{\n  "a": 3,\n  "b": 6\n}'
    assert "Doubling" in response.text


async def test_flow_page_lists_each_steps_input_state_and_changes(dashboard: Dashboard) -> None:
    key, _ = await dashboard.workers.run(DOUBLING, {"a": 3}, timeout=WAIT)
    [start, double] = await dashboard.workers.history(key)
    response = await dashboard.client.get(f"/flows/{key}")
    row = re.search(rf'id="step-{double.step_id}">(.*?)</tr>', response.text, re.S)
    assert row is not None
    cells = html.unescape(row.group(1))
    assert '{\n  "a": 3\n}' in cells  # input state
    assert '{\n  "b": 6\n}' in cells  # changes
    assert f'id="step-{start.step_id}"' in response.text


@SQLITE_ONLY
async def test_flow_page_embeds_the_history_diagram(dashboard: Dashboard) -> None:
    key, _ = await dashboard.workers.run(DOUBLING, timeout=WAIT)
    response = await dashboard.client.get(f"/flows/{key}")
    source = re.search(r'<pre class="mermaid">(.*?)</pre>', response.text, re.S)
    assert source is not None
    assert html.unescape(source.group(1)) == await dashboard.ops.history_mermaid(key)
    assert '<script type="module" src="/static/diagrams.mjs">' in response.text


@SQLITE_ONLY
async def test_failed_flow_page_shows_the_error(dashboard: Dashboard) -> None:
    key, _ = await dashboard.workers.run(FAILING, timeout=WAIT)
    response = await dashboard.client.get(f"/flows/{key}")
    assert "card <declined>" in _text_of(response, "flow-error")


@SQLITE_ONLY
async def test_interrupted_flow_page_shows_the_payload_and_a_resume_form(dashboard: Dashboard) -> None:
    key = await _interrupted_expense(dashboard, 42.0)
    response = await dashboard.client.get(f"/flows/{key}")
    assert '"question": "Pay 42.0 EUR?"' in _text_of(response, "interrupt-payload")
    assert 'id="resume-form"' in response.text
    assert 'id="fork-form"' not in response.text  # only stopped flows fork


@SQLITE_ONLY
async def test_completed_flow_page_offers_fork_but_not_resume_or_cancel(dashboard: Dashboard) -> None:
    key, _ = await dashboard.workers.run(DOUBLING, timeout=WAIT)
    response = await dashboard.client.get(f"/flows/{key}")
    assert 'id="fork-form"' in response.text
    assert 'id="resume-form"' not in response.text
    assert 'id="cancel-form"' not in response.text


async def test_parent_flow_page_nests_the_child_flows_steps(dashboard: Dashboard) -> None:
    key, _ = await dashboard.workers.run(PARENT, timeout=WAIT)
    [call] = await dashboard.workers.history(key)
    [child_step] = call.sub_history
    response = await dashboard.client.get(f"/flows/{key}")
    assert "runs child flow <strong>ChildFlow</strong>" in response.text
    assert f'class="step depth-1" id="step-{child_step.step_id}"' in response.text


@SQLITE_ONLY
async def test_child_flow_page_has_no_resume_or_cancel(dashboard: Dashboard) -> None:
    await dashboard.workers.run(PARENT, timeout=WAIT)
    listing = await dashboard.client.get("/flows", params={"subgraphs": "1", "workflow": "ChildFlow"})
    [child] = _flow_links(listing)
    response = await dashboard.client.get(f"/flows/{child}")
    assert response.status_code == 200
    assert "child flow</span>" in response.text
    assert 'id="cancel-form"' not in response.text


@SQLITE_ONLY
async def test_continued_flow_page_lists_its_thread(dashboard: Dashboard) -> None:
    first, _ = await dashboard.workers.run(DOUBLING, timeout=WAIT)
    second = await dashboard.workers.continue_thread(first)
    await dashboard.workers.wait(second, timeout=WAIT)
    response = await dashboard.client.get(f"/flows/{second}")
    assert "<h2>Thread</h2>" in response.text
    assert f'href="/flows/{first}"' in response.text


@SQLITE_ONLY
async def test_state_values_are_escaped(dashboard: Dashboard) -> None:
    evil = "<script>alert('owned')</script>"
    key, _ = await dashboard.workers.run(
        DOUBLING, {evil: evil}, options=FlowOptions(fairness_key=evil), timeout=WAIT
    )
    page = await dashboard.client.get(f"/flows/{key}")
    listing = await dashboard.client.get("/flows", params={"search": evil})
    for response in (page, listing):
        assert evil not in response.text
        assert "<script>alert" not in response.text
    assert "&lt;script&gt;alert(&#39;owned&#39;)&lt;/script&gt;" in page.text
    assert 'value="&lt;script&gt;' in listing.text  # the search field echoes it, escaped


# --- actions ---


async def test_resume_redirects_to_the_flow_which_then_completes(dashboard: Dashboard) -> None:
    key = await _interrupted_expense(dashboard)
    response = await dashboard.client.post(
        f"/flows/{key}/resume", data={"payload": '{"approved": true, "by": "grace"}'}
    )
    assert response.status_code == 303
    assert response.headers["location"] == f"/flows/{key}?done=resumed"
    outcome = await dashboard.workers.wait(key, timeout=WAIT)
    assert outcome.status == Status.COMPLETED
    assert outcome.state["approver"] == "grace"
    assert outcome.state["paid"] is True


@SQLITE_ONLY
async def test_page_after_an_action_says_what_happened(dashboard: Dashboard) -> None:
    key, _ = await dashboard.workers.run(DOUBLING, timeout=WAIT)
    response = await dashboard.client.get(f"/flows/{key}", params={"done": "cancelled"})
    assert 'class="notice"' in response.text
    unknown = await dashboard.client.get(f"/flows/{key}", params={"done": "<b>pwned</b>"})
    assert 'class="notice"' not in unknown.text


@SQLITE_ONLY
async def test_resume_with_bad_json_is_a_400_that_keeps_the_input(dashboard: Dashboard) -> None:
    key = await _interrupted_expense(dashboard)
    response = await dashboard.client.post(f"/flows/{key}/resume", data={"payload": '{"approved": tru'})
    assert response.status_code == 400
    assert "not valid JSON" in _text_of(response, "error")
    assert "{&#34;approved&#34;: tru</textarea>" in response.text
    assert (await dashboard.ops.snapshot(key)).status == Status.INTERRUPTED


@SQLITE_ONLY
async def test_resume_with_a_json_array_is_a_400(dashboard: Dashboard) -> None:
    key = await _interrupted_expense(dashboard)
    response = await dashboard.client.post(f"/flows/{key}/resume", data={"payload": "[1, 2]"})
    assert response.status_code == 400
    assert "must be a JSON object" in _text_of(response, "error")


@SQLITE_ONLY
async def test_resume_of_a_completed_flow_is_a_409(dashboard: Dashboard) -> None:
    key, _ = await dashboard.workers.run(DOUBLING, timeout=WAIT)
    response = await dashboard.client.post(f"/flows/{key}/resume", data={"payload": "{}"})
    assert response.status_code == 409
    assert "not interrupted" in _text_of(response, "error")


async def test_cancel_stops_the_flow_with_the_reason(dashboard: Dashboard) -> None:
    key = await _interrupted_expense(dashboard)
    response = await dashboard.client.post(f"/flows/{key}/cancel", data={"reason": "duplicate claim"})
    assert response.status_code == 303
    outcome = await dashboard.ops.snapshot(key)
    assert outcome.status == Status.CANCELLED
    assert outcome.cancel_reason == "duplicate claim"
    page = await dashboard.client.get(response.headers["location"])
    assert _text_of(page, "cancel-reason") == "duplicate claim"


@SQLITE_ONLY
async def test_cancel_of_a_completed_flow_is_a_409(dashboard: Dashboard) -> None:
    key, _ = await dashboard.workers.run(DOUBLING, timeout=WAIT)
    response = await dashboard.client.post(f"/flows/{key}/cancel", data={"reason": ""})
    assert response.status_code == 409
    assert "already completed" in _text_of(response, "error")


async def test_fork_reruns_the_chosen_step_with_overrides(dashboard: Dashboard) -> None:
    key, _ = await dashboard.workers.run(DOUBLING, timeout=WAIT)
    [_start, double] = await dashboard.workers.history(key)
    response = await dashboard.client.post(
        f"/flows/{key}/fork", data={"step": double.step_key, "overrides": '{"a": 21}'}
    )
    assert response.status_code == 303
    location = response.headers["location"]
    forked = location.removeprefix("/flows/").removesuffix("?done=forked")
    assert forked != key
    outcome = await dashboard.workers.wait(forked, timeout=WAIT)
    assert outcome.state == {"a": 21, "b": 42}
    assert (await dashboard.ops.snapshot(key)).state == {"a": 1, "b": 2}


async def test_fork_refuses_a_step_of_another_flow(dashboard: Dashboard) -> None:
    key, _ = await dashboard.workers.run(DOUBLING, timeout=WAIT)
    other, _ = await dashboard.workers.run(DOUBLING, timeout=WAIT)
    [foreign, _double] = await dashboard.workers.history(other)
    response = await dashboard.client.post(f"/flows/{key}/fork", data={"step": foreign.step_key})
    assert response.status_code == 404
    assert "no step of this flow" in _text_of(response, "error")


@SQLITE_ONLY
async def test_fork_with_bad_overrides_is_a_400(dashboard: Dashboard) -> None:
    key, _ = await dashboard.workers.run(DOUBLING, timeout=WAIT)
    [start, _double] = await dashboard.workers.history(key)
    response = await dashboard.client.post(
        f"/flows/{key}/fork", data={"step": start.step_key, "overrides": "a = 1"}
    )
    assert response.status_code == 400
    assert "state overrides is not valid JSON" in _text_of(response, "error")


@SQLITE_ONLY
async def test_fork_of_an_interrupted_flow_is_a_409(dashboard: Dashboard) -> None:
    key = await _interrupted_expense(dashboard)
    [submit, *_] = await dashboard.workers.history(key)
    response = await dashboard.client.post(f"/flows/{key}/fork", data={"step": submit.step_key})
    assert response.status_code == 409


# --- security ---


@SQLITE_ONLY
async def test_cross_origin_posts_are_refused(dashboard: Dashboard) -> None:
    key = await _interrupted_expense(dashboard)
    response = await dashboard.client.post(
        f"/flows/{key}/cancel", data={"reason": "csrf"}, headers={"Origin": "http://evil.example"}
    )
    assert response.status_code == 403
    assert (await dashboard.ops.snapshot(key)).status == Status.INTERRUPTED


@SQLITE_ONLY
async def test_same_origin_posts_are_accepted(dashboard: Dashboard) -> None:
    key = await _interrupted_expense(dashboard)
    response = await dashboard.client.post(
        f"/flows/{key}/cancel", data={"reason": ""}, headers={"Origin": "http://dashboard.test"}
    )
    assert response.status_code == 303


@SQLITE_ONLY
async def test_pages_forbid_caching_framing_referrers_and_foreign_scripts(dashboard: Dashboard) -> None:
    key, _ = await dashboard.workers.run(DOUBLING, timeout=WAIT)
    headers = (await dashboard.client.get(f"/flows/{key}")).headers
    assert headers["cache-control"] == "no-store"
    assert headers["referrer-policy"] == "same-origin"
    assert headers["x-frame-options"] == "DENY"
    assert "script-src 'self';" in headers["content-security-policy"]
    assert "frame-ancestors 'none'" in headers["content-security-policy"]


@SQLITE_ONLY
async def test_links_stay_under_the_prefix_the_app_is_mounted_at(dashboard: Dashboard) -> None:
    key, _ = await dashboard.workers.run(DOUBLING, timeout=WAIT)
    outer = Starlette(routes=[Mount("/ops/dwarf", app=create_app(dashboard.ops))])
    transport = httpx.ASGITransport(app=outer)
    async with httpx.AsyncClient(transport=transport, base_url="http://localhost") as client:
        listing = await client.get("/ops/dwarf/flows")
        links = re.findall(r'(?:href|src|action)="([^"]+)"', listing.text)
        flow_page = await client.get(f"/ops/dwarf/flows/{key}")
        links += re.findall(r'(?:href|src|action)="([^"]+)"', flow_page.text)
    assert f"/ops/dwarf/flows/{key}" in links
    assert "/ops/dwarf/static/diagrams.mjs" in links
    # Fragment links (#steps) stay on the page they are on.
    assert [link for link in links if not link.startswith(("/ops/dwarf/", "#"))] == []
