"""Signal relays: the interface that carries engine signals between processes, and RelayHost, which adds
one to any host.

An engine applies each of its signals (a shard's doorbell, a flow that stopped) locally and then hands it
to ``host.signal_peers``; a relay ships it to every *other* replica, where it is handed to
``Engine.deliver_signal``. Signals are hints: an engine polls every second or so anyway, so a relay that
loses some (a broken connection, a full buffer) costs latency, never correctness. That is why relays
never raise from ``publish`` for transport trouble and reconnect on their own.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from dwarf.errors import BadRequestError, DwarfError
from dwarf.workflow.flow import Flow
from dwarf.workflow.graph import Graph
from dwarf.workflow.records import FlowOutcome

if TYPE_CHECKING:
    from dwarf.engine.engine import Engine
    from dwarf.engine.host import Host

__all__ = [
    "Backoff",
    "DeliverSignal",
    "RelayError",
    "RelayHost",
    "SignalRelay",
    "check_positive_seconds",
    "relay_logger",
]

DeliverSignal = Callable[[str, bytes], Awaitable[None]]


@runtime_checkable
class SignalRelay(Protocol):
    """Carries ``(op, payload)`` signals between the replicas of a deployment.

    ``start(deliver)`` connects and begins listening; ``deliver(op, payload)`` is then awaited for every
    signal another replica published (never for the relay's own). It raises ``RelayError`` when the
    relay cannot connect, so a misconfigured deployment fails at startup rather than running silently
    without signals. ``publish`` queues or sends one signal and returns quickly; losing it on a broken
    connection is logged, not raised. ``close`` stops listening and is idempotent; ``publish`` after
    ``close`` does nothing.
    """

    async def start(self, deliver: DeliverSignal) -> None: ...

    async def publish(self, op: str, payload: bytes) -> None: ...

    async def close(self) -> None: ...


class RelayError(DwarfError):
    """A relay cannot do its job: it could not connect at start, or it was started twice."""

    status_code = 503


def relay_logger() -> logging.Logger:
    """The default logger of the relays, ``dwarf.relay``: silent unless the application configures
    logging (the library convention of a NullHandler)."""
    logger = logging.getLogger("dwarf.relay")
    if not logger.handlers:
        logger.addHandler(logging.NullHandler())
    return logger


def check_positive_seconds(**options: object) -> None:
    """Refuse a relay setting that is not a positive number of seconds (BadRequestError naming it)."""
    for name, value in options.items():
        if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
            raise BadRequestError(f"{name} must be a positive number of seconds")


class Backoff:
    """Growing, jittered pauses between reconnection attempts: ``first`` doubling up to ``cap``.

    The jitter keeps a fleet of replicas that lost their server at the same moment from reconnecting in
    lock step.
    """

    def __init__(self, first: float = 0.1, cap: float = 5.0) -> None:
        self._first = first
        self._cap = cap
        self._next = first

    def next(self) -> float:
        """The pause before the next attempt (and grow the one after)."""
        pause = self._next
        self._next = min(self._next * 2, self._cap)
        return pause * random.uniform(0.5, 1.0)

    def reset(self) -> None:
        """Start over after a success."""
        self._next = self._first


class RelayHost:
    """Wrap any host so that the engine's signals travel through ``relay`` to the other replicas.

    Graph loading, task execution, ``serves`` and ``flow_stopped`` are forwarded to ``host``; ``signal_peers``
    publishes on the relay (the wrapped host's own ``signal_peers``, if any, is not called); the relay
    starts listening when the engine has started (a relay that cannot connect makes ``startup`` raise
    ``RelayError``) and closes when the engine stops. The wrapped host's own ``engine_started`` and
    ``engine_stopped`` hooks, if it has them, are called too.

    One RelayHost (and one relay) serves one engine::

        engine = Engine(host=RelayHost(proxy, PgNotifyRelay(dsn)), dsn=dsn)
    """

    def __init__(self, host: Host | Any, relay: SignalRelay) -> None:
        for method in ("load_graph", "execute_task"):
            if not callable(getattr(host, method, None)):
                raise BadRequestError(f"the wrapped host has no {method} method")
        for method in ("start", "publish", "close"):
            if not callable(getattr(relay, method, None)):
                raise BadRequestError(f"the relay has no {method} method")
        self._host = host
        self._relay = relay

    @property
    def host(self) -> Any:
        """The wrapped host."""
        return self._host

    @property
    def relay(self) -> SignalRelay:
        """The relay carrying this engine's signals."""
        return self._relay

    async def load_graph(self, workflow_url: str) -> Graph | None:
        result: Graph | None = await self._host.load_graph(workflow_url)
        return result

    async def execute_task(self, task_url: str, flow: Flow) -> None:
        await self._host.execute_task(task_url, flow)

    def serves(self, task_url: str) -> bool | None:
        serves = getattr(self._host, "serves", None)
        if serves is None:
            return None
        answer: bool | None = serves(task_url)
        return answer

    async def flow_stopped(self, flow_key: str, outcome: FlowOutcome) -> None:
        notify = getattr(self._host, "flow_stopped", None)
        if notify is not None:
            await notify(flow_key, outcome)

    async def signal_peers(self, op: str, payload: bytes) -> None:
        await self._relay.publish(op, payload)

    async def engine_started(self, engine: Engine) -> None:
        await self._relay.start(engine.deliver_signal)
        started = getattr(self._host, "engine_started", None)
        # When either raises, the engine's startup shuts it down, which calls engine_stopped: the relay
        # is closed there.
        if started is not None:
            await started(engine)

    async def engine_stopped(self, engine: Engine) -> None:
        stopped = getattr(self._host, "engine_stopped", None)
        try:
            if stopped is not None:
                await stopped(engine)
        finally:
            await self._relay.close()
