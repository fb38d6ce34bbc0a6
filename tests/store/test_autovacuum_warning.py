"""A PostgreSQL server that never vacuums dwarf's tables is named once, at startup.

Without autovacuum the dead row versions every step leaves behind pile up and throughput falls as finished
flows accumulate (issue 14), so an engine with workers logs one WARNING per store open saying so and what
to do. Autovacuum is a server-wide setting (it cannot be changed for one database), so the tests that
switch it run on a throwaway server of their own; the last test checks the warning against whatever the
shared test server's setting is.
"""

from __future__ import annotations

import asyncio
import logging

import psycopg
import pytest

from dwarf.engine import Engine
from dwarf.store.base import Store
from dwarf.store.shards import StoreSpec, build_store
from tests.engine.graphs import WAIT, chain, noop, proxy_with
from tests.process.fixtures import throwaway_postgres
from tests.process.pgcluster import ThrowawayPostgres

__all__ = ["throwaway_postgres"]  # the fixture, imported so that pytest finds it here

RELOAD_LIMIT = 10.0


def _autovacuum_warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        record.getMessage()
        for record in caplog.records
        if record.levelno == logging.WARNING and "autovacuum" in record.getMessage()
    ]


async def _open_use_and_close(dsn: str, log: logging.Logger, *, migrate: bool = True) -> None:
    """Open a store the way an engine does (log first), run statements on it, close it."""
    store: Store = build_store(StoreSpec(dsn, dsn, False), 1, 2)
    store.log = log
    await store.open(migrate=migrate)
    try:
        for _ in range(5):
            await store.read("ping")
            await store.run(lambda tx: tx.fetch_all("count_rows"), write=False)
    finally:
        await store.close()


async def _set_server(server: ThrowawayPostgres, **settings: str) -> None:
    """Change server-wide settings (ALTER SYSTEM, then reload) and wait until new sessions see them."""
    async with await psycopg.AsyncConnection.connect(server.admin_dsn, autocommit=True) as conn:
        for name, value in settings.items():
            await conn.execute(f"ALTER SYSTEM SET {name} = {value}".encode())
        await conn.execute("SELECT pg_reload_conf()")
    async with asyncio.timeout(RELOAD_LIMIT):
        while True:
            async with await psycopg.AsyncConnection.connect(server.admin_dsn) as conn:
                seen = {
                    name: str((await (await conn.execute(f"SHOW {name}".encode())).fetchone() or [""])[0])
                    for name in settings
                }
            if seen == settings:
                return
            await asyncio.sleep(0.05)


@pytest.mark.slow
async def test_a_server_without_autovacuum_is_warned_about_once_per_store_open(
    throwaway_postgres: ThrowawayPostgres, store_log: logging.Logger, caplog: pytest.LogCaptureFixture
) -> None:
    dsn = throwaway_postgres.create_database("flows")

    await _open_use_and_close(dsn, store_log)
    assert _autovacuum_warnings(caplog) == []  # the server's default: autovacuum on

    await _set_server(throwaway_postgres, autovacuum="off")
    await _open_use_and_close(dsn, store_log)
    warnings = _autovacuum_warnings(caplog)
    assert len(warnings) == 1, warnings
    assert "runs with autovacuum off" in warnings[0]
    assert "VACUUM ANALYZE dwarf_steps, dwarf_flows" in warnings[0]
    assert "shard 1 (" in warnings[0]

    await _open_use_and_close(dsn, store_log)
    assert len(_autovacuum_warnings(caplog)) == 2  # once per open, not once per process

    # An operations-only store (migrate=False) churns nothing and stays quiet.
    await _open_use_and_close(dsn, store_log, migrate=False)
    assert len(_autovacuum_warnings(caplog)) == 2

    # Autovacuum on but blind: it decides from the statistics track_counts collects.
    await _set_server(throwaway_postgres, autovacuum="on", track_counts="off")
    caplog.clear()
    await _open_use_and_close(dsn, store_log)
    warnings = _autovacuum_warnings(caplog)
    assert len(warnings) == 1 and "runs with track_counts off" in warnings[0], warnings


@pytest.mark.slow
async def test_an_engine_with_workers_warns_through_its_own_logger_and_runs_flows_all_the_same(
    throwaway_postgres: ThrowawayPostgres, store_log: logging.Logger, caplog: pytest.LogCaptureFixture
) -> None:
    dsn = throwaway_postgres.create_database("flows")
    await _set_server(throwaway_postgres, autovacuum="off")
    proxy = proxy_with("two", chain("two", "A", "B"), A=noop, B=noop)
    async with Engine(host=proxy, dsn=dsn, logger=store_log) as engine:
        for _ in range(3):
            _, outcome = await engine.run("two", {}, timeout=WAIT)
            assert outcome.status == "completed"
    warnings = _autovacuum_warnings(caplog)
    assert len(warnings) == 1, warnings
    assert warnings[0].startswith("shard 1 (")
    # An operations-only engine (no workers) on the same database adds nothing.
    async with Engine(host=proxy, dsn=dsn, logger=store_log, workers=0):
        pass
    assert len(_autovacuum_warnings(caplog)) == 1


async def test_the_warning_matches_the_test_servers_autovacuum_setting(
    backend: str, fresh_dsn: str, store_log: logging.Logger, caplog: pytest.LogCaptureFixture
) -> None:
    await _open_use_and_close(fresh_dsn, store_log)
    warnings = _autovacuum_warnings(caplog)
    if backend == "sqlite":
        assert warnings == []
        return
    async with await psycopg.AsyncConnection.connect(fresh_dsn) as conn:
        row = await (
            await conn.execute("SELECT current_setting('autovacuum'), current_setting('track_counts')")
        ).fetchone()
    assert row is not None
    vacuums = row == ("on", "on")
    assert len(warnings) == (0 if vacuums else 1), (row, warnings)
