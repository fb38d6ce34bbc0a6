"""What the claimers tell the schedule ticker, so that an idle engine does not poll the schedules twice.

The claimers of every shard already read the database once per idle poll (``next_wake_time``), or once per
poll interval while busy (``next_timer``). Both statements also return the next tick of any unpaused
schedule (the first entry of a partial index: nothing when there are none). A claimer of shard 1, where
the schedules live, hands that tick to ``ScheduleHints``:

- the ticker sleeps no later than the tick (it may be a schedule another process made, unknown to it);
- when the tick comes before the ticker meant to look again, its bell rings at once;
- a ticker whose sleep ran out with nothing known to be due skips its own read of the schedules when a
  claimer read the next tick since it went to sleep (there was nothing sooner, or the bell would have
  rung). An engine with no schedules therefore adds no statement to its claimers' idle poll; while the
  claimers are too busy to poll, the ticker reads the schedules itself once per ``schedule_poll``.
"""

from __future__ import annotations

import asyncio
import math

from dwarf.store.base import Row

__all__ = ["SCHEDULE_SHARD", "ScheduleHints"]

SCHEDULE_SHARD = 1
"""The shard whose ``dwarf_schedules`` table holds every schedule (docs/schedules.md)."""


class ScheduleHints:
    """The next schedule tick the claimers saw, and when the ticker means to look again (loop times)."""

    def __init__(self, bell: asyncio.Event) -> None:
        self._bell = bell
        self.next_tick_at = math.inf
        """When the earliest tick a claimer saw falls due; infinity for none (or once the ticker looked)."""
        self.seen_at = -math.inf
        """When a claimer of shard 1 last read the next tick."""
        self.wake_at = -math.inf
        """When the sleeping ticker looks again; minus infinity while it is awake (it reads for itself)."""

    def saw(self, shard: int, row: Row) -> None:
        """A claimer of ``shard`` read ``row`` (``next_wake_time`` or ``next_timer``)."""
        if shard != SCHEDULE_SHARD:
            return
        now = asyncio.get_running_loop().time()
        self.seen_at = now
        next_ms = row["next_schedule_ms"]
        if next_ms is None:
            self.next_tick_at = math.inf
            return
        self.next_tick_at = now + float(next_ms) / 1000 - float(row["now"])
        if self.next_tick_at < self.wake_at:
            self._bell.set()

    def sleep_for(self, delay: float, margin: float) -> float:
        """The ticker's ``delay``, cut short by a tick the claimers saw (with ``margin`` past it)."""
        now = asyncio.get_running_loop().time()
        delay = min(delay, max(0.0, self.next_tick_at - now + margin))
        self.wake_at = now + delay
        return delay

    def looked(self) -> None:
        """The ticker is reading the schedules itself: a tick seen before is in that read."""
        self.wake_at = -math.inf
        self.next_tick_at = math.inf

    def read_since(self, moment: float) -> bool:
        """Whether a claimer read the next tick at or after ``moment`` (a loop time)."""
        return self.seen_at >= moment
