"""The Host protocol: how the engine reaches user code and other replicas.

The engine owns no transport. A host loads graphs by URL, executes tasks by URL, is told when flows that
asked for it stop, and relays the engine's coordination signals to peer replicas.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol, runtime_checkable

from dwarf.workflow.flow import Flow
from dwarf.workflow.graph import Graph
from dwarf.workflow.records import FlowOutcome

if TYPE_CHECKING:
    from dwarf.engine.engine import Engine

__all__ = ["Host"]


@runtime_checkable
class Host(Protocol):
    """What the engine needs from its surroundings.

    ``load_graph`` and ``execute_task`` are required. ``flow_stopped`` (called only for flows created with
    ``notify_on_stop``), ``signal_peers`` (needed only with several replicas) and the lifecycle hooks
    ``engine_started``/``engine_stopped`` (a signal relay starts and stops listening there) are optional:
    the engine looks them up with ``getattr`` and treats a missing method as a no-op.

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


class OptionalHostMethods(Protocol):  # pragma: no cover - documentation of the optional methods
    """The optional half of the host contract (looked up with getattr)."""

    async def flow_stopped(self, flow_key: str, outcome: FlowOutcome) -> None: ...

    async def signal_peers(self, op: str, payload: bytes) -> None: ...

    async def engine_started(self, engine: Engine) -> None:
        """Called once the engine is started (e.g. to start listening for peer signals); raising aborts
        the startup."""

    async def engine_stopped(self, engine: Engine) -> None:
        """Called during shutdown, after the workers stopped and before the shards close."""
