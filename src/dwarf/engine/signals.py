"""Wake-ups: local waiters on flows, and the signals replicas exchange through the host.

Two kinds of signal cross replicas. ``doorbell`` says a shard has new due work; ``flow-stopped`` says a
flow stopped (completed, failed, cancelled or interrupted) so that waiters elsewhere return at once.
Payloads carry only shard numbers and token-free ids. Signals are hints: the claimer and ``wait`` both
fall back to polling with a bounded interval, so a lost signal costs latency, never correctness.

An engine hands its signals to ``host.signal_peers`` with itself set in ``sending_engine()``, so that a
host serving several engines of one process (``LocalHost``, ``TestProxy``) can pass them to every engine
but the sender.
"""

from __future__ import annotations

import asyncio
import contextvars
import json
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from dwarf.engine.engine import Engine

__all__ = [
    "DOORBELL",
    "FLOW_STOPPED",
    "FlowWaiters",
    "Signal",
    "decode_signal",
    "encode_signal",
    "sending_engine",
]

DOORBELL = "doorbell"
FLOW_STOPPED = "flow-stopped"


@dataclass(frozen=True)
class Signal:
    """A decoded peer signal."""

    op: str
    shard: int
    flow_id: int = 0


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
    return json.dumps(body, separators=(",", ":")).encode()


def decode_signal(op: str, payload: bytes) -> Signal:
    """Parse a signal; raises ValueError for an unknown op or a malformed payload."""
    if op not in (DOORBELL, FLOW_STOPPED):
        raise ValueError(f"unknown signal op {op!r}")
    body = json.loads(payload)
    if not isinstance(body, dict):
        raise ValueError("signal payload is not an object")
    shard = body.get("shard")
    flow_id = body.get("flow", 0)
    if not isinstance(shard, int) or not isinstance(flow_id, int) or isinstance(shard, bool):
        raise ValueError("signal payload has malformed fields")
    return Signal(op, shard, flow_id)


class FlowWaiters:
    """Futures of callers waiting for a flow to stop, keyed by (shard, flow_id)."""

    def __init__(self) -> None:
        self._waiters: dict[tuple[int, int], set[asyncio.Event]] = {}

    def register(self, shard: int, flow_id: int) -> asyncio.Event:
        event = asyncio.Event()
        self._waiters.setdefault((shard, flow_id), set()).add(event)
        return event

    def unregister(self, shard: int, flow_id: int, event: asyncio.Event) -> None:
        events = self._waiters.get((shard, flow_id))
        if events is None:
            return
        events.discard(event)
        if not events:
            del self._waiters[(shard, flow_id)]

    def wake(self, shard: int, flow_id: int) -> None:
        for event in self._waiters.get((shard, flow_id), ()):
            event.set()

    def wake_all(self) -> None:
        for events in self._waiters.values():
            for event in events:
                event.set()
