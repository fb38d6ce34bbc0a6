"""The immutable facts about a flow that every step of it needs, cached per engine.

A flow's graph, baggage, identity and scheduling policy never change after create, so a worker reads
them from the database once per flow and keeps them in a bounded LRU cache: no step re-parses the graph.
"""

from __future__ import annotations

import json
from collections import OrderedDict
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from dwarf.engine.keys import correlation_id, format_key
from dwarf.store.rows import FlowRow
from dwarf.workflow.graph import Graph
from dwarf.workflow.status import Status

if TYPE_CHECKING:
    from dwarf.engine.creation import FlowPolicy

__all__ = ["FlowInfo", "FlowInfoCache", "dumps"]


def dumps(value: Any) -> str:
    """Compact JSON text for storage (state, changes, payloads)."""
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


@dataclass(frozen=True)
class FlowInfo:
    """What does not change about a flow after create."""

    shard: int
    flow_id: int
    token: str
    workflow_url: str
    workflow_name: str
    graph: Graph
    baggage: Any
    created_at: float
    parent_flow_id: int
    parent_step_id: int
    root_flow_id: int
    notify_on_stop: bool
    delete_on_completion: bool
    priority: int
    fairness_key: str
    fairness_weight: float
    time_budget_ms: int
    # The W3C traceparent of the flow's span ("" when tracing was off at create): task spans nest under it.
    trace_parent: str = ""
    # How long the flow is kept once it ended (see FlowPolicy): the engine that ends it wakes its retention
    # pass then, instead of waiting for the pass's poll.
    retain_for: float | None = None
    retain_completed_for: float | None = None

    def retained_for(self, status: Status) -> float | None:
        """Seconds this flow is kept after stopping with ``status``; None when it is kept (or interrupted)."""
        if status == Status.COMPLETED:
            return self.retain_completed_for
        if status in (Status.FAILED, Status.CANCELLED):
            return self.retain_for
        return None

    @property
    def key(self) -> str:
        """The flow's key."""
        return format_key(self.shard, self.flow_id, self.token)

    @property
    def correlation_id(self) -> str:
        """The token-free id for logs and telemetry."""
        return correlation_id(self.shard, self.flow_id)

    def policy(self) -> FlowPolicy:
        """This flow's policy, inherited by its child flows (without the stop flags)."""
        from dwarf.engine.creation import FlowPolicy

        return FlowPolicy(
            priority=self.priority,
            fairness_key=self.fairness_key,
            fairness_weight=self.fairness_weight,
            time_budget_ms=self.time_budget_ms,
            baggage=self.baggage,
        )

    @classmethod
    def from_row(cls, shard: int, row: FlowRow) -> FlowInfo:
        """Build from a flow's row, parsing its graph."""
        return cls(
            shard=shard,
            flow_id=row.flow_id,
            token=row.flow_token,
            workflow_url=row.workflow_url,
            workflow_name=row.workflow_name,
            graph=Graph.from_json(row.graph),
            baggage=row.baggage,
            created_at=row.created_at,
            parent_flow_id=row.parent_flow_id,
            parent_step_id=row.parent_step_id,
            root_flow_id=row.root_flow_id or row.flow_id,
            notify_on_stop=row.notify_on_stop,
            delete_on_completion=row.delete_on_completion,
            priority=row.priority,
            fairness_key=row.fairness_key,
            fairness_weight=row.fairness_weight,
            time_budget_ms=row.time_budget_ms,
            trace_parent=row.trace_parent,
            retain_for=row.retain_for,
            retain_completed_for=row.retain_completed_for,
        )


def policy_of_row(row: FlowRow) -> FlowPolicy:
    """The scheduling policy stored on a flow's row (for continuations and forks)."""
    from dwarf.engine.creation import FlowPolicy

    return FlowPolicy(
        priority=row.priority,
        fairness_key=row.fairness_key,
        fairness_weight=row.fairness_weight,
        time_budget_ms=row.time_budget_ms,
        notify_on_stop=row.notify_on_stop,
        delete_on_completion=row.delete_on_completion,
        baggage=row.baggage,
        retain_for=row.retain_for,
        retain_completed_for=row.retain_completed_for,
    )


class FlowInfoCache:
    """A bounded LRU of FlowInfo keyed by (shard, flow_id)."""

    def __init__(self, capacity: int = 4096) -> None:
        self._capacity = capacity
        self._items: OrderedDict[tuple[int, int], FlowInfo] = OrderedDict()

    def get(self, shard: int, flow_id: int) -> FlowInfo | None:
        info = self._items.get((shard, flow_id))
        if info is not None:
            self._items.move_to_end((shard, flow_id))
        return info

    def put(self, info: FlowInfo) -> None:
        self._items[(info.shard, info.flow_id)] = info
        self._items.move_to_end((info.shard, info.flow_id))
        while len(self._items) > self._capacity:
            self._items.popitem(last=False)

    def discard(self, shard: int, flow_id: int) -> None:
        self._items.pop((shard, flow_id), None)
