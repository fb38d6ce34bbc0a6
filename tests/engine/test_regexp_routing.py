"""A `when` pattern read from the flow state that could backtrack without bound fails routing, clearly."""

from __future__ import annotations

import pytest

from dwarf import END, Graph
from dwarf.engine.transitions import RoutingError, route_after_success


def _screening_graph() -> Graph:
    graph = Graph("Screen")
    graph.add_task("Screen", "screen")
    graph.add_task("Flag", "flag")
    graph.add_transition_when("Screen", "Flag", "name =~ rule")
    graph.add_transition("Flag", END)
    return graph


def test_catastrophic_pattern_in_state_is_a_routing_error_naming_the_reason() -> None:
    # Run by re, this search would take hours: 2 to the 40th ways to split the a's between the repetitions.
    state = {"name": "a" * 40 + "!", "rule": "(a+)+$"}
    with pytest.raises(RoutingError) as caught:
        route_after_success(_screening_graph(), "Screen", state, None)
    message = str(caught.value)
    assert "evaluating 'name =~ rule'" in message
    assert "field 'rule' holds a refused regular expression '(a+)+$'" in message
    assert "backtrack exponentially" in message


def test_overlong_string_for_a_pattern_in_state_is_a_routing_error() -> None:
    state = {"name": " " * 5_000 + "x", "rule": r"\s+$"}
    with pytest.raises(RoutingError, match="has 5001 characters, more than the"):
        route_after_success(_screening_graph(), "Screen", state, None)


def test_ordinary_pattern_in_state_routes() -> None:
    state = {"name": "bob@example.com", "rule": r"^[a-z]+@[a-z]+\.com$"}
    route = route_after_success(_screening_graph(), "Screen", state, None)
    assert [branch.node for branch in route.branches] == ["Flag"]
