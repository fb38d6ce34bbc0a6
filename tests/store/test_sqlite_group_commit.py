"""The SQLite store's thread and its group commit (units queued together share one transaction, each in
its own savepoint) when units or the database fail: each unit hears the truth about its own work, and
the thread keeps serving whatever happens."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

from dwarf import ConflictError, StoreError
from dwarf.store.base import Store, Tx
from dwarf.store.sqlite import SQLiteStore
from tests.store.conftest import add_test_queries, make_notes, notes

# Guards against the old failure mode, a store thread that died and left every caller waiting for ever.
NO_HANG = 10.0
BIG = "x" * 200_000  # needs pages a frozen database cannot add


@pytest_asyncio.fixture
async def sqlite_store(tmp_path: Path) -> AsyncIterator[SQLiteStore]:
    store = SQLiteStore(str(tmp_path / "group.db"))
    add_test_queries(store)
    await store.open()
    try:
        await make_notes(store)
        yield store
    finally:
        async with asyncio.timeout(NO_HANG):
            await store.close()


def _add(body: str) -> Callable[[Tx], Awaitable[int]]:
    async def work(tx: Tx) -> int:
        return await tx.execute("add_note", body=body)

    return work


async def _in_one_group(store: Store, *works: Callable[[Tx], Awaitable[Any]]) -> list[Any]:
    """Run ``works`` as one commit group: they queue up while the store's thread is held by another
    unit, so the thread takes them all at once. Returns each one's result or exception."""
    held, release = threading.Event(), threading.Event()

    async def hold(tx: Tx) -> None:
        held.set()
        release.wait(NO_HANG)  # blocks the store's thread, never the event loop

    holder = asyncio.ensure_future(store.run(hold, write=False))
    await asyncio.to_thread(held.wait, NO_HANG)
    units = [asyncio.ensure_future(store.run(work)) for work in works]
    await asyncio.sleep(0)  # each task has put its unit on the queue
    release.set()
    async with asyncio.timeout(NO_HANG):
        await holder
        return list(await asyncio.gather(*units, return_exceptions=True))


async def test_a_unit_that_raises_inside_a_group_is_rolled_back_alone(sqlite_store: SQLiteStore) -> None:
    async def add_then_refuse(tx: Tx) -> None:
        await tx.execute("add_note", body="refused")
        raise ConflictError("the unit changed its mind")

    first, refused, last = await _in_one_group(sqlite_store, _add("first"), add_then_refuse, _add("last"))
    assert (first, last) == (1, 1)
    assert isinstance(refused, ConflictError) and str(refused) == "the unit changed its mind"
    assert await notes(sqlite_store) == ["first", "last"]


async def test_a_full_disk_fails_the_unit_that_needed_space_with_a_transient_store_error(
    sqlite_store: SQLiteStore,
) -> None:
    await sqlite_store.write("freeze_size")
    async with asyncio.timeout(NO_HANG):
        with pytest.raises(StoreError, match="database or disk is full") as raised:
            await sqlite_store.run(_add(BIG))
    assert raised.value.transient is True
    assert isinstance(raised.value.__cause__, Exception) and "full" in str(raised.value.__cause__)
    assert await notes(sqlite_store) == []


async def test_a_full_disk_inside_a_group_never_reports_rolled_back_work_as_committed(
    sqlite_store: SQLiteStore,
) -> None:
    await sqlite_store.write("freeze_size")
    outcomes = await _in_one_group(sqlite_store, _add("before"), _add(BIG), _add("after"))
    assert isinstance(outcomes[1], StoreError) and outcomes[1].transient
    # SQLite rolled the whole transaction back by itself: "before" was lost with it and must say so.
    committed = sorted(
        body for body, outcome in zip(["before", "big", "after"], outcomes, strict=True) if outcome == 1
    )
    assert await notes(sqlite_store) == committed
    assert all(outcome == 1 or isinstance(outcome, StoreError) for outcome in outcomes)
    assert isinstance(outcomes[0], StoreError) and outcomes[0].transient


async def test_work_resumes_once_the_disk_has_space_again(sqlite_store: SQLiteStore) -> None:
    await sqlite_store.write("freeze_size")
    await _in_one_group(sqlite_store, _add("before"), _add(BIG), _add("after"))
    await sqlite_store.write("lift_size_limit")
    assert await _in_one_group(sqlite_store, _add("small"), _add(BIG)) == [1, 1]
    assert "small" in await notes(sqlite_store)
    assert await sqlite_store.run(_add("one more")) == 1


async def test_close_returns_after_a_full_disk(tmp_path: Path) -> None:
    store = SQLiteStore(str(tmp_path / "closing.db"))
    add_test_queries(store)
    await store.open()
    await make_notes(store)
    await store.write("freeze_size")
    await _in_one_group(store, _add("before"), _add(BIG))
    async with asyncio.timeout(NO_HANG):
        await store.close()


async def test_an_unexpected_error_in_the_store_thread_fails_its_units_and_the_thread_serves_on(
    sqlite_store: SQLiteStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A stand-in for a bug in the group logic itself: the thread must survive it.
    run_group = sqlite_store._run_group

    def broken_once(group: Any) -> None:
        monkeypatch.setattr(sqlite_store, "_run_group", run_group)
        raise RuntimeError("a bug in the group logic")

    monkeypatch.setattr(sqlite_store, "_run_group", broken_once)
    async with asyncio.timeout(NO_HANG):
        with pytest.raises(StoreError, match="a bug in the group logic"):
            await sqlite_store.run(_add("lost"))
        assert await sqlite_store.run(_add("served")) == 1
    assert await notes(sqlite_store) == ["served"]


async def test_a_unit_that_swallows_a_full_disk_error_is_still_told_its_work_was_lost(
    sqlite_store: SQLiteStore,
) -> None:
    async def add_then_try_big(tx: Tx) -> str:
        await tx.execute("add_note", body="small")
        try:
            await tx.execute("add_note", body=BIG)
        except StoreError:
            return "carried on"
        return "fitted"

    await sqlite_store.write("freeze_size")
    async with asyncio.timeout(NO_HANG):
        with pytest.raises(StoreError, match="rolled back with its commit group") as raised:
            await sqlite_store.run(add_then_try_big)
    assert raised.value.transient is True
    assert await notes(sqlite_store) == []
