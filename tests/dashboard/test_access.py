"""Who the dashboard answers: the Host names it serves (DNS rebinding), its token, and the refusal of
`dwarf serve` to listen beyond this machine without authentication.

A DNS-rebinding page is one of evil.example whose name the attacker re-points at 127.0.0.1: the browser
then sends its requests to the dashboard with ``Host: evil.example`` and treats the answers as
same-origin. Refusing every Host name the dashboard was not told about leaves such a page nothing to read.
"""

from __future__ import annotations

import base64
import logging
import socket
import sys
import types
from pathlib import Path
from typing import Any

import httpx
import pytest

from dwarf import Status
from dwarf.dashboard import create_app, serve
from dwarf.dashboard.security import LOOPBACK_NAMES, AllowedHosts, default_allowed_hosts
from dwarf.engine import Engine
from tests.cli.conftest import invoke
from tests.dashboard.conftest import Dashboard, running_server
from tests.dashboard.workflows import EXPENSE, dashboard_proxy
from tests.engine.graphs import WAIT

SQLITE_ONLY = pytest.mark.parametrize("backend", ["sqlite"], indirect=True)

TOKEN = "s3cret-Dashboard_token.42"


def _has_security_headers(response: httpx.Response) -> bool:
    headers = response.headers
    return (
        "script-src 'self'" in headers.get("content-security-policy", "")
        and headers.get("x-frame-options") == "DENY"
        and headers.get("x-content-type-options") == "nosniff"
        and headers.get("cache-control") == "no-store"
    )


async def _interrupted_expense(dash: Dashboard) -> str:
    key, outcome = await dash.workers.run(EXPENSE, {"amount": 42.0}, timeout=WAIT)
    assert outcome.status == Status.INTERRUPTED, outcome.error
    return key


def _client(app: Any, host: str = "localhost") -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=f"http://{host}")


def _basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


# --- the Host check ---


@SQLITE_ONLY
async def test_a_rebinding_page_reads_nothing(dashboard: Dashboard) -> None:
    key = await _interrupted_expense(dashboard)
    token = key.split("-", 2)[2]
    async with _client(create_app(dashboard.ops), "evil.example") as evil:
        answers = [
            await evil.get("/flows"),
            await evil.get(f"/flows/{key}"),
            await evil.get("/static/dashboard.js"),
        ]
    assert [answer.status_code for answer in answers] == [400, 400, 400]
    assert all(_has_security_headers(answer) for answer in answers[:2])
    assert not [answer for answer in answers if token in answer.text or "amount" in answer.text]


@SQLITE_ONLY
async def test_a_rebinding_page_cannot_act(dashboard: Dashboard) -> None:
    key = await _interrupted_expense(dashboard)
    async with _client(create_app(dashboard.ops), "evil.example:8080") as evil:
        response = await evil.post(f"/flows/{key}/cancel", data={"reason": "rebound"})
    assert response.status_code == 400
    assert (await dashboard.ops.snapshot(key)).status == Status.INTERRUPTED


@SQLITE_ONLY
@pytest.mark.parametrize(
    "host", ["localhost", "localhost:8080", "127.0.0.1:9", "[::1]:8080", "[0:0::1]", "LOCALHOST."]
)
async def test_by_default_the_loopback_names_are_answered_on_any_port(
    dashboard: Dashboard, host: str
) -> None:
    async with _client(create_app(dashboard.ops), host) as client:
        assert (await client.get("/flows")).status_code == 200


@SQLITE_ONLY
@pytest.mark.parametrize(
    "host", ["localhost.evil.example", "127.0.0.1.nip.io", "evil.example", "::1", "localhost:", "a b"]
)
async def test_by_default_other_host_names_are_refused(dashboard: Dashboard, host: str) -> None:
    async with _client(create_app(dashboard.ops)) as client:
        response = await client.get("/flows", headers={"Host": host})
    assert response.status_code == 400
    assert _has_security_headers(response)


@SQLITE_ONLY
async def test_allowed_hosts_name_more_host_names(dashboard: Dashboard) -> None:
    app = create_app(dashboard.ops, allowed_hosts=["dash.example.com", "other.example:8443"])
    async with _client(app) as client:
        statuses = {
            host: (await client.get("/flows", headers={"Host": host})).status_code
            for host in (
                "dash.example.com",
                "DASH.example.com:1234",
                "other.example:8443",
                "other.example:80",
                "other.example",
                "localhost",
            )
        }
    assert statuses == {
        "dash.example.com": 200,
        "DASH.example.com:1234": 200,
        "other.example:8443": 200,
        "other.example:80": 400,
        "other.example": 400,
        "localhost": 400,  # the list given replaces the default
    }


@SQLITE_ONLY
async def test_a_star_allows_any_host_name(dashboard: Dashboard) -> None:
    async with _client(create_app(dashboard.ops, allowed_hosts=["*"]), "anything.example") as client:
        assert (await client.get("/flows")).status_code == 200


async def _raw_get(app: Any, headers: list[tuple[bytes, bytes]]) -> int:
    """The status of a GET /flows whose headers are exactly ``headers`` (httpx always adds a Host)."""
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": "/flows",
        "raw_path": b"/flows",
        "root_path": "",
        "query_string": b"",
        "headers": headers,
        "client": ("127.0.0.1", 1234),
        "server": ("127.0.0.1", 8080),
    }
    statuses: list[int] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            statuses.append(message["status"])

    await app(scope, receive, send)
    return statuses[0]


@SQLITE_ONLY
async def test_a_request_without_exactly_one_host_header_is_refused(dashboard: Dashboard) -> None:
    app = create_app(dashboard.ops)
    assert await _raw_get(app, [(b"host", b"localhost")]) == 200
    assert await _raw_get(app, []) == 400
    assert await _raw_get(app, [(b"host", b"localhost"), (b"host", b"evil.example")]) == 400


@SQLITE_ONLY
@pytest.mark.parametrize("entries", [["a b"], ["dash.example.com/x"], ["name:99999"], [], "localhost"])
async def test_a_malformed_allowed_host_is_a_value_error(dashboard: Dashboard, entries: Any) -> None:
    with pytest.raises(ValueError):
        create_app(dashboard.ops, allowed_hosts=entries)


def test_a_loopback_bind_answers_every_loopback_name() -> None:
    assert set(default_allowed_hosts("127.0.0.1")) == set(LOOPBACK_NAMES)
    assert set(default_allowed_hosts("::1")) == set(LOOPBACK_NAMES)
    assert set(default_allowed_hosts("127.0.0.2")) == {"127.0.0.2", *LOOPBACK_NAMES}


def test_another_bind_answers_its_own_name_only() -> None:
    assert default_allowed_hosts("10.1.2.3") == ["10.1.2.3"]
    assert default_allowed_hosts("dash.internal") == ["dash.internal"]


def test_an_every_interface_bind_answers_the_loopback_names_and_the_machine_name() -> None:
    allowed = AllowedHosts(default_allowed_hosts("0.0.0.0"))
    assert allowed.allows("localhost:8080")
    assert allowed.allows(socket.gethostname())
    assert not allowed.allows("evil.example")


async def test_the_served_dashboard_refuses_a_rebound_host_name(tmp_path: Path) -> None:
    dsn = f"sqlite:///{tmp_path / 'flows.db'}"
    workers = Engine(host=dashboard_proxy(), dsn=dsn)
    await workers.startup()
    try:
        key, _ = await workers.run(EXPENSE, {"amount": 7.0}, timeout=WAIT)
        app = create_app(dsn=dsn, allowed_hosts=default_allowed_hosts("127.0.0.1"))
        async with running_server(app) as url, httpx.AsyncClient(base_url=url, timeout=WAIT) as client:
            port = url.rsplit(":", 1)[1]
            rebound = await client.get(f"/flows/{key}", headers={"Host": f"evil.example:{port}"})
            local = await client.get(f"/flows/{key}", headers={"Host": f"localhost:{port}"})
    finally:
        await workers.shutdown(drain_timeout=1.0)
    assert rebound.status_code == 400
    assert key.split("-", 2)[2] not in rebound.text
    assert local.status_code == 200


# --- the token ---


@pytest.fixture
def guarded(dashboard: Dashboard) -> Any:
    """The dashboard app over the test's engines, asking for ``TOKEN``."""
    return create_app(dashboard.ops, token=TOKEN)


@SQLITE_ONLY
async def test_without_the_token_every_request_is_asked_for_it(dashboard: Dashboard, guarded: Any) -> None:
    key = await _interrupted_expense(dashboard)
    async with _client(guarded) as client:
        answers = [
            await client.get("/flows"),
            await client.get(f"/flows/{key}"),
            await client.get("/static/dashboard.css"),
            await client.post(f"/flows/{key}/cancel", data={"reason": "no token"}),
        ]
    assert [answer.status_code for answer in answers] == [401] * 4
    assert all(answer.headers["www-authenticate"].startswith('Basic realm="dwarf"') for answer in answers)
    assert _has_security_headers(answers[0])
    assert (await dashboard.ops.snapshot(key)).status == Status.INTERRUPTED


@SQLITE_ONLY
async def test_the_token_as_a_bearer_token_opens_the_dashboard(dashboard: Dashboard, guarded: Any) -> None:
    key = await _interrupted_expense(dashboard)
    async with _client(guarded) as client:
        response = await client.get(f"/flows/{key}", headers={"Authorization": f"Bearer {TOKEN}"})
    assert response.status_code == 200
    assert TOKEN not in response.text


@SQLITE_ONLY
@pytest.mark.parametrize("user", ["", "ada", "dwarf"])
async def test_the_token_as_a_basic_password_opens_the_dashboard(
    dashboard: Dashboard, guarded: Any, user: str
) -> None:
    async with _client(guarded) as client:
        response = await client.get("/flows", headers={"Authorization": _basic(user, TOKEN)})
    assert response.status_code == 200


@SQLITE_ONLY
@pytest.mark.parametrize(
    "authorization",
    [
        "Bearer wrong",
        f"Bearer {TOKEN}x",
        f"Bearer {TOKEN[:-1]}",
        "Bearer ",
        _basic(TOKEN, "wrong"),  # the token as the user name is not the password
        f"Basic {TOKEN}",  # not base64 of user:password
        "Basic " + base64.b64encode(TOKEN.encode()).decode(),  # no colon
        f"Token {TOKEN}",
        TOKEN,
    ],
)
async def test_a_wrong_or_malformed_credential_is_refused(
    dashboard: Dashboard, guarded: Any, authorization: str
) -> None:
    async with _client(guarded) as client:
        response = await client.get("/flows", headers={"Authorization": authorization})
    assert response.status_code == 401
    assert TOKEN not in response.text


@SQLITE_ONLY
async def test_cross_origin_posts_are_refused_even_with_the_token(dashboard: Dashboard, guarded: Any) -> None:
    # A browser that logged in with Basic sends the credential on a foreign page's form post too.
    key = await _interrupted_expense(dashboard)
    async with _client(guarded) as client:
        response = await client.post(
            f"/flows/{key}/cancel",
            data={"reason": "csrf"},
            headers={"Authorization": _basic("ada", TOKEN), "Sec-Fetch-Site": "cross-site"},
        )
    assert response.status_code == 403
    assert (await dashboard.ops.snapshot(key)).status == Status.INTERRUPTED


@SQLITE_ONLY
async def test_the_host_is_checked_before_the_token(dashboard: Dashboard, guarded: Any) -> None:
    async with _client(guarded, "evil.example") as client:
        response = await client.get("/flows", headers={"Authorization": f"Bearer {TOKEN}"})
    assert response.status_code == 400
    assert "www-authenticate" not in response.headers


@SQLITE_ONLY
@pytest.mark.parametrize("token", ["", "with space", "tab\there", "naïve"])
async def test_an_unusable_token_is_a_value_error(dashboard: Dashboard, token: str) -> None:
    with pytest.raises(ValueError, match="token"):
        create_app(dashboard.ops, token=token)


# --- starting it ---


def test_serve_refuses_to_listen_beyond_this_machine_without_a_token(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="without authentication"):
        serve(f"sqlite:///{tmp_path / 'flows.db'}", host="0.0.0.0")


@pytest.fixture
def existing_sqlite(tmp_path: Path) -> str:
    """A DSN of an SQLite file that exists (an empty file is an empty database)."""
    path = tmp_path / "flows.db"
    path.touch()
    return f"sqlite:///{path}"


@pytest.fixture
def serve_calls(monkeypatch: pytest.MonkeyPatch) -> list[dict[str, Any]]:
    """What `dwarf serve` hands to the dashboard's ``serve``, which a double records instead of serving."""
    calls: list[dict[str, Any]] = []
    dashboard = types.ModuleType("dashboard_double")
    dashboard.serve = lambda **settings: calls.append(settings)  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "dashboard_double", dashboard)
    monkeypatch.setattr("dwarf.cli.commands.DASHBOARD_MODULE", "dashboard_double")
    monkeypatch.delenv("DWARF_DASHBOARD_TOKEN", raising=False)
    return calls


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "10.1.2.3", "dash.internal"])
def test_dwarf_serve_beyond_this_machine_without_a_token_is_a_usage_error(
    existing_sqlite: str, serve_calls: list[dict[str, Any]], host: str
) -> None:
    result = invoke("serve", "--dsn", existing_sqlite, "--host", host)
    assert result.exit_code == 2
    assert result.stderr.startswith(f"error: refusing to serve on {host} without authentication")
    assert result.stderr.count("\n") == 1
    assert serve_calls == []


def test_an_empty_token_variable_is_no_token(existing_sqlite: str, serve_calls: list[dict[str, Any]]) -> None:
    result = invoke("serve", "--dsn", existing_sqlite, "--host", "0.0.0.0", env={"DWARF_DASHBOARD_TOKEN": ""})
    assert result.exit_code == 2
    assert serve_calls == []


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost", "::1", "127.0.0.2"])
def test_dwarf_serve_on_a_loopback_address_needs_no_token(
    existing_sqlite: str, serve_calls: list[dict[str, Any]], host: str
) -> None:
    result = invoke("serve", "--dsn", existing_sqlite, "--host", host)
    assert result.exit_code == 0, result.output
    assert serve_calls[0]["token"] is None


def test_dwarf_serve_takes_the_token_from_the_environment_and_never_prints_it(
    existing_sqlite: str, serve_calls: list[dict[str, Any]]
) -> None:
    env = {"DWARF_DASHBOARD_TOKEN": TOKEN}
    result = invoke("serve", "--dsn", existing_sqlite, "--host", "0.0.0.0", env=env)
    assert result.exit_code == 0, result.output
    assert serve_calls[0]["token"] == TOKEN
    assert serve_calls[0]["host"] == "0.0.0.0"
    assert TOKEN not in result.output
    assert "warning" not in result.stderr


def test_dwarf_serve_takes_the_token_option(existing_sqlite: str, serve_calls: list[dict[str, Any]]) -> None:
    result = invoke("serve", "--dsn", existing_sqlite, "--host", "10.1.2.3", "--token", TOKEN)
    assert result.exit_code == 0, result.output
    assert serve_calls[0]["token"] == TOKEN
    assert TOKEN not in result.output


def test_dwarf_serve_no_auth_listens_beyond_this_machine_with_a_warning(
    existing_sqlite: str, serve_calls: list[dict[str, Any]]
) -> None:
    result = invoke("serve", "--dsn", existing_sqlite, "--host", "0.0.0.0", "--no-auth")
    assert result.exit_code == 0, result.output
    assert serve_calls[0]["no_auth"] is True
    assert serve_calls[0]["token"] is None
    assert "warning: no token" in result.stderr


def test_dwarf_serve_hands_over_every_allowed_host(
    existing_sqlite: str, serve_calls: list[dict[str, Any]]
) -> None:
    result = invoke(
        "serve", "--dsn", existing_sqlite, "--allow-host", "dash.example.com", "--allow-host", "10.0.0.5:8080"
    )
    assert result.exit_code == 0, result.output
    assert serve_calls[0]["allowed_hosts"] == ["dash.example.com", "10.0.0.5:8080"]


def test_dwarf_serve_refuses_a_token_with_spaces(
    existing_sqlite: str, serve_calls: list[dict[str, Any]]
) -> None:
    result = invoke("serve", "--dsn", existing_sqlite, "--token", "two words")
    assert result.exit_code == 2
    assert "two words" not in result.output
    assert serve_calls == []


def test_dwarf_serve_refuses_a_malformed_allowed_host(existing_sqlite: str) -> None:
    # The real dashboard: it checks the names before it binds anything.
    result = invoke("serve", "--dsn", existing_sqlite, "--allow-host", "not a host")
    assert result.exit_code == 2
    assert "not a host name" in result.stderr


class _Lines(logging.Handler):
    """Every message of the loggers it is attached to."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


async def test_the_served_dashboard_logs_no_token(tmp_path: Path) -> None:
    lines = _Lines()
    loggers = [logging.getLogger(name) for name in ("uvicorn.access", "uvicorn.error", "dwarf", "")]
    dsn = f"sqlite:///{tmp_path / 'flows.db'}"
    async with Engine(host=dashboard_proxy(), dsn=dsn):
        pass  # only an engine with workers creates the dwarf tables
    app = create_app(dsn=dsn, token=TOKEN)
    async with running_server(app) as url, httpx.AsyncClient(base_url=url, timeout=WAIT) as client:
        # Attached once the server runs: uvicorn's logging setup replaces the handlers of its loggers.
        for logger in loggers:
            logger.addHandler(lines)
        try:
            port = url.rsplit(":", 1)[1]
            headers = {"Host": f"localhost:{port}"}
            answers = [
                await client.get("/flows", headers={**headers, "Authorization": f"Bearer {TOKEN}"}),
                await client.get("/flows", headers={**headers, "Authorization": _basic("ada", TOKEN)}),
                await client.get("/flows", headers={**headers, "Authorization": f"Bearer {TOKEN}x"}),
                await client.get("/flows", headers=headers),
            ]
        finally:
            for logger in loggers:
                logger.removeHandler(lines)
    assert [answer.status_code for answer in answers] == [200, 200, 401, 401]
    assert lines.lines, "the server logged nothing: the test would prove nothing"
    assert not [line for line in lines.lines if TOKEN in line]
