"""Every way a request can be malformed is answered 400 or 404, with the security headers, and never a
500 or a traceback: form JSON, cursors, keys, filters; and a genuine fault is a bare 500 with the headers.
"""

from __future__ import annotations

import base64
import json
from typing import Any

import httpx
import pytest

from dwarf import Status
from tests.dashboard.conftest import Dashboard
from tests.dashboard.workflows import DOUBLING, EXPENSE
from tests.engine.graphs import WAIT

SQLITE_ONLY = pytest.mark.parametrize("backend", ["sqlite"], indirect=True)


def _assert_refused(response: httpx.Response, status: int) -> None:
    assert response.status_code == status, response.text[:500]
    headers = response.headers
    assert "script-src 'self'" in headers["content-security-policy"]
    assert headers["x-frame-options"] == "DENY"
    assert headers["x-content-type-options"] == "nosniff"
    assert headers["cache-control"] == "no-store"
    assert "Traceback" not in response.text


def _cursor(body: Any) -> str:
    """A cursor in the engine's wrapping (base64url of JSON) around a body of the caller's choosing."""
    return base64.urlsafe_b64encode(json.dumps(body).encode()).decode().rstrip("=")


async def _interrupted_expense(dash: Dashboard) -> str:
    key, outcome = await dash.workers.run(EXPENSE, {"amount": 42.0}, timeout=WAIT)
    assert outcome.status == Status.INTERRUPTED, outcome.error
    return key


# --- form JSON ---


@SQLITE_ONLY
@pytest.mark.parametrize(
    "payload",
    [
        "{",  # not JSON
        "[1, 2]",  # not an object
        "[" * 100_000 + "]" * 100_000,  # deeper than the parser recurses
        '{"n": ' + "9" * 5000 + "}",  # a number with more digits than Python converts
        '{"a": NaN}',  # not JSON, though Python's parser takes it
        '{"a": "\\ud800"}',  # a lone surrogate: no UTF-8 form
    ],
)
async def test_an_unusable_resume_payload_is_a_400(dashboard: Dashboard, payload: str) -> None:
    key = await _interrupted_expense(dashboard)
    response = await dashboard.client.post(f"/flows/{key}/resume", data={"payload": payload})
    _assert_refused(response, 400)
    assert (await dashboard.ops.snapshot(key)).status == Status.INTERRUPTED


@SQLITE_ONLY
@pytest.mark.parametrize("overrides", ["{", "[" * 100_000, '{"n": ' + "1" * 5000 + "}"])
async def test_unusable_fork_overrides_are_a_400(dashboard: Dashboard, overrides: str) -> None:
    key, _ = await dashboard.workers.run(DOUBLING, timeout=WAIT)
    [first, *_] = await dashboard.workers.history(key)
    response = await dashboard.client.post(
        f"/flows/{key}/fork", data={"step": first.step_key, "overrides": overrides}
    )
    _assert_refused(response, 400)


@SQLITE_ONLY
async def test_a_form_with_too_many_fields_is_a_400(dashboard: Dashboard) -> None:
    key = await _interrupted_expense(dashboard)
    fields = {f"field{number}": "x" for number in range(100)}
    _assert_refused(await dashboard.client.post(f"/flows/{key}/resume", data=fields), 400)
    assert (await dashboard.ops.snapshot(key)).status == Status.INTERRUPTED


# --- cursors ---


@SQLITE_ONLY
@pytest.mark.parametrize(
    "cursor",
    [
        "!!!",
        "A" * 5000,
        "%00",
        _cursor({"1": 2**70}),  # a flow id beyond the database's integers
        _cursor({"1": 1e300}),
        _cursor({"9" * 5000: 1}),
        _cursor({"1": "x"}),
        _cursor([1]),
        _cursor("x"),
    ],
)
async def test_a_malformed_or_tampered_cursor_is_a_400(dashboard: Dashboard, cursor: str) -> None:
    response = await dashboard.client.get(f"/flows?cursor={cursor}")
    _assert_refused(response, 400)


# --- keys ---

_MALFORMED_KEYS = [
    "garbage",
    "1" * 5000 + "-1-AAAAAAAAAAAAAAAA",  # a shard number longer than Python converts
    "1-" + "9" * 5000 + "-AAAAAAAAAAAAAAAA",
    "1-99999999999999999999-AAAAAAAAAAAAAAAA",  # an id beyond 2**63
    "1-1-" + "A" * 5000,
    "0-1-AAAAAAAAAAAAAAAA",
    "1-1-AAAAAAAAAAAAAAA%21",
]


@SQLITE_ONLY
@pytest.mark.parametrize("key", _MALFORMED_KEYS)
async def test_the_page_of_a_malformed_key_is_a_404(dashboard: Dashboard, key: str) -> None:
    _assert_refused(await dashboard.client.get(f"/flows/{key}"), 404)


@SQLITE_ONLY
@pytest.mark.parametrize("action", ["resume", "cancel", "fork"])
@pytest.mark.parametrize("key", _MALFORMED_KEYS[:3])
async def test_an_action_on_a_malformed_key_is_a_404(dashboard: Dashboard, action: str, key: str) -> None:
    _assert_refused(await dashboard.client.post(f"/flows/{key}/{action}", data={"payload": "{}"}), 404)


@SQLITE_ONLY
async def test_an_unknown_key_is_a_404(dashboard: Dashboard) -> None:
    _assert_refused(await dashboard.client.get("/flows/1-424242-AAAAAAAAAAAAAAAA"), 404)
    response = await dashboard.client.post("/flows/1-424242-AAAAAAAAAAAAAAAA/resume", data={"payload": "{}"})
    _assert_refused(response, 404)


@SQLITE_ONLY
@pytest.mark.parametrize("step", ["garbage", "1" * 5000 + "-1-AAAAAAAAAAAAAAAA", "1-1-AAAAAAAAAAAAAAAA"])
async def test_forking_from_a_malformed_or_foreign_step_key_is_a_404(dashboard: Dashboard, step: str) -> None:
    key, _ = await dashboard.workers.run(DOUBLING, timeout=WAIT)
    response = await dashboard.client.post(f"/flows/{key}/fork", data={"step": step, "overrides": "{}"})
    _assert_refused(response, 404)


@SQLITE_ONLY
@pytest.mark.parametrize("thread", ["garbage", "1" * 5000 + "-1-AAAAAAAAAAAAAAAA", "1-1-" + "A" * 100])
async def test_a_malformed_thread_filter_is_a_400(dashboard: Dashboard, thread: str) -> None:
    _assert_refused(await dashboard.client.get("/flows", params={"thread": thread}), 400)


# --- other query parameters ---


@SQLITE_ONLY
@pytest.mark.parametrize(
    "params",
    [
        {"limit": "x"},
        {"limit": "0"},
        {"limit": "-1"},
        {"limit": "9" * 5000},
        {"limit": "١٢"},  # Arabic-Indic digits: isdigit() says yes, the page size says no
        {"status": "bogus"},
        {"search": "a\x00b"},
        {"workflow": "x" * 5000},
        {"task": "tab\there"},
    ],
)
async def test_a_bad_list_parameter_is_a_400(dashboard: Dashboard, params: dict[str, str]) -> None:
    _assert_refused(await dashboard.client.get("/flows", params=params), 400)


@SQLITE_ONLY
async def test_the_wrong_method_is_a_405(dashboard: Dashboard) -> None:
    key = await _interrupted_expense(dashboard)
    _assert_refused(await dashboard.client.get(f"/flows/{key}/resume"), 405)


@SQLITE_ONLY
async def test_a_genuine_fault_is_a_bare_500_with_the_headers(
    dashboard: Dashboard, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    async def broken(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("the disk caught fire while reading 1-2-AAAAAAAAAAAAAAAA")

    monkeypatch.setattr(dashboard.ops, "list", broken)
    response = await dashboard.client.get("/flows")
    _assert_refused(response, 500)
    assert "fire" not in response.text
    logged = "\n".join(record.getMessage() for record in caplog.records)
    assert "caught fire while reading 1-2-***" in logged  # the traceback is logged, its key redacted
    assert "AAAAAAAAAAAAAAAA" not in logged
