"""SchedulerTuning: the timing knobs of an engine's claim loop, leases and housekeeping.

The defaults suit production; tests and unusual deployments change them with
``Engine(scheduler_tuning=SchedulerTuning(...))`` or ``engine.set_scheduler_tuning(...)`` (which applies at
once to a running engine). Every field is in seconds except ``max_recoveries``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields

from dwarf.errors import BadRequestError

__all__ = ["SchedulerTuning"]

_MAY_BE_ZERO = frozenset({"heartbeat_interval", "wedge_min_age"})


@dataclass(frozen=True)
class SchedulerTuning:
    """How often an engine polls, how long its leases last, and when housekeeping runs.

    Example (a test that wants a crashed replica's steps back quickly)::

        Engine(host=host, scheduler_tuning=SchedulerTuning(lease_period=0.5, idle_poll=0.05))
    """

    idle_poll: float = 1.0
    """The longest a claimer sleeps without a doorbell before it asks the database what is due."""
    lease_period: float = 10.0
    """How long a claim, or its latest renewal, holds a step. A live worker renews its leases every
    ``heartbeat_interval``; a dead one's steps are claimed again this long after its last renewal."""
    heartbeat_interval: float = 0.0
    """Seconds between lease renewals; 0 means a quarter of ``lease_period``."""
    error_backoff: float = 0.5
    """The pause after a failed claim or poll before the claimer tries again."""
    wedge_sweep_interval: float = 60.0
    """Seconds between wedge sweeps (repairs of flows that can no longer move, leftover purges)."""
    wedge_min_age: float = 60.0
    """How long a row must have been still before a wedge sweep may call it wedged."""
    max_recoveries: int = 20
    """How many times in a row a step may lose its worker before it fails instead of running again."""
    schedule_poll: float = 5.0
    """The longest the schedule ticker sleeps before it asks the database again which schedules are due.
    It sleeps until the next tick it knows of, and wakes at once when a schedule changes on this engine
    or at a peer that signals. It hears of changes made elsewhere (the CLI, say) from its claimers' idle
    poll, which reads the next tick too; this poll is for when the claimers are too busy to poll, and is
    skipped when they did (engine/schedule_hints.py)."""
    retention_poll: float = 60.0
    """The longest a retention pass sleeps before it asks the database which ended flows are due for
    purging (flows this engine ended wake it when due; this is how it learns of the other engines')."""

    def __post_init__(self) -> None:
        for item in fields(self):
            value = getattr(self, item.name)
            if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
                raise BadRequestError(f"scheduler tuning: {item.name} must be a finite number")
            if value < 0 or (value == 0 and item.name not in _MAY_BE_ZERO):
                raise BadRequestError(f"scheduler tuning: {item.name} must be positive")
        if not isinstance(self.max_recoveries, int):
            raise BadRequestError("scheduler tuning: max_recoveries must be an integer")

    @property
    def heartbeat_every(self) -> float:
        """The effective interval between lease renewals."""
        return self.heartbeat_interval or self.lease_period / 4
