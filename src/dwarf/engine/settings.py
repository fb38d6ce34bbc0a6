"""EngineSettings, the keywords of ``Engine(...)`` typed for checkers, and EngineConfig, which holds them.

Each keyword is a ``set_<name>`` method of ``Engine`` without its prefix (the reference's setters stay the
API; the keywords are a shorthand for calling them before startup).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field, fields
from typing import Any, TypedDict, cast

from dwarf.codecs import BlobStore, Codec
from dwarf.engine.host import Host
from dwarf.engine.tuning import SchedulerTuning
from dwarf.store.base import silent_logger
from dwarf.workflow.durations import Duration

__all__ = ["EngineConfig", "EngineSettings"]


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
    retain_for: Duration | None
    deletion_grace: Duration
    codec: Codec | Sequence[Codec] | None
    max_state_size: int
    blob_store: BlobStore | None
    offload_above: int


DEFAULT_WORKERS = 64
DEFAULT_WORKERS_PER_CONN = 8
DEFAULT_MAX_OPEN_CONNS = 8
DEFAULT_TIME_BUDGET = 120.0
DEFAULT_PRIORITY = 100
DEFAULT_DRAIN_TIMEOUT = 10.0
DEFAULT_DELETION_GRACE = 60.0
"""Seconds a flow created with delete_on_completion is kept once it completed, so that whoever waits for
it, here or on another replica, or polls it, still reads its outcome (the reference keeps it a minute)."""
DEFAULT_OFFLOAD_ABOVE = 256 * 1024


@dataclass
class EngineConfig:
    """The settings an engine holds, each with its default (what the ``set_*`` methods write)."""

    dsn: str = ""
    host: Host | None = None
    workers: int = DEFAULT_WORKERS
    num_shards: int = 1
    logger: logging.Logger = field(default_factory=silent_logger)
    debug_logger: bool = False
    meter_provider: Any = None
    tracer_provider: Any = None
    in_test: str = ""
    max_open_conns: int = DEFAULT_MAX_OPEN_CONNS
    workers_per_conn: int = DEFAULT_WORKERS_PER_CONN
    time_budget: float = DEFAULT_TIME_BUDGET
    default_priority: int = DEFAULT_PRIORITY
    scheduler_tuning: SchedulerTuning = field(default_factory=SchedulerTuning)
    retain_for: float | None = None
    deletion_grace: float = DEFAULT_DELETION_GRACE
    # Values at rest (docs/codecs.md): none of them set means no codec layer at all.
    codec: tuple[Codec, ...] = ()
    max_state_size: int = 0
    blob_store: BlobStore | None = None
    offload_above: int = DEFAULT_OFFLOAD_ABOVE

    @property
    def encodes_values(self) -> bool:
        """Whether stored values go through the codec layer (store/encoded.py)."""
        return bool(self.codec) or self.max_state_size > 0 or self.blob_store is not None

    def as_settings(self) -> EngineSettings:
        """The settings as ``Engine(**settings)`` keywords: an engine built from them is configured alike."""
        settings: dict[str, Any] = {item.name: getattr(self, item.name) for item in fields(self)}
        for unset in ("host", "in_test", "codec", "max_state_size", "blob_store"):
            if not settings[unset]:
                del settings[unset]
        if settings["debug_logger"]:
            del settings["logger"]  # the debug logger replaces it
        else:
            del settings["debug_logger"]
        return cast(EngineSettings, settings)
