"""Graph: builders, routing queries, every validation rule, and the canonical JSON form."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dwarf.errors import BadRequestError, InvalidGraphError
from dwarf.workflow.graph import END, GRAPH_FORMAT_VERSION, Graph, Node, Transition
from dwarf.workflow.reducers import Reducer


def tasks(graph: Graph, *names: str) -> Graph:
    for name in names:
        graph.add_task(name, f"svc/{name.lower()}")
    return graph


def fan_out_fan_in() -> Graph:
    g = tasks(Graph("FanIn"), "Split", "A", "B", "Join")
    g.add_transition_fan_out("Split", "A", "B")
    g.add_transition("A", "Join")
    g.add_transition("B", "Join")
    g.add_transition("Join", END)
    g.set_fan_in("Join")
    return g


def assert_invalid(graph: Graph, *fragments: str) -> str:
    with pytest.raises(InvalidGraphError) as caught:
        graph.validate()
    message = str(caught.value)
    for fragment in fragments:
        assert fragment in message, f"{fragment!r} not in {message!r}"
    return message


def document(**overrides: Any) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "formatVersion": GRAPH_FORMAT_VERSION,
        "name": "G",
        "entryPoint": "A",
        "nodes": [{"name": "A", "url": "svc/a"}, {"name": "B", "url": "svc/b"}],
        "transitions": [{"from": "A", "to": "B"}, {"from": "B", "to": END}],
    }
    doc.update(overrides)
    return doc


def from_doc(doc: dict[str, Any]) -> Graph:
    return Graph.from_json(json.dumps(doc))


# ------------------------------------------------------------------------------------------ builders


def test_end_is_the_reference_spelling() -> None:
    assert END == "END"


def test_entry_point_defaults_to_first_task_added() -> None:
    g = tasks(Graph("G"), "First", "Second")
    assert g.entry_point == "First"


def test_set_entry_point_overrides_the_default_and_sticks() -> None:
    g = tasks(Graph("G"), "First", "Second")
    g.set_entry_point("Second")
    g.add_task("Third", "svc/third")
    assert g.entry_point == "Second"


def test_empty_graph_has_no_entry_point() -> None:
    assert Graph("G").entry_point == ""


def test_set_endpoint_replaces_url_and_keeps_declaration_order() -> None:
    g = tasks(Graph("G"), "A", "B")
    g.set_endpoint("A", "svc/other")
    assert g.nodes == [Node("A", "svc/other", False), Node("B", "svc/b", False)]
    assert g.url_of("A") == "svc/other"


def test_the_same_url_may_serve_several_node_names() -> None:
    g = Graph("G")
    g.add_task("Inner", "svc/work")
    g.add_task("Outer", "svc/work")
    assert [n.url for n in g.nodes] == ["svc/work", "svc/work"]


def test_url_of_maps_end_to_itself_and_unknown_to_empty() -> None:
    g = tasks(Graph("G"), "A")
    assert g.url_of(END) == END
    assert g.url_of("Nope") == ""


def test_transitions_are_not_auto_declared_as_tasks() -> None:
    g = Graph("G")
    g.add_transition("A", "B")
    assert g.nodes == []
    assert g.transitions == [Transition("A", "B")]


def test_each_builder_records_its_kind_of_transition_in_order() -> None:
    g = Graph("G")
    g.add_transition("A", "B")
    g.add_transition_when("A", "C", "x > 1")
    g.add_transition_switch("D", "E", "true")
    g.add_transition_goto("A", "D")
    g.add_transition_for_each("A", "F", "items", "item")
    g.add_transition_on_error("A", "H")
    assert g.transitions == [
        Transition("A", "B"),
        Transition("A", "C", when="x > 1"),
        Transition("D", "E", when="true", switch=True),
        Transition("A", "D", with_goto=True),
        Transition("A", "F", for_each="items", as_="item"),
        Transition("A", "H", on_error=True),
    ]
    assert [t.kind for t in g.transitions] == ["plain", "when", "switch", "goto", "for_each", "on_error"]
    assert [t.fans_out for t in g.transitions] == [True, True, False, False, True, False]


def test_add_transition_when_with_empty_expression_is_plain() -> None:
    g = Graph("G")
    g.add_transition_when("A", "B", "")
    assert g.transitions[0].kind == "plain"


def test_chain_wires_consecutive_pairs() -> None:
    g = Graph("G")
    g.add_transition_chain("A", "B", "C", END)
    assert g.transitions == [Transition("A", "B"), Transition("B", "C"), Transition("C", END)]


@pytest.mark.parametrize("names", [(), ("Solo",)])
def test_chain_of_fewer_than_two_names_adds_nothing(names: tuple[str, ...]) -> None:
    g = Graph("G")
    g.add_transition_chain(*names)
    assert g.transitions == []


def test_fan_out_wires_the_source_to_each_target() -> None:
    g = Graph("G")
    g.add_transition_fan_out("A", "B", "C", "D")
    assert g.transitions == [Transition("A", "B"), Transition("A", "C"), Transition("A", "D")]
    g2 = Graph("G")
    g2.add_transition_fan_out("A")
    assert g2.transitions == []


def test_set_reducer_accepts_enum_and_name() -> None:
    g = Graph("G")
    g.set_reducer("total", Reducer.ADD)
    g.set_reducer("items", "append")
    assert g.reducers == {"total": Reducer.ADD, "items": Reducer.APPEND}


def test_set_reducer_rejects_an_unknown_name() -> None:
    with pytest.raises(InvalidGraphError, match="unknown reducer"):
        Graph("G").set_reducer("total", "sum")


def test_invalid_graph_error_is_a_bad_request() -> None:
    assert issubclass(InvalidGraphError, BadRequestError)


BUILDER_CALLS: list[tuple[str, Callable[[Graph, str], None]]] = [
    ("set_endpoint name", lambda g, v: g.set_endpoint(v, "svc/x")),
    ("set_endpoint url", lambda g, v: g.set_endpoint("A", v)),
    ("add_task", lambda g, v: g.add_task(v, "svc/x")),
    ("set_entry_point", lambda g, v: g.set_entry_point(v)),
    ("add_transition from", lambda g, v: g.add_transition(v, "B")),
    ("add_transition to", lambda g, v: g.add_transition("A", v)),
    ("add_transition_when", lambda g, v: g.add_transition_when(v, "B", "x")),
    ("add_transition_switch", lambda g, v: g.add_transition_switch("A", v, "x")),
    ("add_transition_goto", lambda g, v: g.add_transition_goto(v, "B")),
    ("add_transition_for_each source", lambda g, v: g.add_transition_for_each(v, "B", "items", "item")),
    ("add_transition_for_each field", lambda g, v: g.add_transition_for_each("A", "B", v, "item")),
    ("add_transition_for_each as_", lambda g, v: g.add_transition_for_each("A", "B", "items", v)),
    ("add_transition_on_error", lambda g, v: g.add_transition_on_error("A", v)),
    ("add_transition_chain", lambda g, v: g.add_transition_chain("A", v, "C")),
    ("add_transition_fan_out source", lambda g, v: g.add_transition_fan_out(v, "B")),
    ("add_transition_fan_out target", lambda g, v: g.add_transition_fan_out("A", "B", v)),
    ("set_fan_in", lambda g, v: g.set_fan_in(v)),
    ("set_reducer", lambda g, v: g.set_reducer(v, "add")),
]


@pytest.mark.parametrize(("label", "call"), BUILDER_CALLS, ids=[label for label, _ in BUILDER_CALLS])
@pytest.mark.parametrize("bad", ["", 7, None])
def test_builders_reject_empty_or_non_string_names(
    label: str, call: Callable[[Graph, Any], None], bad: object
) -> None:
    g = Graph("G")
    with pytest.raises(InvalidGraphError, match=r"must not be empty|must be a string"):
        call(g, bad)
    assert g.transitions == [] and g.nodes == []


def test_a_failed_builder_call_adds_nothing() -> None:
    g = Graph("G")
    with pytest.raises(InvalidGraphError):
        g.add_transition_fan_out("A", "B", "")
    with pytest.raises(InvalidGraphError):
        g.add_transition_chain("A", "B", "")
    assert g.transitions == []


def test_end_cannot_be_declared_as_a_task() -> None:
    with pytest.raises(InvalidGraphError, match="terminal pseudo-node"):
        Graph("G").set_endpoint(END, "svc/end")


def test_graph_name_must_be_a_string() -> None:
    with pytest.raises(InvalidGraphError, match="graph name must be a string"):
        Graph(None)  # type: ignore[arg-type]


def test_properties_return_copies() -> None:
    g = fan_out_fan_in()
    g.set_reducer("total", "add")
    g.nodes.clear()
    g.transitions.clear()
    g.reducers.clear()
    assert len(g.nodes) == 4
    assert len(g.transitions) == 5
    assert g.reducers == {"total": Reducer.ADD}


def test_nodes_and_transitions_are_frozen() -> None:
    node = Node("A", "svc/a")
    with pytest.raises(dataclasses.FrozenInstanceError):
        node.url = "other"  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        Transition("A", "B").to = "C"  # type: ignore[misc]


def test_node_reports_fan_in_mark() -> None:
    g = fan_out_fan_in()
    assert g.node("Join") == Node("Join", "svc/join", True)
    assert g.node("A").fan_in is False


# ------------------------------------------------------------------------------------ routing queries


def test_node_of_unknown_name_raises_invalid_graph_error() -> None:
    with pytest.raises(InvalidGraphError, match="no task node 'Ghost'"):
        fan_out_fan_in().node("Ghost")
    with pytest.raises(InvalidGraphError):
        fan_out_fan_in().node(END)


def test_has_node() -> None:
    g = fan_out_fan_in()
    assert g.has_node("A")
    assert not g.has_node(END)
    assert not g.has_node("Ghost")


def test_outgoing_lists_every_kind_in_registration_order() -> None:
    g = tasks(Graph("G"), "A", "B", "C", "H")
    g.add_transition_on_error("A", "H")
    g.add_transition_when("A", "B", "x")
    g.add_transition("B", END)
    g.add_transition_goto("A", "C")
    assert g.outgoing("A") == [
        Transition("A", "H", on_error=True),
        Transition("A", "B", when="x"),
        Transition("A", "C", with_goto=True),
    ]
    assert g.outgoing(END) == []


def test_on_error_target() -> None:
    g = tasks(Graph("G"), "A", "H")
    g.add_transition("A", END)
    g.add_transition_on_error("A", "H")
    assert g.on_error_target("A") == "H"
    assert g.on_error_target("H") is None


def test_is_fan_in() -> None:
    g = fan_out_fan_in()
    assert g.is_fan_in("Join")
    assert not g.is_fan_in("A")


def test_fan_out_sources_count_plain_and_when_but_not_switch_goto_or_on_error() -> None:
    g = tasks(Graph("G"), "P", "W", "S", "O", "F", "D", "X", "Y")
    g.add_transition("P", "X")
    g.add_transition_when("P", "Y", "y")
    g.add_transition("W", "X")
    g.add_transition_switch("S", "X", "a")
    g.add_transition_switch("S", "Y", "true")
    g.add_transition("O", "X")
    g.add_transition_goto("O", "Y")
    g.add_transition_on_error("O", "Y")
    g.add_transition_for_each("F", "X", "items", "item")
    g.add_transition("D", "X")
    g.add_transition("D", "X")  # a duplicate fires twice
    assert [name for name in "PWSOFD" if g.is_fan_out_source(name)] == ["P", "F", "D"]


def test_fan_in_for_names_the_cohort_fan_in() -> None:
    g = fan_out_fan_in()
    assert g.fan_in_for("Split") == "Join"
    assert g.fan_in_for("A") is None


def test_fan_in_for_revalidates_after_a_change() -> None:
    g = fan_out_fan_in()
    g.validate()
    g.add_transition("A", END)  # a branch that skips the fan-in
    with pytest.raises(InvalidGraphError):
        g.fan_in_for("Split")


def test_fan_in_for_nested_fan_outs() -> None:
    g = tasks(Graph("Nested"), "S", "O1", "O2", "I1", "I2", "InnerJoin", "OuterJoin")
    g.add_transition_fan_out("S", "O1", "O2")
    g.add_transition_fan_out("O1", "I1", "I2")
    g.add_transition("I1", "InnerJoin")
    g.add_transition("I2", "InnerJoin")
    g.add_transition("InnerJoin", "OuterJoin")
    g.add_transition("O2", "OuterJoin")
    g.add_transition("OuterJoin", END)
    g.set_fan_in("InnerJoin")
    g.set_fan_in("OuterJoin")
    assert g.fan_in_for("O1") == "InnerJoin"
    assert g.fan_in_for("S") == "OuterJoin"


def test_graphs_are_unhashable_and_compare_by_content() -> None:
    assert fan_out_fan_in() == fan_out_fan_in()
    assert fan_out_fan_in() != Graph("FanIn")
    assert fan_out_fan_in() != "FanIn"
    with pytest.raises(TypeError):
        hash(fan_out_fan_in())


def test_repr_names_the_graph() -> None:
    assert repr(fan_out_fan_in()) == "Graph(name='FanIn', nodes=4, transitions=5, entry_point='Split')"


# ------------------------------------------------------------------------------ validation: accepted


def test_linear_graph_is_valid() -> None:
    g = tasks(Graph("G"), "A", "B")
    g.add_transition_chain("A", "B", END)
    g.validate()


def test_nodes_may_be_declared_after_their_transitions() -> None:
    g = Graph("G")
    g.add_transition_chain("A", "B", END)
    tasks(g, "A", "B")
    g.validate()


def test_static_fan_out_fan_in_is_valid() -> None:
    fan_out_fan_in().validate()


def test_for_each_into_fan_in_is_valid() -> None:
    g = tasks(Graph("G"), "Split", "Work", "Join")
    g.add_transition_for_each("Split", "Work", "items", "item")
    g.add_transition("Work", "Join")
    g.add_transition("Join", END)
    g.set_fan_in("Join")
    g.validate()
    assert g.fan_in_for("Split") == "Join"


def test_when_fan_out_needs_and_accepts_a_fan_in() -> None:
    g = tasks(Graph("G"), "S", "A", "B", "Join")
    g.add_transition_when("S", "A", "x > 0")
    g.add_transition_when("S", "B", "x <= 0")
    g.add_transition("A", "Join")
    g.add_transition("B", "Join")
    g.add_transition("Join", END)
    g.set_fan_in("Join")
    g.validate()


def test_branch_may_run_several_steps_and_one_may_go_straight_to_the_fan_in() -> None:
    g = tasks(Graph("G"), "S", "A", "A2", "Join")
    g.add_transition("S", "A")
    g.add_transition("S", "Join")
    g.add_transition_chain("A", "A2", "Join", END)
    g.set_fan_in("Join")
    g.validate()
    assert g.fan_in_for("S") == "Join"


def test_switch_arms_need_no_fan_in_and_may_meet_again() -> None:
    g = tasks(Graph("G"), "Entry", "Router", "A", "B", "C", "After", "H")
    g.add_transition("Entry", "Router")
    g.add_transition_switch("Router", "A", "i == 1")
    g.add_transition_switch("Router", "B", "i == 2")
    g.add_transition_switch("Router", "C", "true")
    g.add_transition_on_error("Router", "H")  # a switch excludes other success transitions, not onError
    for arm in "ABC":
        g.add_transition(arm, "After")
    g.add_transition("After", END)
    g.add_transition("H", END)
    g.validate()
    assert not g.is_fan_out_source("Router")


def test_goto_may_reach_a_node_with_no_other_edge_and_loop_on_itself() -> None:
    g = tasks(Graph("G"), "A", "B", "C")
    g.add_transition("A", "B")
    g.add_transition("B", END)
    g.add_transition_goto("A", "C")
    g.add_transition_goto("A", "A")
    g.add_transition("C", END)
    g.validate()


def test_goto_to_end_is_valid() -> None:
    g = tasks(Graph("G"), "A", "B")
    g.add_transition("A", "B")
    g.add_transition_goto("B", END)
    g.add_transition("B", END)
    g.validate()


def test_goto_inside_a_branch_stays_in_its_cohort() -> None:
    g = fan_out_fan_in()
    g.add_transition_goto("A", "A")
    g.validate()


def test_on_error_handler_inside_a_branch_may_converge_on_the_fan_in() -> None:
    g = fan_out_fan_in()
    g.add_task("Handler", "svc/handler")
    g.add_transition_on_error("A", "Handler")
    g.add_transition("Handler", "Join")
    g.validate()


def test_aliases_put_one_url_inside_and_outside_a_fan_out() -> None:
    g = Graph("Alias")
    g.add_task("S", "host/s")
    g.add_task("Inner", "host/work")
    g.add_task("Outer", "host/work")
    g.add_task("Join", "host/join")
    g.add_transition_for_each("S", "Inner", "items", "item")
    g.add_transition_chain("Inner", "Join", "Outer", END)
    g.set_fan_in("Join")
    g.validate()


def test_retry_loop_through_an_error_handler_is_valid() -> None:
    g = tasks(Graph("RetryLoop"), "A", "B", "Handler", "C")
    g.add_transition("A", "B")
    g.add_transition_on_error("B", "Handler")
    g.add_transition("B", "C")
    g.add_transition("Handler", "B")
    g.add_transition("C", END)
    g.validate()


def test_reference_super_graph_is_valid() -> None:
    g = tasks(Graph("Super"), "TaskA", "TaskB", "TaskC", "ErrorHandler", "TaskD", "SubCall", "TaskE", "TaskZ")
    g.set_fan_in("TaskD")
    g.set_fan_in("TaskE")
    g.add_transition("TaskA", "TaskB")
    g.add_transition_for_each("TaskB", "TaskC", "items", "item")
    g.add_transition_on_error("TaskC", "ErrorHandler")
    g.add_transition("TaskC", "TaskD")
    g.add_transition("ErrorHandler", "TaskD")
    g.add_transition_when("TaskD", "SubCall", "useSubgraph == true")
    g.add_transition_when("TaskD", "TaskE", "useSubgraph != true")
    g.add_transition("SubCall", "TaskE")
    g.add_transition_goto("TaskE", "TaskZ")
    g.add_transition("TaskE", END)
    g.add_transition("TaskZ", END)
    g.validate()
    assert g.fan_in_for("TaskB") == "TaskD"
    assert g.fan_in_for("TaskD") == "TaskE"


def test_reference_soak_graph_with_nested_cohorts_is_valid() -> None:
    g = tasks(Graph("Soak"), "Seed", "FanA", "Work", "Collect", "Loop", "Sub", "BoomR", "Recover", "BoomF")
    g.add_task("Join", "svc/join")
    g.set_fan_in("Collect")
    g.set_fan_in("Join")
    g.set_reducer("work", Reducer.ADD)
    for branch, target in enumerate(["FanA", "Loop", "Sub", "BoomR", "BoomF"]):
        g.add_transition_when("Seed", target, f"branch == {branch}")
    g.add_transition_for_each("FanA", "Work", "items", "item")
    g.add_transition_chain("Work", "Collect", "Join")
    g.add_transition_goto("Loop", "Loop")
    g.add_transition("Loop", "Join")
    g.add_transition("Sub", "Join")
    g.add_transition_on_error("BoomR", "Recover")
    g.add_transition("BoomR", "Join")
    g.add_transition("Recover", "Join")
    g.add_transition_chain("BoomF", "Join", END)
    g.validate()
    assert g.fan_in_for("FanA") == "Collect"
    assert g.fan_in_for("Seed") == "Join"


# ------------------------------------------------------------------------------ validation: rejected


def test_rejects_an_empty_graph_name() -> None:
    g = tasks(Graph(""), "A")
    g.add_transition("A", END)
    assert_invalid(g, "graph name is empty")


def test_rejects_a_graph_without_tasks() -> None:
    assert_invalid(Graph("Lonely"), "graph 'Lonely'", "has no tasks")


def test_rejects_an_entry_point_that_is_not_a_task() -> None:
    g = tasks(Graph("G"), "A")
    g.add_transition("A", END)
    g.set_entry_point("Missing")
    assert_invalid(g, "entry point 'Missing' is not a task")


def test_rejects_end_as_the_entry_point() -> None:
    g = tasks(Graph("G"), "A")
    g.add_transition("A", END)
    g.set_entry_point(END)
    assert_invalid(g, "entry point cannot be END")


def test_rejects_an_empty_entry_point() -> None:
    assert_invalid(from_doc(document(entryPoint="")), "has no entry point")


def test_rejects_fan_in_mark_on_an_unknown_node() -> None:
    g = tasks(Graph("G"), "A", "B")
    g.add_transition_chain("A", "B", END)
    g.set_fan_in("C")
    assert_invalid(g, "set_fan_in names unknown node 'C'")


def test_rejects_fan_in_mark_on_end() -> None:
    g = tasks(Graph("G"), "A")
    g.add_transition("A", END)
    g.set_fan_in(END)
    assert_invalid(g, "set_fan_in cannot mark END")


def test_rejects_an_unknown_reducer_even_if_smuggled_past_set_reducer() -> None:
    g = tasks(Graph("G"), "A")
    g.add_transition("A", END)
    g._reducers["total"] = "sum"  # type: ignore[assignment]  # what the API itself never stores
    assert_invalid(g, "state field 'total'", "unknown reducer 'sum'")


def test_rejects_a_transition_out_of_end() -> None:
    g = tasks(Graph("BadEnd"), "A", "B")
    g.add_transition("A", END)
    g.add_transition(END, "B")
    assert_invalid(g, "transition from 'END' to 'B'", "leaves END")


def test_rejects_a_transition_from_an_undeclared_node() -> None:
    g = tasks(Graph("G"), "A")
    g.add_transition("A", END)
    g.add_transition("Ghost", "A")
    assert_invalid(g, "starts at unknown node 'Ghost'")


def test_rejects_a_transition_into_an_undeclared_node() -> None:
    g = tasks(Graph("G"), "A")
    g.add_transition("A", "Typo")
    g.add_transition("A", END)
    assert_invalid(g, "from 'A' to 'Typo'", "leads to unknown node 'Typo'")


def test_rejects_as_without_for_each() -> None:
    doc = document(transitions=[{"from": "A", "to": "B", "as": "item"}, {"from": "B", "to": END}])
    assert_invalid(from_doc(doc), "has as_ 'item' but an empty for_each field")


def test_rejects_for_each_without_as() -> None:
    doc = document(transitions=[{"from": "A", "to": "B", "forEach": "items"}, {"from": "B", "to": END}])
    assert_invalid(from_doc(doc), "over 'items' has an empty as_ field")


def test_rejects_for_each_combined_with_goto_on_one_transition() -> None:
    doc = document(
        transitions=[
            {"from": "A", "to": "B", "forEach": "items", "as": "item", "withGoto": True},
            {"from": "B", "to": END},
        ]
    )
    assert_invalid(from_doc(doc), "cannot be both forEach and goto")


@pytest.mark.parametrize(
    "extra",
    [{"forEach": "items", "as": "item"}, {"withGoto": True}, {"switch": True, "when": "x"}, {"when": "x"}],
)
def test_rejects_an_on_error_transition_carrying_another_kind(extra: dict[str, Any]) -> None:
    doc = document(transitions=[{"from": "A", "to": "B", "onError": True, **extra}, {"from": "B", "to": END}])
    assert_invalid(from_doc(doc), "onError transition from 'A' to 'B' cannot also carry")


@pytest.mark.parametrize("extra", [{"forEach": "items", "as": "item"}, {"withGoto": True}])
def test_rejects_a_switch_transition_carrying_another_kind(extra: dict[str, Any]) -> None:
    doc = document(
        transitions=[
            {"from": "A", "to": "B", "switch": True, "when": "true", **extra},
            {"from": "B", "to": END},
        ]
    )
    assert_invalid(from_doc(doc), "switch transition from 'A' to 'B'", "forEach or goto")


def test_rejects_a_switch_without_expression() -> None:
    g = tasks(Graph("G"), "Router", "A")
    g.add_transition_switch("Router", "A", "")
    g.add_transition("A", END)
    assert_invalid(g, "switch transition from 'Router' to 'A' has no when expression")


def test_rejects_an_on_error_self_loop() -> None:
    g = tasks(Graph("G"), "A")
    g.add_transition("A", END)
    g.add_transition_on_error("A", "A")
    assert_invalid(g, "leads back to itself", "flow.retry")


@pytest.mark.parametrize("adder", ["add_transition_when", "add_transition_switch"])
def test_rejects_an_unparsable_expression(adder: str) -> None:
    g = tasks(Graph("G"), "A", "B")
    getattr(g, adder)("A", "B", "(((")
    g.add_transition("B", END)
    assert_invalid(g, "transition from 'A' to 'B' has an invalid when expression '((('")


def test_rejects_two_on_error_transitions_from_one_node() -> None:
    g = tasks(Graph("G"), "A", "H1", "H2")
    g.add_transition("A", END)
    g.add_transition_on_error("A", "H1")
    g.add_transition_on_error("A", "H2")
    g.add_transition("H1", END)
    g.add_transition("H2", END)
    assert_invalid(g, "node 'A' has more than one onError transition")


@pytest.mark.parametrize(
    ("adder", "kind"),
    [
        (lambda g: g.add_transition("Router", "B"), "plain"),
        (lambda g: g.add_transition_when("Router", "B", "i == 2"), "when"),
        (lambda g: g.add_transition_for_each("Router", "B", "items", "item"), "for_each"),
        (lambda g: g.add_transition_goto("Router", "B"), "goto"),
    ],
)
def test_rejects_switch_mixed_with_another_success_kind(adder: Callable[[Graph], None], kind: str) -> None:
    g = tasks(Graph("G"), "Router", "A", "B")
    g.add_transition_switch("Router", "A", "i == 1")
    adder(g)
    g.add_transition("A", END)
    g.add_transition("B", END)
    assert_invalid(g, f"node 'Router' mixes switch transitions with a {kind} transition to 'B'")


@pytest.mark.parametrize(
    ("adder", "kind"),
    [
        (lambda g: g.add_transition_for_each("A", "B", "items", "item"), "for_each"),
        (lambda g: g.add_transition_goto("A", "B"), "goto"),
    ],
)
def test_rejects_on_error_beside_for_each_or_goto_on_one_source(
    adder: Callable[[Graph], None], kind: str
) -> None:
    g = tasks(Graph("G"), "A", "B", "H", "Join")
    g.add_transition("A", "Join")
    adder(g)
    g.add_transition_on_error("A", "H")
    g.add_transition("B", "Join")
    g.add_transition("H", END)
    g.add_transition("Join", END)
    assert_invalid(g, f"node 'A' combines an onError transition with a {kind} transition to 'B'")


def test_rejects_an_unreachable_node() -> None:
    g = tasks(Graph("G"), "A", "B", "Island")
    g.add_transition_chain("A", "B", END)
    assert_invalid(g, "node 'Island' is not reachable from entry point 'A'")


def test_rejects_a_graph_with_no_transition_to_end() -> None:
    g = tasks(Graph("Loop"), "A", "B")
    g.add_transition("A", "B")
    g.add_transition("B", "A")
    assert_invalid(g, "no transition leads to END")


def test_rejects_a_fan_in_that_no_fan_out_reaches() -> None:
    g = tasks(Graph("G"), "A", "B")
    g.add_transition_chain("A", "B", END)
    g.set_fan_in("B")
    assert_invalid(g, "fan-in node 'B' is entered from 'A', which runs outside any fan-out")


def test_rejects_a_fan_in_mark_on_an_entry_point_nothing_enters() -> None:
    g = tasks(Graph("G"), "A", "B")
    g.add_transition_chain("A", "B", END)
    g.set_fan_in("A")
    assert_invalid(g, "fan-in node 'A' is not where the branches of any fan-out converge")


def test_rejects_a_goto_into_a_fan_in_from_the_trunk() -> None:
    g = tasks(Graph("G"), "Split", "A", "B", "Join", "After")
    g.add_transition_fan_out("Split", "A", "B")
    g.add_transition("A", "Join")
    g.add_transition("B", "Join")
    g.add_transition_chain("Join", "After", END)
    g.add_transition_goto("After", "Join")
    g.set_fan_in("Join")
    assert_invalid(g, "fan-in node 'Join' is entered from 'After', which runs outside any fan-out")


def test_rejects_branches_converging_on_different_fan_ins() -> None:
    g = tasks(Graph("G"), "S", "A", "B", "J1", "J2", "Done")
    g.add_transition_fan_out("S", "A", "B")
    g.add_transition("A", "J1")
    g.add_transition("B", "J2")
    g.add_transition("J1", "Done")
    g.add_transition("J2", "Done")
    g.add_transition("Done", END)
    g.set_fan_in("J1")
    g.set_fan_in("J2")
    assert_invalid(g, "branches of fan-out 'S' converge on different fan-in nodes 'J1' and 'J2'")


def test_rejects_an_unmarked_convergence_node_and_names_it() -> None:
    g = tasks(Graph("G"), "S", "A", "B", "Meet")
    g.add_transition_fan_out("S", "A", "B")
    g.add_transition("A", "Meet")
    g.add_transition("B", "Meet")
    g.add_transition("Meet", END)
    assert_invalid(g, "branches of fan-out 'S' converge at 'Meet', which is not marked with set_fan_in")


def test_rejects_a_for_each_branch_that_ends_the_flow() -> None:
    g = tasks(Graph("G"), "Split", "Work")
    g.add_transition_for_each("Split", "Work", "items", "item")
    g.add_transition("Work", END)
    assert_invalid(g, "fan-out 'Split': a branch reaches END from 'Work' without passing a fan-in node")


def test_rejects_a_branch_that_skips_the_fan_in() -> None:
    g = tasks(Graph("G"), "Split", "A", "B", "Join")
    g.add_transition_fan_out("Split", "A", "B")
    g.add_transition("A", "Join")
    g.add_transition("B", END)
    g.add_transition("Join", END)
    g.set_fan_in("Join")
    assert_invalid(g, "fan-out 'Split': a branch reaches END from 'B'")


def test_rejects_a_fan_out_straight_to_end() -> None:
    g = tasks(Graph("G"), "S", "A", "Join")
    g.add_transition("S", "A")
    g.add_transition("S", END)
    g.add_transition("A", "Join")
    g.add_transition("Join", END)
    g.set_fan_in("Join")
    assert_invalid(g, "fan-out 'S': a branch reaches END from 'S'")


def test_rejects_a_fan_out_whose_branches_never_reach_a_fan_in() -> None:
    g = tasks(Graph("G"), "Entry", "S", "A", "B")
    g.add_transition_switch("Entry", "S", "go")
    g.add_transition_switch("Entry", END, "true")
    g.add_transition_fan_out("S", "A", "B")
    assert_invalid(g, "fan-out 'S': its branches never reach a fan-in node", "set_fan_in")


def test_rejects_dead_end_branches_that_meet_unmarked() -> None:
    g = tasks(Graph("G"), "Entry", "S", "A", "B", "Meet")
    g.add_transition_switch("Entry", "S", "go")
    g.add_transition_switch("Entry", END, "true")
    g.add_transition_fan_out("S", "A", "B")
    g.add_transition("A", "Meet")
    g.add_transition("B", "Meet")
    assert_invalid(g, "converge at 'Meet', which is not marked with set_fan_in")


def test_rejects_a_goto_that_jumps_out_of_its_cohort() -> None:
    g2 = tasks(Graph("GotoCross"), "S", "A", "B", "Join", "After")
    g2.add_transition_fan_out("S", "A", "B")
    g2.add_transition("A", "Join")
    g2.add_transition("B", "Join")
    g2.add_transition_chain("Join", "After", END)
    g2.add_transition_goto("A", "After")
    g2.set_fan_in("Join")
    assert_invalid(g2, "node 'After' is reached inside", "give each position its own node name")


def test_rejects_a_node_reached_inside_and_outside_a_cohort() -> None:
    g = tasks(Graph("Divergent"), "S", "A", "B", "Shared", "Join")
    g.add_transition_fan_out("S", "A", "B")
    g.add_transition("A", "Shared")
    g.add_transition("B", "Shared")
    g.add_transition("Shared", "Join")
    g.add_transition_goto("Join", "Shared")
    g.add_transition("Join", END)
    g.set_fan_in("Join")
    assert_invalid(g, "node 'Shared' is reached inside the cohort of fan-out 'S' and inside no fan-out")


def test_rejects_a_plain_self_loop_that_makes_a_fan_out() -> None:
    g = tasks(Graph("G"), "A")
    g.add_transition("A", "A")
    g.add_transition("A", END)
    assert_invalid(g, "fan-out 'A'")


def test_duplicate_transitions_fan_out_like_the_reference() -> None:
    g = tasks(Graph("G"), "A", "B")
    g.add_transition("A", "B")
    g.add_transition("A", "B")
    g.add_transition("B", END)
    assert_invalid(g, "fan-out 'A'")


def test_validation_messages_name_the_graph() -> None:
    g = tasks(Graph("Checkout"), "A", "Island")
    g.add_transition("A", END)
    assert assert_invalid(g).startswith("graph 'Checkout': ")


# ------------------------------------------------------------------------------------------------ JSON


def rich_graph() -> Graph:
    g = tasks(Graph('Rich "graph" ü'), "Start", "Router", "Split", "Work", "Join", "Fix", "Alt", "Done")
    g.set_entry_point("Start")
    g.add_transition("Start", "Router")
    g.add_transition_switch("Router", "Split", "kind == 'bulk'")
    g.add_transition_switch("Router", "Alt", "true")
    g.add_transition_on_error("Router", "Fix")
    g.add_transition_for_each("Split", "Work", "items", "item")
    g.add_transition_when("Work", "Join", "ok")
    g.add_transition("Join", "Done")
    g.add_transition_goto("Alt", "Done")
    g.add_transition("Alt", END)
    g.add_transition("Fix", END)
    g.add_transition("Done", END)
    g.set_fan_in("Join")
    g.set_reducer("results", Reducer.APPEND)
    g.set_reducer("count", "add")
    return g


def test_rich_graph_is_valid() -> None:
    rich_graph().validate()


def test_json_round_trip_is_lossless() -> None:
    g = rich_graph()
    restored = Graph.from_json(g.to_json())
    assert restored.to_json() == g.to_json()
    assert restored == g
    assert restored.name == g.name
    assert restored.entry_point == g.entry_point
    assert restored.nodes == g.nodes
    assert restored.transitions == g.transitions
    assert restored.reducers == g.reducers
    restored.validate()
    assert restored.fan_in_for("Split") == "Join"


def test_json_is_ascii_and_keeps_non_ascii_names() -> None:
    g = tasks(Graph("Café 😀"), "Größe")
    g.add_transition("Größe", END)
    text = g.to_json()
    assert text.isascii()
    restored = Graph.from_json(text.encode())
    assert restored.name == "Café 😀"
    assert restored == g


@pytest.mark.parametrize("name", ["Café \ud800", "nul\x00name"], ids=["lone-surrogate", "nul"])
def test_names_no_store_can_hold_are_refused_by_builders_and_json(name: str) -> None:
    with pytest.raises(InvalidGraphError, match="graph name contains"):
        Graph(name)
    document = json.loads(tasks(Graph("G"), "A").to_json())
    document["name"] = name
    with pytest.raises(InvalidGraphError, match="contains"):
        Graph.from_json(json.dumps(document))


def test_validate_result_is_kept_until_the_graph_changes() -> None:
    g = fan_out_fan_in()
    g.validate()
    g.validate()
    g.add_transition("Join", "Ghost")
    assert_invalid(g, "unknown node 'Ghost'")


def test_json_round_trip_of_bytes() -> None:
    g = rich_graph()
    assert Graph.from_json(g.to_json().encode()) == g


def test_json_is_canonical_and_compact() -> None:
    g = tasks(Graph("G"), "A", "B")
    g.add_transition("A", "B")
    g.add_transition_for_each("A", "B", "items", "it")
    g.add_transition("B", END)
    g.set_fan_in("B")
    g.set_reducer("z", "max")
    g.set_reducer("a", "min")
    assert g.to_json() == (
        '{"entryPoint":"A","fanIn":["B"],"formatVersion":1,"name":"G",'
        '"nodes":[{"name":"A","url":"svc/a"},{"name":"B","url":"svc/b"}],'
        '"reducers":{"a":"min","z":"max"},'
        '"transitions":[{"from":"A","to":"B"},{"as":"it","forEach":"items","from":"A","to":"B"},'
        '{"from":"B","to":"END"}]}'
    )


def test_json_does_not_depend_on_reducer_or_fan_in_order() -> None:
    g1, g2 = fan_out_fan_in(), fan_out_fan_in()
    g1.set_reducer("a", "add")
    g1.set_reducer("b", "append")
    g1.set_fan_in("A")
    g2.set_fan_in("A")
    g2.set_reducer("b", "append")
    g2.set_reducer("a", "add")
    assert g1.to_json() == g2.to_json()
    assert g1 == g2


def test_json_keeps_transition_order() -> None:
    g1, g2 = Graph("G"), Graph("G")
    g1.add_transition("A", "B")
    g1.add_transition("A", "C")
    g2.add_transition("A", "C")
    g2.add_transition("A", "B")
    assert g1 != g2


def test_json_round_trips_an_invalid_graph_too() -> None:
    g = Graph("")
    g.add_transition(END, "Ghost")
    g.set_fan_in("Nowhere")
    assert Graph.from_json(g.to_json()) == g


def test_from_json_accepts_explicit_zero_fields() -> None:
    doc = document(
        transitions=[
            {
                "from": "A",
                "to": "B",
                "when": "",
                "withGoto": False,
                "forEach": "",
                "as": "",
                "onError": False,
                "switch": False,
            },
            {"from": "B", "to": END},
        ],
        fanIn=[],
        reducers={},
    )
    g = from_doc(doc)
    assert g.transitions[0] == Transition("A", "B")
    assert g == from_doc(document())


def test_from_json_treats_an_empty_reducer_name_as_replace() -> None:
    assert from_doc(document(reducers={"x": ""})).reducers == {"x": Reducer.REPLACE}


def _without(key: str) -> dict[str, Any]:
    doc = document()
    del doc[key]
    return doc


MALFORMED: list[tuple[str, Any, str]] = [
    ("not json", "{nope", "does not parse"),
    ("empty", "", "does not parse"),
    ("not utf-8", b"\xff\xfe{", "not UTF-8"),
    ("deeply nested", "[" * 100_000 + "]" * 100_000, "does not parse"),
    ("array", "[]", "must be an object"),
    ("wrong data type", 42, "must be str or bytes"),
    ("missing version", _without("formatVersion"), "lacks formatVersion"),
    ("missing name", _without("name"), "lacks name"),
    ("missing entry point", _without("entryPoint"), "lacks entryPoint"),
    ("missing nodes", _without("nodes"), "lacks nodes"),
    ("missing transitions", _without("transitions"), "lacks transitions"),
    ("unknown key", document(tasks=[]), "unknown keys tasks"),
    ("future version", document(formatVersion=2), "formatVersion 2 is not supported"),
    ("bool version", document(formatVersion=True), "formatVersion True"),
    ("name not string", document(name=1), "name must be a string"),
    ("entry point not string", document(entryPoint=None), "entryPoint must be a string"),
    ("nodes not array", document(nodes={}), "nodes must be an array"),
    ("node not object", document(nodes=["A"]), "nodes[0] must be an object"),
    ("node without url", document(nodes=[{"name": "A"}]), "nodes[0] lacks url"),
    ("node extra key", document(nodes=[{"name": "A", "url": "a", "fanIn": True}]), "unknown keys fanIn"),
    ("node empty name", document(nodes=[{"name": "", "url": "a"}]), "nodes[0].name must not be empty"),
    ("node empty url", document(nodes=[{"name": "A", "url": ""}]), "nodes[0].url must not be empty"),
    ("node url not string", document(nodes=[{"name": "A", "url": 3}]), "nodes[0].url must be a string"),
    ("node END", document(nodes=[{"name": END, "url": "e"}]), "declares END"),
    (
        "duplicate node",
        document(nodes=[{"name": "A", "url": "a"}, {"name": "A", "url": "b"}]),
        "declares node 'A' a second time",
    ),
    ("transitions not array", document(transitions="A->B"), "transitions must be an array"),
    ("transition not object", document(transitions=[["A", "B"]]), "transitions[0] must be an object"),
    ("transition without to", document(transitions=[{"from": "A"}]), "transitions[0] lacks to"),
    ("transition empty from", document(transitions=[{"from": "", "to": "B"}]), "from must not be empty"),
    (
        "transition unknown key",
        document(transitions=[{"from": "A", "to": "B", "if": "x"}]),
        "unknown keys if",
    ),
    (
        "transition flag not boolean",
        document(transitions=[{"from": "A", "to": "B", "onError": 1}]),
        "onError must be a boolean",
    ),
    (
        "transition when not string",
        document(transitions=[{"from": "A", "to": "B", "when": True}]),
        "when must be a string",
    ),
    ("fan-in not array", document(fanIn="A"), "fanIn must be an array"),
    ("fan-in not string", document(fanIn=[1]), "fanIn[0] must be a string"),
    ("reducers not object", document(reducers=[]), "reducers must be an object"),
    ("reducer not string", document(reducers={"x": 1}), "reducer of 'x' must be a string"),
    ("reducer field empty", document(reducers={"": "add"}), "reducer field must not be empty"),
    ("unknown reducer", document(reducers={"x": "sum"}), "reducer of 'x': unknown reducer 'sum'"),
]


@pytest.mark.parametrize(("label", "data", "fragment"), MALFORMED, ids=[label for label, _, _ in MALFORMED])
def test_from_json_rejects_malformed_input(label: str, data: Any, fragment: str) -> None:
    if isinstance(data, dict):
        data = json.dumps(data)
    with pytest.raises(InvalidGraphError) as caught:
        Graph.from_json(data)
    assert fragment in str(caught.value)


# ------------------------------------------------------------------------------------ property tests

# Any text a store can hold: UTF-8 (no lone surrogates) and no NUL (see check_text).
_names = st.text(st.characters(codec="utf-8", exclude_characters="\x00"), min_size=1, max_size=12)


@st.composite
def valid_graphs(draw: st.DrawFn) -> Graph:
    """Random graphs valid by construction: a trunk of segments, each a task, a static or forEach fan-out
    with its fan-in, or a switch whose arms meet again; onError handlers and gotos sprinkled on the trunk."""
    counter = iter(range(10_000))

    def fresh(prefix: str) -> str:
        return f"{prefix}{next(counter)}"

    g = Graph(draw(_names))
    urls = st.one_of(_names, st.sampled_from(["svc/shared", "svc/other"]))

    def task(prefix: str) -> str:
        name = fresh(prefix)
        g.add_task(name, draw(urls))
        return name

    trunk = [task("T")]
    current = trunk[0]
    for _ in range(draw(st.integers(0, 5))):
        shape = draw(st.sampled_from(["task", "fan_out", "for_each", "switch", "when_fan_out"]))
        if shape == "task":
            nxt = task("T")
            g.add_transition(current, nxt)
        elif shape in ("fan_out", "when_fan_out"):
            join = task("J")
            g.set_fan_in(join)
            branches = [task("B") for _ in range(draw(st.integers(2, 3)))]
            for branch in branches:
                if shape == "fan_out":
                    g.add_transition(current, branch)
                else:
                    g.add_transition_when(current, branch, draw(st.sampled_from(["x > 1", "ok", "!done"])))
                tail = branch
                for _ in range(draw(st.integers(0, 2))):
                    step = task("B")
                    g.add_transition(tail, step)
                    tail = step
                g.add_transition(tail, join)
            nxt = join
        elif shape == "for_each":
            join = task("J")
            g.set_fan_in(join)
            work = task("W")
            g.add_transition_for_each(current, work, draw(_names), draw(_names))
            g.add_transition(work, join)
            nxt = join
        else:
            nxt = task("M")
            for index in range(draw(st.integers(1, 3))):
                arm = task("A")
                g.add_transition_switch(current, arm, "true" if index == 2 else f"i == {index}")
                g.add_transition(arm, nxt)
        if shape != "for_each" and draw(st.booleans()):
            handler = task("H")
            g.add_transition_on_error(current, handler)
            g.add_transition(handler, END)
        trunk.append(nxt)
        current = nxt
    g.add_transition(current, END)
    for _ in range(draw(st.integers(0, 2))):
        source = draw(st.sampled_from(trunk))
        if not any(t.switch or t.on_error or t.for_each for t in g.outgoing(source)):
            targets = [name for name in trunk if not g.is_fan_in(name)]
            g.add_transition_goto(source, draw(st.sampled_from([*targets, END])))
    for field in draw(st.lists(_names, max_size=3, unique=True)):
        g.set_reducer(field, draw(st.sampled_from(list(Reducer))))
    return g


@settings(max_examples=150, suppress_health_check=[HealthCheck.too_slow])
@given(valid_graphs())
def test_random_valid_graphs_validate_and_round_trip(g: Graph) -> None:
    g.validate()
    text = g.to_json()
    restored = Graph.from_json(text)
    assert restored.to_json() == text
    assert restored == g
    assert (restored.name, restored.entry_point) == (g.name, g.entry_point)
    assert restored.nodes == g.nodes
    assert restored.transitions == g.transitions
    assert restored.reducers == g.reducers
    restored.validate()
    for node in g.nodes:
        assert restored.fan_in_for(node.name) == g.fan_in_for(node.name)


_json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=5),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3),
    max_leaves=10,
)


@settings(max_examples=200)
@given(st.sampled_from([*sorted(document().keys()), "fanIn", "reducers"]), _json_values)
def test_from_json_of_any_field_value_raises_only_invalid_graph_error(key: str, value: Any) -> None:
    doc = document()
    doc[key] = value
    try:
        Graph.from_json(json.dumps(doc))
    except InvalidGraphError:
        pass


@settings(max_examples=200)
@given(st.text(max_size=40) | st.binary(max_size=40))
def test_from_json_of_arbitrary_text_raises_only_invalid_graph_error(data: str | bytes) -> None:
    try:
        Graph.from_json(data)
    except InvalidGraphError:
        pass
