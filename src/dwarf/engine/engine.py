"""The Engine: configuration, lifecycle and the operations of the public API.

An engine runs flows against one or more shards. Setters split in two: construction-time ones (DSN, host,
workers, shards, telemetry, test mode) raise EngineStateError once the engine started; live ones apply at
once (the time budget and default priority are read at each create and frozen onto the flow).
"""

from __future__ import annotations

import asyncio
import base64
import builtins
import contextlib
import hashlib
import json
import logging
import math
import random
import sys
from collections.abc import Awaitable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar, Unpack

from dwarf.engine.clock import optional_utc, utc
from dwarf.engine.completion import Effects, surface_interrupt
from dwarf.engine.creation import FlowPolicy, insert_flow
from dwarf.engine.flowinfo import FlowInfo, FlowInfoCache, dumps, policy_of_row
from dwarf.engine.fork import fork_chain
from dwarf.engine.history import build_history, load_step
from dwarf.engine.host import Host, HostHooks
from dwarf.engine.keys import MAX_ID, ParsedKey, correlation_id, format_key, parse_key, tokens_match
from dwarf.engine.scheduler import Scheduler
from dwarf.engine.settings import EngineSettings
from dwarf.engine.signals import (
    DOORBELL,
    FLOW_STOPPED,
    FlowWaiters,
    Signal,
    decode_signal,
    encode_signal,
    sending_engine,
)
from dwarf.engine.telemetry import TaskRun, Telemetry
from dwarf.engine.tree_writes import cancel_tree, delete_tree, run_tree_write
from dwarf.engine.tuning import SchedulerTuning
from dwarf.errors import (
    BadRequestError,
    ConflictError,
    EngineStateError,
    InvalidGraphError,
    NotFoundError,
    StoreError,
)
from dwarf.store.base import Row, SingleStatementTx, Store, Tx, silent_logger
from dwarf.store.shards import StoreSpec, open_stores, release_stores, resolve_specs
from dwarf.workflow.baggage import baggage_scope
from dwarf.workflow.durations import Duration, to_seconds
from dwarf.workflow.flow import Flow
from dwarf.workflow.graph import Graph
from dwarf.workflow.jsonvalue import check_json, check_text, checked_json_object
from dwarf.workflow.mermaid import history_mermaid
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
from dwarf.workflow.reducers import ReducerError, apply_changes, apply_with_reducers
from dwarf.workflow.status import TERMINAL_STATUSES, Status

__all__ = ["Engine"]

T = TypeVar("T")

_NEW, _STARTING, _STARTED, _STOPPED = "new", "starting", "started", "stopped"
_STOPPED_STATUSES = frozenset({*TERMINAL_STATUSES, Status.INTERRUPTED})
DEFAULT_WORKERS = 64
DEFAULT_WORKERS_PER_CONN = 8
DEFAULT_MAX_OPEN_CONNS = 8
DEFAULT_TIME_BUDGET = 120.0
DEFAULT_PRIORITY = 100
DEFAULT_LIST_LIMIT = 100
MAX_LIST_LIMIT = 1000
DEFAULT_DRAIN_TIMEOUT = 10.0
PURGE_LIMIT = 4096
REAP_BATCH = 500
SHARD_PROBE_TIMEOUT = 5.0
"""Seconds shard_info waits for one shard before reporting it unreachable."""


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
        self._dsn = ""
        self._host: Any = None
        self._hooks = HostHooks()  # the host's optional methods, resolved by set_host
        self._workers = DEFAULT_WORKERS
        self._num_shards = 1
        self._log = silent_logger()
        self._debug = False
        self._meter_provider: Any = None
        self._tracer_provider: Any = None
        # Off until startup resolves the providers.
        self._telemetry = Telemetry()
        self._test_name = ""
        self._max_open_conns = DEFAULT_MAX_OPEN_CONNS
        self._workers_per_conn = DEFAULT_WORKERS_PER_CONN
        self._time_budget = DEFAULT_TIME_BUDGET
        self._default_priority = DEFAULT_PRIORITY
        self._specs: list[StoreSpec] = []
        self._stores: list[Store] = []
        self._scheduler: Scheduler | None = None
        self._tuning = SchedulerTuning()
        self._waiters = FlowWaiters()
        self._flow_cache = FlowInfoCache()
        self._background: set[asyncio.Task[Any]] = set()
        self._reaping: set[int] = set()
        self._reap_requested: set[int] = set()
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

    # --- construction-time settings ---

    def _require_new(self, what: str) -> None:
        if self._phase != _NEW:
            raise EngineStateError(f"{what} can only be set before startup")

    def set_dsn(self, dsn: str) -> None:
        """The database: ``sqlite:///path`` or ``postgresql://...``; ``%d`` stands for the shard number."""
        self._require_new("the DSN")
        if not isinstance(dsn, str):
            raise BadRequestError("the DSN must be a string")
        self._dsn = dsn

    def set_host(self, host: Host) -> None:
        """The host that loads graphs, executes tasks and relays signals."""
        self._require_new("the host")
        for method in ("load_graph", "execute_task"):
            if not callable(getattr(host, method, None)):
                raise BadRequestError(f"the host has no {method} method")
        self._hooks = HostHooks.of(host)
        self._host = host

    def set_workers(self, n: int) -> None:
        """How many steps this engine runs at once (default 64).

        Zero makes an operations-only engine: it claims and runs no steps and needs no host unless it
        creates flows. Tools that inspect or steer flows (the CLI, the dashboard) run one of these beside
        the application's engines; a resume or a fork they record is run by the application's workers.
        """
        self._require_new("the number of workers")
        if n == 0 and not isinstance(n, bool):
            self._workers = 0
            return
        self._workers = _positive_int(n, "workers")

    def set_num_shards(self, n: int) -> None:
        """How many databases flows are spread over (default 1); the DSN must then contain ``%d``."""
        self._require_new("the number of shards")
        self._num_shards = _positive_int(n, "the number of shards")

    def set_logger(self, logger: logging.Logger | None) -> None:
        """Where the engine logs; None silences it (the default)."""
        self._require_new("the logger")
        self._log = logger if logger is not None else silent_logger()

    def set_debug_logger(self) -> None:
        """Log everything at DEBUG level to stderr (for development)."""
        self._require_new("the logger")
        logger = logging.getLogger("dwarf.engine.debug")
        logger.setLevel(logging.DEBUG)
        if not logger.handlers:
            logger.addHandler(logging.StreamHandler())
        self._log = logger
        self._debug = True

    def set_meter_provider(self, provider: Any) -> None:
        """The OpenTelemetry MeterProvider (default: the global one)."""
        self._require_new("the meter provider")
        self._meter_provider = provider

    def set_tracer_provider(self, provider: Any) -> None:
        """The OpenTelemetry TracerProvider (default: the global one)."""
        self._require_new("the tracer provider")
        self._tracer_provider = provider

    def set_in_test(self, name: str) -> None:
        """Use isolated databases for the test ``name`` (see docs/testing.md#without-pytest-set_in_test)."""
        self._require_new("test mode")
        if not isinstance(name, str) or not name:
            raise BadRequestError("the test name must be a non-empty string")
        self._test_name = name

    # --- live settings ---

    def set_max_open_conns(self, n: int) -> None:
        """The cap on connections per shard (default 8)."""
        self._max_open_conns = _positive_int(n, "max open connections")
        self._resize_pools()

    def set_workers_per_conn(self, n: int) -> None:
        """How many workers share one connection when sizing the pool (default 8)."""
        self._workers_per_conn = _positive_int(n, "workers per connection")
        self._resize_pools()

    def _resize_pools(self) -> None:
        if self._phase != _STARTED:
            return
        for store in self._stores:
            self._spawn(store.resize(self.pool_size))

    def set_time_budget(self, budget: Duration) -> None:
        """The default time budget of a step (default 2 minutes)."""
        seconds = to_seconds(budget, what="time budget")
        if not 0 < seconds <= MAX_TIME_BUDGET:
            raise BadRequestError(f"the time budget must be positive and at most {MAX_TIME_BUDGET:g} seconds")
        self._time_budget = seconds

    def set_scheduler_tuning(self, tuning: SchedulerTuning) -> None:
        """The timing knobs of claims, leases and housekeeping (see SchedulerTuning); applies at once."""
        if not isinstance(tuning, SchedulerTuning):
            raise BadRequestError("the scheduler tuning must be a SchedulerTuning")
        self._tuning = tuning
        if self._scheduler is not None:
            self._scheduler.retune(tuning)

    @property
    def scheduler_tuning(self) -> SchedulerTuning:
        """The timing knobs in force."""
        return self._tuning

    def set_default_priority(self, priority: int) -> None:
        """The priority of flows created with priority 0 (default 100; lower runs first)."""
        if _positive_int(priority, "the default priority") > MAX_PRIORITY:
            raise BadRequestError(f"the default priority must be at most {MAX_PRIORITY}")
        self._default_priority = priority

    @property
    def pool_size(self) -> int:
        """Connections per shard: min(ceil(workers / workers_per_conn), max_open_conns)."""
        return max(1, min(math.ceil(self._workers / self._workers_per_conn), self._max_open_conns))

    # --- lifecycle ---

    async def startup(self) -> None:
        """Open and migrate the shards and start the workers."""
        if self._phase == _STARTED:
            return
        if self._phase != _NEW:
            raise EngineStateError("an engine cannot be restarted; create a new one")
        if self._host is None and self._workers > 0:
            raise EngineStateError("set a host before startup (only an engine of 0 workers runs without)")
        self._phase = _STARTING
        try:
            self._telemetry = Telemetry.from_settings(self._meter_provider, self._tracer_provider)
            self._specs = resolve_specs(self._dsn, self._num_shards, self._test_name)
            # An operations-only engine (the CLI, the dashboard) looks at an existing dwarf database: it
            # must never create a file or a schema in whatever database it was pointed at.
            self._stores = await open_stores(
                self._specs, self.pool_size, migrate=self._workers > 0, log=self._log
            )
        except BaseException:
            self._phase = _NEW
            raise
        scheduler = self._scheduler = Scheduler(self, self._stores, self._workers, self._tuning)
        self._telemetry.attach(self._stores, lambda: scheduler.busy_workers)
        self._scheduler.start()
        self._phase = _STARTED
        for store in self._stores:
            # A purge whose reaper was interrupted by a shutdown is finished by the next engine.
            if int((await store.read("any_marked"))[0]["marked"]):
                self._start_reaper(store)
        started = self._hooks.engine_started
        if started is not None:
            try:
                await started(self)
            except BaseException:
                await self.shutdown(drain_timeout=0)
                raise
        self._log.debug("engine started with %d shard(s)", len(self._stores), extra={"flow": ""})

    async def shutdown(self, *, drain_timeout: float | None = None) -> None:
        """Stop claiming, let running steps finish (up to ``drain_timeout``), release the rest. Idempotent."""
        if self._phase != _STARTED:
            if self._phase == _NEW:
                self._phase = _STOPPED
            return
        self._phase = _STOPPED
        timeout = self.drain_timeout if drain_timeout is None else max(0.0, drain_timeout)
        if self._scheduler is not None:
            await self._scheduler.stop(timeout)
        stopped = self._hooks.engine_stopped
        if stopped is not None:
            with contextlib.suppress(Exception):
                await stopped(self)
        await self._close()

    async def _crash_for_test(self) -> None:
        """Stop like a killed process: no draining, no lease release (for tests of recovery)."""
        if self._phase != _STARTED:
            return
        self._phase = _STOPPED
        if self._scheduler is not None:
            await self._scheduler.abandon()
        await self._close()

    async def _close(self) -> None:
        for task in list(self._background):
            task.cancel()
        for task in list(self._background):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._waiters.wake_all()
        self._telemetry.close()
        await release_stores(self._specs, self._stores)
        self._stores = []

    async def __aenter__(self) -> Engine:
        await self.startup()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.shutdown()

    def _require_started(self) -> None:
        if self._phase != _STARTED:
            raise EngineStateError(
                "the engine is not started" if self._phase == _NEW else "the engine is stopped"
            )

    # --- internals used by the scheduler and executor ---

    def _store(self, shard: int) -> Store:
        if shard < 1 or shard > len(self._stores):
            raise NotFoundError("flow not found")
        return self._stores[shard - 1]

    async def _flow_info(self, store: Store, flow_id: int) -> FlowInfo | None:
        info = self._flow_cache.get(store.shard, flow_id)
        if info is not None:
            return info
        rows = await store.read("get_flow", flow_id=flow_id)
        if not rows:
            return None
        info = FlowInfo.from_row(store.shard, rows[0])
        self._flow_cache.put(info)
        return info

    async def _host_execute_task(self, task_url: str, flow: Flow, run: TaskRun | None = None) -> None:
        if run is None:
            await self._host.execute_task(task_url, flow)
            return
        with run.running():
            await self._host.execute_task(task_url, flow)

    async def _after_commit(self, info: FlowInfo, effects: Effects) -> None:
        self._telemetry.fan_in_merged(effects.merges)
        for child in effects.created:
            self._flow_cache.put(child)
        if effects.new_work:
            self._ring(info.shard)
        if self._scheduler is not None:
            for delay in effects.due_in:
                self._scheduler.ring_later(info.shard, delay)
        for flow_id in effects.woken:
            self._waiters.wake(info.shard, flow_id)
            self._signal(Signal(FLOW_STOPPED, info.shard, flow_id))
        if effects.stopped is not None:
            await self._flow_stopped(info, effects.stopped)

    def _note_arrival(self, store: Store, info: FlowInfo, spawn_id: int) -> None:
        if self._scheduler is not None:
            self._scheduler.note_arrival(store, info, spawn_id)

    def _ring(self, shard: int) -> None:
        if self._scheduler is not None:
            self._scheduler.ring(shard)
        self._signal(Signal(DOORBELL, shard))

    def _signal(self, signal: Signal) -> None:
        send = self._hooks.signal_peers
        if send is None:
            return
        self._telemetry.signal_sent(signal.op)
        self._spawn(self._send_signal(send, signal))

    async def _send_signal(self, send: Any, signal: Signal) -> None:
        token = sending_engine().set(self)
        try:
            await send(signal.op, encode_signal(signal))
        except Exception as error:
            flow = correlation_id(signal.shard, signal.flow_id) if signal.flow_id else ""
            self._log.warning("signal_peers failed: %s", error, extra={"flow": flow})
        finally:
            sending_engine().reset(token)

    def _spawn(self, coroutine: Any) -> None:
        task = asyncio.ensure_future(coroutine)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _flow_stopped(self, info: FlowInfo, status: Status) -> None:
        self._telemetry.flow_stopped(info, status)
        self._log.debug("flow %s %s", info.correlation_id, status.value, extra={"flow": info.correlation_id})
        notify = self._hooks.flow_stopped
        outcome: FlowOutcome | None = None
        if info.notify_on_stop and notify is not None:
            # Read the outcome before delete_on_completion can remove the flow.
            try:
                outcome = await self._outcome(self._store(info.shard), info.flow_id)
            except NotFoundError:
                outcome = FlowOutcome(status=status, state={})
        if status == Status.COMPLETED and info.delete_on_completion and info.parent_flow_id == 0:
            await self._delete_tree(self._store(info.shard), info.flow_id)
        self._waiters.wake(info.shard, info.flow_id)
        self._signal(Signal(FLOW_STOPPED, info.shard, info.flow_id))
        if outcome is not None and notify is not None:
            try:
                with baggage_scope(info.baggage):
                    await notify(info.key, outcome)
            except Exception as error:
                self._log.warning(
                    "flow_stopped hook failed for flow %s: %s",
                    info.correlation_id,
                    error,
                    extra={"flow": info.correlation_id},
                )

    async def deliver_signal(self, op: str, payload: bytes) -> None:
        """Apply a signal a peer replica sent through the host."""
        self._require_started()
        try:
            signal = decode_signal(op, payload)
        except (ValueError, UnicodeDecodeError) as error:
            raise BadRequestError(f"malformed signal: {error}") from error
        self._telemetry.signal_received(signal.op)
        if signal.op == DOORBELL:
            if self._scheduler is not None:
                self._scheduler.ring(signal.shard)
        elif signal.op == FLOW_STOPPED:
            self._waiters.wake(signal.shard, signal.flow_id)

    # --- key resolution ---

    async def _resolve_flow(self, flow_key: str) -> tuple[Store, Row]:
        """The store and row of the flow a key names; NotFoundError for every way the key can be wrong."""
        parsed = parse_key(flow_key, "flow")
        store = self._store_for_key(parsed)
        return store, await self._flow_by_key(store, parsed, "flow")

    @staticmethod
    async def _flow_by_key(store: Store, parsed: ParsedKey, what: str) -> Row:
        # The token is part of the lookup: a wrong token on an existing id costs what an unknown id costs
        # (one query, no row). The constant-time check after it is a second line of defence.
        rows = await store.read("get_flow_by_key", flow_id=parsed.id, flow_token=parsed.token)
        if not rows or not tokens_match(parsed.token, rows[0]["flow_token"]):
            raise NotFoundError(f"{what} not found")
        return rows[0]

    def _store_for_key(self, parsed: ParsedKey, what: str = "flow") -> Store:
        if not 1 <= parsed.shard <= len(self._stores):
            raise NotFoundError(f"{what} not found")
        return self._stores[parsed.shard - 1]

    def _pick_shard(self) -> Store:
        """A uniformly random shard among those that answered their last health check
        (docs/design.md#shards-and-placement)."""
        healthy = [store for store in self._stores if store.healthy]
        return random.choice(healthy or self._stores)

    # --- operations ---

    async def create(
        self,
        workflow_url: str,
        initial_state: Mapping[str, Any] | None = None,
        options: FlowOptions | None = None,
    ) -> str:
        """Start a flow of the graph at ``workflow_url`` and return its key."""
        self._require_started()
        if not isinstance(workflow_url, str) or not workflow_url:
            raise BadRequestError("the workflow URL must be a non-empty string")
        check_text(workflow_url, "the workflow URL")
        options = options if options is not None else FlowOptions()
        if not isinstance(options, FlowOptions):
            raise BadRequestError("options must be a FlowOptions")
        options.check()
        state = checked_json_object(initial_state, "initial state")
        check_json(options.baggage, "baggage")
        thread: tuple[Store, Row] | None = None
        if options.thread_key:
            thread = await self._resolve_thread(options.thread_key)
        graph = await self._load_graph(workflow_url, options.baggage)
        store = thread[0] if thread is not None else self._pick_shard()
        time_budget = to_seconds(options.time_budget) if options.time_budget is not None else 0.0
        thread_row = thread[1] if thread is not None else None
        policy = FlowPolicy(
            priority=options.priority or self._default_priority,
            fairness_key=options.fairness_key,
            fairness_weight=float(options.fairness_weight or 1.0),
            time_budget_ms=max(1, round((time_budget if time_budget > 0 else self._time_budget) * 1000)),
            notify_on_stop=options.notify_on_stop,
            delete_on_completion=options.delete_on_completion,
            baggage=options.baggage,
        )
        try:
            info = await self._insert_flow(
                store,
                graph,
                workflow_url,
                state,
                policy,
                thread_id=int(thread_row["thread_id"]) if thread_row else 0,
                thread_token=thread_row["thread_token"] if thread_row else "",
            )
        except StoreError as error:
            # The shard did not take the flow: place the next ones elsewhere until it answers again. This
            # one is not retried on another shard, because a lost answer may hide a committed insert. A
            # value the database refused says nothing about the shard's health.
            if error.transient:
                store.healthy = False
            raise
        self._ring(store.shard)
        return info.key

    async def _load_graph(self, workflow_url: str, baggage: Any) -> Graph:
        if self._host is None:
            raise EngineStateError("this engine has no host to load graphs from")
        with baggage_scope(baggage):
            graph = await self._host.load_graph(workflow_url)
        if graph is None:
            raise NotFoundError(f"workflow {workflow_url!r} not found")
        if not isinstance(graph, Graph):
            raise InvalidGraphError(
                f"the host returned a {type(graph).__name__} for {workflow_url!r}, not a Graph"
            )
        graph.validate()
        # Freeze a copy: the host may keep mutating its own Graph object.
        return Graph.from_json(graph.to_json())

    async def _insert_flow(
        self,
        store: Store,
        graph: Graph,
        workflow_url: str,
        state: Mapping[str, Any],
        policy: FlowPolicy,
        *,
        thread_id: int = 0,
        thread_token: str = "",
    ) -> FlowInfo:
        span, trace_parent = self._telemetry.open_flow_span(workflow_url)

        async def work(tx: Tx) -> FlowInfo:
            return await insert_flow(
                tx,
                store.shard,
                graph,
                workflow_url,
                state,
                policy,
                thread_id=thread_id,
                thread_token=thread_token,
                trace_parent=trace_parent,
            )

        # Creating a root flow is one statement (see insert_flow): no surrounding transaction needed.
        info = await work(SingleStatementTx(store))
        self._flow_cache.put(info)
        self._telemetry.flow_created(info, span)
        self._log.debug(
            "flow %s created (%s)", info.correlation_id, workflow_url, extra={"flow": info.correlation_id}
        )
        return info

    async def _resolve_thread(self, thread_key: str) -> tuple[Store, Row]:
        """A flow of the thread named by the thread key or by the key of any flow of the thread.

        The row's ``thread_id``/``thread_token`` identify the thread (its first flow's id and token).
        """
        parsed = parse_key(thread_key, "thread")
        store = self._store_for_key(parsed, "thread")
        return store, await self._flow_by_key(store, parsed, "thread")

    async def wait(self, flow_key: str, timeout: Duration | None = None) -> FlowOutcome:
        """Wait until the flow stops (completed, failed, cancelled or interrupted) and return its outcome.

        ``timeout`` bounds the whole call, database reads included: a slow or locked database makes it
        raise TimeoutError on time, not when the database answers; one that refuses connections makes it
        raise StoreError at once.
        """
        self._require_started()
        limit = None if timeout is None else to_seconds(timeout, what="timeout")
        if limit is None:
            return await self._wait(flow_key, None)
        return await _bounded(self._wait(flow_key, limit), limit, f"the flow did not stop within {limit:g}s")

    async def _wait(self, flow_key: str, limit: float | None) -> FlowOutcome:
        store, row = await self._resolve_flow(flow_key)
        flow_id = int(row["flow_id"])
        loop = asyncio.get_running_loop()
        deadline = None if limit is None else loop.time() + limit
        event = self._waiters.register(store.shard, flow_id)
        try:
            # Pushed wake-ups (local, or a peer's flow-stopped signal) end the wait; this slow poll only
            # covers signals that were lost.
            poll = 1.0
            current: Row | None = row
            while True:
                self._require_started()
                event.clear()
                if current is None:
                    rows = await store.read("get_flow", flow_id=flow_id)
                    if not rows:
                        raise NotFoundError("flow not found")
                    current = rows[0]
                if Status(current["status"]) in _STOPPED_STATUSES:
                    return await self._outcome(store, flow_id, current)
                current = None
                remaining = None if deadline is None else deadline - loop.time()
                if remaining is not None and remaining <= 0:
                    raise TimeoutError(f"flow {correlation_id(store.shard, flow_id)} did not stop in time")
                pause = poll if remaining is None else min(poll, remaining)
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(pause):
                        await event.wait()
                poll = min(poll * 2, 2.0)
        finally:
            self._waiters.unregister(store.shard, flow_id, event)

    async def _flow_status(self, store: Store, flow_id: int) -> Status:
        rows = await store.read("flow_status", flow_id=flow_id)
        if not rows:
            raise NotFoundError("flow not found")
        return Status(rows[0]["status"])

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
        self._require_started()
        store, row = await self._resolve_flow(flow_key)
        return await self._outcome(store, int(row["flow_id"]), row)

    async def _outcome(self, store: Store, flow_id: int, row: Row | None = None) -> FlowOutcome:
        if row is None:
            rows = await store.read("get_flow", flow_id=flow_id)
            if not rows:
                raise NotFoundError("flow not found")
            row = rows[0]
        status = Status(row["status"])
        if status == Status.COMPLETED:
            state = json.loads(row["final_state"])
        else:
            latest = await store.read("latest_step", flow_id=flow_id)
            state = {}
            if latest:
                state = apply_changes(json.loads(latest[0]["state"]), json.loads(latest[0]["changes"]))
        payload = json.loads(row["interrupt_payload"]) if status == Status.INTERRUPTED else {}
        return FlowOutcome(
            status=status,
            state=state,
            error=row["error"],
            interrupt_payload=payload,
            cancel_reason=row["cancel_reason"],
        )

    async def history(self, flow_key: str) -> list[FlowStep]:
        """The flow's steps in depth order (then by id), with navigation keys."""
        self._require_started()
        store, row = await self._resolve_flow(flow_key)
        return await build_history(store, row)

    async def history_mermaid(self, flow_key: str) -> str:
        """The executed steps of the flow as a Mermaid flowchart."""
        return history_mermaid(await self.history(flow_key))

    async def step(self, step_key: str) -> FlowStep:
        """One step by its key."""
        self._require_started()
        parsed = parse_key(step_key, "step")
        store = self._store_for_key(parsed, "step")
        return await load_step(store, parsed)

    async def list(self, query: Query | None = None) -> tuple[list[FlowSummary], str]:
        """A page of flows, newest first, and the cursor of the next page ("" at the end).

        Flows are in one total order across shards: created_at descending, then shard ascending, then
        flow id descending. Each shard pages by the same order in SQL, and the cursor is the position of
        the page's last flow in it, so every flow that existed when paging began is listed exactly once
        however flows are created meanwhile (on PostgreSQL ids and creation times disagree under
        concurrent inserts: neither alone is a usable order).
        """
        self._require_started()
        query = query if query is not None else Query()
        if not isinstance(query, Query):
            raise BadRequestError("query must be a Query")
        query.check()
        limit = min(query.limit or DEFAULT_LIST_LIMIT, MAX_LIST_LIMIT)
        after = _decode_cursor(query.cursor, len(self._stores))
        stores = self._stores if not query.shard else [self._store_for_shard_filter(query.shard)]
        stores, params = await self._filter(query, stores)
        params["limit"] = limit + 1
        candidates: builtins.list[tuple[int, Row]] = []
        for store in stores:
            before_created, through_id = _page_bound(after, store.shard)
            rows = await store.read(
                "list_flows", before_created=before_created, through_id=through_id, **params
            )
            candidates.extend((store.shard, row) for row in rows)
        candidates.sort(key=lambda item: _list_order(*item))
        page = candidates[:limit]
        # Each shard gave up to limit + 1 rows: more than limit in all means some shard has more.
        cursor = ""
        if len(candidates) > limit:
            shard, last = page[-1]
            cursor = _encode_cursor(_ListPosition(float(last["created_at"]), shard, int(last["flow_id"])))
        summaries = [self._summary(shard, row) for shard, row in page]
        return summaries, cursor

    async def _filter(
        self, query: Query, stores: builtins.list[Store]
    ) -> tuple[builtins.list[Store], dict[str, Any]]:
        """The statement parameters of a Query's filters, and the shards it can match on."""
        thread_id, thread_token = 0, ""
        if query.thread_key:
            try:
                thread_store, member = await self._resolve_thread(query.thread_key)
            except NotFoundError:
                return [], {}
            thread_id, thread_token = int(member["thread_id"]), member["thread_token"]
            stores = [s for s in stores if s is thread_store]
        params = {
            "include_subgraphs": 1 if query.include_subgraphs else 0,
            "status": query.status,
            "workflow_url": query.workflow_url,
            "workflow_name": query.workflow_name,
            "thread_id": thread_id,
            "thread_token": thread_token,
            "fairness_key": query.fairness_key,
            "priority": query.priority,
            "older_than": to_seconds(query.older_than) if query.older_than is not None else -1.0,
            "newer_than": to_seconds(query.newer_than) if query.newer_than is not None else -1.0,
            "task_name": query.task_name,
            "search": query.search,
            "pattern": "%" + _like_escape(query.search) + "%",
        }
        return stores, params

    def _store_for_shard_filter(self, shard: int) -> Store:
        if shard > len(self._stores):
            raise BadRequestError(f"there is no shard {shard}")
        return self._stores[shard - 1]

    @staticmethod
    def _summary(shard: int, row: Row) -> FlowSummary:
        return FlowSummary(
            flow_key=format_key(shard, int(row["flow_id"]), row["flow_token"]),
            thread_key=format_key(shard, int(row["thread_id"]), row["thread_token"]),
            workflow_url=row["workflow_url"],
            workflow_name=row["workflow_name"],
            status=Status(row["status"]),
            task_name=row["task_name"],
            error=row["error"],
            cancel_reason=row["cancel_reason"],
            created_at=utc(row["created_at"]),
            started_at=optional_utc(row["started_at"]),
            updated_at=utc(row["updated_at"]),
            priority=int(row["priority"]),
            fairness_key=row["fairness_key"],
            subgraph=int(row["parent_flow_id"]) != 0,
        )

    async def resume(self, flow_key: str, resume_data: Mapping[str, Any] | None = None) -> None:
        """Re-run the interrupted step of an interrupted flow; its ``interrupt`` call returns the data."""
        self._require_started()
        data = checked_json_object(resume_data, "resume data")
        store, row = await self._resolve_flow(flow_key)
        if int(row["parent_flow_id"]):
            raise BadRequestError("resume the root flow, not a child flow")
        flow_id = int(row["flow_id"])
        effects = Effects()

        async def work(tx: Tx) -> None:
            locked = await tx.fetch_one("get_flow_for_update", flow_id=flow_id)
            if locked is None:
                raise NotFoundError("flow not found")
            if locked["status"] != Status.INTERRUPTED.value:
                raise ConflictError(f"the flow is {locked['status']}, not interrupted")
            parked = await tx.fetch_all("tree_interrupted_steps", root_flow_id=flow_id)
            if not parked:
                raise ConflictError("the flow has no interrupted step")
            # Resume the interrupt the caller was shown (its payload is the flow's), else the oldest.
            surfaced = int(locked["surfaced_step_id"])
            chosen = next((p for p in parked if int(p["step_id"]) == surfaced), parked[0])
            await tx.execute("resume_step", step_id=chosen["step_id"], resume_data=dumps(data))
            await tx.execute("resume_interrupted_flows_of_tree", root_flow_id=flow_id)
            rest = [p for p in parked if p is not chosen]
            if rest:
                # Another step of the tree is parked too: surface it at once (one interrupt at a time).
                following = rest[0]
                await surface_interrupt(
                    tx,
                    int(following["flow_id"]),
                    json.loads(following["interrupt_payload"]),
                    int(following["step_id"]),
                    effects,
                )

        await store.run(work)
        resumed = correlation_id(store.shard, flow_id)
        self._log.debug("flow %s resumed", resumed, extra={"flow": resumed})
        self._ring(store.shard)
        for woken in effects.woken:
            self._waiters.wake(store.shard, woken)
            self._signal(Signal(FLOW_STOPPED, store.shard, woken))

    async def cancel(self, flow_key: str, reason: str = "") -> None:
        """Cancel a running or interrupted root flow and its whole tree."""
        self._require_started()
        if not isinstance(reason, str):
            raise BadRequestError("the reason must be a string")
        check_text(reason, "the reason")
        store, row = await self._resolve_flow(flow_key)
        if int(row["parent_flow_id"]):
            raise BadRequestError("cancel the root flow, not a child flow")
        flow_id = int(row["flow_id"])
        # Atomic over the whole tree even while its steps commit (a child flow being created, say):
        # see tree_writes for the lock order and why the write is retried.
        await run_tree_write(store, lambda tx: cancel_tree(tx, flow_id, reason), "cancel")
        info = await self._flow_info(store, flow_id)
        if info is not None:
            await self._flow_stopped(info, Status.CANCELLED)

    async def continue_thread(
        self, thread_key: str, additional_state: Mapping[str, Any] | None = None
    ) -> str:
        """Start the next flow of a thread from its latest completed flow's final state."""
        self._require_started()
        extra = checked_json_object(additional_state, "additional state")
        store, first = await self._resolve_thread(thread_key)
        rows = await store.read("latest_completed_in_thread", thread_id=int(first["thread_id"]))
        if not rows:
            raise NotFoundError("the thread has no completed flow")
        latest = rows[0]
        graph = await self._load_graph(latest["workflow_url"], json.loads(latest["baggage"]))
        try:
            state = apply_with_reducers(json.loads(latest["final_state"]), extra, graph.reducers)
        except ReducerError as error:
            raise BadRequestError(str(error)) from error
        info = await self._insert_flow(
            store,
            graph,
            latest["workflow_url"],
            state,
            policy_of_row(latest),
            thread_id=int(latest["thread_id"]),
            thread_token=latest["thread_token"],
        )
        self._ring(store.shard)
        return info.key

    async def fork(self, step_key: str, state_overrides: Mapping[str, Any] | None = None) -> str:
        """Start a new flow that replays a stopped flow up to a step and re-runs that step with overrides.

        The steps before the chosen one (every shallower step) are copied into a new flow, the chosen step
        is queued again with ``state_overrides`` applied to its input, and the original flow is never
        modified. A step inside a child flow forks the whole tree down to it. The fork inherits
        scheduling and baggage, not the notify/delete flags. Returns the new root flow's key.
        """
        self._require_started()
        overrides = checked_json_object(state_overrides, "state overrides")
        parsed = parse_key(step_key, "step")
        store = self._store_for_key(parsed, "step")
        # The token is part of the lookup (see _flow_by_key).
        rows = await store.read("get_step_with_flow_by_key", step_id=parsed.id, step_token=parsed.token)
        if not rows or int(rows[0]["purge_marked"]) or not tokens_match(parsed.token, rows[0]["step_token"]):
            raise NotFoundError("step not found")
        target = rows[0]
        chain: builtins.list[Row] = []
        flow_id = int(target["flow_id"])
        while flow_id:
            found = await store.read("get_flow", flow_id=flow_id)
            if not found:
                raise NotFoundError("step not found")
            chain.append(found[0])
            flow_id = int(found[0]["parent_flow_id"])
        chain.reverse()
        root = chain[0]
        if Status(root["status"]) not in TERMINAL_STATUSES:
            raise ConflictError(f"only a stopped flow can be forked; this one is {root['status']}")
        base = policy_of_row(root)
        policy = FlowPolicy(
            priority=base.priority,
            fairness_key=base.fairness_key,
            fairness_weight=base.fairness_weight,
            time_budget_ms=base.time_budget_ms,
            baggage=base.baggage,
        )
        opened = self._telemetry.open_fork_spans([flow["workflow_url"] for flow in chain])
        trace_parents = [trace_parent for _, trace_parent in opened]
        created = await store.run(
            lambda tx: fork_chain(tx, store.shard, chain, target, overrides, policy, trace_parents)
        )
        for info, (span, _) in zip(created, opened, strict=True):
            self._flow_cache.put(info)
            self._telemetry.flow_created(info, span)
        self._ring(store.shard)
        return created[0].key

    async def delete(self, flow_key: str) -> None:
        """Delete a stopped root flow and its whole tree, steps included."""
        self._require_started()
        store, row = await self._resolve_flow(flow_key)
        if int(row["parent_flow_id"]):
            raise BadRequestError("delete the root flow, not a child flow")
        flow_id = int(row["flow_id"])
        await run_tree_write(store, lambda tx: delete_tree(tx, flow_id), "delete")
        self._flow_cache.discard(store.shard, flow_id)

    async def _delete_tree(self, store: Store, flow_id: int) -> None:
        async def work(tx: Tx) -> None:
            await tx.execute("delete_flow_steps", root_flow_id=flow_id)
            await tx.execute("delete_flow_rows", root_flow_id=flow_id)

        await store.run(work)
        self._flow_cache.discard(store.shard, flow_id)

    async def purge(self, query: Query) -> int:
        """Mark up to 4096 matching stopped root flows (with their trees) for deletion; return how many.

        Marked flows disappear from list, snapshot and history at once; a background reaper deletes their
        rows in bounded batches. Call again to purge more.
        """
        self._require_started()
        if not isinstance(query, Query):
            raise BadRequestError("query must be a Query")
        query.check()
        stores = self._stores if not query.shard else [self._store_for_shard_filter(query.shard)]
        stores, params = await self._filter(query, stores)
        remaining = PURGE_LIMIT
        marked = 0
        for store in stores:
            if remaining <= 0:
                break
            rows = await store.write("mark_for_purge", limit=remaining, **params)
            roots = sum(1 for row in rows if int(row["parent_flow_id"]) == 0)
            for row in rows:
                self._flow_cache.discard(store.shard, int(row["flow_id"]))
            marked += roots
            remaining -= roots
            if rows:
                self._start_reaper(store)
        return marked

    def _start_reaper(self, store: Store) -> None:
        # A reaper that is about to finish must not miss flows marked meanwhile: it checks this flag,
        # without awaiting in between, before it stops.
        self._reap_requested.add(store.shard)
        if store.shard in self._reaping:
            return
        self._reaping.add(store.shard)
        self._spawn(self._reap(store))

    async def _reap(self, store: Store) -> None:
        """Delete the rows of flows marked for deletion, a bounded batch per transaction."""
        try:
            while self._phase == _STARTED:
                self._reap_requested.discard(store.shard)
                deleted = await store.run(_reap_batch)
                while deleted and self._phase == _STARTED:
                    deleted = await store.run(_reap_batch)
                if store.shard not in self._reap_requested:
                    return
        except Exception as error:
            self._log.warning("reaping shard %d failed: %s", store.shard, error, extra={"flow": ""})
        finally:
            self._reaping.discard(store.shard)

    async def fingerprint(self, flow_key: str) -> tuple[str, str]:
        """A token that changes whenever anything observable about the flow changes, and its status."""
        self._require_started()
        store, row = await self._resolve_flow(flow_key)
        rows = await store.read("flow_fingerprint", flow_id=int(row["flow_id"]))
        if not rows:
            raise NotFoundError("flow not found")
        data = rows[0]
        material = f"{data['status']}|{data['flow_version']}|{data['step_count']}|{data['step_versions']}"
        digest = hashlib.sha256(material.encode()).hexdigest()[:24]
        return digest, data["status"]

    async def shard_info(self) -> builtins.list[ShardSummary]:
        """Per shard: ping latency and the number of flows and steps, or the error.

        Shards are probed at once, each within ``SHARD_PROBE_TIMEOUT`` seconds, so a dead shard costs
        the call no more than that and its error shows beside the others' figures.
        """
        self._require_started()
        return list(await asyncio.gather(*(self._probe_shard(store) for store in self._stores)))

    async def _probe_shard(self, store: Store) -> ShardSummary:
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(SHARD_PROBE_TIMEOUT):
                started = loop.time()
                await store.read("ping")
                latency = loop.time() - started
                counts = (await store.read("count_rows"))[0]
        except Exception as error:
            store.healthy = False
            message = "no answer within the probe timeout" if isinstance(error, TimeoutError) else str(error)
            return ShardSummary(shard=store.shard, error=message or type(error).__name__)
        store.healthy = True
        return ShardSummary(
            shard=store.shard,
            latency_ms=round(latency * 1000),
            steps=int(counts["steps"]),
            flows=int(counts["flows"]),
        )


async def _bounded(work: Awaitable[T], limit: float, message: str) -> T:
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


async def _reap_batch(tx: Tx) -> int:
    """Delete one bounded batch of marked rows: steps first, then the flows left without steps."""
    deleted = await tx.execute("reap_marked_steps", batch=REAP_BATCH)
    if not deleted:
        deleted = await tx.execute("reap_marked_flows", batch=REAP_BATCH)
    return deleted


def _like_escape(text: str) -> str:
    """``text`` as a LIKE pattern (with ESCAPE '!') that matches itself literally."""
    return text.replace("!", "!!").replace("%", "!%").replace("_", "!_")


@dataclass(frozen=True, slots=True)
class _ListPosition:
    """Where a listing stopped: the last flow returned, by its place in list's total order."""

    created_at: float
    shard: int
    flow_id: int


def _list_order(shard: int, row: Row) -> tuple[float, int, int]:
    """The sort key of list's total order: created_at descending, shard ascending, flow id descending."""
    return (-float(row["created_at"]), shard, -int(row["flow_id"]))


def _page_bound(after: _ListPosition | None, shard: int) -> tuple[float, int]:
    """The (created_at, flow_id) bound, inclusive, of the rows of ``shard`` that come after ``after``.

    In list's order, a flow of a lower shard with the same created_at came before the position, one of a
    higher shard comes after it, and on the position's own shard only lower ids come after it. Ids are
    at least 1, so a bound id of 0 admits no flow of that exact created_at.
    """
    if after is None:
        return sys.float_info.max, MAX_ID
    if shard < after.shard:
        return after.created_at, 0
    if shard == after.shard:
        return after.created_at, after.flow_id - 1
    return after.created_at, MAX_ID


_CURSOR_FIELDS = frozenset({"c", "s", "i"})
MAX_CURSOR_LENGTH = 200
"""The longest cursor list accepts (the ones it writes are at most about 105 characters)."""


def _encode_cursor(position: _ListPosition) -> str:
    """The opaque cursor of a position. JSON writes a float by its repr, which reads back exactly."""
    body = json.dumps(
        {"c": position.created_at, "s": position.shard, "i": position.flow_id}, separators=(",", ":")
    )
    return base64.urlsafe_b64encode(body.encode()).decode().rstrip("=")


def _decode_cursor(cursor: object, num_shards: int) -> _ListPosition | None:
    """The position a cursor names (None for ""); BadRequestError for anything but a cursor list wrote.

    A cursor comes back from outside, so it is read defensively: its length is bounded before decoding,
    every error of decoding is caught (huge numbers, deep nesting, bad base64 or UTF-8), and its shape
    is checked field by field: a flat object of exactly c (a finite number), s (a shard of this engine)
    and i (a positive 64-bit id).
    """
    if isinstance(cursor, str) and not cursor:
        return None
    if not isinstance(cursor, str) or len(cursor) > MAX_CURSOR_LENGTH or not cursor.isascii():
        raise BadRequestError("malformed cursor")
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        raw = base64.b64decode(padded, altchars=b"-_", validate=True)
        body = json.loads(raw.decode("utf-8"), parse_constant=_refuse_constant)
    # binascii.Error and UnicodeDecodeError are ValueErrors.
    except (ValueError, TypeError, RecursionError, OverflowError) as error:
        raise BadRequestError("malformed cursor") from error
    if not isinstance(body, dict) or set(body) != _CURSOR_FIELDS:
        raise BadRequestError("malformed cursor")
    created_at, shard, flow_id = body["c"], body["s"], body["i"]
    if (
        not isinstance(created_at, float)
        or not math.isfinite(created_at)
        or type(shard) is not int
        or not 1 <= shard <= num_shards
        or type(flow_id) is not int
        or not 1 <= flow_id <= MAX_ID
    ):
        raise BadRequestError("malformed cursor")
    return _ListPosition(created_at, shard, flow_id)


def _refuse_constant(name: str) -> Any:
    """json.loads hook: NaN and Infinity are not JSON, and no cursor holds them."""
    raise ValueError(f"{name} in a cursor")
