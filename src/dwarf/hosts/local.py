"""LocalHost: the production host for workflows whose graphs and tasks live in the engine's own process.

Graphs and task handlers are registered under URLs with decorators (``@host.workflow``, ``@host.task``)
or plainly (``add_workflow``, ``add_task``). Async handlers run on the engine's event loop; sync handlers
in a bounded thread pool that is created on first use and shut down when the last engine using the host
stops. With a signal ``relay`` (``dwarf.hosts.pgnotify.PgNotifyRelay``, ``dwarf.hosts.nats.NatsRelay``)
the engines of several processes sharing one database wake each other up::

    host = LocalHost(max_threads=16)

    @host.workflow("checkout")
    def checkout() -> Graph:  # called once, on the first flow of this workflow
        graph = Graph("checkout")
        graph.add_task("Charge", "charge")
        graph.add_transition("Charge", END)
        return graph

    @host.task("charge")
    async def charge(flow: Flow) -> None:
        flow.set("charged", True)

Several engines may share one host (replicas of one process, or engines on different event loops): the
host keeps track of them, hands each peer signal to the others and to the relay, and starts the relay
with the first engine and closes it with the last. Relays start only once, so a host with a relay serves
engines until the last of them stops; build a new host (and relay) for engines started after that.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import functools
import inspect
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

from dwarf.errors import BadRequestError, InvalidGraphError, NotFoundError
from dwarf.hosts.relay import SignalRelay
from dwarf.workflow.flow import Flow
from dwarf.workflow.graph import Graph
from dwarf.workflow.records import FlowOutcome

if TYPE_CHECKING:
    from dwarf.engine.engine import Engine

__all__ = ["GraphFactory", "LocalHost", "StoppedCallback", "TaskHandler"]

TaskHandler = Callable[[Flow], Awaitable[None] | None]
GraphFactory = Callable[[], Graph]
StoppedCallback = Callable[[str, FlowOutcome], Awaitable[None] | None]

_Handler = TypeVar("_Handler", bound=TaskHandler)
_Factory = TypeVar("_Factory", bound=GraphFactory)


def _is_async_callable(function: Callable[..., Any]) -> bool:
    """Whether calling ``function`` starts a coroutine, so that it belongs on the event loop.

    ``iscoroutinefunction`` sees through a ``functools.partial`` of an async function but not of a
    callable object, and misses a callable object whose ``__call__`` is async: both would otherwise take
    a pool thread just to create their coroutine (and wait for one when the pool is busy)."""
    while isinstance(function, functools.partial):
        function = function.func
    return inspect.iscoroutinefunction(function) or inspect.iscoroutinefunction(type(function).__call__)


class SyncRunner:
    """Runs sync callables in a lazily created, bounded thread pool with the caller's context copied in
    (so ``current_baggage()`` works inside a sync task); ``close`` shuts the pool down, and the next call
    makes a new one."""

    def __init__(self, max_threads: int, thread_name_prefix: str) -> None:
        if isinstance(max_threads, bool) or not isinstance(max_threads, int) or max_threads < 1:
            raise BadRequestError(f"max_threads must be a positive integer, not {max_threads!r}")
        self._max_threads = max_threads
        self._prefix = thread_name_prefix
        self._executor: ThreadPoolExecutor | None = None

    async def call(self, function: Callable[..., Any], *args: Any) -> Any:
        """Run ``function(*args)`` in the pool; an awaitable it returns is awaited on the loop."""
        if self._executor is None:
            self._executor = ThreadPoolExecutor(self._max_threads, thread_name_prefix=self._prefix)
        context = contextvars.copy_context()
        loop = asyncio.get_running_loop()
        result = await loop.run_in_executor(self._executor, functools.partial(context.run, function, *args))
        if inspect.isawaitable(result):
            result = await result
        return result

    def close(self) -> None:
        """Shut the pool down without waiting: a handler still running after the engine's drain timeout
        cannot be interrupted, and waiting for it would block the event loop."""
        executor, self._executor = self._executor, None
        if executor is not None:
            executor.shutdown(wait=False, cancel_futures=True)


@dataclass(frozen=True)
class _Attached:
    engine: Engine
    # None for an engine linked outside any event loop (``TestProxy.add_peer`` before startup): it gets
    # its signals on the sender's loop until its own startup tells which loop it runs on.
    loop: asyncio.AbstractEventLoop | None


class EngineLinks:
    """The engines a host serves in this process and the relay linking them to other processes.

    Peer signals go to every attached engine but the sender and to the relay; signals the relay receives
    go to every attached engine. An engine on another event loop (e.g. a ``SyncEngine``'s thread) gets
    its signals through that loop, since an engine may only be touched from its own loop.
    """

    def __init__(self, relay: SignalRelay | None) -> None:
        if relay is not None:
            for method in ("start", "publish", "close"):
                if not callable(getattr(relay, method, None)):
                    raise BadRequestError(f"the relay has no {method} method")
        self._relay = relay
        self._attached: list[_Attached] = []
        self._relay_started = False

    @property
    def engines(self) -> list[Engine]:
        """The engines attached now."""
        return [entry.engine for entry in self._attached]

    def loop_in_use(self, loop: asyncio.AbstractEventLoop) -> bool:
        """Whether any attached engine runs on ``loop``."""
        return any(entry.loop is loop for entry in self._attached)

    def link(self, engine: Engine) -> None:
        """Link an engine whose startup this host may not hear of (``TestProxy.add_peer``), on the loop
        running now if any; it starts no relay. Linking an engine twice changes nothing."""
        if any(entry.engine is engine for entry in self._attached):
            return
        try:
            loop: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
        except RuntimeError:
            loop = None
        self._attached.append(_Attached(engine, loop))

    async def attach(self, engine: Engine) -> None:
        """Link a started engine; the first one starts the relay (raising aborts that engine's startup)."""
        loop = asyncio.get_running_loop()
        for index, entry in enumerate(self._attached):
            if entry.engine is engine:
                if entry.loop is None:  # linked before it started: now its loop is known
                    self._attached[index] = _Attached(engine, loop)
                return
        self._attached.append(_Attached(engine, loop))
        if self._relay is not None and not self._relay_started:
            self._relay_started = True
            try:
                await self._relay.start(self._deliver_from_relay)
            except BaseException:
                self._relay_started = False
                self._detach_entry(engine)
                # Close releases whatever a failed start half-opened (relays' close is idempotent).
                with contextlib.suppress(Exception):
                    await self._relay.close()
                raise

    async def detach(self, engine: Engine) -> None:
        """Unlink a stopping engine; the last one closes the relay."""
        self._detach_entry(engine)
        if not self._attached and self._relay is not None and self._relay_started:
            self._relay_started = False
            await self._relay.close()

    def _detach_entry(self, engine: Engine) -> None:
        self._attached = [entry for entry in self._attached if entry.engine is not engine]

    async def publish(self, op: str, payload: bytes) -> None:
        """Hand a signal to the other local engines and to the relay."""
        # The engine names itself as the sender through this contextvar (the relay contract: "every
        # *other* replica"). Imported here, not at the top: loading dwarf.engine loads TestProxy, a
        # LocalHost subclass, so a top-level import would be circular (and would load the engine with
        # this module).
        from dwarf.engine.signals import sending_engine

        sender = sending_engine().get()
        for entry in list(self._attached):
            if entry.engine is not sender:
                await self._deliver_to(entry, op, payload)
        if self._relay is not None and self._relay_started:
            await self._relay.publish(op, payload)

    async def _deliver_from_relay(self, op: str, payload: bytes) -> None:
        for entry in list(self._attached):
            await self._deliver_to(entry, op, payload)

    @staticmethod
    async def _deliver_to(entry: _Attached, op: str, payload: bytes) -> None:
        # A peer that is stopping or cannot parse the signal must not break the sender or the relay.
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if entry.loop is None or entry.loop is running:
            with contextlib.suppress(Exception):
                await entry.engine.deliver_signal(op, payload)
            return
        if entry.loop.is_closed():
            return
        with contextlib.suppress(RuntimeError):
            future = asyncio.run_coroutine_threadsafe(entry.engine.deliver_signal(op, payload), entry.loop)
            # Fire and forget: waiting would couple this loop to the other one's latency. Retrieving the
            # exception keeps a stopped peer's EngineStateError out of the "never retrieved" log.
            future.add_done_callback(lambda done: done.cancelled() or done.exception())


class LocalHost:
    """A Host serving graphs and task handlers registered in this process.

    ``max_threads`` bounds the pool that runs sync handlers (and sync ``on_flow_stopped`` callbacks).
    ``relay`` (a ``dwarf.hosts.relay.SignalRelay``) links the engines of several processes; without one
    the host only links the engines of this process.
    """

    def __init__(self, *, max_threads: int = 16, relay: SignalRelay | None = None) -> None:
        self._threads = SyncRunner(max_threads, "dwarf-task")
        self._links = EngineLinks(relay)
        self._tasks: dict[str, TaskHandler] = {}
        self._workflows: dict[str, Graph | GraphFactory] = {}
        self._graphs: dict[str, Graph] = {}
        self._stopped_callbacks: list[StoppedCallback] = []

    # --- registration ---

    def add_task(self, url: str, handler: TaskHandler) -> None:
        """Serve the task URL ``url`` (the one given in ``Graph.add_task``) with ``handler``, a sync or
        async function of the ``Flow``. BadRequestError if the URL is taken."""
        self._register_task(url, handler, replace=False)

    def add_workflow(self, url: str, graph: Graph | GraphFactory) -> None:
        """Publish a workflow under ``url``: a Graph, or a zero-argument function returning one, called
        on the first load (then validated and cached). BadRequestError if the URL is taken."""
        self._register_workflow(url, graph, replace=False)

    def _register_task(self, url: str, handler: TaskHandler, *, replace: bool) -> None:
        _check_url(url, "task")
        if not callable(handler):
            raise BadRequestError(f"the handler of task {url!r} is not callable")
        if url in self._tasks and not replace:
            raise BadRequestError(f"task {url!r} is already registered")
        self._tasks[url] = handler

    def _register_workflow(self, url: str, graph: Graph | GraphFactory, *, replace: bool) -> None:
        _check_url(url, "workflow")
        if not isinstance(graph, Graph) and not callable(graph):
            raise BadRequestError(f"workflow {url!r} needs a Graph or a function returning one")
        if url in self._workflows and not replace:
            raise BadRequestError(f"workflow {url!r} is already registered")
        self._workflows[url] = graph
        self._graphs.pop(url, None)  # a replaced workflow's cached graph must not outlive it

    def task(self, url: str) -> Callable[[_Handler], _Handler]:
        """Decorator form of ``add_task``; the function stays usable as it was."""

        def register(handler: _Handler) -> _Handler:
            self.add_task(url, handler)
            return handler

        return register

    def workflow(self, url: str) -> Callable[[_Factory], _Factory]:
        """Decorator form of ``add_workflow`` for a graph factory."""

        def register(factory: _Factory) -> _Factory:
            self.add_workflow(url, factory)
            return factory

        return register

    def on_flow_stopped(self, callback: StoppedCallback) -> None:
        """Call ``callback(flow_key, outcome)`` when a flow created with ``notify_on_stop`` stops."""
        if not callable(callback):
            raise BadRequestError("the flow-stopped callback is not callable")
        self._stopped_callbacks.append(callback)

    def close(self) -> None:
        """Shut the sync-handler thread pool down (engines do this when the last one using the host
        stops; call it when the host served no engine, e.g. after calling ``execute_task`` directly)."""
        self._threads.close()

    # --- Host ---

    async def load_graph(self, workflow_url: str) -> Graph | None:
        graph = self._graphs.get(workflow_url)
        if graph is not None:
            return graph
        source = self._workflows.get(workflow_url)
        if source is None:
            return None
        graph = source if isinstance(source, Graph) else source()
        if not isinstance(graph, Graph):
            raise InvalidGraphError(
                f"the factory of workflow {workflow_url!r} returned a {type(graph).__name__}, not a Graph"
            )
        graph.validate()
        # Only a valid graph is cached: a factory that failed is called again on the next load.
        self._graphs[workflow_url] = graph
        return graph

    async def execute_task(self, task_url: str, flow: Flow) -> None:
        handler = self._tasks.get(task_url)
        if handler is None:
            raise NotFoundError(f"no task is registered for {task_url!r} on this host")
        if not _is_async_callable(handler):
            await self._threads.call(handler, flow)
            return
        result = handler(flow)
        if inspect.isawaitable(result):
            await result

    async def flow_stopped(self, flow_key: str, outcome: FlowOutcome) -> None:
        first_error: Exception | None = None
        for callback in list(self._stopped_callbacks):
            # Every callback runs even when an earlier one fails; the engine logs the first failure.
            try:
                if not _is_async_callable(callback):
                    await self._threads.call(callback, flow_key, outcome)
                    continue
                result = callback(flow_key, outcome)
                if inspect.isawaitable(result):
                    await result
            except Exception as error:
                first_error = first_error or error
        if first_error is not None:
            raise first_error

    async def signal_peers(self, op: str, payload: bytes) -> None:
        await self._links.publish(op, payload)

    async def engine_started(self, engine: Engine) -> None:
        await self._links.attach(engine)

    async def engine_stopped(self, engine: Engine) -> None:
        try:
            await self._links.detach(engine)
        finally:
            if not self._links.engines:
                self._threads.close()


def _check_url(url: str, what: str) -> None:
    if not isinstance(url, str) or not url:
        raise BadRequestError(f"a {what} URL must be a non-empty string, not {url!r}")
