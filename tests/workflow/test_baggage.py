"""current_baggage and baggage_scope: the running flow's baggage follows its context, not the thread."""

from __future__ import annotations

import asyncio
import contextvars
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest

import dwarf
import dwarf.workflow
from dwarf.workflow.baggage import baggage_scope, current_baggage


def test_baggage_is_none_outside_a_flow() -> None:
    assert current_baggage() is None


def test_scope_sets_the_baggage_inside_its_block() -> None:
    with baggage_scope({"tenant": "acme"}):
        assert current_baggage() == {"tenant": "acme"}


def test_scope_restores_none_on_exit() -> None:
    with baggage_scope({"tenant": "acme"}):
        pass
    assert current_baggage() is None


def test_scope_restores_the_baggage_when_the_block_raises() -> None:
    with pytest.raises(RuntimeError), baggage_scope("inside"):
        raise RuntimeError("task failed")
    assert current_baggage() is None


def test_nested_scopes_restore_the_outer_baggage() -> None:
    with baggage_scope("outer"):
        with baggage_scope("inner"):
            assert current_baggage() == "inner"
        assert current_baggage() == "outer"


def test_scalar_baggage_is_returned_as_is() -> None:
    with baggage_scope(42):
        assert current_baggage() == 42


def test_current_baggage_returns_a_copy() -> None:
    with baggage_scope({"roles": ["reader"]}):
        current_baggage()["roles"].append("admin")
        assert current_baggage() == {"roles": ["reader"]}


def test_a_scope_cannot_be_entered_twice() -> None:
    scope = baggage_scope("x")
    with scope, pytest.raises(RuntimeError, match="twice"), scope:
        pass


def test_exit_without_enter_is_harmless() -> None:
    baggage_scope("x").__exit__(None, None, None)
    assert current_baggage() is None


def test_current_baggage_is_exported_from_the_public_packages() -> None:
    assert dwarf.current_baggage is current_baggage
    assert dwarf.workflow.current_baggage is current_baggage


async def test_asyncio_tasks_each_see_their_own_flows_baggage() -> None:
    started = asyncio.Event()
    seen: dict[str, object] = {}

    async def run_task(name: str, baggage: str) -> None:
        with baggage_scope(baggage):
            # Both tasks are inside their scopes at the same time before either reads.
            if name == "first":
                await started.wait()
            else:
                started.set()
            await asyncio.sleep(0)
            seen[name] = current_baggage()

    await asyncio.gather(run_task("first", "tenant-a"), run_task("second", "tenant-b"))
    assert seen == {"first": "tenant-a", "second": "tenant-b"}
    assert current_baggage() is None


async def test_a_task_created_inside_a_scope_inherits_the_baggage() -> None:
    async def read() -> object:
        return current_baggage()

    with baggage_scope({"trace": 1}):
        child = asyncio.create_task(read())
    # The child copied the context at creation, so it sees the baggage even after the scope closed.
    assert await child == {"trace": 1}


def test_a_thread_running_in_a_copied_context_sees_the_baggage() -> None:
    with baggage_scope("tenant-a"):
        context = contextvars.copy_context()
    with ThreadPoolExecutor(max_workers=1) as pool:
        assert pool.submit(context.run, current_baggage).result() == "tenant-a"


def test_a_plain_thread_does_not_see_the_baggage() -> None:
    seen: list[object] = ["unset"]

    def read() -> None:
        seen[0] = current_baggage()

    with baggage_scope("tenant-a"):
        thread = threading.Thread(target=read)
        thread.start()
        thread.join()
    assert seen == [None]


def test_threads_in_different_copied_contexts_do_not_mix_baggage() -> None:
    barrier = threading.Barrier(2)

    def read_after_both_started() -> object:
        barrier.wait(timeout=5)
        return current_baggage()

    contexts = []
    for baggage in ("tenant-a", "tenant-b"):
        with baggage_scope(baggage):
            contexts.append(contextvars.copy_context())
    with ThreadPoolExecutor(max_workers=2) as pool:
        futures = [pool.submit(context.run, read_after_both_started) for context in contexts]
        assert [future.result() for future in futures] == ["tenant-a", "tenant-b"]


async def test_asyncio_to_thread_carries_the_baggage() -> None:
    with baggage_scope({"tenant": "acme"}):
        assert await asyncio.to_thread(current_baggage) == {"tenant": "acme"}


def test_a_scope_entered_in_a_thread_does_not_leak_to_the_caller() -> None:
    def work() -> None:
        with baggage_scope("thread-only"):
            assert current_baggage() == "thread-only"

    context = contextvars.copy_context()
    with ThreadPoolExecutor(max_workers=1) as pool:
        pool.submit(context.run, work).result()
    assert current_baggage() is None
