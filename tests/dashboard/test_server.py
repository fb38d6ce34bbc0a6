"""Running the dashboard: who owns its engine, ``serve`` as a process, and logs that never hold a key."""

from __future__ import annotations

import asyncio
import logging
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from starlette.testclient import TestClient

from dwarf import EngineStateError, Status
from dwarf.dashboard import create_app
from dwarf.dashboard.server import redact_keys
from dwarf.engine import Engine, TestProxy
from tests.dashboard.conftest import SERVER_START, Served
from tests.dashboard.workflows import EXPENSE
from tests.engine.graphs import WAIT

SQLITE_ONLY = pytest.mark.parametrize("backend", ["sqlite"], indirect=True)


def test_create_app_takes_an_engine_or_a_dsn() -> None:
    with pytest.raises(TypeError):
        create_app()
    with pytest.raises(TypeError):
        create_app(object(), dsn="sqlite:///flows.db")  # type: ignore[arg-type]


async def _create_schema(dsn: str) -> None:
    # Only an engine with workers creates the dwarf tables; the dashboard's own engine never does.
    async with Engine(host=TestProxy(), dsn=dsn):
        pass


def test_app_built_from_a_dsn_runs_its_engine_for_its_lifespan(tmp_path: Path) -> None:
    dsn = f"sqlite:///{tmp_path / 'flows.db'}"
    asyncio.run(_create_schema(dsn))
    app = create_app(dsn=dsn)
    with TestClient(app, base_url="http://localhost") as client:
        assert client.get("/flows").status_code == 200
    with pytest.raises(EngineStateError, match="stopped"):
        asyncio.run(app.state.engine.list())


@SQLITE_ONLY
async def test_app_given_an_engine_leaves_it_running(make_engine: Any) -> None:
    engine = await make_engine(TestProxy(), workers=0)
    app = create_app(engine)
    async with app.router.lifespan_context(app):
        pass
    assert (await engine.list())[0] == []


async def test_pages_over_an_engine_that_is_not_running_are_a_503(tmp_path: Path) -> None:
    app = create_app(Engine(workers=0, dsn=f"sqlite:///{tmp_path / 'flows.db'}"))
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://localhost"
    ) as client:
        response = await client.get("/flows")
    assert response.status_code == 503


def test_key_tokens_are_redacted_and_the_rest_kept() -> None:
    line = '"GET /flows/12-345-Ab_c-DEFGhijklmn?thread=1-2-zzzzzzzzzzzzzzzz HTTP/1.1" 200'
    assert redact_keys(line) == '"GET /flows/12-345-***?thread=1-2-*** HTTP/1.1" 200'


class _Records(logging.Handler):
    """Collects every record of the loggers it is attached to."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


@pytest.fixture
def server_logs() -> Iterator[_Records]:
    """uvicorn's access and error logs, switched on as a logging setup that attaches handlers would."""
    records = _Records()
    loggers = [logging.getLogger(name) for name in ("uvicorn.access", "uvicorn.error")]
    for logger in loggers:
        logger.addHandler(records)
    yield records
    for logger in loggers:
        logger.removeHandler(records)


@SQLITE_ONLY
async def test_served_dashboard_logs_no_key_tokens(served: Served, server_logs: _Records) -> None:
    key, outcome = await served.workers.run(EXPENSE, {"amount": 1.0}, timeout=WAIT)
    assert outcome.status == Status.INTERRUPTED
    async with httpx.AsyncClient(base_url=served.url, timeout=WAIT) as client:
        assert (await client.get(f"/flows/{key}")).status_code == 200
        assert (await client.get("/flows", params={"thread": key})).status_code == 200
        resumed = await client.post(f"/flows/{key}/resume", data={"payload": '{"approved": false}'})
        assert resumed.status_code == 303
    token = key.split("-", 2)[2]
    correlation = "-".join(key.split("-", 2)[:2])
    assert any(f"/flows/{correlation}-***" in line for line in server_logs.lines), server_logs.lines
    assert not [line for line in server_logs.lines if token in line]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_serve_runs_the_dashboard_until_interrupted(tmp_path: Path) -> None:
    port = _free_port()
    dsn = f"sqlite:///{tmp_path / 'flows.db'}"
    asyncio.run(_create_schema(dsn))
    program = f"from dwarf.dashboard import serve; serve({dsn!r}, port={port})"
    process = subprocess.Popen([sys.executable, "-c", program], stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + SERVER_START
        while True:
            try:
                response = httpx.get(f"http://127.0.0.1:{port}/flows", timeout=2)
                break
            except httpx.TransportError:
                assert process.poll() is None, "serve() exited early"
                assert time.monotonic() < deadline, "serve() did not answer in time"
                time.sleep(0.1)
        assert response.status_code == 200
        assert re.search(r"<h1>Flows</h1>", response.text)
    finally:
        process.send_signal(signal.SIGINT)
        _, errors = process.communicate(timeout=SERVER_START)
    assert process.returncode == 0, errors
