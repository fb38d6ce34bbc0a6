"""Fan-out and fan-in (docs/design.md#cohorts-and-fan-in, docs/graphs.md#fan-in-and-reducers): cohorts,
reducers, bookkeeping keys, nesting and the exactly-once join under concurrency."""

from __future__ import annotations

import asyncio
from collections import Counter, defaultdict
from typing import Any

import pytest

from dwarf import END, Flow, Reducer, Status
from tests.engine.graphs import WAIT, fan_out, for_each, graph_of, noop, proxy_with, setter, steps_named
from tests.engine.graphs_parallel import Latch, Runs, fan_out_when, for_each_chain, nested_for_each

# Per reducer: (the value of its field before the fan-out, the delta a branch writes for its element,
# the merged value after the fan-in of elements 1, 2, 3).
REDUCER_CASES: dict[Reducer, tuple[Any, Any, Any]] = {
    Reducer.ADD: (10, lambda n: n, 16),
    Reducer.APPEND: ([0], lambda n: [n], [0, 1, 2, 3]),
    Reducer.UNION: ([1], lambda n: [n, n + 1], [1, 2, 3, 4]),
    Reducer.MERGE: (
        {"base": 0},
        lambda n: {"k": n, f"e{n}": n},
        {"base": 0, "k": 3, "e1": 1, "e2": 2, "e3": 3},
    ),
    Reducer.AND: (True, lambda n: n != 2, False),
    Reducer.OR: (False, lambda n: n == 2, True),
    Reducer.CONCAT: ("x", lambda n: str(n), "x123"),
    Reducer.MIN: (15, lambda n: n * 10, 10),
    Reducer.MAX: (15, lambda n: n * 10, 30),
    Reducer.REPLACE: (0, lambda n: n, 3),
}


async def test_fan_in_merges_branch_deltas_with_each_reducer_in_element_order(make_engine: Any) -> None:
    """One field per reducer; earlier elements finish later, so completion order is the reverse of
    element order."""

    async def work(flow: Flow) -> None:
        await asyncio.sleep((flow.get_int("itemCount") - 1 - flow.get_int("itemIndex")) * 0.08)
        for reducer, (_, delta, _) in REDUCER_CASES.items():
            flow.set(reducer.value, delta(flow.get_int("item")))

    reducers = {reducer.value: reducer for reducer in REDUCER_CASES}
    engine = await make_engine(
        proxy_with("reduce", for_each("Reduce", reducers=reducers), Split=noop, Work=work, Join=noop)
    )
    initial = {reducer.value: start for reducer, (start, _, _) in REDUCER_CASES.items()}
    _, outcome = await engine.run("reduce", {"items": [1, 2, 3], **initial}, timeout=WAIT)
    assert outcome.status == Status.COMPLETED, outcome.error
    expected = {reducer.value: merged for reducer, (_, _, merged) in REDUCER_CASES.items()}
    assert outcome.state == {"items": [1, 2, 3], **expected}


async def test_replace_keeps_the_last_branch_in_element_order_not_the_last_to_finish(
    make_engine: Any,
) -> None:
    finished: list[int] = []

    async def work(flow: Flow) -> None:
        await asyncio.sleep((2 - flow.get_int("itemIndex")) * 0.1)
        finished.append(flow.get_int("item"))
        flow.set("winner", flow.get_int("item"))

    engine = await make_engine(proxy_with("replace", for_each("Replace"), Split=noop, Work=work, Join=noop))
    _, outcome = await engine.run("replace", {"items": [7, 8, 9]}, timeout=WAIT)
    assert finished == [9, 8, 7]
    assert outcome.state["winner"] == 9


async def test_each_branch_sees_its_element_index_and_count_but_not_the_source_array(
    make_engine: Any,
) -> None:
    seen: dict[int, dict[str, Any]] = {}

    async def work(flow: Flow) -> None:
        seen[flow.get_int("itemIndex")] = flow.snapshot()

    engine = await make_engine(proxy_with("see", for_each("See"), Split=noop, Work=work, Join=noop))
    _, outcome = await engine.run("see", {"items": ["a", "b", "c"], "other": 1}, timeout=WAIT)
    assert outcome.status == Status.COMPLETED
    assert seen == {
        index: {"item": value, "itemIndex": index, "itemCount": 3, "other": 1}
        for index, value in enumerate(["a", "b", "c"])
    }


async def test_source_array_reappears_after_the_fan_in_and_bookkeeping_keys_are_stripped(
    make_engine: Any,
) -> None:
    at_join: list[dict[str, Any]] = []

    async def join(flow: Flow) -> None:
        at_join.append(flow.snapshot())

    engine = await make_engine(proxy_with("strip", for_each("Strip"), Split=noop, Work=noop, Join=join))
    _, outcome = await engine.run("strip", {"items": [1, 2], "other": "kept"}, timeout=WAIT)
    assert at_join == [{"items": [1, 2], "other": "kept"}]
    assert outcome.state == {"items": [1, 2], "other": "kept"}


async def test_bookkeeping_key_that_existed_before_the_fan_out_gets_its_old_value_back(
    make_engine: Any,
) -> None:
    engine = await make_engine(proxy_with("restore", for_each("Restore"), Split=noop, Work=noop, Join=noop))
    _, outcome = await engine.run(
        "restore", {"items": [1, 2], "item": "before", "itemIndex": -1}, timeout=WAIT
    )
    assert outcome.state == {"items": [1, 2], "item": "before", "itemIndex": -1}


@pytest.mark.parametrize("state", [{"items": []}, {}], ids=["empty", "missing"])
async def test_empty_or_missing_array_runs_the_fan_in_directly_on_the_source_state(
    make_engine: Any, state: dict[str, Any]
) -> None:
    """No branch starts; the fan-in runs once on the source step's merged state, then the flow goes on."""
    runs = Runs()

    async def split(flow: Flow) -> None:
        flow.set("split", True)

    async def work(flow: Flow) -> None:
        runs.count("Work")

    async def join(flow: Flow) -> None:
        runs.count("Join")
        flow.set("joinSaw", flow.snapshot())

    rebuilt = graph_of("Empty", "Split", "Work", "Join", "After")
    rebuilt.add_transition_for_each("Split", "Work", "items", "item")
    rebuilt.add_transition("Work", "Join")
    rebuilt.set_fan_in("Join")
    rebuilt.add_transition_chain("Join", "After", END)
    engine = await make_engine(
        proxy_with("empty", rebuilt, Split=split, Work=work, Join=join, After=setter(after=1))
    )
    key, outcome = await engine.run("empty", {**state, "x": 1}, timeout=WAIT)
    assert outcome.status == Status.COMPLETED, outcome.error
    source_state = {**state, "x": 1, "split": True}
    assert outcome.state == {**source_state, "joinSaw": source_state, "after": 1}
    assert [step.task_name for step in await engine.history(key)] == ["Split", "Join", "After"]
    assert runs.counts == Counter({"Join": 1})


async def test_empty_for_each_inside_a_for_each_branch_joins_its_inner_fan_in_and_the_outer_one(
    make_engine: Any,
) -> None:
    """A branch whose own forEach is empty runs its inner fan-in directly and still arrives outside."""
    graph = graph_of("Nested", "Outer", "Inner", "Leaf", "InnerJoin", "OuterJoin")
    graph.add_transition_for_each("Outer", "Inner", "groups", "group")
    graph.add_transition_for_each("Inner", "Leaf", "leaves", "leaf")
    graph.add_transition("Leaf", "InnerJoin")
    graph.set_fan_in("InnerJoin")
    graph.add_transition("InnerJoin", "OuterJoin")
    graph.set_fan_in("OuterJoin")
    graph.add_transition("OuterJoin", END)
    graph.set_reducer("joined", Reducer.APPEND)

    async def inner(flow: Flow) -> None:
        flow.set("leaves", flow.get("group"))

    async def inner_join(flow: Flow) -> None:
        flow.set("joined", [len(flow.get("leaves") or [])])

    engine = await make_engine(
        proxy_with("nested", graph, Outer=noop, Inner=inner, Leaf=noop, InnerJoin=inner_join, OuterJoin=noop)
    )
    _, outcome = await engine.run("nested", {"groups": [[1, 2], [], [3]], "joined": []}, timeout=WAIT)
    assert outcome.status == Status.COMPLETED, outcome.error
    assert outcome.state["joined"] == [2, 0, 1]


async def test_every_matching_when_transition_fires_as_a_fan_out_into_the_fan_in(make_engine: Any) -> None:
    runs = Runs()

    def branch(name: str) -> Any:
        async def handler(flow: Flow) -> None:
            runs.count(name)
            flow.set("ran", [name])

        return handler

    async def join(flow: Flow) -> None:
        runs.count("J")

    graph = fan_out_when("When", {"B": "x > 0", "C": "y > 0", "D": "z > 0"})
    graph.set_reducer("ran", Reducer.APPEND)
    engine = await make_engine(
        proxy_with("when", graph, A=noop, B=branch("B"), C=branch("C"), D=branch("D"), J=join)
    )
    key, outcome = await engine.run("when", {"x": 1, "y": 2, "z": 0}, timeout=WAIT)
    assert outcome.status == Status.COMPLETED
    assert outcome.state["ran"] == ["B", "C"]
    assert runs.counts == Counter({"B": 1, "C": 1, "J": 1})
    assert len(await steps_named(engine, key, "J")) == 1


async def test_fan_out_transitions_merge_in_transition_order_not_completion_order(make_engine: Any) -> None:
    def branch(name: str, delay: float) -> Any:
        async def handler(flow: Flow) -> None:
            await asyncio.sleep(delay)
            flow.set("ran", [name])
            flow.set("total", 1)

        return handler

    graph = fan_out("FanOut", ("B", "C", "D"), "J")
    graph.set_reducer("ran", Reducer.APPEND)
    graph.set_reducer("total", Reducer.ADD)
    proxy = proxy_with(
        "fan", graph, A=noop, B=branch("B", 0.2), C=branch("C", 0.1), D=branch("D", 0.0), J=noop
    )
    engine = await make_engine(proxy)
    _, outcome = await engine.run("fan", {"total": 0}, timeout=WAIT)
    assert outcome.status == Status.COMPLETED
    assert outcome.state == {"ran": ["B", "C", "D"], "total": 3}


async def test_fan_in_runs_once_after_every_branch_arrived(make_engine: Any) -> None:
    runs = Runs()
    finished: list[int] = []

    async def work(flow: Flow) -> None:
        await asyncio.sleep(flow.get_int("item") * 0.05)
        finished.append(flow.get_int("item"))

    async def join(flow: Flow) -> None:
        runs.count("Join")
        assert len(finished) == 4

    engine = await make_engine(proxy_with("once", for_each("Once"), Split=noop, Work=work, Join=join))
    key, outcome = await engine.run("once", {"items": [4, 3, 2, 1]}, timeout=WAIT)
    assert outcome.status == Status.COMPLETED, outcome.error
    assert runs["Join"] == 1
    assert len(await steps_named(engine, key, "Join")) == 1


async def test_nested_for_each_joins_each_inner_cohort_before_the_outer_fan_in(make_engine: Any) -> None:
    runs = Runs()
    inner_views: dict[int, dict[str, Any]] = {}

    async def work(flow: Flow) -> None:
        flow.set("total", flow.get_int("n"))
        flow.set("count", 1)

    async def inner_join(flow: Flow) -> None:
        runs.count("InnerJoin")
        inner_views[flow.get_int("groupIndex")] = flow.snapshot()
        flow.set("groupSums", [flow.get_int("total")])

    async def outer_join(flow: Flow) -> None:
        runs.count("OuterJoin")

    graph = nested_for_each(
        reducers={"total": Reducer.ADD, "count": Reducer.ADD, "groupSums": Reducer.APPEND}
    )
    proxy = proxy_with(
        "nested", graph, Split=noop, Inner=noop, Work=work, InnerJoin=inner_join, OuterJoin=outer_join
    )
    engine = await make_engine(proxy)
    groups = [[1, 2], [3, 4, 5], [6]]
    _, outcome = await engine.run("nested", {"groups": groups, "total": 0, "count": 0}, timeout=WAIT)
    assert outcome.status == Status.COMPLETED, outcome.error
    assert outcome.state == {"groups": groups, "total": 21, "count": 6, "groupSums": [3, 12, 6]}
    assert runs.counts == Counter({"InnerJoin": 3, "OuterJoin": 1})
    assert runs.order[-1] == "OuterJoin"
    for index, group in enumerate(groups):
        assert inner_views[index] == {
            "group": group,
            "groupIndex": index,
            "groupCount": 3,
            "total": sum(group),
            "count": len(group),
        }


async def test_reducer_type_mismatch_fails_the_flow_with_a_clear_error(make_engine: Any) -> None:
    runs = Runs()

    async def work(flow: Flow) -> None:
        flow.set("total", "three" if flow.get_int("item") == 3 else flow.get_int("item"))

    async def join(flow: Flow) -> None:
        runs.count("Join")

    graph = for_each("Mismatch", reducers={"total": Reducer.ADD})
    engine = await make_engine(proxy_with("mismatch", graph, Split=noop, Work=work, Join=join))
    _, outcome = await engine.run("mismatch", {"items": [1, 2, 3], "total": 0}, timeout=WAIT)
    assert outcome.status == Status.FAILED
    assert "'add'" in outcome.error
    assert "'total'" in outcome.error
    assert "string" in outcome.error
    assert runs["Join"] == 0


async def test_deltas_of_a_chain_inside_each_branch_are_counted_once(make_engine: Any) -> None:
    async def first(flow: Flow) -> None:
        flow.set("total", flow.get_int("item"))

    async def second(flow: Flow) -> None:
        flow.set("visits", 1)

    graph = for_each_chain("Chain", "First", "Second", reducers={"total": Reducer.ADD, "visits": Reducer.ADD})
    engine = await make_engine(proxy_with("chain", graph, Split=noop, First=first, Second=second, Join=noop))
    _, outcome = await engine.run("chain", {"items": [1, 2, 3, 4], "total": 100, "visits": 0}, timeout=WAIT)
    assert outcome.status == Status.COMPLETED, outcome.error
    assert outcome.state["total"] == 110
    assert outcome.state["visits"] == 4


async def test_second_step_of_a_branch_sees_the_first_steps_changes(make_engine: Any) -> None:
    seen: dict[int, int] = {}

    async def first(flow: Flow) -> None:
        flow.set("mark", flow.get_int("item") * 10)

    async def second(flow: Flow) -> None:
        seen[flow.get_int("item")] = flow.get_int("mark")

    graph = for_each_chain("See2", "First", "Second")
    engine = await make_engine(proxy_with("see2", graph, Split=noop, First=first, Second=second, Join=noop))
    _, outcome = await engine.run("see2", {"items": [1, 2]}, timeout=WAIT)
    assert outcome.status == Status.COMPLETED
    assert seen == {1: 10, 2: 20}


RACE_FLOWS = 30
RACE_WIDTH = 8


async def test_simultaneous_last_arrivals_on_two_replicas_start_exactly_one_fan_in(make_engine: Any) -> None:
    """Every branch of a flow waits for all its siblings, then they finish together; each replica holds at
    most 4 of the 8 branches, so the last arrivals race across replicas. Each flow's fan-in must run once."""
    latches: defaultdict[str, Latch] = defaultdict(lambda: Latch(RACE_WIDTH))
    joins: Counter[str] = Counter()

    async def work(flow: Flow) -> None:
        await latches[flow.flow_key].arrive_and_wait()
        flow.set("total", flow.get_int("item"))

    async def join(flow: Flow) -> None:
        joins[flow.flow_key] += 1

    graph = for_each("Race", reducers={"total": Reducer.ADD})
    proxy = proxy_with("race", graph, Split=noop, Work=work, Join=join)
    replicas = [await make_engine(proxy, workers=4, workers_per_conn=1) for _ in range(2)]
    items = list(range(1, RACE_WIDTH + 1))
    keys = []
    for index in range(RACE_FLOWS):
        key, outcome = await replicas[index % 2].run("race", {"items": items, "total": 0}, timeout=WAIT)
        assert outcome.status == Status.COMPLETED, outcome.error
        assert outcome.state["total"] == sum(items)
        keys.append(key)
    await asyncio.sleep(0.2)  # a duplicate fan-in, if any, would have started by now
    assert {key: joins[key] for key in keys} == dict.fromkeys(keys, 1)
    for key in keys[:3]:
        assert len(await steps_named(replicas[0], key, "Join")) == 1


async def test_a_field_written_only_by_an_early_retry_attempt_of_a_branch_reaches_the_fan_in(
    make_engine: Any,
) -> None:
    """A retry's next attempt sees what the last one wrote, so the branch contributes it at the join."""

    async def work(flow: Flow) -> None:
        item = flow.get_int("item")
        if flow.attempt == 0:
            flow.set("firstTry", [item])
            assert flow.retry(0, 1, 0, 0)
            return
        assert flow.get("firstTry") == [item]  # the retry attempt sees it
        flow.set("secondTry", [item])

    graph = for_each("Retried", reducers={"firstTry": Reducer.APPEND, "secondTry": Reducer.APPEND})
    engine = await make_engine(proxy_with("retried", graph, Split=noop, Work=work, Join=noop))
    _, outcome = await engine.run("retried", {"items": [1, 2, 3]}, timeout=WAIT)
    assert outcome.status == Status.COMPLETED, outcome.error
    assert outcome.state["firstTry"] == [1, 2, 3]
    assert outcome.state["secondTry"] == [1, 2, 3]
