"""Fixtures of the dashboard tests: the app over an operations-only engine, in-process or served live.

``dashboard`` drives the ASGI app in-process (httpx) on the suite's isolated databases of ``backend``;
``served`` runs it under uvicorn in a thread, over a database (``fresh_dsn``) that a separate worker engine
of the test runs flows on, as an application would.
"""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import httpx
import pytest_asyncio
import uvicorn
from starlette.applications import Starlette

from dwarf.dashboard import create_app
from dwarf.dashboard.server import server_config
from dwarf.engine import Engine
from tests.dashboard.workflows import dashboard_proxy

DASHBOARD_HOST = "dashboard.test"
"""The host name the in-process dashboard is reached by (and allowed to answer)."""

SERVER_START = 15.0
"""Upper bound (seconds) on the live server's startup and shutdown."""


@dataclass
class Dashboard:
    """The in-process dashboard: an HTTP client of the app, and the engines behind it."""

    client: httpx.AsyncClient
    workers: Engine  # runs the flows, like the application's engine
    ops: Engine  # the dashboard's own operations-only engine


@pytest_asyncio.fixture
async def dashboard(make_engine: Any) -> AsyncIterator[Dashboard]:
    """The dashboard app over an operations-only engine on this test's databases of ``backend``.

    Both engines share one host, so that a resume recorded by the dashboard rings the workers at once
    instead of waiting for their next poll (the live-server tests cover the polling path).
    """
    proxy = dashboard_proxy()
    workers = await make_engine(proxy)
    ops = await make_engine(proxy, workers=0)
    transport = httpx.ASGITransport(app=create_app(ops, allowed_hosts=[DASHBOARD_HOST]))
    async with httpx.AsyncClient(transport=transport, base_url=f"http://{DASHBOARD_HOST}") as client:
        yield Dashboard(client, workers, ops)


@asynccontextmanager
async def running_server(app: Starlette) -> AsyncIterator[str]:
    """Serve ``app`` with the dashboard's uvicorn configuration on a free loopback port; yield its URL."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(server_config(app, port=port))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, name="dashboard", daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + SERVER_START
        while not server.started:
            if not thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the dashboard server did not start")
            await asyncio.sleep(0.02)
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await asyncio.to_thread(thread.join, SERVER_START)
        sock.close()


@dataclass
class Served:
    """A live dashboard: its base URL, and the worker engine that runs the flows it shows."""

    url: str
    workers: Engine


@asynccontextmanager
async def served_dashboard(dsn: str) -> AsyncIterator[Served]:
    """The dashboard served by uvicorn with its own engine (``create_app(dsn=...)``) in another thread,
    and a worker engine of the caller's loop on the same database. They share nothing but the database."""
    workers = Engine(host=dashboard_proxy(), dsn=dsn)
    await workers.startup()  # first, so that the schema exists before the dashboard's engine opens it
    try:
        async with running_server(create_app(dsn=dsn)) as url:
            yield Served(url, workers)
    finally:
        await workers.shutdown(drain_timeout=1.0)


@pytest_asyncio.fixture
async def served(fresh_dsn: str) -> AsyncIterator[Served]:
    """A live dashboard over ``fresh_dsn`` (see ``served_dashboard``)."""
    async with served_dashboard(fresh_dsn) as live:
        yield live
