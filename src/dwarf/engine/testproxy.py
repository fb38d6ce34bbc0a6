"""TestProxy: a Host built from in-process registries, for tests and single-process programs.

Graphs and task handlers are registered by name; the name is the URL the engine passes back. Sync
handlers run in a dedicated thread pool (the context, and with it the flow's baggage, is copied in).
``add_peer`` links engines in one process as replicas: signals go to every peer but the sender.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import inspect
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

from dwarf.errors import NotFoundError
from dwarf.workflow.flow import Flow
from dwarf.workflow.graph import Graph
from dwarf.workflow.records import FlowOutcome

if TYPE_CHECKING:
    from dwarf.engine.engine import Engine

__all__ = ["TaskHandler", "TestProxy"]

TaskHandler = Callable[[Flow], Awaitable[None] | None]
StoppedCallback = Callable[[str, FlowOutcome], Awaitable[None] | None]


class TestProxy:
    """A Host whose graphs and tasks are registered in-process."""

    __test__ = False  # not a pytest test class despite the name

    def __init__(self, *, sync_threads: int = 32) -> None:
        self._graphs: dict[str, Graph] = {}
        self._tasks: dict[str, TaskHandler] = {}
        self._peers: list[Engine] = []
        self._stopped_callbacks: list[StoppedCallback] = []
        self._sync_threads = sync_threads
        self._executor: ThreadPoolExecutor | None = None

    def handle_graph(self, name: str, graph: Graph) -> None:
        """Publish ``graph`` under the URL ``name``."""
        self._graphs[name] = graph

    def handle_task(self, name: str, handler: TaskHandler) -> None:
        """Serve the task URL ``name`` with ``handler`` (sync or async)."""
        self._tasks[name] = handler

    def task(self, name: str) -> Callable[[TaskHandler], TaskHandler]:
        """Decorator form of ``handle_task``."""

        def register(handler: TaskHandler) -> TaskHandler:
            self.handle_task(name, handler)
            return handler

        return register

    def add_peer(self, peer: Engine) -> None:
        """Make ``peer`` receive the signals of every other engine using this proxy."""
        if peer not in self._peers:
            self._peers.append(peer)

    def on_flow_stopped(self, callback: StoppedCallback) -> None:
        """Call ``callback(flow_key, outcome)`` when a flow created with notify_on_stop stops."""
        self._stopped_callbacks.append(callback)

    # --- Host ---

    async def load_graph(self, workflow_url: str) -> Graph | None:
        return self._graphs.get(workflow_url)

    async def execute_task(self, task_url: str, flow: Flow) -> None:
        handler = self._tasks.get(task_url)
        if handler is None:
            raise NotFoundError(f"no task handler registered for {task_url!r}")
        if inspect.iscoroutinefunction(handler):
            await handler(flow)
            return
        if self._executor is None:
            self._executor = ThreadPoolExecutor(self._sync_threads, thread_name_prefix="dwarf-task")
        loop = asyncio.get_running_loop()
        context = contextvars.copy_context()
        result = await loop.run_in_executor(self._executor, functools.partial(context.run, handler, flow))
        if inspect.isawaitable(result):
            await result

    async def flow_stopped(self, flow_key: str, outcome: FlowOutcome) -> None:
        for callback in self._stopped_callbacks:
            result = callback(flow_key, outcome)
            if inspect.isawaitable(result):
                await result

    async def signal_peers(self, op: str, payload: bytes) -> None:
        sender = _current_sender.get()
        for peer in list(self._peers):
            if peer is sender:
                continue
            try:
                await peer.deliver_signal(op, payload)
            except Exception:  # a stopped peer must not break the sender
                continue


# The engine sets this around signal_peers so the proxy can skip the sender (the relay contract).
_current_sender: contextvars.ContextVar[Any] = contextvars.ContextVar("dwarf_signal_sender", default=None)


def sending_engine() -> contextvars.ContextVar[Any]:
    """The contextvar through which an engine identifies itself as a signal's sender."""
    return _current_sender
