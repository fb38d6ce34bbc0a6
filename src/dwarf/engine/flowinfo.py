"""The immutable facts about a flow that every step of it needs, cached per engine.

A flow's graph, baggage, identity and scheduling policy never change after create, so a worker reads
them from the database once per flow and keeps them in a bounded LRU cache. Flows of one workflow share
one parsed graph: a backlog drained breadth-first (more flows in flight than the cache holds) reads each
flow's row at every step, and parsing its graph each time was most of what that cost.
"""

from __future__ import annotations

import asyncio
import json
from collections import OrderedDict
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from dwarf.engine.keys import correlation_id, format_key
from dwarf.store.base import Store
from dwarf.store.rows import FlowRow
from dwarf.workflow.graph import Graph
from dwarf.workflow.status import Status

if TYPE_CHECKING:
    from dwarf.engine.creation import FlowPolicy

__all__ = ["FlowInfo", "FlowInfoCache", "FlowReads", "dumps", "parse_graph"]

PARSED_GRAPHS = 256
"""Distinct graph texts whose parsed Graph is kept (see parse_graph)."""
_parsed_graphs: dict[str, Graph] = {}


def dumps(value: Any) -> str:
    """Compact JSON text for storage (state, changes, payloads)."""
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def parse_graph(text: str) -> Graph:
    """The Graph of a stored graph text, parsed once per distinct text and shared.

    Sharing is safe because nothing in the engine changes a flow's graph (the host's own Graph objects
    are never stored: a flow's graph is always parsed from its stored text).
    """
    graph = _parsed_graphs.get(text)
    if graph is None:
        graph = Graph.from_json(text)
        if len(_parsed_graphs) >= PARSED_GRAPHS:
            del _parsed_graphs[next(iter(_parsed_graphs))]
        _parsed_graphs[text] = graph
    return graph


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
            graph=parse_graph(row.graph),
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


class FlowReads:
    """Reads the flows that miss the cache, those asked for in the same turn of the loop in one statement.

    A claim starts its steps together; when more flows are in flight than the cache holds (a backlog of
    queued flows drains breadth-first, one step of every flow before the next), each of them misses. One
    read per step cost a unit of work on the store each; gathered, a claim of 64 steps reads its flows
    once.
    """

    def __init__(self, cache: FlowInfoCache) -> None:
        self._cache = cache
        self._waiting: dict[int, dict[int, asyncio.Future[FlowInfo | None]]] = {}  # shard -> flow_id
        self._reads: set[asyncio.Task[None]] = set()

    async def load(self, store: Store, flow_id: int) -> FlowInfo | None:
        """The flow's FlowInfo read from ``store`` (and cached); None when the flow is gone."""
        waiting = self._waiting.get(store.shard)
        if waiting is None:
            waiting = self._waiting[store.shard] = {}
            # Runs once every caller that is ready in this turn of the loop has asked.
            asyncio.get_running_loop().call_soon(self._start_read, store)
        future = waiting.get(flow_id)
        if future is None:
            future = waiting[flow_id] = asyncio.get_running_loop().create_future()
        # Shielded: a caller cancelled while it waits must not cancel the read for the others.
        return await asyncio.shield(future)

    def _start_read(self, store: Store) -> None:
        waiting = self._waiting.pop(store.shard, {})
        if waiting:
            # It ends with its read; shutdown closes the store under it, which fails the read and so
            # every waiter.
            read = asyncio.ensure_future(self._read(store, waiting))
            self._reads.add(read)
            read.add_done_callback(self._reads.discard)

    async def _read(self, store: Store, waiting: dict[int, asyncio.Future[FlowInfo | None]]) -> None:
        try:
            if len(waiting) == 1:
                rows = await store.read("get_flow", flow_id=next(iter(waiting)))
            else:
                rows = await store.read("get_flows", flow_ids=json.dumps(sorted(waiting)))
        except asyncio.CancelledError:
            for future in waiting.values():
                future.cancel()
            raise
        except Exception as error:
            for future in waiting.values():
                if not future.done():
                    future.set_exception(error)
            return
        for row in rows:
            found = waiting.get(int(row["flow_id"]))
            if found is None or found.done():
                continue
            try:
                info = FlowInfo.from_row(store.shard, FlowRow.of(row))
            except Exception as error:  # one flow's damaged row fails its own steps only
                found.set_exception(error)
                continue
            self._cache.put(info)
            found.set_result(info)
        for future in waiting.values():  # no row: the flow is gone
            if not future.done():
                future.set_result(None)
