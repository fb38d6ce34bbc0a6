"""The ``set_*`` methods of the Engine: construction-time settings and live ones.

Construction-time setters (DSN, host, workers, shards, telemetry, test mode) raise EngineStateError once the
engine started; live ones apply at once (the time budget, default priority, retention and deletion grace
are read at each create and frozen onto the flow). ``Engine`` inherits them, so ``Engine(**settings)`` and
the reference's setters are one API; they live here to keep engine.py to lifecycle and operations.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from dwarf.codecs import NAME_PATTERN, BlobStore, Codec
from dwarf.engine.host import Host, HostHooks
from dwarf.engine.settings import EngineConfig
from dwarf.engine.tuning import SchedulerTuning
from dwarf.errors import BadRequestError, EngineStateError
from dwarf.store.base import silent_logger
from dwarf.workflow.durations import Duration, to_seconds
from dwarf.workflow.records import MAX_PRIORITY, MAX_TIME_BUDGET, retention_seconds

if TYPE_CHECKING:
    from dwarf.engine.runtime import Runtime
    from dwarf.engine.scheduler import Scheduler

__all__ = ["EngineSetters", "check_codecs", "positive_int"]

NEW, STARTING, STARTED, STOPPED = "new", "starting", "started", "stopped"


def positive_int(value: Any, what: str) -> int:
    """``value`` if it is an int of at least 1 (not a bool); BadRequestError naming ``what`` otherwise."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise BadRequestError(f"{what} must be a positive integer")
    return value


def check_codecs(codec: Codec | Sequence[Codec] | None) -> tuple[Codec, ...]:
    """The codecs of ``set_codec`` as a tuple; BadRequestError for anything that is not a codec, and for
    two codecs of one name (a stored value names each codec that wrote it)."""
    if codec is None:
        return ()
    codecs = (codec,) if isinstance(codec, Codec) else tuple(codec) if isinstance(codec, Sequence) else None
    if codecs is None:
        raise BadRequestError("the codec must be a Codec or a sequence of them")
    names: set[str] = set()
    for item in codecs:
        name = getattr(item, "name", None)
        if not isinstance(item, Codec) or not isinstance(name, str):
            raise BadRequestError(f"{type(item).__name__} is not a codec: it needs name, encode and decode")
        if not NAME_PATTERN.fullmatch(name):
            raise BadRequestError(
                f"codec name {name!r}: use 1 to 32 lower-case letters, digits, '-' or '_', starting with "
                "a letter"
            )
        if name in names:
            raise BadRequestError(f"two codecs are named {name!r}")
        names.add(name)
    return codecs


class EngineSetters:
    """The settings half of ``Engine``: each ``set_<name>`` checks its value and records it."""

    _phase: str
    _config: EngineConfig
    _hooks: HostHooks
    _runtime: Runtime | None
    _scheduler: Scheduler | None

    # --- construction-time settings ---

    def _require_new(self, what: str) -> None:
        if self._phase != NEW:
            raise EngineStateError(f"{what} can only be set before startup")

    def set_dsn(self, dsn: str) -> None:
        """The database: ``sqlite:///path`` or ``postgresql://...``; ``%d`` stands for the shard number."""
        self._require_new("the DSN")
        if not isinstance(dsn, str):
            raise BadRequestError("the DSN must be a string")
        self._config.dsn = dsn

    def set_host(self, host: Host) -> None:
        """The host that loads graphs, executes tasks and relays signals."""
        self._require_new("the host")
        for method in ("load_graph", "execute_task"):
            if not callable(getattr(host, method, None)):
                raise BadRequestError(f"the host has no {method} method")
        self._hooks = HostHooks.of(host)
        self._config.host = host

    def set_workers(self, n: int) -> None:
        """How many steps this engine runs at once (default 64). Zero makes an operations-only engine (the
        CLI, the dashboard): it runs no steps and needs no host unless it creates flows."""
        self._require_new("the number of workers")
        zero = n == 0 and not isinstance(n, bool)
        self._config.workers = 0 if zero else positive_int(n, "workers")

    def set_num_shards(self, n: int) -> None:
        """How many databases flows are spread over (default 1); the DSN must then contain ``%d``."""
        self._require_new("the number of shards")
        self._config.num_shards = positive_int(n, "the number of shards")

    def set_logger(self, logger: logging.Logger | None) -> None:
        """Where the engine logs; None silences it (the default)."""
        self._require_new("the logger")
        self._config.logger = logger if logger is not None else silent_logger()

    def set_debug_logger(self) -> None:
        """Log everything at DEBUG level to stderr (for development)."""
        self._require_new("the logger")
        logger = logging.getLogger("dwarf.engine.debug")
        logger.setLevel(logging.DEBUG)
        if not logger.handlers:
            logger.addHandler(logging.StreamHandler())
        self._config.logger = logger
        self._config.debug_logger = True

    def set_meter_provider(self, provider: Any) -> None:
        """The OpenTelemetry MeterProvider (default: the global one)."""
        self._require_new("the meter provider")
        self._config.meter_provider = provider

    def set_tracer_provider(self, provider: Any) -> None:
        """The OpenTelemetry TracerProvider (default: the global one)."""
        self._require_new("the tracer provider")
        self._config.tracer_provider = provider

    def set_codec(self, codec: Codec | Sequence[Codec] | None) -> None:
        """The codecs stored values go through, applied in order when writing (e.g. ``[ZlibCodec(),
        AESGCMCodec(keys)]``: compress, then encrypt); None or ``[]`` for none (see docs/codecs.md)."""
        self._require_new("the codec")
        self._config.codec = check_codecs(codec)

    def set_max_state_size(self, size: int) -> None:
        """The size guard: the most characters of JSON text any stored value (a state, changes, a
        payload, baggage) may take; a larger one raises StateTooLargeError. 0 (the default): no guard."""
        self._require_new("the maximum state size")
        zero = size == 0 and not isinstance(size, bool)
        self._config.max_state_size = 0 if zero else positive_int(size, "the maximum state size")

    def set_blob_store(self, store: BlobStore | None) -> None:
        """Where stored values of at least ``offload_above`` bytes (once encoded) go instead of their
        row, which keeps a reference (see docs/codecs.md#offloading-large-values); None for nowhere."""
        self._require_new("the blob store")
        if store is not None:
            for method in ("put", "get"):
                if not callable(getattr(store, method, None)):
                    raise BadRequestError(f"the blob store has no {method} method")
        self._config.blob_store = store

    def set_offload_above(self, size: int) -> None:
        """The size in bytes (after the codecs) from which a stored value goes to the blob store
        (default 256 KiB)."""
        self._require_new("the offload size")
        self._config.offload_above = positive_int(size, "the offload size")

    def set_in_test(self, name: str) -> None:
        """Use isolated databases for the test ``name`` (see docs/testing.md#without-pytest-set_in_test)."""
        self._require_new("test mode")
        if not isinstance(name, str) or not name:
            raise BadRequestError("the test name must be a non-empty string")
        self._config.in_test = name

    # --- live settings ---

    def set_max_open_conns(self, n: int) -> None:
        """The cap on connections per shard (default 8)."""
        self._config.max_open_conns = positive_int(n, "max open connections")
        self._resize_pools()

    def set_workers_per_conn(self, n: int) -> None:
        """How many workers share one connection when sizing the pool (default 8)."""
        self._config.workers_per_conn = positive_int(n, "workers per connection")
        self._resize_pools()

    def _resize_pools(self) -> None:
        if self._phase == STARTED and self._runtime is not None:
            for store in self._runtime.stores:
                self._runtime.spawn(store.resize(self.pool_size))

    def set_time_budget(self, budget: Duration) -> None:
        """The default time budget of a step (default 2 minutes)."""
        seconds = to_seconds(budget, what="time budget")
        if not 0 < seconds <= MAX_TIME_BUDGET:
            raise BadRequestError(f"the time budget must be positive and at most {MAX_TIME_BUDGET:g} seconds")
        self._config.time_budget = seconds

    def set_scheduler_tuning(self, tuning: SchedulerTuning) -> None:
        """The timing knobs of claims, leases and housekeeping (see SchedulerTuning); applies at once."""
        if not isinstance(tuning, SchedulerTuning):
            raise BadRequestError("the scheduler tuning must be a SchedulerTuning")
        self._config.scheduler_tuning = tuning
        if self._scheduler is not None:
            self._scheduler.retune(tuning)
        if self._runtime is not None:
            self._runtime.schedule_bell.set()  # the schedule ticker measures its sleep again

    @property
    def scheduler_tuning(self) -> SchedulerTuning:
        """The timing knobs in force."""
        return self._config.scheduler_tuning

    def set_retain_for(self, retain_for: Duration | None) -> None:
        """How long a root flow is kept once it ended (completed, failed or cancelled) before it is purged
        with its tree, unless its FlowOptions.retain_for says otherwise. None (the default) or
        ``KEEP_FOREVER`` keeps flows for ever. Read at each create and frozen onto the flow (flows created
        before keep theirs): docs/operations.md#retention."""
        seconds = retention_seconds(retain_for, "the retention")
        self._config.retain_for = None if seconds == math.inf else seconds

    def set_deletion_grace(self, grace: Duration) -> None:
        """How long a flow created with delete_on_completion is kept once it completed (default 60 s), so
        that its waiters and pollers still read its outcome; read at each create, like ``retain_for``."""
        seconds = to_seconds(grace, what="the deletion grace")
        if seconds < 0:
            raise BadRequestError("the deletion grace must not be negative")
        self._config.deletion_grace = seconds

    def set_default_priority(self, priority: int) -> None:
        """The priority of flows created with priority 0 (default 100; lower runs first)."""
        if positive_int(priority, "the default priority") > MAX_PRIORITY:
            raise BadRequestError(f"the default priority must be at most {MAX_PRIORITY}")
        self._config.default_priority = priority

    @property
    def pool_size(self) -> int:
        """Connections per shard: min(ceil(workers / workers_per_conn), max_open_conns)."""
        config = self._config
        return max(1, min(math.ceil(config.workers / config.workers_per_conn), config.max_open_conns))
