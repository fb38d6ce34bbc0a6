"""Graph builders and helpers for the tests of parallel branches, child flows, interrupts, threads, fork
and retention.

As in ``graphs.py``, task URLs are the node names themselves, so ``proxy.handle_task("Work", ...)``
serves node ``Work``; a subgraph's workflow URL is whatever the test publishes it under.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Mapping

from dwarf import END, Flow, FlowSummary, Graph, NotFoundError, Query, Reducer, Status
from dwarf.engine import Engine
from tests.engine.graphs import WAIT, Handler, graph_of, wait_until


def for_each_chain(
    name: str = "ForEachChain",
    *work: str,
    field: str = "items",
    as_: str = "item",
    join: str = "Join",
    reducers: Mapping[str, Reducer | str] | None = None,
) -> Graph:
    """``Split`` runs one branch per element of ``field``; each branch is the chain ``work``; the branches
    meet at fan-in ``join``; then END."""
    stages = list(work) or ["Work"]
    graph = graph_of(name, "Split", *stages, join)
    graph.add_transition_for_each("Split", stages[0], field, as_)
    graph.add_transition_chain(*stages, join)
    graph.set_fan_in(join)
    graph.add_transition(join, END)
    for state_field, reducer in (reducers or {}).items():
        graph.set_reducer(state_field, reducer)
    return graph


def fan_out_when(name: str, conditions: Mapping[str, str], join: str = "J") -> Graph:
    """``A`` goes to each node of ``conditions`` whose ``when`` expression holds (several matches fan out);
    the nodes meet at fan-in ``join``; then END."""
    names = list(conditions)
    graph = graph_of(name, "A", *names, join)
    for node, expression in conditions.items():
        graph.add_transition_when("A", node, expression)
        graph.add_transition(node, join)
    graph.set_fan_in(join)
    graph.add_transition(join, END)
    return graph


def nested_for_each(name: str = "Nested", reducers: Mapping[str, Reducer | str] | None = None) -> Graph:
    """``Split`` fans out over ``groups`` (as ``group``); each ``Inner`` fans out again over its ``group``
    (as ``n``) into ``Work``; the inner branches meet at fan-in ``InnerJoin`` per group, the groups at
    fan-in ``OuterJoin``; then END."""
    graph = graph_of(name, "Split", "Inner", "Work", "InnerJoin", "OuterJoin")
    graph.add_transition_for_each("Split", "Inner", "groups", "group")
    graph.add_transition_for_each("Inner", "Work", "group", "n")
    graph.add_transition("Work", "InnerJoin")
    graph.add_transition("InnerJoin", "OuterJoin")
    graph.set_fan_in("InnerJoin")
    graph.set_fan_in("OuterJoin")
    graph.add_transition("OuterJoin", END)
    for state_field, reducer in (reducers or {}).items():
        graph.set_reducer(state_field, reducer)
    return graph


def single(name: str, node: str) -> Graph:
    """One task node, then END."""
    graph = graph_of(name, node)
    graph.add_transition(node, END)
    return graph


def calls_subgraph(
    child_url: str, *, result_field: str = "result", input_field: str | None = None
) -> Handler:
    """A task that runs ``child_url`` as a child flow (input: the state field ``input_field`` when given,
    else the whole state) and stores the child's final state in ``result_field``."""

    async def handler(flow: Flow) -> None:
        child_input = flow.get(input_field, {}) if input_field else flow.snapshot()
        flow.set(result_field, flow.subgraph(child_url, child_input))

    return handler


class Runs:
    """Counts task executions by name (and keeps the order in which they happened)."""

    def __init__(self) -> None:
        self.counts: Counter[str] = Counter()
        self.order: list[str] = []

    def count(self, name: str) -> None:
        self.counts[name] += 1
        self.order.append(name)

    def __getitem__(self, name: str) -> int:
        return self.counts[name]


async def summaries(engine: Engine, query: Query | None = None) -> list[FlowSummary]:
    """Every flow ``list`` returns for ``query`` (one page is enough for these tests)."""
    page, _ = await engine.list(query or Query())
    return page


async def child_summaries(engine: Engine) -> list[FlowSummary]:
    """The child flows (subgraphs) the engine lists when asked to include them."""
    return [s for s in await summaries(engine, Query(include_subgraphs=True)) if s.subgraph]


async def wait_for_status(engine: Engine, flow_key: str, status: Status, timeout: float = WAIT) -> None:
    """Wait until ``snapshot`` reports ``status`` for a flow (e.g. a child flow, which has no waiters)."""

    async def reached() -> bool:
        return (await engine.snapshot(flow_key)).status == status

    await wait_until(reached, timeout)


async def wait_until_gone(engine: Engine, flow_key: str, timeout: float = WAIT) -> None:
    """Wait until every read of the flow raises NotFoundError."""

    async def gone() -> bool:
        try:
            await engine.snapshot(flow_key)
        except NotFoundError:
            return True
        return False

    await wait_until(gone, timeout)


async def row_counts(engine: Engine) -> tuple[int, int]:
    """(flows, steps) summed over the shards."""
    info = await engine.shard_info()
    assert all(not shard.error for shard in info), info
    return sum(shard.flows for shard in info), sum(shard.steps for shard in info)


class Latch:
    """Counts the tasks that reached it and releases all of them once ``parties`` did (bounded wait)."""

    def __init__(self, parties: int, hold: float = WAIT) -> None:
        self._parties = parties
        self._arrived = 0
        self._open = asyncio.Event()
        self._hold = hold

    async def arrive_and_wait(self) -> None:
        self._arrived += 1
        if self._arrived >= self._parties:
            self._open.set()
        async with asyncio.timeout(self._hold):
            await self._open.wait()
