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

    @host.task("charge", retry=Retry(attempts=5, backoff=2.0, max_delay=60))
    async def charge(flow: Flow) -> None:
        flow.set("charged", True)

A registered handler can stand for its URL in a graph (``graph.add_task("Charge", charge)``): the host
records the URL on the function (``dwarf.workflow.taskref``). ``@host.task()`` without a URL registers
the function under its ``__qualname__`` (``charge``, ``Billing.charge``).

A ``retry`` policy (``dwarf.workflow.retry.Retry``) makes ``execute_task`` schedule the next attempt when
the handler raises and attempts remain, as ``flow.retry`` would with the policy's delay, and then let the
error propagate; a handler that calls ``flow.retry`` itself decides alone.

``serves(url)`` tells the engine whether a task URL has a handler here, so that ``Engine.create`` refuses
a graph naming a task this host cannot run. A host with no task registered at all answers None (cannot
tell): it may be a process that only starts flows, whose tasks another process runs; so does a subclass
that overrides ``execute_task`` (and not ``serves``), which may run URLs it never registered.

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
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar, overload

from dwarf.errors import BadRequestError, InvalidGraphError, NotFoundError
from dwarf.hosts.relay import SignalRelay
from dwarf.workflow.flow import Flow
from dwarf.workflow.graph import Graph
from dwarf.workflow.records import FlowOutcome
from dwarf.workflow.retry import Retry
from dwarf.workflow.taskref import remember_task_url

if TYPE_CHECKING:
    from dwarf.engine.engine import Engine

__all__ = ["GraphFactory", "LocalHost", "StoppedCallback", "TaskHandler", "derived_task_url"]

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

    # Whether ``@task`` replaces an earlier handler of its URL (TestProxy) instead of refusing it.
    _decorator_replaces: ClassVar[bool] = False

    def __init__(self, *, max_threads: int = 16, relay: SignalRelay | None = None) -> None:
        self._threads = SyncRunner(max_threads, "dwarf-task")
        self._links = EngineLinks(relay)
        self._tasks: dict[str, TaskHandler] = {}
        self._retries: dict[str, Retry] = {}
        self._workflows: dict[str, Graph | GraphFactory] = {}
        self._graphs: dict[str, Graph] = {}
        self._stopped_callbacks: list[StoppedCallback] = []

    # --- registration ---

    def add_task(self, url: str, handler: TaskHandler, *, retry: Retry | None = None) -> None:
        """Serve the task URL ``url`` (the one given in ``Graph.add_task``) with ``handler``, a sync or
        async function of the ``Flow``, retried by the policy ``retry`` if given. The handler can then
        stand for ``url`` in ``Graph.add_task``. BadRequestError if the URL is taken."""
        self._register_task(url, handler, replace=False, retry=retry)

    def add_workflow(self, url: str, graph: Graph | GraphFactory) -> None:
        """Publish a workflow under ``url``: a Graph, or a zero-argument function returning one, called
        on the first load (then validated and cached). BadRequestError if the URL is taken."""
        self._register_workflow(url, graph, replace=False)

    def _register_task(
        self, url: str, handler: TaskHandler, *, replace: bool, retry: Retry | None = None
    ) -> None:
        _check_url(url, "task")
        if not callable(handler):
            raise BadRequestError(f"the handler of task {url!r} is not callable")
        if retry is not None and not isinstance(retry, Retry):
            raise BadRequestError(f"the retry policy of task {url!r} must be a Retry, not {retry!r}")
        if url in self._tasks and not replace:
            raise BadRequestError(f"task {url!r} is already registered")
        self._tasks[url] = handler
        if retry is None:
            self._retries.pop(url, None)
        else:
            self._retries[url] = retry
        remember_task_url(handler, url)

    def _register_workflow(self, url: str, graph: Graph | GraphFactory, *, replace: bool) -> None:
        _check_url(url, "workflow")
        if not isinstance(graph, Graph) and not callable(graph):
            raise BadRequestError(f"workflow {url!r} needs a Graph or a function returning one")
        if url in self._workflows and not replace:
            raise BadRequestError(f"workflow {url!r} is already registered")
        self._workflows[url] = graph
        self._graphs.pop(url, None)  # a replaced workflow's cached graph must not outlive it

    @overload
    def task(self, url: _Handler, /) -> _Handler: ...

    @overload
    def task(
        self, url: str | None = None, *, retry: Retry | None = None
    ) -> Callable[[_Handler], _Handler]: ...

    def task(
        self, url: str | _Handler | None = None, *, retry: Retry | None = None
    ) -> Callable[[_Handler], _Handler] | _Handler:
        """Decorator form of ``add_task``; the function stays usable as it was, and stands for its URL in
        ``Graph.add_task``. Without a URL (``@host.task``, ``@host.task()``, ``@host.task(retry=...)``)
        the function's ``__qualname__`` is its URL."""
        if callable(url):
            self._register_task(derived_task_url(url), url, replace=self._decorator_replaces)
            return url

        def register(handler: _Handler) -> _Handler:
            task_url = url if url is not None else derived_task_url(handler)
            self._register_task(task_url, handler, replace=self._decorator_replaces, retry=retry)
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

    def serves(self, task_url: str) -> bool | None:
        """Whether a handler is registered for ``task_url``; None while no task is registered at all (a
        host that only publishes workflows cannot tell which tasks other processes serve), and None in a
        subclass that overrides ``execute_task`` without overriding ``serves`` (it may run more URLs than
        it registered)."""
        if not self._tasks or type(self).execute_task is not LocalHost.execute_task:
            return None
        return task_url in self._tasks

    async def execute_task(self, task_url: str, flow: Flow) -> None:
        handler = self._tasks.get(task_url)
        if handler is None:
            raise NotFoundError(f"no task is registered for {task_url!r} on this host")
        try:
            if not _is_async_callable(handler):
                await self._threads.call(handler, flow)
                return
            result = handler(flow)
            if inspect.isawaitable(result):
                await result
        except Exception as error:
            # Looked up only on failure: the policy costs a successful run nothing.
            policy = self._retries.get(task_url)
            if policy is not None and not flow.retry_asked and policy.retries(error, flow.attempt):
                # What flow.retry would request with the policy's delay and no horizon; the engine then
                # records this run as retried, with the error's text.
                flow.retry(policy.delay_for(flow.attempt), 1.0, 0, 0)
            raise

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


def derived_task_url(handler: Any) -> str:
    """The URL of a task registered without one: its function's ``__qualname__``."""
    name = getattr(handler, "__qualname__", None)
    if not isinstance(name, str) or not name or "<lambda>" in name:
        raise BadRequestError(
            f"cannot derive a task URL from {handler!r}: give it one (@host.task('url') or "
            "host.add_task('url', handler))"
        )
    return name


def _check_url(url: str, what: str) -> None:
    if not isinstance(url, str) or not url:
        raise BadRequestError(f"a {what} URL must be a non-empty string, not {url!r}")
