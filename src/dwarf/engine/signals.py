"""Wake-ups: local waiters on flows, and the signals replicas exchange through the host.

Three kinds of signal cross replicas. ``doorbell`` says a shard has new due work; ``flow-stopped`` says a
flow stopped (completed, failed, cancelled or interrupted) so that waiters elsewhere return at once;
``schedules`` says a schedule was created, changed, paused, resumed or deleted, so that the other
engines' schedule tickers look again at once instead of at their next poll. A doorbell with
``limits`` set also says the shard's limits changed (docs/limits.md): the receiver reads them again. It is
a field of the doorbell, not an op of its own, so that an engine of an older release still takes it as a
doorbell.
Payloads carry only shard numbers and token-free ids. Signals are hints: the claimer and ``wait`` both
fall back to polling with a bounded interval, so a lost signal costs latency, never correctness.

An engine hands its signals to ``host.signal_peers`` with itself set in ``sending_engine()``, so that a
host serving several engines of one process (``LocalHost``, ``TestProxy``) can pass them to every engine
but the sender.
"""

from __future__ import annotations

import asyncio
import contextvars
import copy
import json
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from dwarf.engine.engine import Engine
    from dwarf.workflow.records import FlowOutcome

__all__ = [
    "DOORBELL",
    "FLOW_STOPPED",
    "SCHEDULES",
    "FlowWaiters",
    "Signal",
    "Waiter",
    "decode_signal",
    "encode_signal",
    "sending_engine",
]

DOORBELL = "doorbell"
FLOW_STOPPED = "flow-stopped"
SCHEDULES = "schedules"


@dataclass(frozen=True)
class Signal:
    """A decoded peer signal."""

    op: str
    shard: int
    flow_id: int = 0
    limits: bool = False


# Set by the engine only around its own ``signal_peers`` call (a contextvar, so concurrent sends of
# several engines on one loop, each in its own task, cannot see each other's value).
_sending_engine: contextvars.ContextVar[Engine | None] = contextvars.ContextVar(
    "dwarf_signal_sender", default=None
)


def sending_engine() -> contextvars.ContextVar[Engine | None]:
    """The contextvar through which an engine names itself as the sender of the signal its host is
    handing on (the relay contract: a signal goes to every *other* replica)."""
    return _sending_engine


def encode_signal(signal: Signal) -> bytes:
    """The payload bytes of a signal."""
    body: dict[str, int] = {"shard": signal.shard}
    if signal.flow_id:
        body["flow"] = signal.flow_id
    if signal.limits:
        body["limits"] = 1
    return json.dumps(body, separators=(",", ":")).encode()


def decode_signal(op: str, payload: bytes) -> Signal:
    """Parse a signal; raises ValueError for an unknown op or a malformed payload."""
    if op not in (DOORBELL, FLOW_STOPPED, SCHEDULES):
        raise ValueError(f"unknown signal op {op!r}")
    body = json.loads(payload)
    if not isinstance(body, dict):
        raise ValueError("signal payload is not an object")
    shard = body.get("shard")
    flow_id = body.get("flow", 0)
    limits = body.get("limits", 0)
    if not isinstance(shard, int) or not isinstance(flow_id, int) or isinstance(shard, bool):
        raise ValueError("signal payload has malformed fields")
    return Signal(op, shard, flow_id, limits == 1)


class Waiter:
    """One caller waiting for a flow to stop: an event, and the outcome when the stop happened here."""

    __slots__ = ("event", "outcome")

    def __init__(self) -> None:
        self.event = asyncio.Event()
        # Set by a wake that knows the flow completed and its final state (a step commit on this engine):
        # the waiter returns it without reading the flow back.
        self.outcome: FlowOutcome | None = None


class FlowWaiters:
    """Callers waiting for a flow to stop, keyed by (shard, flow_id)."""

    def __init__(self) -> None:
        self._waiters: dict[tuple[int, int], set[Waiter]] = {}

    def register(self, shard: int, flow_id: int) -> Waiter:
        waiter = Waiter()
        self._waiters.setdefault((shard, flow_id), set()).add(waiter)
        return waiter

    def unregister(self, shard: int, flow_id: int, waiter: Waiter) -> None:
        waiters = self._waiters.get((shard, flow_id))
        if waiters is None:
            return
        waiters.discard(waiter)
        if not waiters:
            del self._waiters[(shard, flow_id)]

    def wake(self, shard: int, flow_id: int, outcome: FlowOutcome | None = None) -> None:
        """Wake the flow's waiters; ``outcome``, when given, is handed to them (a copy to all but one)."""
        for index, waiter in enumerate(self._waiters.get((shard, flow_id), ())):
            if outcome is not None:
                waiter.outcome = outcome if index == 0 else copy.deepcopy(outcome)
            waiter.event.set()

    def wake_all(self) -> None:
        for waiters in self._waiters.values():
            for waiter in waiters:
                waiter.event.set()
