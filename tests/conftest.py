"""Shared fixtures: the database backends every engine test runs on.

``backend`` parametrizes a test over SQLite (always) and PostgreSQL (when ``DWARF_TEST_DSN`` names a
reachable server; CI sets ``DWARF_REQUIRE_POSTGRES=1`` so that an unreachable server fails instead of
skipping).
"""

from __future__ import annotations

import os
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any
from urllib.parse import urlsplit

import pytest
import pytest_asyncio

from dwarf.engine import Engine
from dwarf.testing import engine_factory, test_name_for

PG_DSN = os.environ.get("DWARF_TEST_DSN", "")
REQUIRE_PG = os.environ.get("DWARF_REQUIRE_POSTGRES") == "1"


def _postgres_reachable() -> bool:
    if not PG_DSN:
        return False
    parts = urlsplit(PG_DSN)
    try:
        with socket.create_connection((parts.hostname or "127.0.0.1", parts.port or 5432), timeout=2):
            return True
    except OSError:
        return False


PG_AVAILABLE = _postgres_reachable()


@pytest.fixture(params=["sqlite", "postgres"])
def backend(request: pytest.FixtureRequest) -> str:
    """The database dialect of this test run."""
    if request.param == "postgres" and not PG_AVAILABLE:
        if REQUIRE_PG:
            pytest.fail("DWARF_REQUIRE_POSTGRES=1 but PostgreSQL (DWARF_TEST_DSN) is not reachable")
        pytest.skip("PostgreSQL not configured (set DWARF_TEST_DSN)")
    return str(request.param)


EngineMaker = Callable[..., Awaitable[Engine]]


@pytest_asyncio.fixture
async def make_engine(backend: str, request: pytest.FixtureRequest) -> AsyncIterator[EngineMaker]:
    """Build started engines on this test's isolated databases of ``backend``; shut down afterwards.

    Engines made with the same ``name`` (default: the test's) share databases: replicas.
    """
    dsn = PG_DSN if backend == "postgres" else "sqlite://:memory:"
    async with engine_factory(test_name_for(request.node.nodeid), dsn=dsn) as make:
        yield make


@pytest_asyncio.fixture
async def fresh_dsn(backend: str, tmp_path: Any, request: pytest.FixtureRequest) -> AsyncIterator[str]:
    """A DSN of an empty database that outlives any one engine (for restart tests); removed afterwards."""
    if backend == "sqlite":
        yield f"sqlite:///{tmp_path / 'flows.db'}"
        return
    import hashlib

    import psycopg

    database = "dwarf_fresh_" + hashlib.sha256(test_name_for(request.node.nodeid).encode()).hexdigest()[:12]
    parts = urlsplit(PG_DSN)
    admin = parts._replace(path="/postgres").geturl()
    async with await psycopg.AsyncConnection.connect(admin, autocommit=True) as conn:
        await conn.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)'.encode())
        await conn.execute(f'CREATE DATABASE "{database}"'.encode())
    try:
        yield parts._replace(path=f"/{database}").geturl()
    finally:
        async with await psycopg.AsyncConnection.connect(admin, autocommit=True) as conn:
            await conn.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)'.encode())
