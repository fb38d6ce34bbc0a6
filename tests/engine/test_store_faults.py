"""An engine whose database fails: the caller gets a StoreError that says what happened, and the engine
goes on working (and shuts down) once the database is back."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from dwarf import EngineStateError, Status, StoreError
from dwarf.engine import Engine
from tests.conftest import PG_AVAILABLE, PG_DSN
from tests.engine.graphs import WAIT, chain, incrementer, proxy_with
from tests.store.conftest import add_test_queries

NO_HANG = 20.0
BIG = "x" * 200_000  # needs pages a frozen database cannot add


@pytest.mark.skipif(not PG_AVAILABLE, reason="PostgreSQL not configured (set DWARF_TEST_DSN)")
async def test_startup_on_a_missing_postgresql_database_raises_a_store_error_naming_it() -> None:
    database = f"dwarf_missing_{uuid.uuid4().hex[:8]}"
    dsn = urlsplit(PG_DSN)._replace(path=f"/{database}").geturl()
    engine = Engine(workers=0, dsn=dsn)
    async with asyncio.timeout(NO_HANG):
        with pytest.raises(StoreError, match=f'no database "{database}".*createdb') as raised:
            await engine.startup()
    assert raised.value.transient is False
    with pytest.raises(EngineStateError):
        await engine.list()


async def test_a_full_disk_fails_create_with_a_transient_store_error_and_the_engine_recovers(
    tmp_path: Path,
) -> None:
    proxy = proxy_with("count", chain("count", "A"), A=incrementer())
    engine = Engine(host=proxy, dsn=f"sqlite:///{tmp_path / 'flows.db'}")
    async with asyncio.timeout(NO_HANG):
        await engine.startup()
        try:
            store = engine.runtime.stores[0]
            add_test_queries(store)
            await store.write("freeze_size")
            with pytest.raises(StoreError, match="database or disk is full") as raised:
                await engine.create("count", {"padding": BIG})
            assert raised.value.transient is True
            await store.write("lift_size_limit")
            key = await engine.create("count", {"padding": BIG})
            outcome = await engine.wait(key, timeout=WAIT)
            assert outcome.status == Status.COMPLETED and outcome.state["count"] == 1
        finally:
            await engine.shutdown()
