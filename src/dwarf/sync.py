"""SyncEngine: the engine for code without an event loop (scripts, Django or Flask views, worker threads).

It runs an ordinary ``Engine`` on an event loop in a background thread of its own and offers the same
operations, under the same names and signatures, as blocking calls::

    with SyncEngine(host=host, dsn="sqlite:///flows.db") as engine:
        key, outcome = engine.run("checkout", {"amount": 42}, timeout=30)

Exceptions arrive with their own types (``NotFoundError``, ``TimeoutError`` carrying ``flow_key``, ...).
Any number of threads may call one SyncEngine at once; the calls run concurrently on the engine's loop.

A SyncEngine refuses (EngineStateError) to be called from a thread that runs an event loop: the call would
stall that loop, or deadlock if it is the engine's own loop (an async task handler of this engine). Async
code uses ``Engine`` directly, or hands the blocking call to a thread with ``asyncio.to_thread``. Sync task
handlers run in worker threads, so they may call the SyncEngine that runs them.
"""

from __future__ import annotations

import asyncio
import builtins
import concurrent.futures
import contextlib
import signal
import threading
from collections.abc import Callable, Coroutine, Mapping
from concurrent.futures import Future
from types import TracebackType
from typing import Any, TypeVar, Unpack

from dwarf.engine import serving
from dwarf.engine.engine import Engine
from dwarf.engine.reencode import ReencodeReport
from dwarf.engine.settings import EngineSettings
from dwarf.errors import EngineStateError
from dwarf.workflow.durations import Duration
from dwarf.workflow.limits import Limit, LimitScope
from dwarf.workflow.progress import FlowActivity, FlowWait
from dwarf.workflow.records import FlowOptions, FlowOutcome, FlowStep, FlowSummary, Query, ShardSummary
from dwarf.workflow.schedules import CatchUp, Schedule

__all__ = ["SyncEngine"]

_T = TypeVar("_T")


_NEW, _STARTED, _STOPPING, _STOPPED = "new", "started", "stopping", "stopped"


class SyncEngine:
    """A blocking facade over ``Engine``; each keyword is an ``Engine`` setting (``host``, ``dsn``, ...).

    ``startup``/``shutdown`` (or ``with``) start and stop both the engine and its thread. The wrapped
    async engine is ``engine``: set construction-time settings on it before ``startup`` if keywords do not
    suit, but call its coroutines only from a task running on its loop.
    """

    def __init__(self, **settings: Unpack[EngineSettings]) -> None:
        self._engine = Engine(**settings)
        # Guards the phase and the submission of calls, so that no call reaches a loop that is closing.
        self._lock = threading.Lock()
        self._phase = _NEW
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._stopped = threading.Event()

    @property
    def engine(self) -> Engine:
        """The async engine this facade drives."""
        return self._engine

    # --- lifecycle ---

    def startup(self) -> None:
        """Start the engine's thread and the engine (opening and migrating the databases)."""
        _refuse_inside_event_loop()
        with self._lock:
            if self._phase == _STARTED:
                return
            if self._phase != _NEW:
                raise EngineStateError("an engine cannot be restarted; create a new one")
            loop, thread = _start_loop_thread()
            try:
                _wait_for(_submit(self._engine.startup(), loop))
            except BaseException:
                # The engine itself stays new after a failed startup (unless a host hook failed): another
                # startup gets a fresh thread.
                _stop_loop_thread(loop, thread)
                raise
            self._loop, self._thread = loop, thread
            self._phase = _STARTED

    def shutdown(self, *, drain_timeout: float | None = None) -> None:
        """Stop the engine (running steps get ``drain_timeout`` seconds to finish) and its thread.

        Idempotent; a caller that arrives while another thread shuts down waits until it is done. Calls
        still blocked in ``wait`` raise EngineStateError.
        """
        _refuse_inside_event_loop()
        with self._lock:
            phase = self._phase
            if phase == _NEW:
                self._phase = _STOPPED
                self._stopped.set()
                return
            if phase == _STARTED:
                self._phase = _STOPPING
            loop, thread = self._loop, self._thread
        if phase != _STARTED:
            self._stopped.wait()
            return
        assert loop is not None and thread is not None
        try:
            _wait_for(_submit(self._engine.shutdown(drain_timeout=drain_timeout), loop))
        finally:
            _stop_loop_thread(loop, thread)
            with self._lock:
                self._phase = _STOPPED
                self._loop = self._thread = None
            self._stopped.set()

    def serve(self, stop: threading.Event | None = None, **options: Unpack[serving.ServeOptions]) -> None:
        """Run as a worker, blocking: start (unless started), run until SIGTERM/SIGINT or until ``stop`` is
        set, then drain and shut down, thread included. The options are ``Engine.serve``'s; signals are
        handled only when this is the main thread (another thread stops it with ``stop``).
        """
        _refuse_inside_event_loop()
        stop = threading.Event() if stop is None else stop
        reasons: builtins.list[str] = []

        def on_signal(signum: int) -> None:
            reasons.append(signal.Signals(signum).name)
            stop.set()

        handle = options.get("handle_signals", True)
        options["handle_signals"] = False  # the service runs on the engine's thread: signals are handled here
        service = serving.Service(self._engine, **options)
        with serving.stop_on_signals(on_signal) if handle else contextlib.nullcontext(False):
            try:
                self.startup()
                loop = self._loop
                assert loop is not None
                served = _submit(service.run(), loop)
                try:
                    # Bounded waits: a signal handler runs between them even where a blocked wait would
                    # not let it.
                    while not served.done() and not stop.wait(0.1):
                        pass
                finally:
                    reason = reasons[0] if reasons else "stop requested"
                    loop.call_soon_threadsafe(service.request_stop, reason)
                    _wait_for(served)
            finally:
                self.shutdown()

    def __enter__(self) -> SyncEngine:
        self.startup()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.shutdown()

    def _call(self, operation: Callable[[], Coroutine[Any, Any, _T]]) -> _T:
        _refuse_inside_event_loop()
        with self._lock:
            if self._phase != _STARTED or self._loop is None:
                raise EngineStateError(
                    "the engine is not started" if self._phase == _NEW else "the engine is stopped"
                )
            future = _submit(operation(), self._loop)
        result: _T = _wait_for(future)
        return result

    # --- live settings ---

    def set_max_open_conns(self, n: int) -> None:
        """The cap on connections per shard (see ``Engine.set_max_open_conns``)."""
        self._apply_setting(self._engine.set_max_open_conns, n)

    def set_workers_per_conn(self, n: int) -> None:
        """How many workers share one connection (see ``Engine.set_workers_per_conn``)."""
        self._apply_setting(self._engine.set_workers_per_conn, n)

    def set_time_budget(self, budget: Duration) -> None:
        """The default time budget of a step (see ``Engine.set_time_budget``)."""
        self._apply_setting(self._engine.set_time_budget, budget)

    def set_default_priority(self, priority: int) -> None:
        """The priority of flows created with priority 0 (see ``Engine.set_default_priority``)."""
        self._apply_setting(self._engine.set_default_priority, priority)

    def set_retain_for(self, retain_for: Duration | None) -> None:
        """How long a root flow is kept once it ended (see ``Engine.set_retain_for``)."""
        self._apply_setting(self._engine.set_retain_for, retain_for)

    def set_deletion_grace(self, grace: Duration) -> None:
        """How long a delete_on_completion flow is kept once it completed (``Engine.set_deletion_grace``)."""
        self._apply_setting(self._engine.set_deletion_grace, grace)

    def _apply_setting(self, setter: Callable[[Any], None], value: Any) -> None:
        if self._phase != _STARTED:
            setter(value)
            return

        # A running engine may resize its pools in response, which must happen on its own loop.
        async def apply() -> None:
            setter(value)

        self._call(apply)

    # --- operations (blocking twins of Engine's) ---

    def create(
        self,
        workflow_url: str,
        initial_state: Mapping[str, Any] | None = None,
        options: FlowOptions | None = None,
    ) -> str:
        """Start a flow of the graph at ``workflow_url`` and return its key."""
        return self._call(lambda: self._engine.create(workflow_url, initial_state, options))

    def wait(self, flow_key: str, timeout: Duration | None = None) -> FlowOutcome:
        """Block until the flow stops (or TimeoutError after ``timeout``) and return its outcome."""
        return self._call(lambda: self._engine.wait(flow_key, timeout))

    def run(
        self,
        workflow_url: str,
        initial_state: Mapping[str, Any] | None = None,
        options: FlowOptions | None = None,
        timeout: Duration | None = None,
    ) -> tuple[str, FlowOutcome]:
        """Create a flow and wait for it to stop; a timeout raises TimeoutError carrying ``flow_key``."""
        return self._call(lambda: self._engine.run(workflow_url, initial_state, options, timeout))

    def poll(self, flow_key: str, timeout: Duration | None = None) -> FlowOutcome:
        """The flow's outcome if it stopped (waiting up to ``timeout`` for that), else ``Status.RUNNING``;
        never TimeoutError."""
        return self._call(lambda: self._engine.poll(flow_key, timeout))

    def snapshot(self, flow_key: str) -> FlowOutcome:
        """The flow's outcome as of now."""
        return self._call(lambda: self._engine.snapshot(flow_key))

    def history(self, flow_key: str) -> builtins.list[FlowStep]:
        """The flow's steps."""
        return self._call(lambda: self._engine.history(flow_key))

    def history_mermaid(self, flow_key: str) -> str:
        """The executed steps of the flow as a Mermaid flowchart."""
        return self._call(lambda: self._engine.history_mermaid(flow_key))

    def why(self, flow_key: str) -> builtins.list[FlowWait]:
        """Why the flow is not moving (``Engine.why``)."""
        return self._call(lambda: self._engine.why(flow_key))

    def activity(self, window: Duration = 86400.0, *, buckets: int = 24) -> FlowActivity:
        """Root flows created lately, by status and over time (``Engine.activity``)."""
        return self._call(lambda: self._engine.activity(window, buckets=buckets))

    def reencode(self, *, batch: int = 200) -> ReencodeReport:
        """Write stored values again with the current codecs (``Engine.reencode``)."""
        return self._call(lambda: self._engine.reencode(batch=batch))

    def step(self, step_key: str) -> FlowStep:
        """One step by its key."""
        return self._call(lambda: self._engine.step(step_key))

    def list(self, query: Query | None = None) -> tuple[builtins.list[FlowSummary], str]:
        """A page of flows matching ``query`` and the cursor of the next page."""
        return self._call(lambda: self._engine.list(query))

    def resume(self, flow_key: str, resume_data: Mapping[str, Any] | None = None) -> None:
        """Resume an interrupted flow."""
        self._call(lambda: self._engine.resume(flow_key, resume_data))

    def signal(self, flow_key: str, name: str, data: Mapping[str, Any] | None = None) -> None:
        """Send a signal to a flow (see ``Engine.signal``)."""
        self._call(lambda: self._engine.signal(flow_key, name, data))

    def cancel(self, flow_key: str, reason: str = "") -> None:
        """Cancel a flow that has not stopped."""
        self._call(lambda: self._engine.cancel(flow_key, reason))

    def continue_thread(self, thread_key: str, additional_state: Mapping[str, Any] | None = None) -> str:
        """Start the next flow of a thread and return its key."""
        return self._call(lambda: self._engine.continue_thread(thread_key, additional_state))

    def fork(self, step_key: str, state_overrides: Mapping[str, Any] | None = None) -> str:
        """Start a new flow from a step of an existing one and return its key."""
        return self._call(lambda: self._engine.fork(step_key, state_overrides))

    def delete(self, flow_key: str) -> None:
        """Delete a stopped root flow and its tree."""
        self._call(lambda: self._engine.delete(flow_key))

    def purge(self, query: Query) -> int:
        """Mark matching stopped root flows for deletion; return how many."""
        return self._call(lambda: self._engine.purge(query))

    def fingerprint(self, flow_key: str) -> tuple[str, str]:
        """A token that changes whenever anything observable about the flow changes, and its status."""
        return self._call(lambda: self._engine.fingerprint(flow_key))

    def limit(
        self,
        key: str | Callable[..., Any],
        *,
        concurrency: int | None = None,
        rate: float | None = None,
        burst: int | None = None,
        scope: LimitScope | str | None = None,
    ) -> None:
        """Limit the steps of a fairness key or task URL (``Engine.limit``, docs/limits.md)."""
        self._call(
            lambda: self._engine.limit(key, concurrency=concurrency, rate=rate, burst=burst, scope=scope)
        )

    def clear_limit(self, key: str | Callable[..., Any], *, scope: LimitScope | str | None = None) -> bool:
        """Remove the limit of a fairness key or task URL; True if there was one."""
        return self._call(lambda: self._engine.clear_limit(key, scope=scope))

    def list_limits(self) -> builtins.list[Limit]:
        """Every limit, per shard, with its running steps and rate tokens now (``Engine.list_limits``)."""
        return self._call(self._engine.list_limits)

    def shard_info(self) -> builtins.list[ShardSummary]:
        """Per shard: latency and counts, or the error."""
        return self._call(self._engine.shard_info)

    def deliver_signal(self, op: str, payload: bytes) -> None:
        """Apply a signal a peer replica sent."""
        self._call(lambda: self._engine.deliver_signal(op, payload))

    # --- schedules (docs/schedules.md) ---

    def schedule(
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
        """Create or change the schedule ``name`` and return it (``Engine.schedule``)."""
        return self._call(
            lambda: self._engine.schedule(
                name,
                workflow_url,
                cron=cron,
                every=every,
                state=state,
                timezone=timezone,
                catch_up=catch_up,
                options=options,
            )
        )

    def get_schedule(self, name: str) -> Schedule:
        """The schedule ``name``."""
        return self._call(lambda: self._engine.get_schedule(name))

    def list_schedules(self) -> builtins.list[Schedule]:
        """Every schedule, by name."""
        return self._call(self._engine.list_schedules)

    def pause_schedule(self, name: str) -> None:
        """Stop the schedule's ticks until it is resumed."""
        self._call(lambda: self._engine.pause_schedule(name))

    def resume_schedule(self, name: str) -> None:
        """Let a paused schedule tick again."""
        self._call(lambda: self._engine.resume_schedule(name))

    def delete_schedule(self, name: str) -> None:
        """Remove the schedule (the flows it started stay)."""
        self._call(lambda: self._engine.delete_schedule(name))


def _refuse_inside_event_loop() -> None:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return
    raise EngineStateError(
        "SyncEngine blocks, so it cannot be called from a running event loop: in async code use "
        "dwarf.Engine, or run the call in a thread with asyncio.to_thread"
    )


_Boxed = tuple[bool, Any]


async def _boxed(operation: Coroutine[Any, Any, _T]) -> _Boxed:
    # The exception travels as a value: handing it through the future directly would replace a
    # TimeoutError by a fresh copy (asyncio converts it for concurrent.futures), losing ``flow_key``.
    try:
        return True, await operation
    except Exception as error:
        return False, error


def _submit(operation: Coroutine[Any, Any, _T], loop: asyncio.AbstractEventLoop) -> Future[_Boxed]:
    return asyncio.run_coroutine_threadsafe(_boxed(operation), loop)


def _wait_for(future: Future[_Boxed]) -> Any:
    try:
        succeeded, value = future.result()
    except concurrent.futures.CancelledError:
        raise EngineStateError("the engine stopped while the call ran") from None
    except BaseException:
        # Interrupted while waiting (e.g. KeyboardInterrupt): stop the operation too.
        future.cancel()
        raise
    if not succeeded:
        raise value
    return value


def _start_loop_thread() -> tuple[asyncio.AbstractEventLoop, threading.Thread]:
    loop = asyncio.new_event_loop()
    running = threading.Event()

    def run() -> None:
        asyncio.set_event_loop(loop)
        loop.call_soon(running.set)
        try:
            loop.run_forever()
        finally:
            _close_loop(loop)

    # A daemon thread: a program that forgets shutdown still exits (committed work is durable anyway).
    thread = threading.Thread(target=run, name="dwarf-sync-engine", daemon=True)
    thread.start()
    running.wait()
    return loop, thread


def _close_loop(loop: asyncio.AbstractEventLoop) -> None:
    leftovers = asyncio.all_tasks(loop)
    for task in leftovers:
        task.cancel()
    if leftovers:
        loop.run_until_complete(asyncio.gather(*leftovers, return_exceptions=True))
    loop.run_until_complete(loop.shutdown_asyncgens())
    loop.run_until_complete(loop.shutdown_default_executor())
    loop.close()


def _stop_loop_thread(loop: asyncio.AbstractEventLoop, thread: threading.Thread) -> None:
    loop.call_soon_threadsafe(loop.stop)
    thread.join()
