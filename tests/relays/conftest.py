"""Fixtures of the relay tests: a PostgreSQL database and a NATS server to relay through, a fresh channel
per test, a recorder of delivered signals, and helpers that find and kill a relay's connections.

The relays always need a real server. PostgreSQL comes from ``DWARF_TEST_DSN`` (required when
``DWARF_REQUIRE_POSTGRES=1``); NATS from ``DWARF_TEST_NATS`` (default ``nats://127.0.0.1:4222``, required
when ``DWARF_REQUIRE_NATS=1``). The engines' own databases follow the usual ``backend`` fixture.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import socket
import statistics
from collections.abc import Awaitable, Callable
from dataclasses import replace
from urllib.parse import urlsplit

import psycopg
import pytest

from dwarf import END, Engine, Flow, Graph, TestProxy
from tests.conftest import PG_AVAILABLE, PG_DSN, REQUIRE_PG

NATS_URL = os.environ.get("DWARF_TEST_NATS", "nats://127.0.0.1:4222")
REQUIRE_NATS = os.environ.get("DWARF_REQUIRE_NATS") == "1"
# An idle poll so long that a step starting within seconds can only have been woken by a relayed signal.
SLOW_POLL = 30.0


def _reachable(url: str, default_port: int) -> bool:
    parts = urlsplit(url)
    try:
        with socket.create_connection((parts.hostname or "127.0.0.1", parts.port or default_port), timeout=2):
            return True
    except OSError:
        return False


@pytest.fixture
def relay_dsn() -> str:
    """A PostgreSQL database to relay signals through (the server's ``postgres`` database)."""
    if not PG_AVAILABLE:
        if REQUIRE_PG:
            pytest.fail("DWARF_REQUIRE_POSTGRES=1 but PostgreSQL (DWARF_TEST_DSN) is not reachable")
        pytest.skip("the PostgreSQL relay needs PostgreSQL (set DWARF_TEST_DSN)")
    return urlsplit(PG_DSN)._replace(path="/postgres").geturl()


@pytest.fixture
def nats_url() -> str:
    """A reachable NATS server."""
    if not _reachable(NATS_URL, 4222):
        if REQUIRE_NATS:
            pytest.fail(f"DWARF_REQUIRE_NATS=1 but NATS ({NATS_URL}) is not reachable")
        pytest.skip(f"NATS is not reachable at {NATS_URL} (set DWARF_TEST_NATS)")
    return NATS_URL


@pytest.fixture
def channel() -> str:
    """A channel (or subject token) no other test uses, so tests running at once do not hear each other."""
    return "dwarf_test_" + secrets.token_hex(6)


class Inbox:
    """Records the signals a relay delivers, in order, and waits for particular ones."""

    def __init__(self) -> None:
        self.signals: list[tuple[str, bytes]] = []
        self._changed = asyncio.Event()

    async def deliver(self, op: str, payload: bytes) -> None:
        self.signals.append((op, payload))
        self._changed.set()

    async def wait_for(self, op: str, payload: bytes, timeout: float = 5.0) -> None:
        async with asyncio.timeout(timeout):
            while (op, payload) not in self.signals:
                self._changed.clear()
                await self._changed.wait()


async def publish_until_received(
    publish: Callable[[str, bytes], Awaitable[None]], inbox: Inbox, timeout: float = 15.0
) -> int:
    """Publish numbered markers until the inbox receives one; returns how many were sent."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    sent = 0
    run = secrets.token_hex(4)
    while loop.time() < deadline:
        sent += 1
        marker = f"marker-{run}-{sent}".encode()
        await publish("doorbell", marker)
        try:
            await inbox.wait_for("doorbell", marker, timeout=0.25)
            return sent
        except TimeoutError:
            continue
    raise TimeoutError(f"no marker arrived within {timeout} s ({sent} sent)")


async def backend_pids(dsn: str, application_name: str) -> list[int]:
    """The server processes of the connections named ``application_name``."""
    async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
        cursor = await conn.execute(
            "SELECT pid FROM pg_stat_activity WHERE application_name = %s", (application_name,)
        )
        return [int(row[0]) for row in await cursor.fetchall()]


async def terminate_backends(dsn: str, application_name: str) -> list[int]:
    """Kill the connections named ``application_name`` from the server side (as a restart would)."""
    pids = await backend_pids(dsn, application_name)
    async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
        # One statement per pid: in a single query the planner may call pg_terminate_backend on rows
        # before filtering them (this connection's own included).
        for pid in pids:
            await conn.execute("SELECT pg_terminate_backend(%s)", (pid,))
    return pids


async def wait_until_listening(dsn: str, application_name: str, not_pid: int, timeout: float = 15.0) -> int:
    """Wait for a new connection named ``application_name`` that has run its LISTEN; returns its pid."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
        while loop.time() < deadline:
            cursor = await conn.execute(
                "SELECT pid FROM pg_stat_activity WHERE application_name = %s AND pid <> %s"
                " AND state = 'idle' AND (query ILIKE 'LISTEN%%' OR query = 'SELECT 1')",
                (application_name, not_pid),
            )
            row = await cursor.fetchone()
            if row is not None:
                return int(row[0])
            await asyncio.sleep(0.05)
    raise TimeoutError(f"{application_name} is not listening again after {timeout} s")


class PingService:
    """A one-task graph ``ping`` whose task notes when (monotonic) and in which process it started."""

    def __init__(self) -> None:
        self.started: dict[str, float] = {}
        self.release = asyncio.Event()
        self.release.set()

    def proxy(self) -> TestProxy:
        proxy = TestProxy()
        graph = Graph("ping")
        graph.add_task("ping", "ping")
        graph.add_transition("ping", END)
        proxy.handle_graph("ping", graph)

        @proxy.task("ping")
        async def ping(flow: Flow) -> None:
            self.started[flow.flow_key] = asyncio.get_running_loop().time()
            await self.release.wait()
            flow.set("ranIn", os.getpid())

        return proxy


def slow_down_polling(engine: Engine) -> None:
    """Make ``engine`` poll for due steps only every SLOW_POLL seconds."""
    # Applies at once: a sleeping claimer wakes and goes back to sleep with the new interval.
    engine.set_scheduler_tuning(replace(engine.scheduler_tuning, idle_poll=SLOW_POLL))


async def start_latencies(creator: Engine, runner: Engine, service: PingService, flows: int) -> list[float]:
    """Create ``flows`` ping flows one after the other on ``creator``, each run to its end by ``runner``;
    the seconds from each create call to its task starting."""
    loop = asyncio.get_running_loop()
    latencies = []
    for _ in range(flows):
        began = loop.time()
        key = await creator.create("ping")
        outcome = await runner.wait(key, timeout=SLOW_POLL / 2)
        assert outcome.status == "completed"
        latencies.append(service.started[key] - began)
    return latencies


def summary(latencies: list[float]) -> str:
    return (
        f"median {statistics.median(latencies) * 1000:.1f} ms, max {max(latencies) * 1000:.1f} ms"
        f" over {len(latencies)}"
    )
