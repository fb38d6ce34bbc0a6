"""Retention: marking the ended flows whose retention ran out, for the reaper (docs/operations.md#retention).

A root flow created with a retention (``FlowOptions.retain_for``, ``Engine.set_retain_for``, or the grace
window of ``delete_on_completion``) gets ``purge_after`` = the moment it ended + that time, in the very
write that ends it (014_retention.sql): nothing is added to a step. Every engine with workers runs one
retention pass per shard, which marks the flows whose ``purge_after`` has passed, with their trees, a
bounded batch per statement, exactly as ``purge`` marks them; the reaper then deletes their rows.

A pass sleeps until the earliest ``purge_after`` it knows of (the database's, or that of a flow this engine
has just ended: ``note``), and at most ``SchedulerTuning.retention_poll``, which is how it learns of flows
that other engines ended. With no flow waiting for its retention to run out, a pass is one indexed read
per poll and writes nothing.

Crash safety: the purge time is committed with the end of the flow, and a mark is one statement per batch
that a reaper, of this engine or the next, finishes (see reaper.py). A process killed at any line leaves
each flow unmarked (a later pass marks it once due, and never before) or marked (it is deleted).
"""

from __future__ import annotations

import asyncio
import contextlib
import math
from collections.abc import Callable
from typing import TYPE_CHECKING

from dwarf.store.base import Store

if TYPE_CHECKING:
    from dwarf.engine.runtime import Runtime

__all__ = ["RETENTION_BATCH", "Retention"]

RETENTION_BATCH = 500
"""Root flows one marking statement takes at most (their trees come with them)."""


class Retention:
    """The retention passes of one engine, one per shard (started by the scheduler of an engine with
    workers), and the wake-ups the engine's own flows give them."""

    def __init__(self, runtime: Runtime) -> None:
        self._runtime = runtime
        # Per shard whose pass runs here: the loop time of its next pass, and the event that makes it look
        # at that time again.
        self._wake_at: dict[int, float] = {}
        self._events: dict[int, asyncio.Event] = {}

    def note(self, shard: int, seconds: float) -> None:
        """A flow of ``shard`` ended on this engine and is purged in ``seconds``: have the pass look then."""
        wake_at = self._wake_at.get(shard)
        if wake_at is None:
            return  # no pass runs here (an engine without workers): another engine's poll finds it
        at = asyncio.get_running_loop().time() + max(0.0, seconds)
        if at < wake_at:
            self._wake_at[shard] = at
            self._events[shard].set()

    def retune(self, poll: float) -> None:
        """A new ``retention_poll``: no pass sleeps longer than it from now on."""
        if not self._wake_at:
            return
        now = asyncio.get_running_loop().time()
        for shard, wake_at in self._wake_at.items():
            if now + poll < wake_at:
                self._wake_at[shard] = now + poll
                self._events[shard].set()

    async def run(self, store: Store, poll: Callable[[], float]) -> None:
        """Run ``store``'s pass until the engine stops; ``poll()`` is the longest sleep between looks."""
        shard = store.shard
        event = self._events.setdefault(shard, asyncio.Event())
        loop = asyncio.get_running_loop()
        runtime = self._runtime
        try:
            while runtime.running:
                # What this engine ends during the pass lowers the wake-up from here on.
                self._wake_at[shard] = math.inf
                try:
                    next_in = await self.pass_once(store)
                except asyncio.CancelledError:
                    raise
                except Exception as error:
                    runtime.log.warning(
                        "the retention pass of shard %d failed: %s", shard, error, extra={"flow": ""}
                    )
                    next_in = None
                wait = poll() if next_in is None else min(next_in, poll())
                self._wake_at[shard] = min(self._wake_at[shard], loop.time() + wait)
                while (remaining := self._wake_at[shard] - loop.time()) > 0 and runtime.running:
                    event.clear()
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(remaining):
                            await event.wait()
        finally:
            self._wake_at.pop(shard, None)

    async def pass_once(self, store: Store) -> float | None:
        """Mark every flow of ``store`` whose retention ran out; return the seconds until the next one's
        runs out (None when no flow waits for it)."""
        [row] = await store.read("retention_due")
        if int(row["due"]):
            await self._mark_due(store)
        next_in = row["next_in"]
        return None if next_in is None else max(0.0, float(next_in))

    async def _mark_due(self, store: Store) -> None:
        runtime = self._runtime
        while runtime.running:
            rows = await store.write("mark_retention_due", batch=RETENTION_BATCH)
            for row in rows:
                runtime.flow_cache.discard(store.shard, int(row["flow_id"]))
            if rows:
                runtime.reaper.start(store)
            if sum(1 for row in rows if int(row["parent_flow_id"]) == 0) < RETENTION_BATCH:
                return
