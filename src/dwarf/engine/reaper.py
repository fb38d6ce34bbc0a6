"""The reaper: deletes the rows of purged flows in the background, a bounded batch per transaction.

``purge`` only marks flows (they vanish from every read at once); deleting a big tree in one transaction
would hold locks and grow the write-ahead log for as long as it takes. One reaper task per shard deletes
the marked rows batch by batch instead. A purge whose reaper was interrupted (a shutdown, another process
that marked the rows) is finished by the next engine: startup and the housekeeping sweep look for marks.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from dwarf.store.base import Store, Tx

if TYPE_CHECKING:
    from dwarf.engine.runtime import Runtime

__all__ = ["REAP_BATCH", "Reaper"]

REAP_BATCH = 500
"""Rows deleted per transaction."""


class Reaper:
    """Starts and tracks one reaping task per shard of a runtime."""

    def __init__(self, runtime: Runtime) -> None:
        self._runtime = runtime
        self._reaping: set[int] = set()
        self._requested: set[int] = set()

    def start(self, store: Store) -> None:
        """Reap ``store``'s marked flows (the running reaper, if any, goes on to take the new marks)."""
        # A reaper that is about to finish must not miss flows marked meanwhile: it checks this flag,
        # without awaiting in between, before it stops.
        self._requested.add(store.shard)
        if store.shard in self._reaping:
            return
        self._reaping.add(store.shard)
        self._runtime.spawn(self._reap(store))

    async def start_if_marked(self, store: Store) -> None:
        """Start reaping ``store`` if any flow on it is marked for deletion."""
        if int((await store.read("any_marked"))[0]["marked"]):
            self.start(store)

    async def _reap(self, store: Store) -> None:
        runtime = self._runtime
        try:
            while runtime.running:
                self._requested.discard(store.shard)
                deleted = await store.run(_reap_batch)
                while deleted and runtime.running:
                    deleted = await store.run(_reap_batch)
                if store.shard not in self._requested:
                    return
        except Exception as error:
            runtime.log.warning("reaping shard %d failed: %s", store.shard, error, extra={"flow": ""})
        finally:
            self._reaping.discard(store.shard)


async def _reap_batch(tx: Tx) -> int:
    """Delete one bounded batch of marked rows: kept signals and steps first, then the flows left
    without steps (a flow deleted before its signals would leave them behind for good)."""
    deleted = await tx.execute("reap_marked_signals", batch=REAP_BATCH)
    deleted += await tx.execute("reap_marked_steps", batch=REAP_BATCH)
    if not deleted:
        deleted = await tx.execute("reap_marked_flows", batch=REAP_BATCH)
    return deleted
