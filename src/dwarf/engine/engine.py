"""The Engine: configuration, lifecycle and the public operations.

An engine runs flows against one or more shards. Its ``set_*`` methods live in ``setters``. Startup
builds the ``Runtime`` that the scheduler, the executor and the operations share; the operations live in
``operations``, ``waiting`` and ``listing``, and each public method here checks the engine is started and
hands over to them.
"""

from __future__ import annotations

import asyncio
import builtins
import contextlib
from collections.abc import Callable, Mapping
from typing import Any, Unpack

from dwarf.engine import limits, listing, operations, progress, schedules, serving, waiting
from dwarf.engine.history import build_history, load_outcome, load_step
from dwarf.engine.host import HostHooks
from dwarf.engine.keys import parse_key
from dwarf.engine.reencode import ReencodeReport, reencode_values
from dwarf.engine.runtime import Runtime
from dwarf.engine.scheduler import Scheduler
from dwarf.engine.setters import NEW, STARTED, STARTING, STOPPED, EngineSetters, positive_int
from dwarf.engine.settings import DEFAULT_DRAIN_TIMEOUT, EngineConfig, EngineSettings
from dwarf.engine.signals import DOORBELL, FLOW_STOPPED, SCHEDULES, decode_signal
from dwarf.engine.telemetry import Telemetry
from dwarf.engine.ticker import ScheduleTicker
from dwarf.errors import BadRequestError, EngineStateError
from dwarf.store.base import Store
from dwarf.store.encoded import ValueCoder, encoded_stores
from dwarf.store.shards import StoreSpec, open_stores, release_stores, resolve_specs
from dwarf.workflow.durations import Duration, to_seconds
from dwarf.workflow.limits import Limit, LimitScope
from dwarf.workflow.mermaid import history_mermaid
from dwarf.workflow.progress import FlowActivity, FlowWait
from dwarf.workflow.records import (
    FlowOptions,
    FlowOutcome,
    FlowStep,
    FlowSummary,
    Query,
    ShardSummary,
)
from dwarf.workflow.schedules import CatchUp, Schedule

__all__ = ["Engine"]


class Engine(EngineSetters):
    """A durable workflow engine over SQLite or PostgreSQL shards.

    Example::

        proxy = TestProxy()
        proxy.handle_graph("greet", graph)
        async with Engine(host=proxy, dsn="sqlite:///flows.db") as engine:
            key, outcome = await engine.run("greet", {"name": "Ada"})
    """

    def __init__(self, **settings: Unpack[EngineSettings]) -> None:
        self._phase = NEW
        self._config = EngineConfig()
        self._hooks = HostHooks()  # the host's optional methods, resolved by set_host
        self._specs: list[StoreSpec] = []
        self._opened: list[Store] = []  # the stores as opened (the runtime may see them through codecs)
        self._runtime: Runtime | None = None
        self._scheduler: Scheduler | None = None
        self._ticker: ScheduleTicker | None = None
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

    # --- lifecycle ---

    async def startup(self) -> None:
        """Open and migrate the shards and start the workers."""
        if self._phase == STARTED:
            return
        if self._phase != NEW:
            raise EngineStateError("an engine cannot be restarted; create a new one")
        config = self._config
        if config.host is None and config.workers > 0:
            raise EngineStateError("set a host before startup (only an engine of 0 workers runs without)")
        self._phase = STARTING
        try:
            telemetry = Telemetry.from_settings(config.meter_provider, config.tracer_provider)
            self._specs = resolve_specs(config.dsn, config.num_shards, config.in_test)
            # An operations-only engine (the CLI, the dashboard) looks at an existing dwarf database: it
            # must never create a file or a schema in whatever database it was pointed at.
            stores = await open_stores(
                self._specs, self.pool_size, migrate=config.workers > 0, log=config.logger
            )
        except BaseException:
            self._phase = NEW
            raise
        self._opened = stores
        rt = self._runtime = Runtime(
            owner=self,
            stores=encoded_stores(stores, config) if config.encodes_values else stores,
            host=config.host,
            hooks=self._hooks,
            log=config.logger,
            telemetry=telemetry,
            max_state_size=config.max_state_size,
        )
        scheduler = self._scheduler = Scheduler(rt, config.workers, config.scheduler_tuning)
        telemetry.attach(stores, lambda: scheduler.busy_workers)
        await scheduler.prime()
        scheduler.start()
        if config.workers > 0:  # an operations-only engine starts no flows of its own accord
            self._ticker = ScheduleTicker(rt, lambda: self._config.scheduler_tuning, self._create_defaults)
            self._ticker.start()
        self._phase = STARTED
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
        if self._phase != STARTED:
            if self._phase == NEW:
                self._phase = STOPPED
            return
        self._phase = STOPPED
        timeout = self.drain_timeout if drain_timeout is None else max(0.0, drain_timeout)
        if self._runtime is not None:
            self._runtime.running = False  # operations in progress (a wait) end; draining steps commit
        if self._ticker is not None:
            await self._ticker.stop()
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
        if self._phase != STARTED:
            return
        self._phase = STOPPED
        if self._ticker is not None:
            await self._ticker.stop()
        if self._scheduler is not None:
            await self._scheduler.abandon()
        await self._close()

    async def _close(self) -> None:
        if self._runtime is not None:
            await self._runtime.close()
            self._runtime.telemetry.close()
            await release_stores(self._specs, self._opened)

    async def __aenter__(self) -> Engine:
        await self.startup()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.shutdown()

    @property
    def runtime(self) -> Runtime:
        """The started engine's shared parts (stores, host, telemetry), for tools and tests that drive
        one of its collaborators directly; EngineStateError unless the engine is started."""
        if self._phase != STARTED or self._runtime is None:
            raise EngineStateError(
                "the engine is not started" if self._phase == NEW else "the engine is stopped"
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
            if signal.limits and 1 <= signal.shard <= len(rt.stores):
                rt.limits.refresh(rt, rt.stores[signal.shard - 1])
        elif signal.op == FLOW_STOPPED:
            rt.waiters.wake(signal.shard, signal.flow_id)
        elif signal.op == SCHEDULES:
            rt.schedule_bell.set()

    async def reencode(self, *, batch: int = 200) -> ReencodeReport:
        """Write every stored value that the engine's codecs would store differently again (after a key
        rotation, or to encode rows written before a codec was set); see docs/codecs.md#rotating-keys."""
        self.runtime.require_running()
        config = self._config
        coder = ValueCoder(config.codec, blobs=config.blob_store, offload_above=config.offload_above)
        return await reencode_values(self._opened, coder, positive_int(batch, "the batch size"))

    # --- operations ---

    async def create(
        self,
        workflow_url: str,
        initial_state: Mapping[str, Any] | None = None,
        options: FlowOptions | None = None,
    ) -> str:
        """Start a flow of the graph at ``workflow_url`` and return its key (or, with an idempotency key,
        maybe that of the flow holding it: docs/flows.md#idempotent-create)."""
        return await operations.create_flow(
            self.runtime, workflow_url, initial_state, options, self._create_defaults()
        )

    def _create_defaults(self) -> operations.CreateDefaults:
        config = self._config
        return operations.CreateDefaults(
            config.default_priority, config.time_budget, config.retain_for, config.deletion_grace
        )

    async def wait(self, flow_key: str, timeout: Duration | None = None) -> FlowOutcome:
        """Wait until the flow stops (completed, failed, cancelled or interrupted) and return its outcome.
        ``timeout`` bounds the whole call, database reads included (TimeoutError on time)."""
        rt = self.runtime
        limit = None if timeout is None else to_seconds(timeout, what="timeout")
        return await waiting.wait_for_flow(rt, flow_key, limit)

    async def poll(self, flow_key: str, timeout: Duration | None = None) -> FlowOutcome:
        """The flow's outcome if it has stopped (as ``wait`` returns it), else ``Status.RUNNING`` with an
        empty state; never TimeoutError. ``timeout`` (default 0) is how long to wait for a stop first.
        See docs/flows.md#polling-a-flow."""
        rt = self.runtime
        return await waiting.poll_flow(rt, flow_key, to_seconds(timeout, what="timeout"))

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

    async def signal(self, flow_key: str, name: str, data: Mapping[str, Any] | None = None) -> None:
        """Send signal ``name`` with ``data`` to a running or interrupted root flow's tree: the oldest step
        waiting for it (``flow.wait_for_signal``) runs again with the data, or the next one to wait takes
        it. ConflictError once the flow stopped (docs/waits.md#signals)."""
        await operations.signal_flow(self.runtime, flow_key, name, data)

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

    async def limit(
        self,
        key: str | Callable[..., Any],
        *,
        concurrency: int | None = None,
        rate: float | None = None,
        burst: int | None = None,
        scope: LimitScope | str | None = None,
    ) -> None:
        """Limit the steps of a fairness key (or, with ``scope="task_url"`` or a registered task as ``key``,
        of a task URL): at most ``concurrency`` running at once, at most ``rate`` starts per second in
        bursts of up to ``burst`` (default: a second's worth). Replaces the key's limit; every replica's
        claims obey it. See docs/limits.md."""
        await limits.apply_limit(self.runtime, key, scope, concurrency, rate, burst)

    async def clear_limit(
        self, key: str | Callable[..., Any], *, scope: LimitScope | str | None = None
    ) -> bool:
        """Remove the limit of a fairness key (or task URL); True if there was one."""
        return await limits.clear_limit(self.runtime, key, scope)

    async def list_limits(self) -> builtins.list[Limit]:
        """Every limit, per shard, with how many of its key's steps run and the rate tokens left now."""
        return await limits.list_limits(self.runtime)

    async def shard_info(self) -> builtins.list[ShardSummary]:
        """Per shard: ping latency and the number of flows and steps, or the error.

        Shards are probed at once, each within ``listing.SHARD_PROBE_TIMEOUT`` seconds, so a dead shard
        costs the call no more than that and its error shows beside the others' figures.
        """
        return await listing.probe_shards(self.runtime)

    # --- schedules (docs/schedules.md) ---

    async def schedule(
        self,
        name: str,
        workflow_url: str,
        *,
        cron: str = "",
        every: Duration | None = None,
        state: Mapping[str, Any] | None = None,
        timezone: str = "UTC",
        catch_up: CatchUp = "skip",
        options: FlowOptions | None = None,
    ) -> Schedule:
        """Create the schedule ``name``, or change it (the same name with a new definition), and return it.

        It starts a flow of ``workflow_url`` with ``state`` at every tick of ``cron`` (in ``timezone``) or
        of ``every`` (whole multiples of the interval since the epoch): exactly one flow per tick, however
        many engines run. ``catch_up`` says which due ticks a late engine runs ("skip", "one", "all").
        """
        return await schedules.upsert_schedule(
            self.runtime,
            name,
            workflow_url,
            cron=cron,
            every=every,
            state=state,
            timezone=timezone,
            catch_up=catch_up,
            options=options,
        )

    async def get_schedule(self, name: str) -> Schedule:
        """The schedule ``name``; NotFoundError if there is none."""
        return await schedules.get_schedule(self.runtime, name)

    async def list_schedules(self) -> builtins.list[Schedule]:
        """Every schedule, by name."""
        return await schedules.list_schedules(self.runtime)

    async def pause_schedule(self, name: str) -> None:
        """Stop the schedule's ticks until ``resume_schedule``; ticks that fall meanwhile never run."""
        await schedules.pause_schedule(self.runtime, name)

    async def resume_schedule(self, name: str) -> None:
        """Let a paused schedule tick again, from its first tick after now."""
        await schedules.resume_schedule(self.runtime, name)

    async def delete_schedule(self, name: str) -> None:
        """Remove the schedule; the flows it started stay."""
        await schedules.delete_schedule(self.runtime, name)
