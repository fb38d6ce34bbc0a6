"""Waiting for a flow to stop, within a deadline that database calls cannot stretch."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable
from typing import TypeVar

from dwarf.engine.history import load_outcome
from dwarf.engine.keys import correlation_id
from dwarf.engine.runtime import Runtime
from dwarf.errors import NotFoundError
from dwarf.store.rows import FlowRow
from dwarf.workflow.records import FlowOutcome
from dwarf.workflow.status import TERMINAL_STATUSES, Status

__all__ = ["STOPPED_STATUSES", "bounded", "poll_flow", "wait_for_flow"]

T = TypeVar("T")

STOPPED_STATUSES = frozenset({*TERMINAL_STATUSES, Status.INTERRUPTED})
"""The statuses a wait returns on: the flow needs someone to act (or nothing more) to move again."""


async def wait_for_flow(rt: Runtime, flow_key: str, limit: float | None) -> FlowOutcome:
    """Wait until the flow stops and return its outcome; see ``Engine.wait``.

    ``limit`` bounds the wait itself (TimeoutError); ``bounded`` is what holds database calls to it.
    """
    if limit is None:
        return await _wait(rt, flow_key, None)
    return await bounded(_wait(rt, flow_key, limit), limit, f"the flow did not stop within {limit:g}s")


async def poll_flow(rt: Runtime, flow_key: str, limit: float) -> FlowOutcome:
    """The flow's outcome once it stopped, waiting up to ``limit`` seconds for that (0: not at all); a
    flow still running then answers ``Status.RUNNING`` with an empty state, never TimeoutError. See
    ``Engine.poll``.

    The outcome of a running flow is deliberately not its current state (``snapshot`` rebuilds that):
    a poll is meant to be cheap enough to repeat, one indexed read of the flow's row.
    """
    return await _wait(rt, flow_key, max(0.0, limit), give_up=True)


async def _wait(rt: Runtime, flow_key: str, limit: float | None, *, give_up: bool = False) -> FlowOutcome:
    """Wait for the flow to stop; past ``limit``, TimeoutError, or with ``give_up`` a RUNNING outcome."""
    store, row = await rt.resolve(flow_key)
    flow_id = row.flow_id
    loop = asyncio.get_running_loop()
    deadline = None if limit is None else loop.time() + limit
    waiter = rt.waiters.register(store.shard, flow_id)
    event = waiter.event
    try:
        # Pushed wake-ups (local, or a peer's flow-stopped signal) end the wait; this slow poll only
        # covers signals that were lost.
        poll = 1.0
        current: FlowRow | None = row
        while True:
            rt.require_running()
            event.clear()
            if waiter.outcome is not None:
                # A completion committed on this engine handed its outcome over: nothing to read back.
                return waiter.outcome
            if current is None:
                rows = await store.read("get_flow", flow_id=flow_id)
                if not rows:
                    raise NotFoundError("flow not found")
                current = FlowRow.of(rows[0])
            if Status(current.status) in STOPPED_STATUSES:
                return await load_outcome(store, flow_id, current)
            current = None
            remaining = None if deadline is None else deadline - loop.time()
            if remaining is not None and remaining <= 0:
                if give_up:
                    return FlowOutcome(status=Status.RUNNING, state={})
                raise TimeoutError(f"flow {correlation_id(store.shard, flow_id)} did not stop in time")
            pause = poll if remaining is None else min(poll, remaining)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(pause):
                    await event.wait()
            poll = min(poll * 2, 2.0)
    finally:
        rt.waiters.unregister(store.shard, flow_id, waiter)


async def bounded(work: Awaitable[T], limit: float, message: str) -> T:
    """Await ``work`` for at most ``limit`` seconds, then raise TimeoutError(``message``).

    A driver may turn the cancellation of a query into an ordinary error (psycopg's QueryCanceled, then
    wrapped as a StoreError): past the deadline, any error is reported as the timeout it stands for.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + max(0.0, limit)
    try:
        async with asyncio.timeout_at(deadline):
            return await work
    except TimeoutError as error:
        if error.args:  # the work's own, more precise, timeout
            raise
        raise TimeoutError(message) from None
    except Exception as error:
        if loop.time() >= deadline:
            raise TimeoutError(message) from error
        raise
