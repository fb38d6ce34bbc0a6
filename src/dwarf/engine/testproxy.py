"""TestProxy: the in-process host of tests, examples and small scripts, with the reference's method names.

It is a ``LocalHost`` (``dwarf.hosts.local``) and behaves as one: async handlers run on the engine's
loop, sync ones in a bounded thread pool that closes when the last engine using the proxy stops, every
``on_flow_stopped`` callback runs even when another raises, and the engines using one proxy hand each
other their signals. What it adds is what tests want: ``handle_graph``/``handle_task`` (and ``@task``)
replace an earlier registration of the same URL instead of refusing it, and ``add_peer`` links an engine
that may not use the proxy as its host.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar

from dwarf.hosts.local import LocalHost, TaskHandler
from dwarf.workflow.graph import Graph
from dwarf.workflow.retry import Retry

if TYPE_CHECKING:
    from dwarf.engine.engine import Engine

__all__ = ["TaskHandler", "TestProxy"]


class TestProxy(LocalHost):
    """A Host whose graphs and tasks are registered in-process; ``sync_threads`` bounds the pool of sync
    handlers (and sync flow-stopped callbacks)."""

    __test__ = False  # not a pytest test class despite the name
    # ``@task`` is the decorator form of handle_task: it replaces an earlier handler of its URL.
    _decorator_replaces: ClassVar[bool] = True

    def __init__(self, *, sync_threads: int = 32) -> None:
        super().__init__(max_threads=sync_threads)

    def handle_graph(self, name: str, graph: Graph) -> None:
        """Publish ``graph`` under the URL ``name``, replacing what was published there before."""
        self._register_workflow(name, graph, replace=True)

    def handle_task(self, name: str, handler: TaskHandler, *, retry: Retry | None = None) -> None:
        """Serve the task URL ``name`` with ``handler`` (sync or async), replacing an earlier handler;
        ``retry`` as in ``LocalHost.add_task``. ``@proxy.task(...)`` is the decorator form."""
        self._register_task(name, handler, replace=True, retry=retry)

    def add_peer(self, peer: Engine) -> None:
        """Make ``peer`` receive the signals of every other engine using this proxy.

        An engine using the proxy as its host is linked when it starts anyway; this links one before
        its startup, or one whose host is another (signals only flow to it, since its own go to its
        host)."""
        self._links.link(peer)
