"""Routing after a step: which nodes run next, given the graph, the merged state and the task's signals.

Pure functions over a Graph: no database, no I/O, so every routing rule (docs/graphs.md#transitions) can be
tested in isolation.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from dwarf.errors import DwarfError, InvalidGraphError
from dwarf.workflow.expressions import compile_expression
from dwarf.workflow.graph import END, Graph
from dwarf.workflow.jsonvalue import json_kind

__all__ = ["Branch", "Route", "RoutingError", "route_after_success"]


class RoutingError(DwarfError):
    """The step's outcome cannot be routed (a goto to an unregistered target, a broken regexp in state).

    The engine treats it like an exception raised by the task: onError routes it, or the flow fails.
    """


@dataclass(frozen=True)
class Branch:
    """One successor to start: the node, plus the per-branch fields a forEach adds and the field it strips."""

    node: str
    extra: Mapping[str, Any] = field(default_factory=dict)
    strip: str = ""


@dataclass(frozen=True)
class Route:
    """Where a completed step goes.

    ``branches`` are the successors to start, in fan-out position order. ``ends`` counts fired transitions
    into END. ``for_each`` marks a forEach expansion. ``cohort`` is set when the source node is a fan-out
    source in the graph (two or more plain/when transitions, or a forEach): whatever matched then forms a
    cohort, even a single branch, so the fan-in's reducers apply however many conditions held. A route
    with no branches and no ends is a dead end: no transition matched (an empty forEach spawns nothing).
    """

    branches: tuple[Branch, ...] = ()
    ends: int = 0
    for_each: bool = False
    cohort: bool = False

    @property
    def is_fan_out(self) -> bool:
        """True when the successors form a cohort that a fan-in will collect."""
        return (self.cohort or len(self.branches) + self.ends > 1) and bool(self.branches or self.ends)


def _holds(expression: str, state: Mapping[str, Any], strict: bool) -> bool:
    try:
        compiled = compile_expression(expression)
        return compiled.evaluate_strict(state) if strict else compiled.evaluate(state)
    except InvalidGraphError as error:
        raise RoutingError(f"evaluating {expression!r}: {error}") from error


def _strict_items(node: str, field: str, items: Any) -> None:
    """A strict graph's forEach needs its array: RoutingError when the field is missing or not one."""
    if items is None:
        raise RoutingError(
            f"forEach of {node!r} over {field!r}: the state has no field {field!r} (a strict graph refuses "
            "to start no branch for a missing array; set it to [] for none)"
        )
    if not isinstance(items, list):
        kind = json_kind(items)
        raise RoutingError(
            f"forEach of {node!r} over {field!r}: the field holds {'an' if kind[0] in 'aeiou' else 'a'} "
            f"{kind}, not an array"
        )


def route_after_success(graph: Graph, node: str, state: Mapping[str, Any], goto: str | None) -> Route:
    """Decide the successors of ``node`` once its task succeeded with ``state`` as the merged state.

    In a strict graph a condition reading a missing field, or a forEach over a missing or non-array
    field, raises RoutingError instead of not firing (docs/graphs.md#strict-graphs).
    """
    transitions = graph.outgoing(node)
    strict = graph.strict
    if goto is not None:
        for transition in transitions:
            if transition.with_goto and transition.to == goto:
                return Route(ends=1) if goto == END else Route(branches=(Branch(goto),))
        raise RoutingError(f"goto target {goto!r} is not a goto transition of {node!r}")

    switches = [t for t in transitions if t.switch]
    if switches:
        for transition in switches:
            if _holds(transition.when, state, strict):
                return Route(ends=1) if transition.to == END else Route(branches=(Branch(transition.to),))
        return Route()

    branches: list[Branch] = []
    ends = 0
    for_each = False
    for transition in transitions:
        if transition.with_goto or transition.on_error:
            continue
        if transition.for_each:
            for_each = True
            items = state.get(transition.for_each)
            if strict:
                _strict_items(node, transition.for_each, items)
            if not isinstance(items, list):
                continue
            count = len(items)
            for index, item in enumerate(items):
                extra = {
                    transition.as_: item,
                    f"{transition.as_}Index": index,
                    f"{transition.as_}Count": count,
                }
                branches.append(Branch(transition.to, extra, transition.for_each))
            continue
        if transition.when and not _holds(transition.when, state, strict):
            continue
        if transition.to == END:
            ends += 1
        else:
            branches.append(Branch(transition.to))
    return Route(tuple(branches), ends, for_each, graph.is_fan_out_source(node))
