"""EngineSettings: the keywords ``Engine(...)`` takes, typed for checkers and editors.

Each keyword is a ``set_<name>`` method of ``Engine`` without its prefix (the reference's setters stay the
API; the keywords are a shorthand for calling them before startup).
"""

from __future__ import annotations

import logging
from typing import Any, TypedDict

from dwarf.engine.host import Host
from dwarf.engine.tuning import SchedulerTuning
from dwarf.workflow.durations import Duration

__all__ = ["EngineSettings"]


class EngineSettings(TypedDict, total=False):
    """The settings of ``Engine(**settings)``; see the matching ``Engine.set_*`` method of each."""

    dsn: str
    host: Host
    workers: int
    num_shards: int
    logger: logging.Logger | None
    debug_logger: bool
    meter_provider: Any
    tracer_provider: Any
    in_test: str
    max_open_conns: int
    workers_per_conn: int
    time_budget: Duration
    default_priority: int
    scheduler_tuning: SchedulerTuning
