"""The Engine: configuration, lifecycle and the public operations.

An engine runs flows against one or more shards. Setters split in two: construction-time ones (DSN, host,
workers, shards, telemetry, test mode) raise EngineStateError once the engine started; live ones apply at
once (the time budget and default priority are read at each create and frozen onto the flow). Startup
builds the ``Runtime`` that the scheduler, the executor and the operations share; the operations live in
``operations``, ``waiting`` and ``listing``, and each public method here checks the engine is started and
hands over to them.
"""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import logging
import math
from collections.abc import Mapping
from typing import Any, Unpack

from dwarf.engine import listing, operations, progress, serving, waiting
from dwarf.engine.history import build_history, load_outcome, load_step
from dwarf.engine.host import Host, HostHooks
from dwarf.engine.keys import parse_key
from dwarf.engine.runtime import Runtime
from dwarf.engine.scheduler import Scheduler
from dwarf.engine.settings import DEFAULT_DRAIN_TIMEOUT, EngineConfig, EngineSettings
from dwarf.engine.signals import DOORBELL, FLOW_STOPPED, decode_signal
from dwarf.engine.telemetry import Telemetry
from dwarf.engine.tuning import SchedulerTuning
from dwarf.errors import BadRequestError, EngineStateError
from dwarf.store.base import silent_logger
from dwarf.store.shards import StoreSpec, open_stores, release_stores, resolve_specs
from dwarf.workflow.durations import Duration, to_seconds
from dwarf.workflow.mermaid import history_mermaid
from dwarf.workflow.progress import FlowActivity, FlowWait
from dwarf.workflow.records import (
    MAX_PRIORITY,
    MAX_TIME_BUDGET,
    FlowOptions,
    FlowOutcome,
    FlowStep,
    FlowSummary,
    Query,
    ShardSummary,
)

__all__ = ["Engine"]

_NEW, _STARTING, _STARTED, _STOPPED = "new", "starting", "started", "stopped"


def _positive_int(value: Any, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise BadRequestError(f"{what} must be a positive integer")
    return value


class Engine:
    """A durable workflow engine over SQLite or PostgreSQL shards.

    Example::

        proxy = TestProxy()
        proxy.handle_graph("greet", graph)
        async with Engine(host=proxy, dsn="sqlite:///flows.db") as engine:
            key, outcome = await engine.run("greet", {"name": "Ada"})
    """

    def __init__(self, **settings: Unpack[EngineSettings]) -> None:
        self._phase = _NEW
        self._config = EngineConfig()
        self._hooks = HostHooks()  # the host's optional methods, resolved by set_host
        self._specs: list[StoreSpec] = []
        self._runtime: Runtime | None = None
        self._scheduler: Scheduler | None = None
        self.drain_timeout = DEFAULT_DRAIN_TIMEOUT
        for name, value in settings.items():
            setter = getattr(self, f"set_{name}", None)
            if setter is None or not callable(setter):
                raise TypeError(f"Engine() got an unknown setting {name!r}")
            if name == "debug_logger":
                if value:
                    setter()
                continue
            setter(value)

    @property
    def settings(self) -> EngineSettings:
        """The settings in force, as ``Engine(**settings)`` keywords (an engine built from them is alike)."""
        return self._config.as_settings()

    # --- construction-time settings ---

    def _require_new(self, what: str) -> None:
        if self._phase != _NEW:
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
        self._config.workers = 0 if zero else _positive_int(n, "workers")

    def set_num_shards(self, n: int) -> None:
        """How many databases flows are spread over (default 1); the DSN must then contain ``%d``."""
        self._require_new("the number of shards")
        self._config.num_shards = _positive_int(n, "the number of shards")

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

    def set_in_test(self, name: str) -> None:
        """Use isolated databases for the test ``name`` (see docs/testing.md#without-pytest-set_in_test)."""
        self._require_new("test mode")
        if not isinstance(name, str) or not name:
            raise BadRequestError("the test name must be a non-empty string")
        self._config.in_test = name

    # --- live settings ---

    def set_max_open_conns(self, n: int) -> None:
        """The cap on connections per shard (default 8)."""
        self._config.max_open_conns = _positive_int(n, "max open connections")
        self._resize_pools()

    def set_workers_per_conn(self, n: int) -> None:
        """How many workers share one connection when sizing the pool (default 8)."""
        self._config.workers_per_conn = _positive_int(n, "workers per connection")
        self._resize_pools()

    def _resize_pools(self) -> None:
        if self._phase == _STARTED and self._runtime is not None:
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

    @property
    def scheduler_tuning(self) -> SchedulerTuning:
        """The timing knobs in force."""
        return self._config.scheduler_tuning

    def set_default_priority(self, priority: int) -> None:
        """The priority of flows created with priority 0 (default 100; lower runs first)."""
        if _positive_int(priority, "the default priority") > MAX_PRIORITY:
            raise BadRequestError(f"the default priority must be at most {MAX_PRIORITY}")
        self._config.default_priority = priority

    @property
    def pool_size(self) -> int:
        """Connections per shard: min(ceil(workers / workers_per_conn), max_open_conns)."""
        config = self._config
        return max(1, min(math.ceil(config.workers / config.workers_per_conn), config.max_open_conns))

    # --- lifecycle ---

    async def startup(self) -> None:
        """Open and migrate the shards and start the workers."""
        if self._phase == _STARTED:
            return
        if self._phase != _NEW:
            raise EngineStateError("an engine cannot be restarted; create a new one")
        config = self._config
        if config.host is None and config.workers > 0:
            raise EngineStateError("set a host before startup (only an engine of 0 workers runs without)")
        self._phase = _STARTING
        try:
            telemetry = Telemetry.from_settings(config.meter_provider, config.tracer_provider)
            self._specs = resolve_specs(config.dsn, config.num_shards, config.in_test)
            # An operations-only engine (the CLI, the dashboard) looks at an existing dwarf database: it
            # must never create a file or a schema in whatever database it was pointed at.
            stores = await open_stores(
                self._specs, self.pool_size, migrate=config.workers > 0, log=config.logger
            )
        except BaseException:
            self._phase = _NEW
            raise
        rt = self._runtime = Runtime(
            owner=self,
            stores=stores,
            host=config.host,
            hooks=self._hooks,
            log=config.logger,
            telemetry=telemetry,
        )
        scheduler = self._scheduler = Scheduler(rt, config.workers, config.scheduler_tuning)
        telemetry.attach(stores, lambda: scheduler.busy_workers)
        scheduler.start()
        self._phase = _STARTED
        for store in stores:
            # A purge whose reaper was interrupted by a shutdown is finished by the next engine.
            await rt.reaper.start_if_marked(store)
        started = self._hooks.engine_started
        if started is not None:
            try:
                await started(self)
            except BaseException:
                await self.shutdown(drain_timeout=0)
                raise
        config.logger.debug("engine started with %d shard(s)", len(stores), extra={"flow": ""})

    async def shutdown(self, *, drain_timeout: float | None = None) -> None:
        """Stop claiming, let running steps finish (up to ``drain_timeout``), release the rest. Idempotent."""
        if self._phase != _STARTED:
            if self._phase == _NEW:
                self._phase = _STOPPED
            return
        self._phase = _STOPPED
        timeout = self.drain_timeout if drain_timeout is None else max(0.0, drain_timeout)
        if self._runtime is not None:
            self._runtime.running = False  # operations in progress (a wait) end; draining steps commit
        if self._scheduler is not None:
            await self._scheduler.stop(timeout)
        stopped = self._hooks.engine_stopped
        if stopped is not None:
            with contextlib.suppress(Exception):
                await stopped(self)
        await self._close()

    async def serve(self, stop: asyncio.Event | None = None, **options: Unpack[serving.ServeOptions]) -> None:
        """Run as a worker: start (unless started), run until SIGTERM/SIGINT or until ``stop`` is set, then
        drain and shut down. ``options``: drain_timeout, health_port, ... (``serving.ServeOptions``)."""
        await serving.serve(self, stop, **options)

    async def abandon(self) -> None:
        """Stop at once as a killed process would, keeping the leases of running steps (recovery tests)."""
        if self._phase != _STARTED:
            return
        self._phase = _STOPPED
        if self._scheduler is not None:
            await self._scheduler.abandon()
        await self._close()

    async def _close(self) -> None:
        if self._runtime is not None:
            await self._runtime.close()
            self._runtime.telemetry.close()
            await release_stores(self._specs, self._runtime.stores)

    async def __aenter__(self) -> Engine:
        await self.startup()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.shutdown()

    @property
    def runtime(self) -> Runtime:
        """The started engine's shared parts (stores, host, telemetry), for tools and tests that drive
        one of its collaborators directly; EngineStateError unless the engine is started."""
        if self._phase != _STARTED or self._runtime is None:
            raise EngineStateError(
                "the engine is not started" if self._phase == _NEW else "the engine is stopped"
            )
        return self._runtime

    @property
    def busy_workers(self) -> int:
        """How many steps this engine runs at this moment."""
        return self._scheduler.busy_workers if self._scheduler is not None else 0

    async def deliver_signal(self, op: str, payload: bytes) -> None:
        """Apply a signal a peer replica sent through the host."""
        rt = self.runtime
        try:
            signal = decode_signal(op, payload)
        except (ValueError, UnicodeDecodeError) as error:
            raise BadRequestError(f"malformed signal: {error}") from error
        rt.telemetry.signal_received(signal.op)
        if signal.op == DOORBELL:
            rt.doorbells.ring(signal.shard)
        elif signal.op == FLOW_STOPPED:
            rt.waiters.wake(signal.shard, signal.flow_id)

    # --- operations ---

    async def create(
        self,
        workflow_url: str,
        initial_state: Mapping[str, Any] | None = None,
        options: FlowOptions | None = None,
    ) -> str:
        """Start a flow of the graph at ``workflow_url`` and return its key (or, with an idempotency key,
        maybe that of the flow holding it: docs/flows.md#idempotent-create)."""
        defaults = operations.CreateDefaults(self._config.default_priority, self._config.time_budget)
        return await operations.create_flow(self.runtime, workflow_url, initial_state, options, defaults)

    async def wait(self, flow_key: str, timeout: Duration | None = None) -> FlowOutcome:
        """Wait until the flow stops (completed, failed, cancelled or interrupted) and return its outcome.
        ``timeout`` bounds the whole call, database reads included (TimeoutError on time)."""
        rt = self.runtime
        limit = None if timeout is None else to_seconds(timeout, what="timeout")
        return await waiting.wait_for_flow(rt, flow_key, limit)

    async def run(
        self,
        workflow_url: str,
        initial_state: Mapping[str, Any] | None = None,
        options: FlowOptions | None = None,
        timeout: Duration | None = None,
    ) -> tuple[str, FlowOutcome]:
        """Create a flow and wait for it to stop; a timeout raises TimeoutError carrying ``flow_key``.

        ``timeout`` bounds the wait (as in ``wait``), not the create: a zero timeout still creates the
        flow and hands back its key in the error.
        """
        flow_key = await self.create(workflow_url, initial_state, options)
        try:
            outcome = await self.wait(flow_key, timeout)
        except TimeoutError as error:
            error.flow_key = flow_key  # type: ignore[attr-defined]
            raise
        return flow_key, outcome

    async def snapshot(self, flow_key: str) -> FlowOutcome:
        """The flow's outcome as of now (its current merged state while it runs)."""
        store, row = await self.runtime.resolve(flow_key)
        return await load_outcome(store, row.flow_id, row)

    async def history(self, flow_key: str) -> list[FlowStep]:
        """The flow's steps in depth order (then by id), with navigation keys."""
        store, row = await self.runtime.resolve(flow_key)
        return await build_history(store, row)

    async def history_mermaid(self, flow_key: str) -> str:
        """The executed steps of the flow as a Mermaid flowchart."""
        return history_mermaid(await self.history(flow_key))

    async def why(self, flow_key: str) -> builtins.list[FlowWait]:
        """Why the flow is not moving: what its unfinished steps wait for, grouped (empty once it stopped).
        See ``progress.flow_waits`` and docs/operations.md#why-a-flow-is-not-moving."""
        return await progress.flow_waits(self.runtime, flow_key)

    async def activity(self, window: Duration = 86400.0, *, buckets: int = 24) -> FlowActivity:
        """Root flows created in the last ``window`` counted by status and per time slot (see
        ``progress.flow_activity``)."""
        return await progress.flow_activity(self.runtime, window, buckets)

    async def step(self, step_key: str) -> FlowStep:
        """One step by its key."""
        rt = self.runtime
        parsed = parse_key(step_key, "step")
        return await load_step(rt.store(parsed.shard, "step"), parsed)

    async def list(self, query: Query | None = None) -> tuple[list[FlowSummary], str]:
        """A page of flows, newest first (created_at, then shard, then id: one order across shards, each
        flow listed once however flows are created meanwhile), and the next page's cursor ("" at the end)."""
        return await listing.list_flows(self.runtime, query)

    async def resume(self, flow_key: str, resume_data: Mapping[str, Any] | None = None) -> None:
        """Re-run the interrupted step of an interrupted flow; its ``interrupt`` call returns the data."""
        await operations.resume_flow(self.runtime, flow_key, resume_data)

    async def cancel(self, flow_key: str, reason: str = "") -> None:
        """Cancel a running or interrupted root flow and its whole tree."""
        await operations.cancel_flow(self.runtime, flow_key, reason)

    async def continue_thread(
        self, thread_key: str, additional_state: Mapping[str, Any] | None = None
    ) -> str:
        """Start the next flow of a thread from its latest completed flow's final state."""
        return await operations.continue_thread(self.runtime, thread_key, additional_state)

    async def fork(self, step_key: str, state_overrides: Mapping[str, Any] | None = None) -> str:
        """Start a new flow that replays a stopped flow up to a step and re-runs that step with
        ``state_overrides`` applied to its input; the original is not modified (docs/operations.md#fork).
        Returns the new root flow's key."""
        return await operations.fork_flow(self.runtime, step_key, state_overrides)

    async def delete(self, flow_key: str) -> None:
        """Delete a stopped root flow and its whole tree, steps included."""
        await operations.delete_flow(self.runtime, flow_key)

    async def purge(self, query: Query) -> int:
        """Mark up to 4096 matching stopped root flows (with their trees) for deletion; return how many.

        Marked flows disappear from list, snapshot and history at once; a background reaper deletes their
        rows in bounded batches. Call again to purge more.
        """
        return await listing.mark_for_purge(self.runtime, query)

    async def fingerprint(self, flow_key: str) -> tuple[str, str]:
        """A token that changes whenever anything observable about the flow changes, and its status."""
        return await listing.fingerprint(self.runtime, flow_key)

    async def shard_info(self) -> builtins.list[ShardSummary]:
        """Per shard: ping latency and the number of flows and steps, or the error.

        Shards are probed at once, each within ``listing.SHARD_PROBE_TIMEOUT`` seconds, so a dead shard
        costs the call no more than that and its error shows beside the others' figures.
        """
        return await listing.probe_shards(self.runtime)
