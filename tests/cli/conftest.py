"""Fixtures of the CLI tests: databases holding flows of every kind, and ways to run `dwarf` on them.

The flows are made by a real engine with workers and a TestProxy (see ``shop_proxy``). Two fixtures hold
them, on SQLite and on PostgreSQL:

- ``shop`` (one test): a fresh database whose engine keeps running during the test, so that a resume or
  fork the CLI records is run by it, as an application's engine would. For the commands that change flows.
- ``shop_records`` (one module): a database filled once and only read, for the commands that read. Filling
  a database costs about a second; the read-only tests share one instead of paying it each.

The CLI runs in-process through Typer's CliRunner: directly from sync tests, on a worker thread from async
tests (each command runs its own event loop).
"""

from __future__ import annotations

import asyncio
import hashlib
import os
from collections.abc import AsyncIterator, Coroutine, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit

import pytest
import pytest_asyncio
from typer.testing import CliRunner, Result

from dwarf import Flow, FlowOptions, Status
from dwarf.cli import app
from dwarf.engine import Engine, TestProxy
from tests.conftest import PG_AVAILABLE, PG_DSN, REQUIRE_PG
from tests.engine.graphs import WAIT, chain

T = TypeVar("T")

CLI_TIMEOUT = 60.0
"""Upper bound (seconds) on one CLI command run from an async test."""


def invoke(*args: str, input: str | None = None, env: dict[str, str] | None = None) -> Result:
    """Run `dwarf ARGS` in-process and return its result (exit code, stdout, stderr).

    Exceptions other than exits propagate, so that a crash never passes for an exit code of 1.
    """
    # Without COLUMNS, piped output is as wide as its content (cli/render.py); pytest-xdist's workers
    # inherit a COLUMNS of the terminal, which would cut tables to fit it.
    unset: dict[str, str | None] = {"COLUMNS": None}
    return CliRunner().invoke(
        app, list(args), input=input, env={**unset, **(env or {})}, catch_exceptions=False
    )


async def run_cli(*args: str, input: str | None = None, env: dict[str, str] | None = None) -> Result:
    """``invoke`` from a coroutine: on a worker thread, bounded by ``CLI_TIMEOUT``."""
    return await asyncio.wait_for(asyncio.to_thread(invoke, *args, input=input, env=env), CLI_TIMEOUT)


def shop_proxy() -> TestProxy:
    """The graphs behind the shop's flows.

    - ``shop/order`` (graph ``order``): Price -> Pack -> END; Pack sets ``total`` = 2 * ``qty``.
    - ``shop/approval``: Ask -> Record -> END; Ask interrupts and copies the answer's ``approved``.
    - ``shop/broken``: Crash -> END; Crash fails with "out of stock".
    - ``shop/parent``: Call -> END; Call runs ``shop/order`` as a child flow.
    """
    proxy = TestProxy()
    proxy.handle_graph("shop/order", chain("order", "Price", "Pack"))
    proxy.handle_graph("shop/approval", chain("approval", "Ask", "Record"))
    proxy.handle_graph("shop/broken", chain("broken", "Crash"))
    proxy.handle_graph("shop/parent", chain("parent", "Call"))

    @proxy.task("Price")
    async def price(flow: Flow) -> None:
        flow.set("priced", True)

    @proxy.task("Pack")
    async def pack(flow: Flow) -> None:
        flow.set("total", flow.get_int("qty") * 2)
        flow.set("note", flow.get("note", ""))

    @proxy.task("Ask")
    async def ask(flow: Flow) -> None:
        answer = flow.interrupt({"question": "ship it?"})
        flow.set("approved", answer.get("approved") is True)

    @proxy.task("Record")
    async def record(flow: Flow) -> None:
        flow.set("recorded", True)

    @proxy.task("Crash")
    async def crash(flow: Flow) -> None:
        raise RuntimeError("out of stock")

    @proxy.task("Call")
    async def call(flow: Flow) -> None:
        flow.set("child", flow.subgraph("shop/order", {"qty": 7}))

    return proxy


@dataclass
class ShopRecords:
    """A database with one root flow of each kind (plus the nested one's child flow)."""

    dsn: str
    completed: str  # an order, qty 3, fairness key "team-a", priority 5
    second: str  # another completed order, qty 1
    interrupted: str  # an approval waiting for its answer
    failed: str  # a broken flow
    nested: str  # a parent whose child flow ran an order
    nested_mermaid: str = field(default="", repr=False)  # the engine's own diagram of ``nested``

    @property
    def roots(self) -> set[str]:
        return {self.completed, self.second, self.interrupted, self.failed, self.nested}

    def invoke(self, *args: str, input: str | None = None) -> Result:
        """`dwarf ARGS --dsn <this database>`, from a sync test."""
        return invoke(*args, "--dsn", self.dsn, input=input)


@dataclass
class Shop(ShopRecords):
    """The shop's flows with the running engine that made them (it runs what the CLI resumes or forks)."""

    engine: Engine | None = field(default=None, repr=False)

    async def cli(self, *args: str, input: str | None = None) -> Result:
        """`dwarf ARGS --dsn <this database>`, from an async test."""
        return await run_cli(*args, "--dsn", self.dsn, input=input)

    @property
    def running_engine(self) -> Engine:
        assert self.engine is not None
        return self.engine


async def _run(engine: Engine, url: str, state: dict[str, Any], options: FlowOptions | None = None) -> str:
    key, outcome = await engine.run(url, state, options, timeout=WAIT)
    assert outcome.status in {Status.COMPLETED, Status.INTERRUPTED, Status.FAILED}, outcome
    return key


async def fill_shop(engine: Engine, dsn: str) -> ShopRecords:
    """Run the shop's five root flows to their stops on a started engine."""
    completed = await _run(
        engine, "shop/order", {"qty": 3, "note": "gift"}, FlowOptions(fairness_key="team-a", priority=5)
    )
    second = await _run(engine, "shop/order", {"qty": 1})
    interrupted = await _run(engine, "shop/approval", {"order": "A-7"})
    failed = await _run(engine, "shop/broken", {})
    nested = await _run(engine, "shop/parent", {})
    return ShopRecords(
        dsn, completed, second, interrupted, failed, nested, await engine.history_mermaid(nested)
    )


@pytest_asyncio.fixture
async def shop(fresh_dsn: str) -> AsyncIterator[Shop]:
    """The shop's flows on an empty database of the test's backend, its engine running."""
    engine = Engine(host=shop_proxy(), dsn=fresh_dsn, workers=4)
    await engine.startup()
    try:
        records = await fill_shop(engine, fresh_dsn)
        yield Shop(**vars(records), engine=engine)
    finally:
        await engine.shutdown(drain_timeout=1.0)


def _postgres_admin(dsn: str) -> str:
    return urlsplit(dsn)._replace(path="/postgres").geturl()


@contextmanager
def _module_database(backend: str, name: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """An empty database named after ``name`` on ``backend``; dropped afterwards (the ``backend`` and
    ``fresh_dsn`` fixtures of tests/conftest.py, for a module instead of one test)."""
    if backend == "sqlite":
        yield f"sqlite:///{tmp_path_factory.mktemp('cli') / 'flows.db'}"
        return
    if not PG_AVAILABLE:
        if REQUIRE_PG:
            pytest.fail("DWARF_REQUIRE_POSTGRES=1 but PostgreSQL (DWARF_TEST_DSN) is not reachable")
        pytest.skip("PostgreSQL not configured (set DWARF_TEST_DSN)")
    import psycopg

    database = "dwarf_cli_" + hashlib.sha256(f"{name}_pid{os.getpid()}".encode()).hexdigest()[:12]
    admin = _postgres_admin(PG_DSN)
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)'.encode())
        conn.execute(f'CREATE DATABASE "{database}"'.encode())
    try:
        yield urlsplit(PG_DSN)._replace(path=f"/{database}").geturl()
    finally:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)'.encode())


def in_own_thread(coroutine: Coroutine[Any, Any, T], timeout: float = 60.0) -> T:
    """Run a coroutine to completion on a new event loop in a thread of its own."""
    with ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, coroutine).result(timeout=timeout)


async def _fill_and_stop(dsn: str) -> ShopRecords:
    async with Engine(host=shop_proxy(), dsn=dsn, workers=4) as engine:
        return await fill_shop(engine, dsn)


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def flows(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ShopRecords]:
    """The shop's flows on a database that the read-only tests of one module share; no engine is left
    running. Filled on a thread of its own, so that its event loop never meets pytest-asyncio's."""
    with _module_database(request.param, request.node.nodeid, tmp_path_factory) as dsn:
        yield in_own_thread(_fill_and_stop(dsn))


def create_dwarf_database(dsn: str) -> None:
    """Give ``dsn`` dwarf's tables, without flows, as an application's engine does when it first starts.

    The CLI never creates or migrates a schema itself (its engine runs no steps), so a test that points it
    at a new database makes the database this way first.
    """

    async def start_and_stop() -> None:
        async with Engine(host=TestProxy(), dsn=dsn, workers=1):
            pass

    in_own_thread(start_and_stop())


@pytest.fixture
def workdir(tmp_path: Path) -> Iterator[Path]:
    """An empty working directory; the test fails if a command leaves anything in it."""
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    yield cwd
    assert sorted(path.name for path in cwd.iterdir()) == [], "a refused command created files"
