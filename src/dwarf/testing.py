"""pytest helpers: an isolated, started engine per test, on SQLite or PostgreSQL.

The package registers this module as a pytest plugin (entry point ``pytest11``), so a test can ask for
the ``dwarf_engine`` fixture: a factory that builds an engine on isolated test databases (``set_in_test``)
named after the test, starts it, and shuts it down after the test::

    async def test_greeting(dwarf_engine):
        proxy = TestProxy()
        proxy.handle_graph("greet", graph)
        engine = await dwarf_engine(proxy)
        key, outcome = await engine.run("greet", {"name": "Ada"})

Calling the factory twice with the same proxy gives two replicas sharing the same databases. Set
``DWARF_TEST_DSN`` (a PostgreSQL DSN whose database name contains ``%d``) to run on PostgreSQL.

Because installing dwarf registers this plugin in every pytest run of the environment, loading it must
never fail, whatever else is installed: pytest-asyncio is optional (without it, ``dwarf_engine`` fails the
test that asks for it, saying what to install), and the engine is imported only when a fixture runs.
"""

from __future__ import annotations

import os
import re
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any

import pytest

try:
    import pytest_asyncio
except ImportError:  # a project without pytest-asyncio: the plugin still loads, the fixture explains
    pytest_asyncio = None  # type: ignore[assignment]

if TYPE_CHECKING:
    from dwarf.engine import Engine, Host

__all__ = ["EngineFactory", "dwarf_engine", "engine_factory", "test_name_for"]

EngineFactory = Callable[..., Awaitable["Engine"]]

NEEDS_PYTEST_ASYNCIO = (
    "the dwarf_engine fixture needs pytest-asyncio to run async fixtures and tests: "
    'pip install pytest-asyncio (and set asyncio_mode = "auto", see dwarf\'s docs/testing.md)'
)


def test_name_for(node_id: str) -> str:
    """The test-database name for a pytest node id.

    The process id is part of it so that two test runs at once (two terminals, parallel CI jobs) against
    one PostgreSQL server never share, or drop, each other's databases.
    """
    return re.sub(r"[^A-Za-z0-9_]+", "_", node_id) + f"_pid{os.getpid()}"


@asynccontextmanager
async def engine_factory(test_name: str, **defaults: Any) -> AsyncIterator[Callable[..., Awaitable[Engine]]]:
    """Yield ``make(host, *, name=None, start=True, **settings)`` building engines on the isolated
    databases of ``test_name`` (or ``name``); every engine made is shut down on exit.

    Engines made with one name share databases; engines sharing a host that has ``add_peer`` are linked
    as peer replicas.
    """
    from dwarf.engine import Engine

    engines: list[Engine] = []

    async def make(host: Host, *, name: str | None = None, start: bool = True, **settings: Any) -> Engine:
        engine = Engine(host=host, **{**defaults, **settings})
        engine.set_in_test(name or test_name)
        engines.append(engine)
        if start:
            await engine.startup()
        add_peer = getattr(host, "add_peer", None)
        if callable(add_peer):
            add_peer(engine)
        return engine

    try:
        yield make
    finally:
        for engine in reversed(engines):
            await engine.shutdown(drain_timeout=1.0)


async def _started_engines(request: pytest.FixtureRequest) -> AsyncIterator[EngineFactory]:
    """A factory of started engines on this test's isolated databases; all are shut down afterwards."""
    async with engine_factory(test_name_for(request.node.nodeid)) as make:

        async def make_started(host: Host, *, test_name: str | None = None, **settings: Any) -> Engine:
            return await make(host, name=test_name, **settings)

        yield make_started


def _unavailable() -> Iterator[EngineFactory]:
    """Stands in for ``dwarf_engine`` where pytest-asyncio is missing: fails the test that asks for it."""
    pytest.fail(NEEDS_PYTEST_ASYNCIO, pytrace=False)
    yield  # pragma: no cover - a generator, like the real fixture


if pytest_asyncio is not None:
    dwarf_engine = pytest_asyncio.fixture(_started_engines, name="dwarf_engine")
else:
    dwarf_engine = pytest.fixture(_unavailable, name="dwarf_engine")
