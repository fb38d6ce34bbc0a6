"""Unit tests of ``route_after_success`` (docs/graphs.md#transitions): which successors a completed step
starts."""

from __future__ import annotations

import pytest

from dwarf import END, Graph
from dwarf.engine.transitions import Branch, Route, RoutingError, route_after_success


def _graph(*nodes: str) -> Graph:
    graph = Graph("Routes")
    for node in nodes:
        graph.add_task(node, node)
    return graph


def _nodes(route: Route) -> list[str]:
    return [branch.node for branch in route.branches]


# --- plain and END ---


def test_plain_transition_routes_to_its_target() -> None:
    graph = _graph("A", "B")
    graph.add_transition("A", "B")
    route = route_after_success(graph, "A", {}, None)
    assert route == Route(branches=(Branch("B"),))
    assert not route.is_fan_out


def test_transition_to_end_counts_an_end_and_starts_nothing() -> None:
    graph = _graph("A")
    graph.add_transition("A", END)
    route = route_after_success(graph, "A", {}, None)
    assert (route.branches, route.ends) == ((), 1)
    assert not route.is_fan_out


def test_node_without_outgoing_transitions_is_a_dead_end() -> None:
    graph = _graph("A")
    assert route_after_success(graph, "A", {}, None) == Route()


def test_two_plain_transitions_fan_out_in_registration_order() -> None:
    graph = _graph("A", "B", "C")
    graph.add_transition_fan_out("A", "C", "B")
    route = route_after_success(graph, "A", {}, None)
    assert _nodes(route) == ["C", "B"]
    assert route.is_fan_out


def test_plain_transition_and_end_together_fan_out() -> None:
    graph = _graph("A", "B")
    graph.add_transition("A", "B")
    graph.add_transition("A", END)
    route = route_after_success(graph, "A", {}, None)
    assert (_nodes(route), route.ends) == (["B"], 1)
    assert route.is_fan_out


def test_chain_routes_each_node_to_the_next() -> None:
    graph = _graph("A", "B", "C")
    graph.add_transition_chain("A", "B", "C", END)
    assert _nodes(route_after_success(graph, "A", {}, None)) == ["B"]
    assert _nodes(route_after_success(graph, "B", {}, None)) == ["C"]
    assert route_after_success(graph, "C", {}, None).ends == 1


def test_only_the_transitions_of_the_completed_node_count() -> None:
    graph = _graph("A", "B", "C")
    graph.add_transition("A", "B")
    graph.add_transition("B", "C")
    assert _nodes(route_after_success(graph, "A", {}, None)) == ["B"]


# --- when ---


def test_when_fires_when_its_expression_holds() -> None:
    graph = _graph("A", "B")
    graph.add_transition_when("A", "B", "x > 1")
    assert _nodes(route_after_success(graph, "A", {"x": 2}, None)) == ["B"]


def test_when_that_does_not_hold_leaves_a_dead_end() -> None:
    graph = _graph("A", "B")
    graph.add_transition_when("A", "B", "x > 1")
    route = route_after_success(graph, "A", {"x": 1}, None)
    assert route == Route()
    assert (route.branches, route.ends, route.is_fan_out) == ((), 0, False)


def test_when_over_a_missing_field_does_not_fire() -> None:
    graph = _graph("A", "B")
    graph.add_transition_when("A", "B", "x > 1")
    assert route_after_success(graph, "A", {}, None) == Route()


def test_every_matching_when_fires_as_a_fan_out() -> None:
    graph = _graph("A", "B", "C", "D")
    graph.add_transition_when("A", "B", "x > 0")
    graph.add_transition_when("A", "C", "x > 5")
    graph.add_transition_when("A", "D", "x > 1")
    route = route_after_success(graph, "A", {"x": 3}, None)
    assert _nodes(route) == ["B", "D"]
    assert route.is_fan_out


def test_single_match_of_a_fan_out_source_still_forms_a_cohort() -> None:
    # The fan-in after a fan-out source collects whatever matched, one branch included.
    graph = _graph("A", "B", "C")
    graph.add_transition_when("A", "B", "x > 0")
    graph.add_transition_when("A", "C", "x > 5")
    route = route_after_success(graph, "A", {"x": 1}, None)
    assert _nodes(route) == ["B"]
    assert route.is_fan_out


def test_single_when_transition_is_not_a_fan_out() -> None:
    graph = _graph("A", "B")
    graph.add_transition_when("A", "B", "x > 0")
    assert not route_after_success(graph, "A", {"x": 1}, None).is_fan_out


def test_when_to_end_counts_an_end() -> None:
    graph = _graph("A", "B")
    graph.add_transition_when("A", END, "done")
    graph.add_transition_when("A", "B", "!done")
    ended = route_after_success(graph, "A", {"done": True}, None)
    assert (ended.branches, ended.ends) == ((), 1)
    assert _nodes(route_after_success(graph, "A", {"done": False}, None)) == ["B"]


def test_when_reads_nested_fields() -> None:
    graph = _graph("A", "B")
    graph.add_transition_when("A", "B", "order.customer.tier == 'gold'")
    assert _nodes(route_after_success(graph, "A", {"order": {"customer": {"tier": "gold"}}}, None)) == ["B"]
    assert route_after_success(graph, "A", {"order": {"customer": {"tier": "iron"}}}, None) == Route()


def test_when_with_an_invalid_pattern_from_the_state_is_a_routing_error() -> None:
    graph = _graph("A", "B")
    graph.add_transition_when("A", "B", "name =~ pattern")
    with pytest.raises(RoutingError):
        route_after_success(graph, "A", {"name": "x", "pattern": "("}, None)


# --- switch ---


def test_switch_fires_only_the_first_true_case() -> None:
    graph = _graph("A", "B", "C", "D")
    graph.add_transition_switch("A", "B", "x > 5")
    graph.add_transition_switch("A", "C", "x > 1")
    graph.add_transition_switch("A", "D", "true")
    route = route_after_success(graph, "A", {"x": 3}, None)
    assert route == Route(branches=(Branch("C"),))
    assert not route.is_fan_out


def test_switch_with_no_true_case_is_a_dead_end() -> None:
    graph = _graph("A", "B")
    graph.add_transition_switch("A", "B", "x > 5")
    assert route_after_success(graph, "A", {"x": 1}, None) == Route()


def test_switch_case_to_end_counts_an_end() -> None:
    graph = _graph("A", "B")
    graph.add_transition_switch("A", END, "done")
    graph.add_transition_switch("A", "B", "true")
    assert route_after_success(graph, "A", {"done": True}, None) == Route(ends=1)


def test_switch_cases_are_evaluated_in_registration_order() -> None:
    graph = _graph("A", "B", "C")
    graph.add_transition_switch("A", "C", "true")
    graph.add_transition_switch("A", "B", "true")
    assert _nodes(route_after_success(graph, "A", {}, None)) == ["C"]


# --- goto ---


def _goto_graph() -> Graph:
    graph = _graph("A", "Jump", "Walk")
    graph.add_transition_goto("A", "Jump")
    graph.add_transition("A", "Walk")
    return graph


def test_goto_routes_to_a_registered_goto_target() -> None:
    assert route_after_success(_goto_graph(), "A", {}, "Jump") == Route(branches=(Branch("Jump"),))


def test_goto_transition_never_fires_by_evaluation() -> None:
    assert _nodes(route_after_success(_goto_graph(), "A", {}, None)) == ["Walk"]


def test_goto_replaces_the_evaluation_of_other_transitions() -> None:
    graph = _goto_graph()
    graph.add_transition_when("A", "Jump", "true")
    assert _nodes(route_after_success(graph, "A", {}, "Jump")) == ["Jump"]


def test_goto_to_a_plain_successor_is_a_routing_error() -> None:
    with pytest.raises(RoutingError, match="Walk"):
        route_after_success(_goto_graph(), "A", {}, "Walk")


def test_goto_to_an_unknown_node_is_a_routing_error() -> None:
    with pytest.raises(RoutingError, match="Nowhere"):
        route_after_success(_goto_graph(), "A", {}, "Nowhere")


def test_goto_registered_on_another_node_is_a_routing_error() -> None:
    graph = _goto_graph()
    graph.add_transition_goto("Walk", "Jump")
    with pytest.raises(RoutingError):
        route_after_success(graph, "Walk", {}, "A")


def test_goto_end_counts_an_end() -> None:
    graph = _goto_graph()
    graph.add_transition_goto("A", END)
    assert route_after_success(graph, "A", {}, END) == Route(ends=1)


# --- onError on success ---


def test_on_error_transition_is_ignored_on_success() -> None:
    graph = _graph("A", "B", "Handler")
    graph.add_transition("A", "B")
    graph.add_transition_on_error("A", "Handler")
    assert _nodes(route_after_success(graph, "A", {}, None)) == ["B"]


def test_on_error_transition_alone_leaves_a_dead_end_on_success() -> None:
    graph = _graph("A", "Handler")
    graph.add_transition_on_error("A", "Handler")
    assert route_after_success(graph, "A", {}, None) == Route()


# --- forEach ---


def _for_each_graph() -> Graph:
    graph = _graph("Split", "Work")
    graph.add_transition_for_each("Split", "Work", "items", "item")
    return graph


def test_for_each_starts_one_branch_per_element_with_its_element_index_and_count() -> None:
    route = route_after_success(_for_each_graph(), "Split", {"items": ["a", "b", "c"]}, None)
    assert route.for_each
    assert route.is_fan_out
    assert [(b.node, dict(b.extra), b.strip) for b in route.branches] == [
        ("Work", {"item": "a", "itemIndex": 0, "itemCount": 3}, "items"),
        ("Work", {"item": "b", "itemIndex": 1, "itemCount": 3}, "items"),
        ("Work", {"item": "c", "itemIndex": 2, "itemCount": 3}, "items"),
    ]


def test_for_each_over_one_element_is_still_a_fan_out() -> None:
    route = route_after_success(_for_each_graph(), "Split", {"items": [{"id": 1}]}, None)
    assert len(route.branches) == 1
    assert route.branches[0].extra == {"item": {"id": 1}, "itemIndex": 0, "itemCount": 1}
    assert route.is_fan_out


@pytest.mark.parametrize("state", [{"items": []}, {}, {"items": None}, {"items": "abc"}, {"items": {"a": 1}}])
def test_for_each_over_an_empty_missing_or_non_array_field_starts_nothing(state: dict[str, object]) -> None:
    route = route_after_success(_for_each_graph(), "Split", state, None)
    assert route.branches == ()
    assert route.ends == 0
    assert not route.is_fan_out


def test_for_each_elements_keep_their_json_types() -> None:
    items = [1, 2.5, "s", True, None, [1], {"k": "v"}]
    route = route_after_success(_for_each_graph(), "Split", {"items": items}, None)
    assert [b.extra["item"] for b in route.branches] == items


def test_for_each_and_a_plain_transition_fan_out_together() -> None:
    graph = _for_each_graph()
    graph.add_task("Audit", "Audit")
    graph.add_transition("Split", "Audit")
    route = route_after_success(graph, "Split", {"items": [1, 2]}, None)
    assert _nodes(route) == ["Work", "Work", "Audit"]
    assert route.is_fan_out


def test_route_does_not_modify_the_state() -> None:
    state = {"items": [1, 2], "x": 3}
    graph = _for_each_graph()
    graph.add_transition_when("Split", "Work", "x > 1")
    route_after_success(graph, "Split", state, None)
    assert state == {"items": [1, 2], "x": 3}


# --- strict graphs (docs/graphs.md#strict-graphs) ---


def _strict(*nodes: str) -> Graph:
    graph = _graph(*nodes)
    graph.set_strict()
    return graph


def test_strict_when_reading_a_missing_field_is_a_routing_error() -> None:
    graph = _strict("A", "B")
    graph.add_transition_when("A", "B", "aproved")
    with pytest.raises(RoutingError, match=r"evaluating 'aproved': .*reads field 'aproved'"):
        route_after_success(graph, "A", {"approved": True}, None)
    graph.set_strict(False)
    assert route_after_success(graph, "A", {"approved": True}, None) == Route()


def test_strict_when_with_every_field_present_routes_as_before() -> None:
    graph = _strict("A", "B", "C")
    graph.add_transition_when("A", "B", "approved")
    graph.add_transition_when("A", "C", "reviewer == null")
    assert _nodes(route_after_success(graph, "A", {"approved": False}, None)) == ["C"]


def test_strict_switch_reading_a_missing_field_is_a_routing_error() -> None:
    graph = _strict("A", "B", "C")
    graph.add_transition_switch("A", "B", "score >= 8")
    graph.add_transition_switch("A", "C", "true")
    with pytest.raises(RoutingError, match="reads field 'score'"):
        route_after_success(graph, "A", {}, None)
    assert _nodes(route_after_success(graph, "A", {"score": 3}, None)) == ["C"]


@pytest.mark.parametrize(
    ("state", "fragment"),
    [
        ({}, "the state has no field 'items'"),
        ({"items": None}, "the state has no field 'items'"),
        ({"items": "abc"}, "holds a string, not an array"),
        ({"items": {"a": 1}}, "holds an object, not an array"),
    ],
)
def test_strict_for_each_over_a_missing_or_non_array_field_is_a_routing_error(
    state: dict[str, object], fragment: str
) -> None:
    graph = _strict("A", "B")
    graph.add_transition_for_each("A", "B", "items", "item")
    with pytest.raises(RoutingError, match=fragment):
        route_after_success(graph, "A", state, None)
    graph.set_strict(False)
    assert route_after_success(graph, "A", state, None).branches == ()


def test_strict_for_each_over_an_empty_array_starts_no_branch() -> None:
    graph = _strict("A", "B")
    graph.add_transition_for_each("A", "B", "items", "item")
    assert route_after_success(graph, "A", {"items": []}, None).branches == ()
    assert len(route_after_success(graph, "A", {"items": [1, 2]}, None).branches) == 2


def test_strict_goto_and_plain_transitions_read_nothing() -> None:
    graph = _strict("A", "B")
    graph.add_transition_goto("A", "B")
    graph.add_transition("A", END)
    assert route_after_success(graph, "A", {}, "B") == Route(branches=(Branch("B"),))
    assert route_after_success(graph, "A", {}, None).ends == 1
