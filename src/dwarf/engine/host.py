"""The Host protocol: how the engine reaches user code and other replicas.

The engine owns no transport. A host loads graphs by URL, executes tasks by URL, is told when flows that
asked for it stop, and relays the engine's coordination signals to peer replicas.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol, runtime_checkable

from dwarf.errors import BadRequestError
from dwarf.workflow.flow import Flow
from dwarf.workflow.graph import Graph
from dwarf.workflow.records import FlowOutcome

if TYPE_CHECKING:
    from dwarf.engine.engine import Engine

__all__ = [
    "EngineStartedHook",
    "EngineStoppedHook",
    "FlowStoppedHook",
    "Host",
    "HostHooks",
    "ServesHook",
    "SignalPeersHook",
]


@runtime_checkable
class Host(Protocol):
    """What the engine needs from its surroundings.

    ``load_graph`` and ``execute_task`` are required. ``flow_stopped`` (called only for flows created with
    ``notify_on_stop``), ``signal_peers`` (needed only with several replicas), the lifecycle hooks
    ``engine_started``/``engine_stopped`` (a signal relay starts and stops listening there) and
    ``serves`` (whether a task URL has code behind it, checked when a graph is loaded) are optional,
    each described by its own small protocol below: ``set_host`` looks them up once (``HostHooks.of``)
    and the engine treats a missing one as a no-op.

    ``signal_peers`` contract: the engine has already applied the signal locally; the host ships
    ``(op, payload)`` to every *other* replica, which calls ``Engine.deliver_signal(op, payload)``. The
    host never interprets either. Signals are hints: losing them costs latency, never correctness.
    """

    async def load_graph(self, workflow_url: str) -> Graph | None:
        """Return the graph published at ``workflow_url``, or None when there is none."""
        ...

    async def execute_task(self, task_url: str, flow: Flow) -> None:
        """Run the task at ``task_url`` against the flow carrier; raising fails the attempt."""
        ...


@runtime_checkable
class SignalPeersHook(Protocol):
    """A host that relays the engine's coordination signals to the other replicas (see ``Host``)."""

    async def signal_peers(self, op: str, payload: bytes) -> None: ...


@runtime_checkable
class FlowStoppedHook(Protocol):
    """A host that wants to hear when a flow created with ``notify_on_stop`` stops."""

    async def flow_stopped(self, flow_key: str, outcome: FlowOutcome) -> None: ...


@runtime_checkable
class EngineStartedHook(Protocol):
    """A host told when an engine using it has started (e.g. to start listening for peer signals);
    raising aborts the startup."""

    async def engine_started(self, engine: Engine) -> None: ...


@runtime_checkable
class EngineStoppedHook(Protocol):
    """A host told during an engine's shutdown, after its workers stopped and before its shards close."""

    async def engine_stopped(self, engine: Engine) -> None: ...


@runtime_checkable
class ServesHook(Protocol):
    """A host that can tell whether it runs a task URL: True or False, or None when it cannot tell.

    The engine asks for every node of a graph it loads (create, continue_thread, a subgraph) and refuses
    the graph with InvalidGraphError, writing nothing, when any answer is False. It is called on the
    event loop, so it must answer at once (no I/O).
    """

    def serves(self, task_url: str) -> bool | None: ...


@dataclass(frozen=True)
class HostHooks:
    """The optional methods of a host, looked up once (``Engine.set_host``); None where the host has none."""

    signal_peers: Callable[[str, bytes], Awaitable[None]] | None = None
    flow_stopped: Callable[[str, FlowOutcome], Awaitable[None]] | None = None
    engine_started: Callable[[Engine], Awaitable[None]] | None = None
    engine_stopped: Callable[[Engine], Awaitable[None]] | None = None
    serves: Callable[[str], bool | None] | None = None

    @classmethod
    def of(cls, host: object) -> HostHooks:
        """The hooks ``host`` has; BadRequestError if one of those names holds something not callable
        (a method set to None counts as absent, the usual way to switch a protocol method off)."""
        for name in ("signal_peers", "flow_stopped", "engine_started", "engine_stopped", "serves"):
            member = getattr(host, name, None)
            if member is not None and not callable(member):
                raise BadRequestError(f"the host's {name} is not callable")
        return cls(
            signal_peers=host.signal_peers if isinstance(host, SignalPeersHook) else None,
            flow_stopped=host.flow_stopped if isinstance(host, FlowStoppedHook) else None,
            engine_started=host.engine_started if isinstance(host, EngineStartedHook) else None,
            engine_stopped=host.engine_stopped if isinstance(host, EngineStoppedHook) else None,
            serves=host.serves if isinstance(host, ServesHook) else None,
        )
