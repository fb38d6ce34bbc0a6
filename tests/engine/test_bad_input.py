"""Bad input is refused with nothing written (docs/design.md#storable-values, docs/operations.md#errors),
and every bad key is the same NotFoundError (docs/design.md#keys)."""

from __future__ import annotations

import math
from datetime import datetime
from typing import Any

import pytest

from dwarf import (
    END,
    BadRequestError,
    Flow,
    FlowOptions,
    Graph,
    InvalidGraphError,
    NotFoundError,
    Query,
    Status,
)
from dwarf.engine import Engine, TestProxy
from tests.engine.graphs import WAIT, chain, graph_of, noop, not_refused, proxy_with


async def _nothing_written(engine: Engine) -> bool:
    page, cursor = await engine.list(Query(include_subgraphs=True))
    [shard] = await engine.shard_info()
    return page == [] and cursor == "" and (shard.flows, shard.steps) == (0, 0)


def _invalid_graphs() -> dict[str, Graph]:
    empty = Graph("Empty")
    unreachable = chain("Unreachable", "A")
    unreachable.add_task("Island", "Island")
    no_end = graph_of("NoEnd", "A", "B")
    no_end.add_transition("A", "B")
    bad_expression = graph_of("BadExpression", "A", "B")
    bad_expression.add_transition_when("A", "B", "x >")
    bad_expression.add_transition("B", END)
    mixed_switch = graph_of("MixedSwitch", "A", "B", "C")
    mixed_switch.add_transition_switch("A", "B", "true")
    mixed_switch.add_transition("A", "C")
    mixed_switch.add_transition("B", END)
    mixed_switch.add_transition("C", END)
    unjoined = graph_of("Unjoined", "A", "B", "C")
    unjoined.add_transition_fan_out("A", "B", "C")
    unjoined.add_transition("B", END)
    unjoined.add_transition("C", END)
    dangling = chain("Dangling", "A")
    dangling.add_transition("A", "Ghost")
    return {
        "no tasks": empty,
        "unreachable node": unreachable,
        "no path to END": no_end,
        "unparsable expression": bad_expression,
        "switch mixed with plain": mixed_switch,
        "fan-out without fan-in": unjoined,
        "transition to an unknown node": dangling,
    }


INVALID = _invalid_graphs()


async def test_invalid_graph_is_refused_at_create_with_nothing_written(make_engine: Any) -> None:
    proxy = TestProxy()
    for case, graph in INVALID.items():
        proxy.handle_graph(case, graph)
    engine = await make_engine(proxy)
    cases = {case: (lambda case=case: engine.create(case)) for case in INVALID}
    assert await not_refused(cases, InvalidGraphError) == []
    assert await _nothing_written(engine)


async def test_invalid_graph_makes_run_raise_invalid_graph_error(make_engine: Any) -> None:
    proxy = TestProxy()
    proxy.handle_graph("invalid", Graph("Empty"))
    engine = await make_engine(proxy)
    with pytest.raises(InvalidGraphError):
        await engine.run("invalid", timeout=WAIT)


async def test_host_returning_something_other_than_a_graph_is_an_invalid_graph(make_engine: Any) -> None:
    class OddHost(TestProxy):
        async def load_graph(self, workflow_url: str) -> Any:
            return {"name": "not a Graph"}

    engine = await make_engine(OddHost())
    with pytest.raises(InvalidGraphError):
        await engine.create("odd")
    assert await _nothing_written(engine)


async def test_unknown_workflow_is_not_found_with_nothing_written(make_engine: Any) -> None:
    engine = await make_engine(TestProxy())
    cases = {"create": lambda: engine.create("nowhere"), "run": lambda: engine.run("nowhere", timeout=WAIT)}
    assert await not_refused(cases, NotFoundError) == []
    assert await _nothing_written(engine)


def _one() -> TestProxy:
    return proxy_with("one", chain("One", "A"), A=noop)


NON_JSON_VALUES: dict[str, Any] = {
    "set": {1, 2},
    "bytes": b"raw",
    "datetime": datetime(2025, 1, 1),
    "nan": math.nan,
    "infinity": math.inf,
    "object": object(),
    "non-string key": {1: "one"},
    "tuple key": {(1, 2): "pair"},
}


async def test_non_json_initial_state_is_a_bad_request_with_nothing_written(make_engine: Any) -> None:
    engine = await make_engine(_one())
    cases = {
        kind: (lambda value=value: engine.create("one", {"field": value}))
        for kind, value in NON_JSON_VALUES.items()
    }
    cases["nested"] = lambda: engine.create("one", {"outer": {"inner": [1, {2, 3}]}})
    assert await not_refused(cases, BadRequestError) == []
    assert await _nothing_written(engine)


async def test_initial_state_that_is_not_an_object_is_a_bad_request(make_engine: Any) -> None:
    engine = await make_engine(_one())
    cases = {
        type(state).__name__: (lambda state=state: engine.create("one", state))
        for state in (["a", "list"], "text", 42)
    }
    assert await not_refused(cases, BadRequestError) == []
    assert await _nothing_written(engine)


async def test_non_json_baggage_is_a_bad_request_with_nothing_written(make_engine: Any) -> None:
    engine = await make_engine(_one())
    cases = {
        kind: (lambda value=value: engine.create("one", options=FlowOptions(baggage={"x": value})))
        for kind, value in NON_JSON_VALUES.items()
    }
    assert await not_refused(cases, BadRequestError) == []
    assert await _nothing_written(engine)


BAD_OPTIONS: dict[str, Any] = {
    "negative priority": FlowOptions(priority=-1),
    "bool priority": FlowOptions(priority=True),
    "float priority": FlowOptions(priority=1.5),  # type: ignore[arg-type]
    "negative fairness weight": FlowOptions(fairness_weight=-1.0),
    "nan fairness weight": FlowOptions(fairness_weight=math.nan),
    "non-string fairness key": FlowOptions(fairness_key=5),  # type: ignore[arg-type]
    "negative time budget": FlowOptions(time_budget=-1),
    "non-numeric time budget": FlowOptions(time_budget="1s"),  # type: ignore[arg-type]
    "non-string thread key": FlowOptions(thread_key=5),  # type: ignore[arg-type]
    "not a FlowOptions": {"priority": 1},
}


async def test_bad_options_are_a_bad_request_with_nothing_written(make_engine: Any) -> None:
    engine = await make_engine(_one())
    cases = {
        case: (lambda options=options: engine.create("one", options=options))
        for case, options in BAD_OPTIONS.items()
    }
    assert await not_refused(cases, BadRequestError) == []
    assert await _nothing_written(engine)


async def test_empty_or_non_string_workflow_url_is_a_bad_request(make_engine: Any) -> None:
    engine = await make_engine(_one())
    cases = {repr(url): (lambda url=url: engine.create(url)) for url in ("", None, 5)}
    assert await not_refused(cases, BadRequestError) == []
    assert await _nothing_written(engine)


async def test_unknown_thread_key_is_not_found_with_nothing_written(make_engine: Any) -> None:
    engine = await make_engine(_one())
    with pytest.raises(NotFoundError):
        await engine.create("one", options=FlowOptions(thread_key="1-999-AAAAAAAAAAAAAAAA"))
    assert await _nothing_written(engine)


def _interrupting() -> TestProxy:
    async def ask(flow: Flow) -> None:
        flow.interrupt({"question": "?"})

    return proxy_with("ask", chain("Ask", "Ask"), Ask=ask)


async def test_non_json_resume_data_is_a_bad_request_and_the_flow_stays_interrupted(make_engine: Any) -> None:
    engine = await make_engine(_interrupting())
    key, _ = await engine.run("ask", timeout=WAIT)
    before = await engine.fingerprint(key)
    cases = {
        kind: (lambda value=value: engine.resume(key, {"answer": value}))
        for kind, value in NON_JSON_VALUES.items()
    }
    cases["not an object"] = lambda: engine.resume(key, ["yes"])  # type: ignore[arg-type]
    assert await not_refused(cases, BadRequestError) == []
    assert await engine.fingerprint(key) == before
    assert (await engine.snapshot(key)).status == Status.INTERRUPTED


async def test_non_json_additional_state_of_continue_thread_is_a_bad_request(make_engine: Any) -> None:
    engine = await make_engine(_one())
    key, _ = await engine.run("one", timeout=WAIT)
    with pytest.raises(BadRequestError):
        await engine.continue_thread(key, {"x": {1, 2}})
    page, _ = await engine.list()
    assert [s.flow_key for s in page] == [key]


async def test_malformed_list_query_is_a_bad_request(make_engine: Any) -> None:
    engine = await make_engine(_one())
    queries = {
        "status": Query(status="bogus"),
        "limit": Query(limit=-1),
        "cursor": Query(cursor="%%%not-a-cursor%%%"),
        "priority": Query(priority=-1),
        "older_than": Query(older_than=-5),
        "not a Query": {"status": "completed"},
    }
    cases = {case: (lambda query=query: engine.list(query)) for case, query in queries.items()}
    assert await not_refused(cases, BadRequestError) == []


async def test_task_setting_a_non_json_value_fails_the_flow(make_engine: Any) -> None:
    async def bad(flow: Flow) -> None:
        flow.set("when", datetime(2025, 1, 1))

    engine = await make_engine(proxy_with("bad", chain("Bad", "A"), A=bad))
    _, outcome = await engine.run("bad", timeout=WAIT)
    assert outcome.status == Status.FAILED
    assert "when" in outcome.error


# --- bad keys ---


def _bad_keys(good: str, others: list[str]) -> dict[str, str]:
    """Every way a key can be wrong, derived from a real key ``good`` and real keys of other kinds."""
    flow_key = good
    shard, flow_id, token = flow_key.split("-", 2)
    other_token = ("B" if token[0] != "B" else "C") + token[1:]
    # A real key of another kind (a step key for a flow, a flow key for a step) whose id differs.
    other_kind = next(k for k in others if k.split("-", 2)[1] != flow_id)
    return {
        "empty": "",
        "garbage": "not-a-key",
        "two parts": f"{shard}-{flow_id}",
        "non-numeric id": f"{shard}-x-{token}",
        "short token": f"{shard}-{flow_id}-{token[:-1]}",
        "bad token character": f"{shard}-{flow_id}-{token[:-1]}*",
        "unknown id": f"{shard}-{int(flow_id) + 1000}-{token}",
        "zero id": f"{shard}-0-{token}",
        "wrong token": f"{shard}-{flow_id}-{other_token}",
        "wrong shard": f"{int(shard) + 1}-{flow_id}-{token}",
        "shard zero": f"0-{flow_id}-{token}",
        "key of another kind": other_kind,
    }


async def _flow_with_steps(engine: Engine) -> tuple[str, list[str]]:
    key, _ = await engine.run("two", timeout=WAIT)
    return key, [step.step_key for step in await engine.history(key)]


def _two() -> TestProxy:
    return proxy_with("two", chain("Two", "A", "B"), A=noop, B=noop)


FLOW_KEY_OPERATIONS = ["wait", "snapshot", "history", "history_mermaid", "fingerprint", "cancel", "resume"]


async def _call(engine: Engine, operation: str, key: str) -> Any:
    if operation == "wait":
        return await engine.wait(key, timeout=1)
    if operation == "resume":
        return await engine.resume(key, {})
    return await getattr(engine, operation)(key)


async def test_every_bad_flow_key_is_not_found_by_every_operation(make_engine: Any) -> None:
    engine = await make_engine(_two())
    key, steps = await _flow_with_steps(engine)
    cases = {
        f"{operation} with {kind}": (lambda operation=operation, bad=bad: _call(engine, operation, bad))
        for operation in FLOW_KEY_OPERATIONS
        for kind, bad in _bad_keys(key, steps).items()
    }
    assert await not_refused(cases, NotFoundError) == []


async def test_every_bad_step_key_is_not_found(make_engine: Any) -> None:
    engine = await make_engine(_two())
    key, steps = await _flow_with_steps(engine)
    cases = {
        kind: (lambda bad=bad: engine.step(bad)) for kind, bad in _bad_keys(steps[1], [key, steps[0]]).items()
    }
    assert await not_refused(cases, NotFoundError) == []


async def test_every_bad_thread_key_of_continue_thread_is_not_found(make_engine: Any) -> None:
    engine = await make_engine(_two())
    key, steps = await _flow_with_steps(engine)
    cases = {
        kind: (lambda bad=bad: engine.continue_thread(bad)) for kind, bad in _bad_keys(key, steps).items()
    }
    assert await not_refused(cases, NotFoundError) == []


async def test_bad_flow_keys_are_indistinguishable(make_engine: Any) -> None:
    engine = await make_engine(_two())
    key, steps = await _flow_with_steps(engine)
    messages = set()
    for bad in _bad_keys(key, steps).values():
        with pytest.raises(NotFoundError) as caught:
            await engine.snapshot(bad)
        messages.add(str(caught.value))
    assert len(messages) == 1


async def test_bad_step_keys_are_indistinguishable(make_engine: Any) -> None:
    engine = await make_engine(_two())
    key, steps = await _flow_with_steps(engine)
    messages = set()
    for bad in _bad_keys(steps[1], [key, steps[0]]).values():
        with pytest.raises(NotFoundError) as caught:
            await engine.step(bad)
        messages.add(str(caught.value))
    assert len(messages) == 1
